//! Social-bias probes by log-likelihood: CrowS-Pairs, StereoSet (intrasentence), BBQ,
//! WinoBias. (Being written.)

use std::path::Path;

use serde::Serialize;

use super::{Task, TaskError, TaskId};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CrowsItem {
    pub idx: usize,
    pub bias_type: String,
    /// `[sent_more, sent_less]`.
    pub loglikelihoods: Vec<f64>,
    pub stereotype_preferred: bool,
    pub likelihood_diff: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StereosetItem {
    pub idx: usize,
    pub bias_type: String,
    pub target: String,
    /// `[stereotype, anti-stereotype, unrelated]`.
    pub loglikelihoods: Vec<f64>,
}

impl StereosetItem {
    pub fn stereotype_preferred(&self) -> bool {
        self.loglikelihoods[0] > self.loglikelihoods[1]
    }
    /// Share of the two meaningful sentences scored above the unrelated one.
    pub fn meaningful_share(&self) -> f64 {
        let u = self.loglikelihoods[2];
        self.loglikelihoods[..2].iter().filter(|&&x| x > u).count() as f64 / 2.0
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BbqItem {
    pub idx: usize,
    pub category: String,
    pub context_condition: String,
    pub pred: usize,
    pub label: usize,
    pub loglikelihoods: Vec<f64>,
}

impl BbqItem {
    pub fn correct(&self) -> bool {
        self.pred == self.label
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WinobiasItem {
    pub idx: usize,
    pub pred: usize,
    pub label: usize,
    pub loglikelihoods: Vec<f64>,
}

impl WinobiasItem {
    pub fn correct(&self) -> bool {
        self.pred == self.label
    }
}

pub fn load(id: TaskId, _data: Option<&Path>) -> Result<Box<dyn Task>, TaskError> {
    Err(TaskError::Invalid {
        task: id,
        message: "not built yet".into(),
    })
}
