//! Running a suite: which trials the filters select, the expensive work they share (one
//! model load, one fit per intervention, one task run per intervention × task), and a
//! verdict per trial with Holm's correction across every selected trial.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::parts::{run_case, PartCounts};
use super::suite::{GateSpec, Source, Suite};
use crate::intervene::artifact::{self, Manifest};
use crate::intervene::config::{self as fitconfig, ConfigError, FitConfig};
use crate::intervene::Intervention;
use crate::model::prefix_memo::PrefixMemo;
use crate::model::LoadedModel;
use crate::stats::gate::{test_all, Outcome, Verdict};
use crate::stats::paired::Paired;
use crate::stats::StatsError;
use crate::store::RunDir;
use crate::tasks::{
    self, GenerationOptions, LoadOptions, RunContext, TaskError, TaskId, TaskReport,
};

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("intervention '{name}': {source}")]
    Fit {
        name: String,
        source: Box<ConfigError>,
    },
    #[error("intervention '{name}': {source}")]
    Artifact {
        name: String,
        source: Box<artifact::ArtifactError>,
    },
    #[error("{intervention}::{task}: {source}")]
    Task {
        intervention: String,
        task: TaskId,
        source: Box<TaskError>,
    },
    /// One case (an intervention on a task) could not be scored: its numbers blew up on
    /// an item. The run's other cases go on; the trials that read this case fail.
    #[error("intervention '{intervention}', task {task}, {item}: {message}")]
    Case {
        intervention: String,
        task: TaskId,
        item: String,
        message: String,
    },
    #[error("{}", named_model(model, source))]
    Model {
        model: String,
        source: Box<crate::model::ModelError>,
    },
    #[error("{case}: attack: {message}")]
    Attack { case: String, message: String },
    #[error("merge: {message}")]
    Merge { message: String },
    #[error("{task}: scorer: {message}")]
    Scorer { task: TaskId, message: String },
    #[error("report: {message}")]
    Report { message: String },
    #[error("traces[{index}]: {message}")]
    Trace { index: usize, message: String },
    #[error("{what}: {source}")]
    Store {
        what: String,
        source: Box<crate::store::StoreError>,
    },
}

/// `model 'M': ERROR`, unless the error already names the model that way.
fn named_model(model: &str, e: &crate::model::ModelError) -> String {
    let text = e.to_string();
    if text.starts_with(&format!("model '{model}'")) {
        text
    } else {
        format!("model '{model}': {text}")
    }
}

/// Which trials run: libtest's rules (a substring of the name, or the whole name with
/// `exact`; `skip` patterns likewise), so `--list` and a filtered run agree.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub filter: Option<String>,
    pub exact: bool,
    pub skip: Vec<String>,
    /// Score only this shard's share of every task's items ([`super::shard`]); the
    /// verdicts wait for `scalpel merge`.
    pub shard: Option<super::shard::Shard>,
    /// How many tasks run side by side ([`super::lanes`]); `None`: one per core.
    pub lanes: Option<usize>,
}

impl Selection {
    pub fn admits(&self, name: &str) -> bool {
        let hit = |p: &str| {
            if self.exact {
                name == p
            } else {
                name.contains(p)
            }
        };
        self.filter.as_deref().is_none_or(hit) && !self.skip.iter().any(|p| hit(p))
    }
}

/// One trial's result: its verdict, or why the statistics could not be computed (e.g. a
/// non-finite score).
#[derive(Debug, Clone)]
pub struct TrialResult {
    pub name: String,
    pub gate: usize,
    pub intervention: String,
    pub task: TaskId,
    pub metric: String,
    pub outcome: Result<Verdict, String>,
    /// Why the verdict is [`Outcome::Inconclusive`](crate::stats::gate::Outcome): the
    /// condition the gate was tested under did not hold.
    pub caveat: Option<String>,
}

