#!/usr/bin/env python3
"""D_B non-factoid data for the demo: Python source code from the installed standard library.

Code is about as unlike a factoid as text gets: long-range structure, syntax, few isolated facts.
It is already on every machine that runs the demo (the Debian `python3` package ships the
standard library as .py files), so nothing is downloaded.

Top-level modules of the standard library directory of the interpreter running this script
(sysconfig's "stdlib" path) are taken in a seeded order until --max-chars characters are
collected. Each module becomes {"text": source, "source": "stdlib/<name>.py"}, split into pieces of
at most --max-doc-chars characters at blank lines so that documents stay short. The text is folded to ASCII (accents removed, other
non-ASCII characters dropped) like the rest of the demo's data. Python standard
library only.
"""
import argparse
import json
import os
import random
import sys
import sysconfig
import unicodedata


def split_at_blank_lines(text, max_chars):
    pieces, current = [], ""
    for block in text.split("\n\n"):
        if current and len(current) + len(block) + 2 > max_chars:
            pieces.append(current)
            current = ""
        current = block if not current else current + "\n\n" + block
        while len(current) > max_chars:  # a single huge block: cut at a line end
            cut = current.rfind("\n", 0, max_chars)
            cut = max_chars if cut <= 0 else cut
            pieces.append(current[:cut])
            current = current[cut:].lstrip("\n")
    if current.strip():
        pieces.append(current)
    return [p for p in pieces if p.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stdlib-dir", default=sysconfig.get_paths()["stdlib"])
    ap.add_argument("--out", required=True, help="output JSONL")
    ap.add_argument("--max-chars", type=int, default=200000)
    ap.add_argument("--max-doc-chars", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    try:
        names = sorted(n for n in os.listdir(args.stdlib_dir)
                       if n.endswith(".py") and not n.startswith(("test", "_")))
    except OSError as e:
        sys.exit(f"error: {e} (the Python standard library sources are needed)")
    if not names:
        sys.exit(f"error: {args.stdlib_dir}: no .py files")
    random.Random(args.seed).shuffle(names)
    total, docs = 0, []
    for name in names:
        if total >= args.max_chars:
            break
        with open(os.path.join(args.stdlib_dir, name), "rb") as f:
            text = f.read().decode("utf-8", errors="replace").replace("\t", "    ")
        # ASCII only, like the rest of the demo's data (a few docstrings hold non-ASCII names).
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if ord(c) < 128)
        text = text[:args.max_chars - total]
        for i, piece in enumerate(split_at_blank_lines(text, args.max_doc_chars)):
            docs.append({"text": piece, "source": f"stdlib/{name}#{i}"})
        total += len(text)
    with open(args.out, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    print(f"python stdlib ({args.stdlib_dir}): {len(docs)} documents, {total} characters -> {args.out}")


if __name__ == "__main__":
    main()
