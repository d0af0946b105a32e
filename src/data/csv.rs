//! CSV with a header row. Every value is a string: CSV has no types, and guessing them
//! would turn ids like `007` into numbers.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

use csv::ErrorKind;
use serde_json::Value;

use super::{DataError, Doc};

pub fn read(path: &Path) -> Result<Vec<Doc>, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(file);
    let headers = rdr
        .headers()
        .map_err(|e| to_data_error(path, None, e))?
        .clone();
    let mut seen = HashSet::new();
    if let Some(dup) = headers.iter().find(|h| !seen.insert(*h)) {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            message: format!("header names column '{dup}' twice"),
        });
    }
    let mut rows = Vec::new();
    for (row, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| to_data_error(path, Some(row), e))?;
        rows.push(
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), Value::String(v.to_string())))
                .collect(),
        );
    }
    Ok(rows)
}

/// `row` numbers data rows from 0 like the other formats; the message adds the line.
fn to_data_error(path: &Path, row: Option<usize>, e: csv::Error) -> DataError {
    let line = e
        .position()
        .map(|p| format!("line {}: ", p.line()))
        .unwrap_or_default();
    let message = match e.kind() {
        ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{line}{len} fields where the header has {expected_len}"),
        ErrorKind::Utf8 { err, .. } => format!("{line}not UTF-8: {err}"),
        ErrorKind::Io(_) => {
            return DataError::Io {
                path: path.to_path_buf(),
                source: e.into(),
            }
        }
        _ => format!("{line}{e}"),
    };
    match row {
        Some(row) => DataError::Row {
            path: path.to_path_buf(),
            row,
            message,
        },
        None => DataError::Format {
            path: path.to_path_buf(),
            message: format!("header: {message}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_strings_and_names_the_ragged_row() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        std::fs::write(&p, "id,text\n007,\"a, b\"\n2,\"multi\nline\"\n").unwrap();
        let rows = read(&p).unwrap();
        assert_eq!(
            Value::Object(rows[0].clone()),
            json!({"id": "007", "text": "a, b"})
        );
        assert_eq!(rows[1]["text"], json!("multi\nline"));
        std::fs::write(&p, "id,text\n1,a\n2\n").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("x.csv: row 1: line 3: 1 fields where the header has 2"),
            "{e}"
        );
        std::fs::write(&p, "id,id\n1,2\n").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("column 'id' twice"), "{e}");
    }
}
