//! Arrow IPC stream files, the format `datasets.Dataset.save_to_disk` writes
//! (`data-00000-of-00001.arrow`). Class labels are stored as integers.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use arrow_ipc::reader::StreamReader;

use super::arrow_rows::append_batch;
use super::{DataError, Doc};

pub fn read_stream(path: &Path) -> Result<Vec<Doc>, DataError> {
    super::contain_panics(path, || read_stream_inner(path))
}

fn read_stream_inner(path: &Path) -> Result<Vec<Doc>, DataError> {
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
        append_batch(path, &batch, &mut rows)?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::types::Int64Type;
    use arrow_array::{Array, Int64Array, ListArray, RecordBatch, StringArray};
    use arrow_ipc::writer::StreamWriter;
    use arrow_schema::{DataType, Field, Schema};
    use serde_json::{json, Value};

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
