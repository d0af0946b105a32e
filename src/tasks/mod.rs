//! Evaluation tasks. A task turns dataset rows into requests (log-likelihoods,
//! generations, rolling perplexities), runs them through [`RunContext`]'s model, and
//! returns per-item scores and aggregate metrics in a [`TaskReport`]. Task ids are
//! lm-evaluation-harness's where one exists, so results line up with its tables.
//!
//! One module per family: [`super_glue`], [`bias`], [`rtp`] (RealToxicityPrompts),
//! [`bold`], [`fluency`] (perplexity, LAMBADA). [`choice`] is the multiple-choice
//! machinery they share, [`sampling`] the sampled-and-scored continuations of the
//! toxicity tasks; [`report`] the output types.

pub mod bias;
pub mod bold;
pub mod choice;
pub mod fluency;
pub mod report;
pub mod rtp;
pub mod sampling;
pub mod super_glue;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::data::split::{split_of, Split, DEFAULT_FIT_FRACTION};
use crate::data::DataError;
use crate::model::{Hooks, LoadedModel};
use crate::toxicity::ToxicityScorer;

pub use choice::{ChoiceItem, ChoiceResult};
pub use report::{item_metrics, ItemScore, TaskReport};
pub use sampling::Protocol;

macro_rules! task_ids {
    ($($variant:ident => $name:literal, $family:ident;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum TaskId { $($variant),* }

        impl TaskId {
            pub const ALL: &'static [TaskId] = &[$(TaskId::$variant),*];

            pub fn name(self) -> &'static str {
                match self { $(TaskId::$variant => $name),* }
            }

            pub fn family(self) -> Family {
                match self { $(TaskId::$variant => Family::$family),* }
            }
        }
    };
}

task_ids! {
    Boolq => "boolq", SuperGlue;
    Cb => "cb", SuperGlue;
    Copa => "copa", SuperGlue;
    Rte => "rte", SuperGlue;
    Wic => "wic", SuperGlue;
    Wsc => "wsc", SuperGlue;
    Multirc => "multirc", SuperGlue;
    Record => "record", SuperGlue;
    CrowsPairsEnglish => "crows_pairs_english", Bias;
    StereosetIntrasentence => "stereoset_intrasentence", Bias;
    Bbq => "bbq", Bias;
    Winobias => "winobias", Bias;
    Realtoxicityprompts => "realtoxicityprompts", Toxicity;
    Bold => "bold", Toxicity;
    LambadaOpenai => "lambada_openai", Fluency;
    PerplexityLambada => "perplexity_lambada", Fluency;
    PerplexityWiki => "perplexity_wiki", Fluency;
    PerplexityBbq => "perplexity_bbq", Fluency;
}

