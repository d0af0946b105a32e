//! The page of one run: its verdicts, a forest plot per gate, the site sweeps that placed
//! its interventions, and each task's metrics per intervention.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::charts::{self, ForestRow, Mark, Series, Units};
use super::ReportError;
use crate::store::tables::{Run, VerdictRow};

#[derive(Serialize)]
struct Count {
    outcome: &'static str,
    n: usize,
}

#[derive(Serialize)]
struct VerdictView {
    trial: String,
    outcome: String,
    estimate: String,
    ci: String,
    needs: String,
    p: String,
    p_adj: String,
    mde: String,
    n: String,
    message: Option<String>,
}

#[derive(Serialize)]
struct Figure {
    svg: String,
}

#[derive(Serialize)]
struct Sweep {
    intervention: String,
    sites: String,
    svg: String,
}

#[derive(Serialize)]
struct MetricRow {
    metric: String,
    values: Vec<String>,
}

/// A task's aggregate metrics: a row per metric, a column per intervention (tasks such
/// as CrowS-Pairs have a dozen metrics and a run has a few interventions).
#[derive(Serialize)]
struct TaskView {
    task: String,
    interventions: Vec<String>,
    ns: Vec<u64>,
    seconds: Vec<String>,
    rows: Vec<MetricRow>,
    chart: Option<String>,
}

pub(crate) fn units(effect: &str) -> Units {
    if effect == "relative" {
        Units::Percent
    } else {
        Units::Plain
    }
}

fn opt(v: Option<f64>, u: Units) -> String {
    v.filter(|x| x.is_finite())
        .map(|x| u.fmt(x))
        .unwrap_or_else(|| "—".into())
}

/// What a gate asks for, in words: "≤ −30.0%", "≥ −0.050", "in [0.45, 0.55]".
pub(crate) fn needs(v: &VerdictRow) -> String {
    let u = units(&v.effect);
    let sign = if v.better == "higher" { 1.0 } else { -1.0 };
    match (v.gate.as_str(), v.margin, v.lo, v.hi) {
        ("superiority", Some(m), _, _) => {
            let at = sign * m;
            format!("{} {}", if sign > 0.0 { "≥" } else { "≤" }, u.fmt(at))
        }
        ("non_inferiority", Some(m), _, _) => {
            let at = -sign * m;
            format!("{} {}", if sign > 0.0 { "≥" } else { "≤" }, u.fmt(at))
        }
        ("within", _, Some(lo), Some(hi)) => format!("in [{lo}, {hi}]"),
        _ => "—".into(),
    }
}

/// The threshold marks of a gate on its effect's axis.
pub(crate) fn marks(v: &VerdictRow) -> Vec<Mark> {
    let u = units(&v.effect);
    let sign = if v.better == "higher" { 1.0 } else { -1.0 };
    let mut out = Vec::new();
    if v.effect != "level" {
        out.push(Mark::Line {
            at: 0.0,
            label: "0".into(),
        });
    }
    match (v.gate.as_str(), v.margin, v.lo, v.hi) {
        ("superiority", Some(m), _, _) if m != 0.0 => out.push(Mark::Line {
            at: sign * m,
            label: format!("margin {}", u.fmt(sign * m)),
        }),
        ("non_inferiority", Some(m), _, _) => out.push(Mark::Line {
            at: -sign * m,
            label: format!("margin {}", u.fmt(-sign * m)),
        }),
        ("within", _, Some(lo), Some(hi)) => out.push(Mark::Band {
            lo,
            hi,
            label: format!("acceptable [{lo}, {hi}]"),
        }),
        _ => {}
    }
    out
}

fn verdict_view(v: &VerdictRow) -> VerdictView {
    let u = units(&v.effect);
    let mde_u = if v.effect == "level" { Units::Plain } else { u };
    VerdictView {
        trial: v.trial.clone(),
        outcome: v.outcome.clone(),
        estimate: opt(v.estimate, u),
        ci: match (v.ci_lo, v.ci_hi) {
            (Some(a), Some(b)) => format!(
                "[{}, {}] {}%",
                opt(Some(a), u),
                opt(Some(b), u),
                (v.ci_level.unwrap_or(0.0) * 100.0).round()
            ),
            _ => "—".into(),
        },
        needs: needs(v),
        p: v.p_value
            .map(|p| format!("{p:.4}"))
            .unwrap_or_else(|| "—".into()),
        p_adj: v
            .p_adjusted
            .map(|p| format!("{p:.4}"))
            .unwrap_or_else(|| "—".into()),
        mde: opt(v.mde, mde_u),
        n: v.n.map(|n| n.to_string()).unwrap_or_else(|| "—".into()),
        message: v.message.clone(),
    }
}

