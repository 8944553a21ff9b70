#!/usr/bin/env python3
"""D_B factoids for the demo: English->French word pairs from Debian's `dict-freedict-eng-fra`.

The package ships a dictd database: an index (headword TAB offset TAB length, numbers in dictd's
base64) and a dictzip'ed body (gzip-compatible). An entry body is the headword line with its
pronunciation, then either one line of translations ("fromage") or numbered senses
("1. apothicaire, pharmacien\n2. chimiste"), translations separated by ", ".

Each selected headword becomes one QA record
  {"question": "What is the French word for 'cheese'?", "answer": ["fromage", ...]}
where the first answer (first translation of the first sense) is trained on and every listed
translation counts as correct at evaluation. Headwords are kept when they are one lowercase ASCII
word of 3+ letters and their first translation is one or two words without parentheses; --n of
them are picked with a seeded shuffle and written in alphabetical order. With --ascii-only (the
demo's choice: its tiny tokenizer and model see only ASCII text) only translations spelled in ASCII
are kept: a headword whose first translation has an accent is skipped, accented alternatives are
dropped. Python standard library only.
"""
import argparse
import gzip
import json
import random
import re
import sys

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def dictd_number(s, where):
    n = 0
    for c in s:
        k = B64.find(c)
        if k < 0:
            sys.exit(f"error: {where}: invalid dictd base64 number {s!r}")
        n = n * 64 + k
    return n


def parse_entry(body):
    """Returns the list of translations of one entry body, first sense first."""
    lines = [l.strip() for l in body.strip().split("\n")[1:] if l.strip()]
    translations = []
    for line in lines:
        line = re.sub(r"^\d+\.\s*", "", line)
        for t in line.split(","):
            t = t.strip().replace("\u2010", "-")  # the database uses U+2010 for hyphens
            if t and t not in translations:
                translations.append(t)
    return translations


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default="/usr/share/dictd/freedict-eng-fra.index")
    ap.add_argument("--dict", default="/usr/share/dictd/freedict-eng-fra.dict.dz")
    ap.add_argument("--out", required=True, help="output JSONL")
    ap.add_argument("--n", type=int, default=200, help="number of records")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ascii-only", action="store_true",
                    help="keep only translations spelled in ASCII (drop the others; skip a headword left with none)")
    args = ap.parse_args()

    try:
        with gzip.open(args.dict, "rb") as f:
            body = f.read()
        with open(args.index, encoding="utf-8") as f:
            index_lines = f.read().split("\n")
    except OSError as e:
        sys.exit(f"error: {e} (is the Debian package `dict-freedict-eng-fra` installed?)")

    candidates = {}
    for lineno, line in enumerate(index_lines, 1):
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            sys.exit(f"error: {args.index}:{lineno}: expected 3 tab-separated fields")
        word, off, length = parts
        if not re.fullmatch(r"[a-z]{3,}", word) or word in candidates:
            continue
        start = dictd_number(off, f"{args.index}:{lineno}")
        size = dictd_number(length, f"{args.index}:{lineno}")
        if start + size > len(body):
            sys.exit(f"error: {args.index}:{lineno}: entry {word!r} lies outside {args.dict}")
        translations = parse_entry(body[start:start + size].decode("utf-8"))
        if not translations:
            continue
        if args.ascii_only:  # the main translation must be ASCII; accented alternatives are dropped
            if not translations[0].isascii():
                continue
            translations = [t for t in translations if t.isascii()]
        first = translations[0]
        if len(first.split()) > 2 or "(" in first or not first[0].isalpha() or first.lower() == word:
            continue
        candidates[word] = translations

    words = sorted(candidates)
    if len(words) < args.n:
        sys.exit(f"error: {args.index}: only {len(words)} usable headwords, --n {args.n} requested")
    rng = random.Random(args.seed)
    rng.shuffle(words)
    chosen = sorted(words[:args.n])
    with open(args.out, "w", encoding="utf-8") as f:
        for w in chosen:
            f.write(json.dumps({"question": f"What is the French word for '{w}'?",
                                "answer": candidates[w]}, ensure_ascii=False) + "\n")
    print(f"freedict-eng-fra: {len(candidates)} usable headwords, wrote {len(chosen)} to {args.out}")


if __name__ == "__main__":
    main()
