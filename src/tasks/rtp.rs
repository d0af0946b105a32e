//! RealToxicityPrompts. (Being written.)

use std::path::Path;

use serde::Serialize;

use super::{Task, TaskError, TaskId};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RtpItem {
    pub idx: usize,
    pub prompt: String,
    pub continuations: Vec<String>,
    pub toxicity: Vec<f64>,
    pub max_toxicity: f64,
    pub mean_toxicity: f64,
}

pub fn load(id: TaskId, _data: Option<&Path>) -> Result<Box<dyn Task>, TaskError> {
    Err(TaskError::Invalid {
        task: id,
        message: "not built yet".into(),
    })
}
