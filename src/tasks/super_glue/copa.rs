//! COPA (`super_glue/copa/default.yaml`, `copa/utils.py`): the premise without its final
//! character plus " because"/" therefore"; each choice with its first letter lowered and
//! a leading space (so, after the target delimiter, two spaces).

use crate::data::{DataError, Table};

use super::Prompt;

pub(super) fn prompt(t: &Table, row: usize) -> Result<Prompt, DataError> {
    let connector = match t.str(row, "question")? {
        "cause" => "because",
        "effect" => "therefore",
        other => {
            return Err(t.field_err(
                row,
                "question",
                format!("expected \"cause\" or \"effect\", found {other:?}"),
            ))
        }
    };
    let premise = t.str(row, "premise")?.trim();
    // The harness drops the premise's final character (its full stop).
    let mut stem = premise.chars();
    stem.next_back();
    let c1 = lower_first(t.str(row, "choice1")?);
    let c2 = lower_first(t.str(row, "choice2")?);
    // utils.doc_to_choice already prefixes a space; the delimiter adds another.
    Ok(Prompt {
        context: format!("{} {connector}", stem.as_str()),
        choices: vec![format!(" {c1}"), format!(" {c2}")],
        label: t.label(row, "label", 2)?,
    })
}

fn lower_first(s: &str) -> String {
    let mut cs = s.chars();
    match cs.next() {
        Some(c) => c.to_lowercase().chain(cs).collect(),
        None => String::new(),
    }
}
