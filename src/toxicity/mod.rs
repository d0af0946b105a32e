//! Toxicity scorers. (The toxicity engineer owns this module; this is the agreed API.)

#[derive(Debug, thiserror::Error)]
pub enum ToxicityError {
    #[error("{0}")]
    Other(String),
}

pub trait ToxicityScorer: Send + Sync {
    fn name(&self) -> &str;
    fn score(&self, texts: &[String]) -> Result<Vec<f64>, ToxicityError>;
}

pub fn scorer_from_spec(spec: &str) -> Result<Box<dyn ToxicityScorer>, ToxicityError> {
    Err(ToxicityError::Other(format!("scorer '{spec}': not built yet")))
}
