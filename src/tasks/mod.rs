//! Evaluation tasks. A task turns dataset rows into scoring requests and never touches
//! the model; [`eval`] runs the requests and turns responses into per-item scores and
//! metrics. Task ids are lm-evaluation-harness's, so results line up with its tables.

pub mod eval;
pub mod super_glue;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::data::DataError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskId {
    Boolq,
    Cb,
    Copa,
    Rte,
}

impl TaskId {
    pub const ALL: [TaskId; 4] = [TaskId::Boolq, TaskId::Cb, TaskId::Copa, TaskId::Rte];

    pub fn name(self) -> &'static str {
        match self {
            TaskId::Boolq => "boolq",
            TaskId::Cb => "cb",
            TaskId::Copa => "copa",
            TaskId::Rte => "rte",
        }
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown task '{0}' (known: boolq, cb, copa, rte)")]
pub struct UnknownTask(pub String);

impl FromStr for TaskId {
    type Err = UnknownTask;
    fn from_str(s: &str) -> Result<Self, UnknownTask> {
        TaskId::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownTask(s.to_string()))
    }
}

/// One multiple-choice item: the model scores `context + continuation` for each choice
/// and predicts the most likely one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceItem {
    /// Row index in the dataset's own order.
    pub idx: usize,
    pub context: String,
    pub continuations: Vec<String>,
    pub label: usize,
}

/// A task's items, ready to score.
#[derive(Debug, Clone)]
pub struct ChoiceTask {
    pub id: TaskId,
    /// The data file the items came from.
    pub source: PathBuf,
    pub items: Vec<ChoiceItem>,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Unknown(#[from] UnknownTask),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("{task}: --limit 0 leaves nothing to evaluate")]
    NoItems { task: TaskId },
}
