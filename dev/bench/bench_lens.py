#!/usr/bin/env python3
"""Logit lens over 2,000 KVR questions: ./analyze_layers against a PyTorch/transformers script doing
the same work, fp32 on the CPU, same random model (dev/bench/tiny.json: 5.3M parameters, 4 layers,
vocabulary 4096), same tokens, same thread count.

Both sides: one forward pass per batch of 32 teacher-forced questions (prompt + answer), then at
every layer boundary (5) and every answer-token position: the final RMSNorm and the LM head, the
gold token's probability, its rank and the top-1 token. transformers: output_hidden_states=True plus
a hook for the last block's output (hidden_states[-1] is already normed), right padding with an
attention mask. The engine's time is the whole program (loading, lens, lens.jsonl, metrics.json; no
charts: gnuplot is hidden from it); transformers' is the lens loop only. The gold probabilities of
the two are compared (max |diff|) so that both did the same computation.

  python3 dev/bench/bench_lens.py [--threads 1] [--questions 2000] [--repeats 3]
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TOKENIZER = os.path.join(ROOT, "test", "fixtures", "tokenizer", "ours.json")


def hf_lens(model, items, batch):
    L = model.config.num_hidden_layers
    last = {}
    hook = model.model.layers[-1].register_forward_hook(
        lambda m, i, o: last.__setitem__("h", o[0] if isinstance(o, tuple) else o))
    probs = []
    with torch.no_grad():
        for b0 in range(0, len(items), batch):
            chunk = items[b0:b0 + batch]
            T = max(len(p) + len(a) - 1 for p, a in chunk)
            ids = torch.zeros(len(chunk), T, dtype=torch.long)
            mask = torch.zeros(len(chunk), T, dtype=torch.long)
            rows, cols, gold = [], [], []
            for r, (p, a) in enumerate(chunk):
                seq = p + a[:-1]
                ids[r, :len(seq)] = torch.tensor(seq)
                mask[r, :len(seq)] = 1
                for j in range(len(a)):
                    rows.append(r)
                    cols.append(len(p) - 1 + j)
                    gold.append(a[j])
            out = model(ids, attention_mask=mask, output_hidden_states=True)
            hs = list(out.hidden_states[:L]) + [last["h"]]
            rows, cols, gold = torch.tensor(rows), torch.tensor(cols), torch.tensor(gold)
            per_layer = []
            for h in hs:
                logits = model.lm_head(model.model.norm(h[rows, cols]))
                g = logits.gather(1, gold[:, None])
                ids_v = torch.arange(logits.shape[1])[None, :]
                rank = ((logits > g) | ((logits == g) & (ids_v < gold[:, None]))).sum(1)
                top1 = logits.argmax(1)
                p = torch.softmax(logits.double(), 1).gather(1, gold[:, None]).squeeze(1)
                per_layer.append((p, rank, top1))
            probs.append(torch.stack([x[0] for x in per_layer]))  # [L+1, tokens of the batch]
    hook.remove()
    return probs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=os.path.join(HERE, "tiny.json"))
    ap.add_argument("--questions", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for b in ("analyze_layers", "prepare_data"):
        if not os.path.exists(os.path.join(ROOT, b)):
            raise SystemExit(f"error: ./{b} is missing: run make first")

    tmp = tempfile.mkdtemp(prefix="bench_lens_")
    try:
        with open(a.config) as f:
            cfg = LlamaConfig(**json.load(f))
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg).eval()
        mdir = os.path.join(tmp, "model")
        model.save_pretrained(mdir, safe_serialization=True)
        shutil.copy(TOKENIZER, os.path.join(mdir, "tokenizer.json"))
        data = os.path.join(tmp, "kvr.bin")
        subprocess.run([os.path.join(ROOT, "prepare_data"), "--mode", "kvr", "--num", str(a.questions), "--seed", "1",
                        "--tokenizer", TOKENIZER, "--output", data, "--quiet"], check=True)

        env = dict(os.environ, PATH="/usr/bin/nonexistent")  # no gnuplot: time the lens, not the charts
        cmd = [os.path.join(ROOT, "analyze_layers"), "--model", mdir, "--data", data, "--out", os.path.join(tmp, "out"),
               "--threads", str(a.threads), "--batch-size", str(a.batch), "--quiet"]
        engine = 1e30
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            engine = min(engine, time.perf_counter() - t0)

        facts = {}
        with open(os.path.join(tmp, "out", "lens.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                facts.setdefault(r["fact"], {"p": r["prompt_ids"], "a": r["gold_ids"], "prob": {}})
                facts[r["fact"]]["prob"][r["layer"]] = r["answer_prob"]
        items = [(facts[i]["p"], facts[i]["a"]) for i in range(len(facts))]
        hf = 1e30
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            probs = hf_lens(model, items, a.batch)
            hf = min(hf, time.perf_counter() - t0)

        worst, k = 0.0, 0
        L = cfg.num_hidden_layers
        for b0, p in zip(range(0, len(items), a.batch), probs):
            col = 0
            for i in range(b0, min(len(items), b0 + a.batch)):
                n = len(items[i][1])
                for l in range(L + 1):
                    for j in range(n):
                        worst = max(worst, abs(p[l, col + j].item() - facts[i]["prob"][l][j]))
                col += n
                k += 1
        tokens = sum(len(x[1]) for x in items)
        print(f"logit lens, {len(items)} questions ({tokens} answer tokens) x {L + 1} boundaries, "
              f"{a.threads} thread(s), best of {a.repeats}:")
        print(f"  analyze_layers (whole program): {engine:.2f} s")
        print(f"  transformers (lens loop only):  {hf:.2f} s")
        print(f"  ratio transformers / engine:    {hf / engine:.2f}x")
        print(f"  max |gold prob diff|:           {worst:.2e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
