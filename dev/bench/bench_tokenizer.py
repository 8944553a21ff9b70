#!/usr/bin/env python3
"""Tokenizer throughput: ours vs HF `tokenizers` (encode_batch) vs `tiktoken`, same run, same corpus.

    python3 dev/bench/bench_tokenizer.py [--mb 12] [--vocab 32000] [--repeats 3] [--wordpiece]

The corpus (>= 10 MB: every .py file of the Python stdlib, cut into ~8 kB documents at line
boundaries, plus the multilingual parity corpus of the tests) and a byte-level BPE with the Llama 3
regex and ignore_merges (trained here by HF tokenizers on the first 3 MB) are cached in
build/bench_tokenizer/. tiktoken gets an Encoding built from the same ranks and pattern. All three
must produce the same ids (checked by a checksum). Reports MB/s on 1 thread and on all cores, and
the ratios.

--wordpiece benchmarks WordPiece instead, ours against HF only: the real all-MiniLM-L6-v2
tokenizer when `scripts/install_deps.sh --minilm` has installed it (its truncation and padding
dropped, as the engine's encoder does), else the WordPiece of the parity fixtures.
"""
import argparse
import base64
import json
import os
import struct
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORK = os.path.join(ROOT, "build", "bench_tokenizer")
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
MASK = (1 << 64) - 1


def checksum(batches):
    h, n = 0xCBF29CE484222325, 0
    for ids in batches:
        for i in ids:
            h = ((h ^ i) * 0x100000001B3) & MASK
        n += len(ids)
    return n, f"{h:016x}"


def build_corpus(target_bytes):
    import sysconfig
    stdlib = sysconfig.get_paths()["stdlib"]
    files = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames.sort()
        files += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
    docs, total = [], 0
    # the parity corpus (CJK, Arabic, emoji, numbers, whitespace runs...) first
    fixture = open(os.path.join(ROOT, "test", "fixtures", "tokenizer", "corpus.bin"), "rb").read()
    n = struct.unpack_from("<I", fixture, 0)[0]
    pos = 4
    for _ in range(n):
        ln = struct.unpack_from("<I", fixture, pos)[0]
        docs.append(fixture[pos + 4:pos + 4 + ln].decode("utf-8"))
        pos += 4 + ln
        total += ln
    for f in files:
        if total >= target_bytes:
            break
        text = open(f, encoding="utf-8", errors="replace").read()
        lines, cur = text.split("\n"), []
        size = 0
        for line in lines:
            cur.append(line)
            size += len(line) + 1
            if size > 8000:
                docs.append("\n".join(cur) + "\n")
                total += len(docs[-1].encode("utf-8"))
                cur, size = [], 0
        if cur:
            docs.append("\n".join(cur))
            total += len(docs[-1].encode("utf-8"))
    return docs


