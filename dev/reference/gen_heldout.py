#!/usr/bin/env python3
"""Reference fixture for the held-out loss and perplexity (test/test_eval_metrics.cpp).

Uses the tiny LlamaForCausalLM of test/fixtures/eval/tiny_llama (written by gen_eval.py). A few
random token examples with loss masks (QA-like: a prompt then a trained answer; chat-like: several
trained runs; loss everywhere) are scored by transformers: for each example, labels = the ids with
-100 where the loss bit is 0 (and at position 0), and the per-token cross-entropy of the shifted
logits, summed in float64 over all trained tokens of all examples. The script checks the sum
against transformers' own `loss` output (its mean per example). Writes
test/fixtures/eval/heldout.json: {"examples": [{"tokens", "loss"}], "loss_sum", "target_tokens",
"mean_loss", "perplexity"}.
"""
import json
import math
import os

import torch
from transformers import LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "test", "fixtures", "eval")
SEED = 7


def main():
    model = LlamaForCausalLM.from_pretrained(os.path.join(OUT, "tiny_llama"), torch_dtype=torch.float32).eval()
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(SEED)
    examples = []
    for n in [2, 5, 9, 16, 23, 40, 61, 7, 33, 12]:
        tokens = torch.randint(3, V, (n,), generator=g).tolist()
        kind = len(examples) % 3
        if kind == 0:    # prompt, then a trained answer
            cut = max(1, n // 2)
            loss = [0] * cut + [1] * (n - cut)
        elif kind == 1:  # alternating untrained / trained runs (a conversation)
            loss = [1 if (i // 3) % 2 == 1 else 0 for i in range(n)]
        else:            # loss everywhere (language modelling)
            loss = [1] * n
        # (kind 2 keeps a loss bit on token 0: nothing predicts the first token, both sides ignore it)
        examples.append({"tokens": tokens, "loss": loss})

    total, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            ids = torch.tensor([ex["tokens"]])
            labels = [t if (b and i > 0) else -100 for i, (t, b) in enumerate(zip(ex["tokens"], ex["loss"]))]
            if all(x == -100 for x in labels):
                continue
            out = model(ids, labels=torch.tensor([labels]))
            logp = torch.log_softmax(out.logits[0].double(), dim=-1)
            s, c = 0.0, 0
            for i in range(1, len(labels)):
                if labels[i] != -100:
                    s -= logp[i - 1, labels[i]].item()
                    c += 1
            assert abs(s / c - out.loss.item()) < 1e-4 * max(1.0, abs(s / c)), (s / c, out.loss.item())
            total += s
            count += c
    mean = total / count
    with open(os.path.join(OUT, "heldout.json"), "w") as f:
        json.dump({"examples": examples, "loss_sum": total, "target_tokens": count, "mean_loss": mean,
                   "perplexity": math.exp(mean)}, f)
    print("wrote heldout.json: mean loss", mean, "perplexity", math.exp(mean), "over", count, "tokens")


if __name__ == "__main__":
    main()
