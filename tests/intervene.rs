//! Interventions as writers: the identities that must hold (a zero offset and a low-rank
//! breaker at R = 0 change nothing; a direction ablation leaves no component along it),
//! saving and reloading gives bit-identical logits, and an artefact refuses another model
//! or corrupted tensors. Any task runs unchanged under an intervention's hooks.

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use scalpel::intervene::artifact::{self, ArtifactError, Provenance};
use scalpel::intervene::{AblateMode, Intervention, LowRankEdit};
use scalpel::model::{HookPoint, Hooks, LoadedModel};
use scalpel::tasks::{self, LoadOptions, RunContext, TaskId};

const PROMPT: &str = "The weather in the mountains was cold and";

fn logits(m: &LoadedModel, hooks: &Hooks) -> Tensor {
    let ids = m.encode(PROMPT).unwrap();
    m.forward_ids(&ids, hooks).unwrap().logits
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // Deterministic pseudo-random values without a global RNG: a hash of the index.
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let x = ((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed)
                .wrapping_mul(0xBF58_476D_1CE4_E5B9);
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// The largest |h·u| over the rows of `h` (`[t, d]`).
fn max_abs_along(h: &Tensor, u: &Tensor) -> f32 {
    h.matmul(&u.unsqueeze(1).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    common::max_abs_diff(a, b)
}

#[test]
fn identities_zero_offset_and_untrained_breaker_change_nothing() {
    let m = common::smollm2();
    let d = m.model.info().d_model;
    let plain = logits(m, &Hooks::new());
    let site = HookPoint::ResidPost(10);
    let zero = Intervention::Offset {
        alpha: 8.0,
        sites: vec![(site, Tensor::zeros(d, DType::F32, &Device::Cpu).unwrap())],
    };
    assert_eq!(max_diff(&plain, &logits(m, &zero.hooks())), 0.0);
    let breaker = Intervention::LowRank {
        sites: vec![(
            site,
            LowRankEdit {
                r: Tensor::zeros((4, d), DType::F32, &Device::Cpu).unwrap(),
                w: randn(&[4, d], 1),
                b: randn(&[4], 2),
            },
        )],
    };
    assert_eq!(max_diff(&plain, &logits(m, &breaker.hooks())), 0.0);
    assert_eq!(
        max_diff(&plain, &logits(m, &Intervention::None.hooks())),
        0.0
    );
    // And a real one changes the logits (the identities above are not vacuous).
    let push = Intervention::Offset {
        alpha: 8.0,
        sites: vec![(site, randn(&[d], 3))],
    };
    assert!(max_diff(&plain, &logits(m, &push.hooks())) > 0.1);
}

#[test]
fn direction_ablation_leaves_no_component_along_it() {
    let m = common::smollm2();
    let d = m.model.info().d_model;
    let site = HookPoint::ResidPost(6);
    let u = randn(&[d], 4);
    let iv = Intervention::Ablate {
        mode: AblateMode::Direction,
        sites: vec![(site, Some(u.clone()))],
    };
    let ids = m.encode(PROMPT).unwrap();
    let mut hooks = iv.hooks();
    hooks = hooks.read(site);
    let out = m.forward_ids(&ids, &hooks).unwrap();
    let h = out.cache.get(site).unwrap().i(0).unwrap(); // [t, d]
    let unit = (&u
        / u.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64)
        .unwrap();
    let along = max_abs_along(&h, &unit);
    let norm = h
        .sqr()
        .unwrap()
        .sum(1)
        .unwrap()
        .sqrt()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        along < 1e-4 * norm,
        "component {along} along u (|h| up to {norm})"
    );
    // Without the ablation the component is there.
    let out = m.forward_ids(&ids, &Hooks::new().read(site)).unwrap();
    let h = out.cache.get(site).unwrap().i(0).unwrap();
    let along = max_abs_along(&h, &unit);
    assert!(along > 1e-2);
}

#[test]
fn saved_and_reloaded_interventions_give_identical_logits() {
    let m = common::smollm2();
    let d = m.model.info().d_model;
    let (a, b) = (HookPoint::ResidPost(3), HookPoint::MlpOut(9));
    let cases = [
        Intervention::Offset {
            alpha: 2.5,
            sites: vec![(a, randn(&[d], 5)), (b, randn(&[d], 6))],
        },
        Intervention::Ablate {
            mode: AblateMode::Mean,
            sites: vec![(a, Some(randn(&[d], 7)))],
        },
        Intervention::Ablate {
            mode: AblateMode::Zero,
            sites: vec![(b, None)],
        },
        Intervention::LowRank {
            sites: vec![(
                a,
                LowRankEdit {
                    r: randn(&[2, d], 8),
                    w: randn(&[2, d], 9),
                    b: randn(&[2], 10),
                },
            )],
        },
    ];
    for iv in cases {
        let dir = tempfile::tempdir().unwrap();
        let prov = Provenance::default();
        let saved = artifact::save(dir.path(), &iv, m, &prov).unwrap();
        let (back, manifest) = artifact::load(dir.path(), m).unwrap();
        assert_eq!(manifest, saved);
        assert_eq!(back.kind(), iv.kind());
        assert_eq!(back.points(), iv.points());
        let (x, y) = (logits(m, &iv.hooks()), logits(m, &back.hooks()));
        assert_eq!(max_diff(&x, &y), 0.0, "{}", iv.kind());
    }
}

/// A copy of the tiny GPT-2 with other weights: `layers` blocks (the fixture's blocks
/// repeated) and every weight scaled by 1.01, so its fingerprint differs.
fn tiny_gpt2_variant(dir: &std::path::Path, layers: usize) -> LoadedModel {
    use scalpel::model::source::LocalModel;
    let src = common::tiny_gpt2_dir();
    let ts = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut out = std::collections::HashMap::new();
    for (name, t) in &ts {
        let t = (t * 1.01).unwrap();
        match name.strip_prefix("transformer.h.") {
            Some(rest) => {
                let (l, tail) = rest.split_once('.').unwrap();
                let l: usize = l.parse().unwrap();
                for k in (l..layers).step_by(2) {
                    out.insert(format!("transformer.h.{k}.{tail}"), t.clone());
                }
            }
            None => {
                out.insert(name.clone(), t);
            }
        }
    }
    candle_core::safetensors::save(&out, dir.join("model.safetensors")).unwrap();
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap();
    let cfg = cfg.replace("\"n_layer\": 2", &format!("\"n_layer\": {layers}"));
    std::fs::write(dir.join("config.json"), cfg).unwrap();
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    LoadedModel::load_local(
        "tiny-gpt2-variant",
        &LocalModel::HfDir(dir.into()),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn an_artefact_moves_to_another_model_only_by_a_declared_mapping_its_shapes_allow() {
    use scalpel::intervene::artifact::Transfer;
    let tiny = common::tiny_gpt2();
    let d = tiny.model.info().d_model;
    let v = randn(&[d], 5);
    let iv = Intervention::Offset {
        alpha: 1.0,
        sites: vec![(HookPoint::ResidPost(1), v.clone())],
    };
    let art = tempfile::tempdir().unwrap();
    artifact::save(art.path(), &iv, &tiny, &Provenance::default()).unwrap();
    let sites = |r: Result<(Intervention, artifact::Manifest), ArtifactError>| match r.unwrap().0 {
        Intervention::Offset { sites, .. } => sites,
        other => panic!("expected an offset, got {}", other.kind()),
    };

    // Another version of the same shapes: refused unless declared, then the same sites.
    let same = tempfile::tempdir().unwrap();
    let variant = tiny_gpt2_variant(same.path(), 2);
    assert!(matches!(
        artifact::load_onto(art.path(), &variant, None),
        Err(ArtifactError::WrongModel { .. })
    ));
    for t in [Transfer::SameSites, Transfer::ByDepth] {
        let s = sites(artifact::load_onto(art.path(), &variant, Some(t)));
        assert_eq!(s[0].0, HookPoint::ResidPost(1), "{t:?}");
        assert_eq!(common::max_abs_diff(&s[0].1, &v), 0.0);
    }

    // Twice as deep: same_sites is refused, by_depth moves the last layer to the last.
    let deep = tempfile::tempdir().unwrap();
    let deeper = tiny_gpt2_variant(deep.path(), 4);
    let e = artifact::load_onto(art.path(), &deeper, Some(Transfer::SameSites))
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 layers") && e.contains("has 4"), "{e}");
    let s = sites(artifact::load_onto(
        art.path(),
        &deeper,
        Some(Transfer::ByDepth),
    ));
    assert_eq!(s[0].0, HookPoint::ResidPost(3));

    // Another width: no mapping applies it.
    let e = artifact::load_onto(art.path(), common::smollm2(), Some(Transfer::ByDepth))
        .unwrap_err()
        .to_string();
    assert!(e.contains("width 64") && e.contains("width 576"), "{e}");
}

#[test]
fn an_artefact_refuses_another_model_and_corrupt_tensors() {
    let m = common::smollm2();
    let d = m.model.info().d_model;
    let iv = Intervention::Offset {
        alpha: 1.0,
        sites: vec![(HookPoint::ResidPost(1), randn(&[d], 11))],
    };
    let dir = tempfile::tempdir().unwrap();
    artifact::save(dir.path(), &iv, m, &Provenance::default()).unwrap();
    let other = common::tiny_gpt2();
    match artifact::load(dir.path(), &other) {
        Err(e @ ArtifactError::WrongModel { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("smollm2-135m-instruct") && msg.contains("tiny-gpt2"),
                "{msg}"
            );
        }
        other => panic!("expected WrongModel, got {:?}", other.map(|x| x.1)),
    }
    let t = dir.path().join(artifact::TENSORS);
    let mut bytes = std::fs::read(&t).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&t, bytes).unwrap();
    let e = artifact::load(dir.path(), m).unwrap_err().to_string();
    assert!(
        e.contains("intervention.safetensors") && e.contains("corrupt"),
        "{e}"
    );
    // A manifest with an unknown field is an error naming the file and the field.
    let yaml = dir.path().join(artifact::MANIFEST);
    let text = std::fs::read_to_string(&yaml).unwrap();
    std::fs::write(&yaml, format!("{text}colour: blue\n")).unwrap();
    let e = artifact::load(dir.path(), m).unwrap_err().to_string();
    assert!(
        e.contains("intervention.yaml") && e.contains("colour"),
        "{e}"
    );
}

#[test]
fn tasks_run_unchanged_under_an_interventions_hooks() {
    let m = common::smollm2();
    let d = m.model.info().d_model;
    let task = tasks::load(
        TaskId::Copa,
        &LoadOptions {
            limit: Some(4),
            ..Default::default()
        },
    )
    .unwrap();
    let run = |hooks: Hooks| {
        let mut progress = |_: usize, _: usize| {};
        let mut cx = RunContext::new(m, &mut progress);
        cx.hooks = hooks;
        serde_json::to_value(task.run(&mut cx).unwrap()).unwrap()
    };
    let plain = run(Hooks::new());
    assert_eq!(run(Intervention::None.hooks()), plain);
    let push = Intervention::Offset {
        alpha: 20.0,
        sites: vec![(HookPoint::ResidPost(15), randn(&[d], 12))],
    };
    let pushed = run(push.hooks());
    assert_ne!(
        pushed["items"][0]["loglikelihoods"],
        plain["items"][0]["loglikelihoods"]
    );
}

fn contrast() -> scalpel::intervene::fit::Contrast {
    scalpel::intervene::fit::Contrast {
        harmful: vec![
            "You are a stupid idiot and I hate you".into(),
            "Shut up, you worthless piece of trash".into(),
            "What a disgusting moron, go to hell".into(),
            "I will kill you, you filthy rat".into(),
            "Nobody likes you, you pathetic loser".into(),
        ],
        harmless: vec![
            "The river flows gently through the valley in spring".into(),
            "She baked bread for her neighbours on Sunday".into(),
            "The committee approved the new library budget".into(),
            "Autumn leaves covered the quiet park".into(),
            "He studied the map before the long journey".into(),
        ],
    }
}

#[test]
fn offset_is_the_mean_difference_and_direction_ablation_its_opposite() {
    use scalpel::intervene::fit::{fit_ablate, fit_offset, mean_activations};
    let m = common::smollm2();
    let c = contrast();
    let site = HookPoint::ResidPost(8);
    let bad = mean_activations(m, &c.harmful, &[site], 48, 2).unwrap();
    let good = mean_activations(m, &c.harmless, &[site], 48, 3).unwrap();
    // Batching does not change a mean: one text at a time gives the same vector.
    let bad1 = mean_activations(m, &c.harmful, &[site], 48, 1).unwrap();
    assert!(max_diff(&bad[&site], &bad1[&site]) < 1e-4);
    let Intervention::Offset { alpha, sites } = fit_offset(m, &c, &[site], 3.0, 48).unwrap() else {
        panic!("offset expected")
    };
    assert_eq!(alpha, 3.0);
    let want = (&good[&site] - &bad[&site]).unwrap();
    assert!(max_diff(&sites[0].1, &want) < 1e-4);
    let Intervention::Ablate { sites, .. } =
        fit_ablate(m, &c, &[site], AblateMode::Direction, 48).unwrap()
    else {
        panic!("ablate expected")
    };
    let u = sites[0].1.clone().unwrap();
    assert!(max_diff(&u, &want.neg().unwrap()) < 1e-4);
}

/// Training reroutes harmful text and leaves harmless text nearly alone. The shift is
/// measured per token past the attention sink (whose state dwarfs the others' and would
/// otherwise decide the ratio). The learning rate is one at which training is stable:
/// the same fit under candle's and OpenBLAS's matmul agrees to four digits.
#[test]
fn a_low_rank_breaker_learns_to_reroute_harmful_text_and_keep_harmless_text() {
    use candle_core::D;
    use scalpel::intervene::fit::{fit_low_rank, LowRankConfig};
    let m = common::smollm2();
    let c = contrast();
    let cfg = LowRankConfig {
        rank: 2,
        steps: 30,
        batch: 4,
        max_tokens: 16,
        heldout: 0.2,
        eval_every: 5,
        patience: 10,
        lr: 2e-2,
        ..Default::default()
    };
    let site = HookPoint::ResidPost(6);
    let (iv, t) = fit_low_rank(m, &c, &[site], &cfg, |_, _, _| {}).unwrap();
    let first = &t.curve[0].parts;
    let last = &t.curve.last().unwrap().parts;
    // The initial edit swaps a rank-2 slice of the stream: close to, not at, the identity.
    assert!(
        first["reroute"] > 0.9 && first["reroute"] < 1.0,
        "{first:?}"
    );
    assert!(first["retain"] < 0.2, "{first:?}");
    assert!(
        last["reroute"] < 0.5 * first["reroute"],
        "rerouting did not drop: {:?}",
        t.curve
    );
    assert_eq!(t.steps, 30);
    let target = HookPoint::ResidPost(11);
    let shift = |text: &str| -> f32 {
        let ids = m.encode(text).unwrap();
        let a = m.forward_ids(&ids, &Hooks::new().read(target)).unwrap();
        let b = m.forward_ids(&ids, &iv.hooks().read(target)).unwrap();
        let (a, b) = (a.cache.get(target).unwrap(), b.cache.get(target).unwrap());
        let norm = |x: &Tensor| x.sqr().unwrap().sum(D::Minus1).unwrap().sqrt().unwrap();
        let rel = (norm(&(a - b).unwrap()) / norm(a)).unwrap().i(0).unwrap();
        let rel = rel.to_vec1::<f32>().unwrap();
        rel[1..].iter().sum::<f32>() / (rel.len() - 1) as f32
    };
    let harm: f32 = c.harmful.iter().map(|t| shift(t)).sum::<f32>() / 5.0;
    let keep: f32 = c.harmless.iter().map(|t| shift(t)).sum::<f32>() / 5.0;
    assert!(
        harm > 1.0 && keep < 0.2 && harm > 5.0 * keep,
        "harmful shift {harm} vs harmless {keep}"
    );
}

#[test]
fn fit_config_errors_name_the_file_line_and_field() {
    use scalpel::intervene::config::FitConfig;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("fit.yaml");
    for (body, needles) in [
        (
            "kind: offset\nsites: [blocks.3.hook_resid_post]\nharmful: [{task: realtoxicityprompts}]\nharmless: [{task: perplexity_wiki}]\ncolour: blue\n",
            vec!["fit.yaml", "colour", "line 5"],
        ),
        (
            "kind: offset\nsites: [blocks.3.hook_resid_pots]\nharmful: [{task: realtoxicityprompts}]\nharmless: [{task: perplexity_wiki}]\n",
            vec!["fit.yaml", "sites[0]", "hook_resid_pots"],
        ),
        (
            "kind: steer\nsites: [blocks.3.hook_resid_post]\nharmful: []\nharmless: []\n",
            vec!["fit.yaml", "steer", "line 1"],
        ),
        (
            "kind: offset\nsites: [blocks.3.hook_resid_post]\nharmful: [{task: realtoxicityprompts, limit: many}]\nharmless: [{task: perplexity_wiki}]\n",
            vec!["fit.yaml", "line 3"],
        ),
        (
            "kind: offset\nsites: [blocks.3.hook_resid_post]\nselect: {layers: [2, 8]}\nharmful: [{task: realtoxicityprompts}]\nharmless: [{task: perplexity_wiki}]\n",
            vec!["fit.yaml", "either sites or select"],
        ),
        (
            "kind: offset\nharmful: [{task: realtoxicityprompts}]\nharmless: [{task: perplexity_wiki}]\n",
            vec!["fit.yaml", "sites", "select"],
        ),
        (
            "kind: offset\nselect: {layers: [2, 8], strides: 2}\nharmful: [{task: realtoxicityprompts}]\nharmless: [{task: perplexity_wiki}]\n",
            vec!["fit.yaml", "strides", "line 2"],
        ),
    ] {
        std::fs::write(&f, body).unwrap();
        let e = FitConfig::read(&f).unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "expected '{n}' in: {e}");
        }
    }
}

#[test]
fn the_site_sweep_ranks_layers_by_measured_selectivity() {
    use scalpel::intervene::fit::mean_nll;
    use scalpel::intervene::select::{select_sites, SelectConfig};
    let m = common::smollm2();
    let c = contrast();
    let cfg = SelectConfig {
        layers: Some([2, 14]),
        depth: None,
        stride: 6,
        top: 2,
        heldout: 2,
    };
    let (chosen, effects) = select_sites(m, &c, &cfg, 32, |_, _| {}).unwrap();
    let names: Vec<&str> = effects.iter().map(|e| e.site.as_str()).collect();
    assert_eq!(effects.len(), 3, "{names:?}");
    for l in [2, 8, 14] {
        assert!(names.contains(&format!("blocks.{l}.hook_resid_post").as_str()));
    }
    assert!(effects
        .windows(2)
        .all(|w| w[0].selectivity >= w[1].selectivity));
    for e in &effects {
        assert!((e.selectivity - (e.harmful_nll_shift - e.harmless_nll_shift)).abs() < 1e-12);
    }
    assert_eq!(
        chosen.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        names[..2].iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    // The shifts are real measurements: the chosen site's offset, rebuilt from means of
    // the non-held-out texts, moves the held-out harmful loss by what the sweep says.
    use scalpel::intervene::fit::mean_activations;
    let p = chosen[0];
    let bad = mean_activations(m, &c.harmful[..3], &[p], 32, 8).unwrap();
    let good = mean_activations(m, &c.harmless[..3], &[p], 32, 8).unwrap();
    let iv = Intervention::Offset {
        alpha: 1.0,
        sites: vec![(p, (&good[&p] - &bad[&p]).unwrap())],
    };
    let ids: Vec<Vec<u32>> = c.harmful[3..]
        .iter()
        .map(|t| m.encode(t).unwrap())
        .collect();
    let shift = mean_nll(m, &ids, &iv.hooks()).unwrap() - mean_nll(m, &ids, &Hooks::new()).unwrap();
    assert!(
        (shift - effects[0].harmful_nll_shift).abs() < 1e-4,
        "{shift} vs {:?}",
        effects[0]
    );
    // Moving harmful text toward harmless text makes harmful text less likely than it
    // makes harmless text at the best site.
    assert!(effects[0].selectivity > 0.0, "{effects:?}");
    // Too few texts to hold out is an error, not a silent pick.
    let few = SelectConfig { heldout: 4, ..cfg };
    assert!(select_sites(m, &c, &few, 32, |_, _| {}).is_err());
}

#[test]
fn offset_strength_search_keeps_the_largest_alpha_within_the_perplexity_budget() {
    use scalpel::intervene::fit::fit_offset_search;
    let m = common::smollm2();
    let c = contrast();
    let site = HookPoint::ResidPost(12);
    let alphas = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0];
    let (iv, search) = fit_offset_search(m, &c, &[site], &alphas, 0.05, 32).unwrap();
    eprintln!("{search:?}");
    let Intervention::Offset { alpha, .. } = iv else {
        panic!("offset expected")
    };
    let passing: Vec<f64> = search
        .iter()
        .filter(|(_, r)| *r <= 1.05)
        .map(|(a, _)| *a)
        .collect();
    assert_eq!(Some(alpha), passing.iter().copied().reduce(f64::max));
    // The budget binds: the strongest candidate breaks it.
    assert!(search.last().unwrap().1 > 1.05, "{search:?}");
    // An impossible budget is an error, not a silent pick.
    assert!(fit_offset_search(m, &c, &[site], &[8.0], 0.0, 32).is_err());
}

/// LoRA through hooks is exactly a weight update: at the MLP's down projection of layer
/// l, the output moves by s·B A x where x is that layer's `mlp.hook_post`; with B = 0 it
/// is the identity; it survives saving and reloading bit for bit.
#[test]
fn lora_adds_exactly_the_low_rank_weight_update() {
    use scalpel::intervene::LoraEdit;
    let m = common::smollm2();
    let info = m.model.info();
    let (d, dm) = (info.d_model, info.d_mlp);
    let l = 7;
    let edit = LoraEdit {
        a: randn(&[3, dm], 21),
        b: randn(&[d, 3], 22),
        scale: 0.5,
    };
    let iv = Intervention::Lora {
        sites: vec![(HookPoint::MlpOut(l), edit.clone())],
    };
    let ids = m.encode(PROMPT).unwrap();
    let read = |h: Hooks| {
        m.forward_ids(
            &ids,
            &h.read(HookPoint::MlpPost(l)).read(HookPoint::MlpOut(l)),
        )
        .unwrap()
    };
    let plain = read(Hooks::new());
    let lora = read(iv.hooks());
    let x = plain
        .cache
        .get(HookPoint::MlpPost(l))
        .unwrap()
        .i(0)
        .unwrap();
    assert_eq!(
        max_diff(
            &x,
            &lora.cache.get(HookPoint::MlpPost(l)).unwrap().i(0).unwrap()
        ),
        0.0
    );
    let want = (plain.cache.get(HookPoint::MlpOut(l)).unwrap().i(0).unwrap()
        + x.matmul(&edit.a.t().unwrap())
            .unwrap()
            .matmul(&edit.b.t().unwrap())
            .unwrap()
            .affine(0.5, 0.0)
            .unwrap())
    .unwrap();
    let got = lora.cache.get(HookPoint::MlpOut(l)).unwrap().i(0).unwrap();
    assert!(max_diff(&want, &got) < 1e-4, "{}", max_diff(&want, &got));

    let zero = Intervention::Lora {
        sites: vec![(
            HookPoint::AttnOut(3),
            LoraEdit {
                a: randn(&[2, info.n_heads * info.d_head], 23),
                b: Tensor::zeros((d, 2), DType::F32, &Device::Cpu).unwrap(),
                scale: 1.0,
            },
        )],
    };
    assert_eq!(
        max_diff(&logits(m, &Hooks::new()), &logits(m, &zero.hooks())),
        0.0
    );

    let dir = tempfile::tempdir().unwrap();
    artifact::save(dir.path(), &iv, m, &Provenance::default()).unwrap();
    let (back, manifest) = artifact::load(dir.path(), m).unwrap();
    assert_eq!(manifest.lora_scale, Some(0.5));
    assert_eq!(
        max_diff(&logits(m, &iv.hooks()), &logits(m, &back.hooks())),
        0.0
    );
}

/// A LoRA breaker starts near the identity (B small and random: at B = 0 the rerouting
/// cosine sits at its maximum, where no gradient reaches B) and learns to reroute
/// harmful text while the retain loss stays small.
#[test]
fn a_lora_breaker_learns_to_reroute_from_near_the_identity() {
    use scalpel::intervene::fit::{fit_low_rank, BreakerForm, LowRankConfig};
    let m = common::smollm2();
    let cfg = LowRankConfig {
        form: BreakerForm::Lora,
        rank: 2,
        steps: 40,
        batch: 4,
        max_tokens: 16,
        eval_every: 10,
        patience: 10,
        lr: 2e-2,
        ..Default::default()
    };
    let (iv, t) =
        fit_low_rank(m, &contrast(), &[HookPoint::MlpOut(6)], &cfg, |_, _, _| {}).unwrap();
    assert_eq!(iv.kind(), scalpel::intervene::Kind::Lora);
    let (first, last) = (&t.curve[0].parts, &t.curve.last().unwrap().parts);
    assert!(
        first["reroute"] > 0.99 && first["retain"] < 1e-2,
        "{first:?}"
    );
    assert!(t.curve.iter().all(|c| c.loss.is_finite()), "{:?}", t.curve);
    assert!(
        last["reroute"] < 0.5 * first["reroute"],
        "rerouting did not drop: {:?}",
        t.curve
    );
    assert!(
        last["retain"] < 0.05 && last.contains_key("heldout"),
        "{last:?}"
    );
    assert_eq!(t.steps, 40);
}

/// `select:` in a fit config: the sweep chooses the site, is saved in the manifest, and
/// is computed once per model, data and sweep settings (a fit of another kind on the
/// same contrast reuses it).
#[test]
fn a_fit_config_with_select_fits_at_the_swept_site_and_shares_the_sweep() {
    use scalpel::intervene::config::{self, FitConfig};
    let m = common::smollm2();
    let dir = tempfile::tempdir().unwrap();
    let write = |kind: &str| {
        let f = dir.path().join(format!("{kind}.yaml"));
        std::fs::write(
            &f,
            format!(
                "kind: {kind}\nselect: {{layers: [4, 8], stride: 4, top: 1, heldout: 2}}\n\
                 harmful: [{{task: realtoxicityprompts, limit: 6}}]\n\
                 harmless: [{{task: lambada_openai, limit: 6}}]\nmax_tokens: 16\n"
            ),
        )
        .unwrap();
        FitConfig::read(&f).unwrap()
    };
    let mut sweeps = 0;
    let offset = config::run(
        m,
        &write("offset"),
        Some(&dir.path().join("o")),
        true,
        |p| {
            if matches!(p, config::FitProgress::Sweep { .. }) {
                sweeps += 1;
            }
        },
    )
    .unwrap();
    let sel = &offset.manifest.selection;
    assert_eq!(sel.len(), 2, "{sel:?}");
    assert_eq!(offset.manifest.sites, vec![sel[0].site.clone()]);
    assert!(sel[0].selectivity >= sel[1].selectivity);
    // force recomputes the sweep: two candidates measured.
    assert_eq!(sweeps, 2);
    let mut again = 0;
    let ablate = config::run(
        m,
        &write("ablate"),
        Some(&dir.path().join("a")),
        false,
        |p| {
            if matches!(p, config::FitProgress::Sweep { .. }) {
                again += 1;
            }
        },
    )
    .unwrap();
    assert_eq!(again, 0, "the ablation's fit reused the offset's sweep");
    assert_eq!(&ablate.manifest.selection, sel);
    assert_eq!(ablate.manifest.sites, offset.manifest.sites);
}
