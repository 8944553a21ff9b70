#!/usr/bin/env python3
"""Logit-lens reference (test/test_eval_lens.cpp), from torch + transformers.

A random tiny LlamaForCausalLM (4 layers, GQA, untied head) is saved under
test/fixtures/eval/lens/model/, and expected.safetensors holds, for a few QA items (prompt ids +
answer ids, different lengths):
  prompt_<i>, answer_<i>   I32        the item's tokens
  logits_<i>               F32 [L+1, A, V]  the lens logits at layer boundary l for answer token j:
                           lm_head(model.model.norm(h_l)) at the position predicting answer_<i>[j]
  prob_<i>                 F32 [L+1, A]     softmax probability of the gold answer token
  rank_<i>                 I32 [L+1, A]     tokens greedy decoding prefers to the gold one
h_l comes from output_hidden_states=True: hidden_states[l] is the residual stream entering layer l
for l < L. transformers returns hidden_states[L] AFTER the final norm (the script asserts it), so
the boundary L uses the last decoder layer's output (a forward hook) instead, which is what the
final norm reads.

The init scale is large so that each layer changes the residual stream a lot: the script asserts
that the probabilities of adjacent boundaries differ by far more than the test tolerance, so a lens
that reads the wrong layer fails.
"""
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "test", "fixtures", "eval", "lens")
SEED = 14
TOL = 1e-4


def main():
    torch.manual_seed(SEED)
    cfg = LlamaConfig(
        vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
        initializer_range=0.02, bos_token_id=1, eos_token_id=2, torch_dtype="float32",
    )
    model = LlamaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.25 * torch.randn(p.shape, generator=g))

    L = cfg.num_hidden_layers
    lengths = [(3, 1), (7, 4), (1, 3), (12, 2), (5, 6)]
    last_out = {}
    model.model.layers[-1].register_forward_hook(
        lambda mod, inp, out: last_out.__setitem__("h", out[0] if isinstance(out, tuple) else out))

    tensors = {}
    adjacent = [0.0] * L  # max over items and answer tokens of |prob at l+1 - prob at l|
    with torch.no_grad():
        for i, (np_, na) in enumerate(lengths):
            prompt = torch.randint(3, cfg.vocab_size, (np_,), generator=g)
            answer = torch.randint(3, cfg.vocab_size, (na,), generator=g)
            ids = torch.cat([prompt, answer[:-1]]).unsqueeze(0)
            out = model(ids, output_hidden_states=True)
            hs = list(out.hidden_states)
            assert len(hs) == L + 1
            assert torch.allclose(hs[L], model.model.norm(last_out["h"]), atol=1e-6), \
                "hidden_states[L] is not norm(last layer output): transformers changed its convention"
            hs[L] = last_out["h"]
            pos = torch.arange(np_ - 1, np_ - 1 + na)
            logits = torch.stack([model.lm_head(model.model.norm(h[0, pos])) for h in hs])  # [L+1, A, V]
            assert torch.allclose(logits[L], out.logits[0, pos], atol=1e-5)
            probs = torch.softmax(logits.double(), dim=-1)
            gold = answer.view(1, na, 1).expand(L + 1, na, 1)
            prob = probs.gather(-1, gold).squeeze(-1)
            gl = logits.gather(-1, gold)
            ids_v = torch.arange(cfg.vocab_size).view(1, 1, -1)
            rank = ((logits > gl) | ((logits == gl) & (ids_v < gold))).sum(-1)
            for l in range(L):
                adjacent[l] = max(adjacent[l], (prob[l + 1] - prob[l]).abs().max().item())
            tensors[f"prompt_{i}"] = prompt.to(torch.int32)
            tensors[f"answer_{i}"] = answer.to(torch.int32)
            tensors[f"logits_{i}"] = logits.float().contiguous()
            tensors[f"prob_{i}"] = prob.float().contiguous()
            tensors[f"rank_{i}"] = rank.to(torch.int32).contiguous()
    min_adjacent = min(adjacent)
    assert min_adjacent > 100 * TOL, f"adjacent layers too similar ({min_adjacent}); change SEED"

    shutil.rmtree(OUT, ignore_errors=True)
    model.save_pretrained(os.path.join(OUT, "model"), safe_serialization=True)
    save_file(tensors, os.path.join(OUT, "expected.safetensors"), metadata={"items": str(len(lengths))})
    print(f"lens: {len(lengths)} items, {L} layers; max |prob(l+1) - prob(l)| of the closest pair of boundaries = {min_adjacent:.4f}")


if __name__ == "__main__":
    main()
