//! Scalpel: test safety interventions on language models the way `cargo test` tests code.
//!
//! Data flows one way: suite spec → model + interventions → cases → scores → statistics →
//! verdicts → stores and reports. This crate's modules follow that order:
//! [`assets`] (offline models and data), [`data`] (dataset rows), [`model`] (the hooked
//! transformer), [`tasks`] (evaluation tasks), [`score`] (what tasks ask of a model).
pub mod assets;
pub mod attack;
pub mod data;
#[doc(hidden)]
pub mod fuzzing;
pub mod harness;
pub mod intervene;
pub mod machine;
pub mod model;
pub mod report;
pub mod score;
pub mod stats;
pub mod store;
pub mod tasks;
pub mod toxicity;
pub mod trace;