/// What a run computed, with timings.
#[derive(Debug)]
pub struct RunOutput {
    pub trials: Vec<TrialResult>,
    pub reports: BTreeMap<(String, TaskId), TaskReport>,
    /// Seconds per stage: `fit NAME` and `NAME::task`.
    pub seconds: BTreeMap<String, f64>,
    /// The manifests of the fitted or loaded interventions (none for `none`).
    pub manifests: BTreeMap<String, Manifest>,
    /// Parts of cases computed in this process and read back from the store's journals.
    pub parts: PartCounts,
    /// The cases that could not be scored ([`HarnessError::Case`]), with the error: the
    /// trials reading them fail with it, and the report lists them.
    pub failed: BTreeMap<(String, TaskId), String>,
    /// Each attacked case's attack fit (kind, targets' NLL before and after, seconds,
    /// a token attack's text), as JSON.
    pub attacks: BTreeMap<String, serde_json::Value>,
}

/// Where a run is, for a progress display.
#[derive(Debug, Clone)]
pub enum RunProgress {
    Fitting {
        intervention: String,
    },
    Task {
        intervention: String,
        task: TaskId,
        done: usize,
        total: usize,
    },
    /// Fitting an attack against an intervention (`case` = `intervention@attack`).
    Attacking {
        case: String,
    },
    /// The suite's `traces[index]`, in restored sites.
    Tracing {
        index: usize,
        done: usize,
        total: usize,
    },
}

