//! `scalpel test SUITE`: suite files are checked with errors naming file, line and YAML
//! path; trials are listed and run libtest's way; a gate that cannot pass exits 101 and
//! names itself; JUnit is written.

mod common;

use std::fs;
use std::process::{Command, Output};

use scalpel::harness::Suite;

fn scalpel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args(args)
        .output()
        .expect("run scalpel")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const GOOD: &str = "\
interventions:
  - {name: none}
  - {name: steer, artifact: steer}
tasks:
  - {task: copa, limit: 5}
gates:
  - {task: copa, metric: acc, non_inferiority: 0.1}
";

#[test]
fn suite_errors_name_the_file_line_and_yaml_path() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("s.yaml");
    let ok = Suite::parse(&f, GOOD).unwrap();
    assert_eq!(ok.trial_names(), vec!["steer::copa::acc"]);
    assert_eq!(ok.reference, "none");
    for (body, needles) in [
        (
            GOOD.replace("limit: 5", "limit: 5, colour: red"),
            vec!["s.yaml:5:", "tasks[0]", "colour"],
        ),
        (
            GOOD.replace("task: copa, metric", "task: copy, metric"),
            vec!["s.yaml:7:", "gates[0].task", "copy"],
        ),
        (
            GOOD.replace("metric: acc", "metric: accuracy"),
            vec!["s.yaml:7:", "gates[0].metric", "accuracy", "acc"],
        ),
        (
            GOOD.replace(
                "non_inferiority: 0.1",
                "non_inferiority: 0.1, superiority: 0.1",
            ),
            vec!["s.yaml:7:", "gates[0]", "exactly one"],
        ),
        (
            GOOD.replace("{task: copa, limit: 5}", "{task: boolq}"),
            vec!["s.yaml:7:", "gates[0].task", "not in tasks"],
        ),
        (
            GOOD.replace("{name: steer, artifact: steer}", "{name: steer}"),
            vec!["s.yaml:3:", "interventions[1]", "fit"],
        ),
        (
            GOOD.replace("{name: none}", "{name: steer, artifact: a}"),
            vec!["s.yaml:3:", "interventions[1].name", "twice"],
        ),
        (
            format!("reference: base\n{GOOD}"),
            vec!["s.yaml:1:", "reference", "base"],
        ),
        (
            GOOD.replace("limit: 5", "limit: five"),
            vec!["s.yaml:5:", "tasks[0]", "limit"],
        ),
        (
            GOOD.replace("{task: copa, limit: 5}", "{task: copa, split: train}"),
            vec!["s.yaml:5:", "tasks[0].split"],
        ),
        (
            format!(
                "{GOOD}  - {{task: copa, metric: acc, superiority: 0, interventions: [none]}}\n"
            ),
            vec!["s.yaml:8:", "gates[1].interventions[0]", "reference"],
        ),
        (
            format!("{GOOD}  - {{task: copa, metric: acc, superiority: 0}}\n"),
            vec!["s.yaml:8:", "gates[1]", "unique"],
        ),
        (
            format!("{GOOD}traces:\n  - {{prompt: a b, subject: c}}\n"),
            vec!["s.yaml:9:", "traces[0]", "subject 'c'"],
        ),
        (
            format!("{GOOD}traces:\n  - {{prompt: a b, subject: a, kind: heads}}\n"),
            vec!["s.yaml:9:", "traces[0]", "heads"],
        ),
        (
            format!("model: a\nmodels: [b, c]\n{GOOD}"),
            vec!["s.yaml:2:", "models", "not both"],
        ),
        (
            format!("models: [b, b]\n{GOOD}"),
            vec!["s.yaml:1:", "models", "'b'"],
        ),
        (
            GOOD.replace("artifact: steer}", "artifact: steer, transfer: sideways}"),
            vec![
                "s.yaml:3:",
                "interventions[1].transfer",
                "same_sites or by_depth",
            ],
        ),
        (
            GOOD.replace(
                "{name: steer, artifact: steer}",
                "{name: steer, fit: f.yaml, transfer: by_depth}",
            ),
            vec!["s.yaml:3:", "interventions[1].transfer", "artifact"],
        ),
    ] {
        let e = Suite::parse(&f, &body).unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "expected '{n}' in: {e}\n--- suite:\n{body}");
        }
    }
}

