//! The `scalpel` command: parse arguments, call the library, map the outcome to an exit
//! code. Logic lives in the library so that tests reach it; this file is glue.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use candle_core::IndexOp;
use scalpel::model::chat::{self, Message};
use scalpel::model::generate::{generate, SamplingParams};
use scalpel::model::loaded::{device, LoadedModel};
use scalpel::model::source::DEFAULT_MODEL;
use scalpel::model::{HookPoint, Hooks};

#[derive(Parser)]
#[command(
    name = "scalpel",
    version,
    about = "Test safety interventions on language models the way cargo test tests code"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Continue a prompt with the model (streams tokens to a terminal).
    Generate(GenerateArgs),
    /// Print the token ids and the last position's logits over the whole vocabulary.
    Logits(LogitsArgs),
    /// Evaluate the model on a task (lm-evaluation-harness prompts and metrics).
    Eval(EvalArgs),
    /// Bring pinned offline assets (models, tokenizers, datasets) into $SCALPEL_HOME.
    Fetch(FetchArgs),
    /// How well a toxicity scorer works: AUC on held-out labelled data and rank
    /// correlation with the Perspective scores shipped with RealToxicityPrompts.
    ScorerReport(ScorerReportArgs),
    /// Causal tracing (ROME): which layer × token states carry the prediction.
    Trace(TraceArgs),
    /// Fit an intervention (steering offset, ablation, low-rank circuit breaker) on the
    /// fit split, as a YAML config says; writes safetensors + a YAML manifest.
    Fit(FitArgs),
    /// Run a suite's gates like cargo test: one trial per intervention::task::metric,
    /// exit 101 when a gate fails. The run is stored under --runs with an HTML report.
    Test(TestArgs),
    /// Render a stored run as a self-contained HTML page.
    Report(ReportArgs),
    /// Compare two stored runs item by item and flag regressions (paired statistics).
    Compare(CompareArgs),
    /// Combine the shard runs of one sharded run (scalpel test --shard) into the run:
    /// statistics and verdicts recomputed on the union of the items.
    Merge(MergeArgs),
}

