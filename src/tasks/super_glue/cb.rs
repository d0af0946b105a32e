//! CB (`super_glue/cb/default.yaml`):
//! `"{premise}\nQuestion: {hypothesis}. True, False, or Neither?\nAnswer:"`.

use crate::data::{DataError, Table};

use super::Prompt;

pub(super) fn prompt(t: &Table, row: usize) -> Result<Prompt, DataError> {
    Ok(Prompt {
        context: format!(
            "{}\nQuestion: {}. True, False, or Neither?\nAnswer:",
            t.str(row, "premise")?,
            t.str(row, "hypothesis")?
        ),
        choices: vec!["True".into(), "False".into(), "Neither".into()],
        label: t.label(row, "label", 3)?,
    })
}
