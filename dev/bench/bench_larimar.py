#!/usr/bin/env python3
"""Larimar memory operations: this engine (larimar/, Eigen, float64) against the same operations
written in numpy and in PyTorch (float64, CPU; and CUDA with --cuda when a GPU is present), same
K, C, thread count and state, in one run. Prints seconds per op and the ratios.

  python3 dev/bench/bench_larimar.py                       # K=512, C=768, 1 thread
  python3 dev/bench/bench_larimar.py --threads 2 --rounds 5

Ops (see dev/bench/bench_larimar.cpp): write1 / forget1 (one fact, sequential, Eqs. 2-4),
write100_facts (100 single-fact writes), write100_batch (one 100-fact episode), oneshot100
(W0 = Z M0+, M = W0+ Z, exact), oneshot100_iter (15-step iteration), read1 (one query, exact M+).
numpy has no Cholesky solve, so its sequential update solves C with np.linalg.solve (LU), as a
numpy user would; PyTorch uses torch.linalg.cholesky + torch.cholesky_solve.
"""
import argparse
import json
import os
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
ENGINE = os.path.join(ROOT, "build", "bench", "bench_larimar")
RTOL = 1e-10
OPS = ["write1", "forget1", "write100_facts", "write100_batch", "oneshot100", "oneshot100_iter", "read1"]


def best_of(rounds, setup, op, sync=lambda: None):
    """Best round's (wall-clock, process CPU) seconds."""
    best, best_cpu = 1e30, 1e30
    for _ in range(rounds):
        state = setup()
        sync()
        c0, t0 = time.process_time(), time.perf_counter()
        op(state)
        sync()
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best, best_cpu


def bench(lib, k, c, rounds, device="cpu"):
    """lib: 'numpy' or 'torch'. Returns {op: seconds}."""
    import numpy as np
    rng = np.random.default_rng(15)
    m0, mref = rng.standard_normal((k, c)), rng.standard_normal((k, c))
    z100, facts, zq, first = (rng.standard_normal((100, c)), rng.standard_normal((20, c)),
                              rng.standard_normal((1, c)), rng.standard_normal((2 * k, c)))
    if lib == "numpy":
        xp = np
        pinv = lambda a: np.linalg.pinv(a, rtol=RTOL)
        solve_spd = lambda C, B: np.linalg.solve(C, B)
        copy = np.copy
        sync = lambda: None
    else:
        import torch
        xp = torch
        t = lambda a: torch.tensor(a, dtype=torch.float64, device=device)
        m0, mref, z100, facts, zq, first = map(t, (m0, mref, z100, facts, zq, first))
        pinv = lambda a: torch.linalg.pinv(a, rtol=RTOL)
        solve_spd = lambda C, B: torch.cholesky_solve(B, torch.linalg.cholesky(C))
        copy = torch.clone
        sync = (lambda: torch.cuda.synchronize()) if device == "cuda" else (lambda: None)

    def bic(a):
        x = 5e-4 * a.T
        for _ in range(15):
            x = 2 * x - x @ a @ x
        return x

    pref = pinv(mref)

    def update(state, z, alpha):
        m, cm = state
        w = z @ pref
        cm += alpha * (w.T @ w)
        y = solve_spd(cm, w.T)
        m += alpha * (y @ (z - w @ m))

    eye = np.eye(k) if lib == "numpy" else torch.eye(k, dtype=torch.float64, device=device)
    base = (copy(m0), 1.0 * eye)
    update(base, first, 1)
    fresh = lambda: (copy(base[0]), copy(base[1]))
    out = {}
    out["write1"] = best_of(rounds, fresh, lambda s: [update(s, facts[i:i + 1], 1) for i in range(20)], sync)
    written = fresh()
    for i in range(20):
        update(written, facts[i:i + 1], 1)
    out["forget1"] = best_of(rounds, lambda: (copy(written[0]), copy(written[1])),
                             lambda s: [update(s, facts[i:i + 1], -1) for i in range(20)], sync)
    out["write100_facts"] = best_of(rounds, fresh, lambda s: [update(s, z100[i:i + 1], 1) for i in range(100)], sync)
    out["write100_batch"] = best_of(rounds, fresh, lambda s: update(s, z100, 1), sync)
    out["oneshot100"] = best_of(rounds, lambda: None, lambda s: pinv(z100 @ pinv(m0)) @ z100, sync)
    out["oneshot100_iter"] = best_of(rounds, lambda: None, lambda s: bic(z100 @ bic(m0)) @ z100, sync)
    m = pinv(z100 @ pinv(m0)) @ z100
    out["read1"] = best_of(rounds, lambda: None, lambda s: (zq @ pinv(m)) @ m, sync)
    for op in ["write1", "forget1"]:
        out[op] = (out[op][0] / 20, out[op][1] / 20)
    flat = {}
    for op, (wall, cpu) in out.items():
        flat[op], flat[op + "_cpu"] = wall, cpu
    return flat


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--K", type=int, default=512)
    ap.add_argument("--C", type=int, default=768)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cuda", action="store_true", help="also PyTorch on the GPU")
    ap.add_argument("--no-engine", action="store_true", help="skip the engine (no build needed)")
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    os.environ.update(env)
    cols = {}
    if not args.no_engine:
        res = subprocess.run([ENGINE, str(args.K), str(args.C), str(args.rounds)], env=env, check=True,
                             capture_output=True, text=True)
        cols["engine"] = json.loads(res.stdout)
    cols["numpy"] = bench("numpy", args.K, args.C, args.rounds)
    import torch
    torch.set_num_threads(args.threads)
    cols["torch"] = bench("torch", args.K, args.C, args.rounds)
    if args.cuda and torch.cuda.is_available():
        bench("torch", args.K, args.C, 1, "cuda")  # warm-up: CUDA context and kernels
        cols["torch-cuda"] = bench("torch", args.K, args.C, args.rounds, "cuda")
    print(f"K={args.K} C={args.C} threads={args.threads} rounds={args.rounds} (best round), float64, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    names = list(cols)
    for suffix, what in [("", "wall-clock"), ("_cpu", "process CPU")]:
        print(f"-- {what}, ms")
        print("%-16s" % "op" + "".join("%14s" % n for n in names) +
              ("".join("%16s" % (n + "/engine") for n in names if n != "engine") if "engine" in cols else ""))
        for op in OPS:
            line = "%-16s" % op + "".join("%14.3f" % (1e3 * cols[n][op + suffix]) for n in names)
            if "engine" in cols:
                line += "".join("%16.2f" % (cols[n][op + suffix] / cols["engine"][op + suffix])
                                for n in names if n != "engine")
            print(line)
    if "engine" in cols:
        extra = {k: v for k, v in cols["engine"].items() if k.startswith("episode") and k.endswith("_cpu")}
        print("engine factor update, CPU ms:", ", ".join(f"{k} {1e3 * v:.2f}" for k, v in extra.items()))


if __name__ == "__main__":
    main()
