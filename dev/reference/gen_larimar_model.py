#!/usr/bin/env python3
"""Reference results for Larimar's models (larimar/encoder.h; test/test_larimar_model.cpp), from
the float64 PyTorch Llama of larimar_ref.py, itself checked here against transformers'
LlamaForCausalLM (causal logits within 1e-10).

Writes test/fixtures/larimar/encoder/:
  model/config.json        a Llama config.json plus "larimar_code_size"
  model/model.safetensors  the Llama tensors (F32) plus larimar.encoder_proj.{weight,bias}
  expected.safetensors
    tokens I32 [rows, T] (right-padded with 0), lengths I32 [rows]
    z F32 [rows, Cz]                        the codes
    dz F32 [rows, Cz]                       a fixed random dL/dz; the loss is sum(z * dz)
    grad.<name> F32                         dL/d<every encoder tensor>
The reference runs in float64 on the F32 values the engine loads."""
import json
import os
import shutil

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

import larimar_ref as ref

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "test", "fixtures", "larimar")

torch.use_deterministic_algorithms(True)


def tiny_llama(gen, **kw):
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      rms_norm_eps=1e-5, rope_theta=10000.0, **kw)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    with torch.no_grad():  # larger than HF's init so attention and the norms are far from uniform
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))
    return model


def params64(model):
    P = {n: p.detach().to(torch.float64).clone() for n, p in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        P.pop("lm_head.weight", None)  # the embedding serves as the head
    return P


def check_against_hf(model, gen):
    """larimar_ref.hidden with a causal mask gives HF's logits. Even a float64 transformers model
    computes its RMSNorm and RoPE tables in float32, so the two agree to float32 rounding (~1e-6 on
    these logits of size ~10), not to float64's; a wrong convention would differ by ~1."""
    m64 = LlamaForCausalLM(model.config).to(torch.float64)
    m64.load_state_dict(model.state_dict())
    rows, T = 2, 7
    tokens = torch.randint(0, model.config.vocab_size, (rows, T), generator=gen)
    with torch.no_grad():
        want = m64(tokens).logits
    P = params64(model)
    cfg = model.config.to_dict()
    got = ref.hidden(P, cfg, tokens, torch.arange(T).repeat(rows, 1), ref.causal_mask(rows, T)) @ ref.lm_head(P).T
    err = (got - want).abs().max().item()
    assert err < 1e-5, f"larimar_ref differs from transformers by {err}"


def save_model_dir(d, model, extra_config, extra_tensors):
    model.save_pretrained(d, safe_serialization=True)
    os.remove(os.path.join(d, "generation_config.json"))
    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    c.update(extra_config)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
    tensors = {n: p.detach().contiguous() for n, p in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    tensors.update({n: t.to(torch.float32).contiguous() for n, t in extra_tensors.items()})
    save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})


def encoder_fixture(gen):
    Cz = 16
    model = tiny_llama(gen, tie_word_embeddings=True)
    check_against_hf(model, gen)
    C = model.config.hidden_size
    proj_w = (0.2 * torch.randn(Cz, C, generator=gen)).to(torch.float32)
    proj_b = (0.1 * torch.randn(Cz, generator=gen)).to(torch.float32)
    d = os.path.join(OUT, "encoder")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    save_model_dir(os.path.join(d, "model"), model, {"larimar_code_size": Cz},
                   {"larimar.encoder_proj.weight": proj_w, "larimar.encoder_proj.bias": proj_b})

    lengths = [7, 3, 9]
    rows, T = len(lengths), max(lengths)
    tokens = torch.zeros(rows, T, dtype=torch.long)
    for r, n in enumerate(lengths):
        tokens[r, :n] = torch.randint(0, model.config.vocab_size, (n,), generator=gen)
    P = params64(model)
    P["larimar.encoder_proj.weight"] = proj_w.to(torch.float64)
    P["larimar.encoder_proj.bias"] = proj_b.to(torch.float64)
    for t in P.values():
        t.requires_grad_(True)
    h = ref.hidden(P, model.config.to_dict(), tokens, torch.arange(T).repeat(rows, 1),
                   ref.bidirectional_mask(lengths, T))
    pooled = torch.stack([h[r, :n].mean(0) for r, n in enumerate(lengths)])
    z = pooled @ P["larimar.encoder_proj.weight"].T + P["larimar.encoder_proj.bias"]
    dz = torch.randn(rows, Cz, generator=gen).to(torch.float64)  # F32 values, as stored
    (z * dz).sum().backward()
    out = {"tokens": tokens.to(torch.int32), "lengths": torch.tensor(lengths, dtype=torch.int32),
           "z": z.detach().to(torch.float32), "dz": dz.to(torch.float32)}
    for n, p in P.items():
        out["grad." + n] = p.grad.to(torch.float32).contiguous()
    save_file(out, os.path.join(d, "expected.safetensors"))


