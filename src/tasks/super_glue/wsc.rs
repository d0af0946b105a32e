//! WSC (`super_glue/wsc/default.yaml`, config `wsc.fixed`), the harness's
//! `preprocess_wsc.default_doc_to_text` ported line for line:
//!
//! ```python
//! pre = " ".join(raw_passage.split()[: x["span2_index"]])
//! post = raw_passage[len(pre) + len(x["span2_text"]) + 1 :]
//! passage = general_detokenize(pre + " *{}*".format(x["span2_text"]) + post)
//! ```
//!
//! `span2_index` counts words (whitespace-separated), the slice counts code points of the
//! raw text. Its quirks are kept: where the raw text has more than one space between the
//! words before the pronoun, `post` starts too early or late by that many characters, and
//! `general_detokenize` also glues a closing quote to the next word (`," he` → `,"he`).
//! Then `"Passage: {passage}\nQuestion: In the passage above, does the pronoun
//! \"*{span2_text}*\" refer to \"*{span1_text}*\"?\nAnswer:"`, choices `no`/`yes`, target
//! `label`. A `span2_index` past the text's last word is an error (the harness would put
//! the pronoun after the whole text).

use crate::data::{DataError, Table};

use super::{py, Prompt};

pub(super) fn prompt(t: &Table, row: usize) -> Result<Prompt, DataError> {
    let raw = t.str(row, "text")?;
    let pronoun = t.str(row, "span2_text")?;
    let noun = t.str(row, "span1_text")?;
    let words = py::split(raw);
    let k = t.int(row, "span2_index")?;
    if k < 0 || k as usize >= words.len() {
        return Err(t.field_err(
            row,
            "span2_index",
            format!("word {k} is past the text ({} words)", words.len()),
        ));
    }
    let passage = doc_to_text_passage(raw, &words, k as usize, pronoun);
    Ok(Prompt {
        context: format!(
            "Passage: {passage}\nQuestion: In the passage above, does the pronoun \"*{pronoun}*\" refer to \"*{noun}*\"?\nAnswer:"
        ),
        choices: vec!["no".into(), "yes".into()],
        label: t.label(row, "label", 2)?,
    })
}

fn doc_to_text_passage(raw: &str, words: &[&str], k: usize, pronoun: &str) -> String {
    let pre = words[..k].join(" ");
    let post = py::from_char(raw, py::len(&pre) + py::len(pronoun) + 1);
    py::general_detokenize(&format!("{pre} *{pronoun}*{post}"))
}
