#!/usr/bin/env python3
"""Independent float64 reference for Gemma-3-270M (base, GGUF Q4_K_M).

What it is
    A from-scratch numpy forward pass of Gemma 3, read straight from its GGUF file. It
    writes the fixture Scalpel's Rust model (src/model/gemma3.rs) is checked against:
    for each prompt the token ids, the last-position logits over the whole vocabulary,
    the top-5 and a 16-token greedy continuation; and, for the tokenizer, the ids the
    Hugging Face Gemma tokenizer gives on plain, non-ASCII, digit, whitespace-heavy and
    special-token text.

How to run it
    pip install numpy gguf transformers torch
    python tests/reference/gemma3_reference.py \\
        --gguf /path/to/gemma-3-270m-q4_k_m.gguf --out fixtures/reference/gemma3

    transformers supplies only the tokenizer (its GemmaTokenizer rebuilt from the GGUF
    vocabulary), and, with --crosscheck, its own Gemma3ForCausalLM loaded from the same
    GGUF as a second opinion on the logits. No torch code touches the fixture's numbers.
    Last run with numpy 2.4.6, gguf 0.19.0, transformers 5.24.0, torch 2.15.0.

What it implements (from the Gemma 3 report and transformers' modeling_gemma3)
    embeddings × √d; per layer: RMSNorm → attention → RMSNorm (post) → residual,
    RMSNorm → GeGLU MLP (tanh GELU) → RMSNorm (post) → residual; q and k RMS-normed
    per head before RoPE; RoPE in the rotate-half (NEOX) form over all head dims, base
    1e6 on global layers and 10000 on local ones; local layers see a sliding window of
    the last 512 positions; every 6th layer (5, 11, 17) is global, since the GGUF does
    not record the pattern; attention scale 256^-0.5 (query_pre_attn_scalar = head
    dim); tied unembedding. llama.cpp's converter stores every norm weight as 1 + w, so
    the stored value is the multiplier. Softcapping is applied if the GGUF sets it
    (Gemma 3 does not).

Why float64
    Dequantized Q4_K/Q5_0/Q6_K/Q8_0 weights are exact small integers times f16 scales,
    so in float64 the only rounding left is arithmetic; the gap to the Rust side's
    float32 is then the Rust side's.
"""

import argparse
import hashlib
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import gguf  # noqa: E402
import numpy as np  # noqa: E402

MAX_NEW_TOKENS = 16
STOP_IDS = {1, 106}  # <eos>, <end_of_turn>
GLOBAL_EVERY = 6
LOCAL_ROPE_BASE = 10000.0


def long_text(animals, places, objects, n):
    """A >512-token passage, so local layers' sliding window is exercised."""
    parts = []
    for i in range(n):
        parts.append(
            f"On day {i + 1}, the {animals[i % len(animals)]} walked to the "
            f"{places[(3 * i) % len(places)]} and found {7 * i + 3} "
            f"{objects[(5 * i) % len(objects)]}."
        )
    return " ".join(parts) + " At the end of it all, the"


PROMPTS = [
    ("dev_plain", "dev",
     "Once upon a time, in a small village by the sea, there lived an old fisherman who"),
    ("dev_digits", "dev",
     "In 1987, 3.14159 and 42 were written on the board. On 2024-03-15 the total was"),
    ("dev_unicode", "dev",
     "Café crème, naïve façade, São Paulo. 東京は日本の首都です。 I like coffee 🙂 and"),
    ("dev_long", "dev", long_text(
        ["fox", "heron", "badger", "otter", "lynx"],
        ["river", "market", "old mill", "forest", "harbour", "library", "hill"],
        ["stones", "apples", "coins", "feathers", "keys", "shells", "maps"], 40)),
    ("heldout_plain", "heldout",
     "The water cycle describes how water moves between the oceans, the air and the land. First,"),
    ("heldout_digits", "heldout",
     "The train leaves at 07:45 on 12/31/2023 and the ticket costs $19.99; it stops at 9 of the 12 stations, and the trip takes"),
    ("heldout_unicode", "heldout",
     "Grüße aus München! Señor Muñoz ordered crème brûlée. 北京欢迎你。 Καλημέρα ☕🚀 The weather today is"),
    ("heldout_spaces", "heldout",
     "def area(r):\n    \"\"\"Circle area.\"\"\"\n\n    return   3.14159 * r  *  r\n\n\n\tprint(area(2))\n#"),
]

