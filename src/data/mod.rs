//! Dataset rows from the formats users have, as one row type ([`Doc`]): parquet (the
//! Hugging Face hub's format, see [`hf_layout`]), Arrow stream files (what
//! `datasets.save_to_disk` writes), jsonl, jsonl.gz, csv and plain text.
//!
//! Every other format is converted once into a canonical parquet file ([`cache`]), so
//! every run reads the same typed rows.
//!
//! Every error names the file, and the row and field where there is one, so a bad
//! dataset is fixed in one look rather than debugged.

pub mod arrow_ipc;
pub mod arrow_rows;
pub mod cache;
pub mod csv;
pub mod hf_layout;
pub mod jsonl;
pub mod parquet;
pub mod split;
pub mod txt;

use std::path::{Path, PathBuf};

use serde_json::Value;

/// One dataset row: column name → value (strings, numbers, booleans, lists).
pub type Doc = serde_json::Map<String, Value>;

/// Rows read from one file, in the file's order.
#[derive(Debug, Clone)]
pub struct Table {
    pub path: PathBuf,
    pub rows: Vec<Doc>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: row {row}: {message}")]
    Row {
        path: PathBuf,
        row: usize,
        message: String,
    },
    #[error("{path}: row {row}: field '{field}': {message}")]
    Field {
        path: PathBuf,
        row: usize,
        field: String,
        message: String,
    },
    #[error("{path}: no rows")]
    Empty { path: PathBuf },
    #[error(transparent)]
    Asset(#[from] crate::assets::AssetError),
}

/// A source format, from the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Parquet,
    Arrow,
    Jsonl,
    JsonlGz,
    Csv,
    Txt,
}

impl Format {
    const ALL: [Format; 6] = [
        Format::Parquet,
        Format::Arrow,
        Format::JsonlGz,
        Format::Jsonl,
        Format::Csv,
        Format::Txt,
    ];

    pub fn of(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?;
        Self::ALL
            .into_iter()
            .find(|f| name.ends_with(&format!(".{}", f.extension())))
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Arrow => "arrow",
            Format::Jsonl => "jsonl",
            Format::JsonlGz => "jsonl.gz",
            Format::Csv => "csv",
            Format::Txt => "txt",
        }
    }

    /// The rows of `path`, read directly (no cache).
    pub fn read_rows(self, path: &Path) -> Result<Vec<Doc>, DataError> {
        match self {
            Format::Parquet => parquet::read(path),
            Format::Arrow => arrow_ipc::read_stream(path),
            Format::Jsonl | Format::JsonlGz => jsonl::read(path),
            Format::Csv => csv::read(path),
            Format::Txt => txt::read(path),
        }
    }
}

impl Table {
    /// Read `path` by its extension: `.parquet`, `.arrow`, `.jsonl`, `.jsonl.gz`, `.csv`,
    /// `.txt`. Other than parquet, sources go through the canonical parquet cache in
    /// `$SCALPEL_HOME/data` unless `SCALPEL_DATA_CACHE=off` (see [`cache`]).
    pub fn read(path: &Path) -> Result<Table, DataError> {
        Self::read_with_cache(path, cache::dir_from_env().as_deref())
    }

    /// Read `path` directly, without the cache.
    pub fn read_uncached(path: &Path) -> Result<Table, DataError> {
        Self::read_with_cache(path, None)
    }

    /// Read `path`, through the cache in `cache_dir` when given.
    pub fn read_with_cache(path: &Path, cache_dir: Option<&Path>) -> Result<Table, DataError> {
        let format = Format::of(path).ok_or_else(|| DataError::Format {
            path: path.to_path_buf(),
            message:
                "unknown data format (expected .parquet, .arrow, .jsonl, .jsonl.gz, .csv or .txt)"
                    .into(),
        })?;
        let rows = match cache_dir {
            Some(dir) if format != Format::Parquet => cache::read_through(path, format, dir)?,
            _ => format.read_rows(path)?,
        };
        Self::new(path, rows)
    }

    /// A table of `rows` named `path` in errors; no rows is [`DataError::Empty`].
    pub fn new(path: &Path, rows: Vec<Doc>) -> Result<Table, DataError> {
        if rows.is_empty() {
            return Err(DataError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Table {
            path: path.to_path_buf(),
            rows,
        })
    }

    /// A string field of row `row`.
    pub fn str<'a>(&'a self, row: usize, field: &str) -> Result<&'a str, DataError> {
        match self.get(row, field)? {
            Value::String(s) => Ok(s),
            other => Err(self.field_err(row, field, format!("expected a string, found {other}"))),
        }
    }

    /// An integer field of row `row`. Integral floats count: pandas and Arrow type a
    /// column of ints with a missing value as float64, so labels arrive as `1.0`.
    pub fn int(&self, row: usize, field: &str) -> Result<i64, DataError> {
        let v = self.get(row, field)?;
        if let Some(i) = v.as_i64() {
            return Ok(i);
        }
        match v.as_f64() {
            // 2^63 itself is not an i64, hence the strict bound.
            Some(f) if f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63) => {
                Ok(f as i64)
            }
            _ => Err(self.field_err(row, field, format!("expected an integer, found {v}"))),
        }
    }

    /// An integer label in `0..n`.
    pub fn label(&self, row: usize, field: &str, n: usize) -> Result<usize, DataError> {
        let v = self.int(row, field)?;
        if v < 0 || v as usize >= n {
            return Err(self.field_err(row, field, format!("label {v} out of range 0..{n}")));
        }
        Ok(v as usize)
    }

    pub fn get(&self, row: usize, field: &str) -> Result<&Value, DataError> {
        self.rows
            .get(row)
            .ok_or_else(|| DataError::Row {
                path: self.path.clone(),
                row,
                message: format!("out of range ({} rows)", self.rows.len()),
            })?
            .get(field)
            .ok_or_else(|| self.field_err(row, field, "missing".into()))
    }

    pub fn field_err(&self, row: usize, field: &str, message: String) -> DataError {
        DataError::Field {
            path: self.path.clone(),
            row,
            field: field.to_string(),
            message,
        }
    }
}

/// The text of a caught panic's payload.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Run a third-party reader on `path`, turning a panic inside it (arrow and parquet
/// panic on some malformed files, as fuzzing found) into an error naming the file.
pub(crate) fn contain_panics<T>(
    path: &Path,
    f: impl FnOnce() -> Result<T, DataError>,
) -> Result<T, DataError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!("malformed file (the reader stopped: {})", panic_text(&*p)),
        })
    })
}
