//! The offline default: alt-profanity-check 1.9.1 re-implemented exactly.
//!
//! alt-profanity-check (MIT; notice in `weights/LICENSE-profanity-check`) is scikit-learn's
//! `TfidfVectorizer` (lower-cased unigrams, token pattern `(?u)\b\w\w+\b`, English stop
//! words, smooth idf, l2 norm) feeding `CalibratedClassifierCV` over five `LinearSVC`s with
//! sigmoid (Platt) calibration. Of the offline signals the asset survey measured it is the
//! strongest (AUC ≈ 0.95 toxic RTP prompts vs LAMBADA passages, Spearman ≈ 0.6 with
//! Perspective); `scalpel scorer-report` prints its current figures.
//!
//! The weights were exported once by `tests/reference/export_profanity_check.py` into
//! `weights/profanity_check.bin.gz` (format described there) and are embedded in the
//! binary, so scoring needs no file and no Python. `tests/toxicity.rs` checks the
//! probabilities against scikit-learn's on varied texts to 1e-6.
//!
//! Probability of text t: tokens = maximal runs of ≥ 2 word characters of lower(t);
//! x = l2_normalize(count_j · idf_j) over in-vocabulary terms j (stop words are not in the
//! vocabulary, so dropping unknown tokens drops them too); f_k = coef_k · x + intercept_k;
//! p = mean_k 1 / (1 + exp(a_k f_k + b_k)).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use regex::Regex;

use super::{check_scores, ToxicityError, ToxicityScorer, DEFAULT_SCORER};

/// Where the embedded weights came from; named in errors about them.
const WEIGHTS_PATH: &str = "src/toxicity/weights/profanity_check.bin.gz";
static WEIGHTS_GZ: &[u8] = include_bytes!("weights/profanity_check.bin.gz");
const MAGIC: &[u8; 8] = b"SCPCHK01";

/// One calibrated linear SVM: decision f = coef · x + intercept, then p = 1/(1+exp(a f + b)).
#[derive(Debug, Clone)]
struct Calibrated {
    intercept: f64,
    a: f64,
    b: f64,
    coef: Vec<f64>,
}

/// Vocabulary, idf and classifiers.
#[derive(Debug)]
pub struct ProfanityWeights {
    vocab: HashMap<String, u32>,
    idf: Vec<f64>,
    classifiers: Vec<Calibrated>,
}

impl ProfanityWeights {
    /// Parse gzip-compressed weights in the exporter's format; `origin` names them in errors.
    pub fn from_gz(bytes: &[u8], origin: &Path) -> Result<Self, ToxicityError> {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .map_err(|e| ToxicityError::file(origin, format!("not gzip: {e}")))?;
        Self::from_bytes(&raw, origin)
    }

    fn from_bytes(raw: &[u8], origin: &Path) -> Result<Self, ToxicityError> {
        let mut r = Reader {
            raw,
            pos: 0,
            origin,
        };
        if r.take(8, "magic")? != MAGIC {
            return Err(ToxicityError::file(
                origin,
                "not profanity-check weights (bad magic)",
            ));
        }
        let n = r.u32("n_vocab")? as usize;
        let k = r.u32("n_classifiers")? as usize;
        if n == 0 || k == 0 {
            return Err(ToxicityError::file(
                origin,
                "empty vocabulary or no classifiers",
            ));
        }
        let mut vocab = HashMap::with_capacity(n);
        for j in 0..n {
            let len = r.u16("term length")? as usize;
            let term = std::str::from_utf8(r.take(len, "term")?)
                .map_err(|_| ToxicityError::file(origin, format!("term {j} is not UTF-8")))?;
            if vocab.insert(term.to_string(), j as u32).is_some() {
                return Err(ToxicityError::file(
                    origin,
                    format!("term '{term}' appears twice"),
                ));
            }
        }
        let idf = r.f64s(n, "idf")?;
        let mut classifiers = Vec::with_capacity(k);
        for _ in 0..k {
            let intercept = r.f64("intercept")?;
            let a = r.f64("a")?;
            let b = r.f64("b")?;
            let coef = r.f64s(n, "coef")?;
            classifiers.push(Calibrated {
                intercept,
                a,
                b,
                coef,
            });
        }
        if r.pos != raw.len() {
            return Err(ToxicityError::file(
                origin,
                format!("{} trailing bytes", raw.len() - r.pos),
            ));
        }
        Ok(Self {
            vocab,
            idf,
            classifiers,
        })
    }

    pub fn vocab_len(&self) -> usize {
        self.idf.len()
    }

    /// The l2-normalised TF-IDF vector of `text`, as (column, value) sorted by column
    /// (scikit-learn sorts a CSR row's indices, and the summation order follows).
    fn features(&self, text: &str) -> Vec<(u32, f64)> {
        let mut counts: BTreeMap<u32, f64> = BTreeMap::new();
        let lower = text.to_lowercase();
        for m in token_regex().find_iter(&lower) {
            if let Some(&j) = self.vocab.get(m.as_str()) {
                *counts.entry(j).or_insert(0.0) += 1.0;
            }
        }
        let mut x: Vec<(u32, f64)> = counts
            .into_iter()
            .map(|(j, c)| (j, c * self.idf[j as usize]))
            .collect();
        // sklearn.preprocessing.normalize(norm="l2"): divide by the root of the sum of
        // squares; an all-zero row stays zero.
        let norm = x.iter().map(|(_, v)| v * v).sum::<f64>().sqrt();
        if norm > 0.0 {
            for (_, v) in &mut x {
                *v /= norm;
            }
        }
        x
    }

