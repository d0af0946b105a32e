//! A case's journal: one JSON line per completed part of a task (its items' scores),
//! appended and synced as each part finishes, so a run killed at any point loses at most
//! the part in flight. A torn last line (the process died mid-write) is cut off on open.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;
use crate::tasks::ItemScore;

/// One completed part: which items (by the hash of their keys) and their scores.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    pub key: String,
    pub seconds: f64,
    pub items: Vec<Value>,
}

pub struct Journal {
    path: PathBuf,
    file: File,
    done: HashMap<String, Part>,
}

impl Journal {
    /// Open (or create) the journal at `path` and read the parts it holds.
    pub fn open(path: &Path) -> Result<Journal, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut done = HashMap::new();
        let mut good = 0u64;
        let mut reader = BufReader::new(&file);
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(io)?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            match serde_json::from_str::<Part>(&line) {
                Ok(p) => {
                    good += n as u64;
                    done.insert(p.key.clone(), p);
                }
                Err(_) => break,
            }
        }
        drop(reader);
        if good < file.metadata().map_err(io)?.len() {
            file.set_len(good).map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            done,
        })
    }

    /// The completed part with this key, if any.
    pub fn get(&self, key: &str) -> Option<&Part> {
        self.done.get(key)
    }

    pub fn len(&self) -> usize {
        self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// Record a completed part; returns once it is on disk.
    pub fn append(
        &mut self,
        key: &str,
        seconds: f64,
        items: &[ItemScore],
    ) -> Result<(), StoreError> {
        let part = Part {
            key: key.to_string(),
            seconds,
            items: items
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()
                .map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    message: format!("an item does not serialise: {e}"),
                })?,
        };
        let mut line = serde_json::to_string(&part).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        line.push('\n');
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        // One write of the whole line, then a sync: a crash leaves a whole line or a
        // torn one that `open` cuts off.
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.done.insert(part.key.clone(), part);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::ChoiceResult;

    fn item(idx: usize) -> ItemScore {
        ItemScore::Choice(ChoiceResult {
            idx,
            pred: 1,
            label: 0,
            loglikelihoods: vec![-1.5, -0.25],
        })
    }

    #[test]
    fn parts_survive_reopening_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut j = Journal::open(&path).unwrap();
        j.append("a", 1.0, &[item(0), item(1)]).unwrap();
        j.append("b", 2.0, &[item(2)]).unwrap();
        drop(j);
        // A half-written third line, as SIGKILL mid-write leaves it.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"key":"c","seconds":1.0,"items":[{"idx"#)
            .unwrap();
        drop(f);
        let mut j = Journal::open(&path).unwrap();
        assert_eq!(j.len(), 2);
        assert!(j.get("c").is_none());
        let a = j.get("a").unwrap();
        assert_eq!(a.items.len(), 2);
        let back = ItemScore::from_value(crate::tasks::TaskId::Copa, a.items[1].clone()).unwrap();
        assert_eq!(back, item(1));
        j.append("c", 3.0, &[item(3)]).unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.len(), 3);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "the torn line is gone: {text}");
    }
}
