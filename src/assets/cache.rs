//! The on-disk cache: where assets live, the completion manifest, the
//! per-asset lock, and the atomic install.
//!
//! Layout under `$SCALPEL_HOME/assets/`:
//!
//! ```text
//! <id>/                    the installed asset, paths as inside the package
//! <id>/.scalpel-asset.json the manifest; written last, so its presence
//!                          means the directory is complete
//! .lock.<id>               advisory lock file (kept; deleting it would race)
//! .tmp.<id>.XXXXXX/        staging for a fetch in progress (or a leftover
//!                          of an interrupted one, removed by the next fetch)
//! ```
//!
//! Ids never contain `.`, so the `.tmp.<id>.` prefix of one asset can never
//! match another asset's staging directories.

use super::catalog::Asset;
use super::digest::{hex, sha256_file};
use super::error::AssetError;
use super::progress::Progress;
use super::unpack::{join_relative, FileSet};
use fs4::fs_std::FileExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// File name of the completion manifest inside an asset directory.
pub const MANIFEST_FILE: &str = ".scalpel-asset.json";
const MANIFEST_FORMAT: u32 = 1;

/// The cache root: `$SCALPEL_HOME`, else `$HOME/.cache/scalpel`.
pub fn scalpel_home() -> PathBuf {
    if let Some(h) = std::env::var_os("SCALPEL_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .or_else(|| std::env::var_os("USERPROFILE").filter(|v| !v.is_empty()))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("scalpel")
}

/// `home/assets`.
pub(crate) fn assets_root(home: &Path) -> PathBuf {
    home.join("assets")
}

/// Where asset `id` is (or would be) installed under `home`.
pub fn asset_dir(home: &Path, id: &str) -> PathBuf {
    assets_root(home).join(id)
}

/// The completion manifest: what was fetched and what was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    /// Hash of the catalog entry the asset was fetched from; a changed
    /// entry (new version, new paths) makes the install stale.
    pub fingerprint: String,
    pub packages: Vec<ManifestPackage>,
    pub files: Vec<ManifestFile>,
    /// Seconds since the Unix epoch.
    pub fetched_unix: u64,
}

/// One downloaded archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPackage {
    pub registry: String,
    pub package: String,
    pub version: String,
    pub sha256: String,
    /// File name the client saved (e.g. the wheel's name).
    pub archive: String,
}

/// One installed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub sha256: String,
    pub size: u64,
}

