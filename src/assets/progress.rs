//! Human progress on stderr.
//!
//! Downloads take seconds to minutes, so the user should see what is being
//! fetched and how big it is. On a terminal a spinner shows the client's
//! latest output line; otherwise (CI logs, pipes) only plain, complete lines
//! are printed, one per step, so logs stay readable.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// Spinner when stderr is a terminal, plain lines otherwise.
    #[default]
    Auto,
    /// Plain lines only.
    Plain,
    /// Nothing at all (library callers that report on their own).
    Quiet,
}

/// The reporter used by one fetch.
pub(crate) struct Progress {
    mode: ProgressMode,
    spinner: bool,
}

impl Progress {
    pub(crate) fn new(mode: ProgressMode) -> Self {
        let spinner = mode == ProgressMode::Auto && std::io::stderr().is_terminal();
        Progress { mode, spinner }
    }

    /// A complete line that stays in the log.
    pub(crate) fn line(&self, msg: &str) {
        if self.mode != ProgressMode::Quiet {
            eprintln!("{msg}");
        }
    }

    /// Starts a long step. On a terminal this shows a spinner until the
    /// returned task is dropped; in plain mode it prints `msg` once.
    pub(crate) fn task(&self, msg: String) -> Task {
        if self.mode == ProgressMode::Quiet {
            return Task { bar: None };
        }
        if !self.spinner {
            eprintln!("{msg}");
            return Task { bar: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(msg);
        bar.enable_steady_tick(Duration::from_millis(120));
        Task { bar: Some(bar) }
    }
}

/// A running step; see [`Progress::task`].
pub(crate) struct Task {
    bar: Option<ProgressBar>,
}

impl Task {
    /// Shows a transient detail (e.g. the client's latest output line).
    pub(crate) fn detail(&self, msg: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(msg.trim().to_string());
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Sizes the way pip prints them (decimal units).
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(92_871_040), "92.9 MB");
        assert_eq!(human_bytes(253_113_024), "253.1 MB");
        assert_eq!(human_bytes(1_500_000_000), "1.5 GB");
    }
}
