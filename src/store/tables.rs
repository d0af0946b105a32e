//! The parquet tables of a finished run, one row type each. They are plain parquet
//! (strings, floats, integers, nulls), so polars, pandas or DuckDB read them across runs
//! (`pl.read_parquet("reports/runs/*/items.parquet")`) as well as Scalpel does.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{io_err, write_atomic, StoreError};
use crate::data::Doc;

/// One per-item metric value: what paired statistics compare across runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRow {
    pub intervention: String,
    pub task: String,
    /// The item's index in its dataset (the pairing key across runs and models).
    pub idx: u64,
    pub metric: String,
    /// Empty when the score was not finite (the trial reading it failed, saying why).
    pub value: Option<f64>,
}

/// One aggregate metric of one intervention × task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    pub intervention: String,
    pub task: String,
    pub metric: String,
    pub value: f64,
    pub n: u64,
    pub seconds: f64,
}

/// One trial's verdict, or its error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictRow {
    pub trial: String,
    pub intervention: String,
    pub task: String,
    pub metric: String,
    /// `difference`, `relative` or `level`.
    pub effect: String,
    /// `superiority`, `non_inferiority` or `within`.
    pub gate: String,
    /// `higher` or `lower`: which direction is better.
    pub better: String,
    pub margin: Option<f64>,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    pub method: String,
    /// `pass`, `fail`, `underpowered`, `inconclusive` or `error`.
    pub outcome: String,
    pub estimate: Option<f64>,
    pub ci_lo: Option<f64>,
    pub ci_hi: Option<f64>,
    pub ci_level: Option<f64>,
    pub n: Option<u64>,
    pub units: Option<u64>,
    pub p_value: Option<f64>,
    pub p_adjusted: Option<f64>,
    pub std_error: Option<f64>,
    pub mde: Option<f64>,
    /// Why it did not pass (the line the runner prints), empty when it passed.
    pub message: Option<String>,
}

/// One metadata entry (model, hashes, seeds, commit, hardware, timings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaRow {
    pub key: String,
    pub value: String,
}

pub const ITEMS: &str = "items.parquet";
pub const TASKS: &str = "tasks.parquet";
pub const VERDICTS: &str = "verdicts.parquet";
pub const METADATA: &str = "metadata.parquet";

/// Write `rows` to `path` as parquet, atomically.
pub fn write<T: Serialize>(path: &Path, rows: &[T]) -> Result<(), StoreError> {
    let docs = rows
        .iter()
        .map(|r| match serde_json::to_value(r) {
            Ok(serde_json::Value::Object(m)) => Ok(m),
            Ok(_) => Err("a row is not a record".to_string()),
            Err(e) => Err(e.to_string()),
        })
        .collect::<Result<Vec<Doc>, _>>()
        .map_err(|message| StoreError::Corrupt {
            path: path.to_path_buf(),
            message,
        })?;
    let mut bytes = Vec::new();
    crate::data::parquet::write_to(&mut bytes, &docs).map_err(|message| StoreError::Corrupt {
        path: path.to_path_buf(),
        message: format!("writing parquet: {message}"),
    })?;
    write_atomic(path, &bytes).map(|_| ())
}

/// Read a table written by [`write`]; a missing file is [`StoreError::NotARun`].
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, StoreError> {
    if !path.exists() {
        return Err(StoreError::NotARun {
            path: path.parent().unwrap_or(path).to_path_buf(),
            missing: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        });
    }
    let corrupt = |message: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let docs = crate::data::parquet::read(path).map_err(|e| corrupt(e.to_string()))?;
    docs.into_iter()
        .enumerate()
        .map(|(i, d)| {
            serde_json::from_value(serde_json::Value::Object(d))
                .map_err(|e| corrupt(format!("row {i}: {e}")))
        })
        .collect()
}

/// A finished run, read back.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: std::path::PathBuf,
    pub meta: BTreeMap<String, String>,
    pub items: Vec<ItemRow>,
    pub tasks: Vec<TaskRow>,
    pub verdicts: Vec<VerdictRow>,
}

impl Run {
    pub fn read(dir: &Path) -> Result<Run, StoreError> {
        if !dir.is_dir() {
            return Err(StoreError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such run directory"),
            });
        }
        let meta: Vec<MetaRow> = read(&dir.join(METADATA))?;
        Ok(Run {
            dir: dir.to_path_buf(),
            meta: meta.into_iter().map(|m| (m.key, m.value)).collect(),
            items: read(&dir.join(ITEMS))?,
            tasks: read(&dir.join(TASKS))?,
            verdicts: read(&dir.join(VERDICTS))?,
        })
    }

    pub fn meta(&self, key: &str) -> &str {
        self.meta.get(key).map(String::as_str).unwrap_or("")
    }

    /// The manifests of the run's fitted interventions, by name.
    pub fn manifests(
        &self,
    ) -> Result<BTreeMap<String, crate::intervene::artifact::Manifest>, StoreError> {
        let dir = self.dir.join("interventions");
        let mut out = BTreeMap::new();
        if !dir.is_dir() {
            return Ok(out);
        }
        for e in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let p = e.map_err(io_err(&dir))?.path();
            if p.extension().is_some_and(|x| x == "json") {
                let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
                let m = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                    path: p.clone(),
                    message: e.to_string(),
                })?;
                let name = p
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                out.insert(name, m);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed() -> VerdictRow {
        VerdictRow {
            trial: "offset::copa::acc".into(),
            intervention: "offset".into(),
            task: "copa".into(),
            metric: "acc".into(),
            effect: "difference".into(),
            gate: "non_inferiority".into(),
            better: "higher".into(),
            margin: Some(0.05),
            lo: None,
            hi: None,
            method: "bootstrap".into(),
            outcome: "pass".into(),
            estimate: Some(-0.01),
            ci_lo: Some(-0.04),
            ci_hi: Some(1.0),
            ci_level: Some(0.9),
            n: Some(100),
            units: Some(100),
            p_value: Some(0.01),
            p_adjusted: Some(0.02),
            std_error: Some(0.02),
            mde: Some(0.03),
            message: None,
        }
    }

    #[test]
    fn rows_read_back_equal_rows_written_nulls_included() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.parquet");
        let errored = VerdictRow {
            trial: "none::crows_pairs_english::pct_stereotype".into(),
            gate: "within".into(),
            margin: None,
            lo: Some(0.45),
            hi: Some(0.55),
            outcome: "error".into(),
            estimate: None,
            ci_lo: None,
            ci_hi: None,
            ci_level: None,
            n: None,
            units: None,
            p_value: None,
            p_adjusted: None,
            std_error: None,
            mde: None,
            message: Some("item 3 scored NaN".into()),
            ..passed()
        };
        let rows = vec![passed(), errored];
        write(&path, &rows).unwrap();
        let back: Vec<VerdictRow> = read(&path).unwrap();
        assert_eq!(back, rows);
        let missing = read::<VerdictRow>(&dir.path().join("nope.parquet")).unwrap_err();
        assert!(missing.to_string().contains("nope.parquet"), "{missing}");
    }
}
