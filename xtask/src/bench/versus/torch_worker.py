"""The PyTorch + transformers side of `cargo xtask bench` (see versus/mod.rs).

One process runs one workload once and prints one JSON object. The inputs are token
ids that Scalpel's own task code produced (spec.json), so both sides compute the same
thing; the outputs carry what the bench compares (accuracies, perplexity, trace
effects, greedy continuations) beside the timing.

Written the way a careful user of the Python stack would run these evaluations:
lm-evaluation-harness's request layout for log-likelihoods (longest first, right-padded
batches), `generate` with sampling for RealToxicityPrompts, ROME's batched
noise-and-restore through forward hooks for tracing.

usage: python torch_worker.py SPEC WORKLOAD THREADS
"""

import json
import math
import os
import sys
import time


def peak_rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def load_model(path, torch):
    from transformers import AutoModelForCausalLM

    directory, name = os.path.split(path)
    model = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=name, dtype=torch.float32
    )
    model.eval()
    return model


def batches(seq, n):
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def score_pairs(model, torch, pairs, batch_size, max_len):
    """Summed log-probability and greedy flag of each (context, continuation) pair,
    lm-evaluation-harness style: input (ctx + cont)[-(max_len + 1):][:-1], longest
    inputs first, right padding, one forward per batch."""
    import torch.nn.functional as F

    reqs = []
    for i, (ctx, cont) in enumerate(pairs):
        whole = (ctx + cont)[-(max_len + 1) :]
        reqs.append((i, whole[:-1], len(cont), whole[-len(cont) :]))
    reqs.sort(key=lambda r: -len(r[1]))
    out = [None] * len(pairs)
    with torch.inference_mode():
        for batch in batches(reqs, batch_size):
            t = max(len(r[1]) for r in batch)
            ids = torch.zeros((len(batch), t), dtype=torch.long)
            mask = torch.zeros((len(batch), t), dtype=torch.long)
            for row, r in enumerate(batch):
                ids[row, : len(r[1])] = torch.tensor(r[1])
                mask[row, : len(r[1])] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits
            logp = F.log_softmax(logits, dim=-1)
            for row, (i, inp, n, cont) in enumerate(batch):
                lp = logp[row, len(inp) - n : len(inp)]
                target = torch.tensor(cont)
                total = lp.gather(1, target[:, None]).sum().item()
                greedy = bool((lp.argmax(-1) == target).all().item())
                out[i] = (total, greedy)
    return out


def loglik(model, torch, spec):
    w = spec["loglik"]
    pairs, owner = [], []
    for k, item in enumerate(w["items"]):
        for ctx, cont in item["pairs"]:
            pairs.append((ctx, cont))
            owner.append(k)
    t0 = time.perf_counter()
    scored = score_pairs(model, torch, pairs, w["batch_size"], spec["max_positions"])
    secs = time.perf_counter() - t0
    lls = [[] for _ in w["items"]]
    for k, (ll, _) in zip(owner, scored):
        lls[k].append(ll)
    correct = {}
    for item, ll in zip(w["items"], lls):
        pred = max(range(len(ll)), key=lambda c: (ll[c], -c))
        hit, n = correct.get(item["task"], (0, 0))
        correct[item["task"]] = (hit + (pred == item["label"]), n + 1)
    return secs, len(w["items"]), {
        "acc": {t: h / n for t, (h, n) in correct.items()},
        "loglikelihoods": [ll for ll, _ in scored],
    }


def perplexity(model, torch, spec):
    w = spec["perplexity"]
    pairs = [(x["context"], x["continuation"]) for x in w["windows"]]
    t0 = time.perf_counter()
    scored = score_pairs(model, torch, pairs, w["batch_size"], spec["max_positions"])
    secs = time.perf_counter() - t0
    ll = sum(s for s, _ in scored)
    tokens = sum(len(x["continuation"]) for x in w["windows"])
    return secs, tokens, {
        "token_perplexity": math.exp(-ll / tokens),
        "loglikelihood": ll,
    }


def generate(model, torch, spec):
    w = spec["generate"]
    k, n_new = w["samples"], w["max_new_tokens"]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    produced = 0
    with torch.inference_mode():
        for prompt in w["prompts"]:
            ids = torch.tensor([prompt] * k)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=1.0,
                top_p=w["top_p"],
                top_k=0,
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                pad_token_id=spec["pad_id"],
            )
            produced += (out.shape[1] - ids.shape[1]) * k
    secs = time.perf_counter() - t0
    greedy = []
    g0 = time.perf_counter()
    with torch.inference_mode():
        for prompt in w["prompts"][: w["greedy_check"]]:
            ids = torch.tensor([prompt])
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                pad_token_id=spec["pad_id"],
            )
            greedy.append(out[0, ids.shape[1] :].tolist())
    greedy_secs = time.perf_counter() - g0
    return secs, produced, {
        "greedy": greedy,
        "greedy_secs": greedy_secs,
        "greedy_tokens": sum(len(g) for g in greedy),
    }


