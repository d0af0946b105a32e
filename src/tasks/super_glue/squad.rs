//! transformers' `data/metrics/squad_metrics.py` (`normalize_answer`, `get_tokens`,
//! `compute_exact`, `compute_f1`), the SQuAD scoring the harness's ReCoRD uses, ported
//! exactly: lower-case (Unicode, like Python's `str.lower`), drop ASCII punctuation
//! (`string.punctuation`), replace the words a/an/the (regex `\b(a|an|the)\b` with
//! Python's Unicode word characters: letters, numbers, `_`) by a space, collapse
//! whitespace (Python's `str.split`).

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

use super::py;

const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Python `re`'s `\w` for a str pattern: `str.isalnum()` or `_`.
fn is_word(c: char) -> bool {
    static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[\p{L}\p{N}_]$").expect("regex"));
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    let mut b = [0u8; 4];
    WORD.is_match(c.encode_utf8(&mut b))
}

/// `re.sub(r"\b(a|an|the)\b", " ", text)`.
fn remove_articles(text: &str) -> String {
    let cs: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    'scan: while i < cs.len() {
        let boundary_before = i == 0 || !is_word(cs[i - 1]);
        if boundary_before && is_word(cs[i]) {
            // Alternatives in order, as Python's backtracking tries them.
            for art in ["a", "an", "the"] {
                let n = art.len();
                if i + n <= cs.len()
                    && cs[i..i + n].iter().copied().eq(art.chars())
                    && (i + n == cs.len() || !is_word(cs[i + n]))
                {
                    out.push(' ');
                    i += n;
                    continue 'scan;
                }
            }
        }
        out.push(cs[i]);
        i += 1;
    }
    out
}

/// `normalize_answer`: lower, remove punctuation, remove articles, fix whitespace.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punc: String = lower
        .chars()
        .filter(|c| !PUNCTUATION.contains(*c))
        .collect();
    py::split(&remove_articles(&no_punc)).join(" ")
}

fn get_tokens(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    py::split(&normalize_answer(s))
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// `compute_exact(a_gold, a_pred)`: 1.0 when the normalised strings are equal.
pub fn compute_exact(a_gold: &str, a_pred: &str) -> f64 {
    if normalize_answer(a_gold) == normalize_answer(a_pred) {
        1.0
    } else {
        0.0
    }
}

/// `compute_f1(a_gold, a_pred)`: token-multiset F1 of the normalised strings (1.0 when
/// both are empty, 0.0 when only one is).
pub fn compute_f1(a_gold: &str, a_pred: &str) -> f64 {
    let gold = get_tokens(a_gold);
    let pred = get_tokens(a_pred);
    if gold.is_empty() || pred.is_empty() {
        return if gold == pred { 1.0 } else { 0.0 };
    }
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for t in &gold {
        counts.entry(t).or_default().0 += 1;
    }
    for t in &pred {
        counts.entry(t).or_default().1 += 1;
    }
    let num_same: usize = counts.values().map(|(g, p)| (*g).min(*p)).sum();
    if num_same == 0 {
        return 0.0;
    }
    let precision = 1.0 * num_same as f64 / pred.len() as f64;
    let recall = 1.0 * num_same as f64 / gold.len() as f64;
    (2.0 * precision * recall) / (precision + recall)
}

/// `lm_eval.api.metrics.metric_max_over_ground_truths`: `max(metric(prediction, gold))`
/// over the gold answers (0.0 when there are none; the harness would raise).
pub fn max_over_ground_truths(
    metric: impl Fn(&str, &str) -> f64,
    prediction: &str,
    golds: &[String],
) -> f64 {
    golds
        .iter()
        .map(|g| metric(prediction, g))
        .fold(None, |m: Option<f64>, x| {
            Some(m.map_or(x, |m| if x > m { x } else { m }))
        })
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        assert_eq!(normalize_answer("The  Eiffel-Tower!"), "eiffeltower");
        assert_eq!(normalize_answer("an apple a day"), "apple day");
        assert_eq!(normalize_answer("theatre a_b an"), "theatre ab");
        assert_eq!(compute_f1("Barack Obama", "Obama"), 2.0 * 0.5 / 1.5);
        assert_eq!(compute_exact("the U.S.", "us"), 1.0);
    }
}
