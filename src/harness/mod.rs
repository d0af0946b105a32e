//! `scalpel test SUITE`: a suite file becomes trials named `intervention::task::metric`,
//! run like `cargo test` (libtest-mimic output, exit 101 when a gate fails, JUnit XML).
//!
//! [`suite`] parses and checks the file; [`run`] does the shared expensive work once (one
//! model, one fit per intervention, one task run per intervention × task) and tests every
//! selected gate; [`trials`] prints the verdicts and writes JUnit.

pub mod attack_check;
pub mod lanes;
pub mod merge;
pub mod parts;
pub mod record;
pub mod run;
pub mod session;
pub mod shard;
pub mod suite;
pub mod trials;

pub use run::{run, HarnessError, RunOutput, RunProgress, Selection, TrialResult};
pub use session::{run_models, run_stored, ModelRun, MultiRun, Stored};
pub use suite::{Suite, SuiteError};

/// Run a suite as a `harness = false` test target of a user's own crate:
///
/// ```toml
/// [[test]]
/// name = "safety"
/// harness = false
/// ```
///
/// ```no_run
/// // tests/safety.rs
/// fn main() -> std::process::ExitCode {
///     scalpel::harness::test_main(concat!(env!("CARGO_MANIFEST_DIR"), "/suites/smoke.yaml"))
/// }
/// ```
///
/// `cargo test --test safety [FILTER] [-- --exact --list --skip PAT --format json]` then
/// behaves as `scalpel test SUITE` does: libtest's arguments, exit 101 on a failed gate,
/// exit 2 (with the error on stderr) on a bad suite or a failed run. The models are the
/// suite's (each run in turn, and compared item by item), on the CPU unless `SCALPEL_DEVICE` says otherwise; the run is stored (and
/// resumed) under `reports/runs` of the working directory unless `SCALPEL_RUNS` names
/// another, with its HTML report beside its tables. Being the binary's main, it tunes
/// the process as `scalpel` does (freed memory kept for reuse, candle's elementwise ops
/// on the calling thread: see `machine`).
pub fn test_main(suite: impl AsRef<std::path::Path>) -> std::process::ExitCode {
    use std::process::ExitCode;
    crate::machine::retain_freed_memory();
    crate::machine::single_threaded_candle_ops();
    let args = libtest_mimic::Arguments::from_args();
    let bad = |e: &dyn std::fmt::Display| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    };
    let suite = match Suite::read(suite.as_ref()) {
        Ok(s) => s,
        Err(e) => return bad(&e),
    };
    let sel = Selection {
        filter: args.filter.clone(),
        exact: args.exact,
        skip: args.skip.clone(),
        shard: None,
        lanes: args.test_threads,
    };
    if args.list {
        trials::list(&suite, &sel, &args);
        return ExitCode::SUCCESS;
    }
    let device = std::env::var("SCALPEL_DEVICE").unwrap_or_else(|_| "cpu".into());
    let dev = match crate::model::loaded::device(&device) {
        Ok(d) => d,
        Err(e) => return bad(&e),
    };
    let runs = std::env::var_os("SCALPEL_RUNS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "reports/runs".into());
    let multi = match run_models(
        &suite,
        &suite.models,
        &sel,
        &runs,
        |m| crate::model::LoadedModel::load(m, &dev),
        |_, _| {},
    ) {
        Ok(o) => o,
        Err(e) => return bad(&e),
    };
    for r in &multi.runs {
        eprintln!("report: {}", r.stored.report.display());
    }
    for c in &multi.comparisons {
        eprintln!("models compared: {}", c.display());
    }
    // The selection is applied already; libtest must not filter again on names that now
    // carry their estimates.
    let shown = libtest_mimic::Arguments {
        filter: None,
        skip: Vec::new(),
        exact: false,
        ..args
    };
    trials::exit_code(&trials::report(&suite, &multi.trials(), &shown))
}