# Tokenizer cases: ids must equal the Hugging Face tokenizer's on each.
TOKENIZER_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " leading space and trailing space ",
    "Multiple   spaces\tand\ttabs\n\nand\n\n\nnewlines    end",
    "                                  forty spaces then text",
    "1234567890 3.14159 2024-03-15 $19.99 1,000,000 0x7FFF",
    "Café crème brûlée, naïve façade, São Paulo, Ærøskøbing",
    "東京は日本の首都です。北京欢迎你。서울은 한국의 수도입니다.",
    "Καλημέρα κόσμε. Привет, мир! مرحبا بالعالم שלום עולם",
    "Emoji 🙂🚀☕ and symbols ∑∫√ ≤ ≥ ≠ → ← ™ © ®",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "def f(x):\n    return x ** 2  # square\n",
    "A\u00a0non-breaking space and a zero\u200bwidth space",
    "\n",
    "",
]


class Config:
    def __init__(self, reader):
        def field(key, default=None):
            f = reader.fields.get(key)
            return default if f is None else f.contents()

        assert field("general.architecture") == "gemma3"
        self.n_layer = int(field("gemma3.block_count"))
        self.d_model = int(field("gemma3.embedding_length"))
        self.n_head = int(field("gemma3.attention.head_count"))
        self.n_kv_head = int(field("gemma3.attention.head_count_kv"))
        self.head_dim = int(field("gemma3.attention.key_length"))
        assert int(field("gemma3.attention.value_length")) == self.head_dim
        self.rope_base = float(field("gemma3.rope.freq_base"))
        self.window = int(field("gemma3.attention.sliding_window"))
        self.eps = float(field("gemma3.attention.layer_norm_rms_epsilon"))
        self.attn_softcap = field("gemma3.attn_logit_softcapping")
        self.final_softcap = field("gemma3.final_logit_softcapping")
        assert field("gemma3.rope.scaling.type") is None, "rope scaling not implemented here"
        assert self.n_head % self.n_kv_head == 0


def load_weights(reader):
    weights = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        weights[t.name] = np.asarray(arr, dtype=np.float64).reshape(shape)
    return weights


