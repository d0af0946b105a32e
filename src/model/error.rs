use std::path::PathBuf;

use super::hooks::{HookError, ParseHookError};

/// Everything that can go wrong loading or running a model. Each variant's message is
/// one line that names the file or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not found")]
    NotFound { path: PathBuf },
    #[error("{path}: {field}: {message}")]
    Config {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("{path}: unknown architecture '{arch}' (supported: {supported})")]
    UnknownArch {
        path: PathBuf,
        arch: String,
        supported: &'static str,
    },
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("empty prompt: nothing to run the model on")]
    EmptyPrompt,
    #[error("prompt of {len} tokens exceeds the model's {max} positions")]
    TooLong { len: usize, max: usize },
    #[error("model '{spec}': {message}")]
    Source { spec: String, message: String },
    #[error("--device '{spec}': {message}")]
    Device { spec: String, message: String },
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    HookName(#[from] ParseHookError),
    #[error(transparent)]
    Asset(#[from] crate::assets::AssetError),
    /// A call whose arguments do not fit the model (shapes, layer ranges).
    #[error("model call: {0}")]
    Call(String),
    /// The forward pass produced NaN or infinite values.
    #[error("non-finite values: {what}")]
    NonFinite { what: String },
    #[error("tensor computation: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    pub(crate) fn weights(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        // candle errors carry a backtrace on some builds; keep the first line only so the
        // CLI error stays one line.
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or_default().to_string();
        ModelError::Weights {
            path: path.into(),
            message: first,
        }
    }

    pub(crate) fn config(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ModelError::Config {
            path: path.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}
