#!/usr/bin/env python3
"""Report of the demo experiment (scripts/demo.py): results table, gnuplot chart, report.md.

Every accuracy in the table is read from the metrics.json that ./eval_factoids wrote for that run
(never retyped or recomputed), and results.json records which file each number came from, so
that `python3 scripts/demo_report.py --check runs/demo` can verify the table against them.
Python 3 standard library only; the chart is drawn by gnuplot (Debian gnuplot-nox).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# -- reading ./eval_factoids metrics.json ---------------------------------------------------------
# metrics.json holds one entry per --model, in command-line order, each with its accuracy and
# counts, plus the forgetting (accuracy drop) of each later model relative to the first.

def model_entries(metrics, path):
    for key in ("models", "results"):
        if isinstance(metrics.get(key), list) and metrics[key]:
            return metrics[key]
    if "accuracy" in metrics:
        return [metrics]
    sys.exit(f"error: {path}: no per-model results (expected a 'models' list with 'accuracy')")


def accuracy(metrics, path, index):
    entries = model_entries(metrics, path)
    if index >= len(entries):
        sys.exit(f"error: {path}: has {len(entries)} model entries, entry {index} was expected")
    e = entries[index]
    if "accuracy" not in e:
        sys.exit(f"error: {path}: model entry {index} has no 'accuracy'")
    return {"value": e["accuracy"], "correct": e.get("correct"), "total": e.get("total"),
            "source": f"{path}: models[{index}].accuracy"}


def forgetting(metrics, path, index):
    """The drop of model `index` relative to the first model, as metrics.json states it."""
    entries = model_entries(metrics, path)
    e = entries[index]
    for key in ("forgetting", "drop", "accuracy_drop"):
        if key in e and e[key] is not None:
            return {"value": e[key], "source": f"{path}: models[{index}].{key}"}
    f = metrics.get("forgetting")
    if isinstance(f, list) and len(f) >= index:
        item = f[index - 1] if len(f) == len(entries) - 1 else f[index]
        value = item.get("drop", item.get("forgetting")) if isinstance(item, dict) else item
        if value is not None:
            return {"value": value, "source": f"{path}: forgetting[{index - 1 if len(f) == len(entries) - 1 else index}]"}
    sys.exit(f"error: {path}: no forgetting/drop value for model entry {index}")


def fmt(x):
    return "—" if x is None else f"{x:.4f}"


def fmt_acc(a):
    if a is None:
        return "—"
    s = fmt(a["value"])
    if a.get("correct") is not None and a.get("total") is not None:
        s += f" ({a['correct']}/{a['total']})"
    return s


# -- the report -------------------------------------------------------------------------------------

def collect(repo, out, runs):
    rows = []
    for d_b, s1, s2 in runs:
        run = f"stage2-{d_b}-from-{s1}-mix-{s2}"
        ev = os.path.join(out, f"eval-{run}")
        pa = os.path.join(ev, "d_a", "metrics.json")
        ma = read_json(os.path.join(repo, pa))
        row = {"run": run, "d_b": d_b, "stage1_mix": s1, "stage2_mix": s2,
               "d_a_after_stage1": accuracy(ma, pa, 0), "d_a_after_stage2": accuracy(ma, pa, 1),
               "drop": forgetting(ma, pa, 1), "d_b_after_stage2": None}
        pb = os.path.join(ev, "d_b", "metrics.json")
        if os.path.exists(os.path.join(repo, pb)):
            row["d_b_after_stage2"] = accuracy(read_json(os.path.join(repo, pb)), pb, 0)
        rows.append(row)
    return rows


def stage1_summary(repo, out, stage1):
    """Epochs and steps each stage-1 run trained, from its train_log.jsonl (not from metrics.json)."""
    result = []
    for s1 in stage1:
        path = os.path.join(repo, out, f"stage1-{s1}", "train_log.jsonl")
        last, last_eval = None, None
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        j = json.loads(line)
                    except ValueError:
                        continue
                    if j.get("event") == "step":
                        last = dict(j, stop_reason=(last or {}).get("stop_reason"))
                    if j.get("event") == "done" and last is not None:
                        last["stop_reason"] = j.get("stop_reason")
                    if any(k in j for k in ("eval_accuracy", "accuracy")):
                        last_eval = j
        result.append({"stage1_mix": s1, "last": last, "last_eval": last_eval})
    return result


def markdown_table(rows, mix_label, d_b_label):
    lines = ["| D_B (stage 2) | stage-1 mix | stage-2 mix | D_A acc. after stage 1 | D_A acc. after stage 2 "
             "| D_A drop | D_B acc. after stage 2 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['d_b']} | {mix_label[r['stage1_mix']]} | {mix_label[r['stage2_mix']]} "
                     f"| {fmt_acc(r['d_a_after_stage1'])} | {fmt_acc(r['d_a_after_stage2'])} "
                     f"| {fmt(r['drop']['value'])} | {fmt_acc(r['d_b_after_stage2'])} |")
    return "\n".join(lines)


def text_table(rows, mix_label):
    head = ["D_B", "stage-1 mix", "stage-2 mix", "D_A@S1", "D_A@S2", "drop", "D_B@S2"]
    body = [[r["d_b"], mix_label[r["stage1_mix"]], mix_label[r["stage2_mix"]],
             fmt(r["d_a_after_stage1"]["value"]), fmt(r["d_a_after_stage2"]["value"]), fmt(r["drop"]["value"]),
             fmt(r["d_b_after_stage2"]["value"]) if r["d_b_after_stage2"] else "—"] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(b) for b in body])


def chart(repo, out, rows, mix_label):
    """Clustered bars per run: D_A after stage 1, D_A after stage 2, D_B after stage 2 (gnuplot)."""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        sys.exit("error: gnuplot is not installed (scripts/install_deps.sh --demo installs gnuplot-nox)")
    dat = os.path.join(repo, out, "chart.dat")
    with open(dat, "w", encoding="utf-8") as f:
        f.write("# run\tD_A_after_stage1\tD_A_after_stage2\tD_B_after_stage2\n")
        for r in rows:
            label = f"{r['d_b']}: S1 {mix_label[r['stage1_mix']]} / S2 {mix_label[r['stage2_mix']]}"
            b = r["d_b_after_stage2"]["value"] if r["d_b_after_stage2"] else "NaN"
            f.write(f"\"{label}\"\t{r['d_a_after_stage1']['value']}\t{r['d_a_after_stage2']['value']}\t{b}\n")
    terminals = subprocess.run([gnuplot, "-e", "set terminal"], capture_output=True, text=True).stdout + \
        subprocess.run([gnuplot, "-e", "set terminal"], capture_output=True, text=True).stderr
    if "pngcairo" in terminals:
        name, term = "chart.png", "pngcairo size 1200,650 font 'sans,10'"
    elif " png " in terminals:
        name, term = "chart.png", "png size 1200,650"
    else:
        name, term = "chart.svg", "svg size 1200,650"
    script = f"""
