//! WiC (`super_glue/wic/default.yaml`):
//! `"Sentence 1: {sentence1}\nSentence 2: {sentence2}\nQuestion: Is the word
//! '{sentence1[start1:end1]}' used in the same way in the two sentences above?\nAnswer:"`,
//! choices `no`/`yes`, target `label` (1 = same sense). The slice is Python's, over code
//! points; where the harness would silently slice out of range (or produce an empty
//! word), a row here is an error naming `start1`/`end1`.

use crate::data::{DataError, Table};

use super::{py, Prompt};

pub(super) fn prompt(t: &Table, row: usize) -> Result<Prompt, DataError> {
    let s1 = t.str(row, "sentence1")?;
    let s2 = t.str(row, "sentence2")?;
    let n = py::len(s1);
    let start = t.int(row, "start1")?;
    let end = t.int(row, "end1")?;
    if start < 0 || start as usize >= n {
        return Err(t.field_err(
            row,
            "start1",
            format!("{start} is outside sentence1 ({n} characters)"),
        ));
    }
    if end <= start || end as usize > n {
        return Err(t.field_err(
            row,
            "end1",
            format!(
                "{end} must lie in {}..={n} (start1 {start}, sentence1 of {n} characters)",
                start + 1
            ),
        ));
    }
    let word = py::char_slice(s1, start as usize, end as usize);
    Ok(Prompt {
        context: format!(
            "Sentence 1: {s1}\nSentence 2: {s2}\nQuestion: Is the word '{word}' used in the same way in the two sentences above?\nAnswer:"
        ),
        choices: vec!["no".into(), "yes".into()],
        label: t.label(row, "label", 2)?,
    })
}
