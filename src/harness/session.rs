//! A run with its store, as `scalpel test` and [`super::test_main`] do it: the run id
//! from the inputs, the run directory (resumed when it exists), the run, its tables and
//! its HTML report.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::record::{self, RunInfo};
use super::run::{run, HarnessError, RunOutput, RunProgress, Selection};
use super::suite::Suite;
use crate::model::LoadedModel;
use crate::store::{self, RunDir, RunInputs};

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
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
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
    let id = store::run_id(&RunInputs {
        suite,
        model_name: &model.name,
        model_fingerprint: &fingerprint,
        device: &device,
    })
    .map_err(store_err("run id"))?;
    let dir = RunDir::open(runs, &id).map_err(store_err("run store"))?;
    let out = run(suite, model, sel, Some(&dir), progress)?;
    let info = RunInfo {
        model_name: model.name.clone(),
        model_path: model.path.display().to_string(),
        model_fingerprint: fingerprint,
        device,
        selection: describe(sel),
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
