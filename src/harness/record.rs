//! A finished run, written to its store: the parquet tables (items, task metrics,
//! verdicts, metadata) and each intervention's manifest.

use std::collections::BTreeMap;

use super::run::RunOutput;
use super::suite::{Source, Suite};
use super::trials::explain;
use crate::stats::gate::{Better, GateKind, Method, Outcome};
use crate::stats::paired::Effect;
use crate::store::tables::{self, ItemRow, MetaRow, TaskRow, VerdictRow};
use crate::store::{RunDir, StoreError};

/// What the metadata says beyond the suite and the outputs.
pub struct RunInfo {
    pub model_name: String,
    pub model_path: String,
    pub model_fingerprint: String,
    /// Architecture and depth, so that runs of different models line up by depth.
    pub model_arch: String,
    pub model_layers: usize,
    /// `K/N` for one shard of a run, and the id of the run the shards make.
    pub shard: Option<String>,
    pub group_id: String,
    pub device: String,
    pub selection: String,
    /// sha256 of the executable that ran.
    pub build: String,
    pub started_unix: u64,
    pub wall_seconds: f64,
}

pub fn effect_name(e: Effect) -> &'static str {
    match e {
        Effect::Difference => "difference",
        Effect::Relative => "relative",
        Effect::Level => "level",
    }
}

/// Write the run's tables and manifests into `store`.
pub fn write(
    store: &RunDir,
    suite: &Suite,
    out: &RunOutput,
    info: &RunInfo,
) -> Result<(), StoreError> {
    for (name, m) in &out.manifests {
        let json = serde_json::to_vec_pretty(m).map_err(|e| StoreError::Corrupt {
            path: store.dir.join("interventions"),
            message: e.to_string(),
        })?;
        store.write_atomic(
            &format!("interventions/{}.json", crate::store::file_safe(name)),
            &json,
        )?;
    }
    let mut items = Vec::new();
    let mut tasks = Vec::new();
    for ((iv, task), r) in &out.reports {
        for it in &r.items {
            for (metric, v) in it.values() {
                items.push(ItemRow {
                    intervention: iv.clone(),
                    task: task.to_string(),
                    idx: it.idx() as u64,
                    metric: metric.to_string(),
                    value: v.is_finite().then_some(v),
                });
            }
        }
        let seconds = out
            .seconds
            .get(&format!("{iv}::{task}"))
            .copied()
            .unwrap_or(0.0);
        for (metric, v) in &r.metrics {
            tasks.push(TaskRow {
                intervention: iv.clone(),
                task: task.to_string(),
                metric: metric.clone(),
                value: *v,
                n: r.n as u64,
                seconds,
            });
        }
    }
    let verdicts: Vec<VerdictRow> = out
        .trials
        .iter()
        .map(|t| {
            let g = &suite.gates[t.gate];
            let (margin, lo, hi, gate) = match g.gate.kind {
                GateKind::Superiority { margin } => (Some(margin), None, None, "superiority"),
                GateKind::NonInferiority { margin } => {
                    (Some(margin), None, None, "non_inferiority")
                }
                GateKind::Within { lo, hi } => (None, Some(lo), Some(hi), "within"),
            };
            let v = t.outcome.as_ref().ok();
            VerdictRow {
                trial: t.name.clone(),
                intervention: t.intervention.clone(),
                task: t.task.to_string(),
                metric: t.metric.clone(),
                effect: effect_name(g.gate.effect).into(),
                gate: gate.into(),
                better: match g.gate.better {
                    Better::Higher => "higher",
                    Better::Lower => "lower",
                }
                .into(),
                margin,
                lo,
                hi,
                method: match g.gate.method {
                    Method::Bootstrap { .. } => "bootstrap",
                    Method::Normal => "normal",
                    Method::McNemar => "mcnemar",
                }
                .into(),
                outcome: match v.map(|v| v.outcome) {
                    Some(Outcome::Pass) => "pass",
                    Some(Outcome::Fail) => "fail",
                    Some(Outcome::Underpowered) => "underpowered",
                    Some(Outcome::Inconclusive) => "inconclusive",
                    None => "error",
                }
                .into(),
                estimate: v.map(|v| v.estimate.value),
                ci_lo: v.map(|v| v.estimate.lo),
                ci_hi: v.map(|v| v.estimate.hi),
                ci_level: v.map(|v| v.estimate.level),
                n: v.map(|v| v.n as u64),
                units: v.map(|v| v.units as u64),
                p_value: v.map(|v| v.p_value),
                p_adjusted: v.map(|v| v.p_adjusted),
                std_error: v.map(|v| v.std_error),
                mde: v.map(|v| v.mde),
                message: explain(suite, t),
            }
        })
        .collect();
    let dir = &store.dir;
    tables::write(&dir.join(tables::ITEMS), &items)?;
    tables::write(&dir.join(tables::TASKS), &tasks)?;
    tables::write(&dir.join(tables::VERDICTS), &verdicts)?;
    tables::write(
        &dir.join(tables::METADATA),
        &metadata(store, suite, out, info)?,
    )?;
    Ok(())
}

