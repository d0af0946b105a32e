//! Log-likelihood of continuations given contexts, with lm-evaluation-harness semantics,
//! so that every multiple-choice task scores exactly as the harness does:
//!
//! - trailing whitespace of the context moves to the front of the continuation;
//! - the context's tokens are `tokenize(context)`, the continuation's are those of
//!   `tokenize(context + continuation)` past `len(tokenize(context))`. When BPE merges
//!   across the boundary the two do not concatenate to the whole string's tokens (the
//!   harness then drops part of the continuation); we keep that quirk so that scores
//!   line up with published harness numbers;
//! - an empty context is replaced by the prefix token (BOS, else EOS);
//! - the input is `(context + continuation)[-(max_len + 1):][:-1]`, and the score is the
//!   summed log-probability of the continuation tokens plus whether each was the argmax.

use candle_core::Tensor;

use crate::model::generate::pad_right;
use crate::model::token_scores;
use crate::model::{Hooks, KvCache, LoadedModel, LogitsAt, ModelError, Positions};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoglikRequest {
    pub context: String,
    pub continuation: String,
}

impl LoglikRequest {
    pub fn new(context: impl Into<String>, continuation: impl Into<String>) -> Self {
        LoglikRequest {
            context: context.into(),
            continuation: continuation.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoglikResponse {
    /// Summed natural-log probability of the continuation tokens.
    pub logprob: f64,
    /// Every continuation token was the model's argmax.
    pub is_greedy: bool,
    /// Number of continuation tokens scored.
    pub n_tokens: usize,
}

/// Context and continuation token ids, split as the harness splits them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPair {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
}

pub fn encode_pair(model: &LoadedModel, req: &LoglikRequest) -> Result<EncodedPair, ModelError> {
    let tok = &model.tokenizer;
    if req.continuation.is_empty() {
        return Err(ModelError::EmptyPrompt);
    }
    if req.context.is_empty() {
        let prefix = tok
            .bos_id
            .or(tok.eos_id)
            .ok_or_else(|| ModelError::Tokenizer {
                path: tok.source().to_path_buf(),
                message: "empty context needs a BOS or EOS token to stand for it".into(),
            })?;
        return Ok(EncodedPair {
            context: vec![prefix],
            continuation: tok.encode(&req.continuation)?,
        });
    }
    let trimmed = req.context.trim_end();
    let n_spaces = req.context.len() - trimmed.len();
    let (context, continuation) = if n_spaces > 0 {
        (
            trimmed.to_string(),
            format!("{}{}", &req.context[trimmed.len()..], req.continuation),
        )
    } else {
        (req.context.clone(), req.continuation.clone())
    };
    let whole = tok.encode_input(&format!("{context}{continuation}"))?;
    let ctx = tok.encode_input(&context)?;
    let split = ctx.len().min(whole.len());
    Ok(EncodedPair {
        context: ctx,
        continuation: whole[split..].to_vec(),
    })
}

/// Tokens one batch of multiple-choice items may run (contexts and the rest of every
/// choice) when its items are short. Every product reads, and BLAS repacks, each weight
/// once per call, so eight BBQ contexts with their twelve short answers paid for the
/// weights over too few rows. Measured at one thread (`scalpel eval --split eval`):
/// BBQ, 120 items, 44.7 s at 8 items per batch, 40.7 s at 16, 40.9 s at 32, 39.5–42.5 s
/// with this bound; BoolQ's 200-token passages ran slower with more than 8 per batch
/// (60 items: 26.7 s at 8, 36.3 s at 32: the activations outgrow the caches) and keep
/// 8 under it. So the bound is on tokens, not items. Whole sequences (CrowS-Pairs'
/// sentences, perplexity windows) keep `batch_size`.
const SHARED_BATCH_TOKENS: usize = 1536;

/// Score `reqs`, `batch_size` sequences per forward pass (more where short
/// multiple-choice contexts fit [`SHARED_BATCH_TOKENS`]).
pub fn loglikelihood(
    model: &LoadedModel,
    reqs: &[LoglikRequest],
    batch_size: usize,
    hooks: &Hooks,
) -> Result<Vec<LoglikResponse>, ModelError> {
    let pairs = reqs
        .iter()
        .map(|r| encode_pair(model, r))
        .collect::<Result<Vec<_>, _>>()?;
    loglikelihood_tokens(model, &pairs, batch_size, hooks)
}

/// Score token pairs. Consecutive pairs with the same context (the choices of one
/// multiple-choice item) share it: the context runs once into a KV cache and only the
/// continuations run per choice. Up to `batch_size` such items run together, their
/// contexts left-padded into one prefill (longest first, as the harness orders them, so
/// that neighbours pad little) and all their choices in one continuation pass. Other
/// pairs are scored `batch_size` at a time as whole sequences.
pub fn loglikelihood_tokens(
    model: &LoadedModel,
    pairs: &[EncodedPair],
    batch_size: usize,
    hooks: &Hooks,
) -> Result<Vec<LoglikResponse>, ModelError> {
    if pairs
        .iter()
        .any(|p| p.continuation.is_empty() || p.context.is_empty())
    {
        return Err(ModelError::EmptyPrompt);
    }
    let max_len = model.model.info().max_positions;
    let mut out: Vec<Option<LoglikResponse>> = vec![None; pairs.len()];
    let mut shared = Vec::new();
    let mut plain = Vec::new();
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i + 1;
        while j < pairs.len() && pairs[j].context == pairs[i].context {
            j += 1;
        }
        let longest = pairs[i..j]
            .iter()
            .map(|p| p.continuation.len())
            .max()
            .unwrap_or(0);
        // A context of one token (a rolling window's prefix, an empty context's BOS)
        // leaves nothing to share unless the choices begin alike (CrowS-Pairs' two
        // sentences, up to the word they differ in).
        let common = common_prefix(&pairs[i..j]);
        let shareable = pairs[i].context.len() + common > 1;
        if j - i > 1 && shareable && pairs[i].context.len() + longest <= max_len {
            shared.push(Item {
                pairs: i..j,
                common,
                stem: 0,
            });
        } else {
            plain.extend(i..j);
        }
        i = j;
    }
    // Position selectors mean different tokens in differently padded rows: such hooks
    // score one item at a time.
    let per_item = if hooks
        .writers()
        .iter()
        .any(|w| w.positions != Positions::All)
    {
        1
    } else {
        batch_size.max(1)
    };
    // The part shared by an item's choices: its context and their common beginning.
    let shared_len = |g: &Item| pairs[g.pairs.start].context.len() + g.common;
    // Stem groups stay whole in a batch (one item per batch shares nothing).
    let mut groups = if per_item > 1 {
        stem_groups(pairs, shared)
    } else {
        shared.into_iter().map(|g| vec![g]).collect()
    };
    groups.sort_by_key(|g| std::cmp::Reverse(g.iter().map(shared_len).max()));
    // A batch takes `per_item` items, or more while the tokens it runs (each item's
    // shared part and the rest of each of its choices) stay within SHARED_BATCH_TOKENS.
    let tokens = |g: &Item| {
        shared_len(g)
            + pairs[g.pairs.clone()]
                .iter()
                .map(|p| p.continuation.len() - g.common)
                .sum::<usize>()
    };
    // Each batch with the tokens it runs so far.
    let mut batches: Vec<(Vec<Item>, usize)> = Vec::new();
    for group in groups {
        let t: usize = group.iter().map(tokens).sum();
        match batches.last_mut() {
            Some((c, ct))
                if c.len() + group.len() <= per_item
                    || (per_item > 1 && *ct + t <= SHARED_BATCH_TOKENS) =>
            {
                c.extend(group);
                *ct += t;
            }
            _ => batches.push((group, t)),
        }
    }
    let chunks: Vec<Vec<Item>> = batches.into_iter().map(|(c, _)| c).collect();
    for chunk in &chunks {
        // Padded to the longest shared part, the batch must still fit the window with
        // the longest rest of a choice, and padded to the longest stem with the longest
        // rest of a shared part; if not, its items run alone (each fits by itself).
        let width = chunk.iter().map(shared_len).max();
        let longest = chunk
            .iter()
            .flat_map(|g| {
                pairs[g.pairs.clone()]
                    .iter()
                    .map(|p| p.continuation.len() - g.common)
            })
            .max();
        let stems = chunk
            .iter()
            .map(|g| {
                if g.stem > 0 {
                    g.stem
                } else {
                    shared_len(g) - 1
                }
            })
            .max()
            .unwrap_or(0);
        let grown = chunk
            .iter()
            .filter(|g| g.stem > 0)
            .map(|g| shared_len(g) - 1 - g.stem)
            .max()
            .unwrap_or(0);
        let fits =
            width.zip(longest).is_some_and(|(w, l)| w + l <= max_len) && stems + grown <= max_len;
        for items in chunk.chunks(if fits { chunk.len() } else { 1 }) {
            let scored = score_shared_contexts(model, pairs, items, hooks)?;
            for (k, r) in items.iter().flat_map(|g| g.pairs.clone()).zip(scored) {
                out[k] = Some(r);
            }
        }
    }
    // Longest first, as the harness orders them, so that a batch's rows pad little.
    plain.sort_by_key(|&k| std::cmp::Reverse(pairs[k].context.len() + pairs[k].continuation.len()));
    for chunk in plain.chunks(batch_size.max(1)) {
        let group: Vec<&EncodedPair> = chunk.iter().map(|&k| &pairs[k]).collect();
        for (&k, r) in chunk.iter().zip(score_batch(model, &group, hooks)?) {
            out[k] = Some(r);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

/// How many tokens every continuation of `group` begins with, short of the whole of
/// any: each choice keeps at least one token predicted from the shared part.
fn common_prefix(group: &[EncodedPair]) -> usize {
    let Some((first, rest)) = group.split_first() else {
        return 0;
    };
    let shortest = group
        .iter()
        .map(|p| p.continuation.len())
        .min()
        .unwrap_or(0);
    rest.iter().fold(shortest.saturating_sub(1), |n, p| {
        let same = first.continuation.iter().zip(&p.continuation);
        n.min(same.take_while(|(a, b)| a == b).count())
    })
}

/// A multiple-choice item: its pairs (one context), how many tokens all their
/// continuations begin with ([`common_prefix`]), and how many tokens its context shares
/// with the other items of its stem group ([`stem_groups`]; 0 when it has none).
struct Item {
    pairs: std::ops::Range<usize>,
    common: usize,
    stem: usize,
}

impl Item {
    /// The part its choices share: its context and their common beginning.
    fn shared_tokens(&self, pairs: &[EncodedPair]) -> Vec<u32> {
        let p = &pairs[self.pairs.start];
        p.context
            .iter()
            .chain(&p.continuation[..self.common])
            .copied()
            .collect()
    }
}

/// The fewest tokens worth prefilling once for several items: below this the extra
/// calls a stem costs outweigh what it saves.
const MIN_STEM: usize = 16;

/// Items whose contexts begin with the same tokens (BBQ's questions on one context, and
/// its disambiguated contexts, which begin with the ambiguous one) share that
/// beginning, their *stem*, which runs once for all of them. Items are ordered by their
/// shared parts so that neighbours share most; a run of neighbours forms a group while
/// the stem all share stays at least [`MIN_STEM`] tokens and short of every member's
/// context (the tokens that predict the choices stay each item's own). Returns the
/// groups, each item's `stem` set (0 for an item alone).
fn stem_groups(pairs: &[EncodedPair], mut items: Vec<Item>) -> Vec<Vec<Item>> {
    let mut keyed: Vec<(Vec<u32>, Item)> = items
        .drain(..)
        .map(|g| (g.shared_tokens(pairs), g))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let room = |g: &Item| pairs[g.pairs.start].context.len().saturating_sub(1);
    let mut groups: Vec<Vec<Item>> = Vec::new();
    let mut lead: Option<(Vec<u32>, usize)> = None;
    for (t, mut g) in keyed {
        let shared = lead.as_ref().map_or(0, |(first, stem)| {
            let same = first.iter().zip(&t).take_while(|(a, b)| a == b).count();
            same.min(*stem).min(room(&g))
        });
        match (lead.as_mut(), groups.last_mut()) {
            (Some((_, stem)), Some(group)) if shared >= MIN_STEM => {
                *stem = shared;
                group.push(g);
                group.iter_mut().for_each(|m| m.stem = shared);
            }
            _ => {
                lead = Some((t, room(&g)));
                g.stem = 0;
                groups.push(vec![g]);
            }
        }
    }
    groups
}

/// Items `items`, scored together. An item's shared part is its context and the tokens
/// all its choices begin with; that part minus its last token fills a row of one
/// left-padded KV cache, and the logits that predict the choices' common tokens come
/// from this prefill, once for all of them. Items of one stem group ([`stem_groups`],
/// consecutive in `items`) prefill their stem once and continue it with the rest of
/// their shared part, one call per length, before their rows join the others'. Each
/// choice then continues from its item's row with `[last shared token]` and the rest of
/// its continuation but the last token, whose logits are exactly the ones that predict
/// that rest; choices whose rests have one length run together. Returns the pairs'
/// scores in the order of `items`.
fn score_shared_contexts(
    model: &LoadedModel,
    pairs: &[EncodedPair],
    items: &[Item],
    hooks: &Hooks,
) -> Result<Vec<LoglikResponse>, ModelError> {
    let m = model.model.as_ref();
    let pad = model.tokenizer.eos_id.unwrap_or(0);
    let shared: Vec<Vec<u32>> = items.iter().map(|g| g.shared_tokens(pairs)).collect();
    // The prefill's rows: one per stem group (its stem) and one per item without a stem
    // (its shared part but the last token). `row_of[r]` is item r's row.
    let mut prefill: Vec<&[u32]> = Vec::new();
    let mut row_of = Vec::with_capacity(items.len());
    for (r, (g, s)) in items.iter().zip(&shared).enumerate() {
        let same_stem = r > 0
            && g.stem > 0
            && items[r - 1].stem == g.stem
            && shared[r - 1][..g.stem] == s[..g.stem];
        if !same_stem {
            prefill.push(if g.stem > 0 {
                &s[..g.stem]
            } else {
                &s[..s.len() - 1]
            });
        }
        row_of.push(prefill.len() - 1);
    }
    let width = prefill.iter().map(|p| p.len()).max().unwrap_or(0);
    let pads: Vec<usize> = prefill.iter().map(|p| width - p.len()).collect();
    let mut kv = KvCache::left_padded(m.info().n_layers, pads.clone());
    // Per item, the scores of its choices' common tokens.
    let mut heads: Vec<Vec<(f64, bool)>> = vec![Vec::new(); items.len()];
    // Common token q of item r sits at shared index c + q (c its context's length),
    // predicted by the position before it; `at(r, first)` places that run for a call
    // whose first token is shared index `first`.
    let at = |r: usize, first: usize| {
        let p = &pairs[items[r].pairs.start];
        (
            p.context.len() - 1 - first,
            &p.continuation[..items[r].common],
        )
    };
    if width > 0 {
        let mut flat = Vec::with_capacity(prefill.len() * width);
        for (p, &padding) in prefill.iter().zip(&pads) {
            flat.extend(std::iter::repeat_n(pad, padding));
            flat.extend_from_slice(p);
        }
        let ids = Tensor::from_vec(flat, (prefill.len(), width), m.device())?;
        // Only items without a stem predict their common tokens in this call, each
        // from its own row.
        let mut alone_at: Vec<Option<usize>> = vec![None; prefill.len()];
        for (r, g) in items.iter().enumerate() {
            if g.stem == 0 {
                alone_at[row_of[r]] = Some(r);
            }
        }
        if alone_at.iter().flatten().any(|&r| items[r].common > 0) {
            let runs: Vec<(usize, &[u32])> = alone_at
                .iter()
                .zip(&pads)
                .map(|(&r, &padding)| match r {
                    Some(r) => {
                        let (start, cont) = at(r, 0);
                        (padding + start, cont)
                    }
                    None => (0, &[][..]),
                })
                .collect();
            let scored = score_runs(m, &ids, Some(&mut kv), hooks, &runs)?;
            for (&r, scored) in alone_at.iter().zip(scored) {
                if let Some(r) = r {
                    heads[r] = scored;
                }
            }
        } else {
            m.forward_at(&ids, Some(&mut kv), hooks, LogitsAt::Skip)?;
        }
    }
    // Items with a stem continue it with the rest of their shared part but its last
    // token, in one call per length of that rest, then all rows join in one cache.
    if items.iter().any(|g| g.stem > 0) {
        let mut by_len: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for (r, g) in items.iter().enumerate() {
            if g.stem > 0 {
                by_len
                    .entry(shared[r].len() - 1 - g.stem)
                    .or_default()
                    .push(r);
            }
        }
        let mut grown: Vec<(KvCache, Vec<usize>)> = Vec::new();
        for (&len, group) in &by_len {
            if len == 0 {
                continue;
            }
            let stem_rows: Vec<usize> = group.iter().map(|&r| row_of[r]).collect();
            let mut rest_kv = kv.select_rows(&stem_rows)?;
            let seqs: Vec<Vec<u32>> = group
                .iter()
                .map(|&r| shared[r][items[r].stem..shared[r].len() - 1].to_vec())
                .collect();
            let ids = pad_right(&seqs, pad, m.device())?;
            if group.iter().any(|&r| items[r].common > 0) {
                let runs: Vec<(usize, &[u32])> =
                    group.iter().map(|&r| at(r, items[r].stem)).collect();
                for (&r, scored) in
                    group
                        .iter()
                        .zip(score_runs(m, &ids, Some(&mut rest_kv), hooks, &runs)?)
                {
                    heads[r] = scored;
                }
            } else {
                m.forward_at(&ids, Some(&mut rest_kv), hooks, LogitsAt::Skip)?;
            }
            grown.push((rest_kv, group.clone()));
        }
        let source: Vec<(&KvCache, usize)> = (0..items.len())
            .map(|r| {
                grown
                    .iter()
                    .find_map(|(c, group)| group.iter().position(|&x| x == r).map(|j| (c, j)))
                    .unwrap_or((&kv, row_of[r]))
            })
            .collect();
        kv = KvCache::gather_left_padded(&source)?;
    }
    let rows: Vec<usize> = items
        .iter()
        .enumerate()
        .flat_map(|(r, g)| std::iter::repeat_n(r, g.pairs.len()))
        .collect();
    let chosen: Vec<(&[u32], &[u32])> = items
        .iter()
        .zip(&shared)
        .flat_map(|(g, s)| {
            pairs[g.pairs.clone()]
                .iter()
                .map(move |p| (&s[s.len() - 1..], &p.continuation[g.common..]))
        })
        .collect();
    // The choices continue in one call per length, so that no row is padded: BBQ's
    // twelve answers run from one to four tokens, and padding them to the longest made
    // a third of the continuation pass.
    let mut by_len: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (c, (_, rest)) in chosen.iter().enumerate() {
        by_len.entry(rest.len()).or_default().push(c);
    }
    let mut tails: Vec<Vec<(f64, bool)>> = vec![Vec::new(); chosen.len()];
    for group in by_len.values() {
        let item_rows: Vec<usize> = group.iter().map(|&c| rows[c]).collect();
        let mut kv = kv.select_rows(&item_rows)?;
        let seqs: Vec<Vec<u32>> = group
            .iter()
            .map(|&c| {
                let (last, rest) = chosen[c];
                last.iter()
                    .chain(&rest[..rest.len() - 1])
                    .copied()
                    .collect()
            })
            .collect();
        let ids = pad_right(&seqs, pad, m.device())?;
        let runs: Vec<(usize, &[u32])> = group.iter().map(|&c| (0, chosen[c].1)).collect();
        for (&c, tail) in group
            .iter()
            .zip(score_runs(m, &ids, Some(&mut kv), hooks, &runs)?)
        {
            tails[c] = tail;
        }
    }
    Ok(rows
        .iter()
        .zip(tails)
        .map(|(&r, tail)| {
            let whole: Vec<(f64, bool)> = heads[r].iter().copied().chain(tail).collect();
            response(&whole)
        })
        .collect())
}

/// Per-token scores of one continuation per row of `ids`: `(start, cont)` says that
/// the logits at positions `start .. start + cont.len()` of the row predict `cont`.
/// Only those positions are unembedded.
fn score_runs(
    m: &dyn crate::model::Transformer,
    ids: &Tensor,
    kv: Option<&mut KvCache>,
    hooks: &Hooks,
    runs: &[(usize, &[u32])],
) -> Result<Vec<Vec<(f64, bool)>>, ModelError> {
    let width = ids.dim(1)?;
    let rows: Vec<u32> = runs
        .iter()
        .enumerate()
        .flat_map(|(i, (start, cont))| {
            let first = i * width + start;
            (first..first + cont.len()).map(|r| r as u32)
        })
        .collect();
    let logits = m.forward_rows(ids, kv, hooks, &rows)?;
    score_in_turn(&logits, runs.iter().map(|(_, cont)| *cont))
}

/// Per-token scores of each of `conts` from `logits`, whose rows predict them one
/// continuation after another.
fn score_in_turn<'a>(
    logits: &Tensor,
    conts: impl Iterator<Item = &'a [u32]>,
) -> Result<Vec<Vec<(f64, bool)>>, ModelError> {
    let mut first = 0;
    conts
        .map(|cont| {
            let rows = logits.narrow(0, first, cont.len())?;
            first += cont.len();
            token_scores::from_logits(&rows, cont)
        })
        .collect()
}

/// Pairs scored as whole sequences in one right-padded batch, truncated on the left to
/// the model's window as the harness does.
fn score_batch(
    model: &LoadedModel,
    pairs: &[&EncodedPair],
    hooks: &Hooks,
) -> Result<Vec<LoglikResponse>, ModelError> {
    let max_len = model.model.info().max_positions;
    let pad = model.tokenizer.eos_id.unwrap_or(0);
    let mut inputs = Vec::with_capacity(pairs.len());
    let mut conts = Vec::with_capacity(pairs.len());
    for p in pairs {
        let mut whole: Vec<u32> = p.context.iter().chain(&p.continuation).copied().collect();
        if whole.len() > max_len + 1 {
            whole.drain(..whole.len() - (max_len + 1));
        }
        whole.pop();
        let n_cont = p.continuation.len().min(whole.len());
        inputs.push(whole);
        conts.push(&p.continuation[p.continuation.len() - n_cont..]);
    }
    // Positions len-n .. len of each sequence predict its n continuation tokens; the
    // model runs the sequences unpadded where it can.
    let mut rows = Vec::new();
    let mut at = 0;
    for (whole, cont) in inputs.iter().zip(&conts) {
        rows.extend((at + whole.len() - cont.len()..at + whole.len()).map(|r| r as u32));
        at += whole.len();
    }
    let targets: Vec<u32> = conts.concat();
    let scored = model
        .model
        .score_seqs(&inputs, pad, hooks, &rows, &targets)?;
    let mut rest = scored.as_slice();
    Ok(conts
        .iter()
        .map(|cont| {
            let (these, after) = rest.split_at(cont.len());
            rest = after;
            response(these)
        })
        .collect())
}

/// A continuation's score from its tokens' (log-probability, is argmax).
fn response(per_row: &[(f64, bool)]) -> LoglikResponse {
    LoglikResponse {
        logprob: per_row.iter().map(|(lp, _)| lp).sum(),
        is_greedy: per_row.iter().all(|(_, g)| *g),
        n_tokens: per_row.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[EncodedPair], k: usize, n: usize) -> Item {
        Item {
            pairs: k..k + n,
            common: common_prefix(&pairs[k..k + n]),
            stem: 0,
        }
    }

    /// Items whose contexts begin alike for at least `MIN_STEM` tokens group, with the
    /// stem they all share, short of each member's last context token; others stay alone.
    #[test]
    fn items_group_by_the_stem_their_contexts_share() {
        let base: Vec<u32> = (100..120).collect();
        let ctx = |tail: &[u32]| base.iter().chain(tail).copied().collect::<Vec<u32>>();
        let pair = |context: Vec<u32>, c: u32| EncodedPair {
            context,
            continuation: vec![c],
        };
        let pairs = vec![
            pair(ctx(&[1, 2]), 5),
            pair(ctx(&[1, 2]), 6),
            pair(ctx(&[3]), 5),
            pair(ctx(&[3]), 6),
            // Shares 18 tokens with the others, one short of its own context's end.
            pair(base[..19].to_vec(), 5),
            pair(base[..19].to_vec(), 6),
            // Shares 10: alone.
            pair(base[..10].iter().chain(&[9, 9, 9]).copied().collect(), 5),
            pair(base[..10].iter().chain(&[9, 9, 9]).copied().collect(), 6),
        ];
        let items: Vec<Item> = [0, 2, 4, 6].iter().map(|&k| item(&pairs, k, 2)).collect();
        let groups = stem_groups(&pairs, items);
        let mut shapes: Vec<(Vec<usize>, usize)> = groups
            .iter()
            .map(|g| {
                let mut starts: Vec<usize> = g.iter().map(|i| i.pairs.start).collect();
                starts.sort();
                (starts, g[0].stem)
            })
            .collect();
        shapes.sort();
        assert_eq!(shapes, vec![(vec![0, 2, 4], 18), (vec![6], 0)]);
        for g in &groups {
            assert!(g.iter().all(|i| i.stem == g[0].stem));
        }
    }
}
