//! A run with its store, as `scalpel test` and [`super::test_main`] do it: the run id
//! from the inputs, the run directory (resumed when it exists), the run, its tables and
//! its HTML report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::record::{self, RunInfo};
use super::run::{run, HarnessError, RunOutput, RunProgress, Selection};
use super::suite::Suite;
use crate::model::LoadedModel;
use crate::store::{self, RunDir, RunInputs};

/// The copy of the suite file a run directory keeps.
pub const SUITE_COPY: &str = "suite.yaml";

/// Where a stored run went.
#[derive(Debug, Clone)]
pub struct Stored {
    pub dir: PathBuf,
    pub report: PathBuf,
}

fn store_err(what: &str) -> impl FnOnce(store::StoreError) -> HarnessError + '_ {
    move |source| HarnessError::Store {
        what: what.to_string(),
        source: Box::new(source),
    }
}

/// Run `suite` and store it under `runs` (`reports/runs` for the CLI); the run's
/// directory is reused, and its finished parts with it, when the inputs are unchanged.
pub fn run_stored(
    suite: &Suite,
    model: &LoadedModel,
    sel: &Selection,
    runs: &Path,
    progress: impl FnMut(RunProgress),
) -> Result<(RunOutput, Stored), HarnessError> {
    let started = Instant::now();
    let started_unix = crate::machine::unix_now();
    let device = match model.device().location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    };
    let fingerprint = crate::intervene::artifact::model_fingerprint(model).map_err(|source| {
        HarnessError::Artifact {
            name: "the model".into(),
            source: Box::new(source),
        }
    })?;
    let build = store::build_hash().map_err(store_err("run id"))?;
    let inputs = RunInputs {
        build: &build,
        suite,
        model_name: &model.name,
        model_fingerprint: &fingerprint,
        device: &device,
        shard: sel.shard.map(|s| s.to_string()),
    };
    let id = store::run_id(&inputs).map_err(store_err("run id"))?;
    let group_id = store::group_id(&inputs).map_err(store_err("run id"))?;
    let dir = RunDir::open(runs, &id).map_err(store_err("run store"))?;
    // The suite as it was, so that `scalpel merge` reads the gates the shards ran.
    let suite_bytes = std::fs::read(&suite.path)
        .map_err(store::io_err(&suite.path))
        .map_err(store_err("run store"))?;
    dir.write_atomic(SUITE_COPY, &suite_bytes)
        .map_err(store_err("run store"))?;
    let mut progress = progress;
    let out = run(suite, model, sel, Some(&dir), &mut progress)?;
    // Traces describe the model, not the items: the first shard draws them.
    if sel.shard.is_none_or(|s| s.index == 1) {
        traces(suite, model, &inputs, &dir, &mut progress)?;
    }
    let info = RunInfo {
        model_name: model.name.clone(),
        model_path: model.path.display().to_string(),
        model_fingerprint: fingerprint,
        model_arch: model.model.info().arch.to_string(),
        model_layers: model.model.info().n_layers,
        shard: sel.shard.map(|s| s.to_string()),
        group_id,
        device,
        selection: describe(sel),
        build,
        started_unix,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    record::write(&dir, suite, &out, &info).map_err(store_err("run store"))?;
    let report = crate::report::render_run_dir(&dir.dir).map_err(|e| HarnessError::Report {
        message: e.to_string(),
    })?;
    Ok((
        out,
        Stored {
            dir: dir.dir.clone(),
            report,
        },
    ))
}

/// One model's stored run of a suite.
#[derive(Debug)]
pub struct ModelRun {
    pub model: String,
    pub out: RunOutput,
    pub stored: Stored,
}

/// What [`run_models`] did: each model's run, and the pages comparing every later
/// model's run with the first's.
#[derive(Debug)]
pub struct MultiRun {
    pub runs: Vec<ModelRun>,
    pub comparisons: Vec<PathBuf>,
}

impl MultiRun {
    /// Every model's trials, model by model.
    pub fn trials(&self) -> Vec<super::run::TrialResult> {
        self.runs
            .iter()
            .flat_map(|r| r.out.trials.iter().cloned())
            .collect()
    }
}

