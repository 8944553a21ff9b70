#!/usr/bin/env python3
"""Host AdamW throughput: the engine's CPU op (what --offload-optimizer runs on the host cores,
build/bench/bench_adamw_host) against torch.optim.AdamW on the CPU (foreach and fused, what a
PyTorch user offloading by hand would run), same parameter count and threads, in one run; prints
parameters/s, host-memory GB/s (28 B per parameter: p, g, m, v read, p, m, v written) and the ratio.

  make build/bench/bench_adamw_host
  python3 dev/bench/bench_adamw_host.py --n 33554432 --threads 2
"""
import argparse
import json
import os
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
ENGINE = os.path.join(ROOT, "build", "bench", "bench_adamw_host")


def torch_rate(n, reps, threads, variant):
    import torch

    torch.set_num_threads(threads)
    p = torch.nn.Parameter(torch.randn(n) * 0.01)
    p.grad = torch.randn(n) * 1e-3
    opt = torch.optim.AdamW([p], lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                            foreach=variant == "foreach", fused=variant == "fused" or None)
    opt.step()  # warmup (allocates the moments)
    best = 1e30
    for _ in range(reps):
        t0 = time.perf_counter()
        opt.step()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1 << 25)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    out = subprocess.run([ENGINE, "--n", str(a.n), "--reps", str(a.reps)], env=env, check=True,
                         capture_output=True, text=True).stdout
    engine = json.loads(out)["seconds"]
    rows = [("engine adamw_update", engine)]
    for variant in ("foreach", "fused"):
        rows.append((f"torch AdamW {variant}", torch_rate(a.n, a.reps, a.threads, variant)))
    print(f"n = {a.n}, {a.threads} threads, best of {a.reps}")
    print("| implementation | s/step | Mparam/s | GB/s | engine speed-up |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, s in rows:
        print(f"| {name} | {s:.4f} | {a.n / s / 1e6:.0f} | {28 * a.n / s / 1e9:.2f} | {s / engine:.2f}x |")


if __name__ == "__main__":
    main()
