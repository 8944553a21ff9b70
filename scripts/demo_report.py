#!/usr/bin/env python3
"""Report of the demo experiment (scripts/demo.py): intervals over seeds, verdicts, charts, report.md.

Every per-seed number is read from the metrics.json that ./eval_factoids wrote or from the
trainer_state.json of a training run (never retyped), and results.json records the file and field
each came from. Everything else (savings, interpolated frontier points, means, intervals,
differences) is computed from those per-seed values, and results.json lists the inputs of each.
`python3 scripts/demo_report.py --check runs/demo` re-reads every source, recomputes every derived
number and checks that each number shown in report.md is the one in results.json.

Intervals: 95% Student-t intervals over seeds, mean +- t(0.975, n-1) x sd / sqrt(n). Comparisons
are paired by seed (a seed fixes the D_A set, the random words and the data order in both arms).
Python 3 standard library only; the charts are drawn by gnuplot (Debian gnuplot-nox).
"""
import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys

# t quantiles t(0.975, df) for df = 1..30 (standard tables); above 30 the normal 1.96 (within 2%).
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]

# The frontier comparison is made at one D_B accuracy, by a rule fixed before any result is seen:
# FRONTIER_CAP, or less when some swept setting never gets there in some seed: the lowest, over
# swept settings and seeds, of the highest D_B accuracy reached across the sweep (so that every
# curve reaches it; symmetric in the settings). Retention of D_A is interpolated, per seed and
# setting, where the sweep first reaches that accuracy.
FRONTIER_CAP = 0.5
RETENTION_TARGET = 0.5  # the main learning rate rule (see scripts/demo.py)

# Measures per stage-2 run: (key, label, file, field, higher is better).
MEASURES = [
    ("da_s1", "D_A exact match after stage 1", "d_a", "models[0].accuracy", True),
    ("da_s2", "D_A exact match after stage 2 (retention)", "d_a", "models[1].accuracy", True),
    ("lp_s1", "D_A mean gold log-prob after stage 1", "d_a", "models[0].mean_answer_logprob", True),
    ("lp_s2", "D_A mean gold log-prob after stage 2", "d_a", "models[1].mean_answer_logprob", True),
    ("lp_change", "D_A log-prob change (stage 2 - stage 1)", "d_a", "models[1].answer_logprob_change", True),
    ("top1_s2", "D_A answer tokens top-1 after stage 2", "d_a", "models[1].mean_answer_top1_share", True),
    ("rank_s2", "D_A median first-token rank after stage 2", "d_a", "models[1].median_first_token_rank", False),
    ("db", "D_B exact match after stage 2", "d_b", "models[0].accuracy", True),
]
LABEL = {m[0]: m[1] for m in MEASURES}
LABEL.update({"savings": "savings (1 - relearn steps / stage-1 steps)", "s1_steps": "stage-1 steps to 100%",
              "relearn_steps": "steps to relearn D_A to 100%", "frontier": "D_A retention at matched D_B accuracy"})
HIGHER_BETTER = {m[0]: m[4] for m in MEASURES}
HIGHER_BETTER.update({"savings": True, "frontier": True, "relearn_steps": False, "s1_steps": False})


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def lr_tag(lr):
    return f"{lr:.0e}"


def follow(repo, source):
    """The value a "path: a.b[1].c" source names."""
    path, field = source.split(": ", 1)
    value = read_json(os.path.join(repo, path))
    for part in field.replace("]", "").replace("[", ".").split("."):
        if part:
            value = value[int(part)] if part.isdigit() else value[part]
    return value


# -- statistics -----------------------------------------------------------------------------------

