//! The comparison's results: agreement of the two sides, medians, ratios, peak memory
//! and hardware bounds; printed, and written as `reports/bench/<time>.json` (ratios in
//! fields named `ratio`) and `<time>.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::super::machine;
use super::super::stats::Summary;
use super::bounds::Facts;
use super::outcome::{unit, Outcome};

/// Scalpel must be at least this much faster than PyTorch on every workload (issue 7).
pub const TARGET_RATIO: f64 = 1.5;
/// Largest log-likelihood difference (nats) counted as the same computation.
const LL_TOL: f64 = 2e-3;
/// Largest difference of a trace effect (a probability) counted as the same.
const EFFECT_TOL: f64 = 1e-3;
/// Largest relative perplexity difference counted as the same.
const PPL_REL_TOL: f64 = 1e-4;

pub struct Results {
    pub started: u64,
    pub finished: u64,
    pub load_before: Option<[f64; 3]>,
    pub load_after: Option<[f64; 3]>,
    pub reps: usize,
    pub threads: usize,
    /// One matmul run per side (scalpel, pytorch).
    pub matmul: Vec<Outcome>,
    pub bandwidth: f64,
    pub facts: Facts,
    pub outcomes: Vec<Outcome>,
    pub workloads: Vec<String>,
}

/// One row of the table: a workload, both sides' rates, and how they compare.
struct Row {
    workload: String,
    scalpel: Option<Summary>,
    pytorch: Option<Summary>,
    scalpel_rss: Option<u64>,
    pytorch_rss: Option<u64>,
    bound: Option<(f64, &'static str)>,
    agreement: Value,
    agree: bool,
    errors: Vec<String>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        Some(self.scalpel?.median / self.pytorch?.median)
    }
}

impl Results {
    fn flops_per_s(&self) -> f64 {
        self.matmul
            .iter()
            .filter(|o| o.ok())
            .map(|o| o.units as f64 / o.secs)
            .fold(0.0, f64::max)
    }

    fn of<'a>(&'a self, side: &'a str, w: &'a str) -> impl Iterator<Item = &'a Outcome> + 'a {
        self.outcomes
            .iter()
            .filter(move |o| o.side == side && o.workload == w)
    }

    fn rates(&self, side: &str, w: &str) -> Option<Summary> {
        let v: Vec<f64> = self
            .of(side, w)
            .filter(|o| o.ok())
            .map(Outcome::rate)
            .collect();
        Summary::of(&v)
    }

    fn rss(&self, side: &str, w: &str) -> Option<u64> {
        self.of(side, w).filter_map(|o| o.peak_rss_bytes).max()
    }

    fn first<'a>(&'a self, side: &'a str, w: &'a str) -> Option<&'a Outcome> {
        self.of(side, w).find(|o| o.ok())
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for w in &self.workloads {
            let (agreement, agree) = match (self.first("scalpel", w), self.first("pytorch", w)) {
                (Some(a), Some(b)) => agreement(w, &a.result, &b.result),
                _ => (json!({"checked": false}), false),
            };
            let units = self.first("scalpel", w).map_or(0, |o| o.units);
            rows.push(Row {
                workload: w.clone(),
                scalpel: self.rates("scalpel", w),
                pytorch: self.rates("pytorch", w),
                scalpel_rss: self.rss("scalpel", w),
                pytorch_rss: self.rss("pytorch", w),
                bound: self
                    .facts
                    .bound(w, units, self.flops_per_s(), self.bandwidth),
                agreement,
                agree,
                errors: self
                    .outcomes
                    .iter()
                    .filter(|o| &o.workload == w)
                    .filter_map(|o| {
                        o.error
                            .as_ref()
                            .map(|e| format!("{} rep {}: {e}", o.side, o.rep + 1))
                    })
                    .collect(),
            });
            if w == "generate" {
                rows.push(self.decode_row());
            }
        }
        rows
    }

    /// Batch-1 greedy decoding, timed inside the generation workers (the greedy check).
    fn decode_row(&self) -> Row {
        let rate = |side: &str| {
            let v: Vec<f64> = self
                .of(side, "generate")
                .filter(|o| o.ok())
                .filter_map(|o| {
                    Some(o.result["greedy_tokens"].as_f64()? / o.result["greedy_secs"].as_f64()?)
                })
                .collect();
            Summary::of(&v)
        };
        let units = self
            .first("scalpel", "generate")
            .and_then(|o| o.result["greedy_tokens"].as_u64())
            .unwrap_or(0) as usize;
        let greedy = |side: &str| {
            self.first(side, "generate")
                .map(|o| o.result["greedy"].clone())
        };
        let same = matches!((greedy("scalpel"), greedy("pytorch")), (Some(a), Some(b)) if a == b);
        Row {
            workload: "decode".into(),
            scalpel: rate("scalpel"),
            pytorch: rate("pytorch"),
            scalpel_rss: None,
            pytorch_rss: None,
            bound: self
                .facts
                .bound("decode", units, self.flops_per_s(), self.bandwidth),
            agreement: json!({"greedy_tokens_identical": same}),
            agree: same,
            errors: vec![],
        }
    }
}

