//! Toxicity scorers against their references:
//! - the offline default against scikit-learn's `predict_proba` on alt-profanity-check's own
//!   weights (`tests/reference/export_profanity_check.py` →
//!   `fixtures/toxicity/profanity_check_probs.json`);
//! - the Hugging Face classifier against transformers on tiny random RoBERTa and BERT
//!   checkpoints (`tests/reference/tiny_classifiers.py` → `fixtures/toxicity/tiny-*`);
//! - the Perspective client against a mock server (429 then 200, cache hits);
//! - the scorer report on small data files with known answers, and on the shipped data.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use candle_core::Device;
use scalpel::toxicity::hf_classifier::Activation;
use scalpel::toxicity::perspective::{PerspectiveOptions, PerspectiveScorer};
use scalpel::toxicity::report::{report_split, ScoredSplit, RTP_TASK};
use scalpel::toxicity::{
    scorer_from_spec, scorer_report, HfClassifier, ReportOptions, ToxicityError, ToxicityScorer,
};
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

// ---------------------------------------------------------------- profanity-check

#[test]
fn default_scorer_matches_scikit_learn() {
    let fx = read_json(&root().join("fixtures/toxicity/profanity_check_probs.json"));
    let items = fx["items"].as_array().unwrap();
    let texts: Vec<String> = items
        .iter()
        .map(|i| i["text"].as_str().unwrap().to_string())
        .collect();
    let scorer = scorer_from_spec("default").unwrap();
    assert_eq!(scorer.name(), "profanity-check");
    let got = scorer.score(&texts).unwrap();
    let mut worst = 0f64;
    for (i, item) in items.iter().enumerate() {
        let want = item["prob"].as_f64().unwrap();
        let d = (got[i] - want).abs();
        assert!(d <= 1e-6, "{:?}: ours {} sklearn {want}", texts[i], got[i]);
        worst = worst.max(d);
    }
    eprintln!(
        "profanity-check: max |ours - sklearn| = {worst:e} over {} texts",
        texts.len()
    );
    // The fixture is varied: both ends of the scale are represented.
    assert!(got.iter().any(|&p| p > 0.99) && got.iter().any(|&p| p < 0.05));
}

// ---------------------------------------------------------------- Hugging Face classifiers

fn tiny(name: &str) -> PathBuf {
    root().join("fixtures/toxicity").join(name)
}

/// A copy of a fixture directory, edited by `edit` (config.json as JSON; files removed).
fn edited_copy(name: &str, drop: &[&str], edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(tiny(name)).unwrap() {
        let e = e.unwrap();
        let f = e.file_name();
        if !drop.contains(&f.to_str().unwrap()) {
            std::fs::copy(e.path(), tmp.path().join(&f)).unwrap();
        }
    }
    let cfg_path = tmp.path().join("config.json");
    let mut cfg = read_json(&cfg_path);
    edit(&mut cfg);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    tmp
}

/// Token ids and probabilities against transformers' on the same checkpoint.
fn check_against_reference(c: &HfClassifier, dir: &Path, column: &str) {
    let fx = read_json(&dir.join("reference.json"));
    assert_eq!(c.max_len(), fx["max_length"].as_u64().unwrap() as usize);
    assert_eq!(c.toxic_label(), fx["toxic_label"].as_str().unwrap());
    let items = fx["items"].as_array().unwrap();
    let texts: Vec<String> = items
        .iter()
        .map(|i| i["text"].as_str().unwrap().to_string())
        .collect();
    for (t, item) in texts.iter().zip(items) {
        let want: Vec<u32> = serde_json::from_value(item["ids"].clone()).unwrap();
        assert_eq!(c.encode(t).unwrap(), want, "token ids of {t:?}");
    }
    let got = c.score(&texts).unwrap();
    let mut worst = 0f64;
    for (i, item) in items.iter().enumerate() {
        let want = item[column].as_f64().unwrap();
        let d = (got[i] - want).abs();
        assert!(
            d <= 1e-4,
            "{:?}: candle {} transformers {want}",
            texts[i],
            got[i]
        );
        worst = worst.max(d);
    }
    eprintln!(
        "{}: max |candle - transformers| = {worst:e} ({column})",
        dir.display()
    );
}

#[test]
fn tiny_roberta_matches_transformers() {
    let dir = tiny("tiny-roberta");
    let c = HfClassifier::from_dir(&dir, &Device::Cpu).unwrap();
    assert_eq!(c.labels(), ["neutral", "toxic"]);
    assert_eq!(c.activation(), Activation::Softmax);
    check_against_reference(&c, &dir, "softmax");
    // Batch composition (padding) does not change a text's score.
    let texts: Vec<String> = ["Hello world", "What the hell?!", ""]
        .map(String::from)
        .to_vec();
    let batched = c.score(&texts).unwrap();
    let c1 = HfClassifier::from_dir(&dir, &Device::Cpu)
        .unwrap()
        .with_batch_size(1);
    let single = c1.score(&texts).unwrap();
    for (a, b) in batched.iter().zip(&single) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // The same through the spec parser.
    let s = scorer_from_spec(dir.to_str().unwrap()).unwrap();
    assert_eq!(s.score(&texts).unwrap(), batched);
}

