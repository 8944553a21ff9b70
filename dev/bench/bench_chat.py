#!/usr/bin/env python3
"""prepare_data --mode chat against HF `tokenizers` + Python doing the same rendering and masking.

Generates a multi-turn chat JSONL of --mb MB (UltraChat-like: an optional system message, 1-4
user/assistant exchanges of dictionary words), then
  ours: ./prepare_data --mode chat --chat-template T (shard + JSONL copy),
  HF:   json.loads per line, open-instruct's rendering and prefix-length masking
        (the whole text and every mask prefix through Tokenizer.encode_batch, all cores), token,
        mask and offset arrays saved with numpy (no JSONL copy: less work than ours).
Both sides' tokens and masks are compared on every conversation, then the input MB/s and the
ratio are printed (wall and CPU seconds; best of --repeat runs).

  python3 dev/bench/bench_chat.py [--tokenizer test/fixtures/tokenizer/bytelevel.json] [--mb 20]
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
from shard_file import read_shard

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORK = os.path.join(ROOT, "build", "bench", "chat")


def words():
    w = [l.strip() for l in open("/usr/share/dict/words", encoding="utf-8")]
    return [x for x in w if x.isalpha() and x.islower() and x.isascii()]


def sentence(rng, vocab, lo, hi):
    s = " ".join(rng.choice(vocab) for _ in range(rng.randint(lo, hi)))
    return s[0].upper() + s[1:] + rng.choice([".", "?", "!"])


def gen_chat(path, mb, rng, vocab):
    with open(path, "w") as f:
        size = 0
        while size < mb * 1e6:
            msgs = []
            if rng.random() < 0.2:
                msgs.append({"role": "system", "content": sentence(rng, vocab, 4, 12)})
            for _ in range(rng.randint(1, 4)):
                msgs.append({"role": "user", "content": sentence(rng, vocab, 8, 60)})
                msgs.append({"role": "assistant", "content": "\n".join(sentence(rng, vocab, 10, 40)
                                                                       for _ in range(rng.randint(1, 4)))})
            line = json.dumps({"messages": msgs}) + "\n"
            f.write(line)
            size += len(line)


def render_tulu(msgs, eos):
    out = ""
    for m in msgs:
        c = m["content"].strip()
        if m["role"] == "system":
            out += "<|system|>\n" + c + "\n"
        elif m["role"] == "user":
            out += "<|user|>\n" + c + "\n"
        else:
            out += "<|assistant|>\n" + c + eos + "\n"
    return out


def render_llama3(msgs, eos):
    return "".join("<|start_header_id|>" + m["role"] + "<|end_header_id|>\n\n" + m["content"].strip() + "<|eot_id|>"
                   for m in msgs)


FORMATS = {"tulu": (render_tulu, "<|assistant|>\n", True),
           "llama3": (render_llama3, "<|start_header_id|>assistant<|end_header_id|>\n\n", False)}


def hf_prepare(tok_path, path, out, template):
    render, header, strip = FORMATS[template]
    tok = Tokenizer.from_file(tok_path)
    eos = "<|end_of_text|>"
    convs = [json.loads(l)["messages"] for l in open(path, encoding="utf-8") if l.strip()]
    texts, spans = [], []  # spans: per conversation, (first text, [(start text or None, end text)])
    for msgs in convs:
        first = len(texts)
        full = render(msgs, eos)
        texts.append(full.strip() if strip else full)
        ranges = []
        for i, m in enumerate(msgs):
            if m["role"] == "assistant":
                continue
            s = None
            if i > 0:
                s = len(texts)
                texts.append(render(msgs[:i], eos))
            e = render(msgs[:i + 1], eos)
            if i + 1 < len(msgs) and msgs[i + 1]["role"] == "assistant":
                e += header
            ranges.append((s, len(texts)))
            texts.append(e)
        spans.append((first, ranges))
    enc = tok.encode_batch(texts, add_special_tokens=True)
    toks, masks, offs = [], [], [0]
    for first, ranges in spans:
        ids = enc[first].ids
        mask = np.ones(len(ids), dtype=np.uint8)
        for s, e in ranges:
            b = 0 if s is None else len(enc[s].ids)
            mask[b:min(len(enc[e].ids), len(ids))] = 0
        mask[0] = 0
        toks.append(np.array(ids, dtype=np.uint16))
        masks.append(mask)
        offs.append(offs[-1] + len(ids))
    np.save(out + ".tokens.npy", np.concatenate(toks))
    np.save(out + ".mask.npy", np.packbits(np.concatenate(masks), bitorder="little"))
    np.save(out + ".offsets.npy", np.array(offs, dtype=np.uint64))
    return toks, masks


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "test/fixtures/tokenizer/bytelevel.json"))
    ap.add_argument("--mb", type=float, default=20)
    ap.add_argument("--template", default="tulu", choices=sorted(FORMATS))
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    os.makedirs(WORK, exist_ok=True)
    src = os.path.join(WORK, "chat_%gmb.jsonl" % args.mb)
    if not os.path.exists(src):
        gen_chat(src, args.mb, random.Random(0), words())
    mb = os.path.getsize(src) / 1e6
    shard = os.path.join(WORK, "chat.bin")

    ours, hf = [], []
    for _ in range(args.repeat):
        t, c = time.perf_counter(), child_cpu()
        r = subprocess.run(["./prepare_data", "--quiet", "--mode", "chat", "--chat-template", args.template,
                            "--input", src, "--tokenizer", args.tokenizer, "--output", shard], cwd=ROOT,
                           capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit("prepare_data failed:\n" + r.stderr)
        ours.append((time.perf_counter() - t, child_cpu() - c))
        t, c = time.perf_counter(), time.process_time()
        toks, masks = hf_prepare(args.tokenizer, src, os.path.join(WORK, "hf"), args.template)
        hf.append((time.perf_counter() - t, time.process_time() - c))

    offsets, tokens, mask = read_shard(shard)
    if len(offsets) - 1 != len(toks):
        sys.exit("MISMATCH: %d examples vs HF %d" % (len(offsets) - 1, len(toks)))
    for i, (t, m) in enumerate(zip(toks, masks)):
        b, e = int(offsets[i]), int(offsets[i + 1])
        if not (np.array_equal(tokens[b:e], t) and np.array_equal(mask[b:e], m)):
            sys.exit("MISMATCH at conversation %d" % i)
    print("tokens and masks identical on all %d conversations (%d tokens)" % (len(toks), len(tokens)))

    ow, oc = min(ours)
    hw, hc = min(hf)
    print("input: %.1f MB, template %s, %d cores visible" % (mb, args.template, os.cpu_count()))
    print("prepare_data --mode chat: %.2f s wall (%.1f MB/s), %.2f s CPU" % (ow, mb / ow, oc))
    print("HF tokenizers + Python:   %.2f s wall (%.1f MB/s), %.2f s CPU" % (hw, mb / hw, hc))
    print("ratio (HF / ours): %.2fx wall, %.2fx CPU" % (hw / ow, hc / oc))


if __name__ == "__main__":
    main()
