//! Project chores that are not part of the `scalpel` binary: `cargo xtask <command>`.
//!
//! Benchmarks live here rather than in unit tests because speed depends on the machine
//! and on what else is running; a bench records both and leaves judging to a person.

mod bench;

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
    /// Performance benchmarks; results go under reports/bench/.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
}

#[derive(Subcommand)]
enum BenchTarget {
    /// Prefill and decode tokens/s of our transformer on SmolLM2 beside candle-transformers'
    /// llama (f32, same weights) and quantized llama (the GGUF as shipped), and beside the
    /// memory-bandwidth bound for decode.
    Model(bench::model::Args),
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Bench { target } => match target {
            BenchTarget::Model(args) => bench::model::run(&args),
        },
    }
}
