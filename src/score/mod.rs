//! Scoring: what tasks ask of a model (log-likelihoods now; perplexity and toxicity later).
pub mod loglik;