def conditioned_mask(lengths, T):
    """Keys [slot, token 0..T-1]: a real token t sees the slot and tokens <= t; padding itself."""
    rows = len(lengths)
    m = torch.zeros(rows, T, T + 1, dtype=torch.bool)
    for r, n in enumerate(lengths):
        for t in range(T):
            if t < n:
                m[r, t, : t + 2] = True
            else:
                m[r, t, t + 1] = True
    return m


def conditioned_logits(P, cfg, tokens, lengths, slot, embed):
    rows, T = tokens.shape
    L = cfg["num_hidden_layers"]
    positions = torch.zeros(rows, T, dtype=torch.long)
    for r, n in enumerate(lengths):
        positions[r, :n] = torch.arange(n)
    h = ref.hidden(P, cfg, tokens, positions + 1, conditioned_mask(lengths, T),
                   prefix_kv=[slot[:, l] for l in range(L)], embed_add=embed)
    return h @ ref.lm_head(P).T, positions


def decoder_fixture(gen):
    """A decoder conditioned on given slot and embedding vectors: logits, loss, every gradient
    (parameters, slot, embedding), and greedy decoding."""
    model = tiny_llama(gen, tie_word_embeddings=False)
    cfg = model.config.to_dict()
    d = os.path.join(OUT, "decoder")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    save_model_dir(os.path.join(d, "model"), model, {}, {})
    L, C, V = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]
    KVD = cfg["num_key_value_heads"] * (cfg.get("head_dim") or C // cfg["num_attention_heads"])
    lengths = [6, 4]
    rows, T = len(lengths), max(lengths)
    tokens = torch.zeros(rows, T, dtype=torch.long)
    targets = torch.full((rows, T), -1, dtype=torch.long)
    seg_start = torch.zeros(rows, T, dtype=torch.long)
    for r, n in enumerate(lengths):
        tokens[r, :n] = torch.randint(0, V, (n,), generator=gen)
        targets[r, 1: n - 1] = tokens[r, 2:n]  # the first token is a prompt
        seg_start[r, n:] = torch.arange(n, T)
    slot = (0.5 * torch.randn(rows, L, KVD, generator=gen)).to(torch.float64)
    embed = (0.3 * torch.randn(rows, C, generator=gen)).to(torch.float64)
    P = params64(model)
    for t in list(P.values()) + [slot, embed]:
        t.requires_grad_(True)
    logits, positions = conditioned_logits(P, cfg, tokens, lengths, slot, embed)
    ntt = int((targets >= 0).sum())
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1, reduction="sum") / ntt
    loss.backward()
    out = {"tokens": tokens, "targets": targets, "positions": positions, "seg_start": seg_start}
    out = {k: v.to(torch.int32).contiguous() for k, v in out.items()}
    out.update({"slot": slot.detach().to(torch.float32), "embed": embed.detach().to(torch.float32),
                "logits": logits.detach().reshape(-1, V).to(torch.float32), "loss": loss.detach().reshape(1).float(),
                "grad.slot": slot.grad.float(), "grad.embed": embed.grad.float()})
    for n, p in P.items():
        out["grad." + n] = p.grad.to(torch.float32).contiguous()

    # Greedy decoding, conditioned, by recomputing the whole sequence at each step (no cache).
    prompts = [tokens[0, :3].tolist(), tokens[1, :2].tolist()]
    steps = 4
    greedy = []
    with torch.no_grad():
        for r, p in enumerate(prompts):
            seq = list(p)
            for _ in range(steps):
                lg, _ = conditioned_logits(P, cfg, torch.tensor([seq]), [len(seq)], slot[r: r + 1], embed[r: r + 1])
                seq.append(int(lg[0, -1].argmax()))
            greedy.append(seq[len(p):])
    plen = max(len(p) for p in prompts)
    out["prompt_tokens"] = torch.tensor([p + [0] * (plen - len(p)) for p in prompts], dtype=torch.int32)
    out["prompt_lengths"] = torch.tensor([len(p) for p in prompts], dtype=torch.int32)
    out["greedy"] = torch.tensor(greedy, dtype=torch.int32)
    save_file(out, os.path.join(d, "expected.safetensors"))


def pinv(a):
    return torch.linalg.pinv(a, rtol=1e-10)  # as larimar/pinv.h's exact route


