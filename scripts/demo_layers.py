#!/usr/bin/env python3
"""The demo's "Where the facts are stored" part (scripts/demo.py stages, scripts/demo_report.py section).

Stages (./analyze_layers, on D_A's shard, so the prompts are the exact training tokens; one pair per
seed, built by scripts/demo.py's build_layers with add_analysis):
  layers-stage1   the logit lens on every stage-1 checkpoint, and the layer-swap profile of each
                  against the base model (which layers the stage-1 facts depend on);
  layers-stage2   the logit lens on the stage-2 checkpoints at the main learning rate.
Report section: the lens curves and l* histograms (charts drawn by analyze_layers with gnuplot), a
table of mean l* and its entropy with bootstrap intervals, the swap profiles, and a statement derived
from the numbers: for each mix, whether its facts sit at earlier/later layers than without mixing
(paired bootstrap interval of the difference in mean l* excludes 0) and whether they are spread over
more/fewer layers (the same for the entropy of l*).
Python 3 standard library only.
"""
import json
import math
import os
import random

BOOTSTRAP = 2000
SEED = 0


def final(d, stage):
    return d.path(stage, "run", "final")


def add_analysis(d, Stage, name, title, models, data_stage, reference=None, est_seconds=5):
    """One ./analyze_layers stage: models = {mix: stage name}, on data_stage's D_A shard (exact training
    prompts), with layer swaps against the reference stage's checkpoint when given."""
    cmd = ["./analyze_layers"] + [x for st in models.values() for x in ("--model", final(d, st))]
    cmd += ["--data", d.path(data_stage, "data.bin"), "--out", d.path(name), "--max-new-tokens", "16",
            "--batch-size", "16", "--quiet"]
    if reference:
        cmd += ["--reference", final(d, reference)]
    d.add(Stage(name, title, [cmd], [d.path(name, "metrics.json")],
                deps=list(models.values()) + [data_stage] + ([reference] if reference else []),
                tools=["analyze_layers"], est_seconds=est_seconds))
    return {"stage": name, "models": {mix: final(d, st) for mix, st in models.items()}}


# -- statistics -------------------------------------------------------------------------------------

def mean_l_star(ls):
    stored = [x for x in ls if x >= 0]
    return sum(stored) / len(stored) if stored else float("nan")


def entropy_bits(ls):
    stored = [x for x in ls if x >= 0]
    if not stored:
        return float("nan")
    counts = {}
    for x in stored:
        counts[x] = counts.get(x, 0) + 1
    return 0.0 - sum(c / len(stored) * math.log2(c / len(stored)) for c in counts.values())  # 0.0 - : no -0.0


def interval(values):
    v = sorted(x for x in values if not math.isnan(x))
    if len(v) < BOOTSTRAP // 2:  # most resamples had no stored fact: no interval
        return None
    return v[int(0.025 * (len(v) - 1))], v[int(0.975 * (len(v) - 1))]


def bootstrap(stat, *per_fact):
    """95% percentile interval of stat(*resampled lists), resampling facts (paired across lists)."""
    rng = random.Random(SEED)
    n = len(per_fact[0])
    out = []
    for _ in range(BOOTSTRAP):
        idx = [rng.randrange(n) for _ in range(n)]
        out.append(stat(*[[ls[i] for i in idx] for ls in per_fact]))
    return interval(out)


def fmt(x, nd=2):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def fmt_iv(iv, nd=2):
    return "—" if iv is None else f"[{iv[0]:.{nd}f}, {iv[1]:.{nd}f}]"


def fmt_with_iv(x, iv):
    return "—" if math.isnan(x) else f"{fmt(x)} {fmt_iv(iv)}"


def compare(ls_mix, ls_none):
    """Differences mix - none of mean l* and of its entropy, with paired bootstrap intervals, and what
    they say: a shift is claimed only when the interval excludes 0."""
    d_mean = mean_l_star(ls_mix) - mean_l_star(ls_none)
    d_ent = entropy_bits(ls_mix) - entropy_bits(ls_none)
    iv_mean = bootstrap(lambda a, b: mean_l_star(a) - mean_l_star(b), ls_mix, ls_none)
    iv_ent = bootstrap(lambda a, b: entropy_bits(a) - entropy_bits(b), ls_mix, ls_none)

    def verdict(iv, below, above, neither):
        if iv is None:
            return "untestable"
        return below if iv[1] < 0 else above if iv[0] > 0 else neither
    return {"d_mean": d_mean, "iv_mean": iv_mean, "d_entropy": d_ent, "iv_entropy": iv_ent,
            "position": verdict(iv_mean, "earlier", "later", "no clear shift"),
            "spread": verdict(iv_ent, "narrower", "wider", "no clear change")}


