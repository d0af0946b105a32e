//! Arrow IPC stream files, the format `datasets.Dataset.save_to_disk` writes
//! (`data-00000-of-00001.arrow`). Class labels are stored as integers.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::Array;
use arrow_ipc::reader::StreamReader;
use arrow_schema::DataType;
use serde_json::{json, Value};

use super::{DataError, Doc};

pub fn read_stream(path: &Path) -> Result<Vec<Doc>, DataError> {
    let file = File::open(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let fmt = |m: String| DataError::Format {
        path: path.to_path_buf(),
        message: m,
    };
    let reader = StreamReader::try_new(BufReader::new(file), None)
        .map_err(|e| fmt(format!("not an Arrow IPC stream: {e}")))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| fmt(format!("reading record batch: {e}")))?;
        let schema = batch.schema();
        let base = rows.len();
        for _ in 0..batch.num_rows() {
            rows.push(Doc::new());
        }
        for (field, col) in schema.fields().iter().zip(batch.columns()) {
            for i in 0..batch.num_rows() {
                let v = value_at(col.as_ref(), i).map_err(|m| DataError::Field {
                    path: path.to_path_buf(),
                    row: base + i,
                    field: field.name().clone(),
                    message: m,
                })?;
                rows[base + i].insert(field.name().clone(), v);
            }
        }
    }
    Ok(rows)
}

/// One cell as JSON. Lists and structs recurse, so nested columns (MultiRC answers,
/// ReCoRD entity spans) come through whole.
fn value_at(arr: &dyn Array, i: usize) -> Result<Value, String> {
    if arr.is_null(i) {
        return Ok(Value::Null);
    }
    Ok(match arr.data_type() {
        DataType::Utf8 => json!(arr.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => json!(arr.as_string::<i64>().value(i)),
        DataType::Utf8View => json!(arr.as_string_view().value(i)),
        DataType::Boolean => json!(arr.as_boolean().value(i)),
        DataType::Int8 => json!(arr.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => json!(arr.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => json!(arr.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => json!(arr.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => json!(arr.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => json!(arr.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => json!(arr.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => json!(arr.as_primitive::<UInt64Type>().value(i)),
        DataType::Float32 => json!(arr.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => json!(arr.as_primitive::<Float64Type>().value(i)),
        DataType::List(_) => list(arr.as_list::<i32>().value(i).as_ref())?,
        DataType::LargeList(_) => list(arr.as_list::<i64>().value(i).as_ref())?,
        DataType::Struct(fields) => {
            let s = arr.as_struct();
            let mut m = serde_json::Map::new();
            for (f, col) in fields.iter().zip(s.columns()) {
                m.insert(f.name().clone(), value_at(col.as_ref(), i)?);
            }
            Value::Object(m)
        }
        other => return Err(format!("unsupported Arrow type {other}")),
    })
}

fn list(arr: &dyn Array) -> Result<Value, String> {
    (0..arr.len())
        .map(|j| value_at(arr, j))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::{Int64Array, ListArray, RecordBatch, StringArray};
    use arrow_ipc::writer::StreamWriter;
    use arrow_schema::{Field, Schema};

    #[test]
    fn reads_strings_ints_and_lists() {
        let answers = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
        ]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("premise", DataType::Utf8, false),
            Field::new("label", DataType::Int64, false),
            Field::new("answers", answers.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(Int64Array::from(vec![0, 1])),
                Arc::new(answers),
            ],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.arrow");
        let mut w = StreamWriter::try_new(File::create(&p).unwrap(), &schema).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        let rows = read_stream(&p).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["premise"], json!("b"));
        assert_eq!(rows[1]["label"], json!(1));
        assert_eq!(rows[0]["answers"], json!([1, 2]));
        assert_eq!(rows[1]["answers"], Value::Null);
        std::fs::write(&p, b"garbage").unwrap();
        let e = read_stream(&p).unwrap_err().to_string();
        assert!(e.contains("d.arrow: not an Arrow IPC stream"), "{e}");
    }
}