def interval(values):
    """mean, half-width of the 95% t-interval (None for fewer than 2 values)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = T975[n - 2] if n - 1 <= len(T975) else 1.96
    return mean, t * sd / math.sqrt(n)


def verdict(mean, half, higher_better):
    """The rule stated in the report: the difference (mixed - unmixed) helped when its whole 95%
    interval lies on the better side of zero, hurt when on the worse side, else no detectable
    difference."""
    if half is None:
        return "no interval (one seed)"
    lo, hi = mean - half, mean + half
    if lo > 0 or hi < 0:
        better = (lo > 0) == higher_better
        return "mixing helped" if better else "mixing hurt"
    return "no detectable difference"


def savings(relearn_steps, stage1_steps, relearn_stop, stage1_stop):
    """1 - relearn / stage-1 steps; undefined (None) unless both runs stopped at 100% exact match
    (a run that hit its epoch cap gives only a bound)."""
    if relearn_stop != "accuracy" or stage1_stop != "accuracy" or stage1_steps <= 0:
        return None
    return 1.0 - relearn_steps / stage1_steps


def frontier_level(groups):
    """groups: per swept setting and seed, its D_B accuracies across the sweep. FRONTIER_CAP, or the
    lowest of the groups' highest accuracies; None when that is 0 (some curve never learns D_B)."""
    level = min([FRONTIER_CAP] + [max(g) for g in groups])
    return level if level > 0 else None


def interpolate(points, level):
    """points: (D_B accuracy, D_A retention) in increasing learning rate. The retention where D_B
    accuracy first reaches `level`, linearly interpolated between the two rates around it (the
    lowest rate's value when it already reaches the level); None when no rate reaches it."""
    if level is None:
        return None
    for i, (x, y) in enumerate(points):
        if x >= level:
            if i == 0:
                return y
            x0, y0 = points[i - 1]
            return y if x == x0 else y0 + (level - x0) * (y - y0) / (x - x0)
    return None


# -- collecting per-seed values -------------------------------------------------------------------

class Results:
    def __init__(self):
        self.values = {}     # key -> {"value", "source"}  (read from a file)
        self.derived = {}    # key -> {"value", "formula", "inputs"}
        self.aggregates = {}  # id -> {"mean", "half", "n", "inputs"}
        self.comparisons = []

    def read(self, repo, key, source):
        try:
            v = follow(repo, source)
        except (OSError, KeyError, IndexError, ValueError) as e:
            sys.exit(f"error: {source}: cannot read ({type(e).__name__}: {e})")
        self.values[key] = {"value": v, "source": source}
        return v

    def get(self, key):
        return (self.values.get(key) or self.derived.get(key) or {}).get("value")

    def aggregate(self, agg_id, keys):
        vals = [self.get(k) for k in keys]
        if not keys or any(v is None for v in vals):
            return None
        mean, half = interval(vals)
        self.aggregates[agg_id] = {"mean": mean, "half": half, "n": len(vals), "inputs": keys}
        return self.aggregates[agg_id]


def vkey(setting, lr, seed, measure):
    return f"{setting}|{lr_tag(lr)}|s{seed}|{measure}"


