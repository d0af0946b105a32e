"""Write small, valid GGUF seeds for the `gguf` fuzz target (fixtures/fuzz/gguf/).

A fuzzer started from real structure reaches the metadata and tensor readers far
sooner than one started from nothing. Two seeds: a 2-layer Llama with a byte-level BPE
vocabulary, and a 2-layer Gemma 3 with a SentencePiece one; random weights, since only
the readers are under test. Needs the `gguf` and `numpy` packages:

    python3 xtask/fuzz/seeds.py fixtures/fuzz/gguf
"""
import sys
from pathlib import Path

import numpy as np
import gguf

D, F, L, H = 8, 16, 2, 2


def byte_chars():
    # GPT-2's printable stand-ins for the 256 bytes.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def weights(w, arch, vocab, rng, gemma):
    t = lambda *s: (rng.standard_normal(s) * 0.1).astype(np.float32)
    w.add_tensor("token_embd.weight", t(vocab, D))
    w.add_tensor("output_norm.weight", np.ones(D, np.float32))
    for l in range(L):
        b = f"blk.{l}."
        for n, s in [("attn_q", (H * 4, D)), ("attn_k", (H * 4, D)), ("attn_v", (H * 4, D)),
                     ("attn_output", (D, H * 4)), ("ffn_gate", (F, D)), ("ffn_up", (F, D)),
                     ("ffn_down", (D, F))]:
            w.add_tensor(b + n + ".weight", t(*s))
        norms = ["attn_norm", "ffn_norm"]
        if gemma:
            norms += ["attn_q_norm", "attn_k_norm", "post_attention_norm", "post_ffw_norm"]
        for n in norms:
            size = 4 if n in ("attn_q_norm", "attn_k_norm") else D
            w.add_tensor(b + n + ".weight", np.ones(size, np.float32))


def llama(path, rng):
    w = gguf.GGUFWriter(str(path), "llama")
    toks = byte_chars() + ["Ġt", "he"]
    w.add_context_length(64)
    w.add_embedding_length(D)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(H)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(toks)
    w.add_token_types([1] * len(toks))
    w.add_token_merges(["Ġ t", "h e"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    weights(w, "llama", len(toks), rng, gemma=False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gemma3(path, rng):
    w = gguf.GGUFWriter(str(path), "gemma3")
    toks = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{b:02X}>" for b in range(256)] + ["▁", "▁the", "a"]
    types = [3, 3, 3, 2] + [6] * 256 + [1, 1, 1]
    w.add_context_length(64)
    w.add_embedding_length(D)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(1 if False else H)
    w.add_key_length(4)
    w.add_value_length(4)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1e6)
    w.add_sliding_window(16)
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_scores([0.0] * len(toks))
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_add_bos_token(True)
    weights(w, "gemma3", len(toks), rng, gemma=True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    llama(out / "seed-llama.gguf", rng)
    gemma3(out / "seed-gemma3.gguf", rng)
