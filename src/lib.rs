//! Scalpel: test safety interventions on language models the way `cargo test` tests code.
//!
//! Data flows one way: suite spec → model + interventions → cases → scores → statistics →
//! verdicts → stores and reports. This crate's modules follow that order:
//! [`assets`] (offline models and data), [`model`] (the hooked transformer), [`score`].
pub mod assets;
pub mod model;
pub mod score;
