//! Parquet: the Hugging Face hub's dataset format (snappy-compressed, nested list and
//! struct columns) and the format of Scalpel's canonical data cache.
//!
//! Writing is lossless: rows read back equal the rows written, key for key. Each column
//! gets the Arrow type arrow-json infers for it, but only if its values survive that
//! type unchanged; otherwise (a column mixing strings and numbers, ints past 2^53 in a
//! float column, structs whose keys come and go) it is stored as JSON text. See
//! [`super::arrow_rows`] for the metadata that marks this.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_json::reader::{infer_json_schema_from_iterator, ReaderBuilder};
use arrow_schema::{ArrowError, DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::{Map, Value};

use super::arrow_rows::{append_batch, value_at, ENCODING_KEY, NULL_KEY};
use super::{DataError, Doc};

pub fn read(path: &Path) -> Result<Vec<Doc>, DataError> {
    super::contain_panics(path, || read_inner(path))
}

fn read_inner(path: &Path) -> Result<Vec<Doc>, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let fmt = |m: String| DataError::Format {
        path: path.to_path_buf(),
        message: m,
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| fmt(format!("not a readable parquet file: {e}")))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| fmt(format!("reading row group: {e}")))?;
        append_batch(path, &batch, &mut rows)?;
    }
    Ok(rows)
}

/// Write `rows` to `path` (snappy-compressed).
pub fn write(path: &Path, rows: &[Doc]) -> Result<(), DataError> {
    let file = File::create(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    write_to(file, rows).map_err(|message| DataError::Format {
        path: path.to_path_buf(),
        message: format!("writing parquet: {message}"),
    })
}

/// Write `rows` as one parquet file to `out`.
pub fn write_to<W: Write + Send>(out: W, rows: &[Doc]) -> Result<(), String> {
    let batch = to_batch(rows)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w =
        ArrowWriter::try_new(out, batch.schema(), Some(props)).map_err(|e| e.to_string())?;
    w.write(&batch).map_err(|e| e.to_string())?;
    w.close().map_err(|e| e.to_string())?;
    Ok(())
}

/// `rows` as one record batch, columns in order of first appearance.
pub fn to_batch(rows: &[Doc]) -> Result<RecordBatch, String> {
    let mut names: Vec<&str> = Vec::new();
    let mut seen = HashSet::new();
    for r in rows {
        for k in r.keys() {
            if seen.insert(k.as_str()) {
                names.push(k);
            }
        }
    }
    let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) =
        names.iter().map(|n| column(n, rows)).unzip();
    let schema = Arc::new(Schema::new(fields));
    let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows.len()));
    RecordBatch::try_new_with_options(schema, arrays, &opts).map_err(|e| e.to_string())
}

fn column(name: &str, rows: &[Doc]) -> (Field, ArrayRef) {
    let cells: Vec<Option<&Value>> = rows.iter().map(|r| r.get(name)).collect();
    let absent = cells.iter().any(Option::is_none);
    let null = cells.iter().any(|c| matches!(c, Some(Value::Null)));
    // A typed column has one kind of null; with both, only JSON text tells them apart.
    if !(absent && null) {
        if let Some((field, array)) = typed(name, &cells) {
            let field = if absent {
                field.with_metadata(meta(NULL_KEY, "absent"))
            } else {
                field
            };
            return (field, array);
        }
    }
    let text: StringArray = cells.iter().map(|c| c.map(|v| v.to_string())).collect();
    let field = Field::new(name, DataType::Utf8, true).with_metadata(meta(ENCODING_KEY, "json"));
    (field, Arc::new(text))
}

fn meta(k: &str, v: &str) -> HashMap<String, String> {
    HashMap::from([(k.to_string(), v.to_string())])
}

