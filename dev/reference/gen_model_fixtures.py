#!/usr/bin/env python3
"""HF parity fixtures for the model (test/test_model.cpp), from torch + transformers (pinned in
dev/requirements.txt). For each tiny random config it writes test/fixtures/model/<name>/:

  model/            config.json + model.safetensors, exactly as save_pretrained writes them
  expected.safetensors
    tokens, targets, positions, seg_start   I32 [rows, T]  the batch as the engine consumes it
    rope_inv_freq                           F32 [head_dim/2] HF's RoPE frequencies
    logits                                  F32 [rows*T, V]
    loss                                    F32 [1]  sum of token losses / target tokens
    grad.<hf name>                          F32      gradient of every parameter
    after.<hf name>                         F32      every parameter after 5 AdamW steps
    (packed only) unpacked_tokens, unpacked_targets, unpacked_positions, unpacked_seg_start:
                                            the same examples, one per row
  metadata "fixture": JSON {num_target_tokens, lr, beta1, beta2, eps, weight_decay, max_grad_norm,
                             steps, rope (HF rope_parameters), head_dim}

The loss is the mean over target tokens (targets == -1 carry none). The 5 steps each recompute
the loss on the same batch, then clip_grad_norm_ and torch.optim.AdamW.step().
The packed fixture's expected values come from running HF on each example separately (no
packing on the HF side), placed at the example's columns; a padding slot's logits are those of
token 0 alone at position 0 (a padding slot attends only to itself).
"""
import json
import os
import shutil

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "test", "fixtures", "model")
STEPS = 5
# AdamW normalizes each gradient element, so an element whose true gradient is ~0 (the k_proj
# bias gradient is exactly 0 in exact arithmetic: softmax ignores a per-query constant) turns fp32
# summation noise into a step of up to lr * |g| / (|g| + eps). eps = 1e-6 and lr = 1e-4 keep that
# below 1e-6 per step while real gradient elements (>= 1e-4) still take ~lr steps; a large weight
# decay keeps the decay term visible above the 1e-5 parameter tolerance.
LR, BETAS, EPS, WD = 1e-4, (0.9, 0.95), 1e-6, 1.0

torch.use_deterministic_algorithms(True)


def randomize(model, gen):
    # Larger than HF's 0.02 init so that attention and the norms are far from uniform.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))


def example_batch(gen, rows, T, V):
    tokens = torch.randint(0, V, (rows, T), generator=gen)
    targets = torch.full((rows, T), -1, dtype=torch.long)
    for r in range(rows):
        prompt = int(torch.randint(1, T // 2, (1,), generator=gen))
        targets[r, prompt - 1:T - 1] = tokens[r, prompt:]
    positions = torch.arange(T).repeat(rows, 1)
    seg_start = torch.zeros(rows, T, dtype=torch.long)
    return tokens, targets, positions, seg_start


def sum_loss(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=-1, reduction="sum")


def write_fixture(name, model, forward, batch, extra=None):
    """forward(model) -> (loss_sum, logits [rows*T, V]); batch: dict of I32 tensors."""
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    model.save_pretrained(os.path.join(d, "model"), safe_serialization=True)
    ntt = int((batch["targets"] >= 0).sum())

    params = dict(model.named_parameters())
    model.zero_grad()
    loss_sum, logits = forward(model)
    loss = loss_sum / ntt
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in params.items()}
    norm0 = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())).item()
    # Clipping must be active: half the initial norm.
    max_norm = float(f"{0.5 * norm0:.3g}")

    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    for step in range(STEPS):
        opt.zero_grad()
        ls, _ = forward(model)
        (ls / ntt).backward()
        n = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        print(f"  {name} step {step + 1}: loss {ls.item() / ntt:.6f} grad norm {n.item():.4f} (clip {max_norm})")
        opt.step()

    tensors = {k: v.to(torch.int32).contiguous() for k, v in batch.items()}
    tensors["logits"] = logits.detach().float().contiguous()
    tensors["loss"] = loss.detach().reshape(1).float()
    # HF's RoPE frequencies (a buffer, not in model.safetensors), for a direct check of the
    # llama3 scaling math independent of config parsing.
    tensors["rope_inv_freq"] = model.model.rotary_emb.inv_freq.detach().float().contiguous()
    for n, g in grads.items():
        tensors["grad." + n] = g.float().contiguous()
    for n, p in params.items():
        tensors["after." + n] = p.detach().float().contiguous()
    meta = {"num_target_tokens": ntt, "lr": LR, "beta1": BETAS[0], "beta2": BETAS[1], "eps": EPS,
            "weight_decay": WD, "max_grad_norm": max_norm, "steps": STEPS,
            "rope": {k: v for k, v in model.config.rope_parameters.items()},
            "head_dim": model.model.rotary_emb.inv_freq.numel() * 2}
    # One metadata key holding sorted JSON: safetensors stores metadata in a hash map, so
    # several keys would come out in a different order on every run.
    save_file(tensors, os.path.join(d, "expected.safetensors"),
              metadata={"fixture": json.dumps(meta, sort_keys=True)})
    size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(d) for f in fs)
    print(f"{name}: loss {loss.item():.6f}, {size / 1e3:.0f} kB")


