//! `cargo xtask bench model`: our transformer on SmolLM2 beside candle-transformers'
//! llama (f32, the same dequantized tensors) and quantized llama (the GGUF as shipped),
//! and beside the memory-bandwidth bound for decode.
//!
//! Everything runs in one process and the implementations are interleaved within every
//! repetition, so a burst of load from another build hits all of them alike.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use scalpel::model::gguf::{self, GgufFile};
use scalpel::model::llama::LlamaConfig;
use scalpel::model::source::LocalModel;
use scalpel::model::LoadedModel;

use super::bandwidth::Buffer;
use super::impls::{CandleF32, CandleQuant, Lm, Ours};
use super::machine;
use super::report::{self, Agreement, BandwidthSamples, Results, Series};
use super::workloads::{self, DECODE_STEPS, N_SAMPLES, PREFILL_LEN, SAMPLE_TOKENS};

/// Timed repetitions of every workload, each after one warm-up run.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    reps: super::reps::Reps,
}

const DEFAULT_REPS: usize = 5;
const BANDWIDTH_BUFFER: usize = 1 << 30;
const PREFILL_BATCHES: [usize; 2] = [1, 8];

pub fn run(args: &Args) -> Result<()> {
    let reps = args.reps.count(DEFAULT_REPS);
    let root = machine::workspace_root();
    let started = machine::unix_now();
    let load_before = machine::loadavg();
    let dev = Device::Cpu;

    let path = scalpel::assets::ensure_main_file(scalpel::assets::SMOLLM2_ID)
        .context("locating the shipped SmolLM2 GGUF")?;
    eprintln!("model file: {}", path.display());

    let ours = LoadedModel::load_local(
        scalpel::assets::SMOLLM2_ID,
        &LocalModel::Gguf(path.clone()),
        &dev,
    )?;
    let (cfg, weights) = {
        let mut g = GgufFile::open(&path)?;
        let cfg = gguf::llama_config(&g)?;
        let w = gguf::llama_weights(&mut g, &cfg, &dev)?;
        (cfg, w)
    };
    let quant = quant_facts(&path)?;
    let candle_f32 = CandleF32::new(weights, &cfg, &dev)?;
    let candle_q = CandleQuant::load(&path, &quant.label, &dev)?;
    let ours = Ours::new(ours);

    let prompt = workloads::prompt_ids(&ours.model, PREFILL_LEN)?;
    let sample_prompt = ours.model.encode(workloads::SAMPLE_PROMPT)?;

    // Ours first: the agreement check and the sampling workload rely on it.
    let mut lms: Vec<Box<dyn Lm>> = vec![Box::new(ours), Box::new(candle_f32), Box::new(candle_q)];
    let agreement = check_agreement(&mut lms, &prompt, &dev)?;
    report::print_agreement(&agreement);

    let f32_bytes = f32_bytes_per_token(&cfg);
    let bytes_per_token = [f32_bytes, f32_bytes, quant.bytes_per_token];

    let buf = Buffer::new(BANDWIDTH_BUFFER);
    let threads = candle_core::utils::get_num_threads();
    let mut bw = BandwidthSamples {
        buffer_bytes: buf.bytes(),
        threads,
        single: vec![],
        multi: vec![],
    };

    // One series per (workload, implementation); the index vectors say which is which.
    let mut series: Vec<Series> = Vec::new();
    let mut add = |s: Series| {
        series.push(s);
        series.len() - 1
    };
    let prefill_rows: Vec<Vec<usize>> = PREFILL_BATCHES
        .iter()
        .map(|&b| {
            lms.iter()
                .map(|lm| {
                    add(Series::new(
                        format!("prefill {PREFILL_LEN} tok, batch {b}"),
                        lm.name(),
                        b * PREFILL_LEN,
                    ))
                })
                .collect()
        })
        .collect();
    let decode_rows: Vec<usize> = lms
        .iter()
        .zip(bytes_per_token)
        .map(|(lm, bytes)| {
            let mut s = Series::new(
                format!("greedy decode {DECODE_STEPS} tok, batch 1"),
                lm.name(),
                DECODE_STEPS,
            );
            s.bytes_per_token = Some(bytes);
            add(s)
        })
        .collect();
    let sample_row = add(Series::new(
        format!(
            "sample {N_SAMPLES}×{SAMPLE_TOKENS} tok, one prefill of {}",
            sample_prompt.len()
        ),
        lms[0].name(),
        N_SAMPLES * SAMPLE_TOKENS,
    ));
    let unembed_row = add(Series::new(
        format!("(unembed all {PREFILL_LEN} positions, batch 1)"),
        lms[0].name(),
        PREFILL_LEN,
    ));

    let batches: Vec<Tensor> = PREFILL_BATCHES
        .iter()
        .map(|&b| workloads::batch_ids(&prompt, b, &dev))
        .collect::<Result<_>>()?;
    let mut greedy: Vec<Vec<u32>> = vec![vec![]; lms.len()];
    let mut load_samples = Vec::new();

    // Repetition 0 is the warm-up: it pages the weights in, sizes candle's scratch
    // buffers and starts the thread pool; its timings are dropped.
    for rep in 0..=reps {
        let timed = rep > 0;
        if timed {
            eprintln!("repetition {rep}/{reps}");
        } else {
            eprintln!("warm-up");
        }
        let single = buf.read_single();
        let multi = buf.read_parallel(threads);
        eprintln!(
            "  memory read: {:.1} GB/s on 1 thread, {:.1} GB/s on {threads}",
            single / 1e9,
            multi / 1e9
        );
        if timed {
            bw.single.push(single);
            bw.multi.push(multi);
        }
        // Rotate which implementation goes first, so none always runs right after
        // the bandwidth pass or right before another.
        let order: Vec<usize> = (0..lms.len()).map(|k| (k + rep) % lms.len()).collect();
        for (ids, rows) in batches.iter().zip(&prefill_rows) {
            for &i in &order {
                let s = &mut series[rows[i]];
                if s.error.is_none() {
                    let r = workloads::prefill(lms[i].as_mut(), ids).map(|secs| (secs, s.tokens));
                    record(s, timed, r);
                }
            }
        }
        for &i in &order {
            let s = &mut series[decode_rows[i]];
            if s.error.is_none() {
                let r = workloads::decode(lms[i].as_mut(), &prompt, &dev).map(|d| {
                    greedy[i] = d.tokens;
                    (d.secs, DECODE_STEPS)
                });
                record(s, timed, r);
            }
        }
        let model = lms[0]
            .scalpel()
            .context("the first implementation must be ours")?;
        let s = &mut series[sample_row];
        if s.error.is_none() {
            record(s, timed, workloads::sample(model, &sample_prompt));
        }
        let s = &mut series[unembed_row];
        if s.error.is_none() {
            let r = workloads::unembed_all(model, &batches[0]).map(|secs| (secs, s.tokens));
            record(s, timed, r);
        }
        if let Some(l) = machine::loadavg() {
            load_samples.push(l);
        }
    }

    let agreement = Agreement {
        greedy_same_prefix: greedy[1..]
            .iter()
            .map(|g| common_prefix(&greedy[0], g))
            .collect(),
        greedy_len: greedy[0].len(),
        ..agreement
    };

    let (commit, dirty) = match machine::git_commit(&root) {
        Some((c, d)) => (Some(c), d),
        None => (None, false),
    };
    let results = Results {
        started,
        finished: machine::unix_now(),
        reps,
        quick: args.reps.quick,
        cores: machine::cores(),
        threads,
        cpu_model: machine::cpu_model(),
        cpu_features: machine::cpu_features(),
        load_before,
        load_after: machine::loadavg(),
        load_samples,
        candle_version: machine::locked_version(&root, "candle-core"),
        candle_transformers_version: machine::locked_version(&root, "candle-transformers"),
        git_commit: commit,
        git_dirty: dirty,
        model_path: path.display().to_string(),
        model_file_bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
        model_config: format!("{cfg:?}"),
        quant_types: quant.types,
        f32_bytes_per_token: f32_bytes,
        quant_bytes_per_token: quant.bytes_per_token,
        prefill_prompt_len: prompt.len(),
        sample_prompt_len: sample_prompt.len(),
        agreement,
        bandwidth: bw,
        ours: lms[0].name().to_string(),
        series,
    };
    report::print_table(&results);
    let (json, md) = report::write(&results, &root)?;
    eprintln!("wrote {}\nwrote {}", json.display(), md.display());
    Ok(())
}

