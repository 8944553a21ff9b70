#!/usr/bin/env python3
"""BERT encoder parity fixtures (test/test_model_bert.cpp), from torch + transformers.

test/fixtures/model/bert_tiny/
  model/               config.json + model.safetensors of a randomly initialised tiny BertModel
                       (seeded; weights drawn with a large spread and random LayerNorm affine
                       parameters, so that every op moves the output)
  expected.json        {"ids": the batch (lists of different lengths), "hidden": the last hidden
                       states of each sequence's real tokens, "embeddings": mean pooling over the
                       attention mask + L2 normalization}, from HF run in float64 on the batch
                       right-padded with an attention mask

test/fixtures/model/minilm_expected.json (only when `scripts/install_deps.sh --minilm` has put
the real all-MiniLM-L6-v2 in $MINILM_DIR; otherwise the committed file is kept):
  {"sentences", "ids" (HF tokenizer, [CLS] ... [SEP], truncated to max_seq_length),
   "embeddings" (fp32 transformers BertModel, mean pooling, normalize: the sentence-transformers
   pipeline of the package's modules.json)}
"""
import json
import os
import shutil
import sys

import torch
from transformers import BertConfig, BertModel

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "test", "fixtures", "model")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_tokenizer import minilm_dir  # noqa: E402

SENTENCES = [
    "The capital of France is Paris.",
    "What is the capital of France?",
    "Key 4821 maps to value aurora.",
    "What is the value of key 4821?",
    "Café crème, naïve façade — ÉLAN!",
    "北京是中国的首都。",
    "Ｆｕｌｌｗｉｄｔｈ and\ttabs\nand newlines",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "I don't think it's there; they're gone, aren't they?",
    "Who wrote the novel 'War and Peace'?",
    "x",
    " ".join(["a long sentence about facts and memory"] * 12),
]


def mean_pool_normalize(hidden, mask):
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


def tiny():
    torch.manual_seed(20261201)
    cfg = BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=40, type_vocab_size=2,
                     hidden_act="gelu", layer_norm_eps=1e-12, initializer_range=0.3)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn_like(p))
    d = os.path.join(OUT, "bert_tiny")
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(os.path.join(d, "model"), safe_serialization=True)
    g = torch.Generator().manual_seed(7)
    lengths = [7, 19, 3, 12]
    ids = [[int(x) for x in torch.randint(0, cfg.vocab_size, (n,), generator=g)] for n in lengths]
    T = max(lengths)
    batch = torch.zeros(len(ids), T, dtype=torch.long)
    mask = torch.zeros(len(ids), T, dtype=torch.long)
    for b, s in enumerate(ids):
        batch[b, :len(s)] = torch.tensor(s)
        mask[b, :len(s)] = 1
    m64 = model.double()
    with torch.no_grad():
        hidden = m64(input_ids=batch, attention_mask=mask).last_hidden_state
        emb = mean_pool_normalize(hidden, mask)
    out = {"ids": ids,
           "hidden": [hidden[b, :len(s)].flatten().tolist() for b, s in enumerate(ids)],
           "embeddings": emb.tolist()}
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(out, f)
    print(f"bert_tiny: {sum(p.numel() for p in model.parameters())} parameters, batch lengths {lengths}")


def minilm():
    d = minilm_dir()
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        print(f"minilm: skipped, {d} has no model.safetensors (scripts/install_deps.sh --minilm); "
              "the committed minilm_expected.json is kept")
        return
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    tok.no_padding()
    max_len = json.load(open(os.path.join(d, "sentence_bert_config.json")))["max_seq_length"]
    tok.enable_truncation(max_length=max_len)
    model = BertModel.from_pretrained(d, add_pooling_layer=False).eval().float()
    enc = tok.encode_batch(SENTENCES, add_special_tokens=True)
    ids = [e.ids for e in enc]
    T = max(len(s) for s in ids)
    batch = torch.zeros(len(ids), T, dtype=torch.long)
    mask = torch.zeros(len(ids), T, dtype=torch.long)
    for b, s in enumerate(ids):
        batch[b, :len(s)] = torch.tensor(s)
        mask[b, :len(s)] = 1
    with torch.no_grad():
        emb = mean_pool_normalize(model(input_ids=batch, attention_mask=mask).last_hidden_state, mask)
    with open(os.path.join(OUT, "minilm_expected.json"), "w", encoding="utf-8") as f:
        json.dump({"sentences": SENTENCES, "max_seq_length": max_len, "ids": ids, "embeddings": emb.tolist()},
                  f, ensure_ascii=False)
    print(f"minilm: {len(SENTENCES)} sentences, longest {T} tokens")


if __name__ == "__main__":
    tiny()
    minilm()