/// Run what the selected trials need and test their gates. With a `store`, every case's
/// items are journalled there as they complete, and parts it already holds are reused.
pub fn run(
    suite: &Suite,
    model: &LoadedModel,
    sel: &Selection,
    store: Option<&RunDir>,
    mut progress: impl FnMut(RunProgress),
) -> Result<RunOutput, HarnessError> {
    let mut wanted: Vec<(usize, String)> = Vec::new();
    for (gi, g) in suite.gates.iter().enumerate() {
        for iv in &g.interventions {
            if sel.admits(&g.trial_name(iv)) {
                wanted.push((gi, iv.clone()));
            }
        }
    }
    // Every (case, task) the selected trials read, the reference included; a case is an
    // intervention, or an intervention under an attack (`offset@soft20`).
    let mut cases: BTreeSet<(String, TaskId)> = BTreeSet::new();
    for (gi, iv) in &wanted {
        let g = &suite.gates[*gi];
        cases.insert((g.case(iv), g.task));
        if g.gate.effect != crate::stats::paired::Effect::Level {
            cases.insert((g.case(&suite.reference), g.task));
        }
    }
    let mut seconds = BTreeMap::new();
    let mut built: BTreeMap<String, Intervention> = BTreeMap::new();
    let mut manifests = BTreeMap::new();
    for spec in &suite.interventions {
        if !cases.iter().any(|(n, _)| base_of(n) == spec.name.as_str()) {
            continue;
        }
        let start = Instant::now();
        progress(RunProgress::Fitting {
            intervention: spec.name.clone(),
        });
        let iv = match &spec.source {
            Source::None => Intervention::None,
            Source::Fit(path) => {
                let fail = |source| HarnessError::Fit {
                    name: spec.name.clone(),
                    source: Box::new(source),
                };
                let cfg = FitConfig::read(path).map_err(fail)?;
                let fit = fitconfig::run(model, &cfg, None, false, |_| {}).map_err(fail)?;
                manifests.insert(spec.name.clone(), fit.manifest);
                fit.intervention
            }
            Source::Artifact(dir) => {
                let (iv, m) = artifact::load_onto(dir, model, spec.transfer).map_err(|source| {
                    HarnessError::Artifact {
                        name: spec.name.clone(),
                        source: Box::new(source),
                    }
                })?;
                manifests.insert(spec.name.clone(), m);
                iv
            }
        };
        seconds.insert(format!("fit {}", spec.name), start.elapsed().as_secs_f64());
        built.insert(spec.name.clone(), iv);
    }

    // Each attacked case's attack, fitted against its intervention.
    let mut attacked: BTreeMap<String, Attacked> = BTreeMap::new();
    for (case, _) in &cases {
        let (iv, Some(a)) = super::suite::split_case(case) else {
            continue;
        };
        if attacked.contains_key(case) {
            continue;
        }
        let spec =
            suite
                .attacks
                .iter()
                .find(|x| x.name == a)
                .ok_or_else(|| HarnessError::Attack {
                    case: case.clone(),
                    message: format!("no attack named '{a}'"),
                })?;
        progress(RunProgress::Attacking { case: case.clone() });
        let start = Instant::now();
        let siblings = tamper_siblings(suite, &cases, iv, spec);
        let a = fit_attack(model, spec, &built[iv], case, &siblings)?;
        seconds.insert(format!("attack {case}"), start.elapsed().as_secs_f64());
        attacked.insert(case.clone(), a);
    }

    let all_cases = suite.cases();
    let jobs: Vec<(&super::suite::TaskSpec, Vec<&String>)> = suite
        .tasks
        .iter()
        .map(|t| {
            let users = all_cases
                .iter()
                .filter(|n| cases.contains(&((*n).clone(), t.id)))
                .collect::<Vec<_>>();
            (t, users)
        })
        .filter(|(_, users)| !users.is_empty())
        .collect();
    let lanes = super::lanes::lanes(
        sel.lanes,
        jobs.len(),
        rayon::current_num_threads(),
        model.device().is_cpu(),
    );
    let shared = TaskInputs {
        suite,
        model,
        sel,
        store,
        built: &built,
        attacked: &attacked,
    };
    let done = super::lanes::run_all(
        lanes,
        jobs.len(),
        |i, progress| run_task(&shared, jobs[i].0, &jobs[i].1, progress),
        &mut progress,
    )?;
    let mut reports = BTreeMap::new();
    let mut failed = BTreeMap::new();
    let mut parts = PartCounts::default();
    for task in done {
        reports.extend(task.reports);
        failed.extend(task.failed);
        seconds.extend(task.seconds);
        parts.computed += task.parts.computed;
        parts.reused += task.parts.reused;
    }

    // A shard's items are a sample of the run's: a gate on them is no verdict. The
    // verdicts come from `scalpel merge`, on the union of the shards.
    let attacks: BTreeMap<String, serde_json::Value> = attacked
        .into_iter()
        .map(|(case, a)| (case, a.summary))
        .collect();
    let trials = match sel.shard {
        Some(_) => Vec::new(),
        None => verdicts(suite, &wanted, &reports, &failed, &attacks),
    };
    Ok(RunOutput {
        trials,
        reports,
        seconds,
        manifests,
        parts,
        failed,
        attacks,
    })
}

/// The intervention a case runs (`offset` of `offset@soft20`).
fn base_of(case: &str) -> &str {
    super::suite::split_case(case).0
}

/// What every task of a run reads: the suite, the model, the fitted interventions and
/// the attacked cases (fixed before the tasks start, so lanes share them unchanged).
struct TaskInputs<'a> {
    suite: &'a Suite,
    model: &'a LoadedModel,
    sel: &'a Selection,
    store: Option<&'a RunDir>,
    built: &'a BTreeMap<String, Intervention>,
    attacked: &'a BTreeMap<String, Attacked>,
}

/// One task's cases, run.
struct TaskRun {
    reports: Vec<((String, TaskId), TaskReport)>,
    failed: Vec<((String, TaskId), String)>,
    seconds: Vec<(String, f64)>,
    parts: PartCounts,
}

