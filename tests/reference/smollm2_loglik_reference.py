#!/usr/bin/env python3
"""Log-likelihood reference for SmolLM2-135M-Instruct with lm-evaluation-harness semantics.

What it is
    The reference that Scalpel's Rust log-likelihood scorer is checked against. It scores
    a fixed list of (context, continuation) pairs -- shaped like the requests that real
    multiple-choice tasks produce (COPA, BoolQ, RTE/CB, ...) plus tokenizer edge cases --
    and writes, for each pair, the summed log-probability of the continuation, the
    harness's is_greedy flag, and the exact token split the harness used
    (context_ids / continuation_ids), so the Rust side can compare the split as well as
    the numbers.

    The scoring is done by lm-eval 0.4.13's own HFLM model class
    (lm_eval.models.huggingface.HFLM), driven directly: the script builds
    lm_eval.api.instance.Instance(request_type="loglikelihood", ...) requests itself and
    calls HFLM.loglikelihood(), so no task data or hub access is needed. HFLM loads the
    GGUF through transformers (dequantized to float32) and runs on the CPU with
    batch_size=1.

How to run it
    pip install lm-eval==0.4.13 torch transformers gguf numpy
    python tests/reference/smollm2_loglik_reference.py \\
        --gguf PATH/SmolLM2-135M-Instruct.Q4_1.gguf --out fixtures/reference/smollm2/loglik.json

    lm-eval 0.4.13 pulls in huggingface-hub 1.x/2.x and datasets 5.x, which the
    transformers 4.57 line refuses; pin them back with
    pip install "huggingface-hub>=0.34,<1.0" "datasets>=2.16,<4.1".
    Last run with lm-eval 0.4.13, transformers 4.57.6, torch 2.15.0 (CPU, one thread);
    about a minute on one core, most of it loading and dequantizing the GGUF twice.

Harness semantics reproduced (all done by HFLM itself, recorded here for the Rust side)
    * Trailing whitespace of the context -- spaces *and newlines*, it is str.rstrip() --
      is moved to the front of the continuation before tokenizing.
    * continuation_ids = tokens(context + continuation)[len(tokens(context)):]. When BPE
      merges across the boundary this is NOT tokens(continuation): the context keeps its
      stand-alone tokenization and the continuation loses whatever merged into the
      context's last token (see the "sun" + "ny today" case: continuation_ids encode only
      " today"). The model is run on context_ids + continuation_ids[:-1], exactly as
      recorded, and scores continuation_ids.
    * Empty context: the context is the single prefix token, HFLM.prefix_token_id =
      tokenizer.bos_token_id = 1 (<|im_start|>), so context_ids is recorded as [1];
      continuation_ids = tokens(continuation) without special tokens.
    * logprob = sum over continuation tokens of log_softmax (float32) at the preceding
      position; is_greedy = every continuation token is the argmax at its position.

The BOS question (two variants are written)
    transformers 4.57 builds this GGUF's tokenizer with its GGUF->LlamaTokenizerFast
    converter, which ignores the GGUF's tokenizer.ggml.add_bos_token = false (the
    tokenizer comes out with add_bos_token=True) and also sets eos_token to the *bos*
    token (<|im_start|>, id 1) instead of id 2. So HFLM constructed exactly as
    HFLM(pretrained=DIR, gguf_file=NAME, dtype="float32", batch_size=1) prepends id 1 to
    every non-empty context. llama.cpp (which honours add_bos_token=false) and the original
    Hugging Face checkpoint's GPT-2-style tokenizer prepend nothing.

    "requests" (primary) is HFLM(..., add_bos_token=False): no BOS on non-empty contexts,
    matching the GGUF's own metadata. "requests_hflm_gguf_default" is the same pairs with
    HFLM's defaults (BOS id 1 auto-prepended to every context). Both use the same model
    and the same harness code; only the tokenizer's BOS handling differs.

Extra per-request fields (not from HFLM, for debugging the Rust side)
    continuation_token_logprobs and greedy_ids come from one extra forward pass of
    HFLM's own model over context_ids + continuation_ids[:-1]; the script asserts their
    sum and argmax agree with what HFLM.loglikelihood returned.
"""

import argparse
import json
import math
import os
import sys

