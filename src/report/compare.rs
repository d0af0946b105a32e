//! Two stored runs side by side (two model versions, two breakers, before and after a
//! change): verdicts that changed, and every per-item metric both runs scored, tested as
//! a paired difference on the items they share (matched by intervention, task and
//! dataset index), with Holm's correction across the comparisons.

use std::collections::BTreeMap;

use serde::Serialize;

use super::charts::{self, ForestRow, Mark, Units};
use super::ReportError;
use crate::stats::paired::{quantile, Effect, Paired};
use crate::stats::{holm::holm, normal_cdf};
use crate::store::tables::Run;

/// Which direction of a per-item metric is better, where one is: `Some(true)` higher.
/// Bias metrics such as `pct_stereotype` have an ideal level, not a direction.
pub fn higher_is_better(metric: &str) -> Option<bool> {
    match metric {
        "acc" | "f1" | "em" | "lms" | "loglikelihood" | "acc_pro" | "acc_anti" => Some(true),
        "max_toxicity" | "toxic" | "mean_toxicity" | "nll_per_token" => Some(false),
        _ => None,
    }
}

/// One metric of one intervention × task, compared across the runs.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub intervention: String,
    pub task: String,
    pub metric: String,
    /// Items both runs scored.
    pub n: usize,
    pub mean_a: f64,
    pub mean_b: f64,
    /// mean(B − A) over matched items, with a 95% paired-bootstrap interval.
    pub diff: f64,
    pub lo: f64,
    pub hi: f64,
    /// Two-sided, from the paired standard error; and after Holm's correction.
    pub p: f64,
    pub p_adjusted: f64,
    /// `regression`, `improvement`, `changed` (significant, no better direction) or
    /// `same`.
    pub flag: String,
}

/// Compare runs `a` and `b` item by item at family-wise level `alpha`.
pub fn compare(a: &Run, b: &Run, alpha: f64) -> Vec<Comparison> {
    type Key = (String, String, String);
    let index = |r: &Run| {
        let mut m: BTreeMap<Key, BTreeMap<u64, f64>> = BTreeMap::new();
        for i in &r.items {
            if let Some(v) = i.value {
                m.entry((i.intervention.clone(), i.task.clone(), i.metric.clone()))
                    .or_default()
                    .insert(i.idx, v);
            }
        }
        m
    };
    let (ia, ib) = (index(a), index(b));
    let mut out = Vec::new();
    for (k, xa) in &ia {
        let Some(xb) = ib.get(k) else { continue };
        let (x, y): (Vec<f64>, Vec<f64>) = xa
            .iter()
            .filter_map(|(idx, va)| xb.get(idx).map(|vb| (*va, *vb)))
            .unzip();
        let Ok(p) = Paired::new(x.clone(), y.clone(), None) else {
            continue;
        };
        let diff = p.estimate(Effect::Difference);
        let se = p.std_error(Effect::Difference);
        let mut boot = p.bootstrap(Effect::Difference, 2000, 0);
        let (lo, hi) = (quantile(&mut boot, 0.025), quantile(&mut boot, 0.975));
        let pv = if se > 0.0 {
            2.0 * (1.0 - normal_cdf((diff / se).abs()))
        } else if diff == 0.0 {
            1.0
        } else {
            0.0
        };
        let n = x.len() as f64;
        out.push(Comparison {
            intervention: k.0.clone(),
            task: k.1.clone(),
            metric: k.2.clone(),
            n: x.len(),
            mean_a: x.iter().sum::<f64>() / n,
            mean_b: y.iter().sum::<f64>() / n,
            diff,
            lo,
            hi,
            p: pv,
            p_adjusted: pv,
            flag: String::new(),
        });
    }
    let adj = holm(&out.iter().map(|c| c.p).collect::<Vec<_>>());
    for (c, p) in out.iter_mut().zip(adj) {
        c.p_adjusted = p;
        c.flag = if p >= alpha {
            "same"
        } else {
            match higher_is_better(&c.metric) {
                Some(h) if (c.diff > 0.0) == h => "improvement",
                Some(_) => "regression",
                None => "changed",
            }
        }
        .into();
    }
    out
}