impl TaskId {
    /// The groups a task's items are about, where gates can be taken per group
    /// ([`report::ItemScore::group`]).
    pub fn groups(self) -> Option<&'static [&'static str]> {
        match self {
            TaskId::Bbq | TaskId::PerplexityBbq => Some(&bias::bbq::CATEGORIES),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    SuperGlue,
    Bias,
    Toxicity,
    Fluency,
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown task '{name}' (known: {known})")]
pub struct UnknownTask {
    pub name: String,
    pub known: String,
}

impl FromStr for TaskId {
    type Err = UnknownTask;
    fn from_str(s: &str) -> Result<Self, UnknownTask> {
        TaskId::ALL
            .iter()
            .copied()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownTask {
                name: s.to_string(),
                known: TaskId::ALL
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Which items of a task to keep, by the hash of each item's key (see
/// [`crate::data::split`]): tracing and breaker fitting see `Fit`, gates score `Eval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitSel {
    /// Every item (what lm-evaluation-harness scores; the default of `scalpel eval`).
    #[default]
    All,
    Fit,
    Eval,
}

impl FromStr for SplitSel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(SplitSel::All),
            "fit" => Ok(SplitSel::Fit),
            "eval" => Ok(SplitSel::Eval),
            other => Err(format!("unknown split '{other}' (all, fit, eval)")),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Read the task's rows from this file (or dataset directory) instead of its
    /// default source.
    pub data: Option<PathBuf>,
    pub split: SplitSel,
    /// Keep the first N items (after the split) in the dataset's own order.
    pub limit: Option<usize>,
    /// Changes to a generation task's sampling protocol (an error for other tasks).
    pub generation: GenerationOptions,
}

/// Overrides of a generation task's [`Protocol`]; unset fields keep the task's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationOptions {
    pub samples: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub top_p: Option<f64>,
    pub temperature: Option<f64>,
}

impl GenerationOptions {
    pub fn is_empty(&self) -> bool {
        *self == GenerationOptions::default()
    }
}

/// What a task needs to run: the model and the intervention's hooks, how wide to batch,
/// where progress goes, and for generation tasks a toxicity scorer and a seed.
pub struct RunContext<'a> {
    pub model: &'a LoadedModel,
    pub batch_size: usize,
    /// `(done, total)` in the task's own units of work.
    pub progress: &'a mut dyn FnMut(usize, usize),
    pub scorer: Option<&'a dyn ToxicityScorer>,
    pub seed: u64,
    /// Writers of the intervention under test, applied to every forward pass the task
    /// makes (log-likelihoods and generation alike); empty for the unmodified model.
    pub hooks: Hooks,
    /// An attack's soft prompt in front of every prompt a generation task continues: its
    /// placeholder tokens are inserted into the prompt's ids (its writer is in `hooks`).
    pub prefix: Option<crate::attack::SoftPrefix>,
}

impl<'a> RunContext<'a> {
    pub fn new(model: &'a LoadedModel, progress: &'a mut dyn FnMut(usize, usize)) -> Self {
        RunContext {
            model,
            batch_size: 8,
            progress,
            scorer: None,
            seed: 0,
            hooks: Hooks::new(),
            prefix: None,
        }
    }
}

/// One evaluation task, ready to run.
pub trait Task: TaskClone + Send + Sync {
    fn id(&self) -> TaskId;
    /// The data file the items came from.
    fn source(&self) -> &Path;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A stable identity of item `i` drawn from its content, so that the fit/eval split
    /// does not move when a dataset is reordered and duplicates land on the same side.
    fn item_key(&self, i: usize) -> String;
    /// Keep only the items at positions `keep` (ascending).
    fn retain(&mut self, keep: &[usize]);
    /// The text item `i` shows the model, for tasks whose items are plain text (prompts,
    /// passages): what fitting reads activations from. `None` for structured items.
    fn item_text(&self, _i: usize) -> Option<String> {
        None
    }
    /// The sampling protocol of a generation task; `None` for scoring tasks.
    fn protocol(&self) -> Option<&Protocol> {
        None
    }
    /// Replace a generation task's protocol; `false` (and no change) for other tasks.
    fn set_protocol(&mut self, _p: Protocol) -> bool {
        false
    }
    fn run(&self, cx: &mut RunContext<'_>) -> Result<TaskReport, TaskError>;
}

/// A copy of a boxed task, so a runner can split it into parts (see
/// [`crate::harness`]'s resumable runs) without reloading its data.
pub trait TaskClone {
    fn clone_box(&self) -> Box<dyn Task>;
}

impl<T: Task + Clone + 'static> TaskClone for T {
    fn clone_box(&self) -> Box<dyn Task> {
        Box::new(self.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Unknown(#[from] UnknownTask),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Toxicity(#[from] crate::toxicity::ToxicityError),
    #[error("{task}: no items to evaluate ({why})")]
    NoItems { task: TaskId, why: String },
    #[error("{task}: {message}")]
    Invalid { task: TaskId, message: String },
}

impl TaskError {
    /// A numeric failure of the model or the scorer on the items run (NaN or infinite
    /// logits or scores), as opposed to bad input: it fails the case it happened in and
    /// the run goes on with the others.
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            TaskError::Model(crate::model::ModelError::NonFinite { .. })
                | TaskError::Toxicity(crate::toxicity::ToxicityError::NaN { .. })
        )
    }
}

/// Load task `id` with its default data (fetched offline on first use) or `opts.data`,
/// then apply the split and the limit.
pub fn load(id: TaskId, opts: &LoadOptions) -> Result<Box<dyn Task>, TaskError> {
    if opts.limit == Some(0) {
        return Err(TaskError::NoItems {
            task: id,
            why: "--limit 0".into(),
        });
    }
    let data = opts.data.as_deref();
    let mut task: Box<dyn Task> = match id.family() {
        Family::SuperGlue => super_glue::load(id, data)?,
        Family::Bias => bias::load(id, data)?,
        Family::Toxicity if id == TaskId::Bold => bold::load(data)?,
        Family::Toxicity => rtp::load(id, data)?,
        Family::Fluency => fluency::load(id, data)?,
    };
    if !opts.generation.is_empty() {
        let g = &opts.generation;
        let p = task
            .protocol()
            .ok_or_else(|| TaskError::Invalid {
                task: id,
                message: "sampling options (samples, max_new_tokens, top_p, temperature) \
                          apply only to generation tasks (realtoxicityprompts, bold)"
                    .into(),
            })?
            .clone()
            .with(g.samples, g.max_new_tokens, g.top_p, g.temperature);
        p.check(id)?;
        task.set_protocol(p);
    }
    select(task.as_mut(), opts.split, opts.limit);
    if task.is_empty() {
        return Err(TaskError::NoItems {
            task: id,
            why: format!(
                "the {:?} split of {} is empty",
                opts.split,
                task.source().display()
            ),
        });
    }
    Ok(task)
}

/// What tracing and breaker fitting may see: task `id`'s *fit* split, whatever
/// `opts.split` asks for. Fixtures take task data only through here, so no item a gate
/// scores (the eval split) can shape an intervention.
pub fn load_fit(id: TaskId, opts: &LoadOptions) -> Result<Box<dyn Task>, TaskError> {
    load(
        id,
        &LoadOptions {
            split: SplitSel::Fit,
            ..opts.clone()
        },
    )
}

/// Positions of the items in `split`, then the first `limit` of them.
pub fn select(task: &mut dyn Task, split: SplitSel, limit: Option<usize>) {
    let want = match split {
        SplitSel::All => None,
        SplitSel::Fit => Some(Split::Fit),
        SplitSel::Eval => Some(Split::Eval),
    };
    let name = task.id().name();
    let mut keep: Vec<usize> = (0..task.len())
        .filter(|&i| {
            want.is_none_or(|w| split_of(name, &task.item_key(i), DEFAULT_FIT_FRACTION) == w)
        })
        .collect();
    if let Some(l) = limit {
        keep.truncate(l);
    }
    if keep.len() != task.len() {
        task.retain(&keep);
    }
}

/// Keep `items[keep]` in order (the shared body of [`Task::retain`]).
pub(crate) fn retain_positions<T>(items: &mut Vec<T>, keep: &[usize]) {
    let mut i = 0;
    let mut k = keep.iter().peekable();
    items.retain(|_| {
        let hit = k.peek() == Some(&&i);
        if hit {
            k.next();
        }
        i += 1;
        hit
    });
}