# Keep CPU use modest: this is often run beside a build on a small machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)

import lm_eval  # noqa: E402
import transformers  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402

PREFIX_TOKEN_ID = 1  # <|im_start|>, the GGUF's bos_token_id, HFLM's prefix_token_id

LONG_CONTEXT = (
    "On Saturday morning Maria walked to the farmers market with her neighbour Tom. "
    "They bought a bag of apples, two loaves of fresh bread, a jar of honey and a "
    "bunch of carrots for the soup she planned to cook that evening. The market was "
    "busy, and a man was playing the guitar near the fountain while children chased "
    "pigeons across the square. After shopping they sat on a bench, shared a coffee "
    "and talked about the garden Tom was planting behind his house. He wanted to grow "
    "tomatoes, beans and a few sunflowers, but he worried that the summer would be too "
    "dry. Maria promised to lend him her watering can and some seeds from last year. "
    "On the way home it started to rain, so they hurried back and left the shopping "
    "on the kitchen table. When the rain stopped, Maria looked out of the window and "
    "saw"
)

# (name, context, continuation). Names are stable ids for the Rust tests.
PAIRS = [
    ("copa_a", "The man broke his toe because", " he dropped a hammer on his foot."),
    ("copa_b", "The man broke his toe because", " he got a hole in his sock."),
    (
        "boolq_yes",
        "The sky looks blue on a clear day because the air scatters blue sunlight "
        "more than red sunlight.\nQuestion: is the sky blue?\nAnswer:",
        " yes",
    ),
    (
        "boolq_no",
        "The sky looks blue on a clear day because the air scatters blue sunlight "
        "more than red sunlight.\nQuestion: is the sky blue?\nAnswer:",
        " no",
    ),
    (
        "cb_true",
        "The bakery on Main Street opens at seven every morning and closes at noon."
        " Question: The bakery is open in the morning. True, False or Neither?\nAnswer:",
        " True",
    ),
    (
        "cb_false",
        "The bakery on Main Street opens at seven every morning and closes at noon."
        " Question: The bakery is open in the morning. True, False or Neither?\nAnswer:",
        " False",
    ),
    (
        "cb_neither",
        "The bakery on Main Street opens at seven every morning and closes at noon."
        " Question: The bakery is open in the morning. True, False or Neither?\nAnswer:",
        " Neither",
    ),
    ("trailing_space", "The capital of France is ", "Paris"),
    ("trailing_newline", "Q: 2+2?\nA:\n", "4"),
    ("empty_context", "", "Hello world"),
    ("bpe_merge", "The weather is nice and sun", "ny today"),
    ("digits", "In 1987, the population was", " 3,141,592"),
    ("non_ascii", "Café au", " lait"),
    ("long_context", LONG_CONTEXT, " a rainbow."),
    ("greedy", "The capital of France is", " Paris"),
]

# Pairs whose continuation must be the model's greedy continuation (checked, not assumed).
MUST_BE_GREEDY = {"greedy"}


def capture_token_requests(lm):
    """Wrap lm._loglikelihood_tokens so the exact (context_enc, continuation_enc) that
    HFLM.loglikelihood built -- after its whitespace move and empty-context rule -- is
    recorded. Returns the list that fills up."""
    captured = []
    original = lm._loglikelihood_tokens

    def wrapper(requests, *args, **kwargs):
        captured.extend((list(c), list(x)) for _, c, x in requests)
        return original(requests, *args, **kwargs)

    lm._loglikelihood_tokens = wrapper
    return captured


@torch.no_grad()
def per_token(lm, ctx_ids, cont_ids):
    inp = torch.tensor([ctx_ids + cont_ids[:-1]], dtype=torch.long, device=lm.device)
    logits = lm._model_call(inp)[0, -len(cont_ids):, : lm.vocab_size]
    logp = torch.log_softmax(logits, dim=-1)
    tok = torch.tensor(cont_ids, dtype=torch.long, device=lm.device)
    lps = logp.gather(1, tok[:, None])[:, 0]
    return [float(v) for v in lps], [int(v) for v in logp.argmax(dim=-1)]


