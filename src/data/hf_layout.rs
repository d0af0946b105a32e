//! Hugging Face dataset repositories: finding a config's split among a repository's
//! parquet files, locally or through the hub cache.
//!
//! The hub stores a split's shards in one of three layouts, tried in this order:
//! - `CONFIG/SPLIT-00000-of-00001.parquet` (a repository pushed with `push_to_hub`);
//! - `CONFIG/SPLIT/0000.parquet` (the hub's `refs/convert/parquet` branch);
//! - `data/SPLIT-00000-of-00001.parquet` (a single-config repository).
//!
//! Shards are read in shard order into one [`Table`].

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};
use regex::Regex;

use super::{parquet, DataError, Table};

/// The repository-relative paths (`/`-separated) of `config`/`split`'s shards among
/// `files`, in shard order; empty when no layout matches.
pub fn split_files(files: &[String], config: &str, split: &str) -> Vec<String> {
    let (c, s) = (regex::escape(config), regex::escape(split));
    // A trailing `-<hash>` is what older `push_to_hub` versions appended.
    let shard = r"-\d+-of-\d+(-[0-9a-f]+)?\.parquet$";
    let layouts = [
        format!("^{c}/{s}{shard}"),
        format!(r"^{c}/{s}/\d+\.parquet$"),
        format!("^data/{s}{shard}"),
    ];
    for pattern in layouts {
        let re = Regex::new(&pattern).expect("escaped pattern");
        let mut found: Vec<&String> = files.iter().filter(|f| re.is_match(f)).collect();
        if !found.is_empty() {
            // Shard numbers are zero-padded, but sort by number so an unpadded one
            // cannot land out of order.
            found.sort_by_key(|f| (shard_number(f), f.to_string()));
            return found.into_iter().cloned().collect();
        }
    }
    Vec::new()
}

fn shard_number(file: &str) -> u64 {
    let name = file.rsplit('/').next().unwrap_or(file);
    let digits = match name.split_once("-of-") {
        Some((head, _)) => head.rsplit('-').next().unwrap_or(""),
        None => name.trim_end_matches(".parquet"),
    };
    digits.parse().unwrap_or(u64::MAX)
}