def sentence(label, c, m_mix, m_none, e_mix, e_none, n_mix, n_none, n):
    if n_mix == 0 or n_none == 0:
        return (f"Stage-1 mix {label}: no comparison is possible, because l* is defined for {n_mix} of its {n} facts "
                f"and for {n_none} of the unmixed run's (a fact has an l* only when its gold token is top-1 at the "
                f"last layer).")
    pos = {"earlier": "**moved the facts to earlier layers**", "later": "**moved the facts to later layers**",
           "no clear shift": "did not clearly move the facts", "untestable": "cannot be compared on position"}[c["position"]]
    spr = {"wider": "**spread them over more layers**", "narrower": "**concentrated them on fewer layers**",
           "no clear change": "did not clearly change their spread", "untestable": "cannot be compared on spread"}[c["spread"]]
    return (f"Stage-1 mix {label} {pos} (mean l* {fmt(m_mix)} vs {fmt(m_none)} without mixing, difference "
            f"{fmt(c['d_mean'])}, 95% interval {fmt_iv(c['iv_mean'])}) and {spr} (l* entropy {fmt(e_mix)} vs "
            f"{fmt(e_none)} bits, difference {fmt(c['d_entropy'])}, 95% interval {fmt_iv(c['iv_entropy'])}).")


# -- report section ---------------------------------------------------------------------------------