def rms_norm(x, scale, eps):
    """`scale` is the stored weight, which already holds Gemma's 1 + w."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def rope_neox(x, positions, base):
    """Rotate (i, i + d/2) pairs of each head: x [T, H, d]."""
    d = x.shape[-1]
    inv_freq = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = positions[:, None].astype(np.float64) * inv_freq[None, :]  # [T, d/2]
    cos = np.cos(ang)[:, None, :]
    sin = np.sin(ang)[:, None, :]
    a, b = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=-1, keepdims=True)


def is_global(layer):
    return (layer + 1) % GLOBAL_EVERY == 0


def forward_last_logits(cfg, w, token_ids):
    ids = np.asarray(token_ids, dtype=np.int64)
    T = len(ids)
    hd = cfg.head_dim
    group = cfg.n_head // cfg.n_kv_head
    pos = np.arange(T)
    causal = pos[None, :] <= pos[:, None]
    local = causal & (pos[:, None] - pos[None, :] < cfg.window)
    masks = {
        True: np.where(causal, 0.0, -np.inf),
        False: np.where(local, 0.0, -np.inf),
    }

    h = w["token_embd.weight"][ids] * np.sqrt(cfg.d_model)
    for layer in range(cfg.n_layer):
        p = f"blk.{layer}."
        glob = is_global(layer)
        x = rms_norm(h, w[p + "attn_norm.weight"], cfg.eps)
        q = (x @ w[p + "attn_q.weight"].T).reshape(T, cfg.n_head, hd)
        k = (x @ w[p + "attn_k.weight"].T).reshape(T, cfg.n_kv_head, hd)
        v = (x @ w[p + "attn_v.weight"].T).reshape(T, cfg.n_kv_head, hd)
        q = rms_norm(q, w[p + "attn_q_norm.weight"], cfg.eps)
        k = rms_norm(k, w[p + "attn_k_norm.weight"], cfg.eps)
        base = cfg.rope_base if glob else LOCAL_ROPE_BASE
        q = rope_neox(q, pos, base)
        k = rope_neox(k, pos, base)
        heads = np.empty((T, cfg.n_head, hd))
        for hq in range(cfg.n_head):
            kv = hq // group
            s = (q[:, hq, :] @ k[:, kv, :].T) * hd ** -0.5
            if cfg.attn_softcap:
                s = np.tanh(s / cfg.attn_softcap) * cfg.attn_softcap
            heads[:, hq, :] = softmax(s + masks[glob]) @ v[:, kv, :]
        a = heads.reshape(T, cfg.n_head * hd) @ w[p + "attn_output.weight"].T
        h = h + rms_norm(a, w[p + "post_attention_norm.weight"], cfg.eps)

        x = rms_norm(h, w[p + "ffn_norm.weight"], cfg.eps)
        gate = x @ w[p + "ffn_gate.weight"].T
        up = x @ w[p + "ffn_up.weight"].T
        m = (gelu_tanh(gate) * up) @ w[p + "ffn_down.weight"].T
        h = h + rms_norm(m, w[p + "post_ffw_norm.weight"], cfg.eps)

    last = rms_norm(h[-1], w["output_norm.weight"], cfg.eps)
    assert "output.weight" not in w
    logits = w["token_embd.weight"] @ last
    if cfg.final_softcap:
        logits = np.tanh(logits / cfg.final_softcap) * cfg.final_softcap
    return logits


def greedy(cfg, w, prompt_ids, first_logits):
    ids = list(prompt_ids)
    new, margins = [], []
    logits = first_logits
    for step in range(MAX_NEW_TOKENS):
        top2 = np.argsort(-logits, kind="stable")[:2]
        nxt = int(top2[0])
        margins.append(float(logits[top2[0]] - logits[top2[1]]))
        new.append(nxt)
        ids.append(nxt)
        if nxt in STOP_IDS or step == MAX_NEW_TOKENS - 1:
            break
        logits = forward_last_logits(cfg, w, ids)
    return new, margins


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_tokenizer(gguf_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        os.path.dirname(os.path.abspath(gguf_path)), gguf_file=os.path.basename(gguf_path)
    )


def crosscheck(gguf_path, cases, out):
    """transformers' own Gemma 3 on the same GGUF (float32): max |Δ logits| per case."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(gguf_path)),
        gguf_file=os.path.basename(gguf_path),
        torch_dtype=torch.float32,
    ).eval()
    report = {}
    for c in cases:
        with torch.no_grad():
            lg = model(torch.tensor([c["token_ids"]])).logits[0, -1].double().numpy()
        ref = np.fromfile(os.path.join(out, c["logits_file"]), dtype="<f4")
        report[c["name"]] = float(np.max(np.abs(lg - ref)))
        print(f"crosscheck {c['name']}: max |transformers - fixture| = {report[c['name']]:.2e}",
              file=sys.stderr)
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--crosscheck", action="store_true",
                    help="also compare against transformers' Gemma3ForCausalLM")
    ap.add_argument("--only", help="comma-separated case names (debugging)")
    args = ap.parse_args()

    tok = load_tokenizer(args.gguf)
    os.makedirs(args.out, exist_ok=True)
    tok_cases = [
        {"text": t, "ids": [int(i) for i in tok.encode(t, add_special_tokens=False)]}
        for t in TOKENIZER_TEXTS
    ]
    with_bos = tok.encode("Hello world", add_special_tokens=True)
    assert with_bos[0] == 2 and with_bos[1:] == tok_cases[0]["ids"], with_bos

    reader = gguf.GGUFReader(args.gguf)
    cfg = Config(reader)
    t0 = time.time()
    w = load_weights(reader)
    print(f"loaded {len(w)} tensors in {time.time() - t0:.1f}s", file=sys.stderr)

    cases = []
    for name, set_name, prompt in PROMPTS:
        if args.only and name not in args.only.split(","):
            continue
        ids = tok.encode(prompt, add_special_tokens=True)  # <bos> + text
        t0 = time.time()
        logits = forward_last_logits(cfg, w, ids)
        assert np.all(np.isfinite(logits)), name
        new_ids, margins = greedy(cfg, w, ids, logits)
        logits_file = f"{name}.f32"
        logits.astype("<f4").tofile(os.path.join(args.out, logits_file))
        top = np.argsort(-logits, kind="stable")[:5]
        cases.append({
            "name": name,
            "set": set_name,
            "prompt": prompt,
            "token_ids": [int(i) for i in ids],
            "greedy_ids": new_ids,
            "greedy_text": tok.decode(new_ids, skip_special_tokens=False),
            "greedy_margins": margins,
            "logits_file": logits_file,
            "top5": [[int(i), float(logits[i])] for i in top],
        })
        print(f"{name}: {len(ids)} tokens, {time.time() - t0:.1f}s, "
              f"greedy={cases[-1]['greedy_text']!r}", file=sys.stderr)

    doc = {
        "model": os.path.basename(args.gguf),
        "gguf_sha256": sha256_file(args.gguf),
        "generator": "tests/reference/gemma3_reference.py",
        "dtype": "float64",
        "notes": (
            "token_ids: <bos> (2) then the prompt as the Hugging Face Gemma tokenizer "
            "encodes it. logits_file: last-position logits, little-endian float32, "
            "vocab-sized, computed in float64. greedy_ids: up to 16 argmax tokens, no KV "
            "cache, stopping after <eos> or <end_of_turn>. greedy_margins: top1-top2 gap "
            "per step. tokenizer: ids without <bos>."
        ),
        "cases": cases,
        "tokenizer": tok_cases,
    }
    if args.crosscheck:
        doc["crosscheck_transformers_max_abs"] = crosscheck(args.gguf, cases, args.out)
    with open(os.path.join(args.out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
