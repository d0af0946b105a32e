#!/usr/bin/env python3
"""Independent float64 reference for SmolLM2-135M-Instruct (GGUF, Q4_1).

What it is
    A from-scratch numpy forward pass of the Llama-architecture SmolLM2-135M-Instruct
    model, read straight from its GGUF file. It writes the fixture that Scalpel's Rust
    (candle-based) model is checked against: for each prompt, the token ids, the
    last-position logits over the whole vocabulary, the top-5, and a 16-token greedy
    continuation.

How to run it
    pip install numpy gguf transformers torch
    python tests/reference/smollm2_reference.py \\
        --gguf /path/to/SmolLM2-135M-Instruct.Q4_1.gguf --out fixtures/reference/smollm2

    transformers is used only for the tokenizer and chat template it builds from the
    GGUF metadata (its GGUF loader imports torch, hence torch in the list); no torch or
    transformers code touches the forward pass. Last run with numpy 2.4.6, gguf 0.19.0,
    transformers 4.57.6, torch 2.15.0; about 2 minutes on one CPU core.

    Cross-check at that run: transformers' own GGUF model (float32) gave last-position
    logits within 3.7e-5 (max abs) of the fixture on every case, and the same greedy ids.

Why float64
    The quantized weights are dequantized exactly (Q4_1/Q8_0 values are small
    integers times an f16 scale plus an f16 min), so the only rounding left is in the
    arithmetic. Doing that in float64 makes this a near-exact reference, and the
    difference from the Rust side's float32 is then attributable to the Rust side alone.

Why it is independent of candle
    No candle, torch or llama.cpp inference code is used. Weights are read with
    gguf.GGUFReader and dequantized with gguf.quants. RoPE is applied in the
    *interleaved* form (pairs (2i, 2i+1)) on the q/k weights exactly as stored in the
    GGUF, whose rows llama.cpp's converter permuted for that form; the Rust side instead
    un-permutes to the Hugging Face layout and uses rotate_half. Both must agree, so a
    bug in either permutation shows up as a mismatch rather than cancelling out.
    Generation recomputes the whole sequence each step (no KV cache) so the cache logic
    on the Rust side is checked against something that has none.
"""

import argparse
import hashlib
import json
import os
import sys
import time

# BLAS threads are capped before numpy loads its library: the reference is small and
# is often run beside a build on a machine with few cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import gguf  # noqa: E402
import numpy as np  # noqa: E402

MAX_NEW_TOKENS = 16
IM_END_ID = 2  # <|im_end|>, the chat model's end-of-turn token

# Two disjoint prompt sets. "dev" may be used while debugging the Rust side; "heldout"
# is kept aside so a passing Rust model has not been tuned against it. Each set covers
# plain English, a chat-formatted turn, digits, non-ASCII text and a >100-token passage.
PROMPTS = [
    ("dev_plain", "dev", False,
     "Once upon a time, in a small village by the sea, there lived an old fisherman who"),
    ("dev_chat", "dev", True,
     "What is the capital of France?"),
    ("dev_digits", "dev", False,
     "In 1987, 3.14159 and 42 were written on the board. On 2024-03-15 the total was"),
    ("dev_unicode", "dev", False,
     "Café crème, naïve façade, São Paulo. 東京は日本の首都です。 I like coffee 🙂 and"),
    ("dev_long", "dev", False,
     "Baking bread at home is a simple process that rewards patience. You begin by mixing "
     "flour, water, salt and a small amount of yeast in a large bowl until no dry flour "
     "remains. The dough is then left to rest for about twenty minutes, which allows the "
     "flour to absorb the water fully. After resting, the dough is kneaded on a lightly "
     "floured surface for eight to ten minutes until it becomes smooth and elastic. It is "
     "placed back in the bowl, covered with a clean towel, and left in a warm spot until it "
     "has doubled in size, which usually takes one to two hours. Once risen, the dough is "
     "gently shaped into a loaf, placed on a baking tray, and allowed to rise again. "
     "Finally, the loaf is baked in a hot oven until the crust is golden brown and"),
    ("heldout_plain", "heldout", False,
     "The water cycle describes how water moves between the oceans, the air and the land. First,"),
    ("heldout_chat", "heldout", True,
     "Give me three tips for staying focused while studying."),
    ("heldout_digits", "heldout", False,
     "The train leaves at 07:45 on 12/31/2023 and the ticket costs $19.99; it stops at 9 of the 12 stations, and the trip takes"),
    ("heldout_unicode", "heldout", False,
     "Grüße aus München! Señor Muñoz ordered crème brûlée. 北京欢迎你。 Καλημέρα ☕🚀 The weather today is"),
    ("heldout_long", "heldout", False,
     "Public libraries have a long history as places where anyone can read and learn. In "
     "many towns, the first libraries were small rooms supported by donations from local "
     "families, and they lent books to members who paid a modest yearly fee. Over time, "
     "cities began to fund libraries with public money, which meant that the collections "
     "could be opened to everyone free of charge. Librarians organized the shelves by "
     "subject, kept careful records of every loan, and helped visitors find what they "
     "needed. Today, a typical library offers not only books but also newspapers, maps, "
     "music, computers with internet access, and quiet rooms for study. Many libraries "
     "also run reading programs for children and classes for adults, so that"),
]


