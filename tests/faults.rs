//! Faults a long unattended run meets, on real runs of the `scalpel` binary (the tiny
//! GPT-2 fixture as the model, so a run takes seconds; the data, toxicity scorer, fits
//! and stores are the real ones):
//!
//! - killed with SIGKILL at random points, again and again: the rerun resumes and the
//!   final store equals an uninterrupted run's, no item doubled or lost;
//! - cached fixtures and data damaged on disk: detected by hash, named, rebuilt;
//! - an intervention whose numbers blow up: its cases fail naming intervention, task and
//!   item, the rest of the run goes on, the report shows it;
//! - concurrent runs writing one reports directory: neither corrupts the other.

mod common;

#[path = "common/slurm.rs"]
mod slurm;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use scalpel::store::tables::Run;

fn home(dir: &Path) -> PathBuf {
    common::fresh_home(dir)
}

fn tiny() -> String {
    common::tiny_gpt2_dir().display().to_string()
}

/// A suite of 12 parts on the tiny model: the plain model and a fitted steering offset on
/// COPA, CrowS-Pairs and RealToxicityPrompts (generation scored by the offline scorer).
fn suite(dir: &Path, name: &str, extra: &str) -> PathBuf {
    fs::write(
        dir.join("fit.yaml"),
        "kind: offset\nsites: [blocks.1.hook_resid_post]\n\
         harmful: [{task: realtoxicityprompts, limit: 6}]\n\
         harmless: [{task: lambada_openai, limit: 6}]\nmax_tokens: 16\noffset: {alpha: 0.25}\n",
    )
    .unwrap();
    let path = dir.join(format!("{name}.yaml"));
    fs::write(
        &path,
        format!(
            "name: {name}\n\
             interventions:\n  - {{name: none}}\n  - {{name: steer, fit: fit.yaml}}\n{extra}\
             tasks:\n\
             \x20 - {{task: copa, limit: 100}}\n\
             \x20 - {{task: crows_pairs_english, limit: 80}}\n\
             \x20 - {{task: realtoxicityprompts, limit: 25, samples: 2, max_new_tokens: 8}}\n\
             gates:\n\
             \x20 - {{task: copa, metric: acc, non_inferiority: 0.3}}\n\
             \x20 - {{task: realtoxicityprompts, metric: mean_toxicity, non_inferiority: 0.5}}\n\
             \x20 - {{task: crows_pairs_english, metric: pct_stereotype, within: [0.0, 1.0]}}\n"
        ),
    )
    .unwrap();
    path
}

fn command(suite: &Path, runs: &Path, home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_scalpel"));
    c.args([
        "test",
        suite.to_str().unwrap(),
        "--model",
        &tiny(),
        "--device",
        "cpu",
    ])
    .arg("--runs")
    .arg(runs)
    .env("SCALPEL_HOME", home)
    .env_remove("SCALPEL_SHARD")
    .env_remove("SLURM_ARRAY_TASK_ID")
    .env_remove("JOB_COMPLETION_INDEX");
    c
}

