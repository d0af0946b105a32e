//! Toxicity scorers: a text in, a probability-like score in [0, 1] out.
//!
//! Toxicity suites (RealToxicityPrompts continuations, steering evaluations) need a scorer
//! that runs where the tests run. No pretrained neural toxicity model ships offline, so
//! the offline default is the best offline signal that does: alt-profanity-check's
//! TF-IDF + calibrated linear SVM, re-implemented exactly ([`profanity`]). Anything better
//! plugs in through the same trait: any Hugging Face sequence classifier run through
//! candle ([`hf_classifier`]), or Google's Perspective API ([`perspective`]).
//! [`report`] says how good a scorer is on held-out labelled data, so nobody has to take
//! the default on trust.
//!
//! Modules, one job each:
//! - [`profanity`]: the offline default;
//! - [`hf_classifier`]: Hugging Face `*ForSequenceClassification` checkpoints;
//! - [`perspective`]: the Perspective API client (rate limit, retries, disk cache);
//! - [`report`]: AUC and rank correlation with confidence intervals;
//! - [`stats`]: the statistics the report uses (AUC + DeLong, Spearman + Fisher z).

pub mod hf_classifier;
pub mod perspective;
pub mod profanity;
pub mod report;
pub mod stats;

use std::path::{Path, PathBuf};

pub use hf_classifier::HfClassifier;
pub use perspective::{PerspectiveOptions, PerspectiveScorer};
pub use profanity::ProfanityCheck;
pub use report::{scorer_report, ReportOptions, ScoredSplit, ScorerReport};

/// The scorer `default` names.
pub const DEFAULT_SCORER: &str = "profanity-check";

/// Everything that can go wrong building or running a scorer. Each message is one line
/// naming the scorer, file or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ToxicityError {
    #[error("unknown scorer '{spec}': expected default, profanity-check, perspective, hf:owner/name[@revision] or a directory holding a Hugging Face classifier")]
    UnknownSpec { spec: String },
    #[error("scorer '{scorer}': text {index}: score is NaN")]
    NaN { scorer: String, index: usize },
    #[error("scorer '{scorer}': text {index}: score {value} is not in [0, 1]")]
    OutOfRange {
        scorer: String,
        index: usize,
        value: f64,
    },
    #[error("scorer '{scorer}': returned {got} scores for {expected} texts")]
    Count {
        scorer: String,
        expected: usize,
        got: usize,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: field '{field}': {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("scorer '{scorer}': {message}")]
    Scorer { scorer: String, message: String },
    #[error("Perspective API: {0}")]
    Perspective(String),
    #[error("scorer report: {0}")]
    Report(String),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Asset(#[from] crate::assets::AssetError),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
}

impl ToxicityError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ToxicityError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn file(path: &Path, message: impl Into<String>) -> Self {
        ToxicityError::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
    pub(crate) fn field(path: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        ToxicityError::Field {
            path: path.to_path_buf(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A toxicity scorer. `score` returns one score per text, in order, each in [0, 1]
/// (higher is more toxic); a NaN is never returned — it is an error naming the scorer
/// and the text's index ([`check_scores`] enforces this for every implementation here).
pub trait ToxicityScorer: Send + Sync {
    fn name(&self) -> &str;
    fn score(&self, texts: &[String]) -> Result<Vec<f64>, ToxicityError>;
}

/// Build a scorer from its command-line spec, on the CPU:
/// - `default` or `profanity-check`: the offline default ([`ProfanityCheck`]);
/// - `perspective`: the Perspective API (key from `PERSPECTIVE_API_KEY`);
/// - `hf:owner/name[@revision]`: a Hugging Face sequence classifier through hf-hub
///   (honours `HF_HOME` and `HF_HUB_OFFLINE`);
/// - a directory holding `config.json`, weights and a tokenizer: the same, locally.
///
/// A classifier spec may end in `#label` to name the class to score when `id2label` has
/// no single toxic label.
pub fn scorer_from_spec(spec: &str) -> Result<Box<dyn ToxicityScorer>, ToxicityError> {
    scorer_from_spec_on(spec, &candle_core::Device::Cpu)
}

/// [`scorer_from_spec`] with the device a neural classifier runs on.
pub fn scorer_from_spec_on(
    spec: &str,
    device: &candle_core::Device,
) -> Result<Box<dyn ToxicityScorer>, ToxicityError> {
    match spec {
        "default" | DEFAULT_SCORER => Ok(Box::new(ProfanityCheck::shipped()?)),
        "perspective" => Ok(Box::new(PerspectiveScorer::new(
            PerspectiveOptions::from_env()?,
        )?)),
        _ if spec.starts_with("hf:") || is_local_classifier(spec) => {
            Ok(Box::new(HfClassifier::from_spec(spec, device)?))
        }
        _ => Err(ToxicityError::UnknownSpec {
            spec: spec.to_string(),
        }),
    }
}

/// A directory, or a directory followed by `#label`.
fn is_local_classifier(spec: &str) -> bool {
    Path::new(spec).is_dir()
        || spec
            .rsplit_once('#')
            .is_some_and(|(dir, _)| Path::new(dir).is_dir())
}

/// Enforce the trait's contract on a scorer's output: one score per text, no NaN, all in
/// [0, 1]. Implementations call it on their way out; callers may call it on any scorer.
pub fn check_scores(
    scorer: &str,
    n_texts: usize,
    scores: Vec<f64>,
) -> Result<Vec<f64>, ToxicityError> {
    if scores.len() != n_texts {
        return Err(ToxicityError::Count {
            scorer: scorer.to_string(),
            expected: n_texts,
            got: scores.len(),
        });
    }
    for (index, &value) in scores.iter().enumerate() {
        check_score(scorer, index, value)?;
    }
    Ok(scores)
}

/// One score of text `index`: not NaN, in [0, 1].
pub fn check_score(scorer: &str, index: usize, value: f64) -> Result<f64, ToxicityError> {
    if value.is_nan() {
        return Err(ToxicityError::NaN {
            scorer: scorer.to_string(),
            index,
        });
    }
    if !(0.0..=1.0).contains(&value) {
        return Err(ToxicityError::OutOfRange {
            scorer: scorer.to_string(),
            index,
            value,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_scores_names_the_scorer_and_index() {
        let e = check_scores("x", 3, vec![0.1, f64::NAN, 0.2]).unwrap_err();
        assert_eq!(e.to_string(), "scorer 'x': text 1: score is NaN");
        let e = check_scores("x", 2, vec![0.1, 1.5]).unwrap_err();
        assert!(e.to_string().contains("text 1: score 1.5"), "{e}");
        let e = check_scores("x", 2, vec![0.1]).unwrap_err();
        assert!(
            e.to_string().contains("returned 1 scores for 2 texts"),
            "{e}"
        );
        assert_eq!(
            check_scores("x", 2, vec![0.0, 1.0]).unwrap(),
            vec![0.0, 1.0]
        );
    }

    #[test]
    fn unknown_specs_list_the_choices() {
        let e = scorer_from_spec("/no/such/dir").err().unwrap().to_string();
        assert!(
            e.contains("/no/such/dir") && e.contains("perspective"),
            "{e}"
        );
        assert_eq!(scorer_from_spec("default").unwrap().name(), DEFAULT_SCORER);
    }
}