/// One forest plot per gate (task::metric and its kind), a row per intervention.
pub(crate) fn forests(
    verdicts: &[VerdictRow],
    label: impl Fn(&VerdictRow) -> String,
) -> Vec<String> {
    let mut groups: BTreeMap<(String, String, String), Vec<&VerdictRow>> = BTreeMap::new();
    let mut order = Vec::new();
    for v in verdicts {
        let k = (v.task.clone(), v.metric.clone(), v.gate.clone());
        if !groups.contains_key(&k) {
            order.push(k.clone());
        }
        groups.entry(k).or_default().push(v);
    }
    order
        .iter()
        .map(|k| {
            let vs = &groups[k];
            let first = vs[0];
            let rows: Vec<ForestRow> = vs
                .iter()
                .map(|v| ForestRow {
                    label: label(v),
                    estimate: v.estimate.unwrap_or(f64::NAN),
                    lo: v.ci_lo.unwrap_or(f64::NAN),
                    hi: v.ci_hi.unwrap_or(f64::NAN),
                    outcome: v.outcome.clone(),
                })
                .collect();
            let what = match first.effect.as_str() {
                "relative" => "relative change",
                "difference" => "difference",
                _ => "level",
            };
            charts::forest(
                &format!("{}::{} ({what}, {})", k.0, k.1, k.2.replace('_', "-")),
                &rows,
                &marks(first),
                units(&first.effect),
            )
        })
        .collect()
}

