//! Chat formatting: the model's own Jinja chat template, rendered with minijinja the way
//! transformers renders it (`trim_blocks`, `lstrip_blocks`, Python string methods), never
//! a hard-coded format.

use serde::Serialize;

use super::tokenizer::Tokenizer;
use super::ModelError;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: "user".into(),
            content: content.into(),
        }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Message {
            role: "system".into(),
            content: content.into(),
        }
    }
}

/// Render `messages` with the tokenizer's chat template. `add_generation_prompt` opens
/// the assistant's turn, as transformers' `apply_chat_template` does.
pub fn render(
    tok: &Tokenizer,
    messages: &[Message],
    add_generation_prompt: bool,
) -> Result<String, ModelError> {
    let template = tok.chat_template.as_deref().ok_or_else(|| {
        ModelError::ChatTemplate(format!(
            "{}: the model ships no chat template (use a plain prompt)",
            tok.source().display()
        ))
    })?;
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| ModelError::ChatTemplate(e.to_string()))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| ModelError::ChatTemplate(e.to_string()))?;
    tmpl.render(minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => tok.bos_token.clone().unwrap_or_default(),
        eos_token => tok.eos_token.clone().unwrap_or_default(),
    })
    .map_err(|e| ModelError::ChatTemplate(e.to_string()))
}
