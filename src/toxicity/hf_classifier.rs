//! Any Hugging Face sequence classifier as a toxicity scorer, run through candle.
//!
//! Architectures: RoBERTa-family checkpoints (`roberta`, `xlm-roberta`, `camembert`, e.g.
//! s-nlp/roberta_toxicity_classifier) through candle-transformers'
//! `XLMRobertaForSequenceClassification`, and BERT (`bert`, e.g. unitary/toxic-bert)
//! through its `BertModel` plus the pooler and classifier `BertForSequenceClassification`
//! adds. A directory needs `config.json`, `model.safetensors` (or sharded safetensors, or
//! `pytorch_model.bin`) and `tokenizer.json` (or RoBERTa's `vocab.json` + `merges.txt`).
//!
//! The toxic class comes from `config.json`'s `id2label`: the one label that mentions
//! "toxic" and is not a negation ("non-toxic", "not toxic"), preferring a label that is
//! exactly "toxic"/"toxicity" when several qualify (multi-label heads); otherwise the
//! error lists the labels and `#label` in the spec picks one. The score is that class's
//! softmax probability, or its sigmoid when `problem_type` is
//! `multi_label_classification` — what transformers' text-classification pipeline does.
//! Inputs longer than the model's positions are truncated (the pipeline would fail).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{bert, xlm_roberta};
use hf_hub::{Cache, Repo, RepoType};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::{check_scores, ToxicityError, ToxicityScorer};

/// `model_type`s with a forward pass here.
pub const SUPPORTED: &str = "roberta, xlm-roberta, camembert, bert";

/// Texts per forward pass.
const DEFAULT_BATCH: usize = 16;

/// How the toxic class's logit becomes a probability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Single-label: softmax over all labels.
    Softmax,
    /// `problem_type: multi_label_classification`: independent sigmoids.
    Sigmoid,
}

enum Net {
    Roberta(xlm_roberta::XLMRobertaForSequenceClassification),
    Bert {
        bert: bert::BertModel,
        pooler: candle_nn::Linear,
        classifier: candle_nn::Linear,
    },
}

impl Net {
    /// Logits `[b, num_labels]` (f32).
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let types = ids.zeros_like()?;
        match self {
            Net::Roberta(m) => m.forward(ids, mask, &types),
            Net::Bert {
                bert,
                pooler,
                classifier,
            } => {
                let h = bert.forward(ids, &types, Some(mask))?;
                // BertPooler: tanh(dense(h[:, 0])); dropout is the identity at inference.
                let cls = h.get_on_dim(1, 0)?.contiguous()?;
                classifier.forward(&pooler.forward(&cls)?.tanh()?)
            }
        }
    }
}

/// A Hugging Face `*ForSequenceClassification` checkpoint.
pub struct HfClassifier {
    name: String,
    net: Net,
    tokenizer: Tokenizer,
    labels: Vec<String>,
    toxic: usize,
    activation: Activation,
    pad_id: u32,
    max_len: usize,
    device: Device,
    batch_size: usize,
}