def trace(model, torch, spec):
    """ROME's residual-stream sweep: rows are (site, noise sample); the embedding hook
    adds each row's noise, each layer's hook puts the clean state back at the sites of
    that layer. `batch_rows` rows per forward, as Scalpel batches them."""
    w = spec["trace"]
    ids = w["ids"]
    t, k, n_layers = len(ids), w["samples"], w["n_layers"]
    d = len(w["noise"]) // (k * t)
    noise = torch.tensor(w["noise"], dtype=torch.float32).reshape(k, t, d)
    target = w["target_id"]
    x = torch.tensor([ids])
    layers = model.model.layers

    def out_tensor(o):
        return o[0] if isinstance(o, tuple) else o

    def with_tensor(o, h):
        return (h,) + tuple(o[1:]) if isinstance(o, tuple) else h

    t0 = time.perf_counter()
    with torch.inference_mode():
        clean = []
        hs = [
            layer.register_forward_hook(
                lambda m, a, o: clean.append(out_tensor(o)[0].clone())
            )
            for layer in layers
        ]
        model(input_ids=x)
        for h in hs:
            h.remove()

    state = {}

    def embed_hook(m, a, o):
        return o + state["noise"]

    def layer_hook(layer):
        def hook(m, a, o):
            cells = state["rows"].get(layer)
            if cells is None:
                return None
            rows, pos = cells
            h = out_tensor(o).clone()
            h[rows, pos] = clean[layer][pos]
            return with_tensor(o, h)

        return hook

    def run(sites):
        # sites: list of (layer, position) or None (nothing restored)
        rows = len(sites) * k
        state["noise"] = noise.repeat(len(sites), 1, 1)
        by_layer = {}
        for s, site in enumerate(sites):
            if site is not None:
                by_layer.setdefault(site[0], []).extend(
                    (s * k + j, site[1]) for j in range(k)
                )
        state["rows"] = {
            l: (torch.tensor([r for r, _ in c]), torch.tensor([p for _, p in c]))
            for l, c in by_layer.items()
        }
        logits = model(input_ids=x.repeat(rows, 1)).logits[:, -1]
        p = torch.softmax(logits.double(), dim=-1)[:, target].reshape(len(sites), k)
        return p.mean(1).tolist()

    handles = [model.model.embed_tokens.register_forward_hook(embed_hook)]
    handles += [l.register_forward_hook(layer_hook(i)) for i, l in enumerate(layers)]
    with torch.inference_mode():
        p_corrupt = run([None])[0]
        sites = [(l, p) for l in range(n_layers) for p in range(t)]
        per_pass = max(w["batch_rows"] // k, 1)
        probs = []
        for chunk in batches(sites, per_pass):
            probs.extend(run(chunk))
    secs = time.perf_counter() - t0
    for h in handles:
        h.remove()
    effect = [[p - p_corrupt for p in probs[l * t : (l + 1) * t]] for l in range(n_layers)]
    return secs, len(sites), {"p_corrupt": p_corrupt, "effect": effect}


def matmul(model, torch, spec):
    """Best f32 matmul throughput of this torch build (FLOP/s), for the prefill bound."""
    n = spec["matmul_n"]
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return best, 2 * n**3, {}


WORKLOADS = {
    "loglik": loglik,
    "generate": generate,
    "trace": trace,
    "perplexity": perplexity,
    "matmul": matmul,
}


def warm_up(model, torch):
    # The first forward pays one-off costs (allocator, kernel selection) that a user's
    # long run amortises; Scalpel's worker warms up the same way.
    with torch.inference_mode():
        model(input_ids=torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]]))


def main():
    spec_path, workload, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    import torch

    torch.set_num_threads(threads)
    with open(spec_path) as f:
        spec = json.load(f)
    t0 = time.perf_counter()
    model = None if workload == "matmul" else load_model(spec["model_path"], torch)
    load_secs = time.perf_counter() - t0
    if model is not None:
        warm_up(model, torch)
    secs, units, result = WORKLOADS[workload](model, torch, spec)
    import transformers

    print(
        json.dumps(
            {
                "secs": secs,
                "units": units,
                "load_secs": load_secs,
                "peak_rss_bytes": peak_rss_bytes(),
                "result": result,
                "versions": {
                    "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "threads": torch.get_num_threads(),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
