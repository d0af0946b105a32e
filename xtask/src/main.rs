//! Project chores that are not part of the `scalpel` binary: `cargo xtask <command>`.
//!
//! Benchmarks live here rather than in unit tests because speed depends on the machine
//! and on what else is running; a bench records both and leaves judging to a person.

mod bench;
mod cluster;
mod fuzz;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Scalpel project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Performance benchmarks; results go under reports/bench/. With no target: Scalpel
    /// against PyTorch + transformers on the suite workloads (log-likelihood scoring,
    /// RealToxicityPrompts sampling, causal tracing, perplexity).
    Bench {
        #[command(subcommand)]
        target: Option<BenchTarget>,
        #[command(flatten)]
        versus: bench::versus::Args,
    },
    /// The sharded run on a real single-node Slurm cluster started here (Debian's
    /// slurmctld, slurmd, munge; needs root): the suite as a 4-task sbatch array, merged
    /// by a dependent job, checked against an unsharded run item by item.
    ClusterTest(cluster::Args),
    /// The fuzz targets of xtask/fuzz (suite and fit YAML, GGUF, safetensors,
    /// tokenizer.json, datasets) for a time budget each; needs nightly and cargo-fuzz.
    /// Writes reports/fuzz/<date>.{md,json}.
    Fuzz(fuzz::Args),
}

#[derive(Subcommand)]
enum BenchTarget {
    /// Prefill and decode tokens/s of our transformer on SmolLM2 beside candle-transformers'
    /// llama (f32, same weights) and quantized llama (the GGUF as shipped), and beside the
    /// memory-bandwidth bound for decode.
    Model(bench::model::Args),
    /// One workload of the PyTorch comparison in this process (run by `bench` itself).
    #[command(hide = true)]
    Worker(bench::versus::ours::WorkerArgs),
}

fn main() -> Result<()> {
    scalpel::machine::retain_freed_memory();
    scalpel::machine::single_threaded_candle_ops();
    match Cli::parse().cmd {
        Cmd::Bench { target, versus } => match target {
            None => bench::versus::run(&versus),
            Some(BenchTarget::Model(args)) => bench::model::run(&args),
            Some(BenchTarget::Worker(args)) => bench::versus::ours::run(&args),
        },
        Cmd::ClusterTest(args) => cluster::run(&args),
        Cmd::Fuzz(args) => fuzz::run(&args),
    }
}