#[derive(Args)]
struct MergeArgs {
    /// The shard run directories (reports/runs/<id>-shard<K>of<N>), every shard once.
    #[arg(required = true)]
    runs: Vec<std::path::PathBuf>,
    /// The merged run's directory.
    #[arg(long)]
    out: std::path::PathBuf,
    /// pretty, terse or json (libtest's formats).
    #[arg(long, default_value = "pretty")]
    format: String,
    /// Write a JUnit XML report here.
    #[arg(long)]
    junit: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct TestArgs {
    /// The suite file (suites/*.yaml).
    suite: std::path::PathBuf,
    /// Run only trials whose name contains this (the whole name with --exact).
    filter: Option<String>,
    /// Match FILTER and --skip against whole trial names.
    #[arg(long)]
    exact: bool,
    /// List the trials and run nothing.
    #[arg(long)]
    list: bool,
    /// Skip trials whose name contains this (repeatable).
    #[arg(long)]
    skip: Vec<String>,
    /// Write a JUnit XML report here.
    #[arg(long)]
    junit: Option<std::path::PathBuf>,
    /// pretty, terse or json (libtest's formats).
    #[arg(long, default_value = "pretty")]
    format: String,
    /// Use this model instead of the suite's.
    #[arg(long)]
    model: Option<String>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// The run store: the run goes to DIR/<run-id>/ (parquet tables, report.html), and a
    /// rerun with the same inputs resumes there.
    #[arg(long, default_value = "reports/runs")]
    runs: std::path::PathBuf,
    /// Score only shard K of N of every task's items (K from 1), or `auto`: from
    /// SCALPEL_SHARD, a Slurm array or a Kubernetes Indexed Job. Prints no verdicts:
    /// `scalpel merge` computes them on the union of the shards.
    #[arg(long)]
    shard: Option<String>,
    /// How many tasks run side by side, sharing the cores (libtest's flag; default: one
    /// per core, at most one per task; on a GPU one). Scores are the same for any N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    test_threads: Option<u64>,
}

#[derive(Args)]
struct ReportArgs {
    /// A run directory (reports/runs/<run-id>).
    run: std::path::PathBuf,
    /// Write the page here instead of RUN/report.html.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct CompareArgs {
    /// The baseline run directory (A).
    run_a: std::path::PathBuf,
    /// The run compared with it (B).
    run_b: std::path::PathBuf,
    /// Write the page here (default: compare-<A>-vs-<B>.html beside the runs).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Family-wise significance level of the regression flags (Holm).
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
}

#[derive(Args)]
struct FitArgs {
    /// The fit config (YAML: kind, sites, harmful, harmless, per-kind options).
    #[arg(long)]
    config: std::path::PathBuf,
    /// Write the artefact here instead of the fixture cache under $SCALPEL_HOME.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Fit again even when the fixture cache has this fit.
    #[arg(long)]
    force: bool,
    /// Print the manifest as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct TraceArgs {
    #[arg(long)]
    prompt: String,
    /// The words whose input embeddings are corrupted (their last occurrence).
    #[arg(long)]
    subject: String,
    /// The answer whose first token's probability is traced; default: the model's top
    /// next token on the clean prompt.
    #[arg(long)]
    target: Option<String>,
    /// Measure the probability of the whole --target string, not only its first token.
    #[arg(long, requires = "target", conflicts_with = "versus")]
    whole: bool,
    /// Measure log p(--target) − log p(VERSUS): two continuations of the prompt (a
    /// stereotyping and an anti-stereotyping ending, a toxic and a non-toxic one).
    #[arg(long, requires = "target")]
    versus: Option<String>,
    /// resid (block outputs), mlp or attn (outputs over a window of layers).
    #[arg(long, default_value = "resid")]
    kind: String,
    /// Noise samples.
    #[arg(long, default_value_t = 10)]
    samples: usize,
    /// Noise σ in standard deviations of the token embeddings.
    #[arg(long, default_value_t = 3.0)]
    noise: f64,
    /// Layers restored together for mlp and attn.
    #[arg(long, default_value_t = 10)]
    window: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print {"tokens", "subject_positions", "layers", "p_clean", "p_corrupt", "effect"}.
    #[arg(long)]
    json: bool,
    /// Write the layer × token heatmap as SVG.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct ScorerReportArgs {
    /// default (offline), perspective, hf:owner/name[@rev] or a classifier directory;
    /// append #LABEL to pick the classifier's toxic class.
    #[arg(long, default_value = "default")]
    scorer: String,
    /// eval (items no scorer may train on; the default) or all.
    #[arg(long, default_value = "eval")]
    split: String,
    /// At most N items per dataset (per class for RTP vs LAMBADA).
    #[arg(long)]
    limit: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Device of a neural classifier: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Args)]