    /// `predict_proba(...)[:, 1]`: the mean of the calibrated classifiers' probabilities.
    pub fn probability(&self, text: &str) -> f64 {
        let x = self.features(text);
        let mut sum = 0.0;
        for c in &self.classifiers {
            let f = x.iter().map(|&(j, v)| v * c.coef[j as usize]).sum::<f64>() + c.intercept;
            // scipy.special.expit(-(a f + b))
            sum += 1.0 / (1.0 + (c.a * f + c.b).exp());
        }
        sum / self.classifiers.len() as f64
    }
}

/// scikit-learn's `(?u)\b\w\w+\b` under Python's `re`: a match is a maximal run of at
/// least two word characters. Python's `\w` is `str.isalnum()` (general categories L*
/// and N*) or `_`; the regex crate's `\w` also takes combining marks and other connector
/// punctuation, which would glue "e\u{301}cole" into one token where Python splits it, so
/// the class is spelled out.
fn token_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"[\p{L}\p{N}_]{2,}").expect("valid token regex"))
}

struct Reader<'a> {
    raw: &'a [u8],
    pos: usize,
    origin: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ToxicityError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.raw.len());
        let Some(end) = end else {
            return Err(ToxicityError::file(
                self.origin,
                format!("truncated at byte {} reading {what}", self.pos),
            ));
        };
        let s = &self.raw[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self, what: &str) -> Result<u16, ToxicityError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32, ToxicityError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f64(&mut self, what: &str) -> Result<f64, ToxicityError> {
        let b = self.take(8, what)?;
        let v = f64::from_le_bytes(b.try_into().expect("8 bytes"));
        if !v.is_finite() {
            return Err(ToxicityError::file(
                self.origin,
                format!("non-finite {what} at byte {}", self.pos - 8),
            ));
        }
        Ok(v)
    }
    fn f64s(&mut self, n: usize, what: &str) -> Result<Vec<f64>, ToxicityError> {
        (0..n).map(|_| self.f64(what)).collect()
    }
}

/// The offline default scorer.
#[derive(Debug, Clone)]
pub struct ProfanityCheck {
    weights: Arc<ProfanityWeights>,
}

impl ProfanityCheck {
    /// The embedded alt-profanity-check 1.9.1 weights (parsed once per process).
    pub fn shipped() -> Result<Self, ToxicityError> {
        static SHIPPED: OnceLock<Arc<ProfanityWeights>> = OnceLock::new();
        if let Some(w) = SHIPPED.get() {
            return Ok(Self { weights: w.clone() });
        }
        let w = Arc::new(ProfanityWeights::from_gz(
            WEIGHTS_GZ,
            Path::new(WEIGHTS_PATH),
        )?);
        Ok(Self {
            weights: SHIPPED.get_or_init(|| w).clone(),
        })
    }

    pub fn with_weights(weights: ProfanityWeights) -> Self {
        Self {
            weights: Arc::new(weights),
        }
    }

    pub fn weights(&self) -> &ProfanityWeights {
        &self.weights
    }
}

impl ToxicityScorer for ProfanityCheck {
    fn name(&self) -> &str {
        DEFAULT_SCORER
    }

    fn score(&self, texts: &[String]) -> Result<Vec<f64>, ToxicityError> {
        let scores = texts.iter().map(|t| self.weights.probability(t)).collect();
        check_scores(self.name(), texts.len(), scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(s: &str) -> Vec<String> {
        let lower = s.to_lowercase();
        token_regex()
            .find_iter(&lower)
            .map(|m| m.as_str().to_string())
            .collect()
    }

    #[test]
    fn tokens_follow_pythons_word_characters() {
        assert_eq!(tokens("A bc, DEF_g h1 2 é"), ["bc", "def_g", "h1"]);
        // U+0301 (combining acute) is not \w in Python: it splits the word.
        assert_eq!(tokens("e\u{301}cole"), ["cole"]);
        // Other numerics (superscripts, circled digits) are \w in Python.
        assert_eq!(tokens("x² ①②"), ["x²", "①②"]);
        // U+203F (undertie, a connector punctuation) is not.
        assert_eq!(tokens("ab\u{203f}cd"), ["ab", "cd"]);
    }

    #[test]
    fn shipped_weights_parse() {
        let w = ProfanityCheck::shipped().unwrap();
        assert_eq!(w.weights().vocab_len(), 15442);
        assert_eq!(w.weights().classifiers.len(), 5);
    }

    #[test]
    fn damaged_weights_name_the_file() {
        let e = ProfanityWeights::from_gz(b"nope", Path::new("w.bin.gz")).unwrap_err();
        assert!(e.to_string().starts_with("w.bin.gz: not gzip"), "{e}");
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(WEIGHTS_GZ)
            .read_to_end(&mut raw)
            .unwrap();
        let e = ProfanityWeights::from_bytes(&raw[..1000], Path::new("w.bin")).unwrap_err();
        assert!(e.to_string().contains("w.bin: truncated at byte"), "{e}");
    }

    #[test]
    fn empty_and_unknown_texts_score_the_intercept_only() {
        let s = ProfanityCheck::shipped().unwrap();
        let p = s
            .score(&["".into(), "zzqx blorptastic".into(), "the of".into()])
            .unwrap();
        assert_eq!(p[0], p[1]);
        assert_eq!(p[0], p[2]);
    }
}
