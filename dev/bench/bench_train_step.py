#!/usr/bin/env python3
"""Training-step throughput: this engine (CPU backend) against PyTorch + transformers, fp32, same
model config, same batch shape, same thread count, in one run; prints tokens/s and the ratio.

A step is forward + backward + global-norm clipping + AdamW over `rows` rows of T tokens, every
token carrying a loss. PyTorch runs LlamaForCausalLM (default SDPA attention) with
torch.optim.AdamW, as a user of the usual stack would.

  python3 dev/bench/bench_train_step.py                 # tiny and small
  python3 dev/bench/bench_train_step.py --only tiny --steps 5 --rounds 3
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
ENGINE = os.path.join(ROOT, "build", "bench", "bench_train_step")

CONFIGS = {
    # name: (config file, rows, T)
    "tiny": ("tiny.json", 8, 256),
    "small": ("small.json", 4, 512),
}


class TorchBench:
    def __init__(self, config_path, rows, T, threads):
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        with open(config_path) as f:
            cfg = LlamaConfig(**{k: v for k, v in json.load(f).items() if k != "architectures"})
        self.torch, self.rows, self.T, self.threads = torch, rows, T, threads
        self.model = LlamaForCausalLM(cfg).float().train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.9, 0.95),
                                     eps=1e-8, weight_decay=0.1)
        self.x = torch.randint(0, cfg.vocab_size, (rows, T))

    def run(self, steps, warmup):
        return bench_torch(self, steps, warmup)


def bench_torch(b, steps, warmup):
    torch, model, opt, x, rows, T = b.torch, b.model, b.opt, b.x, b.rows, b.T
    params = sum(p.numel() for p in model.parameters())
    loss = None
    for s in range(warmup + steps):
        if s == warmup:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    elapsed = time.perf_counter() - start
    return {"engine": f"pytorch {torch.__version__}", "threads": b.threads, "params": params,
            "seconds_per_step": elapsed / steps, "tokens_per_s": rows * T * steps / elapsed,
            "loss": loss.item()}


def bench_engine(config_path, rows, T, steps, warmup, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([ENGINE, "--config", config_path, "--rows", str(rows), "--T", str(T),
                          "--steps", str(steps), "--warmup", str(warmup)],
                         env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=sorted(CONFIGS), help="run one config (default: all)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per framework (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    ap.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternate the two frameworks this many times and keep each one's best "
                         "round, so that load from other processes hits both alike (default 2)")
    ap.add_argument("--no-build", action="store_true", help="do not run make for the engine binary")
    args = ap.parse_args()

    if not args.no_build:
        subprocess.run(["make", "-s", "-C", ROOT, "build/bench/bench_train_step"], check=True)
    names = [args.only] if args.only else ["tiny", "small"]
    print(f"| config | params | rows x T | PyTorch tokens/s | engine tokens/s | engine / PyTorch |")
    print(f"| --- | --- | --- | --- | --- | --- |")
    for name in names:
        cfg_file, rows, T = CONFIGS[name]
        path = os.path.join(HERE, cfg_file)
        tb = TorchBench(path, rows, T, args.threads)
        t = e = None
        for _ in range(args.rounds):
            rt = tb.run(args.steps, args.warmup)
            re = bench_engine(path, rows, T, args.steps, args.warmup, args.threads)
            print(f"  {name} round: pytorch {rt['tokens_per_s']:.0f} tokens/s, engine "
                  f"{re['tokens_per_s']:.0f} tokens/s", file=sys.stderr, flush=True)
            t = rt if t is None or rt["tokens_per_s"] > t["tokens_per_s"] else t
            e = re if e is None or re["tokens_per_s"] > e["tokens_per_s"] else e
        del tb
        print(f"  {name}: pytorch {t}", file=sys.stderr)
        print(f"  {name}: engine  {e}", file=sys.stderr)
        print(f"| {name} | {t['params'] / 1e6:.1f}M | {rows} x {T} | {t['tokens_per_s']:.0f} | "
              f"{e['tokens_per_s']:.0f} | {e['tokens_per_s'] / t['tokens_per_s']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