/// Do the two sides' outputs show the same computation? (details, verdict)
fn agreement(w: &str, a: &Value, b: &Value) -> (Value, bool) {
    let floats = |v: &Value| -> Vec<f64> {
        v.as_array()
            .map_or(vec![], |x| x.iter().filter_map(Value::as_f64).collect())
    };
    let max_diff = |x: &[f64], y: &[f64]| -> Option<f64> {
        (x.len() == y.len() && !x.is_empty()).then(|| {
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f64::max)
        })
    };
    match w {
        "loglik" => {
            let d = max_diff(&floats(&a["loglikelihoods"]), &floats(&b["loglikelihoods"]));
            let same_acc = a["acc"] == b["acc"];
            (
                json!({"acc_scalpel": a["acc"], "acc_pytorch": b["acc"],
                       "max_abs_loglik_diff": d, "tolerance": LL_TOL}),
                same_acc && d.is_some_and(|d| d <= LL_TOL),
            )
        }
        "generate" => {
            let same = a["greedy"] == b["greedy"] && !a["greedy"].is_null();
            (json!({"greedy_tokens_identical": same}), same)
        }
        "trace" => {
            let flat = |v: &Value| -> Vec<f64> {
                v.as_array()
                    .map_or(vec![], |rows| rows.iter().flat_map(|r| floats(r)).collect())
            };
            let d = max_diff(&flat(&a["effect"]), &flat(&b["effect"]));
            (
                json!({"max_abs_effect_diff": d, "tolerance": EFFECT_TOL,
                       "p_corrupt_scalpel": a["p_corrupt"], "p_corrupt_pytorch": b["p_corrupt"]}),
                d.is_some_and(|d| d <= EFFECT_TOL),
            )
        }
        "perplexity" => {
            let (p, q) = (
                a["token_perplexity"].as_f64(),
                b["token_perplexity"].as_f64(),
            );
            let rel = p.zip(q).map(|(p, q)| (p - q).abs() / q);
            (
                json!({"token_perplexity_scalpel": p, "token_perplexity_pytorch": q,
                       "relative_diff": rel, "tolerance": PPL_REL_TOL}),
                rel.is_some_and(|r| r <= PPL_REL_TOL),
            )
        }
        _ => (json!({}), false),
    }
}

pub fn to_json(r: &Results) -> Value {
    let rows = r.rows();
    let version = |side: &str| {
        r.outcomes
            .iter()
            .find(|o| o.side == side && o.ok())
            .map(|o| o.versions.clone())
    };
    let workloads: Vec<Value> = rows
        .iter()
        .map(|row| {
            let ratio = row.ratio();
            json!({
                "workload": row.workload,
                "unit": unit(&row.workload),
                "scalpel_per_s": row.scalpel.map(Summary::to_json),
                "pytorch_per_s": row.pytorch.map(Summary::to_json),
                "ratio": ratio,
                "target_ratio": TARGET_RATIO,
                "meets_target": ratio.map(|x| x >= TARGET_RATIO),
                "peak_rss_bytes": {"scalpel": row.scalpel_rss, "pytorch": row.pytorch_rss},
                "bound_per_s": row.bound.map(|b| b.0),
                "bound_by": row.bound.map(|b| b.1),
                "scalpel_fraction_of_bound": row.bound.zip(row.scalpel).map(|(b, s)| s.median / b.0),
                "agreement": row.agreement,
                "same_computation": row.agree,
                "errors": row.errors,
            })
        })
        .collect();
    let secs: Vec<Value> = r
        .outcomes
        .iter()
        .map(|o| {
            json!({"side": o.side, "workload": o.workload, "rep": o.rep + 1,
                        "secs": o.secs, "units": o.units, "load_secs": o.load_secs,
                        "peak_rss_bytes": o.peak_rss_bytes, "error": o.error})
        })
        .collect();
    json!({
        "bench": "scalpel-vs-pytorch",
        "date": machine::iso8601(r.started),
        "started_unix": r.started,
        "finished_unix": r.finished,
        "reps": r.reps,
        "machine": {
            "description": scalpel::machine::describe(),
            "threads_each_side": r.threads,
            "loadavg_before": r.load_before,
            "loadavg_after": r.load_after,
            "matmul_flops_per_s": r.matmul.iter().map(|o| (o.side.to_string(), json!(o.ok().then(|| o.units as f64 / o.secs)))).collect::<serde_json::Map<_, _>>(),
            "memory_bandwidth_bytes_per_s": r.bandwidth,
        },
        "versions": {"scalpel": version("scalpel"), "pytorch": version("pytorch"),
                     "git_commit": machine::git_commit(&machine::workspace_root()).map(|c| c.0)},
        "model": {"name": scalpel::assets::SMOLLM2_ID, "dtype": "f32 (dequantized from the shipped GGUF on both sides)", "work": r.facts.to_json()},
        "workloads": workloads,
        "runs": secs,
    })
}