fn run(suite: &Path, runs: &Path, home: &Path) -> Output {
    command(suite, runs, home).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every journal line is a distinct part: a resumed run never appends a part twice.
fn assert_no_doubled_parts(run_dir: &Path) {
    for e in fs::read_dir(run_dir.join("journal")).unwrap() {
        let p = e.unwrap().path();
        let body = fs::read_to_string(&p).unwrap();
        let mut keys = HashSet::new();
        for line in body.lines() {
            let json = line.rsplit_once('\t').map(|(j, _)| j).unwrap_or(line);
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            let k = v["key"].as_str().unwrap().to_string();
            assert!(keys.insert(k.clone()), "{}: part {k} twice", p.display());
        }
    }
}

#[test]
fn sigkill_at_random_points_then_resume_equals_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let s = suite(tmp.path(), "killed", "");
    let reference_root = tmp.path().join("reference");
    let started = Instant::now();
    let o = run(&s, &reference_root, &home(&tmp.path().join("h0")));
    let full = started.elapsed();
    assert!(o.status.code().is_some(), "{}", text(&o.stderr));
    let reference = Run::read(&common::only_dir(&reference_root)).unwrap();
    assert!(!reference.items.is_empty());

    // Kill points drawn uniformly over the uninterrupted run's wall time (fitting, data
    // conversion, scoring, writing the tables and the report), 1 to 3 kills per trial,
    // each trial from an empty fixture and data cache and an empty store.
    let seed = 20261202u64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let trials = 20;
    let (mut kills, mut resumed_parts) = (0, 0usize);
    for trial in 0..trials {
        let dir = tmp.path().join(format!("t{trial}"));
        let h = home(&dir);
        let root = dir.join("runs");
        for _ in 0..rng.random_range(1..=3) {
            let at = full.mul_f64(rng.random_range(0.0..1.1));
            let mut child = command(&s, &root, &h)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(at);
            // SIGKILL: no handler runs, no buffer is flushed.
            let _ = child.kill();
            child.wait().unwrap();
            kills += 1;
        }
        let o = run(&s, &root, &h);
        let err = text(&o.stderr);
        assert!(
            o.status.code() == reference_out_code(&reference),
            "trial {trial} (seed {seed}): exit {:?}\n{err}",
            o.status.code()
        );
        let out = text(&o.stdout);
        if let Some(n) = out
            .lines()
            .find_map(|l| l.split(" parts computed, ").nth(1))
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
        {
            resumed_parts += n;
        }
        let dir = common::only_dir(&root);
        assert_no_doubled_parts(&dir);
        let got = Run::read(&dir).unwrap();
        slurm::compare(&reference, &got)
            .unwrap_or_else(|e| panic!("trial {trial} (seed {seed}): {e}"));
    }
    eprintln!(
        "{trials} trials, {kills} kills, {resumed_parts} parts resumed from journals; \
         uninterrupted run {:.1} s",
        full.as_secs_f64()
    );
    assert!(kills >= trials);
    assert!(resumed_parts > 0, "no kill landed after a part finished");
}

/// The exit code an uninterrupted run of the suite gives (0: every gate passed).
/// `(computed, resumed)` from a run's "(N parts computed, M resumed)" line. How many
/// parts a suite has depends on the machine: a generation task's parts are whole
/// decoding groups, whose size follows the product kernel (`generate::batch_rows`).
fn parts(stdout: &str) -> (usize, usize) {
    let line = stdout
        .lines()
        .find_map(|l| l.split_once(" parts computed, "))
        .unwrap_or_else(|| panic!("no parts line in {stdout}"));
    let computed = line.0.rsplit('(').next().unwrap().parse().unwrap();
    let resumed = line.1.split(' ').next().unwrap().parse().unwrap();
    (computed, resumed)
}

fn reference_out_code(r: &Run) -> Option<i32> {
    Some(if r.verdicts.iter().all(|v| v.outcome == "pass") {
        0
    } else {
        101
    })
}

