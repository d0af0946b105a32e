//! Splitting a run across machines: shard `K/N` scores a deterministic share of every
//! task's items (the same partition on every machine, whatever the order shards run
//! in), and `scalpel merge` recomputes the statistics on the union.
//!
//! Items are placed in the order of a hash of their key (so neighbours in a dataset,
//! often alike in length, spread out) onto the shard with the least expected cost so
//! far, cost being the item's text length: shards of a task finish close together even
//! when its items differ tenfold in length.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::tasks::Task;

/// Shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("shard '{s}' must be K/N with 1 <= K <= N");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            k.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// Where the environment says which shard this process is, for `--shard auto`:
/// `SCALPEL_SHARD=K/N` (a CI matrix sets it); a Slurm array (`SLURM_ARRAY_TASK_ID`
/// counted from `SLURM_ARRAY_TASK_MIN`, `SLURM_ARRAY_TASK_COUNT` shards); a Kubernetes
/// Indexed Job (`JOB_COMPLETION_INDEX` from 0, with the count in
/// `SCALPEL_SHARD_COUNT`, which the Job sets from its `completions`).
pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Shard, String> {
    let num = |name: &str| -> Result<Option<usize>, String> {
        match var(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map(Some)
                .map_err(|_| format!("{name}='{v}' is not a number")),
        }
    };
    let checked = |index: usize, count: usize, from: &str| {
        if index == 0 || index > count {
            Err(format!("{from} gives shard {index} of {count}"))
        } else {
            Ok(Shard { index, count })
        }
    };
    if let Some(s) = var("SCALPEL_SHARD") {
        return s.parse().map_err(|e| format!("SCALPEL_SHARD: {e}"));
    }
    if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
        let count = num("SLURM_ARRAY_TASK_COUNT")?
            .ok_or("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not")?;
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let index = id.checked_sub(min).ok_or(format!(
            "SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}"
        ))?;
        return checked(index + 1, count, "the Slurm array");
    }
    if let Some(i) = num("JOB_COMPLETION_INDEX")? {
        let count = num("SCALPEL_SHARD_COUNT")?.ok_or(
            "JOB_COMPLETION_INDEX is set but SCALPEL_SHARD_COUNT is not (set it to the Job's completions)",
        )?;
        return checked(i + 1, count, "the Indexed Job");
    }
    Err(
        "--shard auto: none of SCALPEL_SHARD, SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX is set"
            .into(),
    )
}

impl Shard {
    /// The positions of `task`'s items this shard scores, in the task's order.
    pub fn select(&self, task: &dyn Task) -> Vec<usize> {
        let n = task.len();
        let mut order: Vec<(u64, usize, usize)> = (0..n)
            .map(|i| {
                let key = task.item_key(i);
                let mut h = Sha256::new();
                h.update(task.id().name().as_bytes());
                h.update([0]);
                h.update(key.as_bytes());
                let d = h.finalize();
                let rank = u64::from_be_bytes(d[..8].try_into().unwrap_or([0; 8]));
                (rank, i, key.len() + 1)
            })
            .collect();
        order.sort_unstable();
        let mut load = vec![0usize; self.count];
        let mut mine = Vec::new();
        for (_, i, cost) in order {
            let (s, _) = load
                .iter()
                .enumerate()
                .min_by_key(|(s, l)| (**l, *s))
                .unwrap_or((0, &0));
            load[s] += cost;
            if s + 1 == self.index {
                mine.push(i);
            }
        }
        mine.sort_unstable();
        mine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn shards_parse_and_come_from_each_engine() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 4 }
        );
        for bad in ["0/4", "5/4", "2", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let s = |i, c| Shard { index: i, count: c };
        assert_eq!(from_env(env(&[("SCALPEL_SHARD", "3/5")])).unwrap(), s(3, 5));
        // sbatch --array=0-3 and --array=1-4 both give shards 1..4.
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(from_env(env(&slurm)).unwrap(), s(1, 4));
        let slurm1 = [
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(from_env(env(&slurm1)).unwrap(), s(4, 4));
        let k8s = [("JOB_COMPLETION_INDEX", "2"), ("SCALPEL_SHARD_COUNT", "3")];
        assert_eq!(from_env(env(&k8s)).unwrap(), s(3, 3));
        let e = from_env(env(&[("JOB_COMPLETION_INDEX", "2")])).unwrap_err();
        assert!(e.contains("SCALPEL_SHARD_COUNT"), "{e}");
        assert!(from_env(env(&[])).is_err());
        let e = from_env(env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]))
        .unwrap_err();
        assert!(e.contains("7 of 4") || e.contains("8 of 4"), "{e}");
    }
}
