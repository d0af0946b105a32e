//! A case's journal: one line per completed part of a task (its items' scores, as JSON,
//! then a tab and the sha256 of that JSON), appended and synced as each part finishes, so
//! a run killed at any point loses at most the part in flight. On open, a torn last line
//! (the process died mid-write) is cut off, and a line whose JSON does not match its
//! sha256 (a damaged file) is reported and dropped: its part is scored again, never
//! read.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Seek, SeekFrom, Write};
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
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut BufReader::new(&file), &mut text).map_err(io)?;
        // Only whole lines count: bytes after the last newline are a torn write.
        let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut kept: Vec<&[u8]> = Vec::new();
        let mut dropped = 0usize;
        for (n, line) in text[..whole].split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match check_line(line) {
                Ok(p) => {
                    kept.push(line);
                    done.insert(p.key.clone(), p);
                }
                Err(why) => {
                    dropped += 1;
                    eprintln!(
                        "scalpel: {} line {}: {why}; that part is scored again",
                        path.display(),
                        n + 1
                    );
                }
            }
        }
        if dropped > 0 {
            // Rewritten without the damaged lines, so that what follows appends to a
            // journal that reads back whole.
            let mut clean = Vec::new();
            for l in &kept {
                clean.extend_from_slice(l);
                clean.push(b'\n');
            }
            super::write_atomic(path, &clean)?;
            file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(path)
                .map_err(io)?;
        } else if (whole as u64) < file.metadata().map_err(io)?.len() {
            file.set_len(whole as u64).map_err(io)?;
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
        let json = serde_json::to_string(&part).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let line = format!("{json}\t{}\n", crate::assets::sha256_hex(json.as_bytes()));
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

/// A journal line read back: its JSON must hash to the sha256 after its last tab (JSON
/// text never holds a raw tab) and parse as a part.
fn check_line(line: &[u8]) -> Result<Part, String> {
    let tab = line
        .iter()
        .rposition(|&b| b == b'\t')
        .ok_or("no checksum")?;
    let (json, sum) = (&line[..tab], &line[tab + 1..]);
    if sum != crate::assets::sha256_hex(json).as_bytes() {
        return Err("its contents do not match their sha256".into());
    }
    serde_json::from_slice(json).map_err(|e| format!("unreadable part: {e}"))
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

    #[test]
    fn a_damaged_line_is_dropped_and_the_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut j = Journal::open(&path).unwrap();
        for (k, i) in [("a", 0), ("b", 1), ("c", 2)] {
            j.append(k, 1.0, &[item(i)]).unwrap();
        }
        drop(j);
        // One digit of part b's scores changed: still valid JSON, a different number.
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let damaged = lines[1].replacen("-0.25", "-0.35", 1);
        assert_ne!(damaged, lines[1]);
        std::fs::write(&path, format!("{}\n{damaged}\n{}\n", lines[0], lines[2])).unwrap();
        let mut j = Journal::open(&path).unwrap();
        assert_eq!(j.len(), 2);
        assert!(j.get("b").is_none(), "the damaged part is not read");
        assert!(j.get("a").is_some() && j.get("c").is_some());
        j.append("b", 1.0, &[item(1)]).unwrap();
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.len(), 3);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    }
}