class Config:
    """Hyperparameters, read from the GGUF rather than hard-coded so a wrong file fails loudly."""

    def __init__(self, reader):
        def field(key):
            return reader.fields[key].contents()

        assert field("general.architecture") == "llama"
        self.n_layer = int(field("llama.block_count"))
        self.d_model = int(field("llama.embedding_length"))
        self.n_head = int(field("llama.attention.head_count"))
        self.n_kv_head = int(field("llama.attention.head_count_kv"))
        self.head_dim = self.d_model // self.n_head
        self.rope_dim = int(field("llama.rope.dimension_count"))
        self.rope_base = float(field("llama.rope.freq_base"))
        self.eps = float(field("llama.attention.layer_norm_rms_epsilon"))
        self.vocab = int(field("llama.vocab_size"))
        # The rope_dim check matters: partial rotary would need a different rope() below.
        assert self.rope_dim == self.head_dim == 64, (self.rope_dim, self.head_dim)
        assert self.n_head % self.n_kv_head == 0


def load_weights(reader):
    """All tensors as float64 numpy arrays, in numpy (row-major, [out, in]) orientation."""
    weights = {}
    for t in reader.tensors:
        # GGUF lists dimensions fastest-varying first; numpy wants them the other way round.
        shape = tuple(int(d) for d in reversed(t.shape))
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        weights[t.name] = np.asarray(arr, dtype=np.float64).reshape(shape)
    return weights


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x):
    return x / (1.0 + np.exp(-x))


def rope_interleaved(x, positions, base):
    """Rotate pairs (2i, 2i+1) of each head by position * base^(-2i/d).

    x: [T, H, d]. This is the GPT-J / llama.cpp "normal" rope form, which is what the
    GGUF's permuted attn_q/attn_k rows expect.
    """
    d = x.shape[-1]
    inv_freq = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)  # [d/2]
    angles = positions[:, None].astype(np.float64) * inv_freq[None, :]  # [T, d/2]
    cos = np.cos(angles)[:, None, :]
    sin = np.sin(angles)[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def softmax(x, axis=-1):
    x = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=axis, keepdims=True)


