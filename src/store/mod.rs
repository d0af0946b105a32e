//! The run store: `reports/runs/<run-id>/`, one directory per run of a suite on a model.
//!
//! - `journal/<intervention>--<task>.jsonl`: item scores, appended part by part as they
//!   complete ([`journal`]), which is what lets an interrupted run resume;
//! - `interventions/<name>.json`: the manifest of each fitted intervention;
//! - when the run finishes, parquet tables ([`tables`]): `items` (one row per item and
//!   per-item metric), `tasks` (aggregate metrics), `verdicts`, `metadata`.
//!
//! The run id is the suite's name and a hash of everything that decides the results
//! (the running executable's bytes, so any change to Scalpel's code; the suite and
//! fit-config bytes; the model's weights hash; the device), so a rerun with the same
//! inputs lands in the same directory and continues where it stopped, and a changed
//! input, uncommitted code edits included, starts a new run beside it.

pub mod journal;
pub mod tables;

use std::fs::File;
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;
use sha2::{Digest, Sha256};

pub use journal::Journal;

use crate::harness::suite::{Source, Suite};
use crate::tasks::TaskId;

/// Scalpel's version and the commit it was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_COMMIT: &str = env!("SCALPEL_GIT_COMMIT");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: another scalpel process is writing this run (its lock is held)")]
    Busy { path: PathBuf },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: not a run directory (no {missing})")]
    NotARun { path: PathBuf, missing: String },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What decides a run's results, hashed into its id.
pub struct RunInputs<'a> {
    /// sha256 of the running executable ([`build_hash`]).
    pub build: &'a str,
    pub suite: &'a Suite,
    pub model_name: &'a str,
    pub model_fingerprint: &'a str,
    pub device: &'a str,
    /// `K/N` when the run is one shard of a sharded run.
    pub shard: Option<String>,
}

/// `<suite name>-<12 hex digits>`, and `-shard<K>of<N>` after it for a shard: the
/// shards of one run share the unsharded run's id as a prefix ([`group_id`]).
pub fn run_id(inputs: &RunInputs<'_>) -> Result<String, StoreError> {
    let group = group_id(inputs)?;
    Ok(match &inputs.shard {
        Some(s) => format!("{group}-shard{}", s.replace('/', "of")),
        None => group,
    })
}

/// The id of the run the shards together make (the unsharded run's id).
pub fn group_id(inputs: &RunInputs<'_>) -> Result<String, StoreError> {
    let mut h = Sha256::new();
    let mut put = |label: &str, bytes: &[u8]| {
        h.update(label.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    put("version", VERSION.as_bytes());
    put("commit", GIT_COMMIT.as_bytes());
    put("build", inputs.build.as_bytes());
    let suite = inputs.suite;
    put("suite", &read(&suite.path)?);
    for iv in &suite.interventions {
        match &iv.source {
            Source::None => put("none", iv.name.as_bytes()),
            Source::Fit(p) => put("fit", &read(p)?),
            Source::Artifact(d) => put(
                "artifact",
                &read(&d.join(crate::intervene::artifact::MANIFEST))?,
            ),
        }
    }
    put("model", inputs.model_name.as_bytes());
    put("weights", inputs.model_fingerprint.as_bytes());
    put("device", inputs.device.as_bytes());
    let hex = format!("{:x}", h.finalize());
    Ok(format!("{}-{}", file_safe(&suite.name), &hex[..12]))
}

/// sha256 of the running executable: the identity of the code that computes a run's
/// results, whether or not it was committed.
pub fn build_hash() -> Result<String, StoreError> {
    let exe = std::env::current_exe().map_err(io_err(Path::new("(current executable)")))?;
    let mut f = File::open(&exe).map_err(io_err(&exe))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io_err(&exe))?;
    Ok(format!("{:x}", h.finalize()))
}

fn read(path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(io_err(path))
}

/// A name made safe for a file name (letters, digits, `-`, `_`, `.`).
pub fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An open run directory, held by this process (an exclusive lock on `.lock`) until
/// dropped, so two processes never write one run's journals at once.
pub struct RunDir {
    pub dir: PathBuf,
    pub id: String,
    _lock: File,
}

impl RunDir {
    pub fn open(root: &Path, id: &str) -> Result<RunDir, StoreError> {
        let dir = root.join(id);
        for d in [dir.join("journal"), dir.join("interventions")] {
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let lock_path = dir.join(".lock");
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        if !lock.try_lock_exclusive().map_err(io_err(&lock_path))? {
            return Err(StoreError::Busy { path: dir });
        }
        Ok(RunDir {
            dir,
            id: id.to_string(),
            _lock: lock,
        })
    }

    pub fn journal(&self, intervention: &str, task: TaskId) -> Result<Journal, StoreError> {
        Journal::open(
            &self
                .dir
                .join("journal")
                .join(format!("{}--{task}.jsonl", file_safe(intervention))),
        )
    }

    /// Write `bytes` to `name` in the run directory, whole or not at all.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        write_atomic(&self.dir.join(name), bytes)
    }
}

/// Write through a temporary file and a rename, so a reader never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<PathBuf, StoreError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_of_a_held_run_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let a = RunDir::open(root.path(), "r").unwrap();
        assert!(matches!(
            RunDir::open(root.path(), "r"),
            Err(StoreError::Busy { .. })
        ));
        drop(a);
        RunDir::open(root.path(), "r").unwrap();
    }
}