fn fmt_load(l: Option<[f64; 3]>) -> String {
    l.map_or("unknown".into(), |[a, b, c]| {
        format!("{a:.2} {b:.2} {c:.2}")
    })
}

fn fmt_rate(s: Option<Summary>) -> String {
    s.map_or("failed".into(), |s| format!("{:.2}", s.median))
}

fn fmt_mb(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| format!("{:.0}", b as f64 / 1e6))
}

fn table(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| workload | unit | Scalpel /s | PyTorch /s | ratio | peak MB (S / P) | bound /s | Scalpel of bound | same computation |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---|");
    for row in r.rows() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            row.workload,
            unit(&row.workload),
            fmt_rate(row.scalpel),
            fmt_rate(row.pytorch),
            row.ratio().map_or("-".into(), |x| format!("{x:.2}×")),
            fmt_mb(row.scalpel_rss),
            fmt_mb(row.pytorch_rss),
            row.bound
                .map_or("-".into(), |b| format!("{:.1} ({})", b.0, b.1)),
            row.bound
                .zip(row.scalpel)
                .map_or("-".into(), |(b, x)| format!(
                    "{:.0}%",
                    100.0 * x.median / b.0
                )),
            if row.agree {
                "yes".to_string()
            } else {
                format!("NO: {}", row.agreement)
            },
        );
    }
    s
}

pub fn print_table(r: &Results) {
    println!("{}", table(r));
}

fn to_markdown(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Scalpel vs PyTorch + transformers, {}\n",
        machine::iso8601(r.started)
    );
    let _ = writeln!(
        s,
        "SmolLM2-135M-Instruct, f32 weights dequantized from the same GGUF on both sides, \
         {} threads each, medians of {} repetition(s) (each a fresh process; model loading \
         not timed). Machine: {}. Load average before {}, after {}.\n",
        r.threads,
        r.reps,
        scalpel::machine::describe(),
        fmt_load(r.load_before),
        fmt_load(r.load_after)
    );
    s.push_str(&table(r));
    let _ = writeln!(
        s,
        "\nRatio = Scalpel's rate ÷ PyTorch's (target ≥ {TARGET_RATIO}). Bounds: FLOPs of the \
         minimal work ÷ the best f32 matmul throughput either library reached here ({:.1} \
         GFLOP/s), and for decoding weight bytes ÷ measured read bandwidth ({:.1} GB/s).",
        r.flops_per_s() / 1e9,
        r.bandwidth / 1e9
    );
    let errors: Vec<String> = r.rows().into_iter().flat_map(|row| row.errors).collect();
    if !errors.is_empty() {
        let _ = writeln!(s, "\n## Failures\n");
        for e in errors {
            let _ = writeln!(s, "- {e}");
        }
    }
    s
}

pub fn write(r: &Results, root: &Path) -> Result<(PathBuf, PathBuf)> {
    let dir = root.join("reports").join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let stamp = machine::file_stamp(r.started);
    let json_path = dir.join(format!("{stamp}.json"));
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&to_json(r))? + "\n",
    )
    .with_context(|| format!("write {}", json_path.display()))?;
    let md_path = dir.join(format!("{stamp}.md"));
    std::fs::write(&md_path, to_markdown(r))
        .with_context(|| format!("write {}", md_path.display()))?;
    Ok((json_path, md_path))
}