/// Every file under `dir`, repository-relative with `/` separators. Hidden entries
/// (`.git`, `.cache`, `.huggingface`) are skipped.
pub fn list_files(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|source| DataError::Io {
            path: d.clone(),
            source,
        })?;
        for entry in rd {
            let entry = entry.map_err(|source| DataError::Io {
                path: d.clone(),
                source,
            })?;
            let Some(name) = entry.file_name().to_str().map(String::from) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let rel = format!("{prefix}{name}");
            // Follows symlinks: hub snapshots link every file to a blob.
            let path = entry.path();
            if path.is_dir() {
                stack.push((path, format!("{rel}/")));
            } else if path.is_file() {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `config`/`split` from a repository checked out (or snapshotted) at `dir`.
pub fn read_split_dir(dir: &Path, config: &str, split: &str) -> Result<Table, DataError> {
    let listing = list_files(dir)?;
    let files = split_files(&listing, config, split);
    if files.is_empty() {
        return Err(not_found(dir, &listing, config, split, ""));
    }
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
    read_shards(&paths)
}

/// The shards' rows in order, as one table. Its path is the single shard, or for
/// several the first shard's name with its shard number replaced by `*`: row numbers in
/// errors then count across shards.
pub fn read_shards(paths: &[PathBuf]) -> Result<Table, DataError> {
    let mut rows = Vec::new();
    for p in paths {
        rows.extend(parquet::read(p)?);
    }
    let name = match paths {
        [one] => one.clone(),
        [first, ..] => {
            let file = first
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let re = Regex::new(r"^(.*?)\d+(-of-\d+)?(-[0-9a-f]+)?\.parquet$").expect("pattern");
            first.with_file_name(re.replace(file, "$1*.parquet").as_ref())
        }
        [] => PathBuf::from("(no shards)"),
    };
    Table::new(&name, rows)
}

fn not_found(at: &Path, listing: &[String], config: &str, split: &str, why: &str) -> DataError {
    let parquet: Vec<&str> = listing
        .iter()
        .filter(|f| f.ends_with(".parquet"))
        .map(String::as_str)
        .collect();
    let seen = match parquet.len() {
        0 => "no parquet files there".to_string(),
        n if n <= 8 => format!("parquet files there: {}", parquet.join(", ")),
        n => format!(
            "parquet files there: {}, … ({n} in all)",
            parquet[..8].join(", ")
        ),
    };
    DataError::Format {
        path: at.to_path_buf(),
        message: format!(
            "no parquet shards for config '{config}', split '{split}'{why} (looked for \
             {config}/{split}-NNNNN-of-NNNNN.parquet, {config}/{split}/NNNN.parquet and \
             data/{split}-NNNNN-of-NNNNN.parquet); {seen}"
        ),
    }
}

/// `config`/`split` of the hub dataset `repo` at `revision` (default `main`), through
/// the hf-hub cache (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`): a cached
/// snapshot holding the split is used as is; otherwise the shards are downloaded,
/// unless `HF_HUB_OFFLINE=1`.
pub fn hf_dataset_split(
    repo: &str,
    revision: Option<&str>,
    config: &str,
    split: &str,
) -> Result<Table, DataError> {
    hf_dataset_split_in(
        repo,
        revision.unwrap_or("main"),
        config,
        split,
        &Cache::from_env(),
        crate::model::source::hub_offline(),
    )
}

/// [`hf_dataset_split`] with the cache and offline mode given.
pub fn hf_dataset_split_in(
    repo: &str,
    revision: &str,
    config: &str,
    split: &str,
    cache: &Cache,
    offline: bool,
) -> Result<Table, DataError> {
    let hub_repo = Repo::with_revision(repo.to_string(), RepoType::Dataset, revision.to_string());
    let label = PathBuf::from(format!("hf://datasets/{repo}@{revision}"));
    let snapshot = snapshot_dir(cache, &hub_repo, revision);
    if let Some(dir) = &snapshot {
        let files = split_files(&list_files(dir)?, config, split);
        if !files.is_empty() {
            return read_shards(&files.iter().map(|f| dir.join(f)).collect::<Vec<_>>());
        }
    }
    if offline {
        let listing = match &snapshot {
            Some(dir) => list_files(dir)?,
            None => Vec::new(),
        };
        let why = format!(
            " in the hf-hub cache {} (HF_HUB_OFFLINE is set)",
            cache.path().display()
        );
        return Err(not_found(&label, &listing, config, split, &why));
    }
    let hub_err = |m: String| DataError::Format {
        path: label.clone(),
        message: m,
    };
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
        .with_progress(true)
        .build()
        .map_err(|e| hub_err(format!("hub client: {e}")))?;
    let api_repo = api.repo(hub_repo);
    let info = api_repo
        .info()
        .map_err(|e| hub_err(format!("listing the repository: {e}")))?;
    let listing: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let files = split_files(&listing, config, split);
    if files.is_empty() {
        return Err(not_found(
            &label,
            &listing,
            config,
            split,
            " in the repository",
        ));
    }
    let paths = files
        .iter()
        .map(|f| {
            api_repo
                .get(f)
                .map_err(|e| hub_err(format!("downloading {f}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    read_shards(&paths)
}

/// The cached snapshot of `revision`: a branch or tag through `refs/`, a commit directly.
fn snapshot_dir(cache: &Cache, repo: &Repo, revision: &str) -> Option<PathBuf> {
    let root = cache.path().join(repo.folder_name());
    let is_commit = revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit());
    let commit = if is_commit {
        revision.to_string()
    } else {
        std::fs::read_to_string(root.join("refs").join(revision))
            .ok()?
            .trim()
            .to_string()
    };
    let dir = root.join("snapshots").join(commit);
    dir.is_dir().then_some(dir)
}

/// As in [`crate::model::source`]: huggingface_hub's truthy spellings.
#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_each_layout_in_shard_order() {
        let files = names(&[
            "README.md",
            "cb/train-00001-of-00002.parquet",
            "cb/train-00000-of-00002.parquet",
            "cb/validation-00000-of-00001.parquet",
            "cb/validation_matched-00000-of-00001.parquet",
            "copa/validation/0010.parquet",
            "copa/validation/0002.parquet",
            "data/test-00000-of-00001-1a2b3c.parquet",
            "wsc.fixed/validation-00000-of-00001.parquet",
            "wscxfixed/validation-00000-of-00001.parquet",
        ]);
        assert_eq!(
            split_files(&files, "cb", "train"),
            names(&[
                "cb/train-00000-of-00002.parquet",
                "cb/train-00001-of-00002.parquet"
            ])
        );
        assert_eq!(
            split_files(&files, "cb", "validation"),
            names(&["cb/validation-00000-of-00001.parquet"])
        );
        assert_eq!(
            split_files(&files, "copa", "validation"),
            names(&[
                "copa/validation/0002.parquet",
                "copa/validation/0010.parquet"
            ])
        );
        assert_eq!(
            split_files(&files, "default", "test"),
            names(&["data/test-00000-of-00001-1a2b3c.parquet"])
        );
        // The config name is literal: `.` is not a wildcard.
        assert_eq!(
            split_files(&files, "wsc.fixed", "validation"),
            names(&["wsc.fixed/validation-00000-of-00001.parquet"])
        );
        assert!(split_files(&files, "rte", "validation").is_empty());
    }

    #[test]
    fn shard_numbers() {
        assert_eq!(shard_number("c/train-00012-of-00020.parquet"), 12);
        assert_eq!(shard_number("c/train-00012-of-00020-abc.parquet"), 12);
        assert_eq!(shard_number("c/validation/0007.parquet"), 7);
    }
}
