//! Attacks on an intervention, as fixtures: a breaker only passes sign-off if it holds
//! up against an attacker who knows it. Each is fitted against the model under the
//! intervention under test (adaptive), on harmful texts of a task's fit split.
//!
//! - [`embedding`]: a soft prompt optimised in embedding space;
//! - [`gcg`]: a token prompt found by greedy coordinate gradient search;
//! - [`tamper`]: a few steps of fine-tuning, of the model or of the intervention.

pub mod cache;
pub mod embedding;
pub mod gcg;
pub mod tamper;
pub mod targets;

use candle_core::DType;

use crate::intervene::Intervention;
use crate::model::ModelError;

pub use embedding::{
    fit_embedding_attack, target_nll, AttackFit, EmbeddingAttackConfig, SoftPrefix, PLACEHOLDER,
};
pub use gcg::{fit_gcg, token_prefix, GcgConfig, GcgFit};
pub use tamper::{
    fit_tamper, fit_tamper_budgets, tampered_hooks, TamperConfig, TamperFit, TamperParams,
};
pub use targets::{Encoded, Target};

#[derive(Debug, thiserror::Error)]
pub enum AttackError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tensor computation: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("attack: {0}")]
    Invalid(String),
}

/// An attack's kind and hyperparameters, as a suite declares it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttackConfig {
    Embedding(EmbeddingAttackConfig),
    Gcg(GcgConfig),
    Tamper(TamperConfig),
}

impl AttackConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            AttackConfig::Embedding(_) => "embedding",
            AttackConfig::Gcg(_) => "gcg",
            AttackConfig::Tamper(_) => "tamper",
        }
    }
}

impl AttackConfig {
    /// Bumped when fitting code changes what a fit of this kind produces from the same
    /// inputs; part of the cache key, per kind so that fixing one attacker refits only
    /// its own fits. Embedding 3: the best full-target checkpoint is kept.
    pub fn revision(&self) -> u32 {
        match self {
            AttackConfig::Embedding(_) => 3,
            AttackConfig::Gcg(_) | AttackConfig::Tamper(_) => 2,
        }
    }
}

/// A stable identity of an intervention's effect (its kind, strength and tensors), for
/// keying attacks fitted against it.
pub fn defence_key(iv: &Intervention) -> Result<String, AttackError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!("{:?}", iv.kind()).as_bytes());
    if let Intervention::Offset { alpha, .. } = iv {
        h.update(alpha.to_le_bytes());
    }
    for (name, t) in iv.tensors() {
        h.update(name.as_bytes());
        let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        for x in v {
            h.update(x.to_le_bytes());
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