/// Run `suite` on each of `models` in turn: each is loaded (by `load`), run and stored
/// as its own run (its own fits, its own Holm family: each model is its own sign-off),
/// then dropped before the next loads. A model none of whose trials the selection
/// admits is not loaded. With more than one run, each later run is compared with the
/// first item by item ([`crate::report::compare`]: paired on dataset ids) and the page
/// is written beside the runs.
pub fn run_models(
    suite: &Suite,
    models: &[String],
    sel: &Selection,
    runs: &Path,
    mut load: impl FnMut(&str) -> Result<LoadedModel, crate::model::ModelError>,
    mut progress: impl FnMut(&str, RunProgress),
) -> Result<MultiRun, HarnessError> {
    let mut done = Vec::new();
    for m in models {
        let one = suite.for_model(m);
        if !one.trial_names().iter().any(|n| sel.admits(n)) {
            continue;
        }
        let model = load(m).map_err(|source| HarnessError::Model {
            model: m.clone(),
            source: Box::new(source),
        })?;
        let (out, stored) = run_stored(&one, &model, sel, runs, |p| progress(m, p))?;
        done.push(ModelRun {
            model: m.clone(),
            out,
            stored,
        });
    }
    let mut comparisons = Vec::new();
    // Shards hold a share of the items each: models are compared after the merge.
    let whole = if sel.shard.is_none() { &done[..] } else { &[] };
    if let Some((first, rest)) = whole.split_first() {
        let read = |d: &Path| {
            crate::store::tables::Run::read(d).map_err(|e| HarnessError::Report {
                message: e.to_string(),
            })
        };
        let a = read(&first.stored.dir)?;
        for r in rest {
            let b = read(&r.stored.dir)?;
            let cs = crate::report::compare::compare(&a, &b, suite.alpha);
            let html = crate::report::compare::render(&a, &b, suite.alpha, &cs).map_err(|e| {
                HarnessError::Report {
                    message: e.to_string(),
                }
            })?;
            let name = |d: &Path| {
                d.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            let path = runs.join(format!(
                "compare-{}-vs-{}.html",
                name(&first.stored.dir),
                name(&r.stored.dir)
            ));
            store::write_atomic(&path, html.as_bytes()).map_err(store_err("comparison"))?;
            comparisons.push(path);
        }
    }
    Ok(MultiRun {
        runs: done,
        comparisons,
    })
}

/// Bumped whenever tracing code changes what a trace computes from the same inputs, so
/// a trace cached by older code is redone rather than reused: the revision of the code,
/// as for fits ([`crate::intervene::config::FIT_REVISION`]) and attacks, not the
/// executable's hash, which changed with every build and retraced after any edit.
pub const TRACE_REVISION: u32 = 2;

/// Where a suite trace is cached among the fixtures: its result depends only on the
/// tracing code's revision, the weights, the device, the spec and the seed, so a later
/// run of the suite reads it back instead of tracing again (the main job's two traces
/// take about a minute of it).
fn trace_fixture(inputs: &RunInputs<'_>, spec: &super::suite::TraceSpec, seed: u64) -> PathBuf {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        format!("suite-trace-{TRACE_REVISION}").as_str(),
        inputs.model_fingerprint,
        inputs.model_name,
        inputs.device,
        &spec.prompt,
        &spec.subject,
        spec.target.as_deref().unwrap_or("\u{0}greedy"),
        &spec.kind,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update((spec.samples as u64).to_le_bytes());
    h.update(seed.to_le_bytes());
    let key = format!("{:x}", h.finalize());
    crate::assets::scalpel_home()
        .join("fixtures")
        .join("traces")
        .join(&key[..32])
}

/// The suite's causal traces of the unmodified model, each saved as `traces/<i>.json`
/// (ROME's JSON) and `traces/<i>.svg` (its heatmap, drawn in the report); a trace the
/// run directory already holds is not run again, and one the fixture cache holds
/// ([`trace_fixture`]) is copied from there.
fn traces(
    suite: &Suite,
    model: &LoadedModel,
    inputs: &RunInputs<'_>,
    dir: &RunDir,
    progress: &mut impl FnMut(RunProgress),
) -> Result<(), HarnessError> {
    use crate::trace::causal::{Target, TraceConfig, Tracer};
    if suite.traces.is_empty() {
        return Ok(());
    }
    let sub = dir.dir.join("traces");
    std::fs::create_dir_all(&sub)
        .map_err(store::io_err(&sub))
        .map_err(store_err("traces"))?;
    for (i, t) in suite.traces.iter().enumerate() {
        let (json, svg) = (sub.join(format!("{i}.json")), sub.join(format!("{i}.svg")));
        if json.exists() && svg.exists() {
            continue;
        }
        let cached = trace_fixture(inputs, t, suite.seed);
        let (cached_json, cached_svg) = (cached.join("trace.json"), cached.join("trace.svg"));
        if let (Ok(body), Ok(doc)) = (std::fs::read(&cached_json), std::fs::read(&cached_svg)) {
            store::write_atomic(&json, &body).map_err(store_err("traces"))?;
            store::write_atomic(&svg, &doc).map_err(store_err("traces"))?;
            continue;
        }
        let fail = |message: String| HarnessError::Trace { index: i, message };
        let cfg = TraceConfig {
            kind: t.kind.parse().map_err(fail)?,
            samples: t.samples,
            seed: suite.seed,
            ..TraceConfig::default()
        };
        let tracer = Tracer::with_target(
            model,
            &t.prompt,
            &t.subject,
            Target::NextToken(t.target.clone()),
            cfg,
        )
        .map_err(|e| fail(e.to_string()))?;
        let r = tracer
            .sweep(|done, total| {
                progress(RunProgress::Tracing {
                    index: i,
                    done,
                    total,
                })
            })
            .map_err(|e| fail(e.to_string()))?;
        let doc =
            crate::trace::svg::trace_heatmap(&r, &model.name).map_err(|e| fail(e.to_string()))?;
        let body = serde_json::to_vec_pretty(&r).map_err(|e| fail(e.to_string()))?;
        store::write_atomic(&json, &body).map_err(store_err("traces"))?;
        store::write_atomic(&svg, doc.as_bytes()).map_err(store_err("traces"))?;
        // The svg last: a cache entry is whole only when both files are there.
        std::fs::create_dir_all(&cached)
            .map_err(store::io_err(&cached))
            .map_err(store_err("trace fixture"))?;
        store::write_atomic(&cached_json, &body).map_err(store_err("trace fixture"))?;
        store::write_atomic(&cached_svg, doc.as_bytes()).map_err(store_err("trace fixture"))?;
    }
    Ok(())
}

fn describe(sel: &Selection) -> String {
    let mut s = sel.filter.clone().unwrap_or_default();
    if sel.exact {
        s.push_str(" --exact");
    }
    for k in &sel.skip {
        s.push_str(&format!(" --skip {k}"));
    }
    s.trim().to_string()
}
