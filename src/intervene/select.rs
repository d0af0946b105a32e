//! Where to intervene: a causal sweep over candidate residual-stream layers, run on the
//! fit split before fitting. At each candidate layer the fit texts' mean difference
//! (harmless − harmful) is added at full strength, and the change in next-token loss is
//! measured on held-out fit texts of both kinds. A layer is worth fitting at when that
//! edit makes harmful text much less likely and harmless text hardly less likely: the
//! behaviour is carried there and can be moved there. Layers are ranked by that
//! selectivity (harmful shift − harmless shift, in nats per token).

use serde::{Deserialize, Serialize};

use super::fit::{mean_activations, mean_nll, Contrast, FitError};
use super::Intervention;
use crate::model::{HookPoint, Hooks, LoadedModel};
use crate::trace::activations::encode_all;

/// `select:` in a fit config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectConfig {
    /// First and last candidate layer (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<[usize; 2]>,
    /// The same as fractions of depth (0 the first layer, 1 the last), so that one fit
    /// config serves models of different depths: `[0.15, 0.8]` is layers 4–23 of 30 and
    /// 3–14 of 18. Give `layers` or `depth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<[f64; 2]>,
    #[serde(default = "one")]
    pub stride: usize,
    /// How many layers to keep.
    #[serde(default = "one")]
    pub top: usize,
    /// Texts of each kind held out of the means to measure the effect on.
    #[serde(default = "default_heldout")]
    pub heldout: usize,
}

impl SelectConfig {
    /// First and last candidate layer of a model with `n_layers` layers.
    pub fn candidate_layers(&self, n_layers: usize) -> Result<[usize; 2], FitError> {
        match (self.layers, self.depth) {
            (Some(l), None) => Ok(l),
            (None, Some([a, b])) if (0.0..=1.0).contains(&a) && (0.0..=1.0).contains(&b) => {
                let at = |f: f64| (f * (n_layers.saturating_sub(1)) as f64).round() as usize;
                Ok([at(a), at(b)])
            }
            (None, Some(d)) => Err(FitError::Invalid(format!(
                "select: depth {d:?} must be two fractions in [0, 1]"
            ))),
            _ => Err(FitError::Invalid(
                "select: give layers: [FIRST, LAST] or depth: [FROM, TO], one of them".into(),
            )),
        }
    }
}

fn one() -> usize {
    1
}

fn default_heldout() -> usize {
    40
}

/// One candidate site's measured effect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteEffect {
    pub site: String,
    /// Change in mean next-token NLL of held-out harmful texts (nats; up is good).
    pub harmful_nll_shift: f64,
    /// The same on held-out harmless texts (up is damage).
    pub harmless_nll_shift: f64,
    pub selectivity: f64,
}

/// The `top` most selective residual sites among the candidates, and every candidate's
/// effect in ranked order.
pub fn select_sites(
    model: &LoadedModel,
    c: &Contrast,
    cfg: &SelectConfig,
    max_tokens: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Vec<HookPoint>, Vec<SiteEffect>), FitError> {
    let n_layers = model.model.info().n_layers;
    let [lo, hi] = cfg.candidate_layers(n_layers)?;
    if lo > hi || hi >= n_layers || cfg.stride == 0 || cfg.top == 0 {
        return Err(FitError::Invalid(format!(
            "select: layers [{lo}, {hi}] must be ordered within 0..{n_layers}, stride and top positive"
        )));
    }
    let held = cfg.heldout;
    for (what, texts) in [("harmful", &c.harmful), ("harmless", &c.harmless)] {
        if held == 0 || texts.len() < held + 2 {
            return Err(FitError::Invalid(format!(
                "select: needs more than heldout + 1 = {} {what} texts (got {})",
                held + 1,
                texts.len()
            )));
        }
    }
    // The held-out texts are the last of each list; the fit split's order is the
    // dataset's, so this is a fixed, documented slice.
    let cut = |v: &[String]| (v[..v.len() - held].to_vec(), v[v.len() - held..].to_vec());
    let (harm_fit, harm_probe) = cut(&c.harmful);
    let (keep_fit, keep_probe) = cut(&c.harmless);
    let points: Vec<HookPoint> = (lo..=hi)
        .step_by(cfg.stride)
        .map(HookPoint::ResidPost)
        .collect();
    let bad = mean_activations(model, &harm_fit, &points, max_tokens, 8)?;
    let good = mean_activations(model, &keep_fit, &points, max_tokens, 8)?;
    let harm_ids = encode_all(model, &harm_probe, max_tokens)?;
    let keep_ids = encode_all(model, &keep_probe, max_tokens)?;
    let base = (
        mean_nll(model, &harm_ids, &Hooks::new())?,
        mean_nll(model, &keep_ids, &Hooks::new())?,
    );
    let mut effects = Vec::with_capacity(points.len());
    for p in &points {
        let iv = Intervention::Offset {
            alpha: 1.0,
            sites: vec![(*p, (&good[p] - &bad[p])?)],
        };
        let hooks = iv.hooks();
        let harm = mean_nll(model, &harm_ids, &hooks)? - base.0;
        let keep = mean_nll(model, &keep_ids, &hooks)? - base.1;
        if !(harm.is_finite() && keep.is_finite()) {
            return Err(FitError::Invalid(format!(
                "select: the mean-difference offset at {p} gave a non-finite loss \
                 (harmful shift {harm}, harmless shift {keep})"
            )));
        }
        progress(effects.len() + 1, points.len());
        effects.push((
            *p,
            SiteEffect {
                site: p.to_string(),
                harmful_nll_shift: harm,
                harmless_nll_shift: keep,
                selectivity: harm - keep,
            },
        ));
    }
    effects.sort_by(|a, b| b.1.selectivity.total_cmp(&a.1.selectivity));
    let chosen = effects.iter().take(cfg.top).map(|e| e.0).collect();
    Ok((chosen, effects.into_iter().map(|e| e.1).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(layers: Option<[usize; 2]>, depth: Option<[f64; 2]>) -> SelectConfig {
        SelectConfig {
            layers,
            depth,
            stride: 1,
            top: 1,
            heldout: 1,
        }
    }

    #[test]
    fn depth_fractions_name_the_same_relative_layers_at_any_depth() {
        let c = cfg(None, Some([0.15, 0.8]));
        assert_eq!(c.candidate_layers(30).unwrap(), [4, 23]);
        assert_eq!(c.candidate_layers(18).unwrap(), [3, 14]);
        assert_eq!(
            cfg(None, Some([0.0, 1.0])).candidate_layers(18).unwrap(),
            [0, 17]
        );
        assert_eq!(
            cfg(Some([4, 24]), None).candidate_layers(30).unwrap(),
            [4, 24]
        );
        assert!(cfg(None, None).candidate_layers(30).is_err());
        assert!(cfg(Some([1, 2]), Some([0.1, 0.2]))
            .candidate_layers(30)
            .is_err());
        assert!(cfg(None, Some([0.5, 1.5])).candidate_layers(30).is_err());
    }
}
