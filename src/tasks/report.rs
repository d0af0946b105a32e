//! What a task run returns: aggregate metrics and one score record per item. Items keep
//! their dataset index so that statistics can pair them across models and
//! interventions; each family has its own item shape, serialised without a tag so the
//! JSON of a choice task is exactly `{"idx", "pred", "label", "loglikelihoods"}`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::bias::{bbq, crows, stereoset, winobias};
use super::bias::{BbqItem, CrowsItem, StereosetItem, WinobiasItem};
use super::bold::{self, BoldItem};
use super::choice::ChoiceResult;
use super::fluency::{self, LambadaItem, RollingItem};
use super::rtp::{self, RtpItem};
use super::sampling::TOXIC;
use super::super_glue::{self, record, RecordItem};
use super::TaskId;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskReport {
    pub task: String,
    pub model: String,
    pub n: usize,
    pub metrics: BTreeMap<String, f64>,
    pub items: Vec<ItemScore>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum ItemScore {
    Choice(ChoiceResult),
    Record(RecordItem),
    Crows(CrowsItem),
    Stereoset(StereosetItem),
    Bbq(BbqItem),
    Winobias(WinobiasItem),
    Rtp(RtpItem),
    Bold(BoldItem),
    Lambada(LambadaItem),
    Rolling(RollingItem),
}

/// The per-item metrics [`ItemScore::values`] gives for a task's items: what a gate may
/// compare item by item.
pub fn item_metrics(id: TaskId) -> &'static [&'static str] {
    use TaskId as T;
    match id {
        T::Record => &["f1", "em"],
        T::CrowsPairsEnglish => &["pct_stereotype", "likelihood_diff"],
        T::StereosetIntrasentence => &["ss", "lms"],
        T::Bbq => &["acc"],
        T::Winobias => &["acc_pro", "acc_anti", "gap", "pct_stereotype"],
        T::Realtoxicityprompts | T::Bold => &["max_toxicity", "toxic", "mean_toxicity"],
        T::LambadaOpenai => &["acc", "loglikelihood"],
        T::PerplexityLambada | T::PerplexityWiki | T::PerplexityBbq => {
            &["loglikelihood", "nll_per_token"]
        }
        T::Boolq | T::Cb | T::Copa | T::Rte | T::Wic | T::Wsc | T::Multirc => &["acc"],
    }
}

impl ItemScore {
    pub fn idx(&self) -> usize {
        match self {
            ItemScore::Choice(x) => x.idx,
            ItemScore::Record(x) => x.idx,
            ItemScore::Crows(x) => x.idx,
            ItemScore::Stereoset(x) => x.idx,
            ItemScore::Bbq(x) => x.idx,
            ItemScore::Winobias(x) => x.idx,
            ItemScore::Rtp(x) => x.idx,
            ItemScore::Bold(x) => x.idx,
            ItemScore::Lambada(x) => x.idx,
            ItemScore::Rolling(x) => x.idx,
        }
    }

    /// The group (e.g. BBQ category) the item is about, for tasks that have groups.
    pub fn group(&self) -> Option<&str> {
        match self {
            ItemScore::Rolling(x) => x.group.as_deref(),
            ItemScore::Bbq(x) => Some(x.category.as_str()),
            _ => None,
        }
    }

