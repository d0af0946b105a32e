//! JSON Lines, plain or gzip-compressed: one JSON object per line.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::Value;

use super::{DataError, Doc};

pub fn read(path: &Path) -> Result<Vec<Doc>, DataError> {
    let io = |e: std::io::Error| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let file = File::open(path).map_err(io)?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut rows = Vec::new();
    for (i, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        // Rows are numbered from 0 like the other formats; the message adds the line.
        let row = rows.len();
        match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(m)) => rows.push(m),
            Ok(other) => {
                return Err(DataError::Row {
                    path: path.to_path_buf(),
                    row,
                    message: format!(
                        "line {}: expected a JSON object, found {}",
                        i + 1,
                        kind(&other)
                    ),
                })
            }
            Err(e) => {
                return Err(DataError::Row {
                    path: path.to_path_buf(),
                    row,
                    message: format!("line {}: {e}", i + 1),
                })
            }
        }
    }
    Ok(rows)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rows_and_names_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        std::fs::write(&p, "{\"a\": 1}\n\n{\"a\": 2}\n[3]\n").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("x.jsonl: row 2: line 4: expected a JSON object"),
            "{e}"
        );
        std::fs::write(&p, "{\"a\": 1}\n{\"a\": 2}\n").unwrap();
        assert_eq!(read(&p).unwrap().len(), 2);
    }
}