/// Keep one run's time (unless warming up) and show it; a failure marks the series as
/// unsupported and it is not run again.
fn record(s: &mut Series, timed: bool, r: Result<(f64, usize)>) {
    match r {
        Ok((secs, tokens)) => {
            s.tokens = tokens;
            if timed {
                s.secs.push(secs);
            }
            eprintln!(
                "  {:<44} {:<34} {:>9.1} tok/s  ({:.3} s)",
                s.workload,
                s.implementation,
                tokens as f64 / secs,
                secs
            );
        }
        Err(e) => {
            // candle errors carry a backtrace when RUST_BACKTRACE is set; the first line
            // says what went wrong.
            let msg = format!("{e:#}");
            let msg = msg.lines().next().unwrap_or_default().trim().to_string();
            eprintln!(
                "  {:<44} {:<34} failed: {msg}",
                s.workload, s.implementation
            );
            s.error = Some(msg);
        }
    }
}

/// Last-position logits on the prefill prompt: ours against each other implementation.
/// The f32 one runs the same weights and should agree to float rounding; the quantized
/// one rounds activations to 8 bits inside its matmuls and will not.
fn check_agreement(lms: &mut [Box<dyn Lm>], prompt: &[u32], dev: &Device) -> Result<Agreement> {
    let ids = Tensor::new(prompt, dev)?.unsqueeze(0)?;
    let mut rows = Vec::new();
    for lm in lms.iter_mut() {
        lm.reset()?;
        rows.push(lm.step(&ids)?.squeeze(0)?.to_vec1::<f32>()?);
    }
    let ours = &rows[0];
    let scale = ours.iter().fold(0f32, |m, x| m.max(x.abs()));
    let argmax0 = scalpel::model::generate::argmax(ours);
    let mut max_abs_diff = Vec::new();
    let mut argmax_same = Vec::new();
    for r in &rows[1..] {
        anyhow::ensure!(r.len() == ours.len(), "vocabulary sizes differ");
        let d = ours
            .iter()
            .zip(r)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        max_abs_diff.push(d as f64);
        argmax_same.push(scalpel::model::generate::argmax(r) == argmax0);
    }
    Ok(Agreement {
        against: lms[1..].iter().map(|l| l.name().to_string()).collect(),
        max_abs_diff,
        argmax_same,
        logit_scale: scale as f64,
        greedy_same_prefix: vec![],
        greedy_len: 0,
    })
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Bytes of f32 weights a decode step reads: every matrix of every block plus the
/// unembedding. Norm vectors and the one embedding row are a few KB and left out.
pub fn f32_bytes_per_token(c: &LlamaConfig) -> f64 {
    let (d, dh) = (c.d_model, c.d_head);
    let block = 2 * c.n_heads * dh * d + 2 * c.n_kv_heads * dh * d + 3 * c.d_mlp * d;
    ((c.n_layers * block + c.vocab_size * d) * 4) as f64
}

struct QuantFacts {
    /// e.g. `Q4_1` or `Q4_1+Q6K`, from the block matrices and the output matrix.
    label: String,
    /// Stored bytes per dtype over the same matrices.
    types: BTreeMap<String, u64>,
    bytes_per_token: f64,
}

/// Bytes of quantized weights a decode step reads, from the file's own tensor directory
/// (not assumed from the name: converters keep some tensors at higher precision).
fn quant_facts(path: &Path) -> Result<QuantFacts> {
    let mut f = std::fs::File::open(path)?;
    let ct = gguf_file::Content::read(&mut f)?;
    let out_name = if ct.tensor_infos.contains_key("output.weight") {
        "output.weight"
    } else {
        // Tied embeddings: quantized_llama multiplies by the quantized embedding table.
        "token_embd.weight"
    };
    let mut types: BTreeMap<String, u64> = BTreeMap::new();
    for (name, info) in &ct.tensor_infos {
        let matrix = name.starts_with("blk.") && info.shape.rank() == 2;
        if !(matrix || name == out_name) {
            continue;
        }
        let dt = info.ggml_dtype;
        let bytes = info.shape.elem_count() / dt.block_size() * dt.type_size();
        *types.entry(format!("{dt:?}")).or_default() += bytes as u64;
    }
    let label = types.keys().cloned().collect::<Vec<_>>().join("+");
    let total: u64 = types.values().sum();
    Ok(QuantFacts {
        label,
        types,
        bytes_per_token: total as f64,
    })
}
