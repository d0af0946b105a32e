"""Export alt-profanity-check 1.9.1's TF-IDF + calibrated LinearSVC weights for Rust.

Run once (the outputs are committed):

    python -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install scikit-learn==1.9.1 joblib
    /tmp/refvenv/bin/python tests/reference/export_profanity_check.py \
        ~/.cache/scalpel/assets/profanity-check

The joblib files were pickled with scikit-learn 1.9.1 (their `_sklearn_version`); load
them with that version so nothing is silently re-interpreted.

Writes
- src/toxicity/weights/profanity_check.bin.gz: the weights (format below), embedded in
  the binary with include_bytes!;
- fixtures/toxicity/profanity_check_probs.json: sklearn's probabilities on varied texts,
  for the exactness test in tests/toxicity.rs.

Binary format, little-endian, gzip-compressed:
    b"SCPCHK01"                      magic
    u32 n_vocab, u32 n_classifiers
    n_vocab x (u16 byte length, UTF-8 bytes)   term of column j, j = 0..n_vocab
    n_vocab x f64                    idf
    n_classifiers x (f64 intercept, f64 a, f64 b, n_vocab x f64 coef)
Probability (CalibratedClassifierCV.predict_proba[:, 1] with method="sigmoid"):
    x = l2_normalize(counts * idf); f_k = coef_k . x + intercept_k
    p = mean_k 1 / (1 + exp(a_k f_k + b_k))
"""

import gzip
import json
import struct
import sys
from pathlib import Path

import joblib
import numpy as np
import sklearn

ROOT = Path(__file__).resolve().parents[2]
asset = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.home() / ".cache/scalpel/assets/profanity-check"
data = asset / "profanity_check" / "data"
vec = joblib.load(data / "vectorizer.joblib")
model = joblib.load(data / "model.joblib")
assert vec.__getstate__()["_sklearn_version"] == sklearn.__version__, "load with the pickling version"

# What the Rust side assumes about the vectorizer.
p = vec.get_params()
assert p["lowercase"] and p["ngram_range"] == (1, 1) and p["analyzer"] == "word"
assert p["token_pattern"] == r"(?u)\b\w\w+\b" and p["norm"] == "l2" and p["use_idf"]
assert not p["sublinear_tf"] and p["strip_accents"] is None and p["preprocessor"] is None
# Stop words are dropped at transform time; they are not in the vocabulary either, so
# ignoring out-of-vocabulary tokens drops them too.
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

assert not (set(vec.vocabulary_) & set(ENGLISH_STOP_WORDS))
assert model.method == "sigmoid" and list(model.classes_) == [0, 1]

n = len(vec.vocabulary_)
terms = [None] * n
for t, j in vec.vocabulary_.items():
    terms[j] = t
assert all(t is not None for t in terms)

out = bytearray(b"SCPCHK01")
out += struct.pack("<II", n, len(model.calibrated_classifiers_))
for t in terms:
    b = t.encode("utf-8")
    out += struct.pack("<H", len(b)) + b
out += np.asarray(vec.idf_, dtype="<f8").tobytes()
for cc in model.calibrated_classifiers_:
    est = cc.estimator
    assert est.coef_.shape == (1, n) and list(est.classes_) == [0, 1]
    (cal,) = cc.calibrators
    out += struct.pack("<ddd", float(est.intercept_[0]), float(cal.a_), float(cal.b_))
    out += np.asarray(est.coef_[0], dtype="<f8").tobytes()

wdir = ROOT / "src/toxicity/weights"
wdir.mkdir(parents=True, exist_ok=True)
# mtime=0: the same weights give the same bytes.
(wdir / "profanity_check.bin.gz").write_bytes(gzip.compress(bytes(out), compresslevel=9, mtime=0))

texts = [
    "",
    " ",
    "a",
    "I",
    "Have a nice day!",
    "You are a fucking idiot.",
    "FUCK EVERYONE WHO SITS ON THEIR FUCKING ASSES",
    "shit",
    "Sh1t h@ppens, you b!tch",
    "the of and to",  # stop words only
    "zzqx blorptastic wugs",  # out of vocabulary only
    "go to hell, you stupid moron",
    "I love puppies and sunshine.",
    "Ünïcödé façade naïve café résumé — “quotes” ‘single’",
    "Ἀθῆναι ΣΊΣΥΦΟΣ οδός",  # Greek, final sigma on lowercasing
    "İstanbul’da DİKKAT",  # dotted capital I lowercases to i + U+0307
    "日本語のテキスト 中文 한국어",
    "emoji 😀🔥💩 ass-hat",
    "snake_case_word __dunder__ _x x_ a_b",
    "numbers 123 4 56 ²³ ½ ① ٣٤",  # decimal and other numerics
    "क्षत्रिय हिन्दी",  # Devanagari vowel signs are marks: not \w in Python
    "e\u0301cole cafe\u0301",  # combining accents split words in Python's \w
    "tab\tseparated\nnew line\r\nwindows",
    "don't can't won't isn't",
    "what the hell is this crap",
    "dick dick dick dick",
    "Damn it!",
    "He's such a bastard, kill him",
    "Women are inferior and should not vote.",
    "The quick brown fox jumps over the lazy dog.",
    "Kill all the bugs in the code",
    "ASSASSIN assassin Assassination",
    "x" * 5000,
    " ".join(["idiot"] * 300),
    "wtf lol lmao omg stfu",
    "pussy cat",
    "\u00a0nbsp\u2009thin\u3000ideographic spaces",
    "mixed CASE FuCk ShIt",
    # Non-ASCII, digit and underscore terms that are in the vocabulary:
    "Pokémon with Beyoncé and José, stupid",
    "poke\u0301mon beyonce\u0301",  # decomposed: Python's \w stops at U+0301
    "ΜΕΛ μελ βcommand ετητης dαlus snunɐw",
    "連絡 迷惑 見学 ውይይት 竜龙",
    "User_Talk:Foo __toc__ ___ fair_use wikipedia_talk idiot",
    "back in 2005 and 1992, 01 08 14",
    "damn\u200bit",  # zero-width space is not \w
]
probs = model.predict_proba(vec.transform(texts))[:, 1]
fixture = {
    "source": "alt-profanity-check==1.9.1 predict_proba[:, 1], scikit-learn " + sklearn.__version__,
    "script": "tests/reference/export_profanity_check.py",
    "items": [{"text": t, "prob": float(pr)} for t, pr in zip(texts, probs)],
}
fdir = ROOT / "fixtures/toxicity"
fdir.mkdir(parents=True, exist_ok=True)
(fdir / "profanity_check_probs.json").write_text(json.dumps(fixture, ensure_ascii=False, indent=1) + "\n")
print(len(out), "bytes raw;", (wdir / "profanity_check.bin.gz").stat().st_size, "gzipped")
