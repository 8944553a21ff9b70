#!/usr/bin/env python3
"""The demo's "Where the facts are stored" part (scripts/demo.py stages, scripts/demo_report.py section).

Stages (./analyze_layers, on D_A's shard, so the prompts are the exact training tokens):
  layers-stage1   the logit lens on every stage-1 checkpoint, and the layer-swap profile of each
                  against the base model (which layers the stage-1 facts depend on);
  layers-stage2   the logit lens on one stage-2 checkpoint per stage-1 mix (the factoid D_B, stage-2
                  mix "none" when the grid has it).
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


def stage2_choice(p):
    """The stage-2 run analysed for each stage-1 mix: factoid D_B first, stage-2 mix 'none' first."""
    d_bs = sorted(p["d_b"], key=lambda b: b != "fr")
    out = {}
    for s1 in p["stage1"]:
        pairs = [(d_b, a, b) for d_b in d_bs for a, b in p["stage2"] if a == s1]
        pairs.sort(key=lambda x: (d_bs.index(x[0]), x[2] != "none"))
        if pairs:
            out[s1] = f"stage2-{pairs[0][0]}-from-{s1}-mix-{pairs[0][2]}"
    return out


def add_stages(d, p, Stage):
    """Adds the analysis stages to the driver; returns their names (the report depends on them)."""
    kvr = d.path("shards-kvr", "data.bin")
    common = ["--data", kvr, "--max-new-tokens", "16", "--batch-size", "16", "--quiet"]
    s1_models = [x for s1 in p["stage1"] for x in ("--model", d.path(f"stage1-{s1}", "run", "final"))]
    d.add(Stage("layers-stage1", "where the stage-1 facts are stored: logit lens, layer swaps against the base model",
                [["./analyze_layers"] + s1_models + ["--reference", d.path("base", "run", "final"),
                                                     "--out", d.path("layers-stage1")] + common],
                [d.path("layers-stage1", "metrics.json")],
                deps=[f"stage1-{s1}" for s1 in p["stage1"]] + ["base", "shards-kvr"], tools=["analyze_layers"],
                est_seconds=2 + 2 * len(p["stage1"]) * p["model"]["layers"]))
    runs = stage2_choice(p)
    s2_models = [x for s1 in p["stage1"] if s1 in runs for x in ("--model", d.path(runs[s1], "run", "final"))]
    d.add(Stage("layers-stage2", "where the stage-1 facts are after stage 2: logit lens",
                [["./analyze_layers"] + s2_models + ["--out", d.path("layers-stage2")] + common],
                [d.path("layers-stage2", "metrics.json")],
                deps=list(runs.values()) + ["shards-kvr"], tools=["analyze_layers"], est_seconds=3))
    return ["layers-stage1", "layers-stage2"]


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


def _models(repo, out, stage):
    path = os.path.join(repo, out, stage, "metrics.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f), os.path.join(out, stage, "metrics.json")


def report_section(repo, out, p, mix_label):
    """The markdown section; also writes OUT/layers.json with every number it shows and its source."""
    m1, src1 = _models(repo, out, "layers-stage1")
    m2, src2 = _models(repo, out, "layers-stage2")
    L = m1["layers"]
    runs = stage2_choice(p)
    by_model = {m["model"]: m for m in m1["models"] + m2["models"]}
    rows, record = [], {"sources": [src1, src2], "layers": L, "checkpoints": [], "comparisons": []}
    for s1 in p["stage1"]:
        for when, model in (("after stage 1", os.path.join(out, f"stage1-{s1}", "run", "final")),
                            ("after stage 2", os.path.join(out, runs.get(s1, "?"), "run", "final"))):
            m = by_model.get(model)
            if m is None:
                continue
            ls = m["l_star"]["per_fact"]
            entry = {"stage1_mix": s1, "when": when, "model": model, "top1_last": m["lens"]["top1_first"][L],
                     "mean_l_star": mean_l_star(ls), "mean_iv": bootstrap(mean_l_star, ls),
                     "entropy_bits": entropy_bits(ls), "entropy_iv": bootstrap(entropy_bits, ls),
                     "never": m["l_star"]["never"], "facts": m["num_facts"]}
            record["checkpoints"].append(entry)
            rows.append(f"| {mix_label[s1]} | {when} | {fmt(entry['top1_last'])} "
                        f"| {fmt_with_iv(entry['mean_l_star'], entry['mean_iv'])} "
                        f"| {fmt_with_iv(entry['entropy_bits'], entry['entropy_iv'])} | {entry['never']}/{entry['facts']} |")

    # The statement: each mix against no mixing, on the stage-1 checkpoints.
    stage1 = {s1: by_model.get(os.path.join(out, f"stage1-{s1}", "run", "final")) for s1 in p["stage1"]}
    statements = []
    if stage1.get("none") is None:
        statements.append("The grid has no unmixed stage-1 run, so there is nothing to compare the mixes with.")
    else:
        ls_none = stage1["none"]["l_star"]["per_fact"]
        for s1 in p["stage1"]:
            if s1 == "none" or stage1.get(s1) is None:
                continue
            ls = stage1[s1]["l_star"]["per_fact"]
            c = compare(ls, ls_none)
            c["stage1_mix"] = s1
            record["comparisons"].append(c)
            stored = lambda x: sum(1 for v in x if v >= 0)
            statements.append(sentence(mix_label[s1], c, mean_l_star(ls), mean_l_star(ls_none), entropy_bits(ls),
                                       entropy_bits(ls_none), stored(ls), stored(ls_none), len(ls)))
        if not record["comparisons"]:
            statements.append("The grid has no mixed stage-1 run, so there is nothing to compare.")

    swap_lines = []
    for i, m in enumerate(m1["models"]):
        sw = m.get("swap")
        if not sw:
            continue
        by = {(r["part"], r["layer"]): r["accuracy"] for r in sw["rows"]}
        cells = " | ".join(f"{fmt(by.get(('attention', l)))} / {fmt(by.get(('mlp', l)))} / {fmt(by.get(('block', l)))}"
                           for l in range(L))
        s1 = next((s for s in p["stage1"] if m["model"] == os.path.join(out, f"stage1-{s}", "run", "final")), "?")
        swap_lines.append(f"| {mix_label.get(s1, s1)} | {fmt(sw['accuracy'])} | {cells} | "
                          f"{fmt(by.get(('cumulative', L - 1)))} |")
    swap_head = ("| stage-1 mix | unswapped | " + " | ".join(f"layer {l}: attn / MLP / block" for l in range(L))
                 + " | all blocks |\n|" + " --- |" * (L + 3))
    base_acc = next((m["swap"]["reference_accuracy"] for m in m1["models"] if m.get("swap")), None)
    charts1, charts2 = m1.get("charts", []), m2.get("charts", [])
    img = lambda stage, name, charts, alt: f"![{alt}]({stage}/{name})" if name in charts else f"({alt}: no chart, gnuplot missing)"
    swap_imgs = " ".join(img("layers-stage1", c, charts1, "swap profile") for c in charts1 if c.startswith("swap_"))

    record["statements"] = statements
    with open(os.path.join(repo, out, "layers.json"), "w", encoding="utf-8") as f:
        json.dump(_no_nan(record), f, indent=1)  # NaN (no fact with an l*) is not JSON: null

    return f"""## Where the facts are stored

