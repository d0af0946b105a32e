//! Finding where a behaviour lives: causal tracing (ROME's noise-and-restore),
//! activation and attribution patching, minimal circuit selection, and concept
//! directions. Results name their sites with [`crate::model::HookPoint`]s, so an
//! intervention can be fitted on exactly what tracing found.

pub mod activations;
pub mod causal;
pub mod circuit;
pub mod concept;
pub mod patching;
pub mod svg;