#[test]
fn a_suite_of_several_models_names_each_models_trials_after_it() {
    let f = tempfile::tempdir().unwrap().path().join("s.yaml");
    let s = Suite::parse(&f, &format!("models: [alpha, beta]\n{GOOD}")).unwrap();
    assert_eq!(s.models, vec!["alpha", "beta"]);
    assert_eq!(
        s.trial_names(),
        vec!["alpha::steer::copa::acc", "beta::steer::copa::acc"]
    );
    assert_eq!(
        s.for_model("beta").trial_names(),
        vec!["beta::steer::copa::acc"]
    );
    assert_eq!(s.for_model("beta").model, "beta");
    // One model, run on another with --model: names unchanged.
    let one = Suite::parse(&f, GOOD).unwrap();
    assert_eq!(
        one.for_model("other").trial_names(),
        vec!["steer::copa::acc"]
    );
}

#[test]
fn the_shipped_suites_parse_and_list_their_trials() {
    let root = common::repo_root();
    for name in [
        "smoke",
        "smollm2-detox",
        "smollm2-adversarial",
        "compare-models",
    ] {
        let path = root.join(format!("suites/{name}.yaml"));
        let s = Suite::read(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.trial_names().is_empty());
    }
    let o = scalpel(&[
        "test",
        root.join("suites/smoke.yaml").to_str().unwrap(),
        "--list",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for t in [
        "offset::realtoxicityprompts::mean_toxicity: test",
        "offset::copa::acc: test",
        "none::crows_pairs_english::pct_stereotype: test",
        "offset::crows_pairs_english::pct_stereotype: test",
    ] {
        assert!(out.contains(t), "{t} missing from:\n{out}");
    }
    // A filter narrows the list; --exact takes whole names only.
    let listed = |extra: &[&str]| {
        let smoke = root.join("suites/smoke.yaml");
        let mut args = vec!["test", smoke.to_str().unwrap(), "--list"];
        args.extend_from_slice(extra);
        let o = scalpel(&args);
        text(&o.stdout)
            .lines()
            .filter(|l| l.ends_with(": test"))
            .count()
    };
    assert_eq!(listed(&["copa"]), 1);
    assert_eq!(listed(&["copa", "--exact"]), 0);
    assert_eq!(listed(&["offset::copa::acc", "--exact"]), 1);
}

#[test]
fn a_malformed_suite_exits_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    fs::write(&f, GOOD.replace("metric: acc", "metric: accuracy")).unwrap();
    let o = scalpel(&["test", f.to_str().unwrap()]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.yaml:7:") && err.contains("gates[0].metric"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A real run on SmolLM2: an offset artefact fitted here, a gate it passes and one built
/// to fail (an impossible margin). Exit 101, the failing trial named, JUnit written.
#[test]
fn a_suite_runs_its_trials_and_an_impossible_gate_exits_101() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fit.yaml");
    fs::write(&cfg, common::offset_fit_config(0.25)).unwrap();
    let suite = dir.path().join("s.yaml");
    fs::write(
        &suite,
        "name: tiny\n\
         interventions:\n  - {name: none}\n  - {name: steer, fit: fit.yaml}\n\
         tasks:\n  - {task: copa, limit: 12}\n  - {task: crows_pairs_english, limit: 20}\n\
         gates:\n\
         \x20 - {task: copa, metric: acc, non_inferiority: 0.5}\n\
         \x20 - {task: crows_pairs_english, metric: likelihood_diff, better: higher, superiority: 5.0, method: normal}\n\
         \x20 - {task: crows_pairs_english, metric: pct_stereotype, within: [0.0, 1.0], interventions: [none]}\n",
    )
    .unwrap();
    let junit = dir.path().join("out/junit.xml");
    let runs = dir.path().join("runs");
    let o = Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args([
            "test",
            suite.to_str().unwrap(),
            "--junit",
            junit.to_str().unwrap(),
            "--device",
            "cpu",
            "--runs",
            runs.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(101), "stdout:\n{out}\nstderr:\n{err}");
    // Three trials, libtest-style, each line with its estimate and interval.
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("test [")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    let line = |name: &str| {
        *lines
            .iter()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name}: {out}"))
    };
    assert!(line("steer::copa::acc").contains("n=12"), "{out}");
    assert!(
        line("steer::crows_pairs_english::likelihood_diff").ends_with("FAILED"),
        "{out}"
    );
    assert!(
        line("none::crows_pairs_english::pct_stereotype").ends_with("ok"),
        "{out}"
    );
    assert!(
        out.contains("failures:") && out.contains("needs an improvement beyond +5.0000"),
        "{out}"
    );
    assert!(
        out.contains("test result: FAILED. 2 passed; 1 failed"),
        "{out}"
    );
    let xml = fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase").count(), 3, "{xml}");
    assert_eq!(xml.matches("<failure").count(), 1, "{xml}");
    assert!(
        xml.contains("name=\"steer::crows_pairs_english::likelihood_diff\""),
        "{xml}"
    );
    // The run is stored: its verdicts read back as printed, its items one row per item
    // and metric, and a report beside them.
    let run_dir = fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    assert!(
        run_dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("tiny-"),
        "{run_dir:?}"
    );
    let run = scalpel::store::tables::Run::read(&run_dir).unwrap();
    let outcome = |t: &str| {
        run.verdicts
            .iter()
            .find(|v| v.trial == t)
            .map(|v| v.outcome.clone())
            .unwrap()
    };
    assert_eq!(
        outcome("steer::crows_pairs_english::likelihood_diff"),
        "fail"
    );
    assert_eq!(outcome("steer::copa::acc"), "pass");
    let copa_acc = run
        .items
        .iter()
        .filter(|i| i.task == "copa" && i.metric == "acc")
        .count();
    assert_eq!(copa_acc, 24, "12 COPA items for each of none and steer");
    assert_eq!(run.meta("model"), "smollm2-135m-instruct");
    assert_eq!(run.meta("model_sha256").len(), 64);
    assert!(!run.meta("intervention.steer.tensors_sha256").is_empty());
    let html = fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(html.contains("steer::crows_pairs_english::likelihood_diff"));
    assert_eq!(html.matches("<svg").count(), 3, "a forest plot per gate");
    assert!(
        out.contains(&format!(
            "report: {}",
            run_dir.join("report.html").display()
        )),
        "{out}"
    );

    // Without the impossible gate: exit 0; the fit comes from the fixture cache and every
    // item from the run's journals, so nothing is computed again.
    let o = Command::new(env!("CARGO_BIN_EXE_scalpel"))
        .args([
            "test",
            suite.to_str().unwrap(),
            "--skip",
            "likelihood_diff",
            "--device",
            "cpu",
            "--runs",
            runs.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(out.contains("test result: ok. 2 passed; 0 failed"), "{out}");
    assert!(out.contains("(0 parts computed, 3 resumed)"), "{out}");
}

/// Two models in one suite: each runs and is stored on its own, trial names carry the
/// model, and the runs are compared item by item on one page (the tiny GPT-2 stands in
/// for a second model: another architecture, width and depth).
#[test]
fn a_suite_of_two_models_runs_each_and_compares_them_item_by_item() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = common::tiny_gpt2_dir();
    let suite = dir.path().join("two.yaml");
    fs::write(
        &suite,
        format!(
            "name: two\nmodels: [smollm2-135m-instruct, {}]\n\
             interventions:\n  - {{name: none}}\n\
             tasks:\n  - {{task: lambada_openai, limit: 12}}\n\
             gates:\n  - {{task: lambada_openai, metric: acc, within: [-1.0, 2.0]}}\n",
            tiny.display()
        ),
    )
    .unwrap();
    let runs = dir.path().join("runs");
    let o = scalpel(&[
        "test",
        suite.to_str().unwrap(),
        "--device",
        "cpu",
        "--runs",
        runs.to_str().unwrap(),
    ]);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    for m in [
        "smollm2-135m-instruct".to_string(),
        tiny.display().to_string(),
    ] {
        assert!(
            out.lines().any(
                |l| l.contains(&format!("{m}::none::lambada_openai::acc")) && l.ends_with("ok")
            ),
            "{m}: {out}"
        );
    }
    let dirs: Vec<_> = fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.iter().filter(|p| p.is_dir()).count(), 2, "{dirs:?}");
    let page = dirs
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "html"))
        .unwrap_or_else(|| panic!("no comparison page in {dirs:?}"));
    assert!(out.contains(&page.display().to_string()), "{out}");
    let html = fs::read_to_string(page).unwrap();
    assert!(html.contains("A: smollm2-135m-instruct"), "model labels");
    // The models' baselines, paired on the same 12 LAMBADA passages.
    assert!(
        html.contains("none::lambada_openai::acc"),
        "verdicts side by side"
    );
    assert!(
        html.contains("<td><code>none</code></td><td><code>lambada_openai</code></td><td>acc</td><td class=\"num\">12</td>"),
        "matched items: {html}"
    );
}