impl std::fmt::Debug for HfClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfClassifier")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("toxic", &self.toxic)
            .field("activation", &self.activation)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl HfClassifier {
    /// `hf:owner/name[@revision][#label]` through the hf-hub cache (`$HF_HOME/hub`),
    /// downloading unless `HF_HUB_OFFLINE=1`; or a directory path with optional `#label`.
    pub fn from_spec(spec: &str, device: &Device) -> Result<Self, ToxicityError> {
        let (base, label) = match spec.rsplit_once('#') {
            // A directory whose own name has a '#' is just a directory.
            _ if Path::new(spec).is_dir() => (spec, None),
            Some((b, l)) if !l.is_empty() => (b, Some(l)),
            _ => (spec, None),
        };
        let dir = match base.strip_prefix("hf:") {
            Some(rest) => {
                let (repo, rev) = rest.split_once('@').unwrap_or((rest, "main"));
                let ok = |s: &str| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                };
                match repo.split_once('/') {
                    Some((o, n)) if ok(o) && ok(n) && !rev.is_empty() => {}
                    _ => {
                        return Err(ToxicityError::Scorer {
                            scorer: spec.to_string(),
                            message: "expected hf:owner/name[@revision][#label]".into(),
                        })
                    }
                }
                resolve_hub(
                    repo,
                    rev,
                    &Cache::from_env(),
                    crate::model::source::hub_offline(),
                )?
            }
            None => PathBuf::from(base),
        };
        let mut c = Self::load(&dir, device, label)?;
        c.name = spec.to_string();
        Ok(c)
    }

    /// A local checkpoint directory; the toxic label is found in `id2label`.
    pub fn from_dir(dir: &Path, device: &Device) -> Result<Self, ToxicityError> {
        Self::load(dir, device, None)
    }

    /// A local checkpoint directory, with the label to score given explicitly or found.
    pub fn load(dir: &Path, device: &Device, label: Option<&str>) -> Result<Self, ToxicityError> {
        let cfg_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&cfg_path).map_err(|e| ToxicityError::io(&cfg_path, e))?;
        let mut cfg: Value = serde_json::from_str(&text)
            .map_err(|e| ToxicityError::file(&cfg_path, format!("not JSON: {e}")))?;
        let labels = labels(&cfg, &cfg_path)?;
        let toxic = match label {
            Some(l) => labels.iter().position(|x| x == l).ok_or_else(|| {
                ToxicityError::field(
                    &cfg_path,
                    "id2label",
                    format!("no label '{l}' (labels: {})", labels.join(", ")),
                )
            })?,
            None => toxic_label(&labels).ok_or_else(|| {
                ToxicityError::field(
                    &cfg_path,
                    "id2label",
                    format!(
                        "no single toxic label among [{}]; pick one with '#label' after the scorer spec",
                        labels.join(", ")
                    ),
                )
            })?,
        };
        let activation = match cfg.get("problem_type").and_then(Value::as_str) {
            None | Some("single_label_classification") => Activation::Softmax,
            Some("multi_label_classification") => Activation::Sigmoid,
            Some(other) => {
                return Err(ToxicityError::field(
                    &cfg_path,
                    "problem_type",
                    format!("'{other}' is not a classification problem"),
                ))
            }
        };
        if activation == Activation::Softmax && labels.len() < 2 {
            return Err(ToxicityError::field(
                &cfg_path,
                "id2label",
                "a single-label classifier needs at least two labels",
            ));
        }
        let model_type = cfg
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let max_pos = get_usize(&cfg, "max_position_embeddings", &cfg_path)?;
        let vb = var_builder(dir, device)?;
        let weights_err = |e: candle_core::Error| {
            let msg = e.to_string();
            ToxicityError::file(
                dir,
                format!("weights: {}", msg.lines().next().unwrap_or_default()),
            )
        };
        let (net, pad_id, max_len) = match model_type.as_str() {
            "roberta" | "xlm-roberta" | "camembert" => {
                // candle's Config has no defaults; fill the ones transformers defaults.
                let obj = cfg.as_object_mut().expect("checked an object in labels()");
                for (k, v) in [
                    ("position_embedding_type", Value::from("absolute")),
                    ("attention_probs_dropout_prob", Value::from(0.1)),
                    ("hidden_dropout_prob", Value::from(0.1)),
                    ("type_vocab_size", Value::from(1)),
                    ("pad_token_id", Value::from(1)),
                    ("layer_norm_eps", Value::from(1e-5)),
                    ("hidden_act", Value::from("gelu")),
                ] {
                    obj.entry(k).or_insert(v);
                }
                if obj["position_embedding_type"] != "absolute" {
                    return Err(ToxicityError::field(
                        &cfg_path,
                        "position_embedding_type",
                        "only 'absolute' is supported",
                    ));
                }
                let c: xlm_roberta::Config = serde_json::from_value(cfg.clone())
                    .map_err(|e| ToxicityError::file(&cfg_path, e.to_string()))?;
                let m = xlm_roberta::XLMRobertaForSequenceClassification::new(labels.len(), &c, vb)
                    .map_err(weights_err)?;
                // Positions start after the padding index (create_position_ids_from_input_ids).
                let offset = c.pad_token_id as usize + 1;
                if max_pos <= offset + 2 {
                    return Err(ToxicityError::field(
                        &cfg_path,
                        "max_position_embeddings",
                        format!("{max_pos} leaves no room after the padding offset {offset}"),
                    ));
                }
                (Net::Roberta(m), c.pad_token_id, max_pos - offset)
            }
            "bert" => {
                let obj = cfg.as_object_mut().expect("checked an object in labels()");
                for (k, v) in [
                    ("hidden_dropout_prob", Value::from(0.1)),
                    ("initializer_range", Value::from(0.02)),
                    ("type_vocab_size", Value::from(2)),
                    ("pad_token_id", Value::from(0)),
                    ("layer_norm_eps", Value::from(1e-12)),
                    ("hidden_act", Value::from("gelu")),
                ] {
                    obj.entry(k).or_insert(v);
                }
                let c: bert::Config = serde_json::from_value(cfg.clone())
                    .map_err(|e| ToxicityError::file(&cfg_path, e.to_string()))?;
                let bert = bert::BertModel::load(vb.pp("bert"), &c).map_err(weights_err)?;
                let pooler =
                    candle_nn::linear(c.hidden_size, c.hidden_size, vb.pp("bert.pooler.dense"))
                        .map_err(weights_err)?;
                let classifier =
                    candle_nn::linear(c.hidden_size, labels.len(), vb.pp("classifier"))
                        .map_err(weights_err)?;
                let net = Net::Bert {
                    bert,
                    pooler,
                    classifier,
                };
                (net, c.pad_token_id as u32, max_pos)
            }
            other => {
                let msg = format!("'{other}' is not supported (supported: {SUPPORTED})");
                return Err(ToxicityError::field(&cfg_path, "model_type", msg));
            }
        };
        let tokenizer = load_tokenizer(dir, max_len)?;
        Ok(Self {
            name: dir.display().to_string(),
            net,
            tokenizer,
            labels,
            toxic,
            activation,
            pad_id,
            max_len,
            device: device.clone(),
            batch_size: DEFAULT_BATCH,
        })
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The label whose probability is the score.
    pub fn toxic_label(&self) -> &str {
        &self.labels[self.toxic]
    }

    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// Tokens per text after truncation, specials included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Token ids of `text` as the model sees them (specials added, truncated).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ToxicityError> {
        Ok(self
            .tokenizer
            .encode(text, true)
            .map_err(|e| self.err(format!("tokenizing: {e}")))?
            .get_ids()
            .to_vec())
    }

    /// Raw logits `[num_labels]` per text.
    pub fn logits(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ToxicityError> {
        let ids = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>, _>>()?;
        // Batches of similar length waste less compute on padding.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); ids.len()];
        for chunk in order.chunks(self.batch_size) {
            let width = chunk.iter().map(|&i| ids[i].len()).max().unwrap_or(0);
            let mut flat = Vec::with_capacity(chunk.len() * width);
            let mut mask = Vec::with_capacity(chunk.len() * width);
            for &i in chunk {
                flat.extend_from_slice(&ids[i]);
                flat.extend(std::iter::repeat_n(self.pad_id, width - ids[i].len()));
                mask.extend(std::iter::repeat_n(1u32, ids[i].len()));
                mask.extend(std::iter::repeat_n(0u32, width - ids[i].len()));
            }
            let run = || -> candle_core::Result<Vec<Vec<f32>>> {
                let ids = Tensor::from_vec(flat, (chunk.len(), width), &self.device)?;
                let mask = Tensor::from_vec(mask, (chunk.len(), width), &self.device)?;
                self.net
                    .forward(&ids, &mask)?
                    .to_dtype(DType::F32)?
                    .to_vec2()
            };
            let logits = run().map_err(|e| self.err(format!("forward pass: {e}")))?;
            for (&i, l) in chunk.iter().zip(logits) {
                out[i] = l;
            }
        }
        Ok(out)
    }

    fn err(&self, message: String) -> ToxicityError {
        ToxicityError::Scorer {
            scorer: self.name.clone(),
            message,
        }
    }
}

