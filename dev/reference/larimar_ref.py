"""A float64 PyTorch Llama written out op by op, for the Larimar references (gen_larimar_model.py):
the same math as transformers' LlamaForCausalLM (checked against it there), plus what Larimar
needs and HF's forward does not expose: an arbitrary attention mask (a bidirectional encoder), one
extra key/value slot per layer in front of the text (memory conditioning), and a vector added to
every token embedding. Parameters are a dict of HF names -> float64 tensors."""
import torch
import torch.nn.functional as F


def rope_inv_freq(theta, D):
    return 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))


def rope(x, positions, inv_freq):
    """x [rows, T, heads, D], positions [rows, T]: HF's rotate_half convention."""
    freqs = positions.to(torch.float64)[..., None] * inv_freq  # [rows, T, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)[:, :, None, :]
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return x * emb.cos() + torch.cat([-x2, x1], dim=-1) * emb.sin()


def rmsnorm(x, w, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def hidden(P, cfg, tokens, positions, allowed, prefix_kv=None, embed_add=None):
    """The final norm's output [rows, T, C].
    allowed [rows, T, Tk] bool: query t may attend key j (Tk = T, or T + 1 with prefix_kv, whose
    key 0 is the slot); prefix_kv: list over layers of [rows, KV*D], used as key and value of the
    slot (no RoPE: the slot sits at position 0, where RoPE is the identity); embed_add [rows, C]."""
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    C = cfg["hidden_size"]
    D = cfg.get("head_dim") or C // H
    eps = cfg["rms_norm_eps"]
    theta = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
    inv = rope_inv_freq(theta, D)
    rows, T = tokens.shape
    h = P["model.embed_tokens.weight"][tokens]
    if embed_add is not None:
        h = h + embed_add[:, None, :]
    for l in range(cfg["num_hidden_layers"]):
        pre = f"model.layers.{l}."
        x = rmsnorm(h, P[pre + "input_layernorm.weight"], eps)
        q = (x @ P[pre + "self_attn.q_proj.weight"].T).view(rows, T, H, D)
        k = (x @ P[pre + "self_attn.k_proj.weight"].T).view(rows, T, KV, D)
        v = (x @ P[pre + "self_attn.v_proj.weight"].T).view(rows, T, KV, D)
        q, k = rope(q, positions, inv), rope(k, positions, inv)
        if prefix_kv is not None:
            m = prefix_kv[l].view(rows, 1, KV, D)
            k, v = torch.cat([m, k], dim=1), torch.cat([m, v], dim=1)
        k = k.repeat_interleave(H // KV, dim=2)
        v = v.repeat_interleave(H // KV, dim=2)
        s = torch.einsum("rthd,rjhd->rhtj", q, k) / D ** 0.5
        s = s.masked_fill(~allowed[:, None, :, :], float("-inf"))
        o = torch.einsum("rhtj,rjhd->rthd", torch.softmax(s, dim=-1), v).reshape(rows, T, H * D)
        h = h + o @ P[pre + "self_attn.o_proj.weight"].T
        x = rmsnorm(h, P[pre + "post_attention_layernorm.weight"], eps)
        g = x @ P[pre + "mlp.gate_proj.weight"].T
        u = x @ P[pre + "mlp.up_proj.weight"].T
        h = h + (F.silu(g) * u) @ P[pre + "mlp.down_proj.weight"].T
    return rmsnorm(h, P["model.norm.weight"], eps)


def lm_head(P):
    return P["lm_head.weight"] if "lm_head.weight" in P else P["model.embed_tokens.weight"]


def causal_mask(rows, T, prefix=False):
    m = torch.tril(torch.ones(T, T, dtype=torch.bool))
    if prefix:
        m = torch.cat([torch.ones(T, 1, dtype=torch.bool), m], dim=1)
    return m.expand(rows, *m.shape)


def bidirectional_mask(lengths, T):
    """Real tokens attend to every real token of their row; padding to itself only."""
    rows = len(lengths)
    m = torch.zeros(rows, T, T, dtype=torch.bool)
    for r, n in enumerate(lengths):
        m[r, :n, :n] = True
        for t in range(n, T):
            m[r, t, t] = True
    return m
