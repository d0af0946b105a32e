//! Google's Perspective API as a toxicity scorer.
//!
//! POSTs each text to `comments:analyze` asking for `TOXICITY` in English and reads
//! `attributeScores.TOXICITY.summaryScore.value`. The API allows 1 query per second by
//! default, answers 429 when exceeded and 5xx when busy, and costs quota per call, so the
//! client: paces requests (`qps`, default 1, shared by every thread using the scorer),
//! retries 429/5xx/transport failures with exponential backoff (honouring `Retry-After`),
//! and caches each score on disk by sha256(text) under
//! `$SCALPEL_HOME/perspective/` so a re-run costs nothing. Empty (whitespace-only) texts,
//! which the API rejects, score 0 without a request.
//!
//! The key comes from `PERSPECTIVE_API_KEY` and never appears in an error message.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{check_score, check_scores, ToxicityError, ToxicityScorer};

pub const DEFAULT_ENDPOINT: &str =
    "https://commentanalyzer.googleapis.com/v1alpha1/comments:analyze";
pub const KEY_ENV: &str = "PERSPECTIVE_API_KEY";
/// Overrides the default 1 query per second.
pub const QPS_ENV: &str = "PERSPECTIVE_QPS";
/// Overrides the endpoint (a proxy, a mock).
pub const ENDPOINT_ENV: &str = "PERSPECTIVE_ENDPOINT";

#[derive(Debug, Clone)]
pub struct PerspectiveOptions {
    pub key: String,
    pub endpoint: String,
    /// Requests per second, at most.
    pub qps: f64,
    /// Retries after the first attempt on 429, 5xx and transport errors.
    pub max_retries: u32,
    /// The first retry's wait; doubled each retry up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// One JSON file per text, named by sha256(text).
    pub cache_dir: PathBuf,
    pub timeout: Duration,
}

impl PerspectiveOptions {
    /// Options with `key` and every default: the public endpoint, 1 QPS, 5 retries from
    /// 1 s, the cache under `$SCALPEL_HOME/perspective`.
    pub fn with_key(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            endpoint: DEFAULT_ENDPOINT.to_string(),
            qps: 1.0,
            max_retries: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(32),
            cache_dir: crate::assets::scalpel_home().join("perspective"),
            timeout: Duration::from_secs(30),
        }
    }

    /// The key from `PERSPECTIVE_API_KEY`, `PERSPECTIVE_QPS` and `PERSPECTIVE_ENDPOINT`
    /// if set.
    pub fn from_env() -> Result<Self, ToxicityError> {
        let key = std::env::var(KEY_ENV).unwrap_or_default();
        if key.trim().is_empty() {
            return Err(ToxicityError::Perspective(format!(
                "{KEY_ENV} is not set; get a key at https://developers.perspectiveapi.com/s/docs-get-started and export it"
            )));
        }
        let mut o = Self::with_key(key.trim());
        if let Ok(q) = std::env::var(QPS_ENV) {
            o.qps = q
                .parse::<f64>()
                .ok()
                .filter(|q| q.is_finite() && *q > 0.0)
                .ok_or_else(|| {
                    ToxicityError::Perspective(format!("{QPS_ENV}='{q}' is not a positive number"))
                })?;
        }
        if let Ok(e) = std::env::var(ENDPOINT_ENV) {
            o.endpoint = e;
        }
        Ok(o)
    }
}

pub struct PerspectiveScorer {
    opts: PerspectiveOptions,
    agent: ureq::Agent,
    /// When the next request may start (the rate limit, shared across threads).
    next_slot: Mutex<Instant>,
}

impl PerspectiveScorer {
    pub fn new(opts: PerspectiveOptions) -> Result<Self, ToxicityError> {
        if !(opts.qps.is_finite() && opts.qps > 0.0) {
            return Err(ToxicityError::Perspective(format!(
                "qps {} is not a positive number",
                opts.qps
            )));
        }
        let agent = ureq::AgentBuilder::new().timeout(opts.timeout).build();
        Ok(Self {
            opts,
            agent,
            next_slot: Mutex::new(Instant::now()),
        })
    }

    fn cache_path(&self, text: &str) -> PathBuf {
        let h = Sha256::digest(text.as_bytes());
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        self.opts
            .cache_dir
            .join(&hex[..2])
            .join(format!("{hex}.json"))
    }

