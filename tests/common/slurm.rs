//! A single-node Slurm cluster on this machine, for the sharded-run tests: shared by
//! `tests/cluster.rs` (CI) and `cargo xtask cluster-test` (any suite), which include this
//! file by path (`tests/shard.rs` uses only its comparison of two runs). Debian's
//! slurmctld, slurmd and munge; the daemons run as root.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use scalpel::store::tables::Run;

fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The daemons, stopped when dropped.
pub struct Cluster {
    daemons: Vec<Child>,
    pub conf: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

pub fn start(root: &Path) -> Result<Cluster> {
    if !(have("sbatch") && have("slurmctld") && have("slurmd") && have("munged")) {
        eprintln!("cluster-test: installing slurmctld slurmd slurm-client munge (Debian)");
        sh(Command::new("apt-get").args(["update", "-qq"]))?;
        sh(Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "slurmctld",
                "slurmd",
                "slurm-client",
                "munge",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    // munge authenticates the daemons to each other; it wants its socket directory.
    if !Command::new("pgrep").arg("munged").status()?.success() {
        std::fs::create_dir_all("/run/munge")?;
        sh(Command::new("chown").args(["munge:munge", "/run/munge"]))?;
        sh(Command::new("runuser").args(["-u", "munge", "--", "/usr/sbin/munged"]))?;
    }
    // The node's name must be what slurmd calls itself; its address is pinned to the
    // loopback, so nothing depends on the host name resolving.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .split('.')
        .next()
        .unwrap_or("localhost")
        .to_string();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for d in ["state", "spool", "log"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let r = root.display();
    let conf = root.join("slurm.conf");
    std::fs::write(
        &conf,
        format!(
            "ClusterName=scalpel-test\nSlurmctldHost={host}(127.0.0.1)\nSlurmUser=root\nSlurmdUser=root\n\
             AuthType=auth/munge\nCredType=cred/munge\n\
             StateSaveLocation={r}/state\nSlurmdSpoolDir={r}/spool\n\
             SlurmctldPidFile={r}/slurmctld.pid\nSlurmdPidFile={r}/slurmd.pid\n\
             SlurmctldLogFile={r}/log/slurmctld.log\nSlurmdLogFile={r}/log/slurmd.log\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
             SelectType=select/cons_tres\nSelectTypeParameters=CR_CPU\n\
             SchedulerType=sched/backfill\nJobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\nMpiDefault=none\n\
             ReturnToService=2\nSlurmdTimeout=300\n\
             NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN\n\
             PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP\n"
        ),
    )?;
    let spawn = |bin: &str| -> Result<Child> {
        Command::new(bin)
            .arg("-D")
            .env("SLURM_CONF", &conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {bin}"))
    };
    let mut cluster = Cluster {
        daemons: Vec::new(),
        conf: conf.clone(),
    };
    cluster.daemons.push(spawn("slurmctld")?);
    cluster.daemons.push(spawn("slurmd")?);
    let t0 = Instant::now();
    loop {
        let out = Command::new("sinfo")
            .args(["-h", "-o", "%T"])
            .env("SLURM_CONF", &conf)
            .output()?;
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if state == "idle" {
            break;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("the Slurm node did not come up (state '{state}'); logs in {r}/log");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(cluster)
}

/// Submit `suite` as an array of `shards` tasks with `deploy/slurm/scalpel-array.sbatch`
/// (run from `repo`, with `bin` as scalpel), merge it with a dependent
/// `scalpel-merge.sbatch` job, and wait. Returns the merged run's directory and each
/// shard's wall seconds.
pub fn array_and_merge(
    cluster: &Cluster,
    repo: &Path,
    bin: &Path,
    suite: &Path,
    runs: &Path,
    shards: usize,
    logs: &Path,
) -> Result<(PathBuf, Vec<f64>)> {
    let env = |c: &mut Command| {
        c.env("SLURM_CONF", &cluster.conf)
            .env("SUITE", suite)
            .env("RUNS", runs)
            .env("SCALPEL", bin)
            .env("DEVICE", "cpu")
            .current_dir(repo);
    };
    let mut submit = Command::new("sbatch");
    submit.args([
        "--parsable",
        &format!("--array=0-{}", shards - 1),
        "--cpus-per-task=1",
        &format!("--output={}/shard-%A_%a.out", logs.display()),
        "deploy/slurm/scalpel-array.sbatch",
    ]);
    env(&mut submit);
    let job = sh(&mut submit)?.trim().to_string();
    let mut merge = Command::new("sbatch");
    merge.args([
        "--parsable",
        "--wait",
        &format!("--dependency=afterok:{job}"),
        &format!("--output={}/merge-%j.out", logs.display()),
        "--export=ALL",
        "deploy/slurm/scalpel-merge.sbatch",
    ]);
    env(&mut merge);
    merge.env("ARRAY_JOB", &job);
    // The merge job exits 101 when a gate fails, as an unsharded run may: the caller
    // compares verdicts instead.
    let status = merge.status()?;
    let merged = runs.join(&job).join("merged");
    ensure!(
        merged.join("verdicts.parquet").exists(),
        "no merged run (merge job status {status}); see {}/*.out",
        logs.display()
    );
    let mut walls = Vec::new();
    for e in std::fs::read_dir(runs.join(&job))? {
        let p = e?.path();
        if p.is_dir()
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("-shard"))
        {
            let r = Run::read(&p)?;
            walls.push(r.meta("wall_seconds").parse::<f64>().unwrap_or(f64::NAN));
        }
    }
    ensure!(
        walls.len() == shards,
        "{} shard runs, expected {shards}",
        walls.len()
    );
    Ok((merged, walls))
}

/// Items (value within float rounding: batches differ) and verdicts equal.
pub fn compare(a: &Run, b: &Run) -> Result<()> {
    let key = |r: &Run| {
        let mut v: Vec<_> = r
            .items
            .iter()
            .map(|i| {
                (
                    (
                        i.intervention.clone(),
                        i.task.clone(),
                        i.idx,
                        i.metric.clone(),
                    ),
                    i.value,
                )
            })
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    let (x, y) = (key(a), key(b));
    ensure!(
        x.len() == y.len(),
        "unsharded {} item rows, merged {}",
        x.len(),
        y.len()
    );
    for (p, q) in x.iter().zip(&y) {
        ensure!(p.0 == q.0, "item rows differ: {:?} vs {:?}", p.0, q.0);
        let same = match (p.1, q.1) {
            (Some(u), Some(v)) => (u - v).abs() <= 1e-4 * u.abs().max(1.0),
            (u, v) => u == v,
        };
        ensure!(same, "{:?}: unsharded {:?}, merged {:?}", p.0, p.1, q.1);
    }
    ensure!(
        a.verdicts.len() == b.verdicts.len(),
        "verdict counts differ"
    );
    for (v, w) in a.verdicts.iter().zip(&b.verdicts) {
        ensure!(
            v.trial == w.trial && v.outcome == w.outcome && v.n == w.n,
            "verdict {}: unsharded {} (n {:?}), merged {} {} (n {:?})",
            v.trial,
            v.outcome,
            v.n,
            w.trial,
            w.outcome,
            w.n
        );
        let close = |p: Option<f64>, q: Option<f64>| match (p, q) {
            (Some(p), Some(q)) => (p - q).abs() < 1e-6,
            (p, q) => p == q,
        };
        ensure!(
            close(v.estimate, w.estimate) && close(v.ci_lo, w.ci_lo) && close(v.ci_hi, w.ci_hi),
            "verdict {}: estimates differ",
            v.trial
        );
    }
    Ok(())
}
