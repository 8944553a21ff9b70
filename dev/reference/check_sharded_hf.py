"""Interop check of sharded checkpoints: train_llama's model-0000i-of-0000N.safetensors files and
model.safetensors.index.json load in transformers as the same model as one model.safetensors.

    python3 dev/reference/check_sharded_hf.py [--train-llama ./train_llama] [--prepare-data ./prepare_data]

Trains a tiny Llama (test/fixtures/tokenizer/ours.json, 16 kvr facts) for 2 steps with
--max-shard-size 1MB (4 weight files), then resumes that checkpoint for 0 more steps with the
default 5GB (one model.safetensors) so that both directories hold the same weights. Checks:
- the index against the files with the safetensors package: every tensor of weight_map is in the
  file it names and every tensor of every file is in weight_map; metadata.total_size is the sum of
  the tensors' bytes; each file's tensors, read by safetensors, equal the single file's;
- AutoModelForCausalLM.from_pretrained loads both with no missing or unexpected keys, the same
  state_dict bit for bit, and the same logits on a batch of token ids.
Exits 1 on any difference.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 3008, "hidden_size": 128,
        "intermediate_size": 200, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "initializer_range": 0.02, "bos_token_id": 0, "eos_token_id": 1}
TOKENIZER = "test/fixtures/tokenizer/ours.json"


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")


def check_index(d, errors):
    index = json.load(open(os.path.join(d, "model.safetensors.index.json")))
    weight_map = index["weight_map"]
    total, seen = 0, {}
    for fn in sorted(set(weight_map.values())):
        with safe_open(os.path.join(d, fn), framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                total += t.numel() * t.element_size()
                seen[name] = fn
    for name, fn in weight_map.items():
        if seen.get(name) != fn:
            errors.append(f"{d}: weight_map puts {name} in {fn}, found in {seen.get(name)}")
    for name in seen:
        if name not in weight_map:
            errors.append(f"{d}: {name} of {seen[name]} is not in weight_map")
    if index["metadata"]["total_size"] != total:
        errors.append(f"{d}: metadata.total_size {index['metadata']['total_size']} != {total} bytes of tensors")
    return seen


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-llama", default="./train_llama")
    ap.add_argument("--prepare-data", default="./prepare_data")
    args = ap.parse_args()
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "tiny.json")
        json.dump(TINY, open(cfg, "w"))
        data = os.path.join(tmp, "kvr.bin")
        run([args.prepare_data, "--mode", "kvr", "--num", "16", "--seed", "1", "--tokenizer", TOKENIZER,
             "--output", data, "--quiet"])
        run([args.train_llama, "--init", cfg, "--tokenizer", TOKENIZER, "--data", data, "--steps", "2",
             "--batch-size", "8", "--seq-len", "48", "--lr", "1e-3", "--threads", "1", "--max-shard-size", "1MB",
             "--out", os.path.join(tmp, "sharded")])
        sharded = os.path.join(tmp, "sharded", "final")
        run([args.train_llama, "--resume", sharded, "--steps", "2", "--max-shard-size", "5GB",
             "--out", os.path.join(tmp, "whole")])
        whole = os.path.join(tmp, "whole", "final")
        files = sorted(f for f in os.listdir(sharded) if f.startswith("model-"))
        if len(files) < 2 or os.path.exists(os.path.join(sharded, "model.safetensors")):
            errors.append(f"{sharded}: expected several model-*.safetensors files, found {files}")
        seen = check_index(sharded, errors)
        with safe_open(os.path.join(whole, "model.safetensors"), framework="pt") as w:
            for name, fn in seen.items():
                with safe_open(os.path.join(sharded, fn), framework="pt") as f:
                    if not torch.equal(f.get_tensor(name), w.get_tensor(name)):
                        errors.append(f"{name}: {fn} differs from the single model.safetensors")
            if set(w.keys()) != set(seen):
                errors.append("the sharded files and the single file hold different tensor names")

        models = []
        for d in (sharded, whole):
            m, info = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, output_loading_info=True)
            for k in ("missing_keys", "unexpected_keys", "mismatched_keys"):
                if info.get(k):
                    errors.append(f"{d}: from_pretrained {k}: {info[k]}")
            models.append(m.eval())
        sa, sb = models[0].state_dict(), models[1].state_dict()
        for name in sa:
            if not torch.equal(sa[name], sb[name]):
                errors.append(f"state_dict {name} differs between the sharded and the single-file checkpoint")
        ids = torch.randint(0, TINY["vocab_size"], (2, 24), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            la, lb = models[0](ids).logits, models[1](ids).logits
        if not torch.equal(la, lb):
            errors.append(f"logits differ: max |diff| {float((la - lb).abs().max())}")
        print(f"sharded checkpoint: {len(files)} files, {len(seen)} tensors; transformers loads it as the single "
              f"file, logits {tuple(la.shape)} identical" if not errors else "\n".join(errors))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