struct ModelArgs {
    /// Shipped model name, a .gguf file, a Hugging Face directory, or hf:owner/name[@rev].
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Args)]
struct GenerateArgs {
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as a user turn in the model's own chat template.
    #[arg(long)]
    chat: bool,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// 0 is greedy decoding. Default: greedy, or 1.0 when --top-p or --top-k is given.
    #[arg(long)]
    temperature: Option<f64>,
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Generate under a fitted intervention (a `scalpel fit` output directory).
    #[arg(long)]
    intervention: Option<std::path::PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct LogitsArgs {
    #[arg(long)]
    prompt: String,
    #[arg(long)]
    chat: bool,
    /// Print {"model", "token_ids", "last_logits"} as JSON.
    #[arg(long)]
    json: bool,
    /// Also read a hook point (TransformerLens name, e.g. blocks.3.hook_resid_post);
    /// repeatable. JSON gains "activations": {name: {"shape", "last_position"}}.
    #[arg(long = "hook", value_name = "NAME")]
    hooks: Vec<String>,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct EvalArgs {
    /// Task id, lm-evaluation-harness's where one exists: boolq, cb, copa, rte, wic,
    /// wsc, multirc, record, crows_pairs_english, stereoset_intrasentence, bbq,
    /// winobias, realtoxicityprompts, bold, lambada_openai, perplexity_lambada,
    /// perplexity_wiki.
    #[arg(long)]
    task: String,
    /// Evaluate the first N items (of the chosen split) in the dataset's own order.
    #[arg(long)]
    limit: Option<usize>,
    /// all (what lm-evaluation-harness scores), fit (what tracing and breaker fitting
    /// may see) or eval (what gates score); items are assigned by a hash of their content.
    #[arg(long, default_value = "all")]
    split: String,
    /// Read the task's rows from this file instead of its default offline source.
    #[arg(long)]
    data: Option<std::path::PathBuf>,
    /// Toxicity scorer for generation tasks: default (offline), perspective, or a
    /// Hugging Face sequence classifier (hf:owner/name or a directory).
    #[arg(long, default_value = "default")]
    scorer: String,
    /// Seed of the sampling streams of generation tasks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Generation tasks: continuations per prompt (realtoxicityprompts 25, bold 5).
    #[arg(long)]
    samples: Option<usize>,
    /// Generation tasks: tokens per continuation (default 20).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Generation tasks: nucleus sampling mass (default 0.9).
    #[arg(long)]
    top_p: Option<f64>,
    /// Generation tasks: sampling temperature (default 1).
    #[arg(long)]
    temperature: Option<f64>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Print {"task", "model", "n", "metrics", "items"} as JSON.
    #[arg(long)]
    json: bool,
    /// Run under a fitted intervention (a directory written by `scalpel fit`).
    #[arg(long)]
    intervention: Option<std::path::PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct FetchArgs {
    /// Asset ids (see --list).
    names: Vec<String>,
    /// Every asset in the catalog.
    #[arg(long, conflicts_with = "names")]
    all: bool,
    /// List the catalog and what is already present.
    #[arg(long, conflicts_with_all = ["names", "all"])]
    list: bool,
}

fn main() -> ExitCode {
    scalpel::machine::retain_freed_memory();
    scalpel::machine::single_threaded_candle_ops();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => run_generate(a),
        Command::Logits(a) => run_logits(a),
        Command::Eval(a) => run_eval(a),
        Command::Fetch(a) => run_fetch(a),
        Command::ScorerReport(a) => run_scorer_report(a),
        Command::Trace(a) => run_trace(a),
        Command::Fit(a) => run_fit(a),
        Command::Report(a) => run_report(a),
        Command::Compare(a) => run_compare(a),
        Command::Merge(a) => match run_merge(a) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Test(a) => match run_test(a) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes, outermost first, no backtrace; a cause the
            // message before it already spells out is not repeated.
            let mut chain: Vec<String> = Vec::new();
            for c in e.chain().map(|c| c.to_string()) {
                if !chain.last().is_some_and(|p| p.contains(&c)) {
                    chain.push(c);
                }
            }
            eprintln!("error: {}", chain.join(": "));
            ExitCode::from(2)
        }
    }
}

fn load(m: &ModelArgs) -> Result<LoadedModel> {
    let dev = device(&m.device)?;
    let spinner = spinner(format!("loading {}", m.model));
    let model = LoadedModel::load(&m.model, &dev);
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    Ok(model?)
}

/// A progress bar with rate and ETA on a terminal; none when `show` is false (JSON
/// output) or stderr is not a terminal.
fn progress_bar(show: bool, len: usize, unit: &str, msg: String) -> Option<indicatif::ProgressBar> {
    (show && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(len as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{msg}} {{bar:30}} {{pos}}/{{len}} {unit}  {{per_sec}}  ETA {{eta}}"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_message(msg);
        b
    })
}

fn spinner(msg: String) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let s = indicatif::ProgressBar::new_spinner().with_message(msg);
    s.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(s)
}

fn prompt_text(model: &LoadedModel, prompt: &str, chat: bool) -> Result<String> {
    if prompt.is_empty() {
        bail!("--prompt: empty prompt");
    }
    Ok(if chat {
        chat::render(&model.tokenizer, &[Message::user(prompt)], true)?
    } else {
        prompt.to_string()
    })
}

