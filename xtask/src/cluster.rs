//! `cargo xtask cluster-test`: the sharded run on a real Slurm cluster. A single-node
//! cluster (Debian's slurmctld, slurmd and munge) is started on this machine, the suite
//! is submitted as a 4-task array with the shipped `deploy/slurm/scalpel-array.sbatch`,
//! merged by `deploy/slurm/scalpel-merge.sbatch` as a dependent job, and the merged run
//! is checked against an unsharded run of the same suite: the same items with the same
//! scores, the same verdicts. `tests/cluster.rs` does the same on a small suite in CI.
//!
//! Needs root (to install the packages when missing and to run the daemons); the
//! cluster's state lives under `target/cluster-test/` and its daemons are stopped at the
//! end.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use scalpel::store::tables::Run;

#[path = "../../tests/common/slurm.rs"]
mod slurm;

#[derive(clap::Args)]
pub struct Args {
    /// The suite to shard.
    #[arg(long, default_value = "suites/smoke.yaml")]
    suite: PathBuf,
    /// Array tasks (shards).
    #[arg(long, default_value_t = 4)]
    shards: usize,
}

pub fn run(a: &Args) -> Result<()> {
    let repo = std::env::current_dir()?;
    let root = repo.join("target/cluster-test");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    std::fs::create_dir_all(&root)?;
    eprintln!("cluster-test: building the release binary");
    let built = Command::new("cargo")
        .args(["build", "--release", "-p", "scalpel"])
        .status()?;
    ensure!(built.success(), "cargo build failed");
    let bin = repo.join("target/release/scalpel");

    // The unsharded run to compare with.
    let t0 = Instant::now();
    let whole_root = root.join("whole");
    let out = Command::new(&bin)
        .arg("test")
        .arg(&a.suite)
        .args(["--device", "cpu", "--runs"])
        .arg(&whole_root)
        .output()?;
    ensure!(
        matches!(out.status.code(), Some(0 | 101)),
        "unsharded run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unsharded_s = t0.elapsed().as_secs_f64();
    let whole_dir = std::fs::read_dir(&whole_root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir())
        .context("the unsharded run wrote no run directory")?;

    let cluster = slurm::start(&root)?;
    let t1 = Instant::now();
    let (merged_dir, walls) = slurm::array_and_merge(
        &cluster,
        &repo,
        &bin,
        &a.suite,
        &root.join("runs"),
        a.shards,
        &root,
    )?;
    let sharded_s = t1.elapsed().as_secs_f64();
    drop(cluster);

    let (whole, merged) = (Run::read(&whole_dir)?, Run::read(&merged_dir)?);
    slurm::compare(&whole, &merged)?;
    eprintln!(
        "cluster-test: ok. {} items and {} verdicts of the merged {}-shard Slurm run equal \
         the unsharded run's. Unsharded {unsharded_s:.0} s; array + merge {sharded_s:.0} s \
         wall on {} cores (shards {:?} s each).",
        merged.items.len(),
        merged.verdicts.len(),
        a.shards,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        walls.iter().map(|s| s.round()).collect::<Vec<_>>()
    );
    Ok(())
}
