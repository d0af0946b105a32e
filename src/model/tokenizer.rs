//! Tokenizers: Hugging Face `tokenizer.json`, or the byte-level BPE stored in a GGUF.
//!
//! The GGUF route rebuilds the `tokenizer.json` that the GGUF was converted from (BPE
//! vocab and merges, the pre-tokenizer named by `tokenizer.ggml.pre`, the special tokens)
//! and hands it to the `tokenizers` crate. candle's `TokenizerFromGguf` is not used: it
//! adds a leading-space token at the start and after special tokens, so its ids differ
//! from the ones the model was trained on.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::gguf::GgufFile;
use super::ModelError;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: PathBuf,
    /// Token the evaluation harnesses prepend when a context is empty.
    pub bos_id: Option<u32>,
    /// Whether the model's inputs start with `bos_id` (Gemma: yes; SmolLM2: no).
    pub add_bos: bool,
    pub eos_id: Option<u32>,
    /// Generation stops at any of these.
    pub stop_ids: Vec<u32>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Jinja chat template as shipped with the model (GGUF or tokenizer_config.json).
    pub chat_template: Option<String>,
}

impl Tokenizer {
    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`, adding no special tokens (special-token strings written in
    /// the text, such as `<|im_start|>`, still map to their ids).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| self.err(format!("encode: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` as a model input: [`Tokenizer::encode`], after BOS when
    /// the model expects one.
    pub fn encode_input(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let ids = self.encode(text)?;
        Ok(match self.bos_id.filter(|_| self.add_bos) {
            Some(bos) => std::iter::once(bos).chain(ids).collect(),
            None => ids,
        })
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| self.err(format!("decode: {e}")))
    }

    /// Ids of the added and special tokens (`<|im_start|>`, `<bos>`, …).
    pub fn special_ids(&self) -> std::collections::BTreeSet<u32> {
        self.inner.get_added_tokens_decoder().into_keys().collect()
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, tok: &str) -> Option<u32> {
        self.inner.token_to_id(tok)
    }

    fn err(&self, message: String) -> ModelError {
        ModelError::Tokenizer {
            path: self.source.clone(),
            message,
        }
    }

    /// A `tokenizer.json` (with `tokenizer_config.json` beside it for the chat template
    /// and the names of the special tokens, when present).
    pub fn from_hf_dir(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(ModelError::NotFound { path });
        }
        let inner = read_tokenizer_json(&path)?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = match std::fs::read_to_string(&cfg_path) {
            Ok(s) => serde_json::from_str(&s)
                .map_err(|e| ModelError::config(&cfg_path, "(json)", e.to_string()))?,
            Err(_) => Value::Null,
        };
        let token_str = |key: &str| -> Option<String> {
            match cfg.get(key) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Object(o)) => {
                    o.get("content").and_then(|c| c.as_str()).map(String::from)
                }
                _ => None,
            }
        };
        let model_cfg = read_json_opt(&dir.join("config.json"))?;
        let gen_cfg = read_json_opt(&dir.join("generation_config.json"))?;
        let bos_token = token_str("bos_token");
        let eos_token = token_str("eos_token");
        let bos_id = bos_token
            .as_deref()
            .and_then(|t| inner.token_to_id(t))
            .or_else(|| json_u32(&model_cfg, "bos_token_id"));
        let eos_id = eos_token
            .as_deref()
            .and_then(|t| inner.token_to_id(t))
            .or_else(|| json_u32(&model_cfg, "eos_token_id"));
        let mut stop_ids: Vec<u32> = eos_id.into_iter().collect();
        for v in [&gen_cfg, &model_cfg] {
            stop_ids.extend(json_u32s(v, "eos_token_id"));
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let chat_template = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let add_bos =
            cfg.get("add_bos_token").and_then(Value::as_bool) == Some(true) && bos_id.is_some();
        Ok(Tokenizer {
            inner,
            source: path,
            bos_id,
            add_bos,
            eos_id,
            stop_ids,
            bos_token,
            eos_token,
            chat_template,
        })
    }

    /// The tokenizer stored in a GGUF: byte-level BPE (`tokenizer.ggml.model == "gpt2"`),
    /// or Gemma's SentencePiece vocabulary (`"llama"` in a `gemma3` file).
    pub fn from_gguf(g: &GgufFile) -> Result<Self, ModelError> {
        let path = g.path.clone();
        let model = g.string("tokenizer.ggml.model")?;
        let arch = g.architecture()?;
        match (model.as_str(), arch.as_str()) {
            ("gpt2", _) => Self::byte_level_from_gguf(g),
            ("llama", "gemma3") => Self::gemma_from_gguf(g),
            _ => Err(ModelError::config(
                &path,
                "tokenizer.ggml.model",
                format!(
                    "tokenizer model '{model}' in a '{arch}' file is not supported \
                     (supported: gpt2 byte-level BPE; SentencePiece in gemma3 files)"
                ),
            )),
        }
    }

    /// Gemma's SentencePiece vocabulary as the Hugging Face Gemma tokenizer applies it:
    /// BPE with byte fallback, spaces written `▁`, no prefix space, control tokens
    /// special and user-defined ones (newline runs, tabs) matched whole. The GGUF
    /// carries no merges, so they are rebuilt from the vocabulary: every split of a
    /// token into two tokens, ranked by the merged token's position in the file (Gemma's
    /// scores do not follow its merge order; its token order does), longer left part
    /// first. Tokens of several spaces are stored as spaces but looked up as `▁`s.
    fn gemma_from_gguf(g: &GgufFile) -> Result<Self, ModelError> {
        let path = g.path.clone();
        let raw = g.strings("tokenizer.ggml.tokens")?;
        let types = g.i32s("tokenizer.ggml.token_type")?;
        if types.len() != raw.len() {
            return Err(ModelError::config(
                &path,
                "tokenizer.ggml.token_type",
                format!("{} types for {} tokens", types.len(), raw.len()),
            ));
        }
        let tokens: Vec<String> = raw
            .iter()
            .map(|t| {
                if t.contains(' ') && t.trim().is_empty() {
                    "\u{2581}".repeat(t.chars().count())
                } else {
                    t.clone()
                }
            })
            .collect();
        // A later duplicate wins, as in a Python dict built from the list.
        let mut index: std::collections::HashMap<&str, u32> =
            std::collections::HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            index.insert(t.as_str(), i as u32);
        }
        let mut merges: Vec<(u32, usize, &str, &str)> = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            if index.get(t.as_str()) != Some(&(i as u32)) {
                continue;
            }
            for (cut, _) in t.char_indices().skip(1) {
                let (l, r) = t.split_at(cut);
                if index.contains_key(l) && index.contains_key(r) {
                    merges.push((i as u32, l.chars().count(), l, r));
                }
            }
        }
        merges.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let merges: Vec<Value> = merges.iter().map(|(_, _, l, r)| json!([l, r])).collect();
        let vocab: serde_json::Map<String, Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        // GGUF token types: 3 control, 4 user-defined. A user-defined token is added only
        // if the vocabulary still spells it so (the space runs were respelled above).
        let added: Vec<Value> = raw
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (tok, ty))| **ty == 3 || (**ty == 4 && vocab.contains_key(tok.as_str())))
            .map(|(id, (tok, ty))| {
                json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": *ty == 3})
            })
            .collect();
        let unk = g
            .has("tokenizer.ggml.unknown_token_id")
            .then(|| g.usize("tokenizer.ggml.unknown_token_id"))
            .transpose()?
            .and_then(|i| raw.get(i).cloned());
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"},
            "pre_tokenizer": {"type": "Split", "pattern": {"String": " "},
                              "behavior": "MergedWithPrevious", "invert": false},
            "post_processor": null,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"}]},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": unk,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            }
        });
        let inner = parse_spec(&spec, &path, "SentencePiece BPE")?;
        let mut tok = Self::with_gguf_specials(g, inner, &raw)?;
        // Instruction-tuned Gemma ends a turn with <end_of_turn>; generation stops there too.
        if let Some(id) = tok.inner.token_to_id("<end_of_turn>") {
            if !tok.stop_ids.contains(&id) {
                tok.stop_ids.push(id);
            }
        }
        Ok(tok)
    }

    fn byte_level_from_gguf(g: &GgufFile) -> Result<Self, ModelError> {
        let path = g.path.clone();
        let tokens = g.strings("tokenizer.ggml.tokens")?;
        let merges = g.strings("tokenizer.ggml.merges")?;
        let types = if g.has("tokenizer.ggml.token_type") {
            g.i32s("tokenizer.ggml.token_type")?
        } else {
            vec![1; tokens.len()]
        };
        let pre = if g.has("tokenizer.ggml.pre") {
            g.string("tokenizer.ggml.pre")?
        } else {
            "default".to_string()
        };
        let pre_tokenizer = pre_tokenizer_for(&pre).ok_or_else(|| {
            ModelError::config(
                &path,
                "tokenizer.ggml.pre",
                format!(
                    "pre-tokenizer '{pre}' is not supported (supported: smollm, gpt2, default)"
                ),
            )
        })?;
        // GGUF token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte.
        let added: Vec<Value> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (_, ty))| **ty == 3 || **ty == 4)
            .map(|(id, (tok, ty))| {
                json!({"id": id, "content": tok, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": *ty == 3})
            })
            .collect();
        let vocab: serde_json::Map<String, Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            }
        });
        let inner = parse_spec(&spec, &path, "BPE")?;
        Self::with_gguf_specials(g, inner, &tokens)
    }

    /// BOS, EOS, whether inputs start with BOS, and the chat template, from the GGUF.
    fn with_gguf_specials(
        g: &GgufFile,
        inner: tokenizers::Tokenizer,
        tokens: &[String],
    ) -> Result<Self, ModelError> {
        let path = g.path.clone();
        let id = |key: &str| -> Result<Option<u32>, ModelError> {
            Ok(if g.has(key) {
                Some(g.usize(key)? as u32)
            } else {
                None
            })
        };
        let bos_id = id("tokenizer.ggml.bos_token_id")?;
        let eos_id = id("tokenizer.ggml.eos_token_id")?;
        let name = |i: Option<u32>| i.and_then(|i| tokens.get(i as usize).cloned());
        let chat_template = if g.has("tokenizer.chat_template") {
            Some(g.string("tokenizer.chat_template")?)
        } else {
            None
        };
        let add_bos = g.has("tokenizer.ggml.add_bos_token")
            && g.bool("tokenizer.ggml.add_bos_token")?
            && bos_id.is_some();
        Ok(Tokenizer {
            inner,
            source: path,
            bos_id,
            add_bos,
            eos_id,
            stop_ids: eos_id.into_iter().collect(),
            bos_token: name(bos_id),
            eos_token: name(eos_id),
            chat_template,
        })
    }
}