def collect(repo, x, settings_def, run_name, stage1_name):
    d, p = x.d, x.p
    R = Results()
    for setting, lr, seed in x.stage2_runs():
        ev = d.path(run_name("eval", setting, lr, seed))
        for key, _, sub, field, _ in MEASURES:
            R.read(repo, vkey(setting, lr, seed, key), f"{ev}/{sub}/metrics.json: {field}")
    main = x.main_lr
    for setting in x.settings():
        for seed in p["seeds"]:
            s1 = R.read(repo, vkey(setting, main, seed, "s1_steps"),
                        f"{d.path(stage1_name(setting, seed), 'run', 'final', 'trainer_state.json')}: step")
            rl = R.read(repo, vkey(setting, main, seed, "relearn_steps"),
                        f"{d.path(run_name('relearn', setting, main, seed), 'run', 'final', 'trainer_state.json')}: step")
            for k, name in ((f"s1_stop|{setting}|s{seed}", stage1_name(setting, seed)),
                            (f"relearn_stop|{setting}|s{seed}", run_name("relearn", setting, main, seed))):
                R.read(repo, k, f"{d.path(name, 'run', 'final', 'trainer_state.json')}: stop_reason")
            stops = [f"relearn_stop|{setting}|s{seed}", f"s1_stop|{setting}|s{seed}"]
            R.derived[vkey(setting, main, seed, "savings")] = {
                "value": savings(rl, s1, *[R.get(k) for k in stops]),
                "formula": "1 - relearn_steps / s1_steps (both reached 100%)",
                "inputs": [vkey(setting, main, seed, "relearn_steps"), vkey(setting, main, seed, "s1_steps")] + stops}
    groups = [[vkey(setting, lr, seed, "db") for lr in p["lrs"]] for setting in p["sweep"] for seed in p["seeds"]]
    R.derived["frontier_level"] = {"value": frontier_level([[R.get(k) for k in g] for g in groups]),
                                   "formula": "frontier_level", "inputs": groups}
    level = R.get("frontier_level")
    for setting in p["sweep"]:
        for seed in p["seeds"]:
            keys = [(vkey(setting, lr, seed, "db"), vkey(setting, lr, seed, "da_s2")) for lr in p["lrs"]]
            R.derived[f"{setting}|s{seed}|frontier"] = {
                "value": interpolate([(R.get(a), R.get(b)) for a, b in keys], level),
                "formula": "interpolate(points, frontier_level)",
                "inputs": [k for pair in keys for k in pair] + ["frontier_level"]}
    # Aggregates per setting and rate.
    for setting, lr, _ in x.stage2_runs():
        for key in [m[0] for m in MEASURES] + (["s1_steps", "relearn_steps", "savings"] if lr == main else []):
            R.aggregate(f"{setting}|{lr_tag(lr)}|{key}", [vkey(setting, lr, s, key) for s in p["seeds"]])
    for setting in p["sweep"]:
        R.aggregate(f"{setting}|frontier", [f"{setting}|s{seed}|frontier" for seed in p["seeds"]])
    # Comparisons: each mixed setting minus unmixed, paired by seed.
    for setting in x.settings():
        if setting == "none":
            continue
        for key in ["da_s2", "lp_s2", "lp_change", "top1_s2", "rank_s2", "savings", "db"]:
            add_comparison(R, f"{setting}-vs-none|{lr_tag(main)}|{key}", setting, key,
                           [vkey(setting, main, s, key) for s in p["seeds"]],
                           [vkey("none", main, s, key) for s in p["seeds"]], f"at lr {main:g}")
        if setting in p["sweep"]:
            add_comparison(R, f"{setting}-vs-none|frontier", setting, "frontier",
                           [f"{setting}|s{seed}|frontier" for seed in p["seeds"]],
                           [f"none|s{seed}|frontier" for seed in p["seeds"]],
                           f"at D_B accuracy {fmt_num(level)}" if level else "at matched D_B accuracy")
    return R


def add_comparison(R, cid, setting, key, a_keys, b_keys, where):
    a, b = [R.get(k) for k in a_keys], [R.get(k) for k in b_keys]
    entry = {"id": cid, "setting": setting, "measure": key, "where": where, "inputs": [a_keys, b_keys]}
    if any(v is None for v in a + b):
        entry.update(diffs=None, mean=None, half=None,
                     verdict="not measurable" + (" (some swept run learned no D_B at all)"
                                                 if key == "frontier" else " (a run hit its epoch cap)"))
    elif key == "db":
        diffs = [u - v for u, v in zip(a, b)]
        mean, half = interval(diffs)
        entry.update(diffs=diffs, mean=mean, half=half, verdict="(context: D_B learned, not retention)")
    else:
        diffs = [u - v for u, v in zip(a, b)]
        mean, half = interval(diffs)
        entry.update(diffs=diffs, mean=mean, half=half, verdict=verdict(mean, half, HIGHER_BETTER[key]))
    R.comparisons.append(entry)


def choose_main_lr(repo, out, p, run_name):
    """RETENTION_TARGET rule on the unmixed sweep runs only; ties go to the lower rate."""
    best = None
    for lr in sorted(p["lrs"]):
        vals = [follow(repo, f"{os.path.join(out, run_name('eval', 'none', lr, s))}/d_a/metrics.json: models[1].accuracy")
                for s in p["seeds"]]
        dist = abs(sum(vals) / len(vals) - RETENTION_TARGET)
        if best is None or dist < best[0] - 1e-12:
            best = (dist, lr)
    return best[1]


def base_perplexity(repo, path):
    """exp(- sum of answer log-probs / answer tokens) over the held-out generic continuations."""
    total_lp, total_tok = 0.0, 0
    with open(os.path.join(repo, path), encoding="utf-8") as f:
        for line in f:
            j = json.loads(line)
            total_lp += j["answer_logprob_sum"]
            total_tok += j["answer_tokens"]
    return {"value": math.exp(-total_lp / total_tok) if total_tok else None, "tokens": total_tok,
            "source": f"{path}: exp(-sum(answer_logprob_sum) / sum(answer_tokens))"}


