//! What the hardware allows each workload: the minimum FLOPs (and, for decoding, bytes)
//! it needs, against the best matmul throughput either library reached here and the
//! measured memory bandwidth. A rate above the bound would mean the work was skipped.

use serde_json::{json, Value};

use scalpel::model::ModelInfo;

use super::super::bandwidth::Buffer;

/// Work of each workload, counted from the inputs.
#[derive(Debug, Clone)]
pub struct Facts {
    /// FLOPs of one token through the layer stack (projections and MLP).
    layer_flops: f64,
    /// FLOPs of one position's unembedding.
    unembed_flops: f64,
    /// FLOPs of attention scores and mixing per (query, key) pair, over all layers.
    attn_pair_flops: f64,
    /// Bytes of f32 weights read per decode step (every matrix, the embedding once).
    pub weight_bytes: f64,
    /// KV-cache bytes per cached position (all layers, keys and values).
    kv_bytes: f64,
    /// Minimal FLOPs per workload.
    pub flops: Vec<(String, f64)>,
    /// Decode steps of the generation workload: (rows, context length) per step.
    steps: Vec<(usize, usize)>,
    /// Prompt lengths of the generation workload (each prefilled once).
    gen_prompts: Vec<usize>,
    /// Batch-1 greedy decoding steps of the generation workload's greedy check.
    greedy_steps: usize,
    gen_tokens: usize,
}

fn ids_len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

impl Facts {
    pub fn new(info: &ModelInfo, spec: &Value) -> Facts {
        let d = info.d_model as f64;
        let q = (info.n_heads * info.d_head) as f64;
        let kv = (info.n_kv_heads * info.d_head) as f64;
        let layer_params = d * q + 2.0 * d * kv + q * d + 3.0 * d * info.d_mlp as f64;
        let nl = info.n_layers as f64;
        let mut f = Facts {
            layer_flops: 2.0 * nl * layer_params,
            unembed_flops: 2.0 * d * info.vocab_size as f64,
            attn_pair_flops: 4.0 * nl * q,
            weight_bytes: 4.0 * (nl * layer_params + d * info.vocab_size as f64),
            kv_bytes: 4.0 * nl * 2.0 * kv,
            flops: vec![],
            steps: vec![],
            gen_prompts: vec![],
            greedy_steps: 0,
            gen_tokens: 0,
        };
        // Prefill of n tokens, unembedding `scored` positions.
        let prefill = |f: &Facts, n: usize, scored: usize| {
            let n = n as f64;
            n * f.layer_flops
                + n * (n + 1.0) / 2.0 * f.attn_pair_flops
                + scored as f64 * f.unembed_flops
        };
        // Log-likelihoods: each item's context once, then its continuations.
        let mut ll = 0.0;
        for item in spec["loglik"]["items"].as_array().into_iter().flatten() {
            let pairs = item["pairs"].as_array().cloned().unwrap_or_default();
            let ctx = pairs.first().map_or(0, |p| ids_len(&p[0]));
            let conts: usize = pairs.iter().map(|p| ids_len(&p[1])).sum();
            ll += prefill(&f, ctx, 0)
                + conts as f64 * (f.layer_flops + f.unembed_flops)
                + pairs
                    .iter()
                    .map(|p| ids_len(&p[1]) as f64 * (ctx as f64) * f.attn_pair_flops)
                    .sum::<f64>();
        }
        f.flops.push(("loglik".into(), ll));
        let g = &spec["generate"];
        let rows = g["samples"].as_u64().unwrap_or(0) as usize;
        let new = g["max_new_tokens"].as_u64().unwrap_or(0) as usize;
        let mut gen = 0.0;
        for p in g["prompts"].as_array().into_iter().flatten() {
            let t = ids_len(p);
            f.gen_prompts.push(t);
            gen += prefill(&f, t, 1);
            for s in 1..new {
                f.steps.push((rows, t + s));
                gen += rows as f64
                    * (f.layer_flops + f.unembed_flops + (t + s) as f64 * f.attn_pair_flops);
            }
            f.gen_tokens += rows * new;
        }
        f.flops.push(("generate".into(), gen));
        let greedy_prompts = (g["greedy_check"].as_u64().unwrap_or(0) as usize)
            .min(g["prompts"].as_array().map_or(0, Vec::len));
        f.greedy_steps = greedy_prompts * new;
        let tr = &spec["trace"];
        let t = ids_len(&tr["ids"]);
        let k = tr["samples"].as_u64().unwrap_or(0) as usize;
        let sites = tr["n_layers"].as_u64().unwrap_or(0) as usize * t;
        // The clean run (all positions unembedded is not needed: last only), then one
        // corrupted run per site and noise sample, plus the unrestored one.
        let per_row = prefill(&f, t, 1);
        f.flops
            .push(("trace".into(), per_row * (1 + (sites + 1) * k) as f64));
        let mut ppl = 0.0;
        for w in spec["perplexity"]["windows"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let n = ids_len(&w["context"]) + ids_len(&w["continuation"]) - 1;
            ppl += prefill(&f, n, ids_len(&w["continuation"]));
        }
        f.flops.push(("perplexity".into(), ppl));
        f
    }

    /// The highest rate (units/s) the hardware allows, and what bounds it.
    pub fn bound(
        &self,
        workload: &str,
        units: usize,
        flops_per_s: f64,
        bytes_per_s: f64,
    ) -> Option<(f64, &'static str)> {
        match workload {
            "generate" => {
                let prefill: f64 = self
                    .gen_prompts
                    .iter()
                    .map(|&t| (t as f64 * self.layer_flops) / flops_per_s)
                    .sum();
                let (mut secs, mut mem_bound) = (prefill, 0usize);
                for &(rows, ctx) in &self.steps {
                    let fl = rows as f64
                        * (self.layer_flops
                            + self.unembed_flops
                            + ctx as f64 * self.attn_pair_flops);
                    let by = self.weight_bytes + rows as f64 * ctx as f64 * self.kv_bytes;
                    let (tc, tm) = (fl / flops_per_s, by / bytes_per_s);
                    if tm > tc {
                        mem_bound += 1;
                    }
                    secs += tc.max(tm);
                }
                let what = if mem_bound * 2 > self.steps.len() {
                    "memory"
                } else {
                    "compute"
                };
                Some((self.gen_tokens as f64 / secs, what))
            }
            "decode" => {
                // Batch-1 greedy decoding: every step reads every weight once.
                let secs = self.greedy_steps as f64 * self.weight_bytes / bytes_per_s;
                Some((units as f64 / secs, "memory"))
            }
            w => {
                let fl = self.flops.iter().find(|(n, _)| n == w)?.1;
                Some((units as f64 / (fl / flops_per_s), "compute"))
            }
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "weight_bytes_f32": self.weight_bytes,
            "layer_flops_per_token": self.layer_flops,
            "unembed_flops_per_position": self.unembed_flops,
            "flops": self.flops.iter().map(|(n, f)| (n.clone(), json!(f))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// Best memory read bandwidth (bytes/s) over a few passes on `threads` threads.
pub fn bandwidth(threads: usize) -> f64 {
    let buf = Buffer::new(1 << 30);
    buf.read_parallel(threads);
    (0..3)
        .map(|_| buf.read_parallel(threads).max(buf.read_single()))
        .fold(0.0, f64::max)
}