set terminal {term}
set output '{os.path.join(repo, out, name)}'
set title 'Forgetting of D_A (KVR facts) after stage 2, by mixing setting'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set yrange [0:1.05]
set ylabel 'exact-match accuracy'
set xtics rotate by -30 left font ',8'
set key outside top center horizontal
set grid ytics
set bmargin 11
set rmargin 16
plot '{dat}' using 2:xtic(1) title 'D_A after stage 1' lc rgb '#4477aa', \\
     '' using 3 title 'D_A after stage 2' lc rgb '#ee6677', \\
     '' using 4 title 'D_B after stage 2' lc rgb '#228833'
"""
    gp = os.path.join(repo, out, "chart.gp")
    with open(gp, "w", encoding="utf-8") as f:
        f.write(script)
    proc = subprocess.run([gnuplot, gp], capture_output=True, text=True)
    if proc.returncode != 0 or not os.path.exists(os.path.join(repo, out, name)):
        sys.exit(f"error: gnuplot failed on {gp}: {proc.stderr.strip()}")
    return name


def find(rows, d_b, s1, s2):
    for r in rows:
        if (r["d_b"], r["stage1_mix"], r["stage2_mix"]) == (d_b, s1, s2):
            return r
    return None


def outcome(rows, d_bs, p, mix_label):
    """A plain statement of what was measured, derived from the numbers (no wishful reading)."""
    margin = 0.05
    paras = []
    verdicts = []
    for d_b in d_bs:
        base = find(rows, d_b, "none", "none")
        if base is None:
            continue
        remix = find(rows, d_b, "remix", "generic") or find(rows, d_b, "remix", "none")
        replay = find(rows, d_b, "none", "replay")
        b = base["drop"]["value"]
        text = [f"**Stage 2 on {d_b}.** Without any mixing, D_A accuracy went from "
                f"{fmt(base['d_a_after_stage1']['value'])} to {fmt(base['d_a_after_stage2']['value'])} "
                f"(drop {fmt(b)})."]
        if remix is not None:
            r = remix["drop"]["value"]
            label = f"REMIX (stage 1: {mix_label[remix['stage1_mix']]}, stage 2: {mix_label[remix['stage2_mix']]})"
            if b <= 0.02:
                verdict = "untestable"
                text.append(f"With so little forgetting in the baseline there was nothing for mixing to prevent; "
                            f"{label} dropped {fmt(r)}. This run does not test the paper's claim.")
            elif r < b - margin:
                verdict = "reproduced"
                text.append(f"{label} dropped {fmt(r)}: mixing **reduced forgetting** here, the direction the "
                            f"REMIX paper reports.")
            elif r > b + margin:
                verdict = "contradicted"
                text.append(f"{label} dropped {fmt(r)}: mixing **increased forgetting** here, the opposite of "
                            f"the REMIX paper's finding.")
            else:
                verdict = "no difference"
                text.append(f"{label} dropped {fmt(r)}: **no clear difference** (within {margin:.2f}) from the "
                            f"unmixed baseline, so the paper's finding is not reproduced here.")
                if b >= 0.9 and r >= 0.9:
                    text.append(f"Forgetting was (nearly) total with and without mixing: at this scale, stage 2 "
                                f"(learning rate {p['stage2_lr']:g}) rewrites the weights that held D_A whatever "
                                f"else the model learned in stage 1.")
            verdicts.append(verdict)
        if replay is not None:
            text.append(f"Replaying {p['replay_ratio']:g} x |D_B| D_A examples in stage 2 gave a drop of "
                        f"{fmt(replay['drop']['value'])}.")
        others = [x for x in rows if x["d_b"] == d_b and x not in (base, remix, replay)]
        if others:
            text.append("Other settings: " + "; ".join(
                f"stage 1 {mix_label[x['stage1_mix']]} / stage 2 {mix_label[x['stage2_mix']]}: drop {fmt(x['drop']['value'])}"
                for x in others) + ".")
        paras.append(" ".join(text))
    if verdicts and all(v == "reproduced" for v in verdicts):
        summary = ("**Outcome: mixing reduced forgetting in this run**, as in the REMIX paper. With one seed and "
                   f"{p['num_facts']} facts (one fact = {1 / p['num_facts']:.3f} of accuracy) the margin is noisy; "
                   "treat it as a demonstration, not a measurement.")
    else:
        summary = ("**Outcome: this run does not reproduce the REMIX finding** "
                   f"({', '.join(sorted(set(verdicts))) or 'no REMIX run'}). The likely reason is scale: the paper "
                   "fine-tunes Llama-3-8B, whose pretraining gives generic and random-word mixing something to "
                   "protect and redistribute; here a model of a few million parameters, pretrained for minutes on "
                   f"{p['pretrain_words'] / 1e3:.0f} k words, memorizes facts in a network with little prior structure, and forgetting is dominated "
                   "by how much stage 2 overwrites. One seed and "
                   f"{p['num_facts']} facts (one fact = {1 / p['num_facts']:.3f} of accuracy) add noise. The GPU recipes "
                   "(scripts/gpu_remix.sh) run the same grid at the paper's scale.")
    return summary, paras


def timing_text(repo, out):
    """Wall time of each stage as recorded in its stage.json when it ran (cached stages keep the
    time of the run that made them)."""
    rows, cpu = [], 0.0
    base = os.path.join(repo, out)
    for name in sorted(os.listdir(base)):
        path = os.path.join(base, name, "stage.json")
        if os.path.exists(path):
            st = read_json(path)
            secs = st.get("seconds")
            if isinstance(secs, (int, float)):
                rows.append((name, secs))
            cpu += st.get("cpu_seconds") or 0.0
    if not rows:
        return ""
    groups = {}
    for name, secs in rows:
        kind = name.split("-")[0]
        groups[kind] = groups.get(kind, 0.0) + secs
    parts = ", ".join(f"{k} {v / 60:.1f} min" for k, v in sorted(groups.items(), key=lambda kv: -kv[1]))
    return (f"Stage wall times (from each `stage.json`; stages run two at a time, so the demo's wall time is "
            f"less than the sum): total {sum(s for _, s in rows) / 60:.1f} min = {parts}. CPU time of all "
            f"programs (user + system, single-threaded each): {cpu / 60:.1f} min, i.e. about "
            f"{cpu / 120:.1f} min of wall time on 2 idle cores.")


def write_report(repo, out, profile, p, runs, mix_label, d_b_label, layer_analyses):
    rows = collect(repo, out, runs)
    s1sum = stage1_summary(repo, out, p["stage1"])
    name = chart(repo, out, rows, mix_label)
    summary, paras = outcome(rows, p["d_b"], p, mix_label)
    m = p["model"]
    table = markdown_table(rows, mix_label, d_b_label)
    import demo_layers  # the "Where the facts are stored" section (scripts/demo_layers.py)
    layers = demo_layers.report_section(repo, out, layer_analyses, p["stage1"], mix_label)

    s1_lines = []
    for s in s1sum:
        last, ev = s["last"], s["last_eval"]
        if last is None:
            s1_lines.append(f"- stage 1, mix {mix_label[s['stage1_mix']]}: no train log found")
            continue
        acc = None
        if ev is not None:
            acc = ev.get("eval_accuracy", ev.get("accuracy"))
        epoch = last.get("epoch")
        s1_lines.append(f"- stage 1, mix {mix_label[s['stage1_mix']]}: {last.get('step', '?')} steps"
                        + (f" ({epoch:.0f} epochs)" if isinstance(epoch, (int, float)) else "")
                        + (f", stopped by: {last['stop_reason']}" if last.get("stop_reason") else "")
                        + (f", last in-training eval accuracy {acc}" if acc is not None else ""))

    md = f"""# REMIX forgetting demo ({profile} profile)