impl Manifest {
    pub(crate) fn new(asset: &Asset, archives: &[String], files: &FileSet) -> Self {
        Manifest {
            format: MANIFEST_FORMAT,
            id: asset.id.to_string(),
            fingerprint: fingerprint(asset),
            packages: asset
                .packages
                .iter()
                .zip(archives)
                .map(|(p, a)| ManifestPackage {
                    registry: p.registry.name().to_string(),
                    package: p.name.to_string(),
                    version: p.version.to_string(),
                    sha256: p.sha256.to_string(),
                    archive: a.clone(),
                })
                .collect(),
            files: files
                .values()
                .map(|x| ManifestFile {
                    path: x.path.clone(),
                    sha256: x.sha256.clone(),
                    size: x.size,
                })
                .collect(),
            fetched_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    /// Total bytes installed.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Writes the manifest into `dir` and syncs it.
    pub(crate) fn write(&self, dir: &Path) -> Result<(), AssetError> {
        let path = dir.join(MANIFEST_FILE);
        let werr = |e| AssetError::io(format!("could not write {}", path.display()), e);
        let json = serde_json::to_vec_pretty(self).map_err(|e| werr(io::Error::other(e)))?;
        fs::write(&path, json).map_err(werr)?;
        File::open(&path).and_then(|f| f.sync_all()).map_err(werr)
    }

    /// Reads `dir`'s manifest; `Ok(None)` when there is none.
    pub(crate) fn read(dir: &Path) -> Result<Option<Manifest>, String> {
        let path = dir.join(MANIFEST_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("unreadable manifest {}: {e}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("could not read {}: {e}", path.display())),
        }
    }
}

/// sha256 of a canonical text of the catalog entry.
pub(crate) fn fingerprint(asset: &Asset) -> String {
    let mut h = Sha256::new();
    h.update(format!("scalpel-asset v{MANIFEST_FORMAT}\n{}\n", asset.id));
    for p in asset.packages {
        h.update(format!(
            "pkg {} {} {} {}\n",
            p.registry.name(),
            p.name,
            p.version,
            p.sha256
        ));
        for path in p.paths {
            h.update(format!("path {path}\n"));
        }
    }
    for c in asset.concat {
        h.update(format!("concat {} {} {}\n", c.output, c.sha256, c.size));
        for part in c.parts {
            h.update(format!("part {part}\n"));
        }
    }
    hex(&h.finalize())
}

/// What is on disk for an asset.
#[derive(Debug)]
pub(crate) enum State {
    /// Complete: manifest matches the catalog, every file has its size.
    Present(Manifest),
    /// No directory at all.
    Absent,
    /// A directory that cannot be used, and why.
    Broken(String),
}

/// Cheap check used on every `ensure`: reads the manifest and stats each
/// file (sizes only; `verify` rehashes).
pub(crate) fn check(home: &Path, asset: &Asset) -> State {
    let dir = asset_dir(home, asset.id);
    if fs::symlink_metadata(&dir).is_err() {
        return State::Absent;
    }
    let manifest = match Manifest::read(&dir) {
        Ok(Some(m)) => m,
        Ok(None) => return State::Broken("no manifest (an earlier fetch was interrupted)".into()),
        Err(e) => return State::Broken(e),
    };
    if manifest.fingerprint != fingerprint(asset) {
        return State::Broken("installed from a different catalog entry".into());
    }
    for f in &manifest.files {
        match fs::metadata(join_relative(&dir, &f.path)) {
            Ok(m) if m.is_file() && m.len() == f.size => {}
            Ok(m) => {
                return State::Broken(format!(
                    "{} has {} bytes, expected {}",
                    f.path,
                    m.len(),
                    f.size
                ))
            }
            Err(_) => return State::Broken(format!("{} is missing", f.path)),
        }
    }
    State::Present(manifest)
}

/// Exclusive advisory lock on one asset, released on drop. Serialises
/// fetches of the same asset across threads and processes.
pub(crate) struct AssetLock {
    _file: File,
}

pub(crate) fn lock(home: &Path, id: &str, progress: &Progress) -> Result<AssetLock, AssetError> {
    let root = assets_root(home);
    fs::create_dir_all(&root)
        .map_err(|e| AssetError::io(format!("could not create {}", root.display()), e))?;
    let path = root.join(format!(".lock.{id}"));
    let lerr = |e| AssetError::io(format!("could not lock {}", path.display()), e);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(lerr)?;
    if !file.try_lock_exclusive().map_err(lerr)? {
        progress.line(&format!(
            "{id}: waiting for another fetch of the same asset to finish"
        ));
        file.lock_exclusive().map_err(lerr)?;
    }
    Ok(AssetLock { _file: file })
}

/// Removes staging directories left by interrupted fetches of `id`. Call
/// with the lock held: no live fetch of `id` can own them then.
pub(crate) fn clean_leftovers(
    home: &Path,
    id: &str,
    progress: &Progress,
) -> Result<(), AssetError> {
    let root = assets_root(home);
    let prefix = format!(".tmp.{id}.");
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(AssetError::io(
                format!("could not list {}", root.display()),
                e,
            ))
        }
    };
    for entry in entries.filter_map(Result::ok) {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let path = entry.path();
        progress.line(&format!(
            "{id}: removing {} left by an interrupted fetch",
            path.display()
        ));
        remove_any(&path)?;
    }
    Ok(())
}

/// Removes a file or a directory tree.
pub(crate) fn remove_any(path: &Path) -> Result<(), AssetError> {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    res.map_err(|e| AssetError::io(format!("could not remove {}", path.display()), e))
}

/// A fresh staging directory inside `home/assets` (same filesystem as the
/// final directory, so the install is a rename). Removed on drop.
pub(crate) fn staging(home: &Path, id: &str) -> Result<tempfile::TempDir, AssetError> {
    let root = assets_root(home);
    tempfile::Builder::new()
        .prefix(&format!(".tmp.{id}."))
        .tempdir_in(&root)
        .map_err(|e| {
            AssetError::io(
                format!("could not create a staging directory in {}", root.display()),
                e,
            )
        })
}

/// Moves the complete, verified `ready` directory to `home/assets/<id>`.
/// An existing (stale) directory is first renamed aside into a staging
/// directory and deleted afterwards, so at no point does `<id>/` hold a mix.
pub(crate) fn install(home: &Path, id: &str, ready: &Path) -> Result<PathBuf, AssetError> {
    let dest = asset_dir(home, id);
    let rerr = |e| {
        AssetError::io(
            format!("could not move {} to {}", ready.display(), dest.display()),
            e,
        )
    };
    if fs::symlink_metadata(&dest).is_ok() {
        let trash = staging(home, id)?;
        let old = trash.path().join("old");
        fs::rename(&dest, &old)
            .map_err(|e| AssetError::io(format!("could not move aside {}", dest.display()), e))?;
        if let Err(e) = fs::rename(ready, &dest) {
            let _ = fs::rename(&old, &dest);
            return Err(rerr(e));
        }
        drop(trash);
    } else {
        fs::rename(ready, &dest).map_err(rerr)?;
    }
    sync_dir(&assets_root(home));
    Ok(dest)
}

/// Makes a rename durable (best effort; not possible on every platform).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// The first installed file whose sha256 or size differs from the manifest's,
/// as a one-line reason naming it; `None` when every file matches.
pub(crate) fn first_mismatch(dir: &Path, manifest: &Manifest) -> Option<String> {
    for f in &manifest.files {
        let path = join_relative(dir, &f.path);
        match sha256_file(&path) {
            Ok((sha, size)) if sha == f.sha256 && size == f.size => {}
            Ok((sha, _)) => {
                return Some(format!(
                    "{}: sha256 expected {}, got {sha}",
                    path.display(),
                    f.sha256
                ))
            }
            Err(e) => return Some(format!("{}: {e}", path.display())),
        }
    }
    None
}

/// Rehashes every installed file against the manifest. On a mismatch the
/// manifest is removed, so the next `ensure` fetches the asset again.
pub(crate) fn verify(home: &Path, asset: &Asset, progress: &Progress) -> Result<(), AssetError> {
    let dir = asset_dir(home, asset.id);
    let _lock = lock(home, asset.id, progress)?;
    let corrupt = |detail: String| {
        let _ = fs::remove_file(dir.join(MANIFEST_FILE));
        AssetError::Corrupt {
            id: asset.id.to_string(),
            detail,
        }
    };
    let manifest = match Manifest::read(&dir) {
        Ok(Some(m)) => m,
        Ok(None) if fs::symlink_metadata(&dir).is_err() => {
            return Err(AssetError::NotInstalled {
                id: asset.id.to_string(),
                dir,
            })
        }
        Ok(None) => {
            return Err(corrupt(
                "no manifest (an earlier fetch was interrupted)".into(),
            ))
        }
        Err(e) => return Err(corrupt(e)),
    };
    if manifest.fingerprint != fingerprint(asset) {
        return Err(corrupt("installed from a different catalog entry".into()));
    }
    for f in &manifest.files {
        let path = join_relative(&dir, &f.path);
        match sha256_file(&path) {
            Ok((sha, size)) if sha == f.sha256 && size == f.size => {}
            Ok((sha, _)) => {
                return Err(corrupt(format!(
                    "{}: sha256 expected {}, got {sha}",
                    f.path, f.sha256
                )))
            }
            Err(e) => return Err(corrupt(format!("{}: {e}", f.path))),
        }
    }
    progress.line(&format!(
        "{}: {} file(s) verified at {}",
        asset.id,
        manifest.files.len(),
        dir.display()
    ));
    Ok(())
}
