//! The repetition flags every bench target takes.

/// How many timed repetitions a bench runs.
#[derive(clap::Args, Debug)]
pub struct Reps {
    /// Timed repetitions of every workload.
    #[arg(long)]
    reps: Option<usize>,
    /// A smoke run: one repetition unless --reps says otherwise.
    #[arg(long)]
    pub quick: bool,
}

impl Reps {
    /// `--reps`, else 1 for `--quick`, else the target's `default`; at least 1.
    pub fn count(&self, default: usize) -> usize {
        self.reps
            .unwrap_or(if self.quick { 1 } else { default })
            .max(1)
    }
}
