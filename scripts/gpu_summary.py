#!/usr/bin/env python3
"""Summary of scripts/gpu_remix.sh: means with 95% t-intervals over seeds and verdicts.

  python3 scripts/gpu_summary.py --out runs/gpu      # writes runs/gpu/summary.md and summary.json

Per run OUT/eval/<D_B>-from-<stage-1 mix>-mix-<stage-2 mix>-lr<rate>-s<seed>/{d_a,d_b}/metrics.json
(eval_factoids --score) gives D_A retention, gold log-prob and its change, top-1 share, first-token
rank and D_B accuracy; savings = 1 - steps to relearn D_A (OUT/relearn-<run>) / the step at which
stage 1 first reached 100% (its in-training evaluations), undefined when either never did.
Each setting is compared with the unmixed run (stage 1 none, stage 2 none) of the same D_B, rate
and seed; the verdict rule and the intervals are the demo's (scripts/demo_report.py).
"""
import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from demo_report import HIGHER_BETTER, fmt_agg, interval, read_json, verdict  # noqa: E402

RUN = re.compile(r"^(?P<d_b>.+?)-from-(?P<s1>.+)-mix-(?P<s2>.+)-lr(?P<lr>.+)-s(?P<seed>\d+)$")
FIELDS = [("da_s2", "d_a", 1, "accuracy"), ("lp_s2", "d_a", 1, "mean_answer_logprob"),
          ("lp_change", "d_a", 1, "answer_logprob_change"), ("top1_s2", "d_a", 1, "mean_answer_top1_share"),
          ("rank_s2", "d_a", 1, "median_first_token_rank"), ("db", "d_b", 0, "accuracy")]


def first_full_step(state):
    for e in state.get("evals", []):
        if e.get("accuracy") == 1.0:
            return e["step"]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="the output directory of scripts/gpu_remix.sh")
    a = ap.parse_args()
    eval_dir = os.path.join(a.out, "eval")
    if not os.path.isdir(eval_dir):
        sys.exit(f"error: {eval_dir}: no evaluations (run scripts/gpu_remix.sh first)")
    values = {}  # (d_b, s1, s2, lr) -> seed -> measure -> {"value", "source"}
    for run in sorted(os.listdir(eval_dir)):
        m = RUN.match(run)
        if not m:
            continue
        cfg, seed = (m["d_b"], m["s1"], m["s2"], m["lr"]), int(m["seed"])
        row = values.setdefault(cfg, {}).setdefault(seed, {})
        for key, sub, idx, field in FIELDS:
            path = os.path.join(eval_dir, run, sub, "metrics.json")
            if os.path.exists(path):
                row[key] = {"value": read_json(path)["models"][idx].get(field),
                            "source": f"{path}: models[{idx}].{field}"}
        s1_state = os.path.join(a.out, f"stage1-{m['s1']}-s{seed}", "final", "trainer_state.json")
        rl_state = os.path.join(a.out, f"relearn-{run}", "final", "trainer_state.json")
        if os.path.exists(s1_state) and os.path.exists(rl_state):
            s1, rl = first_full_step(read_json(s1_state)), read_json(rl_state)
            ok = s1 and rl.get("stop_reason") == "accuracy"
            row["savings"] = {"value": 1.0 - rl["step"] / s1 if ok else None,
                              "source": f"1 - {rl_state}: step / first step at 100% in {s1_state}: evals"}
    measures = [f[0] for f in FIELDS] + ["savings"]
    lines = ["# REMIX on GPU: summary over seeds", "",
             "Means ± 95% Student-t half-widths over seeds. Differences are paired by seed against the unmixed "
             "run (stage 1 none, stage 2 none) of the same D_B and stage-2 rate; \"mixing helped\" / \"mixing hurt\" "
             "when the interval of the difference excludes zero on the better / worse side, else \"no detectable "
             "difference\".", "",
             "| D_B | stage-1 mix | stage-2 mix | stage-2 lr | seeds | " + " | ".join(measures) + " |",
             "| --- | --- | --- | --- | --- |" + " --- |" * len(measures)]
    summary = {"runs": {}, "comparisons": []}
    for cfg in sorted(values):
        per_seed = values[cfg]
        cells = []
        for k in measures:
            xs = [per_seed[s][k]["value"] for s in sorted(per_seed) if k in per_seed[s]]
            ok = xs and all(x is not None for x in xs) and len(xs) == len(per_seed)
            mean, half = interval(xs) if ok else (None, None)
            cells.append(fmt_agg({"mean": mean, "half": half}, k) if ok else "—")
        summary["runs"]["|".join(cfg)] = per_seed
        lines.append(f"| {' | '.join(cfg)} | {len(per_seed)} | " + " | ".join(cells) + " |")
    lines += ["", "| D_B | stage-1 mix | stage-2 mix | stage-2 lr | measure | difference | verdict |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for cfg in sorted(values):
        base = values.get((cfg[0], "none", "none", cfg[3]))
        if base is None or cfg[1:3] == ("none", "none"):
            continue
        seeds = sorted(set(values[cfg]) & set(base))
        for k in measures:
            diffs = [values[cfg][s][k]["value"] - base[s][k]["value"] for s in seeds
                     if k in values[cfg][s] and k in base[s] and values[cfg][s][k]["value"] is not None
                     and base[s][k]["value"] is not None]
            if len(diffs) != len(seeds) or not diffs:
                continue
            mean, half = interval(diffs)
            v = "(context: D_B learned)" if k == "db" else verdict(mean, half, HIGHER_BETTER[k])
            summary["comparisons"].append({"config": cfg, "measure": k, "seeds": seeds, "diffs": diffs,
                                           "mean": mean, "half": half, "verdict": v})
            lines.append(f"| {' | '.join(cfg)} | {k} | {fmt_agg({'mean': mean, 'half': half}, k)} | {v} |")
    with open(os.path.join(a.out, "summary.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(a.out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    print(f"wrote {os.path.join(a.out, 'summary.md')} ({len(values)} configurations)")


if __name__ == "__main__":
    main()