def score(gguf_path, add_bos_token):
    kwargs = dict(
        pretrained=os.path.dirname(os.path.abspath(gguf_path)),
        gguf_file=os.path.basename(gguf_path),
        dtype="float32",
        batch_size=1,
        device="cpu",
    )
    if add_bos_token is not None:
        kwargs["add_bos_token"] = add_bos_token
    lm = HFLM(**kwargs)
    assert lm.prefix_token_id == PREFIX_TOKEN_ID, lm.prefix_token_id

    captured = capture_token_requests(lm)
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=(ctx, cont), idx=i)
        for i, (_, ctx, cont) in enumerate(PAIRS)
    ]
    results = lm.loglikelihood(requests, disable_tqdm=True)
    assert len(results) == len(PAIRS) == len(captured)

    out = []
    for (name, ctx, cont), (logprob, is_greedy), (ctx_ids, cont_ids) in zip(
        PAIRS, results, captured
    ):
        if ctx == "":
            assert ctx_ids == [PREFIX_TOKEN_ID], ctx_ids
        else:
            # The split HFLM used is its own _encode_pair.
            assert (ctx_ids, cont_ids) == tuple(map(list, lm._encode_pair(ctx, cont)))
        lps, greedy_ids = per_token(lm, ctx_ids, cont_ids)
        assert math.isclose(sum(lps), logprob, rel_tol=0, abs_tol=1e-4), (name, sum(lps), logprob)
        assert (greedy_ids == cont_ids) == is_greedy, name
        if name in MUST_BE_GREEDY:
            assert is_greedy, f"{name}: continuation is not greedy (greedy ids {greedy_ids})"
        out.append(
            {
                "name": name,
                "context": ctx,
                "continuation": cont,
                "logprob": float(logprob),
                "is_greedy": bool(is_greedy),
                "context_ids": ctx_ids,
                "continuation_ids": cont_ids,
                "continuation_pieces": [lm.tokenizer.decode([t]) for t in cont_ids],
                "continuation_token_logprobs": lps,
                "greedy_ids": greedy_ids,
            }
        )
    del lm
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", required=True, help="path to SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--out", required=True, help="output JSON, e.g. fixtures/reference/smollm2/loglik.json")
    args = ap.parse_args()

    primary = score(args.gguf, add_bos_token=False)
    default = score(args.gguf, add_bos_token=None)

    doc = {
        "generator": "tests/reference/smollm2_loglik_reference.py "
        f"(lm-eval {lm_eval.__version__} HFLM, transformers {transformers.__version__}, "
        f"torch {torch.__version__}, float32 CPU, batch_size=1)",
        "lm_eval_version": lm_eval.__version__,
        "model": os.path.basename(args.gguf),
        "notes": [
            "requests: HFLM(pretrained=DIR, gguf_file=NAME, dtype='float32', batch_size=1, "
            "add_bos_token=False) -- no BOS on non-empty contexts, as the GGUF's "
            "tokenizer.ggml.add_bos_token=false says.",
            "requests_hflm_gguf_default: same without add_bos_token; transformers' GGUF "
            "tokenizer converter ignores add_bos_token=false, so id 1 (<|im_start|>) is "
            "prepended to every non-empty context.",
            "Empty context: context_ids is [1], HFLM's prefix token (bos_token_id, "
            "<|im_start|>); continuation_ids are tokens(continuation) without special tokens.",
            "Trailing whitespace (including newlines) of the context is moved to the "
            "continuation; continuation_ids = tokens(ctx+cont)[len(tokens(ctx)):], so a BPE "
            "merge across the boundary drops the merged part (see bpe_merge).",
            "logprob and is_greedy are HFLM.loglikelihood's output; "
            "continuation_token_logprobs and greedy_ids are a check pass of the same model.",
        ],
        "prefix_token_id": PREFIX_TOKEN_ID,
        "requests": primary,
        "requests_hflm_gguf_default": default,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    for tag, reqs in (("no-bos", primary), ("hflm-default", default)):
        for r in reqs:
            print(
                f"{tag:12s} {r['name']:16s} {r['logprob']:12.6f} greedy={r['is_greedy']!s:5s} "
                f"ctx={len(r['context_ids'])} cont={r['continuation_ids']}",
                file=sys.stderr,
            )
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
