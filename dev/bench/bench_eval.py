#!/usr/bin/env python3
"""Greedy decoding throughput: this engine (eval path: batched, KV cache, CPU ops) against
transformers generate(do_sample=False), fp32, same random model, same prompts, same thread count,
in one run; prints generated tokens/s of both and the ratio, at batch sizes 1 and 32.

Prompts all have the same length (no padding on the transformers side) and every prompt generates
exactly --new tokens (min_new_tokens = max_new_tokens), so both sides do the same work; the
generated ids are compared as well.

  python3 dev/bench/bench_eval.py                       # tiny config (dev/bench/tiny.json)
  python3 dev/bench/bench_eval.py --config small.json --prompts 32
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
ENGINE = os.path.join(ROOT, "build", "bench", "bench_eval")


def bench_hf(model, prompts, batch_size, new_tokens, repeats):
    best = best_cpu = 1e30
    out = []
    with torch.no_grad():
        model.generate(torch.tensor(prompts[:1]), do_sample=False, max_new_tokens=2, min_new_tokens=2,
                       pad_token_id=0)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            c0 = time.process_time()
            out = []
            for i in range(0, len(prompts), batch_size):
                ids = torch.tensor(prompts[i:i + batch_size])
                g = model.generate(ids, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                   pad_token_id=0, eos_token_id=None)
                out += g[:, ids.shape[1]:].tolist()
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
    n = sum(len(o) for o in out)
    return n / best, n / best_cpu, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=64, help="prompts for batch size 32 (batch 1 uses 1/8)")
    ap.add_argument("--prompt-len", type=int, default=24)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if not os.path.exists(ENGINE):
        subprocess.check_call(["make", "-C", ROOT, "build/bench/bench_eval"])

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cfg_json = json.load(open(os.path.join(HERE, args.config)))
    cfg = LlamaConfig(**{k: v for k, v in cfg_json.items() if k not in ("architectures", "torch_dtype")})
    cfg.initializer_range = 0.1  # peaked logits, so that both sides pick the same argmax
    model = LlamaForCausalLM(cfg).eval()
    tmp = tempfile.mkdtemp(prefix="bench_eval_")
    model.save_pretrained(tmp)
    g = torch.Generator().manual_seed(1)
    all_prompts = torch.randint(3, cfg.vocab_size, (args.prompts, args.prompt_len), generator=g).tolist()

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    print(f"model {args.config}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, "
          f"prompt {args.prompt_len} tokens, {args.new} new tokens, {args.threads} threads")
    # tok/s per wall second, and per CPU second (user + system, all threads): on a shared machine
    # the second is the one other processes disturb least.
    print(f"{'batch':>5} {'prompts':>7} {'engine tok/s':>13} {'transformers tok/s':>19} {'ratio':>6} "
          f"{'ratio (CPU time)':>16} {'same tokens':>11}")
    for bs in (1, 32):
        prompts = all_prompts[: max(1, args.prompts // 8)] if bs == 1 else all_prompts
        ppath = os.path.join(tmp, f"prompts_{bs}.json")
        json.dump(prompts, open(ppath, "w"))
        res = subprocess.run([ENGINE, "--model", tmp, "--prompts", ppath, "--batch-size", str(bs),
                              "--max-new-tokens", str(args.new), "--repeats", str(args.repeats)],
                             env=env, check=True, capture_output=True, text=True)
        ours = json.loads(res.stdout)
        hf_tps, hf_cpu_tps, hf_out = bench_hf(model, prompts, bs, args.new, args.repeats)
        same = sum(a == b for a, b in zip(ours["generated"], hf_out))
        print(f"{bs:>5} {len(prompts):>7} {ours['tokens_per_s']:>13.0f} {hf_tps:>19.0f} "
              f"{ours['tokens_per_s'] / hf_tps:>5.1f}x {ours['tokens_per_cpu_s'] / hf_cpu_tps:>15.1f}x "
              f"{same:>5}/{len(prompts)}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