/// Tasks run side by side in lanes of one thread each score exactly what one lane with
/// every core scores: the same value for every item and metric of every case (the
/// generation task's samples included), and the same verdicts.
#[test]
fn lanes_change_how_long_a_run_takes_not_what_it_scores() {
    use scalpel::harness::{run, RunOutput, Selection};
    let dir = tempfile::tempdir().unwrap();
    let suite = Suite::read(&common::small_suite(dir.path(), "lanes")).unwrap();
    let scored = |lanes: usize| -> (RunOutput, Vec<String>) {
        let sel = Selection {
            lanes: Some(lanes),
            ..Selection::default()
        };
        let mut stages = Vec::new();
        let out = run(&suite, common::smollm2(), &sel, None, |p| {
            if let scalpel::harness::RunProgress::Task {
                intervention, task, ..
            } = p
            {
                stages.push(format!("{intervention}::{task}"));
            }
        })
        .unwrap();
        stages.sort();
        stages.dedup();
        (out, stages)
    };
    let values = |out: &RunOutput| {
        let mut v = Vec::new();
        for ((case, task), r) in &out.reports {
            for it in &r.items {
                for (m, x) in it.values() {
                    v.push((format!("{case}::{task}::{}::{m}", it.idx()), x.to_bits()));
                }
            }
        }
        v
    };
    let (one, one_stages) = scored(1);
    let (three, three_stages) = scored(3);
    assert_eq!(one.reports.len(), 6, "two cases on each of three tasks");
    let (a, b) = (values(&one), values(&three));
    assert!(a.len() > 100, "{}", a.len());
    assert_eq!(a, b, "an item scored differently in lanes");
    let outcomes = |o: &RunOutput| {
        o.trials
            .iter()
            .map(|t| format!("{} {:?}", t.name, t.outcome.as_ref().map(|v| v.outcome)))
            .collect::<Vec<_>>()
    };
    assert_eq!(outcomes(&one), outcomes(&three));
    // Every case reported progress, whichever lane ran it.
    assert_eq!(one_stages, three_stages);
    assert_eq!(three_stages.len(), 6, "{three_stages:?}");
}