#[test]
fn damaged_fixtures_and_data_caches_are_found_by_hash_and_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let s = suite(tmp.path(), "damaged", "");
    let h = home(tmp.path());
    let o = run(&s, &tmp.path().join("runs0"), &h);
    assert!(o.status.code().is_some(), "{}", text(&o.stderr));
    let reference = Run::read(&common::only_dir(&tmp.path().join("runs0"))).unwrap();
    let (all_parts, _) = parts(&text(&o.stdout));

    let fixtures: Vec<PathBuf> = fs::read_dir(h.join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("intervention.yaml").is_file())
        .collect();
    assert_eq!(fixtures.len(), 1, "{fixtures:?}");
    let tensors = fixtures[0].join("intervention.safetensors");
    let good = fs::read(&tensors).unwrap();
    let data: Vec<PathBuf> = fs::read_dir(h.join("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(!data.is_empty());

    // 1. One bit of the fitted offset flipped (same size, still a valid safetensors
    //    file), and one byte of each converted data file.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x01;
    fs::write(&tensors, &bad).unwrap();
    for p in &data {
        let mut b = fs::read(p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x01;
        fs::write(p, b).unwrap();
    }
    let o = run(&s, &tmp.path().join("runs1"), &h);
    let err = text(&o.stderr);
    assert!(
        err.contains(&fixtures[0].display().to_string()) && err.contains("fitting it again"),
        "{err}"
    );
    for p in &data {
        assert!(
            err.contains(&p.display().to_string()) && err.contains("does not match its sha256"),
            "{}: {err}",
            p.display()
        );
    }
    assert_eq!(
        fs::read(&tensors).unwrap(),
        good,
        "refitted to the same bytes"
    );
    slurm::compare(
        &reference,
        &Run::read(&common::only_dir(&tmp.path().join("runs1"))).unwrap(),
    )
    .unwrap();

    // 2. The manifest truncated halfway, as a crash mid-write would leave it without the
    //    atomic rename.
    let manifest = fixtures[0].join("intervention.yaml");
    let m = fs::read(&manifest).unwrap();
    fs::write(&manifest, &m[..m.len() / 2]).unwrap();
    let o = run(&s, &tmp.path().join("runs2"), &h);
    let err = text(&o.stderr);
    assert!(
        err.contains("intervention.yaml") && err.contains("fitting it again"),
        "{err}"
    );
    assert_eq!(fs::read(&manifest).unwrap(), m);
    slurm::compare(
        &reference,
        &Run::read(&common::only_dir(&tmp.path().join("runs2"))).unwrap(),
    )
    .unwrap();

    // 3. A journal line of a finished run damaged: that part is scored again on rerun,
    //    not read, and the run's tables come out as before.
    let dir = common::only_dir(&tmp.path().join("runs2"));
    let j = dir.join("journal/steer--copa.jsonl");
    let body = fs::read_to_string(&j).unwrap();
    let damaged = body.replacen("\"pred\":0", "\"pred\":1", 1);
    assert_ne!(body, damaged, "{body}");
    fs::write(&j, damaged).unwrap();
    let o = run(&s, &tmp.path().join("runs2"), &h);
    let err = text(&o.stderr);
    assert!(
        err.contains("steer--copa.jsonl line 1") && err.contains("scored again"),
        "{err}"
    );
    assert_eq!(
        parts(&text(&o.stdout)),
        (1, all_parts - 1),
        "{}",
        text(&o.stdout)
    );
    slurm::compare(&reference, &Run::read(&dir).unwrap()).unwrap();
}

#[test]
fn a_blown_up_intervention_fails_its_cases_and_the_run_goes_on() {
    use candle_core::{Device, Tensor};
    use scalpel::intervene::artifact::{self, Provenance};
    use scalpel::intervene::Intervention;

    let tmp = tempfile::tempdir().unwrap();
    // An offset of NaN at layer 0: every logit after it is NaN.
    let model = common::tiny_gpt2();
    let iv = Intervention::Offset {
        alpha: 1.0,
        sites: vec![(
            "blocks.0.hook_resid_post".parse().unwrap(),
            Tensor::full(f32::NAN, 64, &Device::Cpu).unwrap(),
        )],
    };
    let art = tmp.path().join("blowup");
    artifact::save(&art, &iv, &model, &Provenance::default()).unwrap();
    let s = suite(
        tmp.path(),
        "blowup",
        &format!("  - {{name: blowup, artifact: {}}}\n", art.display()),
    );
    let h = home(tmp.path());
    let root = tmp.path().join("runs");
    let o = run(&s, &root, &h);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(101), "{out}\n{err}");
    // Every case of the blown-up intervention fails, naming intervention, task, item.
    for task in ["copa", "crows_pairs_english", "realtoxicityprompts"] {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("blowup::{task}::")) && l.contains("FAILED"))
            .unwrap_or_else(|| panic!("no failed blowup::{task} trial:\n{out}"));
        let _ = line;
        let why = format!("intervention 'blowup', task {task}, item 0 (");
        assert!(
            out.contains(&why) || err.contains(&why),
            "{why}\n{out}\n{err}"
        );
    }
    assert!(out.contains("non-finite values: logits are NaN"), "{out}");
    // The other cases ran and their gates have verdicts.
    for t in [
        "steer::copa::acc",
        "steer::crows_pairs_english::pct_stereotype",
    ] {
        assert!(
            out.lines().any(|l| l.contains(t) && l.ends_with("ok")),
            "{t}:\n{out}"
        );
    }
    let dir = common::only_dir(&root);
    let r = Run::read(&dir).unwrap();
    let errors: Vec<_> = r.verdicts.iter().filter(|v| v.outcome == "error").collect();
    assert_eq!(errors.len(), 3, "{:?}", r.verdicts);
    assert!(errors.iter().all(|v| v.intervention == "blowup"));
    assert!(r.items.iter().all(|i| i.intervention != "blowup"));
    assert!(r.items.iter().any(|i| i.intervention == "steer"));
    assert!(r.meta("failed.blowup::copa").contains("item 0"));
    let html = fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("Cases that could not be scored"), "report");
    assert!(html.contains("blowup::realtoxicityprompts"), "report");
}

