#!/usr/bin/env python3
"""Wall time to 100% exact-match memorization of KVR pairs, from random init, on a small model:
train_llama (with in-training greedy evaluation every K epochs and --stop-at-accuracy 1.0) against
a PyTorch + transformers loop in the REMIX style (batches padded to their longest example, HF
LlamaForCausalLM, torch AdamW, clipping, cosine schedule with warmup, HF generate for the
evaluation), with the same data, tokens, hyperparameters, evaluation schedule and thread count,
in one run. Prints both wall times, the epochs each needed, and the ratio.

  python3 dev/bench/bench_memorize.py                  # 2,000 pairs (the issue's setting)
  python3 dev/bench/bench_memorize.py --pairs 200      # quick look
"""
import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM, get_cosine_schedule_with_warmup
from shard_file import shard_examples

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TOKENIZER = os.path.join(ROOT, "test", "fixtures", "tokenizer", "ours.json")

# 4.7M parameters: the smallest of the shapes tried that memorizes 2,000 pairs within 100 epochs at
# lr 1e-3 (a 128-wide 2-layer model was still at loss 3.5 after 37 epochs).
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 3008, "hidden_size": 256,
          "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4,
          "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
          "tie_word_embeddings": False, "initializer_range": 0.02, "bos_token_id": 0, "eos_token_id": 1}


def torch_run(examples, golds, args, eos_id):
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in CONFIG.items() if k != "architectures"}))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(examples) / args.batch_size)
    total = steps_per_epoch * args.max_epochs
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(total * args.warmup_ratio), total)
    prompts = [t[:l.index(1)] for t, l in examples]
    t0 = time.perf_counter()
    c0 = time.process_time()
    for epoch in range(args.max_epochs):
        model.train()
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(args.seed + epoch)).tolist()
        for s in range(steps_per_epoch):
            batch = [examples[i] for i in order[s * args.batch_size:(s + 1) * args.batch_size]]
            T = max(len(t) for t, _ in batch)  # pad to the longest example of the batch
            ids = torch.zeros(len(batch), T, dtype=torch.long)
            labels = torch.full((len(batch), T), -100, dtype=torch.long)
            mask = torch.zeros(len(batch), T, dtype=torch.long)
            for r, (t, l) in enumerate(batch):
                ids[r, :len(t)] = torch.tensor(t)
                mask[r, :len(t)] = 1
                labels[r, :len(t)] = torch.tensor([x if m else -100 for x, m in zip(t, l)])
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        if (epoch + 1) % args.eval_every == 0:
            acc = torch_eval(model, prompts, golds, eos_id, args)
            print(f"  torch epoch {epoch + 1}: loss {loss.item():.4f}, accuracy {100 * acc:.2f}%, "
                  f"{time.perf_counter() - t0:.0f}s", flush=True)
            if acc >= 1.0:
                return time.perf_counter() - t0, time.process_time() - c0, epoch + 1
    print(f"  torch: 100% not reached in {args.max_epochs} epochs", flush=True)
    return time.perf_counter() - t0, time.process_time() - c0, None


