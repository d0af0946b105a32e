//! `cargo xtask fuzz`: run the fuzz targets of `xtask/fuzz/` (cargo-fuzz, libFuzzer with
//! AddressSanitizer; needs the nightly toolchain and `cargo install cargo-fuzz`) for a
//! time budget each, and write what they did to `reports/fuzz/<date>.{md,json}`.
//!
//! Each target grows its corpus in `target/fuzz-corpus/<target>/` from the seeds in
//! `fixtures/fuzz/<target>/` (read, never written). An input that crashes a reader lands
//! in `target/fuzz-artifacts/<target>/`; after the fix, copy it into
//! `fixtures/fuzz/<target>/` so that `tests/fuzz_regressions.rs` replays it in every
//! `cargo test`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Targets to run (default: all of scalpel::fuzzing::TARGETS).
    targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Parallel libFuzzer jobs per target.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
}

struct Outcome {
    target: String,
    seconds: f64,
    runs: u64,
    corpus: usize,
    crashes: Vec<PathBuf>,
}

pub fn run(a: &Args) -> Result<()> {
    let repo = std::env::current_dir()?;
    let known: Vec<&str> = scalpel::fuzzing::TARGETS.iter().map(|(n, _)| *n).collect();
    let targets: Vec<String> = if a.targets.is_empty() {
        known.iter().map(|s| s.to_string()).collect()
    } else {
        a.targets.clone()
    };
    for t in &targets {
        if !known.contains(&t.as_str()) {
            bail!("unknown fuzz target '{t}' (targets: {})", known.join(", "));
        }
    }
    let mut outcomes = Vec::new();
    for t in &targets {
        let corpus = repo.join("target/fuzz-corpus").join(t);
        let artifacts = repo.join("target/fuzz-artifacts").join(t);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        let seeds = repo.join("fixtures/fuzz").join(t);
        // Crash inputs of earlier runs stay in the directory; only new ones are this run's.
        let before: std::collections::HashSet<PathBuf> = files(&artifacts).into_iter().collect();
        eprintln!("fuzz: {t} for {} s", a.seconds);
        let started = Instant::now();
        let out = Command::new("cargo")
            .args(["+nightly", "fuzz", "run", "--fuzz-dir", "xtask/fuzz", t])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", a.seconds))
            .arg(format!("-jobs={}", a.jobs))
            .arg(format!("-workers={}", a.jobs))
            // Model files are large: room for a GGUF or safetensors header with tensors.
            .arg("-max_len=65536")
            .arg("-rss_limit_mb=4096")
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .output()
            .context("running cargo +nightly fuzz (install with `cargo install cargo-fuzz`)")?;
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        std::fs::write(artifacts.join("last-run.log"), &log)?;
        let crashes = files(&artifacts)
            .into_iter()
            .filter(|p| !before.contains(p))
            .filter(|p| {
                let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                ["crash-", "oom-", "timeout-", "leak-"]
                    .iter()
                    .any(|k| n.starts_with(k))
            })
            .collect::<Vec<_>>();
        let runs = log
            .lines()
            .filter_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum();
        let o = Outcome {
            target: t.clone(),
            seconds: started.elapsed().as_secs_f64(),
            runs,
            corpus: files(&corpus).len(),
            crashes,
        };
        eprintln!(
            "fuzz: {t}: {} runs in {:.0} s, corpus {}, {} crash input(s){}",
            o.runs,
            o.seconds,
            o.corpus,
            o.crashes.len(),
            if out.status.success() {
                ""
            } else {
                " (libFuzzer stopped on a finding)"
            }
        );
        outcomes.push(o);
    }
    write_report(&repo, a, &outcomes)?;
    let found: usize = outcomes.iter().map(|o| o.crashes.len()).sum();
    if found > 0 {
        bail!("{found} crashing input(s) under target/fuzz-artifacts/: fix them, then keep each in fixtures/fuzz/<target>/");
    }
    Ok(())
}

fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
}

fn write_report(repo: &Path, a: &Args, outcomes: &[Outcome]) -> Result<()> {
    let dir = repo.join("reports/fuzz");
    std::fs::create_dir_all(&dir)?;
    let date = scalpel::machine::iso8601(scalpel::machine::unix_now());
    let day = &date[..10];
    let mut md = format!(
        "# Fuzzing, {date}\n\n`cargo xtask fuzz --seconds {} --jobs {}` on {} \
         (libFuzzer with AddressSanitizer, nightly Rust).\n\n\
         | target | seconds | inputs run | corpus | crashes |\n|---|---|---|---|---|\n",
        a.seconds,
        a.jobs,
        scalpel::machine::describe()
    );
    let mut rows = Vec::new();
    for o in outcomes {
        md.push_str(&format!(
            "| `{}` | {:.0} | {} | {} | {} |\n",
            o.target,
            o.seconds,
            o.runs,
            o.corpus,
            o.crashes.len()
        ));
        rows.push(serde_json::json!({
            "target": o.target,
            "seconds": o.seconds,
            "runs": o.runs,
            "corpus": o.corpus,
            "crashes": o.crashes.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        }));
    }
    std::fs::write(dir.join(format!("{day}.md")), md)?;
    std::fs::write(
        dir.join(format!("{day}.json")),
        serde_json::to_string_pretty(&serde_json::json!({
            "date": date,
            "seconds_per_target": a.seconds,
            "jobs": a.jobs,
            "targets": rows,
        }))?,
    )?;
    Ok(())
}
