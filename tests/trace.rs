//! Causal tracing on SmolLM2: the machinery's invariants (no noise, no effect; restoring
//! a whole layer gives back the clean run) and ROME's factual-recall pattern.

mod common;

use scalpel::model::HookPoint;
use scalpel::trace::causal::{Site, TraceConfig, TraceKind, Tracer};

const PROMPT: &str = "The Eiffel Tower is located in the city of";
const SUBJECT: &str = "The Eiffel Tower";

#[test]
fn subject_positions_cover_the_subject_tokens() {
    let m = common::smollm2();
    let t = Tracer::new(m, PROMPT, "Eiffel Tower", None, TraceConfig::default()).unwrap();
    let covered: String = t
        .subject_positions
        .iter()
        .map(|&p| t.tokens[p].as_str())
        .collect();
    assert_eq!(covered.trim(), "Eiffel Tower", "{:?}", t.tokens);
    assert!(Tracer::new(m, PROMPT, "Louvre", None, TraceConfig::default()).is_err());
}

#[test]
fn zero_noise_gives_zero_effect_and_whole_layers_restore_the_clean_run() {
    let m = common::smollm2();
    let cfg = TraceConfig {
        noise: 0.0,
        samples: 2,
        ..TraceConfig::default()
    };
    let t = Tracer::new(m, PROMPT, SUBJECT, Some(" Paris"), cfg).unwrap();
    assert!((t.p_corrupt - t.p_clean).abs() < 1e-5);
    let r = t.sweep(|_, _| {}).unwrap();
    let worst = r.effect.iter().flatten().fold(0f64, |a, x| a.max(x.abs()));
    assert!(worst < 1e-5, "max |effect| with no noise: {worst}");

    let t = Tracer::new(m, PROMPT, SUBJECT, Some(" Paris"), TraceConfig::default()).unwrap();
    assert!(
        t.p_clean - t.p_corrupt > 0.05,
        "noise must hurt: clean {} corrupt {}",
        t.p_clean,
        t.p_corrupt
    );
    let n = m.model.info().n_layers;
    let sites = [
        t.all_positions(HookPoint::ResidPost(0)),
        t.all_positions(HookPoint::ResidPost(n / 2)),
        t.all_positions(HookPoint::Embed),
    ];
    for (site, p) in sites.iter().zip(t.restore_many(&sites).unwrap()) {
        assert!(
            (p - t.p_clean).abs() < 1e-4,
            "{:?}: {p} vs {}",
            site.points(),
            t.p_clean
        );
    }
}

/// A restoration starts at its first site's block, from the corrupted run's stream
/// there; it must measure what running the whole corrupted model does. Adding a no-op
/// restoration of the embedding (outside the subject the noise is zero) forces the
/// whole-model path.
#[test]
fn restorations_from_the_first_restored_block_match_whole_model_runs() {
    let m = common::smollm2();
    let t = Tracer::new(m, PROMPT, SUBJECT, Some(" Paris"), TraceConfig::default()).unwrap();
    let last = t.ids.len() - 1;
    let subject_end = *t.subject_positions.last().unwrap();
    let noop = Site::grid(&[HookPoint::Embed], [last]);
    let sites = [
        Site::grid(&[HookPoint::ResidPost(3)], [subject_end]),
        Site::grid(&[HookPoint::ResidPost(20)], [last]),
        t.site(8, subject_end),
    ];
    let fast = t.restore_many(&sites).unwrap();
    let whole: Vec<f64> = sites
        .iter()
        .map(|s| t.restore_many(&[Site::union([s, &noop])]).unwrap()[0])
        .collect();
    for ((s, a), b) in sites.iter().zip(&fast).zip(&whole) {
        assert!(
            (a - b).abs() < 1e-5,
            "{:?}: from its block {a}, whole model {b}",
            s.points()
        );
    }
    assert!(
        fast.iter().any(|p| (p - t.p_corrupt).abs() > 1e-3),
        "some restoration must move the target: {fast:?} vs corrupt {}",
        t.p_corrupt
    );
}

