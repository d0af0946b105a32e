//! Interventions under test. Each one is a set of writers on hook points, so every task
//! runs unchanged on it, in log-likelihood scoring and in KV-cache generation alike
//! ([`Intervention::hooks`] goes into [`crate::tasks::RunContext::hooks`]).
//!
//! | kind | edit at each site, `h` the activation | parameters |
//! |---|---|---|
//! | `none` | — (the reference every gate compares against) | — |
//! | `ablate` | `0`, the fit split's mean `μ`, or `h − (h·û)û` | `μ` or `u` per site |
//! | `offset` | `h + α·v` (a steering vector) | `v` per site, `α` |
//! | `low_rank` | `h + Rᵀ(W h + b − R h)` (LoReFT, Wu et al. 2024) | `R`, `W` `[r, d]`, `b` `[r]` per site |
//! | `lora` | a weight matrix's output `+ s·B A x` (LoRA) on the MLP down or attention output projection | `A` `[r, in]`, `B` `[d, r]` per site |
//!
//! Fitting lives in [`fit`]; saving and loading with a manifest in [`artifact`].

pub mod artifact;
pub mod config;
pub mod edits;
pub mod fit;
pub mod select;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::model::{HookPoint, Hooks, Writer};

pub use edits::{LoraEdit, LowRankEdit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    None,
    Ablate,
    Offset,
    LowRank,
    Lora,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::None,
        Kind::Ablate,
        Kind::Offset,
        Kind::LowRank,
        Kind::Lora,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Ablate => "ablate",
            Kind::Offset => "offset",
            Kind::LowRank => "low_rank",
            Kind::Lora => "lora",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("unknown intervention kind '{s}' (none, ablate, offset, low_rank, lora)")
            })
    }
}

/// How an ablation replaces the activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AblateMode {
    Zero,
    /// The activation's mean over the fit split (per site, `[d]`).
    Mean,
    /// Remove the component along a direction (per site, `[d]`).
    Direction,
}

/// One intervention: what it does at which hook points, with its tensors.
#[derive(Debug, Clone)]
pub enum Intervention {
    None,
    Ablate {
        mode: AblateMode,
        /// Per site; `None` for zero ablation.
        sites: Vec<(HookPoint, Option<Tensor>)>,
    },
    Offset {
        alpha: f64,
        sites: Vec<(HookPoint, Tensor)>,
    },
    LowRank {
        sites: Vec<(HookPoint, LowRankEdit)>,
    },
    /// Sites are the projections' outputs: `hook_mlp_out` or `hook_attn_out`.
    Lora {
        sites: Vec<(HookPoint, LoraEdit)>,
    },
}

/// The input hook of the weight matrix whose output is `out` (see [`LoraEdit`]).
pub fn lora_input(out: HookPoint) -> Option<HookPoint> {
    match out {
        HookPoint::MlpOut(l) => Some(HookPoint::MlpPost(l)),
        HookPoint::AttnOut(l) => Some(HookPoint::AttnZ(l)),
        _ => None,
    }
}

impl Intervention {
    pub fn kind(&self) -> Kind {
        match self {
            Intervention::None => Kind::None,
            Intervention::Ablate { .. } => Kind::Ablate,
            Intervention::Offset { .. } => Kind::Offset,
            Intervention::LowRank { .. } => Kind::LowRank,
            Intervention::Lora { .. } => Kind::Lora,
        }
    }

    /// The hook points it writes to, in order.
    pub fn points(&self) -> Vec<HookPoint> {
        match self {
            Intervention::None => vec![],
            Intervention::Ablate { sites, .. } => sites.iter().map(|s| s.0).collect(),
            Intervention::Offset { sites, .. } => sites.iter().map(|s| s.0).collect(),
            Intervention::LowRank { sites } => sites.iter().map(|s| s.0).collect(),
            Intervention::Lora { sites } => sites.iter().map(|s| s.0).collect(),
        }
    }

    /// Writers at every position of every site.
    pub fn hooks(&self) -> Hooks {
        let mut h = Hooks::new();
        self.add_to(&mut h);
        h
    }