#[test]
fn roberta_tokenizer_from_vocab_and_merges() {
    // Many RoBERTa classifiers on the hub ship only the slow tokenizer's files.
    let tmp = edited_copy("tiny-roberta", &["tokenizer.json"], |_| {});
    let c = HfClassifier::from_dir(tmp.path(), &Device::Cpu).unwrap();
    check_against_reference(&c, tmp.path(), "softmax");
}

#[test]
fn multi_label_heads_use_the_sigmoid() {
    let tmp = edited_copy("tiny-roberta", &[], |cfg| {
        cfg["problem_type"] = json!("multi_label_classification");
    });
    let c = HfClassifier::from_dir(tmp.path(), &Device::Cpu).unwrap();
    assert_eq!(c.activation(), Activation::Sigmoid);
    check_against_reference(&c, tmp.path(), "sigmoid");
}

#[test]
fn tiny_bert_matches_transformers() {
    let dir = tiny("tiny-bert");
    let c = HfClassifier::from_dir(&dir, &Device::Cpu).unwrap();
    // "non-toxic" is not the toxic label.
    assert_eq!(c.labels(), ["non-toxic", "toxic"]);
    check_against_reference(&c, &dir, "softmax");
}

#[test]
fn classifier_errors_name_the_file_and_field() {
    let tmp = edited_copy("tiny-roberta", &[], |cfg| {
        cfg["id2label"] = json!({"0": "LABEL_0", "1": "LABEL_1"});
    });
    let e = HfClassifier::from_dir(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("config.json: field 'id2label'") && e.contains("LABEL_0, LABEL_1"),
        "{e}"
    );
    // '#label' picks one explicitly.
    let spec = format!("{}#LABEL_1", tmp.path().display());
    let c = HfClassifier::from_spec(&spec, &Device::Cpu).unwrap();
    assert_eq!(c.toxic_label(), "LABEL_1");
    assert_eq!(c.name(), spec);
    assert_eq!(scorer_from_spec(&spec).unwrap().name(), spec);

    let tmp = edited_copy("tiny-roberta", &[], |cfg| cfg["model_type"] = json!("gpt2"));
    let e = HfClassifier::from_dir(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("field 'model_type'") && e.contains("'gpt2'"),
        "{e}"
    );

    let tmp = edited_copy("tiny-roberta", &["model.safetensors"], |_| {});
    let e = HfClassifier::from_dir(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no model.safetensors"), "{e}");

    let tmp = edited_copy("tiny-roberta", &["tokenizer.json", "merges.txt"], |_| {});
    let e = HfClassifier::from_dir(tmp.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no tokenizer.json"), "{e}");

    // A hub spec that is not in an offline cache says so (no network in tests).
    let e = scorer_from_spec("hf:bad spec").err().unwrap().to_string();
    assert!(e.contains("expected hf:owner/name"), "{e}");
}

// ---------------------------------------------------------------- Perspective

/// A one-thread HTTP server answering each request with the next canned response (and
/// the last one forever after); records the request lines and bodies.
struct Mock {
    url: String,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
}

fn mock(responses: Vec<(u16, Value)>) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let rec = requests.clone();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h == "\r\n" || h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            rec.lock().unwrap().push((
                request_line.trim().to_string(),
                serde_json::from_slice(&body).unwrap_or(Value::Null),
            ));
            let (code, payload) = &responses[n.min(responses.len() - 1)];
            let payload = payload.to_string();
            let reason = if *code == 200 { "OK" } else { "Error" };
            let _ = write!(
                conn,
                "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
                payload.len()
            );
        }
    });
    Mock {
        url: format!("http://{addr}/v1alpha1/comments:analyze"),
        requests,
    }
}

fn perspective_opts(url: &str, cache: &Path) -> PerspectiveOptions {
    let mut o = PerspectiveOptions::with_key("SECRETKEY");
    o.endpoint = url.to_string();
    o.cache_dir = cache.to_path_buf();
    o.qps = 1000.0;
    o.initial_backoff = Duration::from_millis(10);
    o.max_retries = 2;
    o
}

fn toxicity_response(v: f64) -> Value {
    json!({"attributeScores": {"TOXICITY": {"summaryScore": {"value": v, "type": "PROBABILITY"}}},
           "languages": ["en"]})
}

