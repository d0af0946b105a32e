#!/usr/bin/env python3
"""Generate the tiny GPT-2 test fixture and its reference outputs.

Purpose
-------
Scalpel's Rust GPT-2 implementation (built on candle) needs a model small
enough to live in the repository and to run in unit tests, together with
outputs it can be checked against.  This script deterministically creates,
from a fixed seed, everything under ``fixtures/tiny-gpt2/``:

* ``tokenizer.json``    byte-level BPE (vocab 512) trained on the short text
                        embedded below; ``<|endoftext|>`` is id 0.
* ``config.json``       a Hugging Face GPT2 config (2 layers, 4 heads, d=64).
* ``model.safetensors`` float32 weights in the exact Hugging Face
                        ``GPT2LMHeadModel`` checkpoint layout (Conv1D weights
                        stored as [in, out], tied unembedding, no lm_head).
* ``reference.json``    token ids, logits at every position and 12-step greedy
                        continuations for a few texts.

The reference logits come from a float64 numpy forward pass written here from
the GPT-2 definition.  It shares no code with candle or with the Rust crate, so
agreement between the two is evidence that both are right rather than that
both inherit one bug.

The weights are deliberately not a plain HF-style init: biases, layer-norm
parameters and embeddings are all non-trivial random values and the matrix
scales are large enough that attention is far from uniform and the MLP runs
in GELU's curved region.  ``check_sensitivity`` proves at generation time that
common implementation mistakes (transposed Conv1D, erf GELU instead of
gelu_new, swapped q/k/v, missing causal mask, ...) move the logits by a wide
margin; if any check fails the script exits without writing anything.  The
smallest such effects (erf GELU, layer-norm eps) are ~1.5e-3 in the logits and
a float32 forward drifts ~5e-6 from the float64 reference, so consumers should
compare logits with an absolute tolerance around 1e-4.

Regenerate
----------
    python tests/reference/tiny_gpt2_reference.py

Requires ``numpy``, ``safetensors`` and ``tokenizers`` (no torch).  Output is
byte-for-byte reproducible for a given numpy / tokenizers version; numpy does
not promise that ``Generator.normal`` streams never change between releases,
so the committed fixtures, not a fresh regeneration, are the source of truth.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path

# Pin the BPE trainer to one thread: it keeps merge tie-breaking independent of
# scheduling and keeps CPU use low on small build machines.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402
from tokenizers import (  # noqa: E402
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
)

# Picked from seeds 1..40 as one whose greedy continuations are varied (at
# least 7 distinct ids per case) rather than collapsing into a repeated token,
# which would let a broken KV cache or position offset pass unnoticed.
SEED = 26
GENERATOR = "tests/reference/tiny_gpt2_reference.py"
REPO_ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = REPO_ROOT / "fixtures" / "tiny-gpt2"

EOT = "<|endoftext|>"
VOCAB_SIZE = 512
N_LAYER = 2
N_HEAD = 4
N_EMBD = 64
N_POSITIONS = 128
N_INNER = 4 * N_EMBD
LN_EPS = 1e-5
GREEDY_STEPS = 12
# Every injected bug must move some logit by at least this much: 10x the
# recommended test tolerance of 1e-4.
SENSITIVITY_FLOOR = 1e-3
# Greedy reference ids are only usable if float32 rounding cannot flip an
# argmax: demand a clear top-1/top-2 gap at every step.
GREEDY_GAP_FLOOR = 1e-3

# Neutral prose, purely so that the BPE has something ordinary to learn from.
# Changing it changes every token id in reference.json.
TRAINING_TEXT = """\
The village sat at the bend of a slow river, where the water widened into a
shallow pool before it turned toward the hills. Every morning the baker opened
his shop at six, and the smell of fresh bread drifted across the square. Children
walked to the school on the far side of the bridge, carrying their books and
lunches, while their parents went to work in the fields, the mill, or the small
offices along the main street.

In the spring the orchards were covered in white and pink blossoms, and the
farmers watched the weather with care. A late frost could ruin a whole season of
apples, so they listened to the radio each evening and talked about the forecast
over dinner. When the summer came, the days grew long and warm. People sat
outside in the evening, reading, talking with their neighbours, or simply
watching the light fade over the river.