    /// Add the intervention's writers to `hooks` (after any already there).
    pub fn add_to(&self, hooks: &mut Hooks) {
        use crate::model::hooks::{AddTensor, ProjectOut, Replace, Scale};
        match self {
            Intervention::None => {}
            Intervention::Ablate { mode, sites } => {
                for (p, t) in sites {
                    let w = match (mode, t) {
                        (AblateMode::Zero, _) | (_, None) => Writer::new(*p, Scale(0.0)),
                        (AblateMode::Mean, Some(mu)) => Writer::new(*p, Replace(mu.clone())),
                        (AblateMode::Direction, Some(u)) => Writer::new(*p, ProjectOut(u.clone())),
                    };
                    hooks.push_writer(w);
                }
            }
            Intervention::Offset { alpha, sites } => {
                for (p, v) in sites {
                    // α folded in once here, not per forward pass.
                    let scaled = v.affine(*alpha, 0.0).unwrap_or_else(|_| v.clone());
                    hooks.push_writer(Writer::new(*p, AddTensor(scaled)));
                }
            }
            Intervention::LowRank { sites } => {
                for (p, e) in sites {
                    hooks.push_writer(Writer::new(*p, e.clone()));
                }
            }
            Intervention::Lora { sites } => {
                for (p, e) in sites {
                    // Sites are checked when built or loaded; others have no input hook.
                    if let Some(input) = lora_input(*p) {
                        let (keep, add) = e.writers(input, *p);
                        hooks.push_writer(keep);
                        hooks.push_writer(add);
                    }
                }
            }
        }
    }

    /// The same intervention with its tensors replaced by `new`'s, named as
    /// [`Intervention::tensors`] names them (every one must be there); how a tamper
    /// attack puts trainable copies in place.
    pub fn with_tensors(&self, new: &BTreeMap<String, Tensor>) -> Result<Intervention, String> {
        let get = |name: String| {
            new.get(&name)
                .cloned()
                .ok_or_else(|| format!("no tensor '{name}'"))
        };
        Ok(match self {
            Intervention::None => Intervention::None,
            Intervention::Ablate { mode, sites } => Intervention::Ablate {
                mode: *mode,
                sites: sites
                    .iter()
                    .map(|(p, t)| match t {
                        Some(_) => get(format!("{p}.vector")).map(|v| (*p, Some(v))),
                        None => Ok((*p, None)),
                    })
                    .collect::<Result<_, _>>()?,
            },
            Intervention::Offset { alpha, sites } => Intervention::Offset {
                alpha: *alpha,
                sites: sites
                    .iter()
                    .map(|(p, _)| get(format!("{p}.vector")).map(|v| (*p, v)))
                    .collect::<Result<_, _>>()?,
            },
            Intervention::LowRank { sites } => Intervention::LowRank {
                sites: sites
                    .iter()
                    .map(|(p, _)| {
                        Ok((
                            *p,
                            LowRankEdit {
                                r: get(format!("{p}.R"))?,
                                w: get(format!("{p}.W"))?,
                                b: get(format!("{p}.b"))?,
                            },
                        ))
                    })
                    .collect::<Result<_, String>>()?,
            },
            Intervention::Lora { sites } => Intervention::Lora {
                sites: sites
                    .iter()
                    .map(|(p, e)| {
                        Ok((
                            *p,
                            LoraEdit {
                                a: get(format!("{p}.A"))?,
                                b: get(format!("{p}.B"))?,
                                scale: e.scale,
                            },
                        ))
                    })
                    .collect::<Result<_, String>>()?,
            },
        })
    }

    /// Named tensors, as saved: `<site>.<name>`.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        let mut m = BTreeMap::new();
        match self {
            Intervention::None => {}
            Intervention::Ablate { sites, .. } => {
                for (p, t) in sites {
                    if let Some(t) = t {
                        m.insert(format!("{p}.vector"), t.clone());
                    }
                }
            }
            Intervention::Offset { sites, .. } => {
                for (p, v) in sites {
                    m.insert(format!("{p}.vector"), v.clone());
                }
            }
            Intervention::LowRank { sites } => {
                for (p, e) in sites {
                    m.insert(format!("{p}.R"), e.r.clone());
                    m.insert(format!("{p}.W"), e.w.clone());
                    m.insert(format!("{p}.b"), e.b.clone());
                }
            }
            Intervention::Lora { sites } => {
                for (p, e) in sites {
                    m.insert(format!("{p}.A"), e.a.clone());
                    m.insert(format!("{p}.B"), e.b.clone());
                }
            }
        }
        m
    }
}
