//! Deterministic fit/eval split by hashing an item's key. (The data engineer owns this
//! file; this is the agreed API.)

use sha2::{Digest, Sha256};

pub const DEFAULT_FIT_FRACTION: f64 = 0.3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    Fit,
    Eval,
}

pub fn split_of(task: &str, item_key: &str, fit_fraction: f64) -> Split {
    let mut h = Sha256::new();
    h.update(task.as_bytes());
    h.update([0u8]);
    h.update(item_key.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    let u = u64::from_be_bytes(b) as f64 / 2f64.powi(64);
    if u < fit_fraction {
        Split::Fit
    } else {
        Split::Eval
    }
}