#[test]
fn an_artefact_of_the_wrong_shape_is_refused_naming_the_tensor() {
    use candle_core::{Device, Tensor};
    use scalpel::intervene::artifact::{self, Provenance};
    use scalpel::intervene::Intervention;
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_gpt2();
    let iv = Intervention::Offset {
        alpha: 1.0,
        sites: vec![(
            "blocks.1.hook_resid_post".parse().unwrap(),
            Tensor::zeros(32, candle_core::DType::F32, &Device::Cpu).unwrap(),
        )],
    };
    artifact::save(tmp.path(), &iv, &model, &Provenance::default()).unwrap();
    let err = artifact::load(tmp.path(), &model).unwrap_err().to_string();
    assert!(
        err.contains("intervention.safetensors")
            && err.contains("'blocks.1.hook_resid_post.vector' has shape [32], expected [64]"),
        "{err}"
    );
}

#[test]
fn concurrent_runs_into_one_reports_directory_do_not_corrupt_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let a = suite(tmp.path(), "alpha", "");
    let b = suite(tmp.path(), "beta", "");
    // References, each run alone in its own store and cache.
    let mut refs = Vec::new();
    let mut ref_parts = Vec::new();
    for (i, s) in [&a, &b].iter().enumerate() {
        let root = tmp.path().join(format!("ref{i}"));
        let o = run(s, &root, &home(&tmp.path().join(format!("rh{i}"))));
        assert!(o.status.code().is_some(), "{}", text(&o.stderr));
        refs.push(Run::read(&common::only_dir(&root)).unwrap());
        ref_parts.push(parts(&text(&o.stdout)).0);
    }
    // Now at once, into one reports directory and one empty cache: alpha twice (the
    // same run id), beta once; both fit the same fixture at the same time.
    let h = home(&tmp.path().join("shared"));
    let root = tmp.path().join("runs");
    let children: Vec<_> = [&a, &a, &b]
        .iter()
        .map(|s| {
            command(s, &root, &h)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let code = |i: usize| outs[i].status.code();
    // The two alphas: one ran, the other was refused (exit 2) because the run's lock
    // was held, with a message that says so, or, had it started after the first
    // finished, resumed the finished run.
    let busy: Vec<usize> = (0..2)
        .filter(|&i| text(&outs[i].stderr).contains("another scalpel process is writing this run"))
        .collect();
    for &i in &busy {
        assert_eq!(code(i), Some(2), "{}", text(&outs[i].stderr));
    }
    assert!(busy.len() <= 1, "both alphas refused");
    for i in 0..3 {
        if !busy.contains(&i) {
            assert!(
                code(i) == Some(0) || code(i) == Some(101),
                "run {i}: {:?}\n{}",
                code(i),
                text(&outs[i].stderr)
            );
        }
    }
    let dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    for d in &dirs {
        let name = d.file_name().unwrap().to_str().unwrap();
        let r = Run::read(d).unwrap();
        let reference = if name.starts_with("alpha") {
            &refs[0]
        } else {
            &refs[1]
        };
        slurm::compare(reference, &r).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_no_doubled_parts(d);
    }
    // A wait for a busy run is the user's choice: run it again now and it resumes.
    let o = run(&a, &root, &h);
    assert_eq!(
        parts(&text(&o.stdout)),
        (0, ref_parts[0]),
        "{}",
        text(&o.stdout)
    );
    let _ = Duration::ZERO;
}