/// Every case (`users`) of one task, in order: the unmodified case first records the
/// streams the others start from ([`shared_blocks`]).
fn run_task(
    inp: &TaskInputs<'_>,
    t: &super::suite::TaskSpec,
    users: &[&String],
    progress: &mut dyn FnMut(RunProgress),
) -> Result<TaskRun, HarnessError> {
    let (model, built, attacked) = (inp.model, inp.built, inp.attacked);
    let mut out = TaskRun {
        reports: Vec::new(),
        failed: Vec::new(),
        seconds: Vec::new(),
        parts: PartCounts::default(),
    };
    let task_err = |intervention: &str, source| HarnessError::Task {
        intervention: intervention.to_string(),
        task: t.id,
        source: Box::new(source),
    };
    let mut task = load_task(t).map_err(|e| task_err(users[0], e))?;
    if let Some(s) = inp.sel.shard {
        let keep = s.select(task.as_ref());
        task.retain(&keep);
    }
    let scorer = match t.id.family() {
        tasks::Family::Toxicity => Some(
            crate::toxicity::scorer_from_spec_on(&t.scorer, model.device()).map_err(|e| {
                HarnessError::Scorer {
                    task: t.id,
                    message: e.to_string(),
                }
            })?,
        ),
        _ => None,
    };
    let memo = shared_blocks(task.as_ref(), users, |name| match attacked.get(name) {
        Some(a) => (a.hooks.clone(), a.prefix.is_some()),
        None => (built[base_of(name)].hooks(), false),
    });
    for &name in users {
        let start = Instant::now();
        let mut report_progress = |done: usize, total: usize| {
            progress(RunProgress::Task {
                intervention: name.clone(),
                task: t.id,
                done,
                total,
            })
        };
        let mut cx = RunContext::new(model, &mut report_progress);
        cx.hooks = built[base_of(name)].hooks();
        if let Some(a) = attacked.get(name.as_str()) {
            cx.hooks = a.hooks.clone();
            cx.prefix = a.prefix.clone();
        }
        if let (Some(memo), None) = (&memo, &cx.prefix) {
            match cx.hooks.first_block() {
                None => cx.hooks = cx.hooks.clone().with_memo(memo.clone()),
                Some(s) if s > 0 => cx.hooks = cx.hooks.clone().with_memo(memo.replayer(s)),
                Some(_) => {}
            }
        }
        cx.seed = inp.suite.seed;
        cx.scorer = scorer.as_deref();
        let mut journal = inp
            .store
            .map(|s| s.journal(name, t.id))
            .transpose()
            .map_err(|source| HarnessError::Store {
                what: format!("{name}::{}", t.id),
                source: Box::new(source),
            })?;
        match run_case(name, task.as_ref(), &mut cx, journal.as_mut()) {
            Ok((report, counts)) => {
                out.parts.computed += counts.computed;
                out.parts.reused += counts.reused;
                out.reports.push(((name.clone(), t.id), report));
            }
            Err(e @ HarnessError::Case { .. }) => {
                out.failed.push(((name.clone(), t.id), e.to_string()));
            }
            Err(e) => return Err(e),
        }
        out.seconds
            .push((format!("{name}::{}", t.id), start.elapsed().as_secs_f64()));
    }
    Ok(out)
}

/// A suite task's items, as the suite's options select them.
pub(crate) fn load_task(t: &super::suite::TaskSpec) -> Result<Box<dyn tasks::Task>, TaskError> {
    let opts = LoadOptions {
        data: t.data.clone(),
        split: t.split,
        limit: t.limit,
        generation: GenerationOptions {
            samples: t.samples,
            max_new_tokens: t.max_new_tokens,
            top_p: t.top_p,
            temperature: t.temperature,
        },
    };
    tasks::load(t.id, &opts)
}

