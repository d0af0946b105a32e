//! Attacks on an intervention, as fixtures: a breaker only passes sign-off if it holds
//! up against an attacker who knows it.
//!
//! - [`embedding`]: a soft prompt optimised in embedding space against the model under
//!   test, intervention included.

pub mod embedding;

pub use embedding::{
    fit_embedding_attack, target_nll, AttackError, AttackFit, EmbeddingAttackConfig, SoftPrefix,
    Target,
};