def forward_last_logits(cfg, w, token_ids):
    """Full forward over the sequence; logits at the last position only (all this fixture needs)."""
    ids = np.asarray(token_ids, dtype=np.int64)
    T = len(ids)
    hd = cfg.head_dim
    group = cfg.n_head // cfg.n_kv_head
    positions = np.arange(T)
    # Strictly-upper-triangular -inf hides future positions.
    mask = np.triu(np.full((T, T), -np.inf), k=1)

    h = w["token_embd.weight"][ids]  # [T, d]
    for layer in range(cfg.n_layer):
        p = f"blk.{layer}."
        x = rms_norm(h, w[p + "attn_norm.weight"], cfg.eps)
        q = (x @ w[p + "attn_q.weight"].T).reshape(T, cfg.n_head, hd)
        k = (x @ w[p + "attn_k.weight"].T).reshape(T, cfg.n_kv_head, hd)
        v = (x @ w[p + "attn_v.weight"].T).reshape(T, cfg.n_kv_head, hd)
        q = rope_interleaved(q, positions, cfg.rope_base)
        k = rope_interleaved(k, positions, cfg.rope_base)

        heads = np.empty((T, cfg.n_head, hd))
        for hq in range(cfg.n_head):
            kv = hq // group  # grouped-query attention: consecutive q heads share a kv head
            scores = (q[:, hq, :] @ k[:, kv, :].T) / np.sqrt(hd) + mask
            heads[:, hq, :] = softmax(scores) @ v[:, kv, :]
        h = h + heads.reshape(T, cfg.d_model) @ w[p + "attn_output.weight"].T

        x = rms_norm(h, w[p + "ffn_norm.weight"], cfg.eps)
        gate = x @ w[p + "ffn_gate.weight"].T
        up = x @ w[p + "ffn_up.weight"].T
        h = h + (silu(gate) * up) @ w[p + "ffn_down.weight"].T

    last = rms_norm(h[-1], w["output_norm.weight"], cfg.eps)
    # Tied embeddings: the file has no output.weight, token_embd doubles as the unembedding.
    assert "output.weight" not in w
    return w["token_embd.weight"] @ last  # [vocab]


def greedy(cfg, w, prompt_ids, first_logits):
    """Argmax decoding without a KV cache; np.argmax breaks exact ties toward the lower id.

    Also returns each step's top1-top2 logit margin, so a consumer can tell a real
    disagreement from a near-tie flipped by float32 rounding.
    """
    ids = list(prompt_ids)
    new, margins = [], []
    logits = first_logits
    for step in range(MAX_NEW_TOKENS):
        top2 = np.argsort(-logits, kind="stable")[:2]
        nxt = int(top2[0])
        margins.append(float(logits[top2[0]] - logits[top2[1]]))
        new.append(nxt)
        ids.append(nxt)
        if nxt == IM_END_ID or step == MAX_NEW_TOKENS - 1:
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


def encode(tok, text):
    # add_special_tokens=False is essential: the tokenizer transformers builds from this
    # GGUF has a post-processor that prepends <|im_start|> (id 1) as a BOS, although the
    # GGUF says add_bos_token = false and llama.cpp prepends nothing.
    return tok.encode(text, add_special_tokens=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True, help="path to SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", required=True, help="output directory, e.g. fixtures/reference/smollm2")
    args = ap.parse_args()

    tok = load_tokenizer(args.gguf)
    # Guard the tokenizer conventions the fixture depends on: special tokens in the text
    # are matched atomically, and nothing is prepended.
    probe = encode(tok, "<|im_start|>user\n")
    assert probe == [1, 4093, 198], probe

    reader = gguf.GGUFReader(args.gguf)
    cfg = Config(reader)
    t0 = time.time()
    w = load_weights(reader)
    assert w["token_embd.weight"].shape == (cfg.vocab, cfg.d_model)
    print(f"loaded {len(w)} tensors in {time.time() - t0:.1f}s", file=sys.stderr)

    os.makedirs(args.out, exist_ok=True)
    cases = []
    for name, set_name, chat, prompt in PROMPTS:
        if chat:
            text = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = prompt
        ids = encode(tok, text)

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
            "chat": chat,
            "text": text,
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
        "generator": "tests/reference/smollm2_reference.py",
        "dtype": "float64",
        "notes": (
            "logits_file: last-position logits, raw little-endian float32, vocab-sized, "
            "computed in float64. greedy_ids: up to 16 argmax tokens, no KV cache, stopping "
            "after <|im_end|> (id 2) if produced; greedy_text decodes them with special "
            "tokens kept. greedy_margins: top1-top2 logit gap at each greedy step. "
            "No BOS is prepended; chat text is the GGUF chat template with "
            "add_generation_prompt=true."
        ),
        "cases": cases,
    }
    with open(os.path.join(args.out, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