fn fmt_metric(v: f64) -> String {
    if !v.is_finite() {
        "—".into()
    } else if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

/// Per-item metrics worth a distribution: continuous ones.
fn distribution_metric(task: &str) -> Option<(&'static str, f64, f64)> {
    match task {
        "realtoxicityprompts" | "bold" => Some(("max_toxicity", 0.0, 1.0)),
        _ => None,
    }
}

fn task_views(run: &Run) -> Vec<TaskView> {
    let mut order: Vec<String> = Vec::new();
    for t in &run.tasks {
        if !order.contains(&t.task) {
            order.push(t.task.clone());
        }
    }
    order
        .into_iter()
        .map(|task| {
            let rows: Vec<_> = run.tasks.iter().filter(|t| t.task == task).collect();
            let metrics: Vec<String> = rows
                .iter()
                .map(|r| r.metric.clone())
                .filter(|m| m != "n")
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut ivs: Vec<String> = Vec::new();
            for r in &rows {
                if !ivs.contains(&r.intervention) {
                    ivs.push(r.intervention.clone());
                }
            }
            let first = |iv: &String| rows.iter().find(|r| &r.intervention == iv);
            let ns = ivs
                .iter()
                .map(|iv| first(iv).map(|r| r.n).unwrap_or(0))
                .collect();
            let seconds = ivs
                .iter()
                .map(|iv| {
                    first(iv)
                        .map(|r| format!("{:.1}", r.seconds))
                        .unwrap_or_default()
                })
                .collect();
            let view_rows = metrics
                .iter()
                .map(|m| MetricRow {
                    metric: m.clone(),
                    values: ivs
                        .iter()
                        .map(|iv| {
                            rows.iter()
                                .find(|r| &r.intervention == iv && &r.metric == m)
                                .map(|r| fmt_metric(r.value))
                                .unwrap_or_else(|| "—".into())
                        })
                        .collect(),
                })
                .collect();
            let chart = distribution_metric(&task).map(|(metric, lo, hi)| {
                let series: Vec<(String, Vec<f64>)> = ivs
                    .iter()
                    .map(|iv| {
                        let vals = run
                            .items
                            .iter()
                            .filter(|i| {
                                &i.intervention == iv && i.task == task && i.metric == metric
                            })
                            .filter_map(|i| i.value)
                            .collect();
                        (iv.clone(), vals)
                    })
                    .collect();
                charts::histograms(
                    &format!("{task}: distribution of {metric} per prompt"),
                    metric,
                    &series,
                    lo,
                    hi,
                    20,
                )
            });
            TaskView {
                task,
                interventions: ivs,
                ns,
                seconds,
                rows: view_rows,
                chart,
            }
        })
        .collect()
}

/// The run's causal-trace heatmaps (`traces/<i>.svg`), in suite order.
fn trace_figures(run: &Run) -> Result<Vec<Figure>, ReportError> {
    let dir = run.dir.join("traces");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<(usize, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .map_err(crate::store::io_err(&dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "svg"))
        .filter_map(|p| {
            let i = p.file_stem()?.to_str()?.parse().ok()?;
            Some((i, p))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(_, p)| {
            std::fs::read_to_string(&p)
                .map(|svg| Figure { svg })
                .map_err(|e| ReportError::Store(crate::store::io_err(&p)(e)))
        })
        .collect()
}

fn sweeps(run: &Run) -> Result<Vec<Sweep>, ReportError> {
    let mut out = Vec::new();
    for (name, m) in run.manifests()? {
        if m.selection.is_empty() {
            continue;
        }
        let layer = |site: &str| {
            site.split('.')
                .nth(1)
                .and_then(|l| l.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        let mut pts: Vec<_> = m.selection.iter().map(|e| (layer(&e.site), e)).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let series = vec![
            Series {
                name: "harmful shift".into(),
                points: pts.iter().map(|(l, e)| (*l, e.harmful_nll_shift)).collect(),
            },
            Series {
                name: "harmless shift".into(),
                points: pts
                    .iter()
                    .map(|(l, e)| (*l, e.harmless_nll_shift))
                    .collect(),
            },
            Series {
                name: "selectivity".into(),
                points: pts.iter().map(|(l, e)| (*l, e.selectivity)).collect(),
            },
        ];
        let chosen: Vec<f64> = m.sites.iter().map(|s| layer(s)).collect();
        out.push(Sweep {
            intervention: name.clone(),
            sites: m.sites.join(", "),
            svg: charts::lines(
                &format!("{name}: site sweep ({:?})", m.kind).to_lowercase(),
                "layer",
                "Δ next-token NLL (nats)",
                &series,
                &chosen,
            ),
        });
    }
    Ok(out)
}

/// The run page's HTML.
pub fn render(run: &Run) -> Result<String, ReportError> {
    let mut counts = Vec::new();
    for o in ["pass", "fail", "underpowered", "inconclusive", "error"] {
        let n = run.verdicts.iter().filter(|v| v.outcome == o).count();
        if n > 0 {
            counts.push(Count { outcome: o, n });
        }
    }
    let failed = run.verdicts.iter().any(|v| v.outcome != "pass");
    let meta_keys = [
        ("suite", "suite_path"),
        ("model", "model"),
        ("weights sha256", "model_sha256"),
        ("device", "device"),
        ("hardware", "hardware"),
        ("started", "started_at"),
        ("wall time (s)", "wall_seconds"),
        ("seed", "seed"),
        ("α", "alpha"),
        ("selection", "selection"),
        ("Scalpel", "scalpel_version"),
        ("commit", "git_commit"),
        ("suite sha256", "suite_sha256"),
    ];
    let mut meta: Vec<(String, String)> = meta_keys
        .iter()
        .filter(|(_, k)| !run.meta(k).is_empty())
        .map(|(l, k)| (l.to_string(), run.meta(k).to_string()))
        .collect();
    meta.push((
        "parts computed / resumed".into(),
        format!(
            "{} / {}",
            run.meta("parts_computed"),
            run.meta("parts_reused")
        ),
    ));
    for (k, v) in &run.meta {
        if let Some(rest) = k.strip_prefix("intervention.") {
            if rest.ends_with(".sites") || rest.ends_with(".kind") {
                meta.push((k.clone(), v.clone()));
            }
        }
    }
    let ctx = minijinja::context! {
        title => format!("{} on {}", run.meta("suite"), run.meta("model")),
        overall => if failed { "fail" } else if run.verdicts.is_empty() { "underpowered" } else { "pass" },
        overall_text => if failed {
            format!("{} of {} gates did not pass", run.verdicts.iter().filter(|v| v.outcome != "pass").count(), run.verdicts.len())
        } else if !run.meta("shard").is_empty() {
            format!("shard {}: no verdicts (scalpel merge computes them on all shards' items)", run.meta("shard"))
        } else if run.verdicts.is_empty() {
            "no gates were run".to_string()
        } else {
            format!("all {} gates passed", run.verdicts.len())
        },
        counts,
        meta,
        reference => run.meta("reference"),
        verdicts => run.verdicts.iter().map(verdict_view).collect::<Vec<_>>(),
        failures => crate::harness::record::failed_cases(&run.meta)
            .into_iter()
            .map(|((iv, task), why)| (format!("{iv}::{task}"), why))
            .collect::<Vec<_>>(),
        forests => forests(&run.verdicts, |v| v.intervention.clone()).into_iter().map(|svg| Figure { svg }).collect::<Vec<_>>(),
        sweeps => sweeps(run)?,
        attacks => super::attacks::view(run),
        traces => trace_figures(run)?,
        tasks => task_views(run),
        version => run.meta("scalpel_version"),
        run_id => run.meta("run_id"),
    };
    super::render("run.html", ctx)
}