/// The paired sample of a gate's metric: the reference's and the intervention's per-item
/// values on the items both scored, matched by dataset index.
pub fn paired_sample(
    g: &GateSpec,
    reference: Option<&TaskReport>,
    intervention: &TaskReport,
) -> Result<Paired, StatsError> {
    let values = |r: &TaskReport| -> Result<BTreeMap<usize, f64>, StatsError> {
        r.items
            .iter()
            .filter(|it| g.group.is_none() || it.group() == g.group.as_deref())
            .map(|it| {
                let v = it.values().get(g.metric.as_str()).copied().ok_or_else(|| {
                    StatsError::Invalid(format!("item {} has no '{}'", it.idx(), g.metric))
                })?;
                if !v.is_finite() {
                    return Err(StatsError::Invalid(format!(
                        "item {} scored {v} on '{}'",
                        it.idx(),
                        g.metric
                    )));
                }
                Ok((it.idx(), v))
            })
            .collect()
    };
    let y = values(intervention)?;
    match reference {
        None => Paired::level(y.into_values().collect(), None),
        Some(r) => {
            let x = values(r)?;
            if x.len() != y.len() || x.keys().ne(y.keys()) {
                return Err(StatsError::Invalid(format!(
                    "the reference scored {} items and the intervention {}: items must match",
                    x.len(),
                    y.len()
                )));
            }
            Paired::new(x.into_values().collect(), y.into_values().collect(), None)
        }
    }
}

/// The trials' verdicts, Holm-corrected together. `attacks` holds each attacked case's
/// fit record: a gate under an attack that did not take against its intervention is
/// inconclusive, whatever its statistics, unless they fail it.
pub(crate) fn verdicts(
    suite: &Suite,
    wanted: &[(usize, String)],
    reports: &BTreeMap<(String, TaskId), TaskReport>,
    failed: &BTreeMap<(String, TaskId), String>,
    attacks: &BTreeMap<String, serde_json::Value>,
) -> Vec<TrialResult> {
    let mut samples: Vec<Result<Paired, String>> = Vec::new();
    for (gi, iv) in wanted {
        let g = &suite.gates[*gi];
        let level = g.gate.effect == crate::stats::paired::Effect::Level;
        let mut needs = vec![(g.case(iv), g.task)];
        if !level {
            needs.insert(0, (g.case(&suite.reference), g.task));
        }
        if let Some(why) = needs.iter().find_map(|k| failed.get(k)) {
            samples.push(Err(why.clone()));
            continue;
        }
        let reference = (!level).then(|| &reports[&(g.case(&suite.reference), g.task)]);
        let mine = &reports[&(g.case(iv), g.task)];
        samples.push(
            paired_sample(g, reference, mine).map_err(|e| format!("{}: {e}", g.trial_name(iv))),
        );
    }
    // Holm's correction runs over the trials whose statistics exist; the others fail
    // with their reason and take no part in the family.
    let ok: Vec<(crate::stats::gate::Gate, &Paired)> = wanted
        .iter()
        .zip(&samples)
        .filter_map(|((gi, _), s)| s.as_ref().ok().map(|s| (suite.gates[*gi].gate, s)))
        .collect();
    let mut tested = match test_all(&ok) {
        Ok(v) => v.into_iter().map(Ok).collect::<Vec<_>>(),
        Err(e) => ok.iter().map(|_| Err(e.to_string())).collect(),
    }
    .into_iter();
    wanted
        .iter()
        .zip(samples)
        .map(|((gi, iv), s)| {
            let g = &suite.gates[*gi];
            let mut outcome = match s {
                Ok(_) => tested.next().unwrap_or_else(|| Err("not tested".into())),
                Err(e) => Err(e),
            };
            // Only the intervention's attack matters: one that failed against the
            // reference makes the defence look worse, never better.
            let caveat = g.attack.as_ref().and_then(|a| {
                let spec = suite.attacks.iter().find(|x| &x.name == a)?;
                super::attack_check::stalled(attacks.get(&g.case(iv)), spec.min_progress)
            });
            if let (Ok(v), Some(_)) = (&mut outcome, &caveat) {
                if v.outcome != Outcome::Fail {
                    v.outcome = Outcome::Inconclusive;
                }
            }
            TrialResult {
                name: g.trial_name(iv),
                gate: *gi,
                intervention: iv.clone(),
                task: g.task,
                metric: g.metric_label(),
                outcome,
                caveat,
            }
        })
        .collect()
}

