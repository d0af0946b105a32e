//! Scalpel's side of `cargo xtask bench`: `xtask bench worker WORKLOAD`, one workload
//! once in a fresh process (so its peak memory is its own), run through the same code a
//! suite runs: the tasks' `run`, `generate`, the causal tracer. Prints one JSON object
//! shaped like the PyTorch worker's.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde_json::{json, Value};

use scalpel::model::generate::{generate, SamplingParams};
use scalpel::model::source::LocalModel;
use scalpel::model::{Hooks, LoadedModel};
use scalpel::tasks::sampling::prompt_seed;
use scalpel::tasks::{ItemScore, RunContext, Task};
use scalpel::trace::causal::Tracer;

use super::inputs::{self, *};

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// loglik, generate, trace, perplexity or matmul.
    workload: String,
}

pub fn load() -> Result<(LoadedModel, std::path::PathBuf)> {
    let path = scalpel::assets::ensure_main_file(scalpel::assets::SMOLLM2_ID)
        .context("locating the shipped SmolLM2 GGUF")?;
    let m = LoadedModel::load_local(
        scalpel::assets::SMOLLM2_ID,
        &LocalModel::Gguf(path.clone()),
        &Device::Cpu,
    )?;
    Ok((m, path))
}

pub fn run(args: &WorkerArgs) -> Result<()> {
    let t0 = Instant::now();
    let (secs, units, result, load_secs) = if args.workload == "matmul" {
        let (s, u) = matmul()?;
        (s, u, json!({}), 0.0)
    } else {
        let (model, _) = load()?;
        let load_secs = t0.elapsed().as_secs_f64();
        // As the PyTorch worker does: a first forward pays one-off costs.
        model.forward_ids(&[1, 2, 3, 4, 5, 6, 7, 8], &Hooks::new())?;
        let (s, u, r) = match args.workload.as_str() {
            "loglik" => loglik(&model)?,
            "generate" => generation(&model)?,
            "trace" => trace(&model)?,
            "perplexity" => perplexity(&model)?,
            other => bail!("unknown workload '{other}'"),
        };
        (s, u, r, load_secs)
    };
    println!(
        "{}",
        json!({
            "secs": secs,
            "units": units,
            "load_secs": load_secs,
            "peak_rss_bytes": peak_rss_bytes(),
            "result": result,
            "versions": {
                "scalpel": scalpel::store::VERSION,
                "threads": scalpel::machine::cores(),
                "matmul": scalpel::model::blas::backend().unwrap_or_else(|| "candle (gemm crate)".into()),
            },
        })
    );
    Ok(())
}

fn run_task(model: &LoadedModel, task: &dyn Task) -> Result<scalpel::tasks::TaskReport> {
    let mut progress = |_: usize, _: usize| {};
    let mut cx = RunContext::new(model, &mut progress);
    cx.batch_size = BATCH;
    Ok(task.run(&mut cx)?)
}

fn loglik(model: &LoadedModel) -> Result<(f64, usize, Value)> {
    let tasks = LOGLIK_TASKS
        .iter()
        .map(|(name, limit)| inputs::super_glue_task(name, *limit))
        .collect::<Result<Vec<_>>>()?;
    let t0 = Instant::now();
    let reports = tasks
        .iter()
        .map(|t| run_task(model, t))
        .collect::<Result<Vec<_>>>()?;
    let secs = t0.elapsed().as_secs_f64();
    let mut acc = serde_json::Map::new();
    let mut lls = Vec::new();
    let mut n = 0;
    for ((name, _), r) in LOGLIK_TASKS.iter().zip(&reports) {
        acc.insert(name.to_string(), json!(r.metrics.get("acc")));
        for it in &r.items {
            let ItemScore::Choice(c) = it else {
                bail!("{name}: not a multiple-choice item");
            };
            lls.extend(c.loglikelihoods.iter().copied());
            n += 1;
        }
    }
    Ok((secs, n, json!({"acc": acc, "loglikelihoods": lls})))
}