The library was one of the oldest buildings in the village. It had tall windows,
wooden shelves that reached almost to the ceiling, and a reading room with a
large table in the middle. The librarian kept a careful record of every book,
and she was always happy to help visitors find what they were looking for. On
rainy afternoons the room was quiet except for the turning of pages and the
sound of water on the glass.

Autumn brought the harvest. The farmers gathered apples, pears, and potatoes,
and the market in the square was busy every Saturday. There were stalls with
cheese, honey, vegetables, and warm soup, and musicians played near the fountain.
As the weather turned cold, the families prepared their homes for winter,
stacking wood, mending roofs, and storing food in their cellars.

Winter was quiet. Snow covered the roads and the fields, and the river froze at
the edges. The school stayed open, and the children built snowmen in the yard
during their breaks. In the evenings the windows of the houses glowed with
yellow light, and the village waited patiently for the return of spring.

Numbers matter too: the bridge is 120 metres long, the mill was built in 1887,
and the bus to the city leaves at 7:45 and 18:30 on weekdays.
"""

CASES = [
    "Hello world",
    "The mill was built in 1887 and has 42 windows.",
    "A café with naïve charm served crème brûlée.",
    "In the spring the farmers watched the weather, and the librarian kept a "
    "record of every visitor by the fountain on Saturday.",
]


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------

def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Matches the real gpt2 tokenizer.json, so offsets behave the same way.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=0,
        special_tokens=[EOT],
        # All 256 byte symbols up front, so any UTF-8 input is encodable even
        # when a byte never occurs in the training text.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAINING_TEXT.splitlines(keepends=True), trainer=trainer)
    if tok.get_vocab_size() != VOCAB_SIZE:
        raise SystemExit(
            f"tokenizer vocab is {tok.get_vocab_size()}, expected {VOCAB_SIZE}: "
            "the training text is too short for the requested number of merges"
        )
    if tok.token_to_id(EOT) != 0:
        raise SystemExit("expected <|endoftext|> at id 0")
    return tok


# --------------------------------------------------------------------------
# Weights (HF GPT2LMHeadModel checkpoint names and layouts)
# --------------------------------------------------------------------------

def make_weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def normal(shape, std, mean=0.0):
        return (mean + std * rng.standard_normal(shape)).astype(np.float32)

    # Scales are chosen so that every component visibly shapes the logits;
    # check_sensitivity enforces that.  Plain HF init (0.02, zero biases,
    # unit LN) would make attention nearly uniform and hide several bugs.
    w: dict[str, np.ndarray] = {}
    w["transformer.wte.weight"] = normal((VOCAB_SIZE, N_EMBD), 0.2)
    w["transformer.wpe.weight"] = normal((N_POSITIONS, N_EMBD), 0.1)
    for i in range(N_LAYER):
        p = f"transformer.h.{i}."
        w[p + "ln_1.weight"] = normal((N_EMBD,), 0.1, 1.0)
        w[p + "ln_1.bias"] = normal((N_EMBD,), 0.05)
        # Conv1D layout: [in_features, out_features]; the output dim is q|k|v.
        w[p + "attn.c_attn.weight"] = normal((N_EMBD, 3 * N_EMBD), 0.15)
        w[p + "attn.c_attn.bias"] = normal((3 * N_EMBD,), 0.05)
        w[p + "attn.c_proj.weight"] = normal((N_EMBD, N_EMBD), 0.1)
        w[p + "attn.c_proj.bias"] = normal((N_EMBD,), 0.05)
        w[p + "ln_2.weight"] = normal((N_EMBD,), 0.1, 1.0)
        w[p + "ln_2.bias"] = normal((N_EMBD,), 0.05)
        w[p + "mlp.c_fc.weight"] = normal((N_EMBD, N_INNER), 0.2)
        w[p + "mlp.c_fc.bias"] = normal((N_INNER,), 0.05)
        w[p + "mlp.c_proj.weight"] = normal((N_INNER, N_EMBD), 0.1)
        w[p + "mlp.c_proj.bias"] = normal((N_EMBD,), 0.05)
    w["transformer.ln_f.weight"] = normal((N_EMBD,), 0.1, 1.0)
    w["transformer.ln_f.bias"] = normal((N_EMBD,), 0.05)
    return w


def hf_config() -> dict:
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.0,
        "bos_token_id": 0,
        "embd_pdrop": 0.0,
        "eos_token_id": 0,
        "initializer_range": 0.02,
        "layer_norm_epsilon": LN_EPS,
        "model_type": "gpt2",
        "n_ctx": N_POSITIONS,
        "n_embd": N_EMBD,
        "n_head": N_HEAD,
        "n_inner": None,
        "n_layer": N_LAYER,
        "n_positions": N_POSITIONS,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.0,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": VOCAB_SIZE,
    }


# --------------------------------------------------------------------------
# Independent float64 forward pass
# --------------------------------------------------------------------------

def gelu_new(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


_erf = np.vectorize(math.erf)


def gelu_erf(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x, weight, bias, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased, as in torch
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def forward(w64: dict[str, np.ndarray], ids: list[int], bug: str | None = None) -> np.ndarray:
    """Logits [seq, vocab] in float64.

    ``bug`` injects one known implementation mistake; it exists only so
    check_sensitivity can show the fixture would catch it.
    """
    seq = len(ids)
    hd = N_EMBD // N_HEAD
    eps = 1e-12 if bug == "ln_eps" else LN_EPS
    act = gelu_erf if bug == "gelu_erf" else gelu_new

    def mm(x, name):
        # Conv1D computes x @ W with W stored [in, out].
        wt = w64[name]
        if bug == "transpose_conv1d" and wt.shape[0] == wt.shape[1]:
            wt = wt.T
        return x @ wt

    pos = np.arange(seq)
    if bug == "no_positions":
        pos = np.zeros(seq, dtype=int)
    x = w64["transformer.wte.weight"][ids] + w64["transformer.wpe.weight"][pos]
    causal = np.tril(np.ones((seq, seq), dtype=bool))

    for i in range(N_LAYER):
        p = f"transformer.h.{i}."
        h = layer_norm(x, w64[p + "ln_1.weight"], w64[p + "ln_1.bias"], eps)
        qkv = mm(h, p + "attn.c_attn.weight") + w64[p + "attn.c_attn.bias"]
        q, k, v = np.split(qkv, 3, axis=-1)
        if bug == "swap_qk":
            q, k = k, q
        elif bug == "swap_kv":
            k, v = v, k

        if bug == "head_split_transposed":
            # [seq, head_dim, n_head] instead of [seq, n_head, head_dim]
            def heads(t):
                return t.reshape(seq, hd, N_HEAD).transpose(2, 0, 1)
        else:
            def heads(t):
                return t.reshape(seq, N_HEAD, hd).transpose(1, 0, 2)

        qh, kh, vh = heads(q), heads(k), heads(v)  # [head, seq, hd]
        scale = 1.0 if bug == "no_attn_scale" else 1.0 / math.sqrt(hd)
        scores = qh @ kh.transpose(0, 2, 1) * scale
        if bug != "no_causal_mask":
            scores = np.where(causal, scores, -np.inf)
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs = probs / probs.sum(axis=-1, keepdims=True)
        attn = probs @ vh  # [head, seq, hd]
        if bug == "head_split_transposed":
            attn = attn.transpose(1, 2, 0).reshape(seq, N_EMBD)
        else:
            attn = attn.transpose(1, 0, 2).reshape(seq, N_EMBD)
        x = x + mm(attn, p + "attn.c_proj.weight") + w64[p + "attn.c_proj.bias"]

        h = layer_norm(x, w64[p + "ln_2.weight"], w64[p + "ln_2.bias"], eps)
        h = act(mm(h, p + "mlp.c_fc.weight") + w64[p + "mlp.c_fc.bias"])
        x = x + mm(h, p + "mlp.c_proj.weight") + w64[p + "mlp.c_proj.bias"]

    if bug != "no_ln_f":
        x = layer_norm(x, w64["transformer.ln_f.weight"], w64["transformer.ln_f.bias"], eps)
    return x @ w64["transformer.wte.weight"].T


def greedy(w64, ids: list[int], steps: int) -> tuple[list[int], float]:
    """New ids and the smallest top-1/top-2 logit gap seen along the way."""
    # Full recompute each step, so the reference is independent of KV caching.
    out = list(ids)
    new = []
    min_gap = math.inf
    for _ in range(steps):
        last = forward(w64, out)[-1]
        top2 = np.sort(last)[-2:]
        min_gap = min(min_gap, float(top2[1] - top2[0]))
        nxt = int(np.argmax(last))
        out.append(nxt)
        new.append(nxt)
    return new, min_gap


BUGS = [
    "transpose_conv1d",
    "gelu_erf",
    "swap_qk",
    "swap_kv",
    "head_split_transposed",
    "no_attn_scale",
    "no_causal_mask",
    "no_positions",
    "ln_eps",
    "no_ln_f",
]


def check_sensitivity(w64, ids: list[int]) -> dict[str, float]:
    """Max |logit change| per injected bug; fail if any is too small to test.

    Reference floats are rounded to 7 significant digits and a float32
    implementation drifts by ~1e-5, so a bug must move logits well beyond that.
    """
    base = forward(w64, ids)
    diffs = {}
    for bug in BUGS:
        diffs[bug] = float(np.abs(forward(w64, ids, bug=bug) - base).max())
    weak = {b: d for b, d in diffs.items() if d < SENSITIVITY_FLOOR}
    if weak:
        raise SystemExit(f"fixture would not detect: {weak}")
    return diffs


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

def round_sig(x: float, digits: int = 7) -> float:
    return float(f"{x:.{digits - 1}e}")


def main() -> None:
    tok = build_tokenizer()
    weights = make_weights(SEED)
    # The reference uses exactly the float32 values that get written.
    w64 = {k: v.astype(np.float64) for k, v in weights.items()}

    cases = []
    min_gap = math.inf
    for text in CASES:
        enc = tok.encode(text)
        ids = enc.ids
        if tok.decode(ids) != text:
            raise SystemExit(f"tokenizer does not round-trip {text!r}")
        logits = forward(w64, ids)
        greedy_ids, gap = greedy(w64, ids, GREEDY_STEPS)
        min_gap = min(min_gap, gap)
        cases.append(
            {
                "text": text,
                "token_ids": ids,
                "logits": [[round_sig(v) for v in row] for row in logits.tolist()],
                "greedy_ids": greedy_ids,
            }
        )

    if min_gap < GREEDY_GAP_FLOOR:
        raise SystemExit(f"greedy argmax too close to a tie (gap {min_gap:.2e})")

    longest = max(cases, key=lambda c: len(c["token_ids"]))["token_ids"]
    diffs = check_sensitivity(w64, longest)
    # How far an honest float32 implementation lands from the reference; this
    # is what the consumer's tolerance has to absorb.
    w32 = {k: v.copy() for k, v in weights.items()}
    f32_logits = forward(w32, longest).astype(np.float64)
    f32_drift = float(np.abs(f32_logits - forward(w64, longest)).max())

    # Nothing is written until every check has passed, so a failed run never
    # leaves weights and reference outputs that disagree with each other.
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tok.save(str(OUT_DIR / "tokenizer.json"), pretty=True)
    save_file(weights, str(OUT_DIR / "model.safetensors"), metadata={"format": "pt"})
    with open(OUT_DIR / "config.json", "w") as f:
        json.dump(hf_config(), f, indent=2)
        f.write("\n")
    reference = {
        "generator": GENERATOR,
        "seed": SEED,
        "cases": cases,
    }
    with open(OUT_DIR / "reference.json", "w") as f:
        json.dump(reference, f, separators=(",", ":"))
        f.write("\n")

    for name in ["config.json", "tokenizer.json", "model.safetensors", "reference.json"]:
        path = OUT_DIR / name
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        print(f"{name:20s} {path.stat().st_size:9d} bytes  sha256:{digest}")
    for c in cases:
        print(f"{len(c['token_ids']):3d} tokens  {c['text']!r}")
    print(f"min greedy top-1/top-2 gap: {min_gap:.3g}")
    print(f"float32 forward drift (max |dlogit|): {f32_drift:.2e}")
    print("sensitivity (max |dlogit|):")
    for bug, d in diffs.items():
        print(f"  {bug:24s} {d:.3g}")


if __name__ == "__main__":
    sys.exit(main())