/// A case's model under attack: the hooks it runs with (the intervention's, as the
/// attacker left it, and the attack's) and the soft prompt its prompts make room for.
#[derive(Clone)]
pub(crate) struct Attacked {
    pub hooks: crate::model::Hooks,
    pub prefix: Option<crate::attack::SoftPrefix>,
    /// How the fit went (kind, NLL of the targets before and after, seconds; a token
    /// attack's text), for the run's record.
    pub summary: serde_json::Value,
}

/// Streams for the cases of a scoring task to share ([`PrefixMemo`]): the unmodified
/// case records the stream entering each block where another case's hooks begin, and
/// those cases start there. `None` where nothing would be shared: a generation task
/// (each case samples its own tokens, so its calls differ), no case without hooks, or
/// no case whose hooks begin after block 0. `hooks_of` gives a case's hooks and whether
/// it runs under a prompt prefix (which changes the input, so shares nothing).
fn shared_blocks(
    task: &dyn tasks::Task,
    cases: &[&String],
    hooks_of: impl Fn(&str) -> (crate::model::Hooks, bool),
) -> Option<PrefixMemo> {
    if task.protocol().is_some() {
        return None;
    }
    let mut recorder = false;
    let mut blocks = BTreeSet::new();
    for case in cases {
        let (hooks, prefixed) = hooks_of(case.as_str());
        match (hooks.first_block(), prefixed) {
            (None, false) => recorder = true,
            (Some(s), false) if s > 0 => {
                blocks.insert(s);
            }
            _ => {}
        }
    }
    (recorder && !blocks.is_empty()).then(|| PrefixMemo::recorder(blocks))
}

/// The suite's other tamper attacks that differ from `spec` only in their budget and
/// that the selected trials run against `iv`: one fine-tuning run reads them all off
/// ([`crate::attack::fit_tamper_budgets`]).
fn tamper_siblings<'a>(
    suite: &'a Suite,
    cases: &BTreeSet<(String, TaskId)>,
    iv: &str,
    spec: &super::suite::AttackSpec,
) -> Vec<&'a super::suite::AttackSpec> {
    use crate::attack::{AttackConfig, TamperConfig};
    let AttackConfig::Tamper(mine) = &spec.config else {
        return Vec::new();
    };
    let same_but_budget = |other: &TamperConfig| {
        &TamperConfig {
            steps: mine.steps,
            ..other.clone()
        } == mine
    };
    suite
        .attacks
        .iter()
        .filter(|x| x.name != spec.name && x.targets == spec.targets && x.limit == spec.limit)
        .filter(|x| matches!(&x.config, AttackConfig::Tamper(o) if same_but_budget(o)))
        .filter(|x| {
            cases
                .iter()
                .any(|(n, _)| super::suite::split_case(n) == (iv, Some(x.name.as_str())))
        })
        .collect()
}

