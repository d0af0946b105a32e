//! Results of `bench model`: the table on stdout, the JSON record and the Markdown
//! summary under `reports/bench/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::machine;
use super::stats::Summary;

/// The f32 model must match candle's on the same weights at least this closely, or the
/// speed comparison is between two different computations.
pub const F32_AGREEMENT: f64 = 1e-3;

/// One workload on one implementation: a time per repetition.
#[derive(Debug, Clone)]
pub struct Series {
    pub workload: String,
    pub implementation: String,
    /// Tokens a run counts toward tokens/s (prompt tokens for prefill, new ones after).
    pub tokens: usize,
    pub secs: Vec<f64>,
    /// Set when the implementation could not run the workload.
    pub error: Option<String>,
    /// Weight bytes read per decoded token, for decode series.
    pub bytes_per_token: Option<f64>,
}

impl Series {
    pub fn new(workload: String, implementation: &str, tokens: usize) -> Series {
        Series {
            workload,
            implementation: implementation.to_string(),
            tokens,
            secs: vec![],
            error: None,
            bytes_per_token: None,
        }
    }

    pub fn tok_s(&self) -> Option<Summary> {
        let rates: Vec<f64> = self.secs.iter().map(|s| self.tokens as f64 / s).collect();
        Summary::of(&rates)
    }
}

#[derive(Debug, Clone)]
pub struct Agreement {
    /// The implementations ours was compared with, in order.
    pub against: Vec<String>,
    /// Max |logit difference| at the last prompt position, per implementation.
    pub max_abs_diff: Vec<f64>,
    pub argmax_same: Vec<bool>,
    /// Max |logit| of ours, to read the differences against.
    pub logit_scale: f64,
    /// Leading greedy tokens identical to ours, out of `greedy_len`.
    pub greedy_same_prefix: Vec<usize>,
    pub greedy_len: usize,
}

#[derive(Debug, Clone)]
pub struct BandwidthSamples {
    pub buffer_bytes: usize,
    pub threads: usize,
    /// Bytes per second, one per repetition.
    pub single: Vec<f64>,
    pub multi: Vec<f64>,
}

impl BandwidthSamples {
    /// The bandwidth the decode bound uses: the best read seen on any thread count. The
    /// best, not the median, because a bound should be one the code could have reached.
    pub fn bound_bandwidth(&self) -> Option<f64> {
        self.multi
            .iter()
            .chain(&self.single)
            .copied()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
    }
}

pub struct Results {
    pub started: u64,
    pub finished: u64,
    pub reps: usize,
    pub quick: bool,
    pub cores: usize,
    pub threads: usize,
    pub cpu_model: Option<String>,
    pub cpu_features: Vec<&'static str>,
    pub load_before: Option<[f64; 3]>,
    pub load_after: Option<[f64; 3]>,
    pub load_samples: Vec<[f64; 3]>,
    pub candle_version: Option<String>,
    pub candle_transformers_version: Option<String>,
    pub git_commit: Option<String>,
    pub git_dirty: bool,
    pub model_path: String,
    pub model_file_bytes: u64,
    pub model_config: String,
    pub quant_types: BTreeMap<String, u64>,
    pub f32_bytes_per_token: f64,
    pub quant_bytes_per_token: f64,
    pub prefill_prompt_len: usize,
    pub sample_prompt_len: usize,
    pub agreement: Agreement,
    pub bandwidth: BandwidthSamples,
    /// The implementation the others are compared with (its name in `series`).
    pub ours: String,
    pub series: Vec<Series>,
}

impl Results {
    /// Median over repetitions of ours' tok/s ÷ this series' tok/s in the same
    /// repetition. Pairing runs that sat next to each other in time cancels much of the
    /// load from other processes, which the separate medians keep.
    fn paired_ratio(&self, s: &Series) -> Option<f64> {
        if s.implementation == self.ours || s.error.is_some() {
            return None;
        }
        let o = self
            .series
            .iter()
            .find(|o| o.workload == s.workload && o.implementation == self.ours)?;
        if o.secs.len() != s.secs.len() || o.error.is_some() {
            return None;
        }
        let r: Vec<f64> = o
            .secs
            .iter()
            .zip(&s.secs)
            .map(|(os, ss)| (o.tokens as f64 / os) / (s.tokens as f64 / ss))
            .collect();
        Summary::of(&r).map(|x| x.median)
    }

