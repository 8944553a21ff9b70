#!/usr/bin/env python3
"""Data pipeline benchmark: our prepare_data and dataloader against what a user would otherwise
write in Python, in the same run, printing the ratios.

1. prepare_data --mode qa on a generated QA JSONL (MB/s of input), against HF `tokenizers`
   (encode_batch of prompts and answers, numpy arrays, JSONL copy) doing the same work.
2. prepare_data --mode text --text-mode lm on generated documents (MB/s of input), against HF.
3. The dataloader for the tiny config (B=32, T=256): a REMIX stage of 2000 KVR pairs mixed with
   random-word passages at ratio 4, packed (batches/s), against a numpy implementation of the
   same shuffle + mix + first-fit packing.

  python3 dev/bench/bench_data.py [--tokenizer test/fixtures/tokenizer/bytelevel.json] [--qa-mb 20]
"""
import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time

import numpy as np
from tokenizers import Tokenizer
from shard_file import shard_examples

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORK = os.path.join(ROOT, "build", "bench", "data")


def words():
    w = [l.strip() for l in open("/usr/share/dict/words", encoding="utf-8") if l.strip().isalpha() and l.strip().islower()]
    return [x for x in w if x.isascii()]


def gen_qa(path, mb, rng, vocab):
    with open(path, "w") as f:
        size = 0
        while size < mb * 1e6:
            q = " ".join(rng.choice(vocab) for _ in range(rng.randint(6, 16))).capitalize() + "?"
            a = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 3))).title()
            line = json.dumps({"question": q, "answer": a}) + "\n"
            f.write(line)
            size += len(line)


def gen_docs(path, mb, rng, vocab):
    with open(path, "w") as f:
        size = 0
        while size < mb * 1e6:
            doc = " ".join(rng.choice(vocab) for _ in range(rng.randint(100, 600)))
            line = json.dumps({"text": doc}) + "\n"
            f.write(line)
            size += len(line)


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd):
    """(wall seconds, CPU seconds) of a command."""
    t, c = time.perf_counter(), child_cpu()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("failed: %s\n%s" % (" ".join(cmd), r.stderr))
    return time.perf_counter() - t, child_cpu() - c


def timed_py(fn):
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def hf_prepare_qa(tok_path, path, out):
    t = time.perf_counter()
    tok = Tokenizer.from_file(tok_path)
    eos = tok.token_to_id("<|end_of_text|>")
    recs = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
    prompts = [r["question"].strip() + "\nThe answer is:" for r in recs]
    answers = [" " + r["answer"].strip() for r in recs]
    P = tok.encode_batch(prompts, add_special_tokens=True)
    A = tok.encode_batch(answers, add_special_tokens=False)
    toks, mask, offs = [], [], [0]
    for p, a in zip(P, A):
        ids = p.ids + a.ids + [eos]
        toks.extend(ids)
        mask.extend([0] * len(p.ids) + [1] * (len(a.ids) + 1))
        offs.append(len(toks))
    np.save(out + ".tokens.npy", np.array(toks, dtype=np.uint16))
    np.save(out + ".mask.npy", np.packbits(np.array(mask, dtype=np.uint8)))
    np.save(out + ".offsets.npy", np.array(offs, dtype=np.uint64))
    with open(out + ".jsonl", "w") as f:
        for i, (r, p) in enumerate(zip(recs, prompts)):
            f.write(json.dumps({"index": i, "question": r["question"], "prompt": p, "answer": r["answer"],
                                "answers": [r["answer"]]}) + "\n")
    return time.perf_counter() - t


def hf_prepare_lm(tok_path, path, out, T):
    t = time.perf_counter()
    tok = Tokenizer.from_file(tok_path)
    eos = tok.token_to_id("<|end_of_text|>")
    docs = [json.loads(l)["text"] for l in open(path, encoding="utf-8") if l.strip()]
    stream = []
    for e in tok.encode_batch(docs, add_special_tokens=True):
        stream.extend(e.ids)
        stream.append(eos)
    arr = np.array(stream, dtype=np.uint16)
    chunks = [arr[i:i + T] for i in range(0, len(arr), T)]
    np.save(out + ".tokens.npy", np.concatenate(chunks))
    return time.perf_counter() - t


