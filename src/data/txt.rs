//! Plain text: one row per non-empty line, in the field `text`.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use super::{DataError, Doc};

pub const FIELD: &str = "text";

pub fn read(path: &Path) -> Result<Vec<Doc>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut rows = Vec::new();
    for line in BufReader::new(File::open(path).map_err(io)?).lines() {
        let line = line.map_err(io)?;
        if !line.trim().is_empty() {
            rows.push(Doc::from_iter([(FIELD.to_string(), Value::String(line))]));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_non_empty_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.txt");
        std::fs::write(&p, "first line\n\n  \nsecond\r\n").unwrap();
        let rows = read(&p).unwrap();
        let texts: Vec<_> = rows.iter().map(|r| r[FIELD].as_str().unwrap()).collect();
        assert_eq!(texts, ["first line", "second"]);
    }
}