#[derive(Serialize)]
struct Side {
    label: &'static str,
    run_id: String,
    suite: String,
    model: String,
    weights: String,
    commit: String,
    started: String,
}

#[derive(Serialize)]
struct VerdictChange {
    /// `intervention::task::metric`: the same gate in both runs, whatever model prefix
    /// their trial names carry.
    trial: String,
    a: String,
    b: String,
    estimate_a: String,
    estimate_b: String,
    changed: bool,
}

/// One intervention's sites in both runs, at their depth in each model.
#[derive(Serialize)]
struct SiteRow {
    intervention: String,
    a: String,
    b: String,
}

fn layer_of(site: &str) -> Option<usize> {
    site.split('.').nth(1).and_then(|l| l.parse().ok())
}

/// Depth of layer `l` in a model of `n` layers: 0 the first, 1 the last.
fn depth(l: usize, n: usize) -> f64 {
    l as f64 / (n.max(2) - 1) as f64
}

fn describe_sites(m: &crate::intervene::artifact::Manifest) -> String {
    m.sites
        .iter()
        .map(|s| match layer_of(s) {
            Some(l) => format!(
                "{s} (depth {:.2} of {} layers)",
                depth(l, m.model.n_layers),
                m.model.n_layers
            ),
            None => s.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where each run's interventions act, with depth normalised so that models of
/// different depths line up: a table, and per intervention the site sweeps of both runs
/// on one depth axis with the chosen sites highlighted.
fn sites_by_depth(a: &Run, b: &Run) -> Result<(Vec<SiteRow>, Vec<String>), ReportError> {
    let (ma, mb) = (a.manifests()?, b.manifests()?);
    let names: std::collections::BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    let (la, lb) = labels(a, b);
    let mut rows = Vec::new();
    let mut charts_out = Vec::new();
    for name in names {
        let (xa, xb) = (ma.get(name), mb.get(name));
        rows.push(SiteRow {
            intervention: name.clone(),
            a: xa.map(describe_sites).unwrap_or_else(|| "—".into()),
            b: xb.map(describe_sites).unwrap_or_else(|| "—".into()),
        });
        let mut series = Vec::new();
        let mut chosen = Vec::new();
        for (label, m) in [(&la, xa), (&lb, xb)] {
            let Some(m) = m else { continue };
            let n = m.model.n_layers;
            let mut pts: Vec<(f64, f64)> = m
                .selection
                .iter()
                .filter_map(|e| layer_of(&e.site).map(|l| (depth(l, n), e.selectivity)))
                .collect();
            pts.sort_by(|p, q| p.0.total_cmp(&q.0));
            if !pts.is_empty() {
                // The legend has room for a model's name, not for "A: … selectivity".
                let short = label.split_once(": ").map_or(label.as_str(), |(_, m)| m);
                series.push(charts::Series {
                    name: short.to_string(),
                    points: pts,
                });
            }
            chosen.extend(
                m.sites
                    .iter()
                    .filter_map(|s| layer_of(s))
                    .map(|l| depth(l, n)),
            );
        }
        if !series.is_empty() {
            charts_out.push(charts::lines(
                &format!("{name}: site sweeps by depth"),
                "depth (layer / (layers − 1))",
                "selectivity (nats)",
                &series,
                &chosen,
            ));
        }
    }
    Ok((rows, charts_out))
}

/// Column labels: the models' names when the runs are of different models, else A, B.
fn labels(a: &Run, b: &Run) -> (String, String) {
    let (ma, mb) = (a.meta("model"), b.meta("model"));
    if !ma.is_empty() && !mb.is_empty() && ma != mb {
        (format!("A: {ma}"), format!("B: {mb}"))
    } else {
        ("A".into(), "B".into())
    }
}

fn side(label: &'static str, r: &Run) -> Side {
    Side {
        label,
        run_id: r.meta("run_id").into(),
        suite: r.meta("suite_path").into(),
        model: r.meta("model").into(),
        weights: r.meta("model_sha256").chars().take(16).collect(),
        commit: r.meta("git_commit").chars().take(12).collect(),
        started: r.meta("started_at").into(),
    }
}

/// The comparison page's HTML, from the comparisons [`compare`] made of `a` and `b`.
pub fn render(a: &Run, b: &Run, alpha: f64, cs: &[Comparison]) -> Result<String, ReportError> {
    if cs.is_empty() {
        return Err(ReportError::Invalid(format!(
            "{} and {} share no scored items (same interventions, tasks and dataset items)",
            a.dir.display(),
            b.dir.display()
        )));
    }
    let mut changes = Vec::new();
    for vb in &b.verdicts {
        let same = |v: &&crate::store::tables::VerdictRow| {
            v.intervention == vb.intervention && v.task == vb.task && v.metric == vb.metric
        };
        if let Some(va) = a.verdicts.iter().find(same) {
            let u = super::run_page::units(&vb.effect);
            let e = |v: &crate::store::tables::VerdictRow| match (v.estimate, v.ci_lo, v.ci_hi) {
                (Some(x), Some(lo), Some(hi)) => {
                    format!("{} [{}, {}]", u.fmt(x), u.fmt(lo), u.fmt(hi))
                }
                (Some(x), _, _) => u.fmt(x),
                _ => "—".into(),
            };
            changes.push(VerdictChange {
                trial: format!("{}::{}::{}", vb.intervention, vb.task, vb.metric),
                a: va.outcome.clone(),
                b: vb.outcome.clone(),
                estimate_a: e(va),
                estimate_b: e(vb),
                changed: va.outcome != vb.outcome,
            });
        }
    }
    let (site_rows, site_charts) = sites_by_depth(a, b)?;
    let (label_a, label_b) = labels(a, b);
    // One forest per task::metric: each intervention's B − A difference.
    let mut groups: BTreeMap<(String, String), Vec<&Comparison>> = BTreeMap::new();
    for c in cs {
        groups
            .entry((c.task.clone(), c.metric.clone()))
            .or_default()
            .push(c);
    }
    let forests: Vec<String> = groups
        .iter()
        .map(|((task, metric), v)| {
            let rows: Vec<ForestRow> = v
                .iter()
                .map(|c| ForestRow {
                    label: c.intervention.clone(),
                    estimate: c.diff,
                    lo: c.lo,
                    hi: c.hi,
                    outcome: match c.flag.as_str() {
                        "regression" => "fail".into(),
                        "improvement" => "pass".into(),
                        "changed" => "underpowered".into(),
                        _ => "same".into(),
                    },
                })
                .collect();
            charts::forest(
                &format!("{task}::{metric}: B − A"),
                &rows,
                &[Mark::Line {
                    at: 0.0,
                    label: "0".into(),
                }],
                Units::Plain,
            )
        })
        .collect();
    let regressions = cs.iter().filter(|c| c.flag == "regression").count();
    let ctx = minijinja::context! {
        title => format!("{} vs {}", a.meta("run_id"), b.meta("run_id")),
        label_a, label_b, site_rows, site_charts,
        sides => vec![side("A", a), side("B", b)],
        regressions,
        improvements => cs.iter().filter(|c| c.flag == "improvement").count(),
        alpha,
        changes,
        comparisons => cs.iter().map(|c| minijinja::context! {
            intervention => c.intervention, task => c.task, metric => c.metric, n => c.n,
            mean_a => format!("{:.4}", c.mean_a), mean_b => format!("{:.4}", c.mean_b),
            diff => format!("{:+.4}", c.diff), ci => format!("[{:+.4}, {:+.4}]", c.lo, c.hi),
            p => format!("{:.4}", c.p), p_adj => format!("{:.4}", c.p_adjusted), flag => c.flag,
        }).collect::<Vec<_>>(),
        forests,
    };
    super::render("compare.html", ctx)
}