#[test]
fn perspective_retries_429_and_caches_by_text() {
    let m = mock(vec![
        (429, json!({"error": {"code": 429, "message": "quota"}})),
        (200, toxicity_response(0.87)),
        (200, toxicity_response(0.12)),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let s = PerspectiveScorer::new(perspective_opts(&m.url, cache.path())).unwrap();
    let texts = vec!["you idiot".to_string(), "   ".to_string()];
    assert_eq!(s.score(&texts).unwrap(), vec![0.87, 0.0]);
    {
        let reqs = m.requests.lock().unwrap();
        // One 429, one retry; the whitespace-only text made no request.
        assert_eq!(reqs.len(), 2);
        let (line, body) = &reqs[1];
        assert!(
            line.starts_with("POST /v1alpha1/comments:analyze?key=SECRETKEY"),
            "{line}"
        );
        assert_eq!(body["comment"]["text"], "you idiot");
        assert_eq!(body["languages"], json!(["en"]));
        assert!(body["requestedAttributes"]["TOXICITY"].is_object());
    }
    // A cache hit makes no request, even from a new scorer on the same cache.
    let s2 = PerspectiveScorer::new(perspective_opts(&m.url, cache.path())).unwrap();
    assert_eq!(s2.score(&texts[..1]).unwrap(), vec![0.87]);
    assert_eq!(m.requests.lock().unwrap().len(), 2);
    // A new text does.
    assert_eq!(s2.score(&["hello".to_string()]).unwrap(), vec![0.12]);
    assert_eq!(m.requests.lock().unwrap().len(), 3);
}

#[test]
fn perspective_errors_are_clear_and_hide_the_key() {
    let cache = tempfile::tempdir().unwrap();
    // Persistent 503: gives up after max_retries + 1 attempts.
    let m = mock(vec![(503, json!({"error": "busy"}))]);
    let s = PerspectiveScorer::new(perspective_opts(&m.url, cache.path())).unwrap();
    let e = s.score(&["a b c".to_string()]).unwrap_err().to_string();
    assert!(e.contains("giving up after 3 attempts: HTTP 503"), "{e}");
    assert_eq!(m.requests.lock().unwrap().len(), 3);
    // 400 is not retried; the API's message is shown; the key is not.
    let m = mock(vec![(
        400,
        json!({"error": {"message": "Comment must be non-empty."}}),
    )]);
    let s = PerspectiveScorer::new(perspective_opts(&m.url, cache.path())).unwrap();
    let e = s
        .score(&["x".to_string(), "y".to_string()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("text 0: HTTP 400") && e.contains("non-empty"),
        "{e}"
    );
    assert!(!e.contains("SECRETKEY"), "{e}");
    assert_eq!(m.requests.lock().unwrap().len(), 1);
    // A malformed answer is an error and is not cached.
    let m = mock(vec![(200, json!({"attributeScores": {}}))]);
    let s = PerspectiveScorer::new(perspective_opts(&m.url, cache.path())).unwrap();
    let e = s.score(&["z".to_string()]).unwrap_err().to_string();
    assert!(e.contains("summaryScore.value"), "{e}");
    // Connection refused (nothing listening): a transport error, key redacted.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x", dead.local_addr().unwrap());
    drop(dead);
    let s = PerspectiveScorer::new(perspective_opts(&url, cache.path())).unwrap();
    let e = s.score(&["w".to_string()]).unwrap_err().to_string();
    assert!(e.contains("giving up") && !e.contains("SECRETKEY"), "{e}");
    // Without a key, the spec says which variable to set.
    if std::env::var("PERSPECTIVE_API_KEY").is_err() {
        let e = scorer_from_spec("perspective").err().unwrap().to_string();
        assert!(e.contains("PERSPECTIVE_API_KEY is not set"), "{e}");
    }
}

// ---------------------------------------------------------------- report

/// Scores a text by a number written in it ("... #0.7"), so answers are known.
struct Tagged;
impl ToxicityScorer for Tagged {
    fn name(&self) -> &str {
        "tagged"
    }
    fn score(&self, texts: &[String]) -> Result<Vec<f64>, ToxicityError> {
        Ok(texts
            .iter()
            .map(|t| {
                t.rsplit_once('#')
                    .map_or(0.0, |(_, v)| v.parse().unwrap_or(f64::NAN))
            })
            .collect())
    }
}

struct Data {
    _dir: tempfile::TempDir,
    opts: ReportOptions,
}

/// 40 RTP prompts with Perspective scores, 60 LAMBADA-format passages, 20 ToxiGen items.
fn small_data() -> Data {
    let dir = tempfile::tempdir().unwrap();
    let mut rtp = String::new();
    for i in 0..40 {
        let tox = 0.5 + i as f64 / 80.0;
        // Tagged score rises with the Perspective score: ρ = 1.
        rtp += &format!(
            "{}\n",
            json!({"text": format!("prompt {i} #{}", tox - 0.4), "toxicity": tox})
        );
    }
    let mut lam = String::new();
    for i in 0..60 {
        let body = json!({"request": {"context": format!("passage {i} #"), "continuation": format!("0.{:02}", i % 30)}});
        lam += &format!("{body}\n");
    }
    let tg: Vec<Value> = (0..20)
        .map(|i| json!({"text": format!("tg {i} #{}", if i % 2 == 0 { 0.9 } else { 0.2 }), "is_toxic": i % 2 == 0}))
        .collect();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("rtp.jsonl"), rtp).unwrap();
    std::fs::write(p("lambada.jsonl"), lam).unwrap();
    std::fs::write(p("toxigen.json"), serde_json::to_string(&tg).unwrap()).unwrap();
    let opts = ReportOptions {
        rtp: Some(p("rtp.jsonl")),
        lambada: Some(p("lambada.jsonl")),
        toxigen: Some(p("toxigen.json")),
        ..Default::default()
    };
    Data { _dir: dir, opts }
}

#[test]
fn report_on_known_data() {
    let d = small_data();
    let all = ReportOptions {
        split: ScoredSplit::All,
        ..d.opts.clone()
    };
    let r = scorer_report(&Tagged, &all).unwrap();
    // RTP tagged 0.1..0.4875, LAMBADA 0.00..0.29: AUC by direct count.
    let pos: Vec<f64> = (0..40).map(|i| (0.5 + i as f64 / 80.0) - 0.4).collect();
    let neg: Vec<f64> = (0..40).map(|i| (i % 30) as f64 / 100.0).collect();
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    let a = &r.auc[0];
    assert_eq!(
        (a.n_pos, a.n_neg),
        (40, 40),
        "balanced: the first 40 passages"
    );
    assert!((a.auc.value - wins / 1600.0).abs() < 1e-12, "{a:?}");
    assert!(a.auc.lo < a.auc.value && a.auc.value <= a.auc.hi);
    let t = &r.auc[1];
    assert_eq!((t.n_pos, t.n_neg, t.auc.value), (10, 10, 1.0));
    let rho = &r.rank[0];
    assert_eq!(rho.n, 40);
    assert!((rho.rho.value - 1.0).abs() < 1e-12);
    assert_eq!(r.texts_scored, 100);
    let text = r.to_string();
    assert!(
        text.contains("scored: every item")
            && text.contains("n = 40 toxic RTP prompts + 40 LAMBADA passages"),
        "{text}"
    );
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["split"], "all");
    assert_eq!(j["auc"][0]["n_pos"], 40);

    // The default scores only the eval split: exactly the items split_of puts there.
    let r = scorer_report(&Tagged, &d.opts).unwrap();
    let eval_rtp = (0..40)
        .filter(|i| {
            let text = format!("prompt {i} #{}", 0.5 + *i as f64 / 80.0 - 0.4);
            report_split(RTP_TASK, &text, d.opts.fit_fraction) == scalpel::data::split::Split::Eval
        })
        .count();
    assert!(eval_rtp > 15 && eval_rtp < 40, "{eval_rtp}");
    assert_eq!(r.auc[0].n_pos, eval_rtp);
    assert_eq!(r.rank[0].n, eval_rtp);
    assert!(r.to_string().contains("the eval split only (70%"), "{r}");
}

#[test]
fn report_errors_name_the_index_and_the_file() {
    let d = small_data();
    // A text whose tag does not parse scores NaN: the error names the scorer and index.
    let bad = d.opts.rtp.as_ref().unwrap().with_file_name("bad.jsonl");
    std::fs::write(
        &bad,
        format!("{}\n", json!({"text": "x #nan?", "toxicity": 0.7})),
    )
    .unwrap();
    let o = ReportOptions {
        rtp: Some(bad.clone()),
        split: ScoredSplit::All,
        ..d.opts.clone()
    };
    let e = scorer_report(&Tagged, &o).unwrap_err().to_string();
    assert_eq!(e, "scorer 'tagged': text 0: score is NaN");
    std::fs::write(&bad, format!("{}\n", json!({"text": "x #0.5"}))).unwrap();
    let e = scorer_report(&Tagged, &o).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl") && e.contains("toxicity"), "{e}");
}

/// The real report on the shipped data with the default scorer: the figures the README
/// quotes stay true (within their intervals).
#[test]
fn default_scorer_report_on_shipped_data() {
    let s = scorer_from_spec("default").unwrap();
    let r = scorer_report(s.as_ref(), &ReportOptions::default()).unwrap();
    eprintln!("{r}");
    assert!(r.auc[0].n_pos > 600 && r.auc[0].n_pos == r.auc[0].n_neg);
    assert!(r.auc[0].auc.value > 0.9, "{r}");
    assert!(r.auc[1].auc.value > 0.55, "{r}");
    assert!(r.rank[0].rho.value > 0.4, "{r}");
}