fn run_generate(a: GenerateArgs) -> Result<()> {
    let sampling = a.top_p.is_some() || a.top_k.is_some();
    let params = SamplingParams {
        temperature: a.temperature.unwrap_or(if sampling { 1.0 } else { 0.0 }),
        top_k: a.top_k,
        top_p: a.top_p,
        max_new_tokens: a.max_tokens,
        seed: a.seed,
        stop_ids: vec![],
    };
    params
        .validate()
        .map_err(anyhow::Error::msg)
        .context("sampling options")?;
    let model = load(&a.model)?;
    let text = prompt_text(&model, &a.prompt, a.chat)?;
    let ids = model.encode(&text)?;
    let params = SamplingParams {
        stop_ids: model.tokenizer.stop_ids.clone(),
        ..params
    };
    let stream = std::io::stdout().is_terminal();
    let mut shown = String::new();
    let mut toks = Vec::new();
    let mut out = std::io::stdout().lock();
    let hooks = match &a.intervention {
        Some(dir) => scalpel::intervene::artifact::load(dir, &model)
            .context("--intervention")?
            .0
            .hooks(),
        None => Hooks::new(),
    };
    let gens = generate(model.model.as_ref(), &ids, &params, 1, &hooks, |_, t| {
        if stream {
            // Decode the whole continuation each time: a token can end mid-character.
            toks.push(t);
            if let Ok(s) = model.tokenizer.decode(&toks) {
                if s.len() > shown.len() && s.starts_with(&shown) && !s.ends_with('\u{FFFD}') {
                    let _ = write!(out, "{}", &s[shown.len()..]);
                    let _ = out.flush();
                    shown = s;
                }
            }
        }
    })?;
    let full = model.tokenizer.decode(&gens[0].tokens)?;
    if stream {
        if full.len() >= shown.len() && full.starts_with(&shown) {
            write!(out, "{}", &full[shown.len()..])?;
        }
        writeln!(out)?;
    } else {
        writeln!(out, "{full}")?;
    }
    Ok(())
}

fn run_logits(a: LogitsArgs) -> Result<()> {
    // Hook names are checked before the model loads: a typo fails fast.
    let points = a
        .hooks
        .iter()
        .map(|h| h.parse::<HookPoint>().context("--hook"))
        .collect::<Result<Vec<_>>>()?;
    let model = load(&a.model)?;
    let text = prompt_text(&model, &a.prompt, a.chat)?;
    let ids = model.encode(&text)?;
    let out = model.forward_ids(&ids, &Hooks::new().read_all(points.iter().copied()))?;
    let logits = out
        .logits
        .i((0, ids.len() - 1))?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?;
    if let Some(i) = logits.iter().position(|x| !x.is_finite()) {
        bail!(
            "logit {i} is not finite ({}): the weights are corrupt",
            logits[i]
        );
    }
    let mut acts = serde_json::Map::new();
    for p in &points {
        let t = out.cache.get(*p).context("hook did not fire")?;
        let last = last_position(t, *p)?;
        acts.insert(
            p.to_string(),
            serde_json::json!({"shape": t.dims(), "last_position": last}),
        );
    }
    let mut stdout = std::io::stdout().lock();
    let out = &mut stdout;
    if a.json {
        let mut v = serde_json::json!({
            "model": model.name,
            "token_ids": ids,
            "last_logits": logits,
        });
        if !acts.is_empty() {
            v["activations"] = serde_json::Value::Object(acts);
        }
        serde_json::to_writer(&mut *out, &v)?;
        writeln!(out)?;
    } else {
        writeln!(out, "model: {}  tokens: {:?}", model.name, ids)?;
        for (name, v) in &acts {
            let xs: Vec<f64> = serde_json::from_value(v["last_position"].clone())?;
            let norm = xs.iter().map(|x| x * x).sum::<f64>().sqrt();
            writeln!(
                out,
                "{name}: shape {}, last position L2 norm {norm:.4}",
                v["shape"]
            )?;
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&x, &y| logits[y].total_cmp(&logits[x]));
        for &i in order.iter().take(10) {
            let tok = format!("{:?}", model.tokenizer.decode(&[i as u32])?);
            writeln!(out, "{i:>8} {tok:<20} {:>10.4}", logits[i])?;
        }
    }
    Ok(())
}