def prepare(args):
    os.makedirs(WORK, exist_ok=True)
    docs_path = os.path.join(WORK, f"docs_{args.mb}mb.bin")
    tok_path = os.path.join(WORK, f"tokenizer_{args.vocab}.json")
    if not os.path.exists(docs_path):
        docs = build_corpus(args.mb * 1_000_000)
        with open(docs_path, "wb") as f:
            f.write(struct.pack("<I", len(docs)))
            for d in docs:
                b = d.encode("utf-8")
                f.write(struct.pack("<I", len(b)) + b)
    data = open(docs_path, "rb").read()
    n = struct.unpack_from("<I", data, 0)[0]
    docs, pos = [], 4
    for _ in range(n):
        ln = struct.unpack_from("<I", data, pos)[0]
        docs.append(data[pos + 4:pos + 4 + ln].decode("utf-8"))
        pos += 4 + ln
    if not os.path.exists(tok_path):
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=args.vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=["<|begin_of_text|>", "<|end_of_text|>"], show_progress=False)
        sample, size = [], 0
        for d in docs:
            sample.append(d)
            size += len(d)
            if size > 3_000_000:
                break
        t0 = time.time()
        tok.train_from_iterator(sample, trainer)
        print(f"trained HF BPE, vocab {args.vocab}, in {time.time() - t0:.1f} s", file=sys.stderr)
        j = json.loads(tok.to_str())
        j["model"]["ignore_merges"] = True  # as Llama 3; tiktoken behaves this way too
        with open(tok_path, "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False)
    return docs, docs_path, tok_path


def wordpiece_tokenizer():
    sys.path.insert(0, os.path.join(ROOT, "dev", "reference"))
    from gen_tokenizer import minilm_dir
    src = os.path.join(minilm_dir(), "tokenizer.json")
    if not os.path.exists(src):
        print(f"{src} missing (scripts/install_deps.sh --minilm): using the parity fixture's WordPiece", file=sys.stderr)
        return os.path.join(ROOT, "test", "fixtures", "tokenizer", "wordpiece.json"), "WordPiece (parity fixture)"
    j = json.load(open(src, encoding="utf-8"))
    j["truncation"] = j["padding"] = None
    os.makedirs(WORK, exist_ok=True)
    path = os.path.join(WORK, "minilm_tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    return path, "WordPiece (all-MiniLM-L6-v2, vocab 30522)"


def build_ours():
    subprocess.run(["make", "-C", ROOT, "build/libtokenizer.a", "build/libcommon.a"], check=True,
                   stdout=subprocess.DEVNULL)
    exe = os.path.join(ROOT, "build", "bench_tokenizer_bin")
    src = os.path.join(ROOT, "dev", "bench", "bench_tokenizer.cpp")
    subprocess.run(["g++", "-O3", "-march=native", "-std=c++20", "-fopenmp", "-I", ROOT, src,
                    os.path.join(ROOT, "build", "libtokenizer.a"), os.path.join(ROOT, "build", "libcommon.a"),
                    "-lpcre2-8", "-o", exe], check=True)
    return exe


def run_ours(exe, tok_path, docs_path, threads, repeats):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([exe, tok_path, docs_path, str(repeats)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


HF_CHILD = r"""
import json, sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
docs = json.load(open(sys.argv[2]))
best = best_cpu = 1e30
for _ in range(int(sys.argv[3])):
    t0, c0 = time.perf_counter(), time.process_time()
    enc = tok.encode_batch(docs, add_special_tokens=False)
    best = min(best, time.perf_counter() - t0)
    best_cpu = min(best_cpu, time.process_time() - c0)
h, n = 0xCBF29CE484222325, 0
for e in enc:
    for i in e.ids:
        h = ((h ^ i) * 0x100000001B3) & ((1 << 64) - 1)
    n += len(e.ids)
print(json.dumps({"seconds": best, "cpu_seconds": best_cpu, "ids": n, "checksum": f"{h:016x}"}))
"""


def run_hf(tok_path, docs, threads, repeats):
    # HF parallelism is rayon's, sized at start-up: a child process per thread count.
    docs_json = os.path.join(WORK, "docs.json")
    if not os.path.exists(docs_json):
        json.dump(docs, open(docs_json, "w"))
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), RAYON_RS_NUM_CPUS=str(threads),
               TOKENIZERS_PARALLELISM="true")
    out = subprocess.run([sys.executable, "-c", HF_CHILD, tok_path, docs_json, str(repeats)], env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def run_tiktoken(tok_path, docs, threads, repeats):
    import tiktoken
    j = json.load(open(tok_path, encoding="utf-8"))
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, k = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + k)
            k += 1
    byte_of = {chr(c): b for b, c in zip(bs, cs)}
    added = {a["content"]: a["id"] for a in j["added_tokens"]}
    ranks = {bytes(byte_of[c] for c in t): i for t, i in j["model"]["vocab"].items() if t not in added}
    enc = tiktoken.Encoding("bench", pat_str=LLAMA3, mergeable_ranks=ranks, special_tokens=added)
    best, best_cpu, out = 1e30, 1e30, None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        if threads == 1:
            out = [enc.encode(d, allowed_special="all") for d in docs]
        else:
            out = enc.encode_batch(docs, num_threads=threads, allowed_special="all")
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    n, h = checksum(out)
    return {"seconds": best, "cpu_seconds": best_cpu, "ids": n, "checksum": h}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=12, help="corpus size in MB (default 12)")
    ap.add_argument("--vocab", type=int, default=32000, help="BPE vocabulary size (default 32000)")
    ap.add_argument("--repeats", type=int, default=3, help="best of N timed runs (default 3)")
    ap.add_argument("--wordpiece", action="store_true", help="WordPiece (MiniLM) against HF instead of BPE")
    args = ap.parse_args()
    docs, docs_path, tok_path = prepare(args)
    kind = f"byte-level BPE, vocab {args.vocab}, Llama 3 regex"
    if args.wordpiece:
        tok_path, kind = wordpiece_tokenizer()
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    exe = build_ours()
    cores = os.cpu_count()
    rows, sums = [], {}
    for threads in sorted({1, cores}):
        ours = run_ours(exe, tok_path, docs_path, threads, args.repeats)
        hf = run_hf(tok_path, docs, threads, args.repeats)
        runs = [("ours", ours), ("hf", hf)]
        if not args.wordpiece:
            runs.append(("tiktoken", run_tiktoken(tok_path, docs, threads, args.repeats)))
        for name, r in runs:
            sums[(name, threads)] = (r["ids"], r["checksum"])
        mbs = {name: nbytes / r["seconds"] / 1e6 for name, r in runs}
        mbs.setdefault("tiktoken", float("nan"))
        rows.append((threads, mbs))
        if threads == 1:
            cpu = {name: nbytes / r["cpu_seconds"] / 1e6 for name, r in runs}
            cpu.setdefault("tiktoken", float("nan"))
    print(f"corpus: {len(docs)} documents, {nbytes / 1e6:.1f} MB; {kind}")
    print(f"{'threads':>7}  {'ours MB/s':>10}  {'HF MB/s':>10}  {'tiktoken MB/s':>13}  {'ours/HF':>8}  {'ours/tiktoken':>13}")
    for threads, m in rows:
        print(f"{threads:>7}  {m['ours']:>10.2f}  {m['hf']:>10.2f}  {m['tiktoken']:>13.2f}  "
              f"{m['ours'] / m['hf']:>7.2f}x  {m['ours'] / m['tiktoken']:>12.2f}x")
    print(f"{'1, CPU':>7}  {cpu['ours']:>10.2f}  {cpu['hf']:>10.2f}  {cpu['tiktoken']:>13.2f}  "
          f"{cpu['ours'] / cpu['hf']:>7.2f}x  {cpu['ours'] / cpu['tiktoken']:>12.2f}x   (MB per CPU-second)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {cores} cores (wall-clock rows suffer from it)")
    agree = len(set(sums.values())) == 1
    print("ids identical across ours / HF / tiktoken:", "yes" if agree else f"NO {sums}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