# -- formatting -----------------------------------------------------------------------------------

def fmt_num(v, key=""):
    if v is None:
        return "—"
    if key.endswith("steps") or key.startswith("rank"):
        return f"{v:.1f}"
    return f"{v:.3f}"


def fmt_agg(a, key=""):
    if a is None:
        return "—"
    if a["half"] is None:
        return fmt_num(a["mean"], key)
    return f"{fmt_num(a['mean'], key)} ± {fmt_num(a['half'], key)}"


def fmt_cmp(c):
    if c["mean"] is None:
        return "—"
    return fmt_agg({"mean": c["mean"], "half": c["half"]}, c["measure"])


# -- charts ---------------------------------------------------------------------------------------

def gnuplot_terminal(gnuplot):
    terminals = subprocess.run([gnuplot, "-e", "set terminal"], capture_output=True, text=True)
    text = terminals.stdout + terminals.stderr
    if "pngcairo" in text:
        return ".png", "pngcairo size 1000,620 font 'sans,10'"
    if " png " in text:
        return ".png", "png size 1000,620"
    return ".svg", "svg size 1000,620"


def run_gnuplot(repo, out, name, script):
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        sys.exit("error: gnuplot is not installed (scripts/install_deps.sh --demo installs gnuplot-nox)")
    ext, term = gnuplot_terminal(gnuplot)
    image = os.path.join(repo, out, name + ext)
    gp = os.path.join(repo, out, name + ".gp")
    with open(gp, "w", encoding="utf-8") as f:
        f.write(f"set terminal {term}\nset output '{image}'\n" + script)
    proc = subprocess.run([gnuplot, gp], capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.exists(image):
        sys.exit(f"error: gnuplot failed on {gp}: {proc.stderr.strip()}")
    return name + ext


COLORS = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb"]


def charts(repo, out, R, p, labels):
    level = R.get("frontier_level")
    """retention and D_B accuracy against the learning rate; the frontier (D_A retention against
    D_B accuracy). Points are means over seeds, bars their 95% t-intervals."""
    dat = os.path.join(repo, out, "sweep.dat")
    blocks = []
    with open(dat, "w", encoding="utf-8") as f:
        for setting in p["sweep"]:
            f.write(f"# {setting}: lr da_mean da_half db_mean db_half\n")
            for lr in p["lrs"]:
                a, b = R.aggregates.get(f"{setting}|{lr_tag(lr)}|da_s2"), R.aggregates.get(f"{setting}|{lr_tag(lr)}|db")
                f.write(f"{lr:g} {a['mean']} {a['half'] or 0} {b['mean']} {b['half'] or 0}\n")
            f.write("\n\n")
            blocks.append(setting)
    plots = []
    for i, s in enumerate(blocks):
        c = COLORS[i % len(COLORS)]
        plots.append(f"'{dat}' index {i} using 1:2:3 with yerrorlines lw 2 pt 7 lc rgb '{c}' title '{labels[s]}: D_A retained'")
        plots.append(f"'{dat}' index {i} using 1:4:5 with yerrorlines lw 1 dt 2 pt 5 lc rgb '{c}' title '{labels[s]}: D_B learned'")
    lr_chart = run_gnuplot(repo, out, "retention_vs_lr", f"""
set title 'D_A retention (solid) and D_B accuracy (dashed) after stage 2, by stage-2 learning rate'
set logscale x
set xrange [{min(p['lrs']) / 1.5:g}:{max(p['lrs']) * 1.5:g}]
set xlabel 'stage-2 learning rate'
set ylabel 'exact-match accuracy (mean over seeds, 95% t-interval)'
set yrange [-0.05:1.05]
set key outside bottom center horizontal
set grid
plot {', '.join(plots)}
""")
    plots = []
    for i, s in enumerate(blocks):
        c = COLORS[i % len(COLORS)]
        plots.append(f"'{dat}' index {i} using 4:2:5:3 with xyerrorbars pt 7 lc rgb '{c}' title '{labels[s]}', "
                     f"'' index {i} using 4:2 with lines lw 2 lc rgb '{c}' notitle, "
                     f"'' index {i} using 4:2:(sprintf('%g', $1)) with labels offset 1.5,0.7 font ',8' tc rgb '{c}' notitle")
    frontier_chart = run_gnuplot(repo, out, "frontier", f"""
set title 'Stability-plasticity frontier: D_A retained against D_B learned (one point per stage-2 learning rate)'
set xlabel 'D_B exact match after stage 2 (plasticity)'
set ylabel 'D_A exact match after stage 2 (stability)'
set xrange [-0.05:1.05]
set yrange [-0.05:1.05]
{f"set arrow from {level},-0.05 to {level},1.05 nohead dt 3 lc rgb '#888888'" if level else ""}
set key outside bottom center horizontal
set grid
plot {', '.join(plots)}
""")
    return lr_chart, frontier_chart


# -- the report -----------------------------------------------------------------------------------

def timing_text(repo, out):
    """Wall and CPU time of each stage as recorded in its stage.json when it ran."""
    rows, cpu = [], 0.0
    base = os.path.join(repo, out)
    for name in sorted(os.listdir(base)):
        path = os.path.join(base, name, "stage.json")
        if os.path.exists(path):
            st = read_json(path)
            if isinstance(st.get("seconds"), (int, float)):
                rows.append((name, st["seconds"], st.get("cpu_seconds") or 0.0))
            cpu += st.get("cpu_seconds") or 0.0
    if not rows:
        return ""
    groups = {}
    for name, _, c in rows:
        kind = name.split("-")[0]
        groups[kind] = groups.get(kind, 0.0) + c
    parts = ", ".join(f"{k} {v / 60:.1f}" for k, v in sorted(groups.items(), key=lambda kv: -kv[1]))
    return (f"CPU time of all programs (user + system, one thread each, from each `stage.json`): "
            f"{cpu / 60:.1f} min ({parts} min), i.e. about {cpu / 120:.1f} min of wall time on 2 idle cores "
            f"(the wall time of a run depends on how busy the machine is: "
            f"sum of stage wall times {sum(r[1] for r in rows) / 60:.1f} min, two stages at a time).")


def outcome(R, x, labels):
    """The verdicts, in words, derived from the comparisons."""
    lines = []
    for setting in x.settings():
        if setting == "none":
            continue
        cs = {c["measure"]: c for c in R.comparisons if c["setting"] == setting}
        parts = []
        if "frontier" in cs:
            parts.append(f"at matched D_B learning ({cs['frontier']['where']}): **{cs['frontier']['verdict']}** "
                         f"(retention difference {fmt_cmp(cs['frontier'])})")
        for key in ("da_s2", "lp_s2", "top1_s2", "savings"):
            if key in cs:
                parts.append(f"{LABEL[key]} at lr {x.main_lr:g}: {cs[key]['verdict']} ({fmt_cmp(cs[key])})")
        if "db" in cs:
            parts.append(f"D_B learned at lr {x.main_lr:g}: difference {fmt_cmp(cs['db'])}")
        lines.append(f"- **{labels[setting]} vs unmixed:** " + "; ".join(parts) + ".")
    return "\n".join(lines)


def write_report(repo, x, settings_def, labels, run_name, stage1_name):
    out, p = x.d.out, x.p
    R = collect(repo, x, settings_def, run_name, stage1_name)
    base = base_perplexity(repo, x.d.path("base-eval", "generic", "predictions.jsonl"))
    lr_chart, frontier_chart = charts(repo, out, R, p, labels)
    main = x.main_lr
    m = p["model"]
    seeds = p["seeds"]
    n = len(seeds)

    def agg(setting, lr, key):
        a = R.aggregates.get(f"{setting}|{lr_tag(lr)}|{key}")
        if a is not None:
            a["shown"] = True
        return fmt_agg(a, key)

    # Main-rate table.
    keys_main = ["da_s1", "da_s2", "lp_s1", "lp_s2", "lp_change", "top1_s2", "rank_s2", "db", "s1_steps",
                 "relearn_steps", "savings"]
    main_rows = ["| measure | " + " | ".join(labels[s] for s in x.settings()) + " |",
                 "| --- |" + " --- |" * len(x.settings())]
    for key in keys_main:
        main_rows.append(f"| {LABEL[key]} | " + " | ".join(agg(s, main, key) for s in x.settings()) + " |")
    # Comparisons.
    cmp_rows = ["| comparison | measure | where | difference (mixed - unmixed) | verdict |",
                "| --- | --- | --- | --- | --- |"]
    for c in R.comparisons:
        cmp_rows.append(f"| {labels[c['setting']]} vs unmixed | {LABEL[c['measure']]} | {c['where']} | {fmt_cmp(c)} "
                        f"| {c['verdict']} |")
    # Sweep table.
    sweep_rows = ["| setting | stage-2 lr | D_A retained | D_B learned | D_A log-prob after stage 2 | D_A top-1 share |",
                  "| --- | --- | --- | --- | --- | --- |"]
    for s in p["sweep"]:
        for lr in p["lrs"]:
            sweep_rows.append(f"| {labels[s]} | {lr:g} | {agg(s, lr, 'da_s2')} | {agg(s, lr, 'db')} "
                              f"| {agg(s, lr, 'lp_s2')} | {agg(s, lr, 'top1_s2')} |")
    level = R.get("frontier_level")
    frontier_rows = [f"| setting | D_A retention at D_B accuracy {fmt_num(level)} |", "| --- | --- |"]
    for s in p["sweep"]:
        a = R.aggregates.get(f"{s}|frontier")
        if a is not None:
            a["shown"] = True
        frontier_rows.append(f"| {labels[s]} | {fmt_agg(a, 'frontier')} |")
    capped = {kind: sum(1 for k, v in R.values.items() if k.startswith(kind + "_stop|") and v["value"] != "accuracy")
              for kind in ("s1", "relearn")}
    runs_per_kind = len(x.settings()) * n
    rule_lr = ", ".join(f"{lr:g}: {agg('none', lr, 'da_s2')}" for lr in p["lrs"])
    hooks = "\n\n".join(h(x) for h in x.report_sections)
    profile = x.profile
    command = {"full": "make demo", "quick": "make demo-quick", "study": "make study"}.get(profile, "python3 scripts/demo.py --mini")

    md = f"""# REMIX forgetting experiment ({profile} profile)

Made by `scripts/demo.py` (`{command}`), offline, on the CPU.

## Setup

- **Model:** a tiny Llama (hidden {m['hidden']}, {m['layers']} layers, {m['heads']} heads / {m['kv_heads']} KV heads,
  MLP {m['intermediate']}, context {m['seq_len']}, tied embeddings), vocabulary {p['vocab']} (byte-level BPE trained by
  `./tokenize train` on the pretraining text), pretrained from scratch for {p['pretrain_epochs']} epoch(s) on
  {p['pretrain_words'] / 1e3:.0f} k words of Debian `fortunes`. **Held-out perplexity of the base model** on generic
  text (the continuations of the held-out passages, {base['tokens']} tokens): {fmt_num(base['value'])} (a uniform guess:
  {p['vocab']}).
- **D_A (stage 1):** {p['num_facts']} generated key-value pairs per seed, trained to 100% exact match (at most
  {p['stage1_max_epochs']} epochs, lr {p['stage1_lr']:g}, evaluated before the first step and every {p['eval_every']} epoch(s)).
- **D_B (stage 2):** {p['num_fr']} questions "What is the French word for '...'?" (Debian `dict-freedict-eng-fra`),
  trained until 100% or {p['stage2_epochs']} epochs, at each learning rate of the sweep: {', '.join(f'{lr:g}' for lr in p['lrs'])}.
- **Settings** (stage-1 mix / stage-2 mix): {'; '.join(f'{labels[s]}' for s in x.settings())}. REMIX mixes random-word
  passages ({p['random_words']} words) and generic passages ({p['generic_words']} + {p['generic_words']} words) into stage 1 and generic
  passages into stage 2, ratio x |primary| examples each per epoch. Swept over every rate: {', '.join(labels[s] for s in p['sweep'])};
  at the main rate only: {', '.join(labels[s] for s in p['main_only']) or 'none'}.
- **Seeds:** {', '.join(str(s) for s in seeds)}. A seed changes the D_A set, the random-word draws and the data
  order of every training run; the base model is shared.
- **Measures** (`eval_factoids --score`, teacher-forced, on D_A's training prompts): exact match; mean gold-answer
  log-probability (per token) and its change; share of answer tokens predicted top-1; median rank of the first answer
  token; **savings**: relearning D_A from the stage-2 checkpoint with its stage-1 recipe, 1 - steps to relearn / steps
  stage 1 needed (1 = nothing to relearn; step counts at evaluation granularity).

## Rules, fixed before the numbers

1. **Intervals:** 95% Student-t intervals over the {n} seeds (mean ± t(0.975, {n - 1}) × sd / √{n}), written mean ± half-width.
2. **Verdicts:** each comparison is the per-seed difference mixed − unmixed (paired by seed). "mixing helped" when its
   95% interval lies entirely on the better side of zero (higher retention, log-prob, top-1 share or savings; lower
   rank), "mixing hurt" when entirely on the worse side, otherwise "no detectable difference".
3. **Main learning rate:** the sweep's stage-2 rate at which the *unmixed* setting's mean D_A retention is closest to
   {RETENTION_TARGET:.0%} (ties: the lower rate). No mixed setting is looked at.
4. **Matched D_B learning (the frontier):** the comparison is made at one D_B accuracy: {FRONTIER_CAP:g}, or, when
   some swept setting does not reach it in some seed, the lowest over swept settings and seeds of the highest D_B
   accuracy reached across the sweep (every curve reaches it; no setting is favoured). For each setting and seed,
   D_A retention is interpolated linearly at that accuracy between the two sweep rates around the first one that
   reaches it (the lowest rate's retention if it already does). Not measurable if some swept run never learns any
   D_B. This is the headline comparison: a setting that learns D_B faster is not credited with retention it bought
   by learning less.

## Main learning rate

Unmixed D_A retention by rate: {rule_lr}. Chosen: **{main:g}**.

## Results at the main learning rate ({main:g})

{chr(10).join(main_rows)}

Stage-1 runs that hit their epoch cap before 100% exact match: {capped['s1']} of {runs_per_kind}; relearning runs: {capped['relearn']} of {runs_per_kind} (their step counts are lower bounds, and their savings are left undefined).

## Comparisons and verdicts

{chr(10).join(cmp_rows)}

## The learning-rate sweep and the frontier

{chr(10).join(sweep_rows)}

![retention against learning rate]({lr_chart})

{chr(10).join(frontier_rows)}

![frontier]({frontier_chart})

## Outcome

{outcome(R, x, labels)}

{hooks}

## Cost

{timing_text(repo, out)}

## Reproduce

`{command}` (`python3 scripts/demo.py{'' if profile == 'full' else ' --' + profile}`); a second run reuses every cached
stage. Logs and checkpoints of every stage are under `{out}/<stage>/`; every number above is in `results.json` with
its source, and `python3 scripts/demo_report.py --check {out}` verifies them.
"""
    results = {"profile": profile, "seeds": seeds, "lrs": p["lrs"], "main_lr": main,
               "rules": {"interval": "95% Student-t over seeds", "retention_target": RETENTION_TARGET,
                         "frontier_cap": FRONTIER_CAP},
               "base_perplexity": base, "values": R.values, "derived": R.derived, "aggregates": R.aggregates,
               "comparisons": R.comparisons}
    write_atomic(os.path.join(repo, out, "report.md"), md)
    write_atomic(os.path.join(repo, out, "results.json"), json.dumps(results, indent=1, ensure_ascii=False))
    write_atomic(os.path.join(repo, out, "table.txt"),
                 f"main stage-2 learning rate {main:g}\n\n" + text_table(cmp_rows) + "\n\n" +
                 outcome(R, x, labels).replace("**", "") + "\n")


def text_table(md_rows):
    """A markdown table as aligned plain text (for the terminal)."""
    rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in md_rows if not r.startswith("| ---")]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:])


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def close(a, b):
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))