impl ToxicityScorer for HfClassifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, texts: &[String]) -> Result<Vec<f64>, ToxicityError> {
        let logits = self.logits(texts)?;
        let scores = logits
            .iter()
            .map(|l| probability(l, self.toxic, self.activation))
            .collect();
        check_scores(&self.name, texts.len(), scores)
    }
}

/// The probability of class `k` from logits, in f64 (max-subtracted softmax).
pub fn probability(logits: &[f32], k: usize, act: Activation) -> f64 {
    let l: Vec<f64> = logits.iter().map(|&x| x as f64).collect();
    match act {
        Activation::Sigmoid => 1.0 / (1.0 + (-l[k]).exp()),
        Activation::Softmax => {
            let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = l.iter().map(|x| (x - m).exp()).sum();
            (l[k] - m).exp() / z
        }
    }
}

/// `id2label` as a list indexed by class id.
fn labels(cfg: &Value, path: &Path) -> Result<Vec<String>, ToxicityError> {
    if !cfg.is_object() {
        return Err(ToxicityError::file(path, "expected a JSON object"));
    }
    let map = cfg
        .get("id2label")
        .and_then(Value::as_object)
        .ok_or_else(|| ToxicityError::field(path, "id2label", "missing (not a classifier?)"))?;
    let mut labels = vec![None; map.len()];
    for (k, v) in map {
        let i: usize =
            k.parse().ok().filter(|&i| i < map.len()).ok_or_else(|| {
                ToxicityError::field(path, "id2label", format!("bad class id '{k}'"))
            })?;
        let name = v.as_str().ok_or_else(|| {
            ToxicityError::field(path, "id2label", format!("label {k} is not a string"))
        })?;
        labels[i] = Some(name.to_string());
    }
    labels
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ToxicityError::field(path, "id2label", "class ids are not 0..n"))
}

