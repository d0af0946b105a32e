//! Perplexity and LAMBADA. (Being written.)

use std::path::Path;

use serde::Serialize;

use super::{Task, TaskError, TaskId};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LambadaItem {
    pub idx: usize,
    pub loglikelihood: f64,
    pub is_greedy: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RollingItem {
    pub idx: usize,
    pub loglikelihood: f64,
    pub n_tokens: usize,
    pub n_words: usize,
    pub n_bytes: usize,
}

pub fn load(id: TaskId, _data: Option<&Path>) -> Result<Box<dyn Task>, TaskError> {
    Err(TaskError::Invalid {
        task: id,
        message: "not built yet".into(),
    })
}
