//! RTE (`glue/rte/default.yaml`; the harness's task id `rte` is GLUE's, identical rows to
//! SuperGLUE's): `"{sentence1}\nQuestion: {sentence2} True or False?\nAnswer:"`, label 0 =
//! entailment = "True".

use crate::data::{DataError, Table};

use super::Prompt;

pub(super) fn prompt(t: &Table, row: usize) -> Result<Prompt, DataError> {
    Ok(Prompt {
        context: format!(
            "{}\nQuestion: {} True or False?\nAnswer:",
            t.str(row, "sentence1")?,
            t.str(row, "sentence2")?
        ),
        choices: vec!["True".into(), "False".into()],
        label: t.label(row, "label", 2)?,
    })
}