/// ROME's Figure 1 on SmolLM2: restoring the last subject token's state in early and
/// middle layers brings the answer back, as does the last token's in late layers, and
/// other tokens matter little. (On "The Eiffel Tower" the early-layer effect sits at
/// "iffel" rather than at " Tower": these two prompts' subjects end on the token that
/// names them.)
#[test]
fn factual_recall_shows_romes_pattern() {
    let m = common::smollm2();
    let n = m.model.info().n_layers;
    for (prompt, subject, target) in [
        (
            "The Colosseum is located in the city of",
            "The Colosseum",
            " Rome",
        ),
        (
            "The Great Wall is located in the country of",
            "The Great Wall",
            " China",
        ),
    ] {
        let cfg = TraceConfig {
            samples: 3,
            ..TraceConfig::default()
        };
        let t = Tracer::new(m, prompt, subject, Some(target), cfg).unwrap();
        let r = t.sweep(|_, _| {}).unwrap();
        let total = r.p_clean - r.p_corrupt;
        assert!(
            total > 0.3,
            "{prompt}: clean {} corrupt {}",
            r.p_clean,
            r.p_corrupt
        );
        let col = |p: usize, layers: std::ops::Range<usize>| -> Vec<f64> {
            layers.map(|l| r.effect[l][p]).collect()
        };
        let max = |v: Vec<f64>| v.into_iter().fold(f64::MIN, f64::max);
        let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
        let subj = *r.subject_positions.last().unwrap();
        let last = r.tokens.len() - 1;
        let early_mid = 0..2 * n / 3;
        assert!(
            max(col(subj, early_mid.clone())) > 0.4 * total,
            "{prompt}: last subject token {:?}",
            col(subj, 0..n)
        );
        assert!(
            mean(col(last, n - 5..n)) > 0.5 * total,
            "{prompt}: {:?}",
            col(last, 0..n)
        );
        assert!(
            mean(col(last, 0..n / 2)) < 0.1 * total,
            "{prompt}: {:?}",
            col(last, 0..n)
        );
        for p in subj + 1..last {
            assert!(
                max(col(p, 0..n)) < 0.25 * total,
                "{prompt}: token {p} {:?}",
                col(p, 0..n)
            );
        }
    }
}

#[test]
fn mlp_and_attention_windows_are_centred_and_clamped() {
    let m = common::smollm2();
    let n = m.model.info().n_layers;
    let cfg = |kind| TraceConfig {
        kind,
        samples: 1,
        ..TraceConfig::default()
    };
    let t = Tracer::new(m, PROMPT, SUBJECT, None, cfg(TraceKind::Mlp)).unwrap();
    let layers = |s: scalpel::trace::causal::Site| -> Vec<usize> {
        s.points().iter().map(|p| p.layer().unwrap()).collect()
    };
    assert_eq!(layers(t.site(0, 2)), (0..5).collect::<Vec<_>>());
    assert_eq!(layers(t.site(12, 2)), (7..17).collect::<Vec<_>>());
    assert_eq!(layers(t.site(n - 1, 2)), (n - 6..n).collect::<Vec<_>>());
    assert!(t
        .site(12, 2)
        .points()
        .iter()
        .all(|p| matches!(p, HookPoint::MlpOut(_))));
    let t = Tracer::new(m, PROMPT, SUBJECT, None, cfg(TraceKind::Attn)).unwrap();
    assert!(t
        .site(3, 1)
        .points()
        .iter()
        .all(|p| matches!(p, HookPoint::AttnOut(_))));
}

/// Attribution patching (one backward pass) ranks sites like real activation patching on
/// the same sites, on an indirect-object prompt pair.
#[test]
fn attribution_patching_ranks_sites_like_activation_patching() {
    use scalpel::trace::circuit::select;
    use scalpel::trace::patching::{sites, spearman, Metric, Patcher, SiteFamily};
    let m = common::smollm2();
    let clean = "When Mary and John went to the store, John gave a drink to";
    let corrupt = "When Mary and John went to the store, Mary gave a drink to";
    let tok = |s: &str| m.encode(s).unwrap()[0];
    let metric = Metric::LogitDiff {
        good: tok(" Mary"),
        bad: tok(" John"),
    };
    let t = m.encode(clean).unwrap().len();
    for (family, min_rho) in [(SiteFamily::Resid, 0.8), (SiteFamily::Heads, 0.8)] {
        let s = sites(m, family, t);
        let points: Vec<HookPoint> = {
            let mut v: Vec<HookPoint> = s.iter().map(|x| x.point).collect();
            v.dedup();
            v
        };
        let p = Patcher::new(m, clean, corrupt, metric.clone(), &points).unwrap();
        assert!(
            p.m_clean - p.m_corrupt > 0.5,
            "clean {} corrupt {}",
            p.m_clean,
            p.m_corrupt
        );
        let real = p.patch(&s, 32).unwrap();
        let approx = p.attribute(&s).unwrap();
        let rho = spearman(&real, &approx);
        eprintln!("{family:?}: Spearman {rho:.3} over {} sites", s.len());
        assert!(rho > min_rho, "{family:?}: Spearman {rho}");
        if family == SiteFamily::Heads {
            // A few heads, patched together, carry most of the behaviour; the measured
            // curve reaches the target share exactly where the circuit ends.
            let c = select(&real, 0.8, 40, 8, |sets| {
                let sets: Vec<Vec<_>> = sets
                    .iter()
                    .map(|ix| ix.iter().map(|&i| s[i]).collect())
                    .collect();
                p.patch_sets(&sets, 8)
            })
            .unwrap();
            let k = c.size.expect("80% within 40 heads");
            eprintln!(
                "heads circuit: {k} of {} heads, curve {:?}",
                s.len(),
                &c.share[..k]
            );
            assert!(k < s.len() / 4, "{k} heads");
            assert!(c.share[k - 1] >= 0.8 && c.share[..k - 1].iter().all(|&x| x < 0.8));
        }
    }
}