def check(repo, out):
    """Every per-seed value equals its source; every derived value, aggregate and comparison is
    recomputed from its inputs; every aggregate and comparison shown in report.md is as recomputed."""
    res = read_json(os.path.join(repo, out, "results.json"))
    report = open(os.path.join(repo, out, "report.md"), encoding="utf-8").read()
    n = 0

    def fail(msg):
        sys.exit(f"error: {out}/results.json: {msg}")

    values = {k: v["value"] for k, v in res["values"].items()}
    for k, v in res["values"].items():
        got = follow(repo, v["source"])
        if got != v["value"]:
            fail(f"{k} = {v['value']} but {v['source']} = {got}")
        n += 1
    base = res["base_perplexity"]
    again = base_perplexity(repo, base["source"].split(": ", 1)[0])
    if not close(again["value"], base["value"]) or fmt_num(base["value"]) not in report:
        fail(f"base perplexity {base['value']} does not match {base['source']} ({again['value']}) or the report")
    n += 1
    for k, d in res["derived"].items():
        if d["formula"] == "frontier_level":
            want = frontier_level([[values[i] for i in g] for g in d["inputs"]])
        elif d["formula"].startswith("interpolate"):
            ins = [values.get(i) for i in d["inputs"][:-1]]
            want = interpolate(list(zip(ins[0::2], ins[1::2])), values.get(d["inputs"][-1]))
        else:
            want = savings(*[values.get(i) for i in d["inputs"]])
        if not close(want, d["value"]):
            fail(f"derived {k} = {d['value']}, recomputed {want}")
        values[k] = d["value"]
        n += 1
    for k, a in res["aggregates"].items():
        mean, half = interval([values[i] for i in a["inputs"]])
        if not close(mean, a["mean"]) or not close(half, a["half"]):
            fail(f"aggregate {k} = {a['mean']} ± {a['half']}, recomputed {mean} ± {half}")
        shown = fmt_agg(a, k.split("|")[-1])
        if a.get("shown") and shown not in report:
            fail(f"aggregate {k} ({shown}) is not in report.md")
        n += 1
    for c in res["comparisons"]:
        if c["diffs"] is None:
            continue
        diffs = [values[a] - values[b] for a, b in zip(*c["inputs"])]
        mean, half = interval(diffs)
        if not close(mean, c["mean"]) or not close(half, c["half"]):
            fail(f"comparison {c['id']} = {c['mean']} ± {c['half']}, recomputed {mean} ± {half}")
        if c["measure"] != "db" and verdict(mean, half, HIGHER_BETTER[c["measure"]]) != c["verdict"]:
            fail(f"comparison {c['id']}: verdict '{c['verdict']}' does not follow the rule")
        if f"{fmt_cmp(c)} | {c['verdict']}" not in report:
            fail(f"comparison {c['id']} ({fmt_cmp(c)}, {c['verdict']}) is not in report.md")
        n += 1
    print(f"ok: {n} numbers of {out}/results.json equal their sources, recomputations and report.md")