    /// The item's contribution to each per-item metric (e.g. `acc` 0/1, `max_toxicity`),
    /// the values paired tests compare across runs.
    pub fn values(&self) -> BTreeMap<&'static str, f64> {
        let b = |c: bool| if c { 1.0 } else { 0.0 };
        let mut m = BTreeMap::new();
        match self {
            ItemScore::Choice(x) => {
                m.insert("acc", b(x.correct()));
            }
            ItemScore::Record(x) => {
                m.insert("f1", x.f1);
                m.insert("em", x.em);
            }
            ItemScore::Crows(x) => {
                m.insert("pct_stereotype", b(x.stereotype_preferred));
                m.insert("likelihood_diff", x.likelihood_diff);
            }
            ItemScore::Stereoset(x) => {
                m.insert("ss", b(x.stereotype_preferred()));
                m.insert("lms", x.meaningful_share());
            }
            ItemScore::Bbq(x) => {
                m.insert("acc", b(x.correct()));
            }
            ItemScore::Winobias(x) => {
                m.insert("acc_pro", b(x.correct_pro()));
                m.insert("acc_anti", b(x.correct_anti()));
                m.insert("gap", b(x.correct_pro()) - b(x.correct_anti()));
                m.insert("pct_stereotype", b(x.stereotype_preferred));
            }
            ItemScore::Rtp(x) => {
                m.insert("max_toxicity", x.max_toxicity);
                m.insert("toxic", b(x.max_toxicity >= TOXIC));
                m.insert("mean_toxicity", x.mean_toxicity);
            }
            ItemScore::Bold(x) => {
                m.insert("max_toxicity", x.max_toxicity);
                m.insert("toxic", b(x.max_toxicity >= TOXIC));
                m.insert("mean_toxicity", x.mean_toxicity);
            }
            ItemScore::Lambada(x) => {
                m.insert("acc", b(x.is_greedy));
                m.insert("loglikelihood", x.loglikelihood);
            }
            ItemScore::Rolling(x) => {
                m.insert("loglikelihood", x.loglikelihood);
                // Per-token NLL: a difference of ln(1.05) in it is a 5% perplexity rise.
                m.insert("nll_per_token", -x.loglikelihood / x.n_tokens.max(1) as f64);
            }
        }
        m
    }
}

impl TaskReport {
    /// A report over `items`, its metrics computed the way the task's own run computes
    /// them: how results run in parts (and resumed) become one report.
    pub fn from_items(task: TaskId, model: &str, items: Vec<ItemScore>) -> Self {
        TaskReport {
            task: task.to_string(),
            model: model.to_string(),
            n: items.len(),
            metrics: aggregate(task, &items),
            items,
        }
    }
}

/// Task `task`'s aggregate metrics over `items` (items of another family are skipped,
/// which no run produces).
pub fn aggregate(task: TaskId, items: &[ItemScore]) -> BTreeMap<String, f64> {
    macro_rules! of {
        ($variant:ident) => {
            items
                .iter()
                .filter_map(|i| match i {
                    ItemScore::$variant(x) => Some(x.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
    }
    use TaskId as T;
    match task {
        T::Boolq | T::Cb | T::Copa | T::Rte | T::Wic | T::Wsc | T::Multirc => {
            super_glue::metrics(task, &of!(Choice))
        }
        T::Record => record::metrics(&of!(Record)),
        T::CrowsPairsEnglish => crows::metrics(&of!(Crows)),
        T::StereosetIntrasentence => stereoset::metrics(&of!(Stereoset)),
        T::Bbq => bbq::metrics(&of!(Bbq)),
        T::Winobias => winobias::metrics(&of!(Winobias)),
        T::Realtoxicityprompts => rtp::metrics(&of!(Rtp)),
        T::Bold => bold::metrics(&of!(Bold)),
        T::LambadaOpenai => fluency::lambada_metrics(&of!(Lambada)),
        T::PerplexityLambada | T::PerplexityWiki | T::PerplexityBbq => {
            fluency::rolling_metrics(&of!(Rolling))
        }
    }
}

impl ItemScore {
    /// Read back an item of task `task` from its JSON (items are written untagged, so the
    /// task says which shape to expect).
    pub fn from_value(task: TaskId, v: Value) -> Result<ItemScore, serde_json::Error> {
        use TaskId as T;
        Ok(match task {
            T::Boolq | T::Cb | T::Copa | T::Rte | T::Wic | T::Wsc | T::Multirc => {
                ItemScore::Choice(serde_json::from_value(v)?)
            }
            T::Record => ItemScore::Record(serde_json::from_value(v)?),
            T::CrowsPairsEnglish => ItemScore::Crows(serde_json::from_value(v)?),
            T::StereosetIntrasentence => ItemScore::Stereoset(serde_json::from_value(v)?),
            T::Bbq => ItemScore::Bbq(serde_json::from_value(v)?),
            T::Winobias => ItemScore::Winobias(serde_json::from_value(v)?),
            T::Realtoxicityprompts => ItemScore::Rtp(serde_json::from_value(v)?),
            T::Bold => ItemScore::Bold(serde_json::from_value(v)?),
            T::LambadaOpenai => ItemScore::Lambada(serde_json::from_value(v)?),
            T::PerplexityLambada | T::PerplexityWiki | T::PerplexityBbq => {
                ItemScore::Rolling(serde_json::from_value(v)?)
            }
        })
    }
}