/// Attack `spec` fitted against `defence` on `model`, from the fixture cache when the
/// model, defence, attack and targets are unchanged. A tamper attack that is not cached
/// is fitted in one run with its uncached `siblings` (the same attack at other budgets),
/// and each budget's fit goes into the cache.
fn fit_attack(
    model: &LoadedModel,
    spec: &super::suite::AttackSpec,
    defence: &Intervention,
    case: &str,
    siblings: &[&super::suite::AttackSpec],
) -> Result<Attacked, HarnessError> {
    use crate::attack::{self, cache, AttackConfig, Target};
    use sha2::{Digest, Sha256};
    let fail = |message: String| HarnessError::Attack {
        case: case.to_string(),
        message,
    };
    let opts = LoadOptions {
        split: crate::tasks::SplitSel::Fit,
        limit: spec.limit,
        ..LoadOptions::default()
    };
    let task = tasks::load(spec.targets, &opts).map_err(|e| fail(e.to_string()))?;
    let mut targets = Vec::new();
    let mut h = Sha256::new();
    // Siblings are tamper attacks like `spec`: one revision serves them all.
    h.update(format!("attack-revision-{}", spec.config.revision()).as_bytes());
    for i in 0..task.len() {
        let Some(text) = task.item_text(i) else {
            return Err(fail(format!(
                "targets: {} items are not plain text",
                spec.targets
            )));
        };
        if let Some(t) = Target::split(&text, 0.5) {
            h.update(text.as_bytes());
            h.update([0u8]);
            targets.push(t);
        }
    }
    if targets.is_empty() {
        return Err(fail(format!(
            "targets: no {} text long enough to split",
            spec.targets
        )));
    }
    let fingerprint = artifact::model_fingerprint(model).map_err(|e| fail(e.to_string()))?;
    h.update(fingerprint.as_bytes());
    h.update(
        attack::defence_key(defence)
            .map_err(|e| fail(e.to_string()))?
            .as_bytes(),
    );
    // Everything above is shared by the siblings; the attack's own settings end the key.
    let key_of = |config: &AttackConfig| -> String {
        let mut h = h.clone();
        h.update(format!("{config:?}").as_bytes());
        h.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let key = key_of(&spec.config);
    let dir = crate::assets::scalpel_home()
        .join("fixtures")
        .join("attacks");
    let e = |e: attack::AttackError| fail(e.to_string());
    let cached = match &spec.config {
        // A soft prompt is fitted at each step size of its sweep (each cached on its
        // own); the one that lowered its targets' NLL most is the attack.
        AttackConfig::Embedding(cfg) => {
            let mut best: Option<(BTreeMap<String, candle_core::Tensor>, serde_json::Value)> = None;
            let mut tried = Vec::new();
            for lr in std::iter::once(cfg.lr).chain(spec.lr_sweep.iter().copied()) {
                let c = attack::EmbeddingAttackConfig { lr, ..cfg.clone() };
                let k = key_of(&AttackConfig::Embedding(c.clone()));
                let (t, mut s) = match cache::load(&dir, &k) {
                    Some(x) => x,
                    None => {
                        let fit = attack::fit_embedding_attack(
                            model,
                            defence,
                            &targets,
                            &c,
                            |_, _, _| {},
                        )
                        .map_err(e)?;
                        let t = BTreeMap::from([("embeds".to_string(), fit.prefix.embeds.clone())]);
                        let s = serde_json::json!({
                            "kind": "embedding", "start": fit.prefix.start, "curve": fit.curve,
                            "nll_before": fit.nll_before, "nll_after": fit.nll_after,
                            "seconds": fit.seconds,
                        });
                        cache::save(&dir, &k, &t, s.clone());
                        (t, s)
                    }
                };
                let after = s["nll_after"].as_f64().unwrap_or(f64::INFINITY);
                tried.push(serde_json::json!({"lr": lr, "nll_after": s["nll_after"]}));
                s["lr"] = lr.into();
                let better = best
                    .as_ref()
                    .is_none_or(|(_, b)| after < b["nll_after"].as_f64().unwrap_or(f64::INFINITY));
                if better {
                    best = Some((t, s));
                }
            }
            best.map(|(t, mut s)| {
                if tried.len() > 1 {
                    s["sweep"] = tried.into();
                }
                (t, s)
            })
        }
        _ => cache::load(&dir, &key),
    };
    let (tensors, summary) = match cached {
        Some(c) => c,
        None => {
            let (tensors, summary) = match &spec.config {
                AttackConfig::Embedding(_) => {
                    return Err(fail("the soft prompt's sweep fitted nothing".into()))
                }
                AttackConfig::Gcg(cfg) => {
                    let fit =
                        attack::fit_gcg(model, defence, &targets, cfg, |_, _, _| {}).map_err(e)?;
                    let ids =
                        candle_core::Tensor::new(fit.tokens.as_slice(), &candle_core::Device::Cpu)
                            .map_err(|x| fail(x.to_string()))?;
                    let s = serde_json::json!({
                        "kind": "gcg", "tokens": fit.tokens, "text": fit.text, "curve": fit.curve,
                        "nll_before": fit.nll_before,
                        "nll_after": fit.curve.last().copied().unwrap_or(fit.nll_before),
                        "seconds": fit.seconds,
                    });
                    (BTreeMap::from([("tokens".to_string(), ids)]), s)
                }
                AttackConfig::Tamper(cfg) => {
                    let mut todo = vec![(key.clone(), cfg.steps)];
                    for sib in siblings {
                        if let AttackConfig::Tamper(c) = &sib.config {
                            let k = key_of(&sib.config);
                            if cache::load(&dir, &k).is_none() {
                                todo.push((k, c.steps));
                            }
                        }
                    }
                    let budgets: Vec<usize> = todo.iter().map(|(_, n)| *n).collect();
                    let trajectory = budgets.iter().copied().max().unwrap_or(0);
                    let fits = attack::fit_tamper_budgets(
                        model,
                        defence,
                        &targets,
                        cfg,
                        &budgets,
                        |_, _, _| {},
                    )
                    .map_err(e)?;
                    let summary = |fit: &attack::TamperFit, steps: usize| {
                        serde_json::json!({
                            "kind": "tamper", "params": cfg.params.name(), "steps": steps,
                            "trajectory_steps": trajectory,
                            "curve": fit.curve, "nll_before": fit.nll_before,
                            "nll_after": fit.nll_after, "seconds": fit.seconds,
                        })
                    };
                    let mut fits = fits.into_iter();
                    let mine = fits
                        .next()
                        .ok_or_else(|| fail("no tamper fit came back".into()))?
                        .map_err(e)?;
                    // A sibling the run did not reach (its loss diverged) stays uncached
                    // and reports its own error when its case is fitted.
                    for ((k, steps), fit) in todo.iter().skip(1).zip(fits) {
                        if let Ok(fit) = fit {
                            cache::save(&dir, k, &fit.tensors(), summary(&fit, *steps));
                        }
                    }
                    (mine.tensors(), summary(&mine, cfg.steps))
                }
            };
            cache::save(&dir, &key, &tensors, summary.clone());
            (tensors, summary)
        }
    };
    let dev = model.device();
    let on_device = |t: &candle_core::Tensor| t.to_device(dev).map_err(|x| fail(x.to_string()));
    let attacked = match &spec.config {
        AttackConfig::Embedding(_) => {
            let embeds = tensors
                .get("embeds")
                .ok_or_else(|| fail("cached attack has no 'embeds'".into()))?;
            let prefix = attack::SoftPrefix {
                embeds: on_device(embeds)?,
                start: attack::SoftPrefix::start_for(model),
            };
            Attacked {
                hooks: prefix.with(&defence.hooks()),
                prefix: Some(prefix),
                summary,
            }
        }
        AttackConfig::Gcg(_) => {
            let ids: Vec<u32> = tensors
                .get("tokens")
                .ok_or_else(|| fail("cached attack has no 'tokens'".into()))?
                .to_vec1()
                .map_err(|x| fail(x.to_string()))?;
            let prefix = attack::token_prefix(model, &ids).map_err(e)?;
            Attacked {
                hooks: prefix.with(&defence.hooks()),
                prefix: Some(prefix),
                summary,
            }
        }
        AttackConfig::Tamper(cfg) => {
            let mut on = BTreeMap::new();
            for (k, t) in &tensors {
                on.insert(k.clone(), on_device(t)?);
            }
            let (iv, adapters) =
                attack::TamperFit::from_tensors(model, defence, cfg, &on).map_err(e)?;
            Attacked {
                hooks: attack::tampered_hooks(&iv, &adapters),
                prefix: None,
                summary,
            }
        }
    };
    Ok(attacked)
}
