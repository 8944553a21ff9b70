"""Interop check: a train_llama checkpoint loads in transformers and gives the same greedy answers.

    python3 dev/reference/check_interop.py --checkpoint run/final --predictions eval/predictions.jsonl

For every prediction that eval_factoids wrote for this checkpoint, transformers generates greedily
from the same prompt token ids (LlamaForCausalLM.from_pretrained(checkpoint), tokenizer from the
checkpoint's tokenizer.json) and must produce the same tokens, and the same answer text once
decoded with the HF tokenizer and cut at the first newline. Exits 1 on any difference.
"""
import argparse
import json
import os
import sys

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()

    model = LlamaForCausalLM.from_pretrained(args.checkpoint, dtype=torch.float32).eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.checkpoint, "tokenizer.json"))
    rows = []
    with open(args.predictions) as f:
        for line in f:
            r = json.loads(line)
            if os.path.normpath(r["model"]) == os.path.normpath(args.checkpoint):
                rows.append(r)
    if args.limit:
        rows = rows[: args.limit]
    assert rows, ("no predictions for this checkpoint: the 'model' field of predictions.jsonl is the path "
                  "given to eval_factoids --model; run this script from the same directory with the same path")
    token_mismatch = text_mismatch = 0
    with torch.no_grad():
        for r in rows:
            ours = r["output_ids"]
            out = model.generate(torch.tensor([r["prompt_ids"]]), do_sample=False, max_new_tokens=len(ours),
                                 min_new_tokens=len(ours), eos_token_id=None, pad_token_id=0)
            theirs = out[0, len(r["prompt_ids"]):].tolist()
            if theirs != ours:
                token_mismatch += 1
                print("tokens differ:", r["index"], ours, theirs)
            text = tok.decode(theirs, skip_special_tokens=True).split("\n")[0]
            if text.strip() != r["prediction"].strip():
                text_mismatch += 1
                print("text differs:", r["index"], repr(r["prediction"]), repr(text))
    print(f"{len(rows)} prompts: {len(rows) - token_mismatch} identical greedy continuations, "
          f"{len(rows) - text_mismatch} identical answers (transformers vs eval_factoids)")
    sys.exit(1 if token_mismatch or text_mismatch else 0)


if __name__ == "__main__":
    main()
