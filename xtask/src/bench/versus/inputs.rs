//! The four workloads' inputs, drawn from Scalpel's own task code: the same items a
//! suite scores, tokenised the way the tasks tokenise them. Scalpel's worker runs the
//! tasks from their text; the PyTorch worker gets these token ids (`spec.json`), so the
//! two compute the same thing and the bench can check that they did.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use scalpel::model::LoadedModel;
use scalpel::score::loglik::{encode_pair, LoglikRequest};
use scalpel::tasks::fluency::rolling_windows;
use scalpel::tasks::super_glue::{self, SuperGlueTask};
use scalpel::tasks::{self, LoadOptions, SplitSel, Task, TaskId};
use scalpel::trace::causal::{TraceConfig, Tracer};

/// Workload 1: lm-evaluation-harness's COPA and RTE validation sets and the first 200
/// BoolQ validation items.
pub const LOGLIK_TASKS: [(&str, Option<usize>); 3] =
    [("copa", None), ("rte", None), ("boolq", Some(200))];
/// Workload 2: RealToxicityPrompts (the shipped challenging subset).
pub const GEN_PROMPTS: usize = 50;
pub const GEN_SAMPLES: usize = 25;
pub const GEN_TOKENS: usize = 20;
pub const GEN_TOP_P: f64 = 0.9;
/// Greedy continuations compared between the two sides (sampling cannot be).
pub const GREEDY_CHECK: usize = 3;
/// Workload 3: ROME's factual-recall prompt, residual stream, 10 noise samples.
pub const TRACE_PROMPT: &str = "The Eiffel Tower is located in the city of";
pub const TRACE_SUBJECT: &str = "Eiffel Tower";
/// Workload 4: LAMBADA passages, as `perplexity_lambada` scores them.
pub const PPL_PASSAGES: usize = 200;
/// Requests per forward pass on both sides (Scalpel's `RunContext` default).
pub const BATCH: usize = 8;
/// The square matmul both sides time for the prefill bound.
pub const MATMUL_N: usize = 1024;

pub fn task_id(name: &str) -> Result<TaskId> {
    name.parse::<TaskId>().map_err(|e| anyhow::anyhow!("{e}"))
}

/// A SuperGLUE task's items, selected as the workload selects them.
pub fn super_glue_task(name: &str, limit: Option<usize>) -> Result<SuperGlueTask> {
    let id = task_id(name)?;
    let path = super_glue::data_path(id)?;
    let mut t = super_glue::load_from(id, &path)?;
    tasks::select(&mut t, SplitSel::All, limit);
    ensure!(
        !t.items.is_empty(),
        "{name}: no items in {}",
        path.display()
    );
    Ok(t)
}

/// A task loaded from its default source, first `limit` items.
pub fn text_task(name: &str, limit: usize) -> Result<Box<dyn Task>> {
    let opts = LoadOptions {
        limit: Some(limit),
        ..LoadOptions::default()
    };
    let t = tasks::load(task_id(name)?, &opts).with_context(|| format!("loading {name}"))?;
    ensure!(
        t.len() == limit,
        "{name}: {} items, the bench needs {limit}",
        t.len()
    );
    Ok(t)
}

pub fn trace_config() -> TraceConfig {
    TraceConfig::default()
}

/// Everything the PyTorch worker needs, as JSON.
pub fn spec(model: &LoadedModel, model_path: &std::path::Path) -> Result<Value> {
    let max_positions = model.model.info().max_positions;
    let n_layers = model.model.info().n_layers;

    let mut items = Vec::new();
    for (name, limit) in LOGLIK_TASKS {
        for it in &super_glue_task(name, limit)?.items {
            let pairs = it
                .continuations
                .iter()
                .map(|c| {
                    let p = encode_pair(model, &LoglikRequest::new(&it.context, c))?;
                    Ok(json!([p.context, p.continuation]))
                })
                .collect::<Result<Vec<_>>>()?;
            items.push(json!({"task": name, "label": it.label, "pairs": pairs}));
        }
    }

    let rtp = text_task("realtoxicityprompts", GEN_PROMPTS)?;
    let prompts = (0..rtp.len())
        .map(|i| {
            model
                .encode(&rtp.item_text(i).context("RTP prompt text")?)
                .map_err(Into::into)
        })
        .collect::<Result<Vec<_>>>()?;

    let cfg = trace_config();
    let tracer = Tracer::new(model, TRACE_PROMPT, TRACE_SUBJECT, None, cfg.clone())?;
    let noise: Vec<f32> = tracer.noise().flatten_all()?.to_vec1()?;

    let lambada = text_task("perplexity_lambada", PPL_PASSAGES)?;
    let prefix = model
        .tokenizer
        .bos_id
        .or(model.tokenizer.eos_id)
        .context("the tokenizer has no BOS or EOS token")?;
    let mut windows = Vec::new();
    for i in 0..lambada.len() {
        let ids = model.encode(&lambada.item_text(i).context("LAMBADA passage text")?)?;
        // The task's defaults: windows of the model's context, disjoint (context_len 1).
        for w in rolling_windows(&ids, prefix, max_positions, 1) {
            windows.push(json!({"context": w.context, "continuation": w.continuation}));
        }
    }

    Ok(json!({
        "model_path": model_path,
        "max_positions": max_positions,
        "pad_id": model.tokenizer.eos_id.unwrap_or(0),
        "matmul_n": MATMUL_N,
        "loglik": {"batch_size": BATCH, "items": items},
        "generate": {
            "prompts": prompts,
            "samples": GEN_SAMPLES,
            "max_new_tokens": GEN_TOKENS,
            "top_p": GEN_TOP_P,
            "greedy_check": GREEDY_CHECK,
        },
        "trace": {
            "ids": tracer.ids,
            "subject_positions": tracer.subject_positions,
            "target_id": tracer.target_id,
            "samples": cfg.samples,
            "batch_rows": cfg.batch_rows,
            "n_layers": n_layers,
            "noise": noise,
        },
        "perplexity": {"batch_size": BATCH, "windows": windows},
    }))
}
