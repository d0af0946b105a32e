//! `cargo xtask bench`: Scalpel against PyTorch + transformers on the four workloads a
//! safety suite spends its time on, on the same machine, in one run.
//!
//! - Inputs come from Scalpel's task code (`inputs.rs`); the PyTorch side gets their
//!   token ids, so both compute the same thing, and the first repetition's outputs are
//!   compared (accuracies and log-likelihoods, perplexity, trace effects, greedy tokens)
//!   before any ratio is believed.
//! - Every (repetition, workload, side) is a fresh process, so each side's peak memory
//!   is its own and model loading is outside the timed region; the sides alternate
//!   which goes first, so a burst of load from elsewhere hits both alike.
//! - The hardware bound of each workload comes from FLOPs ÷ the best matmul throughput
//!   either library reaches here, and for decoding from weight bytes ÷ the measured
//!   memory bandwidth (`bounds.rs`).

mod bounds;
pub mod inputs;
pub mod ours;
mod outcome;
mod report;
mod venv;

use std::process::Command;

use anyhow::{Context, Result};

use super::machine;
use outcome::{Outcome, Side};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    reps: super::reps::Reps,
    /// Run only these workloads (loglik, generate, trace, perplexity).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

const DEFAULT_REPS: usize = 3;

/// The workloads, in the order they run within a repetition.
pub const WORKLOADS: [&str; 4] = ["loglik", "generate", "trace", "perplexity"];

pub fn run(args: &Args) -> Result<()> {
    let reps = args.reps.count(DEFAULT_REPS);
    let workloads: Vec<&str> = WORKLOADS
        .iter()
        .copied()
        .filter(|w| args.only.is_empty() || args.only.iter().any(|o| o == w))
        .collect();
    anyhow::ensure!(
        !workloads.is_empty(),
        "--only names no workload of {WORKLOADS:?}"
    );
    let root = machine::workspace_root();
    let started = machine::unix_now();
    let load_before = machine::loadavg();
    let work = root.join("target").join("bench-work");
    std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;

    let python = venv::ensure(&root)?;
    let worker_py = work.join("torch_worker.py");
    std::fs::write(&worker_py, include_str!("torch_worker.py"))
        .with_context(|| format!("write {}", worker_py.display()))?;

    eprintln!("preparing inputs from Scalpel's tasks");
    let (spec, facts) = {
        let (model, path) = ours::load()?;
        let spec = inputs::spec(&model, &path)?;
        let facts = bounds::Facts::new(model.model.info(), &spec);
        (spec, facts)
    };
    let spec_path = work.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec)?)
        .with_context(|| format!("write {}", spec_path.display()))?;
    let threads = scalpel::machine::cores();
    let sides = [
        Side::scalpel(std::env::current_exe()?),
        Side::pytorch(python, worker_py, spec_path, threads),
    ];

    eprintln!("measuring the machine: matmul throughput and memory bandwidth");
    let mut matmul = Vec::new();
    for side in &sides {
        matmul.push(side.run("matmul")?);
    }
    let bandwidth = bounds::bandwidth(threads);

    let mut outcomes: Vec<Outcome> = Vec::new();
    for rep in 0..reps {
        for w in &workloads {
            let order: Vec<&Side> = if rep % 2 == 0 {
                sides.iter().collect()
            } else {
                sides.iter().rev().collect()
            };
            for side in order {
                let o = side.run(w);
                match &o {
                    Ok(o) => eprintln!(
                        "  rep {}  {:<11} {:<8} {:>10.2} {}/s  ({:.1} s, peak {:.0} MB)",
                        rep + 1,
                        w,
                        side.name,
                        o.units as f64 / o.secs,
                        outcome::unit(w),
                        o.secs,
                        o.peak_rss_bytes.unwrap_or(0) as f64 / 1e6
                    ),
                    Err(e) => {
                        eprintln!("  rep {}  {w:<11} {:<8} failed: {e:#}", rep + 1, side.name)
                    }
                }
                outcomes.push(o.unwrap_or_else(|e| Outcome::failed(side.name, w, rep, e)));
                let last = outcomes.last_mut().expect("just pushed");
                last.rep = rep;
            }
        }
    }

    let results = report::Results {
        started,
        finished: machine::unix_now(),
        load_before,
        load_after: machine::loadavg(),
        reps,
        threads,
        matmul,
        bandwidth,
        facts,
        outcomes,
        workloads: workloads.iter().map(|w| w.to_string()).collect(),
    };
    report::print_table(&results);
    let (json, md) = report::write(&results, &root)?;
    eprintln!("wrote {}\nwrote {}", json.display(), md.display());
    Ok(())
}

/// Run a worker command and parse the one JSON object it prints.
fn run_json(cmd: &mut Command, what: &str) -> Result<serde_json::Value> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        anyhow::bail!(
            "{what} exited with {}: {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{what} printed no JSON"))?;
    serde_json::from_str(line).with_context(|| format!("{what}: unreadable JSON"))
}