/// A tokenizer from the `tokenizer.json` document a GGUF's vocabulary was rebuilt into.
fn parse_spec(spec: &Value, path: &Path, what: &str) -> Result<tokenizers::Tokenizer, ModelError> {
    spec.to_string()
        .parse()
        .map_err(|e: tokenizers::Error| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message: format!("building {what} from GGUF vocabulary: {e}"),
        })
}

/// `tokenizer.json` pre-tokenizers for llama.cpp's `tokenizer.ggml.pre` names.
fn pre_tokenizer_for(pre: &str) -> Option<Value> {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    match pre {
        // SmolLM: every digit is its own token, then GPT-2's byte-level split.
        "smollm" => Some(json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level]})),
        "gpt2" | "default" => Some(byte_level),
        _ => None,
    }
}

fn read_json_opt(path: &Path) -> Result<Value, ModelError> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            serde_json::from_str(&s).map_err(|e| ModelError::config(path, "(json)", e.to_string()))
        }
        Err(_) => Ok(Value::Null),
    }
}

fn json_u32(v: &Value, key: &str) -> Option<u32> {
    v.get(key).and_then(|x| x.as_u64()).map(|x| x as u32)
}

fn json_u32s(v: &Value, key: &str) -> Vec<u32> {
    match v.get(key) {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => vec![],
    }
}

/// `tokenizer.json` through the tokenizers crate. The JSON is parsed on its own first,
/// and a panic inside the crate is caught: it panics on some malformed files (a fuzzer
/// found a control character in a decoder's string) where an error naming the file is
/// due.
fn read_tokenizer_json(path: &std::path::Path) -> Result<tokenizers::Tokenizer, ModelError> {
    let bad = |message: String| ModelError::Tokenizer {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_str::<serde_json::Value>(&text).map_err(|e| bad(e.to_string()))?;
    std::panic::catch_unwind(|| <tokenizers::Tokenizer as std::str::FromStr>::from_str(&text))
        .map_err(|p| {
            bad(format!(
                "malformed file (the reader stopped: {})",
                crate::data::panic_text(&*p)
            ))
        })?
        .map_err(|e| bad(e.to_string()))
}