/// The toxic class among `labels`: labels mentioning "toxic" that are not negations;
/// if several, the one that is exactly "toxic" or "toxicity".
pub fn toxic_label(labels: &[String]) -> Option<usize> {
    let norm: Vec<String> = labels.iter().map(|l| l.trim().to_lowercase()).collect();
    let negated = |l: &str| {
        let l = l.replace(['-', '_', ' '], "");
        l.starts_with("non") || l.starts_with("not") || l.contains("nontoxic") || l == "neutral"
    };
    let cands: Vec<usize> = (0..norm.len())
        .filter(|&i| norm[i].contains("toxic") && !negated(&norm[i]))
        .collect();
    match cands.as_slice() {
        [one] => Some(*one),
        [] => None,
        many => {
            let exact: Vec<usize> = many
                .iter()
                .copied()
                .filter(|&i| norm[i] == "toxic" || norm[i] == "toxicity")
                .collect();
            (exact.len() == 1).then(|| exact[0])
        }
    }
}

fn get_usize(cfg: &Value, field: &str, path: &Path) -> Result<usize, ToxicityError> {
    cfg.get(field)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| ToxicityError::field(path, field, "missing or not a non-negative integer"))
}

/// Weights: safetensors (single or sharded) if present, else `pytorch_model.bin`.
fn var_builder(dir: &Path, device: &Device) -> Result<VarBuilder<'static>, ToxicityError> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let pth = dir.join("pytorch_model.bin");
    let err = |p: &Path, e: candle_core::Error| {
        let msg = e.to_string();
        ToxicityError::file(p, msg.lines().next().unwrap_or_default().to_string())
    };
    if single.exists() || index.exists() {
        let files = crate::model::hf::weight_files(dir)?;
        // SAFETY: the files are memory-mapped read-only; like every safetensors loader we
        // assume nobody truncates them while the model is alive.
        unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, device) }
            .map_err(|e| err(&files[0], e))
    } else if pth.exists() {
        VarBuilder::from_pth(&pth, DType::F32, device).map_err(|e| err(&pth, e))
    } else {
        Err(ToxicityError::file(
            dir,
            "no model.safetensors, model.safetensors.index.json or pytorch_model.bin",
        ))
    }
}