    fn cached(&self, path: &Path) -> Option<f64> {
        let text = std::fs::read_to_string(path).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        // A damaged cache entry is a miss, not an error: the API answers again.
        v.get("toxicity")?
            .as_f64()
            .filter(|x| (0.0..=1.0).contains(x))
    }

    fn store(&self, path: &Path, score: f64) -> Result<(), ToxicityError> {
        let dir = path.parent().expect("cache path has a parent");
        std::fs::create_dir_all(dir).map_err(|e| ToxicityError::io(dir, e))?;
        // Write then rename, so a reader never sees half a file.
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| ToxicityError::io(dir, e))?;
        std::io::Write::write_all(
            &mut tmp,
            json!({ "toxicity": score }).to_string().as_bytes(),
        )
        .map_err(|e| ToxicityError::io(tmp.path(), e))?;
        tmp.persist(path)
            .map_err(|e| ToxicityError::io(path, e.error))?;
        Ok(())
    }

    /// Block until the rate limit lets one more request start.
    fn wait_for_slot(&self) {
        let interval = Duration::from_secs_f64(1.0 / self.opts.qps);
        let start = {
            let mut next = self.next_slot.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + interval;
            start
        };
        let now = Instant::now();
        if start > now {
            std::thread::sleep(start - now);
        }
    }

    fn redact(&self, s: String) -> String {
        if self.opts.key.is_empty() {
            s
        } else {
            s.replace(&self.opts.key, "***")
        }
    }

    /// One text through the API, with retries.
    fn request(&self, text: &str) -> Result<f64, ToxicityError> {
        let body = json!({
            "comment": { "text": text },
            "requestedAttributes": { "TOXICITY": {} },
            "languages": ["en"],
            "doNotStore": true,
        });
        let url = format!("{}?key={}", self.opts.endpoint, self.opts.key);
        let mut backoff = self.opts.initial_backoff;
        let mut attempt = 0;
        loop {
            self.wait_for_slot();
            let (retry_after, why) = match self.agent.post(&url).send_json(&body) {
                Ok(resp) => {
                    let v: Value = resp.into_json().map_err(|e| {
                        ToxicityError::Perspective(format!("reading the response: {e}"))
                    })?;
                    return v
                        .pointer("/attributeScores/TOXICITY/summaryScore/value")
                        .and_then(Value::as_f64)
                        .ok_or_else(|| {
                            ToxicityError::Perspective(format!(
                                "response has no attributeScores.TOXICITY.summaryScore.value: {}",
                                truncate(&v.to_string(), 300)
                            ))
                        });
                }
                Err(ureq::Error::Status(code, resp)) if code == 429 || code >= 500 => {
                    let ra = resp
                        .header("Retry-After")
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    (ra, format!("HTTP {code}"))
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let msg = resp.into_string().unwrap_or_default();
                    return Err(ToxicityError::Perspective(format!(
                        "HTTP {code}: {}",
                        truncate(&self.redact(msg), 300)
                    )));
                }
                Err(ureq::Error::Transport(t)) => (None, self.redact(t.to_string())),
            };
            if attempt >= self.opts.max_retries {
                return Err(ToxicityError::Perspective(format!(
                    "giving up after {} attempts: {why}",
                    attempt + 1
                )));
            }
            attempt += 1;
            std::thread::sleep(retry_after.unwrap_or(backoff).min(self.opts.max_backoff));
            backoff = (backoff * 2).min(self.opts.max_backoff);
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl ToxicityScorer for PerspectiveScorer {
    fn name(&self) -> &str {
        "perspective"
    }

    fn score(&self, texts: &[String]) -> Result<Vec<f64>, ToxicityError> {
        let mut out = Vec::with_capacity(texts.len());
        for (i, t) in texts.iter().enumerate() {
            if t.trim().is_empty() {
                out.push(0.0);
                continue;
            }
            let path = self.cache_path(t);
            if let Some(s) = self.cached(&path) {
                out.push(s);
                continue;
            }
            let s = self.request(t).map_err(|e| match e {
                ToxicityError::Perspective(m) => {
                    ToxicityError::Perspective(format!("text {i}: {m}"))
                }
                e => e,
            })?;
            // Validate before caching, so a bad answer is never stored.
            let s = check_score(self.name(), i, s)?;
            self.store(&path, s)?;
            out.push(s);
        }
        check_scores(self.name(), texts.len(), out)
    }
}