/// The column with arrow-json's inferred type, if every value reads back unchanged.
fn typed(name: &str, cells: &[Option<&Value>]) -> Option<(Field, ArrayRef)> {
    let objs: Vec<Value> = cells
        .iter()
        .map(|c| {
            let mut m = Map::new();
            if let Some(v) = c {
                m.insert(name.to_string(), (*v).clone());
            }
            Value::Object(m)
        })
        .collect();
    let schema = infer_json_schema_from_iterator(objs.iter().map(Ok::<_, ArrowError>)).ok()?;
    let field = schema.fields().first()?.as_ref().clone();
    if !parquet_can_hold(field.data_type()) {
        return None;
    }
    let mut dec = ReaderBuilder::new(Arc::new(schema)).build_decoder().ok()?;
    dec.serialize(&objs).ok()?;
    let array = dec.flush().ok()??.column(0).clone();
    let exact = cells
        .iter()
        .enumerate()
        .all(|(i, c)| value_at(array.as_ref(), i).is_ok_and(|v| &v == c.unwrap_or(&Value::Null)));
    exact.then_some((field, array))
}

/// Parquet has no empty groups, so a struct inferred from `{}` values cannot be written.
fn parquet_can_hold(dt: &DataType) -> bool {
    match dt {
        DataType::Struct(fs) => {
            !fs.is_empty() && fs.iter().all(|f| parquet_can_hold(f.data_type()))
        }
        DataType::List(f) | DataType::LargeList(f) => parquet_can_hold(f.data_type()),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn docs(v: Value) -> Vec<Doc> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_object().unwrap().clone())
            .collect()
    }

    fn round_trip(rows: &[Doc]) -> (Vec<Doc>, Arc<Schema>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        write(&p, rows).unwrap();
        let schema = to_batch(rows).unwrap().schema();
        (read(&p).unwrap(), schema)
    }

    #[test]
    fn every_kind_of_value_round_trips() {
        let rows = docs(json!([
            {"s": "a", "i": 1, "f": 0.5, "b": true, "l": [1, 2], "o": {"x": [1.5], "y": "q"},
             "n": null, "big": 18446744073709551615_u64, "mixed": 1, "ragged": {"a": 1},
             "opt": 1, "empty": {}, "el": [], "both": null, "fi": 1, "ll": [[1], []]},
            {"s": "é\n\"", "i": -7, "f": 2.0, "b": false, "l": [], "o": {"x": [], "y": "r"},
             "n": null, "big": 1, "mixed": "one", "ragged": {"b": [2]},
             "empty": {}, "el": [], "fi": 2.5, "ll": [[2, 3]]},
            {"s": "", "i": 3, "f": -1e-300, "b": true, "l": [3], "o": {"x": [2.0], "y": "s"},
             "n": null, "big": 2, "mixed": [1], "ragged": {"a": null},
             "opt": 3, "empty": {}, "el": [], "both": 4, "fi": 3, "ll": []},
        ]));
        let (back, schema) = round_trip(&rows);
        assert_eq!(back, rows);
        let ty = |n: &str| schema.field_with_name(n).unwrap().clone();
        assert_eq!(ty("s").data_type(), &DataType::Utf8);
        assert_eq!(ty("i").data_type(), &DataType::Int64);
        assert_eq!(ty("f").data_type(), &DataType::Float64);
        assert!(matches!(ty("o").data_type(), DataType::Struct(_)));
        assert_eq!(
            ty("opt").metadata().get(NULL_KEY).map(String::as_str),
            Some("absent")
        );
        // Typed columns would change these values; JSON text keeps them.
        for n in ["mixed", "ragged", "both", "big", "fi"] {
            assert_eq!(
                ty(n).metadata().get(ENCODING_KEY).map(String::as_str),
                Some("json"),
                "{n}"
            );
        }
    }

    #[test]
    fn corrupt_file_is_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.parquet");
        std::fs::write(&p, b"PAR1 not really").unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("bad.parquet: not a readable parquet file"),
            "{e}"
        );
    }
}