/// `tokenizer.json`, or a RoBERTa byte-level BPE from `vocab.json` + `merges.txt` (what
/// transformers' RobertaTokenizerFast converter builds); truncated to `max_len` tokens.
fn load_tokenizer(dir: &Path, max_len: usize) -> Result<Tokenizer, ToxicityError> {
    let json = dir.join("tokenizer.json");
    let mut tok = if json.exists() {
        Tokenizer::from_file(&json).map_err(|e| ToxicityError::file(&json, e.to_string()))?
    } else {
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if !(vocab.exists() && merges.exists()) {
            return Err(ToxicityError::file(
                dir,
                "no tokenizer.json (or vocab.json + merges.txt)",
            ));
        }
        roberta_bpe(&vocab, &merges)?
    };
    tok.with_padding(None);
    tok.with_truncation(Some(tokenizers::TruncationParams {
        max_length: max_len,
        ..Default::default()
    }))
    .map_err(|e| ToxicityError::file(dir, format!("tokenizer truncation: {e}")))?;
    Ok(tok)
}

fn roberta_bpe(vocab: &Path, merges: &Path) -> Result<Tokenizer, ToxicityError> {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::processors::roberta::RobertaProcessing;
    use tokenizers::AddedToken;
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .map_err(|e| ToxicityError::file(vocab, format!("BPE: {e}")))?;
    let mut tok = Tokenizer::new(bpe);
    let id = |t: &str| {
        tok.token_to_id(t)
            .ok_or_else(|| ToxicityError::file(vocab, format!("no '{t}' token")))
    };
    let (cls, sep) = (id("<s>")?, id("</s>")?);
    tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.with_post_processor(Some(
        RobertaProcessing::new(("</s>".into(), sep), ("<s>".into(), cls))
            .trim_offsets(true)
            .add_prefix_space(false),
    ));
    let specials: Vec<AddedToken> = ["<s>", "</s>", "<pad>", "<unk>"]
        .iter()
        .filter(|t| tok.token_to_id(t).is_some())
        .map(|t| AddedToken::from(*t, true))
        .chain(
            tok.token_to_id("<mask>")
                .map(|_| AddedToken::from("<mask>", true).lstrip(true)),
        )
        .collect();
    tok.add_special_tokens(specials)
        .map_err(|e| ToxicityError::file(vocab, format!("special tokens: {e}")))?;
    Ok(tok)
}

