#!/usr/bin/env python3
"""How far the optimizer-state options move a training run from the fp32 on-device reference:
100 steps of `train_llama --device cuda` on a tiny model, from the same init, data and order,
with fp32 AdamW on the device (the reference), `--offload-optimizer` (fp32 master weights and
moments on the host, the CPU AdamW op), `--optimizer-state bf16` (bf16 moments with stochastic
rounding), and `--device cpu` (fp32 activations: the scale of the bf16-activation difference).
For each it prints the drift of the final weights, ||w - w_ref|| / ||w_ref - w_0|| (relative to
how far the reference moved), the largest elementwise difference, and the largest relative
difference of the step losses.

  python3 dev/bench/optimizer_drift.py                       # the emulated build (no GPU needed)
  python3 dev/bench/optimizer_drift.py --program ./train_llama   # on a GPU

Needs ./prepare_data and the program (default build/train_llama_emu: `make build/train_llama_emu`).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOKENIZER = os.path.join(ROOT, "test/fixtures/tokenizer/ours.json")
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 3008, "hidden_size": 128,
          "intermediate_size": 344, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
          "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
          "tie_word_embeddings": False, "initializer_range": 0.02, "bos_token_id": 0, "eos_token_id": 1}


def run(cmd, log):
    with open(log, "w") as f:
        if subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT) != 0:
            sys.exit(f"failed: {' '.join(cmd)} (see {log})")


def weights(run_dir):
    t = load_file(os.path.join(run_dir, "final", "model.safetensors"))
    return np.concatenate([t[k].astype(np.float64).ravel() for k in sorted(t)])


def losses(jsonl):
    with open(jsonl) as f:
        return np.array([e["loss"] for e in map(json.loads, f) if e.get("event") == "step"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--program", default=os.path.join(ROOT, "build/train_llama_emu"))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", default="1e-3")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="optimizer_drift_") as work:
        config = os.path.join(work, "tiny.json")
        with open(config, "w") as f:
            json.dump(CONFIG, f)
        data = os.path.join(work, "kvr.bin")
        run([os.path.join(ROOT, "prepare_data"), "--mode", "kvr", "--num", "64", "--seed", "1", "--tokenizer",
             TOKENIZER, "--output", data, "--quiet"], os.path.join(work, "prep.log"))

        def train(name, program, device, steps, lr, extra=()):
            out = os.path.join(work, name)
            run([program, "--init", config, "--tokenizer", TOKENIZER, "--data", data, "--device", device, "--steps",
                 str(steps), "--batch-size", "8", "--seq-len", "48", "--lr", lr, "--weight-decay", "0.1",
                 "--threads", "1", "--out", out, "--log", out + ".jsonl", *extra], out + ".log")
            return weights(out), losses(out + ".jsonl")

        w0, _ = train("init", args.program, "cuda", 1, "0")  # lr 0: the init, unchanged
        ref, ref_loss = train("ref", args.program, "cuda", args.steps, args.lr)
        moved = np.linalg.norm(ref - w0)
        print(f"{args.steps} steps, lr {args.lr}; reference: fp32 AdamW on the device, "
              f"||w_ref - w_0|| = {moved:.4g}, final loss {ref_loss[-1]:.4f}")
        print(f"{'variant':<28} {'drift':>10} {'max |dw|':>10} {'max loss diff':>14}")
        for name, program, device, extra in [
                ("--offload-optimizer", args.program, "cuda", ["--offload-optimizer"]),
                ("--optimizer-state bf16", args.program, "cuda", ["--optimizer-state", "bf16"]),
                ("--device cpu (fp32)", os.path.join(ROOT, "train_llama"), "cpu", [])]:
            w, l = train(name.strip("-").split()[0].replace("-", "_"), program, device, args.steps, args.lr, extra)
            drift = np.linalg.norm(w - ref) / moved
            loss_diff = np.max(np.abs(l - ref_loss) / np.abs(ref_loss))
            print(f"{name:<28} {drift:>10.3g} {np.max(np.abs(w - ref)):>10.3g} {loss_diff:>14.3g}")


if __name__ == "__main__":
    main()
