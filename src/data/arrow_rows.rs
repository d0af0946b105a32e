//! Arrow record batches → [`Doc`] rows, shared by the Arrow IPC and parquet readers.
//!
//! Two field-metadata keys let a file written by [`super::parquet::write`] say what its
//! cells mean, so that writing and reading rows back is lossless:
//! - [`ENCODING_KEY`] = `json`: the column holds each value as JSON text, used where
//!   Arrow's types cannot hold the values exactly (a column mixing strings and numbers);
//! - [`NULL_KEY`] = `absent`: a null cell means the row had no such key, not a `null`.
//!
//! Files from elsewhere carry neither, and read as plain typed columns.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field};
use serde_json::{json, Value};

use super::{DataError, Doc};

pub const ENCODING_KEY: &str = "scalpel.encoding";
pub const NULL_KEY: &str = "scalpel.null";

/// What a null cell in a column stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nulls {
    Null,
    Absent,
}

/// Append `batch`'s rows to `rows`; errors number rows from the start of `rows`.
pub fn append_batch(
    path: &Path,
    batch: &RecordBatch,
    rows: &mut Vec<Doc>,
) -> Result<(), DataError> {
    let base = rows.len();
    rows.resize_with(base + batch.num_rows(), Doc::new);
    let schema = batch.schema();
    for (field, col) in schema.fields().iter().zip(batch.columns()) {
        let json_text = field
            .metadata()
            .get(ENCODING_KEY)
            .is_some_and(|v| v == "json");
        let nulls = if json_text
            || field
                .metadata()
                .get(NULL_KEY)
                .is_some_and(|v| v == "absent")
        {
            Nulls::Absent
        } else {
            Nulls::Null
        };
        for i in 0..batch.num_rows() {
            let err = |message: String| DataError::Field {
                path: path.to_path_buf(),
                row: base + i,
                field: field.name().clone(),
                message,
            };
            let v = if json_text {
                cell_json(field, col.as_ref(), i).map_err(err)?
            } else {
                value_at(col.as_ref(), i).map_err(err)?
            };
            if v.is_null() && nulls == Nulls::Absent && col.is_null(i) {
                continue;
            }
            rows[base + i].insert(field.name().clone(), v);
        }
    }
    Ok(())
}

/// A JSON-text cell parsed back; a null cell stays null (and is then dropped as absent).
fn cell_json(field: &Field, arr: &dyn Array, i: usize) -> Result<Value, String> {
    if arr.is_null(i) {
        return Ok(Value::Null);
    }
    let text = match arr.data_type() {
        DataType::Utf8 => arr.as_string::<i32>().value(i),
        DataType::LargeUtf8 => arr.as_string::<i64>().value(i),
        other => {
            return Err(format!(
                "{ENCODING_KEY}=json on a {other} column (expected strings)"
            ))
        }
    };
    serde_json::from_str(text)
        .map_err(|e| format!("bad JSON text in column '{}': {e}", field.name()))
}

/// One cell as JSON. Lists and structs recurse, so nested columns (MultiRC answers,
/// ReCoRD entity spans, BBQ's `answer_info`) come through whole.
pub fn value_at(arr: &dyn Array, i: usize) -> Result<Value, String> {
    // A NullArray has no validity buffer, so `is_null` says false for its cells.
    if arr.is_null(i) || matches!(arr.data_type(), DataType::Null) {
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
        DataType::FixedSizeList(..) => list(arr.as_fixed_size_list().value(i).as_ref())?,
        DataType::Struct(fields) => {
            let s = arr.as_struct();
            let mut m = serde_json::Map::new();
            for (f, col) in fields.iter().zip(s.columns()) {
                m.insert(f.name().clone(), value_at(col.as_ref(), i)?);
            }
            Value::Object(m)
        }
        // pandas writes categorical columns as dictionaries.
        DataType::Dictionary(..) => {
            let d = arr.as_any_dictionary();
            let key = d.normalized_keys()[i];
            value_at(d.values().as_ref(), key)?
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
    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow_array::{DictionaryArray, Int64Array, NullArray, StringArray};
    use arrow_schema::Schema;

    #[test]
    fn metadata_marks_json_text_and_absent_keys() {
        let meta = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("mixed", DataType::Utf8, true).with_metadata(meta(ENCODING_KEY, "json")),
            Field::new("opt", DataType::Int64, true).with_metadata(meta(NULL_KEY, "absent")),
            Field::new("n", DataType::Int64, true),
            Field::new("none", DataType::Null, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("\"a\""), None, Some("null")])),
                Arc::new(Int64Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(Int64Array::from(vec![None, Some(2), Some(3)])),
                Arc::new(NullArray::new(3)),
            ],
        )
        .unwrap();
        let mut rows = Vec::new();
        append_batch(Path::new("x.parquet"), &batch, &mut rows).unwrap();
        assert_eq!(
            Value::Object(rows[0].clone()),
            json!({"mixed": "a", "opt": 1, "n": null, "none": null})
        );
        assert_eq!(
            Value::Object(rows[1].clone()),
            json!({"n": 2, "none": null})
        );
        assert_eq!(
            Value::Object(rows[2].clone()),
            json!({"mixed": null, "opt": 3, "n": 3, "none": null})
        );
    }

    #[test]
    fn dictionary_cells_are_their_values() {
        let d: DictionaryArray<Int32Type> = vec!["x", "y", "x"].into_iter().collect();
        assert_eq!(value_at(&d, 2).unwrap(), json!("x"));
        assert_eq!(value_at(&d, 1).unwrap(), json!("y"));
    }
}
