#!/usr/bin/env python3
"""Generic English text for the demo, from Debian's `fortunes` package (offline).

Why fortunes: it is real, varied, modern English prose (quotations, jokes, short essays, poems,
definitions: about 15,000 documents and 440,000 words), it is small (a 2 MB download) and it is
packaged for every Debian release. dict-gcide is larger but is 1913 dictionary prose full of
markup; the REMIX "generic" mix wants ordinary running text.

Each fortune (the text between two lines holding only "%") is one document. The documents are
split deterministically into
  - held-out documents (the REMIX generic mix): documents of at least --min-heldout-words words,
    --heldout of them chosen with a seeded shuffle; they never appear in pretraining;
  - pretraining documents (all the others): the tokenizer and the tiny base model learn from them.
Outputs: PRETRAIN.jsonl and HELDOUT.jsonl ({"text": ...} per line, sorted by source file and
position) and PRETRAIN.txt (the pretraining documents separated by blank lines, for the
tokenizer trainer). The text is folded to ASCII unless --keep-unicode is given (see ascii_fold).
Python standard library only.
"""
import argparse
import json
import os
import random
import sys
import unicodedata

# Files made of pictures rather than prose.
SKIP_FILES = {"art", "ascii-art"}


def ascii_fold(text):
    """Accents removed (NFKD, combining marks dropped), any other non-ASCII character dropped.

    The demo's tiny tokenizer and model then only ever see ASCII, so a byte-level model never
    learns to emit a lone UTF-8 continuation byte (about 0.1% of the fortunes' characters)."""
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if ord(c) < 128)


def read_fortune_files(directory, ascii_only):
    docs = []  # (file name, index in file, text)
    names = sorted(n for n in os.listdir(directory)
                   if "." not in n and n not in SKIP_FILES
                   and os.path.isfile(os.path.join(directory, n))
                   and not os.path.islink(os.path.join(directory, n)))
    if not names:
        sys.exit(f"error: {directory}: no fortune files (is the Debian package `fortunes` installed?)")
    for name in names:
        with open(os.path.join(directory, name), "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        if ascii_only:
            text = ascii_fold(text)
        chunk = []
        index = 0
        for line in text.split("\n"):
            if line.strip() == "%":
                doc = "\n".join(chunk).strip()
                if doc:
                    docs.append((name, index, doc.replace("\t", "    ")))
                    index += 1
                chunk = []
            else:
                chunk.append(line.rstrip())
        doc = "\n".join(chunk).strip()
        if doc:
            docs.append((name, index, doc))
    return docs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fortunes-dir", default="/usr/share/games/fortunes")
    ap.add_argument("--pretrain", required=True, help="output prefix: writes PREFIX.jsonl and PREFIX.txt")
    ap.add_argument("--heldout", required=True, help="output JSONL of held-out documents")
    ap.add_argument("--num-heldout", type=int, default=400)
    ap.add_argument("--min-heldout-words", type=int, default=100)
    ap.add_argument("--max-pretrain-words", type=int, default=0, help="0 = all")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep-unicode", action="store_true", help="do not fold the text to ASCII")
    args = ap.parse_args()

    docs = read_fortune_files(args.fortunes_dir, not args.keep_unicode)
    long_ids = [i for i, d in enumerate(docs) if len(d[2].split()) >= args.min_heldout_words]
    rng = random.Random(args.seed)
    rng.shuffle(long_ids)
    if len(long_ids) < args.num_heldout:
        sys.exit(f"error: {args.fortunes_dir}: only {len(long_ids)} documents have >= "
                 f"{args.min_heldout_words} words, --num-heldout {args.num_heldout} requested")
    heldout = set(long_ids[:args.num_heldout])

    pretrain_ids = [i for i in range(len(docs)) if i not in heldout]
    if args.max_pretrain_words > 0:
        # A seeded sample, written back in source order.
        order = pretrain_ids[:]
        rng.shuffle(order)
        kept, words = set(), 0
        for i in order:
            if words >= args.max_pretrain_words:
                break
            kept.add(i)
            words += len(docs[i][2].split())
        pretrain_ids = [i for i in pretrain_ids if i in kept]

    def write_jsonl(path, ids):
        with open(path, "w", encoding="utf-8") as f:
            for i in ids:
                f.write(json.dumps({"text": docs[i][2], "source": f"fortunes/{docs[i][0]}#{docs[i][1]}"},
                                   ensure_ascii=False) + "\n")

    write_jsonl(args.pretrain + ".jsonl", pretrain_ids)
    write_jsonl(args.heldout, sorted(heldout))
    with open(args.pretrain + ".txt", "w", encoding="utf-8") as f:
        for i in pretrain_ids:
            f.write(docs[i][2] + "\n\n")
    words = sum(len(docs[i][2].split()) for i in pretrain_ids)
    print(f"fortunes: {len(docs)} documents; pretrain {len(pretrain_ids)} documents ({words} words), "
          f"held out {len(heldout)} documents of >= {args.min_heldout_words} words")


if __name__ == "__main__":
    main()
