#!/usr/bin/env python3
"""Sentence embeddings with all-MiniLM-L6-v2: ./scope_detect against transformers (what a user
would otherwise run: tokenizer + BertModel + mean pooling + normalize), end to end, same machine.

    python3 dev/bench/bench_minilm.py [--n 2000] [--batch 32]

Needs `scripts/install_deps.sh --minilm`. The sentences are fact-style questions and the first
lines of Python stdlib docstrings (cached in build/bench_minilm/). Both sides load the model,
tokenize, embed in batches of --batch and write nothing else; the two embedding sets must agree
within 1e-4. Reports sentences/s (wall and per CPU-second) and the ratio.
"""
import argparse
import ast
import glob
import json
import os
import random
import resource
import subprocess
import sys
import sysconfig
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORK = os.path.join(ROOT, "build", "bench_minilm")
sys.path.insert(0, os.path.join(ROOT, "dev", "reference"))
from gen_tokenizer import minilm_dir  # noqa: E402


def sentences(n):
    rng = random.Random(1)
    out = []
    for f in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
        try:
            tree = ast.parse(open(f, encoding="utf-8", errors="replace").read())
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                d = ast.get_docstring(node)
                if d and len(d.split("\n")[0]) > 20:
                    out.append(d.split("\n")[0])
    rng.shuffle(out)
    out = out[: n // 2]
    while len(out) < n:
        key = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))
        out.append(rng.choice(["What is the value of key {}?", "Which value does key {} map to?",
                               "Tell me the value stored under {}."]).format(key))
    return out


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


HF = r"""
import json, sys, time, torch
from tokenizers import Tokenizer
from transformers import BertModel
t0 = time.perf_counter()
d, path, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = [json.loads(l)["prompt"] for l in open(path)]
tok = Tokenizer.from_file(d + "/tokenizer.json"); tok.no_padding(); tok.enable_truncation(max_length=256)
model = BertModel.from_pretrained(d, add_pooling_layer=False).eval()
out = []
with torch.inference_mode():
    for i in range(0, len(texts), batch):
        enc = tok.encode_batch(texts[i:i + batch])
        T = max(len(e.ids) for e in enc)
        ids = torch.zeros(len(enc), T, dtype=torch.long); mask = torch.zeros(len(enc), T, dtype=torch.long)
        for b, e in enumerate(enc):
            ids[b, :len(e.ids)] = torch.tensor(e.ids); mask[b, :len(e.ids)] = 1
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1))
emb = torch.cat(out)
json.dump(emb.tolist(), open(sys.argv[4], "w"))
print(time.perf_counter() - t0)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="sentences (default 2000)")
    ap.add_argument("--batch", type=int, default=32, help="sentences per forward pass (default 32)")
    args = ap.parse_args()
    d = minilm_dir()
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        print(f"error: {d} has no model.safetensors: scripts/install_deps.sh --minilm", file=sys.stderr)
        return 1
    os.makedirs(WORK, exist_ok=True)
    texts = sentences(args.n)
    q = os.path.join(WORK, f"q{args.n}.jsonl")
    with open(q, "w") as f:
        for t in texts:
            f.write(json.dumps({"prompt": t}) + "\n")
    subprocess.run(["make", "-C", ROOT, "-s", "scope_detect"], check=True)
    ours_out, hf_out = os.path.join(WORK, "ours.jsonl"), os.path.join(WORK, "hf.json")
    runs = {}
    for name, cmd in (("ours", [os.path.join(ROOT, "scope_detect"), "--queries", q, "--model", d,
                                "--batch", str(args.batch), "--output", ours_out]),
                      ("transformers", [sys.executable, "-c", HF, d, q, str(args.batch), hf_out])):
        c0, t0 = child_cpu(), time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs[name] = (time.perf_counter() - t0, child_cpu() - c0)
    ours = [json.loads(l)["embedding"] for l in open(ours_out)]
    hf = json.load(open(hf_out))
    diff = max(abs(a - b) for x, y in zip(ours, hf) for a, b in zip(x, y))
    print(f"{args.n} sentences, batch {args.batch}, end to end (load, tokenize, embed, write)")
    print(f"{'':>13}  {'wall s':>7}  {'sent/s':>7}  {'sent/CPU-s':>10}")
    for name, (wall, cpu) in runs.items():
        print(f"{name:>13}  {wall:>7.1f}  {args.n / wall:>7.1f}  {args.n / cpu:>10.1f}")
    (ow, oc), (hw, hc) = runs["ours"], runs["transformers"]
    print(f"ours/transformers: {hw / ow:.2f}x wall, {hc / oc:.2f}x CPU")
    print(f"max |ours - transformers| = {diff:.2e}")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall-clock rows suffer from it)")
    return 0 if diff < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