fn run_eval(a: EvalArgs) -> Result<()> {
    use scalpel::tasks::{self, LoadOptions, RunContext, TaskId};
    let id: TaskId = a.task.parse().context("--task")?;
    let split = a
        .split
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--split")?;
    if a.batch_size == 0 {
        bail!("--batch-size: must be at least 1");
    }
    // The scorer and the data are checked before the model loads: a bad flag fails fast.
    let scorer = match id.family() {
        tasks::Family::Toxicity => Some(
            scalpel::toxicity::scorer_from_spec_on(&a.scorer, &device(&a.model.device)?)
                .context("--scorer")?,
        ),
        _ => None,
    };
    let opts = LoadOptions {
        data: a.data.clone(),
        split,
        limit: a.limit,
        generation: tasks::GenerationOptions {
            samples: a.samples,
            max_new_tokens: a.max_new_tokens,
            top_p: a.top_p,
            temperature: a.temperature,
        },
    };
    let task = tasks::load(id, &opts)?;
    let model = load(&a.model)?;
    let bar = progress_bar(!a.json, task.len(), "items", id.to_string());
    let mut progress = |done: usize, total: usize| {
        if let Some(b) = &bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    };
    let hooks = match &a.intervention {
        Some(dir) => scalpel::intervene::artifact::load(dir, &model)
            .context("--intervention")?
            .0
            .hooks(),
        None => Hooks::new(),
    };
    let mut cx = RunContext::new(&model, &mut progress);
    cx.hooks = hooks;
    cx.batch_size = a.batch_size;
    cx.seed = a.seed;
    cx.scorer = scorer.as_deref();
    let report = task.run(&mut cx)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        let metrics: Vec<String> = report
            .metrics
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        writeln!(
            out,
            "{} on {}: n {}  {}",
            report.task,
            report.model,
            report.n,
            metrics.join("  ")
        )?;
    }
    Ok(())
}

/// The activation at the last position, flattened (heads and pattern rows included).
fn last_position(t: &candle_core::Tensor, p: HookPoint) -> Result<Vec<f32>> {
    let pos_axis = if matches!(p, HookPoint::AttnPattern(_)) {
        2
    } else {
        1
    };
    let n = t.dim(pos_axis)?;
    Ok(t.narrow(pos_axis, n - 1, 1)?
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?)
}

fn run_scorer_report(a: ScorerReportArgs) -> Result<()> {
    use scalpel::toxicity::{report::ReportOptions, scorer_from_spec_on, scorer_report};
    let opts = ReportOptions {
        split: a.split.parse().context("--split")?,
        limit: a.limit,
        progress: !a.json && std::io::stderr().is_terminal(),
        ..ReportOptions::default()
    };
    if a.limit == Some(0) {
        bail!("--limit 0 leaves nothing to score");
    }
    let dev = device(&a.device)?;
    let scorer = scorer_from_spec_on(&a.scorer, &dev).context("--scorer")?;
    let report = scorer_report(scorer.as_ref(), &opts)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{report}")?;
    }
    Ok(())
}

fn run_fetch(a: FetchArgs) -> Result<()> {
    use scalpel::assets;
    let home = assets::scalpel_home();
    if a.list {
        for asset in assets::catalog() {
            let present = matches!(assets::installed_in(&home, asset.id), Ok(Some(_)));
            println!(
                "{:<24} {:<8} {}",
                asset.id,
                if present { "present" } else { "-" },
                asset.description
            );
        }
        return Ok(());
    }
    let ids: Vec<String> = if a.all {
        assets::catalog().iter().map(|x| x.id.to_string()).collect()
    } else if a.names.is_empty() {
        bail!("name the assets to fetch, or --all (see scalpel fetch --list)");
    } else {
        a.names.clone()
    };
    // Unknown names fail before anything is downloaded.
    for id in &ids {
        assets::find(id)?;
    }
    for id in &ids {
        match assets::fetch_in(&home, id)? {
            assets::FetchOutcome::AlreadyPresent(p) => {
                eprintln!("{id}: already present at {} (no download)", p.display())
            }
            assets::FetchOutcome::Fetched(p) => eprintln!("{id}: fetched into {}", p.display()),
        }
    }
    Ok(())
}