def numpy_loader(streams, ratios, B, T, steps, seed=0):
    """The same epoch composition and first-fit packing, in numpy: a user's Python dataloader."""
    prim = streams[0]
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    done, epoch = 0, 0
    mix_pos = [0] * len(ratios)
    mix_perm = [rng.permutation(len(s)) for s in streams[1:]]
    while done < steps:
        order = [(0, i) for i in range(len(prim))]
        for m, r in enumerate(ratios):
            k = round(r * len(prim))
            for _ in range(k):
                if mix_pos[m] == len(streams[m + 1]):
                    mix_perm[m] = rng.permutation(len(streams[m + 1]))
                    mix_pos[m] = 0
                order.append((m + 1, int(mix_perm[m][mix_pos[m]])))
                mix_pos[m] += 1
        perm = np.random.default_rng(seed + epoch).permutation(len(order))
        for b0 in range(0, len(order), B):
            if done >= steps:
                break
            exs = [streams[order[j][0]][order[j][1]] for j in perm[b0:b0 + B]]
            fill, place = [], []
            for toks, mask in exs:
                n = len(toks)
                r = next((i for i, f in enumerate(fill) if f + n <= T), -1)
                if r < 0:
                    fill.append(0)
                    r = len(fill) - 1
                place.append((r, fill[r]))
                fill[r] += n
            rows = len(fill)
            tokens = np.zeros((rows, T), np.int32)
            targets = np.full((rows, T), -1, np.int32)
            positions = np.zeros((rows, T), np.int32)
            seg = np.tile(np.arange(T, dtype=np.int32), (rows, 1))
            for (toks, mask), (r, c) in zip(exs, place):
                n = len(toks)
                tokens[r, c:c + n] = toks
                tg = np.where(mask[1:] != 0, toks[1:], -1)
                targets[r, c:c + n - 1] = tg
                positions[r, c:c + n] = np.arange(n)
                seg[r, c:c + n] = c
            done += 1
        epoch += 1
    return steps / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "test/fixtures/tokenizer/bytelevel.json"))
    ap.add_argument("--qa-mb", type=float, default=20)
    ap.add_argument("--text-mb", type=float, default=20)
    ap.add_argument("--steps", type=int, default=3000)
    args = ap.parse_args()
    if not os.path.exists(args.tokenizer):
        args.tokenizer = os.path.join(ROOT, "test/fixtures/dataloader/tokenizer.json")
    os.makedirs(WORK, exist_ok=True)
    subprocess.run(["make", "-s", "-C", ROOT, "prepare_data", "build/libdataloader.a", "build/libtokenizer.a",
                    "build/libcommon.a"], check=True)
    subprocess.run(["g++", "-O3", "-march=native", "-std=c++20", "-fopenmp", "-I", ROOT,
                    os.path.join(ROOT, "dev/bench/bench_dataloader.cpp"),
                    *[os.path.join(ROOT, "build", l) for l in ("libdataloader.a", "libtokenizer.a", "libcommon.a")],
                    "-lpcre2-8", "-o", os.path.join(ROOT, "build/bench/bench_dataloader")], check=True)
    rng = random.Random(0)
    vocab = words()
    qa, docs = os.path.join(WORK, "qa_input.jsonl"), os.path.join(WORK, "docs_input.jsonl")
    gen_qa(qa, args.qa_mb, rng, vocab)
    gen_docs(docs, args.text_mb, rng, vocab)
    print("tokenizer: %s, %d cores" % (os.path.relpath(args.tokenizer, ROOT), os.cpu_count()))

    for name, path, ours_cmd, hf in [
        ("qa (plain template)", qa,
         ["./prepare_data", "--mode", "qa", "--quiet", "--input", qa, "--tokenizer", args.tokenizer, "--output",
          os.path.join(WORK, "qa.bin")],
         lambda: hf_prepare_qa(args.tokenizer, qa, os.path.join(WORK, "qa_hf"))),
        ("text lm chunks T=256", docs,
         ["./prepare_data", "--mode", "text", "--text-mode", "lm", "--seq-len", "256", "--quiet", "--input", docs,
          "--tokenizer", args.tokenizer, "--output", os.path.join(WORK, "lm.bin")],
         lambda: hf_prepare_lm(args.tokenizer, docs, os.path.join(WORK, "lm_hf"), 256)),
    ]:
        mb = os.path.getsize(path) / 1e6
        ours, ours_cpu = timed(ours_cmd)
        theirs, theirs_cpu = timed_py(hf)
        print("prepare_data %-22s %5.1f MB: ours %6.2f MB/s (%5.1f MB per CPU-s), HF tokenizers (Python) %6.2f MB/s "
              "(%5.1f MB per CPU-s), ratio %.2fx wall, %.2fx CPU"
              % (name, mb, mb / ours, mb / ours_cpu, mb / theirs, mb / theirs_cpu, theirs / ours, theirs_cpu / ours_cpu))

    # REMIX stage for the tiny config: 2000 KVR pairs + random words at ratio 4.
    kvr, rw = os.path.join(WORK, "kvr.bin"), os.path.join(WORK, "rw.bin")
    timed(["./prepare_data", "--mode", "kvr", "--num", "2000", "--quiet", "--tokenizer", args.tokenizer,
           "--output", kvr])
    timed(["./prepare_data", "--mode", "random-words", "--num", "8000", "--length", "50", "--quiet",
           "--tokenizer", args.tokenizer, "--output", rw])
    streams = [shard_examples(kvr), shard_examples(rw)]
    for pack in (1, 0):
        r = subprocess.run([os.path.join(ROOT, "build/bench/bench_dataloader"), "--primary", kvr, "--mix",
                            "rw=%s:4" % rw, "--B", "32", "--T", "256", "--pack", str(pack), "--steps",
                            str(args.steps)], capture_output=True, text=True, check=True)
        ours = json.loads(r.stdout)
        py = numpy_loader(streams, [4.0], 32, 256, min(args.steps, 600)) if pack else None
        line = ("dataloader B=32 T=256 pack=%d (kvr 2000 + random words x4): ours %8.0f batches/s (%.1f rows/batch)"
                % (pack, ours["batches_per_s"], ours["rows_per_batch"]))
        if py:
            line += ", numpy %6.0f batches/s, ratio %.1fx" % (py, ours["batches_per_s"] / py)
        print(line)


if __name__ == "__main__":
    main()
