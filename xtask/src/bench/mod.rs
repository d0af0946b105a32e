//! Benchmarks. Each target (`versus`: against PyTorch, the default; `model`: against
//! candle-transformers) has an entry module; the rest are shared pieces with one job each.

pub mod bandwidth;
pub mod impls;
pub mod machine;
pub mod model;
pub mod report;
pub mod reps;
pub mod stats;
pub mod versus;
pub mod workloads;