    fn bound(&self, s: &Series) -> Option<f64> {
        Some(self.bandwidth.bound_bandwidth()? / s.bytes_per_token?)
    }
}

pub fn print_agreement(a: &Agreement) {
    for (i, name) in a.against.iter().enumerate() {
        let flag = if i == 0 && a.max_abs_diff[i] > F32_AGREEMENT {
            format!("  ** above {F32_AGREEMENT:e}: not the same computation **")
        } else {
            String::new()
        };
        eprintln!(
            "last-position logits, ours vs {name}: max |Δ| = {:.3e} (max |logit| {:.2}), \
             same argmax: {}{flag}",
            a.max_abs_diff[i], a.logit_scale, a.argmax_same[i]
        );
    }
}

fn fmt_load(l: Option<[f64; 3]>) -> String {
    l.map(|[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"))
        .unwrap_or_else(|| "n/a".into())
}

fn load_range(r: &Results) -> String {
    let ones: Vec<f64> = r.load_samples.iter().map(|l| l[0]).collect();
    match Summary::of(&ones) {
        Some(s) => format!("{:.2}–{:.2}", s.min, s.max),
        None => "n/a".into(),
    }
}

fn gbs(x: f64) -> String {
    format!("{:.1} GB/s", x / 1e9)
}

pub fn print_table(r: &Results) {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nbench model — {} ({} cores, candle {} threads, {}), {} rep(s)",
        machine::iso8601(r.started),
        r.cores,
        r.threads,
        r.cpu_model.as_deref().unwrap_or("unknown CPU"),
        r.reps
    );
    let _ = writeln!(
        out,
        "load average before {} / after {}; 1-min load during {}",
        fmt_load(r.load_before),
        fmt_load(r.load_after),
        load_range(r)
    );
    let _ = writeln!(
        out,
        "\n{:<44} {:<34} {:>10} {:>21} {:>10} {:>8} {:>10}",
        "workload", "implementation", "tok/s med", "min – max", "bound", "of bound", "ours ÷ it"
    );
    for s in &r.series {
        let bound = r.bound(s);
        match (&s.error, s.tok_s()) {
            (Some(e), _) => {
                let _ = writeln!(
                    out,
                    "{:<44} {:<34} unsupported: {e}",
                    s.workload, s.implementation
                );
            }
            (None, Some(t)) => {
                let _ = writeln!(
                    out,
                    "{:<44} {:<34} {:>10.1} {:>21} {:>10} {:>8} {:>10}",
                    s.workload,
                    s.implementation,
                    t.median,
                    format!("{:.1} – {:.1}", t.min, t.max),
                    bound.map(|b| format!("{b:.1}")).unwrap_or_default(),
                    bound
                        .map(|b| format!("{:.0}%", 100.0 * t.median / b))
                        .unwrap_or_default(),
                    r.paired_ratio(s)
                        .map(|x| format!("{x:.2}×"))
                        .unwrap_or_default()
                );
            }
            (None, None) => {
                let _ = writeln!(
                    out,
                    "{:<44} {:<34} no samples",
                    s.workload, s.implementation
                );
            }
        }
    }
    let bw = &r.bandwidth;
    if let (Some(s1), Some(sn)) = (Summary::of(&bw.single), Summary::of(&bw.multi)) {
        let _ = writeln!(
            out,
            "\nmemory read bandwidth ({} MiB buffer): 1 thread median {} (best {}), {} threads \
             median {} (best {})",
            bw.buffer_bytes >> 20,
            gbs(s1.median),
            gbs(s1.max),
            bw.threads,
            gbs(sn.median),
            gbs(sn.max)
        );
    }
    let _ = writeln!(
        out,
        "weights read per decoded token: f32 {:.1} MB, {} {:.1} MB; bound = best bandwidth ÷ that",
        r.f32_bytes_per_token / 1e6,
        r.quant_types.keys().cloned().collect::<Vec<_>>().join("+"),
        r.quant_bytes_per_token / 1e6
    );
    let a = &r.agreement;
    for (i, name) in a.against.iter().enumerate() {
        let _ = writeln!(
            out,
            "ours vs {name}: last-position logits max |Δ| {:.2e} (max |logit| {:.1}), same argmax \
             {}, greedy tokens identical for the first {}/{}",
            a.max_abs_diff[i],
            a.logit_scale,
            a.argmax_same[i],
            a.greedy_same_prefix.get(i).copied().unwrap_or(0),
            a.greedy_len
        );
    }
    print!("{out}");
}

pub fn to_json(r: &Results) -> Value {
    let summary = |xs: &[f64]| Summary::of(xs).map(Summary::to_json);
    let series: Vec<Value> = r
        .series
        .iter()
        .map(|s| {
            let bound = r.bound(s);
            json!({
                "workload": s.workload,
                "implementation": s.implementation,
                "tokens_per_run": s.tokens,
                "secs": s.secs,
                "tok_per_s": s.tok_s().map(Summary::to_json),
                "error": s.error,
                "weight_bytes_per_token": s.bytes_per_token,
                "bound_tok_per_s": bound,
                "median_fraction_of_bound": bound.zip(s.tok_s()).map(|(b, t)| t.median / b),
                "ours_over_this_paired_median": r.paired_ratio(s),
            })
        })
        .collect();
    let a = &r.agreement;
    let agreement: Vec<Value> = a
        .against
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({
                "implementation": name,
                "last_logits_max_abs_diff": a.max_abs_diff[i],
                "argmax_same": a.argmax_same[i],
                "greedy_same_prefix": a.greedy_same_prefix.get(i),
            })
        })
        .collect();
    json!({
        "bench": "model",
        "date": machine::iso8601(r.started),
        "started_unix": r.started,
        "finished_unix": r.finished,
        "reps": r.reps,
        "quick": r.quick,
        "machine": {
            "cores": r.cores,
            "candle_threads": r.threads,
            "cpu_model": r.cpu_model,
            "cpu_features": r.cpu_features,
            "loadavg_before": r.load_before,
            "loadavg_after": r.load_after,
            "loadavg_after_warmup_then_each_rep": r.load_samples,
        },
        "versions": {
            "candle_core": r.candle_version,
            "candle_transformers": r.candle_transformers_version,
            "git_commit": r.git_commit,
            "git_dirty": r.git_dirty,
        },
        "model": {
            "path": r.model_path,
            "file_bytes": r.model_file_bytes,
            "config": r.model_config,
            "quantized_matrix_bytes_by_type": r.quant_types,
            "f32_weight_bytes_per_token": r.f32_bytes_per_token,
            "quantized_weight_bytes_per_token": r.quant_bytes_per_token,
            "prefill_prompt_tokens": r.prefill_prompt_len,
            "sample_prompt_tokens": r.sample_prompt_len,
        },
        "agreement": {
            "with": agreement,
            "ours_max_abs_logit": a.logit_scale,
            "greedy_tokens": a.greedy_len,
            "f32_tolerance": F32_AGREEMENT,
        },
        "bandwidth": {
            "buffer_bytes": r.bandwidth.buffer_bytes,
            "threads": r.bandwidth.threads,
            "single_thread_bytes_per_s": summary(&r.bandwidth.single),
            "multi_thread_bytes_per_s": summary(&r.bandwidth.multi),
            "bound_bytes_per_s": r.bandwidth.bound_bandwidth(),
            "bound_uses": "best read over all repetitions",
        },
        "results": series,
    })
}