def episode_fixture(gen):
    """The Larimar loss of one episode, CE(x|Z_r) + CE(x|Z) + CE(x|0) + beta KL, and every gradient."""
    K, Cz, beta = 8, 16, 0.5
    enc = tiny_llama(gen, tie_word_embeddings=True)
    dec = tiny_llama(gen, tie_word_embeddings=False)
    ce, cd = enc.config.to_dict(), dec.config.to_dict()
    C, L, V = cd["hidden_size"], cd["num_hidden_layers"], cd["vocab_size"]
    KVD = cd["num_key_value_heads"] * (cd.get("head_dim") or C // cd["num_attention_heads"])
    f32 = lambda t: t.to(torch.float32)  # the engine's values; the reference upcasts them
    host = {
        "larimar.encoder_proj.weight": f32(0.2 * torch.randn(Cz, ce["hidden_size"], generator=gen)),
        "larimar.encoder_proj.bias": f32(0.1 * torch.randn(Cz, generator=gen)),
        "larimar.M0": f32(0.5 * torch.randn(K, Cz, generator=gen)),
        "larimar.logvar.weight": f32(0.02 * torch.randn(K, K * Cz, generator=gen)),
        "larimar.logvar.bias": f32(-1.0 + 0.1 * torch.randn(K, generator=gen)),
        "larimar.slot.weight": f32(0.3 * torch.randn(L * KVD, Cz, generator=gen)),
        "larimar.embed.weight": f32(0.1 * torch.randn(C, Cz, generator=gen)),
    }
    d = os.path.join(OUT, "episode")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    proj = {k: v for k, v in host.items() if k.startswith("larimar.encoder_proj")}
    save_model_dir(os.path.join(d, "encoder"), enc, {"larimar_code_size": Cz}, proj)
    save_model_dir(os.path.join(d, "decoder"), dec, {}, {})
    save_file({k: v.contiguous() for k, v in host.items() if k not in proj}, os.path.join(d, "larimar.safetensors"))

    lengths = [6, 4, 5]
    N, T = len(lengths), max(lengths)
    tokens = torch.zeros(N, T, dtype=torch.long)
    for r, n in enumerate(lengths):
        tokens[r, :n] = torch.randint(0, V, (n,), generator=gen)
    eps = torch.randn(N, K, generator=gen).to(torch.float64)  # F32 values, as stored

    Pe, Pd = params64(enc), params64(dec)
    H = {k: v.to(torch.float64) for k, v in host.items()}
    for t in list(Pe.values()) + list(Pd.values()) + list(H.values()):
        t.requires_grad_(True)
    h = ref.hidden(Pe, ce, tokens, torch.arange(T).repeat(N, 1), ref.bidirectional_mask(lengths, T))
    pooled = torch.stack([h[r, :n].mean(0) for r, n in enumerate(lengths)])
    Z = pooled @ H["larimar.encoder_proj.weight"].T + H["larimar.encoder_proj.bias"]
    W0 = Z @ pinv(H["larimar.M0"])
    M = pinv(W0) @ Z
    logvar = H["larimar.logvar.weight"] @ M.reshape(-1) + H["larimar.logvar.bias"]
    Wbar = Z @ pinv(M)
    W = Wbar + torch.exp(0.5 * logvar) * eps
    Zr = W @ M
    kl = 0.5 * (Wbar.pow(2).sum() + N * (logvar.exp() - 1.0 - logvar).sum())
    codes = torch.cat([Zr, Z, torch.zeros_like(Z)])
    slot = (codes @ H["larimar.slot.weight"].T).view(3 * N, L, KVD)
    embed = codes @ H["larimar.embed.weight"].T
    tokens3, lengths3 = tokens.repeat(3, 1), lengths * 3
    logits, _ = conditioned_logits(Pd, cd, tokens3, lengths3, slot, embed)
    targets = torch.full((3 * N, T), -1, dtype=torch.long)
    for r, n in enumerate(lengths3):
        targets[r, : n - 1] = tokens3[r, 1:n]
    ntt = sum(n - 1 for n in lengths)
    cross = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1, reduction="sum") / ntt
    loss = cross + beta * kl
    # The three CE terms apart: CE(x | Z_r), CE(x | Z), CE(x | 0), each over the N texts' targets.
    rows = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1, reduction="none")
    parts = rows.detach().view(3, N * T).sum(1) / ntt
    loss.backward()
    out = {"tokens": tokens.to(torch.int32), "lengths": torch.tensor(lengths, dtype=torch.int32),
           "eps": eps.to(torch.float32), "beta": torch.tensor([beta], dtype=torch.float32),
           "loss": loss.detach().reshape(1).float(), "ce": cross.detach().reshape(1).float(),
           "ce_parts": parts.float(),
           "kl": kl.detach().reshape(1).float()}
    for prefix, P in (("enc.", Pe), ("dec.", Pd), ("", H)):
        for n, p in P.items():
            out["grad." + prefix + n] = p.grad.to(torch.float32).contiguous()
    save_file(out, os.path.join(d, "expected.safetensors"))


def main():
    gen = torch.Generator().manual_seed(15)
    encoder_fixture(gen)
    decoder_fixture(gen)
    episode_fixture(gen)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