fn run_trace(a: TraceArgs) -> Result<()> {
    use scalpel::trace::causal::{Target, TraceConfig, TraceKind, Tracer};
    use scalpel::trace::svg;
    let kind: TraceKind = a
        .kind
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--kind")?;
    if a.prompt.trim().is_empty() {
        bail!("--prompt: empty prompt");
    }
    let cfg = TraceConfig {
        kind,
        samples: a.samples,
        noise: a.noise,
        window: a.window,
        seed: a.seed,
        ..TraceConfig::default()
    };
    let model = load(&a.model)?;
    let target = match (&a.target, &a.versus, a.whole) {
        (Some(t), Some(v), _) => Target::Contrast {
            more: t.clone(),
            less: v.clone(),
        },
        (Some(t), None, true) => Target::Continuation(t.clone()),
        (t, _, _) => Target::NextToken(t.clone()),
    };
    let tracer = Tracer::with_target(&model, &a.prompt, &a.subject, target, cfg)?;
    let n = model.model.info().n_layers * tracer.ids.len();
    let bar = progress_bar(!a.json, n, "sites", format!("trace {kind}"));
    let r = tracer.sweep(|done, total| {
        if let Some(b) = &bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(path) = &a.svg {
        let doc = svg::trace_heatmap(&r, &model.name)?;
        std::fs::write(path, doc).with_context(|| format!("--svg {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer(&mut out, &r)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{} {kind} trace, target {:?}: p_clean {:.4}  p_corrupt {:.4}  ({} samples, noise {}σ)",
        model.name, r.target, r.p_clean, r.p_corrupt, r.samples, r.noise
    )?;
    // A terminal heatmap: one row per token, one character per layer.
    let shades: Vec<char> = " .:-=+*#%@".chars().collect();
    let top = r
        .effect
        .iter()
        .flatten()
        .copied()
        .fold(f64::MIN_POSITIVE, f64::max);
    for (p, tok) in r.tokens.iter().enumerate() {
        let mark = if r.subject_positions.contains(&p) {
            "*"
        } else {
            " "
        };
        let cells: String = r
            .effect
            .iter()
            .map(|layer| {
                let x = (layer[p].max(0.0) / top * (shades.len() - 1) as f64).round() as usize;
                shades[x.min(shades.len() - 1)]
            })
            .collect();
        writeln!(out, "{:>16}{mark} |{cells}|", format!("{tok:?}"))?;
    }
    writeln!(
        out,
        "{:>18}  layers 0..{} (max effect {top:.4})",
        "",
        r.layers.len()
    )?;
    Ok(())
}

fn run_fit(a: FitArgs) -> Result<()> {
    use scalpel::intervene::config::{self, FitConfig, FitProgress};
    let cfg = FitConfig::read(&a.config)?;
    let model = load(&a.model)?;
    let steps = cfg.low_rank.resolve(cfg.max_tokens).steps;
    let bar = progress_bar(!a.json, steps, "", format!("fit {}", cfg.kind));
    let outcome = config::run(&model, &cfg, a.out.as_deref(), a.force, |p| {
        let (done, total, msg) = match p {
            FitProgress::Sweep { done, total } => (done, total, "site sweep".to_string()),
            FitProgress::Train { done, total, loss } => {
                (done, total, format!("training, loss {loss:.4}"))
            }
        };
        match &bar {
            Some(b) => {
                b.set_length(total as u64);
                b.set_position(done as u64);
                b.set_message(format!("fit {} {msg}", cfg.kind));
            }
            // Off a terminal (CI logs, nohup) a line every 10 steps still shows
            // progress.
            None if done % 10 == 0 || done == total => {
                eprintln!("fit {}: {msg} {done}/{total}", cfg.kind)
            }
            None => {}
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({
            "dir": outcome.dir,
            "cached": outcome.cached,
            "manifest": outcome.manifest,
        });
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    let m = &outcome.manifest;
    writeln!(
        out,
        "{} {} at {} -> {}{}",
        m.kind,
        model.name,
        m.sites.join(", "),
        outcome.dir.display(),
        if outcome.cached { " (cached)" } else { "" }
    )?;
    for d in &m.data {
        writeln!(out, "  data {} ({} split): n {}", d.task, d.split, d.n)?;
    }
    if let Some(t) = &m.training {
        let first = t.curve.first().map(|c| c.loss).unwrap_or(f64::NAN);
        let last = t.curve.last().map(|c| c.loss).unwrap_or(f64::NAN);
        writeln!(
            out,
            "  trained {} steps in {:.1} s{}: loss {first:.4} -> {last:.4}",
            t.steps,
            t.seconds,
            if t.stopped_early { " (early stop)" } else { "" }
        )?;
    }
    Ok(())
}

fn run_test(a: TestArgs) -> Result<ExitCode> {
    use scalpel::harness::trials::{self, Format};
    use scalpel::harness::{RunProgress, Selection, Suite};
    let format = match a.format.as_str() {
        "pretty" => Format::Pretty,
        "terse" => Format::Terse,
        "json" => Format::Json,
        other => bail!("--format: '{other}' is not pretty, terse or json"),
    };
    let suite = Suite::read(&a.suite)?;
    let shard = match a.shard.as_deref() {
        None => None,
        Some("auto") => Some(
            scalpel::harness::shard::from_env(|k| std::env::var(k).ok())
                .map_err(|e| anyhow::anyhow!("--shard auto: {e}"))?,
        ),
        Some(s) => Some(
            s.parse::<scalpel::harness::shard::Shard>()
                .map_err(|e| anyhow::anyhow!("--shard: {e}"))?,
        ),
    };
    let sel = Selection {
        filter: a.filter.clone(),
        exact: a.exact,
        skip: a.skip.clone(),
        shard,
        lanes: a.test_threads.map(|n| n as usize),
    };
    if a.list {
        trials::list(&suite, &sel, &trials::arguments(format, true));
        return Ok(ExitCode::SUCCESS);
    }
    let models = match &a.model {
        Some(m) => vec![m.clone()],
        None => suite.models.clone(),
    };
    let several = models.len() > 1;
    let dev = device(&a.device)?;
    let bar = spinner(format!("{}: loading", suite.name));
    // Tasks run side by side in lanes: the bar shows every running task's count, and
    // off a terminal each stage is printed once, when it starts.
    let mut running: std::collections::BTreeMap<String, String> = Default::default();
    let mut printed: std::collections::HashSet<String> = Default::default();
    let multi = scalpel::harness::run_models(
        &suite,
        &models,
        &sel,
        &a.runs,
        |m| {
            if let Some(b) = &bar {
                b.set_message(format!("loading {m}"));
            } else if several {
                eprintln!("{}: loading {m}", suite.name);
            }
            LoadedModel::load(m, &dev)
        },
        |m, p| {
            let (stage, count) = match &p {
                RunProgress::Fitting { intervention } => (format!("fitting {intervention}"), None),
                RunProgress::Attacking { case } => (format!("fitting the attack {case}"), None),
                RunProgress::Task {
                    intervention,
                    task,
                    done,
                    total,
                } => {
                    let line = format!("{intervention}::{task} {done}/{total}");
                    if done < total {
                        running.insert(task.to_string(), line.clone());
                    } else {
                        running.remove(&task.to_string());
                    }
                    (format!("{intervention}::{task}"), Some(line))
                }
                RunProgress::Tracing { index, done, total } => (
                    format!("trace[{index}]"),
                    Some(format!("trace[{index}] {done}/{total}")),
                ),
            };
            let prefix = if several {
                format!("{m}: ")
            } else {
                String::new()
            };
            match &bar {
                Some(b) => {
                    let shown = match &p {
                        RunProgress::Task { .. } if !running.is_empty() => {
                            running.values().cloned().collect::<Vec<_>>().join("  ·  ")
                        }
                        _ => count.unwrap_or_else(|| stage.clone()),
                    };
                    b.set_message(format!("{prefix}{shown}"));
                }
                None => {
                    if printed.insert(format!("{prefix}{stage}")) {
                        let line = count.unwrap_or(stage);
                        eprintln!("{}: {prefix}{line}", suite.name);
                    }
                }
            }
        },
    )?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(s) = shard {
        for r in &multi.runs {
            let items: usize = r.out.reports.values().map(|t| t.n).sum();
            println!(
                "shard {s}: {items} items in {} cases stored in {} ({} parts computed, {} \
                 resumed); verdicts come from scalpel merge over all {} shards",
                r.out.reports.len(),
                r.stored.dir.display(),
                r.out.parts.computed,
                r.out.parts.reused,
                s.count
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let all = multi.trials();
    if let Some(path) = &a.junit {
        trials::write_junit(&suite, &all, path)
            .with_context(|| format!("--junit {}", path.display()))?;
    }
    let conclusion = trials::report(&suite, &all, &trials::arguments(format, false));
    if format != Format::Json {
        for r in &multi.runs {
            println!(
                "{}run stored in {} ({} parts computed, {} resumed); report: {}",
                if several {
                    format!("{}: ", r.model)
                } else {
                    String::new()
                },
                r.stored.dir.display(),
                r.out.parts.computed,
                r.out.parts.reused,
                r.stored.report.display()
            );
        }
        for c in &multi.comparisons {
            println!("models compared item by item: {}", c.display());
        }
    }
    Ok(trials::exit_code(&conclusion))
}

fn run_merge(a: MergeArgs) -> Result<ExitCode> {
    use scalpel::harness::trials::{self, Format};
    let format = match a.format.as_str() {
        "pretty" => Format::Pretty,
        "terse" => Format::Terse,
        "json" => Format::Json,
        other => bail!("--format: '{other}' is not pretty, terse or json"),
    };
    let (out, stored) = scalpel::harness::merge::merge(&a.runs, &a.out)?;
    // The run directory's copy of the suite, away from the fit configs it names: parsed,
    // not checked for them.
    let copy = stored.dir.join("suite.yaml");
    let text = std::fs::read_to_string(&copy).with_context(|| copy.display().to_string())?;
    let suite = scalpel::harness::Suite::parse(&copy, &text)?;
    if let Some(path) = &a.junit {
        trials::write_junit(&suite, &out.trials, path)
            .with_context(|| format!("--junit {}", path.display()))?;
    }
    let conclusion = trials::report(&suite, &out.trials, &trials::arguments(format, false));
    if format != Format::Json {
        println!(
            "merged {} shards into {}; report: {}",
            a.runs.len(),
            stored.dir.display(),
            stored.report.display()
        );
    }
    Ok(trials::exit_code(&conclusion))
}

fn run_report(a: ReportArgs) -> Result<()> {
    let run = scalpel::store::tables::Run::read(&a.run)?;
    let html = scalpel::report::run_page::render(&run)?;
    let out = a.out.unwrap_or_else(|| a.run.join("report.html"));
    scalpel::store::write_atomic(&out, html.as_bytes())?;
    println!("{}", out.display());
    Ok(())
}

fn run_compare(a: CompareArgs) -> Result<()> {
    if !(a.alpha > 0.0 && a.alpha < 1.0) {
        bail!("--alpha: {} is not in (0, 1)", a.alpha);
    }
    let ra = scalpel::store::tables::Run::read(&a.run_a)?;
    let rb = scalpel::store::tables::Run::read(&a.run_b)?;
    let cs = scalpel::report::compare::compare(&ra, &rb, a.alpha);
    let html = scalpel::report::compare::render(&ra, &rb, a.alpha, &cs)?;
    let name = |p: &std::path::Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into())
    };
    let out = a.out.unwrap_or_else(|| {
        a.run_a
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(format!(
                "compare-{}-vs-{}.html",
                name(&a.run_a),
                name(&a.run_b)
            ))
    });
    scalpel::store::write_atomic(&out, html.as_bytes())?;
    let reg: Vec<_> = cs.iter().filter(|c| c.flag == "regression").collect();
    for c in &reg {
        println!(
            "regression: {}::{}::{} {:+.4} [{:+.4}, {:+.4}] n={} (Holm p {:.4})",
            c.intervention, c.task, c.metric, c.diff, c.lo, c.hi, c.n, c.p_adjusted
        );
    }
    println!(
        "{} comparisons, {} regressions; page: {}",
        cs.len(),
        reg.len(),
        out.display()
    );
    Ok(())
}