/// A classifier's files in the hf-hub cache, fetched unless `offline`. Unlike a language
/// model, a classifier may ship only `pytorch_model.bin` and a slow tokenizer's
/// `vocab.json` + `merges.txt`, so this accepts those.
fn resolve_hub(
    repo: &str,
    revision: &str,
    cache: &Cache,
    offline: bool,
) -> Result<PathBuf, ToxicityError> {
    let spec = format!("hf:{repo}@{revision}");
    let err = |m: String| ToxicityError::Scorer {
        scorer: spec.clone(),
        message: m,
    };
    let hub_repo = Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string());
    let cached = cache.repo(hub_repo.clone());
    let mut api = None;
    let mut get = |file: &str| -> Result<Option<PathBuf>, ToxicityError> {
        if let Some(p) = cached.get(file) {
            return Ok(Some(p));
        }
        if offline {
            return Ok(None);
        }
        if api.is_none() {
            let a = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
                .with_progress(true)
                .build()
                .map_err(|e| err(format!("hub client: {e}")))?;
            api = Some(a.repo(hub_repo.clone()));
        }
        match api.as_ref().expect("set above").get(file) {
            Ok(p) => Ok(Some(p)),
            Err(hf_hub::api::sync::ApiError::RequestError(e)) if e.to_string().contains("404") => {
                Ok(None)
            }
            Err(e) => Err(err(format!("downloading {file}: {e}"))),
        }
    };
    let missing = |f: &str| {
        err(if offline {
            format!(
                "{f}: not in the hf-hub cache {} (HF_HUB_OFFLINE is set)",
                cache.path().display()
            )
        } else {
            format!("{f}: not in the repository")
        })
    };
    let config = get("config.json")?.ok_or_else(|| missing("config.json"))?;
    let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
    if get("tokenizer.json")?.is_none() {
        get("vocab.json")?.ok_or_else(|| missing("tokenizer.json (or vocab.json)"))?;
        get("merges.txt")?.ok_or_else(|| missing("merges.txt"))?;
    }
    if get("model.safetensors")?.is_none() && get("pytorch_model.bin")?.is_none() {
        return Err(missing("model.safetensors (or pytorch_model.bin)"));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_the_toxic_label() {
        assert_eq!(toxic_label(&l(&["neutral", "toxic"])), Some(1));
        assert_eq!(toxic_label(&l(&["non-toxic", "toxic"])), Some(1));
        assert_eq!(toxic_label(&l(&["TOXIC", "NOT_TOXIC"])), Some(0));
        assert_eq!(toxic_label(&l(&["nontoxic", "Toxicity"])), Some(1));
        assert_eq!(
            toxic_label(&l(&["toxic", "severe_toxic", "obscene", "insult"])),
            Some(0)
        );
        assert_eq!(toxic_label(&l(&["LABEL_0", "LABEL_1"])), None);
        assert_eq!(toxic_label(&l(&["toxic_a", "toxic_b"])), None);
    }

    /// A hub repository resolved from an hf-hub cache laid out as hf-hub writes it
    /// (refs/main → snapshots/<commit>/files), offline.
    #[test]
    fn resolves_a_cached_hub_repo_offline() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/toxicity/tiny-roberta");
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--someone--tiny");
        let snap = repo.join("snapshots").join("0123abcd");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
        for f in ["config.json", "tokenizer.json", "model.safetensors"] {
            std::fs::copy(fixture.join(f), snap.join(f)).unwrap();
        }
        let cache = Cache::new(tmp.path().to_path_buf());
        let dir = resolve_hub("someone/tiny", "main", &cache, true).unwrap();
        assert_eq!(dir, snap);
        let c = HfClassifier::load(&dir, &Device::Cpu, None).unwrap();
        assert_eq!(c.toxic_label(), "toxic");

        std::fs::remove_file(snap.join("model.safetensors")).unwrap();
        let e = resolve_hub("someone/tiny", "main", &cache, true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("hf:someone/tiny@main") && e.contains("HF_HUB_OFFLINE"),
            "{e}"
        );
        let e = resolve_hub("someone/other", "main", &cache, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.json: not in the hf-hub cache"), "{e}");
    }

    #[test]
    fn probabilities() {
        let p = probability(&[0.0, 0.0], 1, Activation::Softmax);
        assert!((p - 0.5).abs() < 1e-15);
        let p = probability(&[1000.0, 0.0], 1, Activation::Softmax);
        assert!(p.is_finite() && p < 1e-300);
        let p = probability(&[0.0, 2.0], 1, Activation::Sigmoid);
        assert!((p - 1.0 / (1.0 + (-2f64).exp())).abs() < 1e-15);
    }
}