/// The model's toxicity concept: on ToxiGen-200 (human labels, matched style), probes
/// read toxic vs benign statements from the residual stream of held-out texts above
/// chance. (Measured: probe 0.62 at layer 0, 0.75 at layer 17; the best of 30 layers is
/// an optimistic pick, so the bar sits well under it.)
#[test]
fn concept_probes_read_toxicity_from_held_out_texts() {
    use scalpel::trace::concept::concept_directions;
    let m = common::smollm2();
    let data = scalpel::toxicity::report::toxigen_labelled(None).unwrap();
    let r = concept_directions(m, &data, 0.3, 0, 48).unwrap();
    let accs: Vec<(usize, f64, f64)> = r
        .layers
        .iter()
        .map(|c| (c.layer, c.probe_acc, c.mean_diff_acc))
        .collect();
    eprintln!("n_train {} n_heldout {}: {accs:?}", r.n_train, r.n_heldout);
    let best = &r.layers[r.best_layer];
    // 60 held-out texts: 0.7 is above chance by more than 3 standard errors.
    assert!(best.probe_acc >= 0.7, "{accs:?}");
    assert!(
        r.layers.iter().map(|c| c.mean_diff_acc).fold(0.0, f64::max) >= 0.6,
        "{accs:?}"
    );
    assert_eq!(r.directions.len(), m.model.info().n_layers);
}

/// Behaviour targets beyond the next token: a whole continuation's probability and the
/// log-likelihood gap between two continuations keep the tracing invariants, and noise
/// on the subject moves them.
#[test]
fn continuation_and_contrast_targets_keep_the_invariants() {
    use scalpel::trace::causal::Target;
    let m = common::smollm2();
    let prompt = "The Colosseum is located in the city of";
    let targets = [
        Target::Continuation(" Rome, Italy".into()),
        Target::Contrast {
            more: " Rome".into(),
            less: " Paris".into(),
        },
    ];
    for target in targets {
        let quiet = TraceConfig {
            noise: 0.0,
            samples: 1,
            ..TraceConfig::default()
        };
        let t = Tracer::with_target(m, prompt, "The Colosseum", target.clone(), quiet).unwrap();
        assert!((t.p_clean - t.p_corrupt).abs() < 1e-4, "{target:?}");
        let cfg = TraceConfig {
            samples: 3,
            ..TraceConfig::default()
        };
        let t = Tracer::with_target(m, prompt, "The Colosseum", target.clone(), cfg).unwrap();
        eprintln!("{target:?}: clean {} corrupt {}", t.p_clean, t.p_corrupt);
        assert!(
            t.p_clean > t.p_corrupt + 0.05,
            "{target:?}: {} vs {}",
            t.p_clean,
            t.p_corrupt
        );
        let whole = t.all_positions(HookPoint::ResidPost(4));
        let back = t.restore_many(&[whole]).unwrap()[0];
        assert!(
            (back - t.p_clean).abs() < 1e-3 * t.p_clean.abs().max(1.0),
            "{back} vs {}",
            t.p_clean
        );
    }
    // The contrast is log p(Rome) − log p(Paris): positive on the clean prompt.
    let t = Tracer::with_target(
        m,
        prompt,
        "The Colosseum",
        Target::Contrast {
            more: " Rome".into(),
            less: " Paris".into(),
        },
        TraceConfig::default(),
    )
    .unwrap();
    assert_eq!(t.target_kind, "contrast");
    assert!(t.p_clean > 2.0, "gap {}", t.p_clean);
}