def torch_eval(model, prompts, golds, eos_id, args):
    tok = Tokenizer.from_file(TOKENIZER)
    model.eval()
    correct = 0
    # Prompts are grouped by length, so that no padding (and no position shift) is involved.
    by_len = {}
    for i, p in enumerate(prompts):
        by_len.setdefault(len(p), []).append(i)
    with torch.no_grad():
        for L, idx in sorted(by_len.items()):
            for c in range(0, len(idx), 64):
                chunk = idx[c:c + 64]
                ids = torch.tensor([prompts[i] for i in chunk])
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=16, eos_token_id=eos_id, pad_token_id=eos_id)
                for r, i in enumerate(chunk):
                    gen = out[r, L:].tolist()
                    if eos_id in gen:
                        gen = gen[:gen.index(eos_id)]
                    # as the engine: decoded text cut at a newline, stripped and lowercased
                    pred = tok.decode(gen).split("\n")[0].strip().lower()
                    correct += pred == tok.decode(golds[i]).strip().lower()
    return correct / len(prompts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-epochs", type=int, default=100)
    ap.add_argument("--warmup-ratio", type=float, default=0.02)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--only", choices=["engine", "torch"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for b in ("prepare_data", "train_llama"):
        if not os.path.exists(os.path.join(ROOT, b)):
            subprocess.check_call(["make", "-C", ROOT, b])

    tmp = tempfile.mkdtemp(prefix="bench_memorize_")
    shard = os.path.join(tmp, "kvr.bin")
    subprocess.check_call([os.path.join(ROOT, "prepare_data"), "--mode", "kvr", "--num", str(args.pairs),
                           "--tokenizer", TOKENIZER, "--output", shard, "--quiet"])
    tok = json.load(open(TOKENIZER))
    n_vocab = max([len(tok["model"]["vocab"])] + [t["id"] + 1 for t in tok["added_tokens"]])
    CONFIG["vocab_size"] = (n_vocab + 63) // 64 * 64
    json.dump(CONFIG, open(os.path.join(tmp, "config.json"), "w"))
    examples = [(t.tolist(), m.tolist()) for t, m in shard_examples(shard)]
    eos_id = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|end_of_text|>")
    # gold = the trained answer tokens without EOS (the engine compares decoded text, stripped and
    # lowercased; for KVR values the two criteria coincide)
    golds = [[x for x, m in zip(t, l) if m and x != eos_id] for t, l in examples]
    print(f"{args.pairs} KVR pairs, {sum(len(t) for t, _ in examples)} tokens; model {CONFIG['hidden_size']}x"
          f"{CONFIG['num_hidden_layers']} layers; batch {args.batch_size}, lr {args.lr}, eval every "
          f"{args.eval_every} epochs, {args.threads} threads", flush=True)

    results = {}
    if args.only in (None, "engine"):
        t0 = time.perf_counter()
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        log = os.path.join(tmp, "engine.jsonl")
        subprocess.check_call([os.path.join(ROOT, "train_llama"), "--init", os.path.join(tmp, "config.json"),
                               "--tokenizer", TOKENIZER, "--data", shard, "--out", os.path.join(tmp, "run"),
                               "--epochs", str(args.max_epochs), "--batch-size", str(args.batch_size),
                               "--seq-len", "64", "--lr", str(args.lr), "--warmup-ratio", str(args.warmup_ratio),
                               "--seed", str(args.seed), "--eval-data", os.path.splitext(shard)[0] + ".jsonl",
                               "--eval-every-epochs", str(args.eval_every), "--stop-at-accuracy", "1.0",
                               "--threads", str(args.threads), "--log", log, "--log-every", "1000000"],
                              stdout=sys.stdout)
        secs = time.perf_counter() - t0
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
        evals = [json.loads(l) for l in open(log) if '"eval"' in l]
        ep = evals[-1]["epoch"] if evals and evals[-1]["accuracy"] >= 1.0 else None
        results["engine"] = (secs, cpu, ep)
    if args.only in (None, "torch"):
        results["torch"] = torch_run(examples, golds, args, eos_id)

    # CPU time (user + system, all threads) is reported too: on a shared machine it is the figure
    # that other processes disturb least.
    print(f"\n{'':8} {'wall time':>10} {'CPU time':>10} {'epochs to 100%':>15}")
    for k, (secs, cpu, ep) in results.items():
        print(f"{k:8} {secs:>9.0f}s {cpu:>9.0f}s {str(ep) if ep else 'not reached':>15}")
    if len(results) == 2:
        e, t = results["engine"], results["torch"]
        print(f"ratio torch / engine: wall time {t[0] / e[0]:.1f}x, CPU time {t[1] / e[1]:.1f}x"
              + ("" if e[2] and t[2] else " (one side did not reach 100%: times are to the epoch cap)"))


if __name__ == "__main__":
    main()