fn generation(model: &LoadedModel) -> Result<(f64, usize, Value)> {
    let rtp = inputs::text_task("realtoxicityprompts", GEN_PROMPTS)?;
    let texts = (0..rtp.len())
        .map(|i| rtp.item_text(i).context("RTP prompt text"))
        .collect::<Result<Vec<_>>>()?;
    let prompts = texts
        .iter()
        .map(|t| model.encode(t))
        .collect::<Result<Vec<_>, _>>()?;
    let t0 = Instant::now();
    let mut produced = 0;
    for (text, ids) in texts.iter().zip(&prompts) {
        // As the RTP task samples, but with no stop token: both sides make every token.
        let params = SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: Some(GEN_TOP_P),
            max_new_tokens: GEN_TOKENS,
            seed: prompt_seed(0, text),
            stop_ids: vec![],
        };
        let gens = generate(
            model.model.as_ref(),
            ids,
            &params,
            GEN_SAMPLES,
            &Hooks::new(),
            |_, _| {},
        )?;
        produced += gens.iter().map(|g| g.tokens.len()).sum::<usize>();
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut greedy = Vec::new();
    let g0 = Instant::now();
    for ids in prompts.iter().take(GREEDY_CHECK) {
        let g = generate(
            model.model.as_ref(),
            ids,
            &SamplingParams::greedy(GEN_TOKENS),
            1,
            &Hooks::new(),
            |_, _| {},
        )?;
        greedy.push(g[0].tokens.clone());
    }
    let greedy_secs = g0.elapsed().as_secs_f64();
    let greedy_tokens: usize = greedy.iter().map(Vec::len).sum();
    Ok((
        secs,
        produced,
        json!({"greedy": greedy, "greedy_secs": greedy_secs, "greedy_tokens": greedy_tokens}),
    ))
}

fn trace(model: &LoadedModel) -> Result<(f64, usize, Value)> {
    let t0 = Instant::now();
    let tracer = Tracer::new(
        model,
        TRACE_PROMPT,
        TRACE_SUBJECT,
        None,
        inputs::trace_config(),
    )?;
    let r = tracer.sweep(|_, _| {})?;
    let secs = t0.elapsed().as_secs_f64();
    let sites = r.effect.iter().map(Vec::len).sum();
    Ok((
        secs,
        sites,
        json!({"p_corrupt": r.p_corrupt, "effect": r.effect}),
    ))
}

fn perplexity(model: &LoadedModel) -> Result<(f64, usize, Value)> {
    let task = inputs::text_task("perplexity_lambada", PPL_PASSAGES)?;
    let t0 = Instant::now();
    let r = run_task(model, task.as_ref())?;
    let secs = t0.elapsed().as_secs_f64();
    let (mut ll, mut tokens) = (0.0, 0);
    for it in &r.items {
        let ItemScore::Rolling(x) = it else {
            bail!("perplexity_lambada: not a rolling item");
        };
        ll += x.loglikelihood;
        tokens += x.n_tokens;
    }
    Ok((
        secs,
        tokens,
        json!({"token_perplexity": (-ll / tokens as f64).exp(), "loglikelihood": ll}),
    ))
}

/// Best of five `MATMUL_N`³ f32 products through the model's linear layer (the packed
/// kernel or BLAS when the machine runs them, else candle's matmul), against a weight
/// held as a model holds its weights (packed once, by the first product): (seconds,
/// FLOPs).
pub fn matmul() -> Result<(f64, usize)> {
    let n = MATMUL_N;
    let a = Tensor::randn(0f32, 1f32, (n, n), &Device::Cpu)?;
    let b = scalpel::model::ops::Weight::new(Tensor::randn(0f32, 1f32, (n, n), &Device::Cpu)?);
    scalpel::model::ops::linear(&a, &b, None)?;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t0 = Instant::now();
        scalpel::model::ops::linear(&a, &b, None)?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok((best, 2 * n * n * n))
}

/// The process's peak resident memory (`VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