def publish(repo, out, dest):
    """Checks RUN_DIR, then copies its report, charts and results.json to DEST (for committing under
    docs/results/), the report headed by the commit it was made at and the command."""
    check(repo, out)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True,
                           text=True).stdout.strip()
    res = read_json(os.path.join(repo, out, "results.json"))
    command = {"full": "make demo", "quick": "make demo-quick", "study": "make study"}.get(res["profile"], "")
    os.makedirs(os.path.join(repo, dest), exist_ok=True)
    report = open(os.path.join(repo, out, "report.md"), encoding="utf-8").read()
    # the run directory's charts and results, and every image the report links (the layer
    # analysis draws its charts in its stages' subdirectories)
    names = [n for n in os.listdir(os.path.join(repo, out)) if n.endswith((".png", ".svg", ".dat", ".gp")) or n == "results.json"]
    names += re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    for name in sorted(set(names)):
        os.makedirs(os.path.dirname(os.path.join(repo, dest, name)), exist_ok=True)
        shutil.copy2(os.path.join(repo, out, name), os.path.join(repo, dest, name))
    head = (f"> Made at commit `{commit or 'unknown'}`{' (with uncommitted changes)' if dirty else ''} by `{command}`; "
            f"the numbers' sources are under `{out}/` of that run (see `results.json`).\n\n")
    write_atomic(os.path.join(repo, dest, "report.md"), head + report)
    print(f"published {out} to {dest}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", metavar="RUN_DIR", help="verify RUN_DIR/results.json against its sources and RUN_DIR/report.md")
    g.add_argument("--publish", nargs=2, metavar=("RUN_DIR", "DEST"),
                   help="check RUN_DIR, then copy its report (headed by the commit and command), charts and results to DEST")
    a = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if a.check:
        check(here, os.path.relpath(os.path.abspath(a.check), here))
    else:
        publish(here, os.path.relpath(os.path.abspath(a.publish[0]), here), os.path.relpath(os.path.abspath(a.publish[1]), here))
