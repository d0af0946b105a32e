//! Attacks on an intervention, as fixtures: a breaker only passes sign-off if it holds
//! up against an attacker who knows it.
//!
//! - [`embedding`]: a soft prompt optimised in embedding space against the model under
//!   test, intervention included.

pub mod embedding;

pub use embedding::{
    defence_key, fit_embedding_attack, load_cached, save_cached, target_nll, AttackError,
    AttackFit, EmbeddingAttackConfig, SoftPrefix, Target, ATTACK_REVISION,
};