/// Metadata key prefix of a case that could not be scored: `failed.<intervention>::<task>`
/// holds the error.
pub const FAILED_PREFIX: &str = "failed.";

/// Metadata key prefix of an attacked case's fit: `attack.<intervention>@<attack>` holds
/// its summary as JSON.
pub const ATTACK_PREFIX: &str = "attack.";

/// The attack fits a stored run records, by case.
pub fn attack_fits(meta: &BTreeMap<String, String>) -> BTreeMap<String, serde_json::Value> {
    meta.iter()
        .filter_map(|(k, v)| {
            let case = k.strip_prefix(ATTACK_PREFIX)?;
            Some((case.to_string(), serde_json::from_str(v).ok()?))
        })
        .collect()
}

/// The failed cases a stored run records, read back from its metadata.
pub fn failed_cases(
    meta: &BTreeMap<String, String>,
) -> BTreeMap<(String, crate::tasks::TaskId), String> {
    meta.iter()
        .filter_map(|(k, v)| {
            let (iv, task) = k.strip_prefix(FAILED_PREFIX)?.rsplit_once("::")?;
            Some(((iv.to_string(), task.parse().ok()?), v.clone()))
        })
        .collect()
}

fn metadata(
    store: &RunDir,
    suite: &Suite,
    out: &RunOutput,
    info: &RunInfo,
) -> Result<Vec<MetaRow>, StoreError> {
    use sha2::{Digest, Sha256};
    let suite_bytes = std::fs::read(&suite.path).map_err(crate::store::io_err(&suite.path))?;
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    put("run_id", store.id.clone());
    put("suite", suite.name.clone());
    put("suite_path", suite.path.display().to_string());
    put(
        "suite_sha256",
        format!("{:x}", Sha256::digest(&suite_bytes)),
    );
    put("model", info.model_name.clone());
    put("model_path", info.model_path.clone());
    put("model_sha256", info.model_fingerprint.clone());
    put("model_arch", info.model_arch.clone());
    put("group_id", info.group_id.clone());
    if let Some(s) = &info.shard {
        put("shard", s.clone());
    }
    put("model_layers", info.model_layers.to_string());
    put("device", info.device.clone());
    put("seed", suite.seed.to_string());
    put("alpha", suite.alpha.to_string());
    put("reference", suite.reference.clone());
    put("selection", info.selection.clone());
    put("scalpel_version", crate::store::VERSION.into());
    put("git_commit", crate::store::GIT_COMMIT.into());
    put("build_sha256", info.build.clone());
    put("hardware", crate::machine::describe());
    put("started_at", crate::machine::iso8601(info.started_unix));
    put("started_unix", info.started_unix.to_string());
    put("wall_seconds", format!("{:.1}", info.wall_seconds));
    put("parts_computed", out.parts.computed.to_string());
    put("parts_reused", out.parts.reused.to_string());
    for iv in &suite.interventions {
        let k = |f: &str| format!("intervention.{}.{f}", iv.name);
        match &iv.source {
            Source::None => put(&k("kind"), "none".into()),
            Source::Fit(p) => put(&k("fit_config"), p.display().to_string()),
            Source::Artifact(p) => put(&k("artifact"), p.display().to_string()),
        }
        if let Some(man) = out.manifests.get(&iv.name) {
            put(&k("kind"), man.kind.name().into());
            put(&k("sites"), man.sites.join(","));
            put(&k("tensors_sha256"), man.tensors_sha256.clone());
        }
    }
    for (stage, s) in &out.seconds {
        put(&format!("seconds.{stage}"), format!("{s:.2}"));
    }
    for ((iv, task), why) in &out.failed {
        put(&format!("{FAILED_PREFIX}{iv}::{task}"), why.clone());
    }
    for (case, summary) in &out.attacks {
        put(&format!("{ATTACK_PREFIX}{case}"), summary.to_string());
    }
    Ok(m.into_iter()
        .map(|(key, value)| MetaRow { key, value })
        .collect())
}
