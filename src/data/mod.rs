//! Dataset rows from the formats users have, as one row type ([`Doc`]): Hugging Face
//! Arrow stream files (what `datasets.save_to_disk` writes), jsonl and jsonl.gz.
//!
//! Every error names the file, and the row and field where there is one, so a bad
//! dataset is fixed in one look rather than debugged.

pub mod arrow_ipc;
pub mod jsonl;
pub mod split;

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

impl Table {
    /// Read `path` by its extension: `.arrow`, `.jsonl`, `.jsonl.gz`.
    pub fn read(path: &Path) -> Result<Table, DataError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let rows = if name.ends_with(".arrow") {
            arrow_ipc::read_stream(path)?
        } else if name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") {
            jsonl::read(path)?
        } else {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                message: "unknown data format (expected .arrow, .jsonl or .jsonl.gz)".into(),
            });
        };
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

    /// An integer field of row `row`.
    pub fn int(&self, row: usize, field: &str) -> Result<i64, DataError> {
        match self.get(row, field)? {
            Value::Number(n) if n.is_i64() => Ok(n.as_i64().unwrap_or_default()),
            other => Err(self.field_err(row, field, format!("expected an integer, found {other}"))),
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