`./analyze_layers` (docs/analysis.md) reads the model's final norm and LM head off the residual stream at
every layer boundary (0 = embeddings, {L} = after the last block) at the position that predicts each D_A
answer token (the logit lens). l* of a fact is the first boundary from which its gold first answer token
stays top-1 through the last one. Intervals are 95% bootstrap intervals over the {p['num_facts']} facts
({BOOTSTRAP} resamples); mean l* and entropy are over the facts that have an l* ("never": not top-1 at the
last layer).

| stage-1 mix | checkpoint | top-1 at last layer | mean l* [95%] | l* entropy, bits [95%] | never |
| --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

After stage 1: {img('layers-stage1', 'lens.png', charts1, 'lens curves, stage 1')} {img('layers-stage1', 'l_star.png', charts1, 'l* histograms, stage 1')}

After stage 2: {img('layers-stage2', 'lens.png', charts2, 'lens curves, stage 2')} {img('layers-stage2', 'l_star.png', charts2, 'l* histograms, stage 2')}

**Layer swaps** (exact-match accuracy on D_A after replacing one layer's attention, MLP or whole block
of the stage-1 checkpoint by the base model's; "all blocks" swaps every block; the base model itself scores
{fmt(base_acc)}):

{swap_head}
{chr(10).join(swap_lines)}

{swap_imgs}

{chr(10).join('- ' + s for s in statements)}

(Numbers from `{src1}` and `{src2}`; the intervals and statements are recorded in `{out}/layers.json`.)

"""
