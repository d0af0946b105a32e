//! The sharded run on a real cluster engine: a single-node Slurm (Debian's slurmctld,
//! slurmd and munge, which `.ci/run` installs; the daemons run as root) is started on
//! this machine, a small suite runs as a 4-task `sbatch --array` with the shipped
//! `deploy/slurm/scalpel-array.sbatch`, a dependent job merges it with
//! `deploy/slurm/scalpel-merge.sbatch`, and the merged run must equal an unsharded run
//! item for item and verdict for verdict. `cargo xtask cluster-test` does the same for
//! any suite (the smoke suite by default).

mod common;

#[path = "common/slurm.rs"]
mod slurm;

use std::fs;
use std::process::Command;

use scalpel::store::tables::Run;

#[test]
fn a_suite_sharded_as_a_slurm_array_and_merged_equals_the_unsharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let suite = common::small_suite(dir.path(), "cluster");
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_scalpel"));
    let whole_root = dir.path().join("whole");
    let o = Command::new(&bin)
        .arg("test")
        .arg(&suite)
        .args(["--device", "cpu", "--runs"])
        .arg(&whole_root)
        .output()
        .unwrap();
    assert!(
        matches!(o.status.code(), Some(0 | 101)),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let whole_dir = fs::read_dir(&whole_root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();

    let cluster = slurm::start(&dir.path().join("slurm")).unwrap_or_else(|e| {
        panic!(
            "the cluster test needs Debian's slurmctld, slurmd, slurm-client and munge and \
             root to run them (.ci/run installs them): {e:#}"
        )
    });
    let (merged, walls) = slurm::array_and_merge(
        &cluster,
        &common::repo_root(),
        &bin,
        &suite,
        &dir.path().join("runs"),
        4,
        dir.path(),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    drop(cluster);
    let (a, b) = (Run::read(&whole_dir).unwrap(), Run::read(&merged).unwrap());
    slurm::compare(&a, &b).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        b.verdicts.len(),
        4,
        "steer on copa and toxicity, both on CrowS-Pairs"
    );
    eprintln!(
        "merged 4 Slurm shards ({walls:?} s) into {} items equal to the unsharded run's",
        b.items.len()
    );
}
