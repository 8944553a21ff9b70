#!/usr/bin/env python3
"""Scope-detection queries and paraphrases for the demo's key-value facts (D_A).

Reads prepare_data's JSONL copies (fields index, question = the key, prompt, answer) of
  --written   the facts written into the memory (D_A),
  --other     other facts of the same form, never written (another ./prepare_data --mode kvr seed),
  --unrelated unrelated questions (D_B's, field question),
and writes to --out DIR:
  facts.jsonl        one line per written fact: prompt (the written prompt), text (prompt and
                     answer: what Larimar writes), answer, key;
  paraphrases.jsonl  the written facts asked with every template of PARAPHRASES: question, answer,
                     answers, template (for exact-match efficacy on paraphrased prompts);
  queries.jsonl      the labelled queries of the scope detectors: prompt, in_scope, kind, fact
                     (index of the written fact, -1 for out of scope). In scope: the written prompts
                     and their paraphrases. Out of scope: the other facts asked the same ways (the
                     written template and every paraphrase, so that the form gives nothing away)
                     and the unrelated questions.
Deterministic: no randomness, the order of the inputs. Python 3 standard library only.
"""
import argparse
import json
import os
import sys

# Paraphrases of "The value of key {key} is?", the template the facts are trained and written with.
PARAPHRASES = [
    "What is the value of key {key}?",
    "Which value does key {key} hold?",
    "Tell me the value stored under key {key}.",
    "Key {key} maps to which value?",
]


def read_jsonl(path, fields):
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                j = json.loads(line)
            except ValueError:
                sys.exit(f"error: {path}:{n}: not JSON")
            for k in fields:
                if not isinstance(j.get(k), str):
                    sys.exit(f"error: {path}:{n}: field '{k}' is missing or not a string")
            rows.append(j)
    if not rows:
        sys.exit(f"error: {path}: no records")
    return rows


def write_jsonl(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--written", required=True, help="prepare_data JSONL of the written facts (D_A)")
    ap.add_argument("--other", required=True, help="prepare_data JSONL of other facts of the same form")
    ap.add_argument("--unrelated", required=True, help="JSONL of unrelated questions (field question)")
    ap.add_argument("--max-facts", type=int, default=0,
                    help="use the first N written facts, N other facts and N unrelated questions (0: all)")
    ap.add_argument("--out", required=True, help="output directory")
    a = ap.parse_args()
    written = read_jsonl(a.written, ["question", "prompt", "answer"])
    other = read_jsonl(a.other, ["question", "prompt", "answer"])
    unrelated = read_jsonl(a.unrelated, ["question"])
    if a.max_facts:
        written, other, unrelated = written[:a.max_facts], other[:a.max_facts], unrelated[:a.max_facts]
    keys = {w["question"] for w in written}
    clash = [o["question"] for o in other if o["question"] in keys]
    if clash:
        sys.exit(f"error: {a.other}: key '{clash[0]}' is also a written fact's (use another seed)")
    os.makedirs(a.out, exist_ok=True)
    facts = [{"prompt": w["prompt"], "text": f"{w['prompt']} {w['answer']}", "answer": w["answer"],
              "key": w["question"]} for w in written]
    paraphrases = [{"question": t.format(key=w["question"]), "answer": w["answer"], "answers": [w["answer"]],
                    "template": i} for i, t in enumerate(PARAPHRASES) for w in written]
    queries = []
    for i, w in enumerate(written):
        queries.append({"prompt": w["prompt"], "in_scope": True, "kind": "written", "fact": i})
    for t in PARAPHRASES:
        for i, w in enumerate(written):
            queries.append({"prompt": t.format(key=w["question"]), "in_scope": True, "kind": "paraphrase", "fact": i})
    for o in other:
        queries.append({"prompt": o["prompt"], "in_scope": False, "kind": "other fact", "fact": -1})
    for t in PARAPHRASES:
        for o in other:
            queries.append({"prompt": t.format(key=o["question"]), "in_scope": False, "kind": "other fact, paraphrased",
                            "fact": -1})
    for u in unrelated:
        queries.append({"prompt": u["question"], "in_scope": False, "kind": "unrelated", "fact": -1})
    write_jsonl(os.path.join(a.out, "facts.jsonl"), facts)
    write_jsonl(os.path.join(a.out, "paraphrases.jsonl"), paraphrases)
    write_jsonl(os.path.join(a.out, "queries.jsonl"), queries)
    n_in = sum(q["in_scope"] for q in queries)
    print(f"kvr_queries: {len(facts)} facts, {len(paraphrases)} paraphrases, {len(queries)} queries "
          f"({n_in} in scope, {len(queries) - n_in} out of scope) in {a.out}")


if __name__ == "__main__":
    main()
