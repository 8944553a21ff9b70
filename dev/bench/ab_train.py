#!/usr/bin/env python3
"""Before/after timing of the same training run with two train_llama binaries (e.g. one built
from an older commit in a temporary directory), alternating A, B, A, B... so that a load change
on a shared machine falls on both alike. Prints, per binary, the median and the range (min-max)
of the run's wall time (start, lock, data, steps, checkpoint saves, exit) and of the median step
time read from its --log (elapsed_s differences, the first step left out), the ratio B/A of the
medians, and the median and range of the per-round ratios.

  python3 dev/bench/ab_train.py --a /tmp/old/train_llama --b ./train_llama --data kvr.bin \
      --tokenizer test/fixtures/tokenizer/ours.json --rounds 5

The run: random init from dev/bench/tiny.json, --steps, --batch-size, --seq-len, a checkpoint
every --save-every steps (fsynced writes, the part the run-directory lock and the checkpoint
fault handling touch), --threads. The shard must be readable by both binaries (write it with the
older prepare_data).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def one_run(binary, args, work):
    out = os.path.join(work, "run")
    log = os.path.join(work, "log.jsonl")
    shutil.rmtree(out, ignore_errors=True)
    if os.path.exists(log):
        os.remove(log)
    cmd = [binary, "--init", args.config, "--tokenizer", args.tokenizer, "--data", args.data,
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
           "--lr", "1e-3", "--save-every", str(args.save_every), "--keep", "2", "--threads", str(args.threads),
           "--out", out, "--log", log]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"error: {binary} failed ({r.returncode}): {r.stderr[-2000:]}")
    elapsed = [json.loads(l)["elapsed_s"] for l in open(log) if '"event":"step"' in l]
    if len(elapsed) != args.steps:
        sys.exit(f"error: {log}: {len(elapsed)} step lines, expected {args.steps}")
    steps = [b - a for a, b in zip(elapsed, elapsed[1:])]
    return wall, statistics.median(steps)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="train_llama before")
    p.add_argument("--b", required=True, help="train_llama after")
    p.add_argument("--data", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--config", default=os.path.join(HERE, "tiny.json"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--save-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="ab_train_")
    res = {"a": [], "b": []}
    try:
        for r in range(args.rounds):
            for k in ("a", "b") if r % 2 == 0 else ("b", "a"):
                wall, step = one_run(getattr(args, k), args, work)
                res[k].append((wall, step))
                print(f"round {r + 1} {k}: wall {wall:.2f} s, median step {step * 1000:.1f} ms", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def summary(k, i):
        v = [x[i] for x in res[k]]
        return statistics.median(v), min(v), max(v)

    for i, what, scale, unit in ((0, "wall", 1, "s"), (1, "step", 1000, "ms")):
        (ma, lo_a, hi_a), (mb, lo_b, hi_b) = summary("a", i), summary("b", i)
        # b/a within each round (two adjacent runs), less exposed to slow load drifts
        paired = sorted(b[i] / a[i] for a, b in zip(res["a"], res["b"]))
        print(f"{what}: a median {ma * scale:.2f} {unit} [{lo_a * scale:.2f}-{hi_a * scale:.2f}], "
              f"b median {mb * scale:.2f} {unit} [{lo_b * scale:.2f}-{hi_b * scale:.2f}], b/a {mb / ma:.3f}; "
              f"per-round b/a median {statistics.median(paired):.3f} [{paired[0]:.3f}-{paired[-1]:.3f}]")


if __name__ == "__main__":
    main()
