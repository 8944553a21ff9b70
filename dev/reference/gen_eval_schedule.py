"""Reference learning rates of the HF schedulers (the REMIX code trains with the HF Trainer), for
test/test_train_units.cpp: the lr used at each optimizer step for a few (total, warmup_ratio)
runs, with warmup steps computed as TrainingArguments does (ceil(total * ratio))."""
import json
import math
import os

import torch
from transformers import get_scheduler

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "test", "fixtures", "eval", "schedules.json")


def lrs(kind, total, ratio, base):
    warmup = math.ceil(total * ratio)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base)
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[kind]
    sched = get_scheduler(name, opt, num_warmup_steps=warmup, num_training_steps=total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def main():
    runs = []
    for kind in ["cosine", "linear", "constant"]:
        for total, ratio in [(100, 0.05), (37, 0.07), (10, 0.0), (1250, 0.05)]:
            runs.append({"kind": kind, "total": total, "warmup_ratio": ratio, "base_lr": 5e-5,
                         "lr": lrs(kind, total, ratio, 5e-5)})
    with open(OUT, "w") as f:
        json.dump(runs, f)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