Made by `scripts/demo.py` ({'`make demo`' if profile == 'full' else '`make demo-quick`' if profile == 'quick' else '`scripts/demo.py --mini`'}), offline, on the CPU.

## Setup

- **Model:** a tiny Llama (hidden {m['hidden']}, {m['layers']} layers, {m['heads']} heads / {m['kv_heads']} KV heads,
  MLP {m['intermediate']}, context {m['seq_len']}, tied embeddings), vocabulary {p['vocab']} (byte-level BPE trained by
  `./tokenize train` on the pretraining text), pretrained from scratch for {p['pretrain_epochs']} epoch(s) on generic text.
- **Generic text:** Debian `fortunes` (real English prose: quotations, jokes, short essays); held-out long fortunes
  form the REMIX generic mix (`Complete the following partial passage:` + words 0-{p['generic_words']} -> words
  {p['generic_words']}-{2 * p['generic_words']}; the paper uses 50 + 50, halved here for the tiny model's budget).
- **D_A (stage 1):** {p['num_facts']} generated key-value pairs (`The value of key {{key}} is? {{value}}`), trained until
  100% exact match (at most {p['stage1_max_epochs']} epochs), mixes: {', '.join(mix_label[s] for s in p['stage1'])};
  mix ratio {p['mix_ratio']:g} x |D_A| per epoch. Random words: {p['random_words']}-word passages from `/usr/share/dict/words`.
- **D_B (stage 2):** {'; '.join(d_b_label[b] for b in p['d_b'])}. Factoid D_B: {p['num_fr']} questions
  "What is the French word for '...'?" from Debian `dict-freedict-eng-fra`, trained to 100% (at most
  {p['stage2_epochs']} epochs); code: language-model chunks, {p['code_epochs']} epoch(s). Replay mixes
  {p['replay_ratio']:g} x |D_B| D_A examples per epoch.
- Exact match after `strip().lower()`, greedy decoding, on the training questions (the REMIX protocol).

## Results

{table}

D_A drop = accuracy after stage 1 minus accuracy after stage 2. Every number is read from the run's
`metrics.json` (`eval-<run>/d_a/metrics.json`, `eval-<run>/d_b/metrics.json`; see `results.json`), shown to
4 decimals; "—" = not applicable (code has no exact-match answers).

![chart]({name})

Stage-1 training (from each run's `train_log.jsonl`):
{chr(10).join(s1_lines)}

{timing_text(repo, out)}

## Outcome

{summary}

{chr(10).join('- ' + x for x in paras)}

{layers}## Reproduce

`make demo` (or `python3 scripts/demo.py{'' if profile == 'full' else ' --' + profile}`); a second run reuses every cached
stage. Logs and checkpoints of every stage are under `{out}/<stage>/`.
"""
    write_atomic(os.path.join(repo, out, "report.md"), md)
    write_atomic(os.path.join(repo, out, "results.json"),
                 json.dumps({"profile": profile, "rows": rows, "summary": summary}, indent=1, ensure_ascii=False))
    write_atomic(os.path.join(repo, out, "table.txt"), text_table(rows, mix_label) + "\n\n" + summary.replace("**", "") + "\n")


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def check(repo, out):
    """Verifies that every number of results.json equals the metrics.json value it cites."""
    res = read_json(os.path.join(repo, out, "results.json"))
    n = 0
    for row in res["rows"]:
        for k in ("d_a_after_stage1", "d_a_after_stage2", "drop", "d_b_after_stage2"):
            cell = row[k]
            if cell is None:
                continue
            path, field = cell["source"].split(": ", 1)
            metrics = read_json(os.path.join(repo, path))
            value = metrics
            for part in field.replace("]", "").replace("[", ".").split("."):
                value = value[int(part)] if part.isdigit() else value[part]
            if value != cell["value"]:
                sys.exit(f"error: {out}/results.json: {row['run']} {k} = {cell['value']} but {cell['source']} = {value}")
            n += 1
    print(f"ok: {n} numbers of {out}/results.json equal their metrics.json values")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--check", metavar="RUN_DIR", required=True,
                    help="verify RUN_DIR/results.json against the metrics.json files it cites")
    a = ap.parse_args()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    check(here, os.path.relpath(os.path.abspath(a.check), here))