pub fn to_markdown(r: &Results) -> String {
    let mut md = String::new();
    let commit = r
        .git_commit
        .as_deref()
        .map(|c| {
            format!(
                "{}{}",
                &c[..c.len().min(10)],
                if r.git_dirty { " (dirty)" } else { "" }
            )
        })
        .unwrap_or_else(|| "unknown".into());
    let _ = writeln!(md, "# bench model — {}\n", machine::iso8601(r.started));
    let _ = writeln!(
        md,
        "SmolLM2-135M-Instruct, commit {commit}, candle {}, {} cores ({}), {} repetition(s); \
         load average before {}, after {}, 1-min during {}.\n",
        r.candle_version.as_deref().unwrap_or("?"),
        r.cores,
        r.cpu_model.as_deref().unwrap_or("unknown CPU"),
        r.reps,
        fmt_load(r.load_before),
        fmt_load(r.load_after),
        load_range(r)
    );
    let _ = writeln!(
        md,
        "| workload | implementation | tok/s (median) | min – max | decode bound | of bound | ours ÷ it (paired) |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|");
    for s in &r.series {
        let bound = r.bound(s);
        match (&s.error, s.tok_s()) {
            (Some(e), _) => {
                let e = e.lines().next().unwrap_or_default().replace('|', "\\|");
                let _ = writeln!(
                    md,
                    "| {} | {} | unsupported: {e} | | | | |",
                    s.workload, s.implementation
                );
            }
            (None, Some(t)) => {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.1} | {:.1} – {:.1} | {} | {} | {} |",
                    s.workload,
                    s.implementation,
                    t.median,
                    t.min,
                    t.max,
                    bound.map(|b| format!("{b:.1}")).unwrap_or_default(),
                    bound
                        .map(|b| format!("{:.0}%", 100.0 * t.median / b))
                        .unwrap_or_default(),
                    r.paired_ratio(s)
                        .map(|x| format!("{x:.2}×"))
                        .unwrap_or_default()
                );
            }
            (None, None) => {}
        }
    }
    let bw = &r.bandwidth;
    if let (Some(s1), Some(sn)) = (Summary::of(&bw.single), Summary::of(&bw.multi)) {
        let _ = writeln!(
            md,
            "\nMemory read bandwidth: {} median / {} best on 1 thread, {} median / {} best on {} \
             threads. Decode bound = best bandwidth ÷ weight bytes per token (f32 {:.1} MB, \
             quantized {:.1} MB; KV-cache reads and the embedding row left out). \
             \"ours ÷ it\" is the median over repetitions of the ratio within one repetition \
             (above 1: ours faster).",
            gbs(s1.median),
            gbs(s1.max),
            gbs(sn.median),
            gbs(sn.max),
            bw.threads,
            r.f32_bytes_per_token / 1e6,
            r.quant_bytes_per_token / 1e6
        );
    }
    let a = &r.agreement;
    for (i, name) in a.against.iter().enumerate() {
        let _ = writeln!(
            md,
            "\nOurs vs {name}: last-position logits max |Δ| {:.2e} (max |logit| {:.1}); greedy \
             tokens identical for {}/{}.",
            a.max_abs_diff[i],
            a.logit_scale,
            a.greedy_same_prefix.get(i).copied().unwrap_or(0),
            a.greedy_len
        );
    }
    md
}

/// Write `model-<stamp>.json` and `model-latest.md` under `<root>/reports/bench/`.
pub fn write(r: &Results, root: &Path) -> Result<(PathBuf, PathBuf)> {
    let dir = root.join("reports").join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let json_path = dir.join(format!("model-{}.json", machine::file_stamp(r.started)));
    let text = serde_json::to_string_pretty(&to_json(r))?;
    std::fs::write(&json_path, text + "\n")
        .with_context(|| format!("write {}", json_path.display()))?;
    let md_path = dir.join("model-latest.md");
    std::fs::write(&md_path, to_markdown(r))
        .with_context(|| format!("write {}", md_path.display()))?;
    Ok((json_path, md_path))
}