def _no_nan(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _no_nan(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_no_nan(v) for v in x]
    return x


def report_section(repo, out, analyses, mix_order, mix_label):
    """The markdown section; also writes OUT/layers.json with every number it shows and its source.
    analyses: from add_analysis (several with the same "when", e.g. one per seed, are pooled: their
    facts are concatenated in the same order for every mix, so the comparisons stay paired)."""
    metrics = {}
    for a in analyses:
        path = os.path.join(out, a["stage"], "metrics.json")
        with open(os.path.join(repo, path), encoding="utf-8") as f:
            metrics[a["stage"]] = (json.load(f), path)
    L = next(iter(metrics.values()))[0]["layers"]
    whens = []
    for a in analyses:
        if a["when"] not in whens:
            whens.append(a["when"])
    # per (mix, when): l* of every fact, pooled over analyses; and whether each fact was stored
    pooled, top1_last, facts = {}, {}, {}
    for a in analyses:
        m, _ = metrics[a["stage"]]
        by_model = {x["model"]: x for x in m["models"]}
        for mix, path in a["models"].items():
            x = by_model[path]
            key = (mix, a["when"])
            pooled.setdefault(key, []).extend(x["l_star"]["per_fact"])
            top1_last.setdefault(key, []).append((x["lens"]["top1_first"][L], x["num_facts"]))
    record = {"sources": [p for _, p in metrics.values()], "layers": L, "checkpoints": [], "comparisons": []}
    rows = []
    for mix in mix_order:
        for when in whens:
            ls = pooled.get((mix, when))
            if ls is None:
                continue
            t = top1_last[(mix, when)]
            entry = {"mix": mix, "when": when, "top1_last": sum(v * n for v, n in t) / sum(n for _, n in t),
                     "mean_l_star": mean_l_star(ls), "mean_iv": bootstrap(mean_l_star, ls),
                     "entropy_bits": entropy_bits(ls), "entropy_iv": bootstrap(entropy_bits, ls),
                     "never": sum(1 for v in ls if v < 0), "facts": len(ls)}
            record["checkpoints"].append(entry)
            rows.append(f"| {mix_label[mix]} | {when} | {fmt(entry['top1_last'])} "
                        f"| {fmt_with_iv(entry['mean_l_star'], entry['mean_iv'])} "
                        f"| {fmt_with_iv(entry['entropy_bits'], entry['entropy_iv'])} | {entry['never']}/{entry['facts']} |")

    # The statement: each mix against no mixing, on the first checkpoints (after stage 1).
    statements = []
    first = whens[0]
    ls_none = pooled.get(("none", first))
    if ls_none is None:
        statements.append("The grid has no unmixed run, so there is nothing to compare the mixes with.")
    else:
        stored = lambda x: sum(1 for v in x if v >= 0)
        for mix in mix_order:
            ls = pooled.get((mix, first))
            if mix == "none" or ls is None:
                continue
            c = compare(ls, ls_none)
            c["mix"] = mix
            record["comparisons"].append(c)
            statements.append(sentence(mix_label[mix], c, mean_l_star(ls), mean_l_star(ls_none), entropy_bits(ls),
                                       entropy_bits(ls_none), stored(ls), stored(ls_none), len(ls)))
        if not record["comparisons"]:
            statements.append("The grid has no mixed run, so there is nothing to compare.")

    swap_lines, swap_imgs, ref_acc = [], [], None
    for a in analyses:
        m, _ = metrics[a["stage"]]
        mix_of = {path: mix for mix, path in a["models"].items()}
        for i, x in enumerate(m["models"]):
            sw = x.get("swap")
            if not sw:
                continue
            ref_acc = sw["reference_accuracy"]
            by = {(r["part"], r["layer"]): r["accuracy"] for r in sw["rows"]}
            cells = " | ".join(f"{fmt(by.get(('attention', l)))} / {fmt(by.get(('mlp', l)))} / {fmt(by.get(('block', l)))}"
                               for l in range(L))
            mix = mix_of.get(x["model"], "?")
            swap_lines.append(f"| {mix_label.get(mix, mix)} ({a['stage']}) | {fmt(sw['accuracy'])} | {cells} | "
                              f"{fmt(by.get(('cumulative', L - 1)))} |")
            if f"swap_{i}.png" in m.get("charts", []):
                swap_imgs.append(f"![swap profile, {mix_label.get(mix, mix)}]({a['stage']}/swap_{i}.png)")
    swap_head = ("| stage-1 mix | unswapped | " + " | ".join(f"layer {l}: attn / MLP / block" for l in range(L))
                 + " | all blocks |\n|" + " --- |" * (L + 3))
    charts = []
    for a in analyses:
        m, _ = metrics[a["stage"]]
        for name, alt in (("lens.png", "lens curves"), ("l_star.png", "l* histograms")):
            charts.append(f"![{alt}, {a['when']}]({a['stage']}/{name})" if name in m.get("charts", [])
                          else f"({alt}, {a['when']}: no chart, gnuplot missing)")

    record["statements"] = statements
    with open(os.path.join(repo, out, "layers.json"), "w", encoding="utf-8") as f:
        json.dump(_no_nan(record), f, indent=1)  # NaN (no fact with an l*) is not JSON: null
    n_facts = len(next(iter(pooled.values())))

    return f"""## Where the facts are stored

`./analyze_layers` (docs/analysis.md) reads the model's final norm and LM head off the residual stream at
every layer boundary (0 = embeddings, {L} = after the last block) at the position that predicts each D_A
answer token (the logit lens). l* of a fact is the first boundary from which its gold first answer token
stays top-1 through the last one. Intervals are 95% bootstrap intervals over the {n_facts} facts
({BOOTSTRAP} resamples); mean l* and entropy are over the facts that have an l* ("never": not top-1 at the
last layer).

| stage-1 mix | checkpoint | top-1 at last layer | mean l* [95%] | l* entropy, bits [95%] | never |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

{chr(10).join(charts)}

**Layer swaps** (exact-match accuracy on D_A after replacing one layer's attention, MLP or whole block
of the stage-1 checkpoint by the base model's; "all blocks" swaps every block; the base model itself scores
{fmt(ref_acc)}):

{swap_head}
{chr(10).join(swap_lines)}

{' '.join(swap_imgs)}

{chr(10).join('- ' + s for s in statements)}

(Numbers from {', '.join('`' + p + '`' for _, p in metrics.values())}; the intervals and statements are
recorded in `{out}/layers.json`.)

"""
