//! The canonical parquet cache: each non-parquet source is converted once into a
//! parquet file keyed by its content, and later runs read the parquet.
//!
//! Layout: `$SCALPEL_HOME/data/<sha256>.parquet`, the hash taken over
//! [`FORMAT_VERSION`], the source's format and the source's bytes. Keying by content
//! rather than path means an edited file is converted again, the same data under two
//! names is stored once, and moving a file costs nothing. Rows are always returned as
//! read back from the parquet, so the first run sees exactly what later runs see.
//! `SCALPEL_DATA_CACHE=off` reads sources directly.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{parquet, DataError, Doc, Format};

/// Bump when the conversion changes, so stale cache files are not read.
pub const FORMAT_VERSION: u32 = 1;
/// `off` (or `0`, `false`, `no`) turns the cache off.
pub const ENV: &str = "SCALPEL_DATA_CACHE";

/// The cache directory `Table::read` uses: `$SCALPEL_HOME/data`, or `None` when
/// turned off through [`ENV`].
pub fn dir_from_env() -> Option<PathBuf> {
    let off = std::env::var(ENV).is_ok_and(|v| {
        matches!(
            v.to_ascii_lowercase().as_str(),
            "off" | "0" | "false" | "no"
        )
    });
    (!off).then(|| crate::assets::scalpel_home().join("data"))
}

/// The hex sha256 naming `path`'s cache file.
pub fn key(path: &Path, format: Format) -> Result<String, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut h = Sha256::new();
    h.update(FORMAT_VERSION.to_le_bytes());
    h.update(format.extension().as_bytes());
    h.update([0u8]);
    io::copy(&mut File::open(path).map_err(io)?, &mut h).map_err(io)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Where `path`'s canonical parquet lives (or will) in `dir`.
pub fn cached_path(dir: &Path, path: &Path, format: Format) -> Result<PathBuf, DataError> {
    Ok(dir.join(format!("{}.parquet", key(path, format)?)))
}

/// `path`'s rows through the cache in `dir`, converting on a miss. No rows is not an
/// error here (and nothing is cached): the caller decides.
pub fn read_through(path: &Path, format: Format, dir: &Path) -> Result<Vec<Doc>, DataError> {
    let cached = cached_path(dir, path, format)?;
    let sum_path = sum_path(&cached);
    if cached.is_file() {
        // The parquet's own sha256 sits beside it: a damaged cache file (a truncated
        // write, a flipped byte that still decodes) is rebuilt from the source, never read.
        // (A cache file from before checksums has none: rebuilt without a word.)
        let (whole, said) = match (fs::read(&cached), fs::read_to_string(&sum_path)) {
            (Ok(bytes), Ok(sum)) => (sum.trim() == crate::assets::sha256_hex(&bytes), true),
            _ => (false, false),
        };
        if !whole && said {
            eprintln!(
                "scalpel: cached {} does not match its sha256; converting {} again",
                cached.display(),
                path.display()
            );
        } else if whole {
            if let Ok(rows) = parquet::read(&cached) {
                if !rows.is_empty() {
                    return Ok(rows);
                }
            }
        }
    }
    let rows = format.read_rows(path)?;
    if rows.is_empty() {
        return Ok(rows);
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| DataError::Io { path: p, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    // Written beside its final name and renamed, so a reader never sees half a file
    // and two runs converting at once both end with a whole one.
    let tmp = tempfile::Builder::new()
        .prefix(".tmp.")
        .suffix(".parquet")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    parquet::write_to(tmp.as_file(), &rows).map_err(|message| DataError::Format {
        path: path.to_path_buf(),
        message: format!("converting to {}: {message}", cached.display()),
    })?;
    // tempfile creates files private to the user; a cache file is as readable as its source.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let perms = fs::Permissions::from_mode(0o644);
        tmp.as_file()
            .set_permissions(perms)
            .map_err(io(tmp.path()))?;
    }
    tmp.as_file().sync_all().map_err(io(tmp.path()))?;
    let bytes = fs::read(tmp.path()).map_err(io(tmp.path()))?;
    // The checksum goes first: a parquet without its checksum is rebuilt, never the
    // reverse.
    crate::store::write_atomic(&sum_path, crate::assets::sha256_hex(&bytes).as_bytes()).map_err(
        |e| DataError::Format {
            path: path.to_path_buf(),
            message: format!("caching: {e}"),
        },
    )?;
    tmp.persist(&cached).map_err(|e| io(&cached)(e.error))?;
    parquet::read(&cached)
}

/// Where the sha256 of cache file `cached` is kept.
fn sum_path(cached: &Path) -> PathBuf {
    let mut name = cached.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn converts_once_and_reads_the_parquet_after() {
        let src_dir = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let p = src_dir.path().join("x.jsonl");
        std::fs::write(&p, "{\"a\": 1, \"b\": [\"x\"]}\n{\"a\": 2.5}\n").unwrap();
        let first = read_through(&p, Format::Jsonl, cache.path()).unwrap();
        let files: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
        assert_eq!(
            files.len(),
            2,
            "one parquet file and its sha256, no temp files left"
        );
        let cached = cached_path(cache.path(), &p, Format::Jsonl).unwrap();
        assert!(cached.is_file());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&cached).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        assert_eq!(Value::Object(first[1].clone()), json!({"a": 2.5}));
        // A later run reads the parquet, not the source: replaced rows (with their
        // checksum) come back.
        let marked = vec![json!({"a": "from cache"}).as_object().unwrap().clone()];
        parquet::write(&cached, &marked).unwrap();
        let sum = crate::assets::sha256_hex(&std::fs::read(&cached).unwrap());
        std::fs::write(sum_path(&cached), &sum).unwrap();
        assert_eq!(
            read_through(&p, Format::Jsonl, cache.path()).unwrap(),
            marked
        );
        // Replaced rows without a matching checksum are a damaged file: rebuilt.
        parquet::write(
            &cached,
            &[json!({"a": "tampered"}).as_object().unwrap().clone()],
        )
        .unwrap();
        assert_eq!(
            read_through(&p, Format::Jsonl, cache.path()).unwrap(),
            first
        );
        // A corrupt cache file is rebuilt from the source.
        std::fs::write(&cached, b"junk").unwrap();
        assert_eq!(
            read_through(&p, Format::Jsonl, cache.path()).unwrap(),
            first
        );
    }

    #[test]
    fn key_depends_on_bytes_and_format() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.txt");
        let b = d.path().join("b.txt");
        std::fs::write(&a, "same").unwrap();
        std::fs::write(&b, "same").unwrap();
        assert_eq!(key(&a, Format::Txt).unwrap(), key(&b, Format::Txt).unwrap());
        assert_ne!(key(&a, Format::Txt).unwrap(), key(&a, Format::Csv).unwrap());
        std::fs::write(&b, "diff").unwrap();
        assert_ne!(key(&a, Format::Txt).unwrap(), key(&b, Format::Txt).unwrap());
        assert_eq!(key(&a, Format::Txt).unwrap().len(), 64);
    }
}
