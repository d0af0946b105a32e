//! Sharing the unmodified blocks between cases of a suite.
//!
//! An intervention that writes only at block `s` and later leaves blocks `0..s` exactly
//! as the unmodified model runs them. A suite scores the same items under the
//! unmodified model and under each intervention, in the same batches, so the stream
//! entering block `s` of every forward call is one the unmodified case already
//! computed. A [`PrefixMemo`] keeps those streams: the unmodified case *records* the
//! stream entering each block some intervention starts at, and each intervention's case
//! *replays* it, running only blocks `s..` (for an offset at layer 24 of SmolLM2's 30,
//! a fifth of the work). Results are the same bits, because the replayed stream is the
//! one the full pass would compute.
//!
//! Calls are matched by a key of the call's token ids, the cache's padding and the
//! cache's *lineage*: a hash of every call and row selection that filled the cache, so
//! two calls with the same ids continuing different contexts never match. A replayed
//! call leaves the cache's layers below `s` empty (nothing reads them: every later call
//! on that cache replays too); a later call that finds no recorded stream on such a
//! cache is an error, never a silent recomputation from missing keys.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use candle_core::Tensor;

use super::KvCache;

#[derive(Debug, Default)]
struct Streams {
    /// (call key, block) → the stream `[b, t, d]` entering that block.
    at: HashMap<(u64, usize), Tensor>,
    /// Calls that started from a recorded stream.
    replayed: usize,
}

/// What a case does with the shared streams.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// The unmodified model: keep the stream entering each of these blocks.
    Record(BTreeSet<usize>),
    /// An intervention whose hooks all sit at block `.0` or later: start there.
    Replay(usize),
}

/// Streams shared between the cases of one task (see the module docs). Cloning shares
/// them; [`PrefixMemo::recorder`] and [`PrefixMemo::replayer`] give each case its role.
#[derive(Debug, Clone)]
pub struct PrefixMemo {
    streams: Arc<Mutex<Streams>>,
    role: Role,
}

impl PrefixMemo {
    /// A memo with no streams, for the unmodified case, keeping the streams entering
    /// `blocks`.
    pub fn recorder(blocks: BTreeSet<usize>) -> Self {
        PrefixMemo {
            streams: Arc::default(),
            role: Role::Record(blocks),
        }
    }

    /// The same streams, for a case whose hooks all sit at block `from` or later.
    pub fn replayer(&self, from: usize) -> Self {
        PrefixMemo {
            streams: Arc::clone(&self.streams),
            role: Role::Replay(from),
        }
    }

    /// Streams held (a count, for tests and logs).
    pub fn len(&self) -> usize {
        self.streams.lock().map(|s| s.at.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls that started from a recorded stream so far.
    pub fn replayed(&self) -> usize {
        self.streams.lock().map(|s| s.replayed).unwrap_or(0)
    }

    /// Begin a forward call of `ids` onto `kv` under `hooks`. The memo stands aside
    /// (records and replays nothing) where the hooks break its premise: a recording
    /// case with writers, a replaying one with a hook before its start block.
    pub(crate) fn call(
        &self,
        ids: &Tensor,
        kv: Option<&KvCache>,
        hooks: &super::Hooks,
    ) -> candle_core::Result<Call> {
        let active = match self.role {
            Role::Record(_) => hooks.writers().is_empty(),
            Role::Replay(from) => hooks.first_block().is_none_or(|f| f >= from),
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ids.dims().hash(&mut h);
        ids.flatten_all()?.to_vec1::<u32>()?.hash(&mut h);
        match kv {
            Some(kv) => {
                kv.lineage().hash(&mut h);
                kv.pads().hash(&mut h);
                kv.len().hash(&mut h);
            }
            None => u64::MAX.hash(&mut h),
        }
        Ok(Call {
            memo: self.clone(),
            key: h.finish(),
            active,
        })
    }
}

/// One forward call under a memo.
pub(crate) struct Call {
    memo: PrefixMemo,
    key: u64,
    active: bool,
}

impl Call {
    /// The key the call's cache takes as its lineage afterwards.
    pub(crate) fn key(&self) -> u64 {
        self.key
    }

    /// For a replaying case, the block to start at and the stream entering it, when the
    /// unmodified case recorded this call. `Err` when it did not and `kv` lacks its
    /// first layers (an earlier call on it was replayed): nothing could compute them.
    pub(crate) fn replay(
        &self,
        kv: Option<&KvCache>,
    ) -> candle_core::Result<Option<(usize, Tensor)>> {
        let Role::Replay(from) = self.memo.role else {
            return Ok(None);
        };
        let found = if !self.active {
            None
        } else {
            self.memo.streams.lock().ok().and_then(|mut s| {
                let x = s.at.get(&(self.key, from)).cloned();
                s.replayed += usize::from(x.is_some());
                x
            })
        };
        match found {
            Some(x) => Ok(Some((from, x))),
            None if kv.is_some_and(KvCache::has_holes) => candle_core::bail!(
                "prefix memo: no recorded stream for a call on a cache whose first \
                 {from} layers were skipped"
            ),
            None => Ok(None),
        }
    }

    /// Keep `x`, the stream entering block `l`, if this case records that block.
    pub(crate) fn record(&self, l: usize, x: &Tensor) {
        if let Role::Record(blocks) = &self.memo.role {
            if self.active && blocks.contains(&l) {
                if let Ok(mut s) = self.memo.streams.lock() {
                    s.at.insert((self.key, l), x.clone());
                }
            }
        }
    }
}

/// Begin a model's forward call of `ids` onto `kv`: the memo's call (when `hooks` carry
/// a memo) and, when it replays, the block to start at with the stream entering it.
pub(crate) fn begin(
    ids: &Tensor,
    kv: Option<&KvCache>,
    hooks: &super::Hooks,
) -> candle_core::Result<(Option<Call>, Option<(usize, Tensor)>)> {
    let Some(memo) = hooks.memo() else {
        return Ok((None, None));
    };
    let call = memo.call(ids, kv, hooks)?;
    let start = call.replay(kv)?;
    Ok((Some(call), start))
}

/// End a forward call: the cache it filled takes the call's key as its lineage.
pub(crate) fn finish(call: Option<Call>, kv: Option<&mut KvCache>) {
    if let (Some(c), Some(kv)) = (call, kv) {
        kv.set_lineage(c.key());
    }
}