def plain_fixture(name, model, rows, T, seed):
    gen = torch.Generator().manual_seed(seed)
    randomize(model, gen)
    V = model.config.vocab_size
    tokens, targets, positions, seg_start = example_batch(gen, rows, T, V)

    def forward(m):
        logits = m(input_ids=tokens).logits.reshape(rows * T, V)
        return sum_loss(logits, targets), logits

    write_fixture(name, model, forward, dict(tokens=tokens, targets=targets,
                                             positions=positions, seg_start=seg_start))


def packed_fixture(name, model, T, lengths, rows_layout, seed):
    """rows_layout: list of rows, each a list of example indices packed left to right."""
    gen = torch.Generator().manual_seed(seed)
    randomize(model, gen)
    V = model.config.vocab_size
    examples = []
    for n in lengths:
        x = torch.randint(1, V, (n,), generator=gen)
        prompt = int(torch.randint(1, n - 1, (1,), generator=gen))
        y = torch.full((n,), -1, dtype=torch.long)
        y[prompt - 1:n - 1] = x[prompt:]
        examples.append((x, y))

    def layout(rows):
        R = len(rows)
        tok = torch.zeros(R, T, dtype=torch.long)
        tgt = torch.full((R, T), -1, dtype=torch.long)
        pos = torch.zeros(R, T, dtype=torch.long)
        seg = torch.arange(T).repeat(R, 1)  # padding: own column, position 0
        where = []  # (example, row, column)
        for r, exs in enumerate(rows):
            c = 0
            for e in exs:
                x, y = examples[e]
                n = len(x)
                tok[r, c:c + n] = x
                tgt[r, c:c + n] = y
                pos[r, c:c + n] = torch.arange(n)
                seg[r, c:c + n] = c
                where.append((e, r, c))
                c += n
            assert c <= T
        return tok, tgt, pos, seg, where

    tok, tgt, pos, seg, where = layout(rows_layout)
    utok, utgt, upos, useg, _ = layout([[e] for e in range(len(examples))])
    R = len(rows_layout)

    def forward(m):
        # HF on each example alone; padding slots get the logits of token 0 alone.
        total = 0.0
        logits = m(input_ids=torch.zeros(1, 1, dtype=torch.long)).logits[0, 0].repeat(R * T, 1)
        for e, r, c in where:
            x, y = examples[e]
            le = m(input_ids=x[None]).logits[0]
            total = total + sum_loss(le, y)
            idx = torch.arange(r * T + c, r * T + c + len(x))
            logits = logits.index_copy(0, idx, le)
        return total, logits

    write_fixture(name, model, forward,
                  dict(tokens=tok, targets=tgt, positions=pos, seg_start=seg,
                       unpacked_tokens=utok, unpacked_targets=utgt, unpacked_positions=upos,
                       unpacked_seg_start=useg))


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    common = dict(rms_norm_eps=1e-5, attn_implementation="eager")

    # (a) GQA 8 query heads / 2 kv heads, odd hidden size 72, intermediate 200.
    cfg = LlamaConfig(vocab_size=64, hidden_size=72, intermediate_size=200, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2, head_dim=16,
                      max_position_embeddings=64, rope_theta=10000.0, tie_word_embeddings=False,
                      **common)
    plain_fixture("gqa", LlamaForCausalLM(cfg), rows=2, T=12, seed=1)

    # (b) tied embeddings + llama3 rope scaling with all three frequency bands present
    # (D=16, theta 10000: wavelengths 6.3 ... 19869; original context 64 -> bands at 16 and 64).
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                      max_position_embeddings=512, tie_word_embeddings=True,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 64},
                      **common)
    plain_fixture("tied_llama3", LlamaForCausalLM(cfg), rows=2, T=40, seed=2)

    # (c) Qwen2: q/k/v biases.
    cfg = Qwen2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      rope_theta=1000000.0, tie_word_embeddings=False, use_sliding_window=False,
                      **common)
    plain_fixture("qwen2_bias", Qwen2ForCausalLM(cfg), rows=2, T=12, seed=3)

    # (d) packed rows: 5 examples in 2 rows of 16 (row 1 ends with a padding slot).
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=False, **common)
    packed_fixture("packed", LlamaForCausalLM(cfg), T=16, lengths=[5, 7, 4, 9, 6],
                   rows_layout=[[0, 1, 2], [3, 4]], seed=4)


if __name__ == "__main__":
    main()
