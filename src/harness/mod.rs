//! `scalpel test SUITE`: a suite file becomes trials named `intervention::task::metric`,
//! run like `cargo test` (libtest-mimic output, exit 101 when a gate fails, JUnit XML).
//!
//! [`suite`] parses and checks the file; [`run`] does the shared expensive work once (one
//! model, one fit per intervention, one task run per intervention × task) and tests every
//! selected gate; [`trials`] prints the verdicts and writes JUnit.

pub mod run;
pub mod suite;
pub mod trials;

pub use run::{run, HarnessError, RunOutput, RunProgress, Selection, TrialResult};
pub use suite::{Suite, SuiteError};
