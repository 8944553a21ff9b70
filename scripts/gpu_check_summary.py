#!/usr/bin/env python3
"""Summary of a scripts/gpu_check.sh run: reads its work directory (stages.jsonl, the stage logs,
kernel_bench.json, card.json, the training logs, ncu.csv) and writes gpu_check.json and
gpu_check.md into the output directory. Standard library only (runs on the bare GPU machine).

Also writes the Llama-3.2-1B-shaped config of the training benchmark (--write-config PATH), so the
shape lives in one place (LLAMA_3_2_1B below) with the FLOP count that the MFU uses.

MFU = model FLOPs per second / the card's dense bf16 peak (datasheet, dev/cuda/roofline.h via
kernel_bench --card-json), also against the bf16 matmul rate kernel_bench measured on the card.
Model FLOPs per trained token (PaLM appendix B convention, no recomputation counted):
  6 x (matmul parameters: every linear layer and the LM head; embedding lookups excluded)
  + 12 x layers x q_heads x head_dim x (visible keys per query: (example length + 1) / 2, causal).
"""
import argparse
import csv
import io
import json
import os
import re
import statistics
import sys
import time

LLAMA_3_2_1B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192},
    "tie_word_embeddings": True, "initializer_range": 0.02, "bos_token_id": 128000, "eos_token_id": 128001,
    "torch_dtype": "bfloat16",
}
# The two training-benchmark runs of gpu_check.sh: log file, examples per step, what it is.
TRAIN_RUNS = [("remix", "train_remix.jsonl", 32, "REMIX batch: 32 packed factoid examples"),
              ("seq2048", "train_2048.jsonl", 4, "4 x 2048 tokens")]
WARMUP_STEPS = 2  # steps left out of the medians (cuBLASLt heuristics, first allocations)


def matmul_params(c):
    C, I, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    H, KV = c["num_attention_heads"], c["num_key_value_heads"]
    D = c.get("head_dim", C // H)
    per_layer = C * (H + 2 * KV) * D + H * D * C + C * 2 * I + I * C
    return L * per_layer + V * C


def train_flops_per_token(c, example_len):
    H = c["num_attention_heads"]
    D = c.get("head_dim", c["hidden_size"] // H)
    return 6 * matmul_params(c) + 12 * c["num_hidden_layers"] * H * D * (example_len + 1) / 2


def read_jsonl(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    return rows


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def read_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def environment(log):
    env = {}
    for line in read_text(log).splitlines():
        m = re.match(r"^([a-z_]+)=(.*)$", line)
        if m:
            env[m.group(1)] = m.group(2)
        elif line.startswith("nvidia-smi: ") and "memory.total" not in line:
            env["nvidia_smi"] = line[len("nvidia-smi: "):]
    return env


def test_totals(log):
    """The last 'N passed, M failed' line of test/run_tests.sh, and its per-binary lines."""
    text = read_text(log)
    totals = re.findall(r"^(\d+) passed, (\d+) failed$", text, re.M)
    binaries = re.findall(r"^(test_\S+)\s+(\d+) passed\s+(\d+) failed\s+(\d+)s\s+(ok|FAIL)$", text, re.M)
    if not totals:
        return None
    p, f = totals[-1]
    return {"passed": int(p), "failed": int(f),
            "binaries": [{"name": b[0], "passed": int(b[1]), "failed": int(b[2]), "seconds": int(b[3])}
                         for b in binaries]}


def train_summary(path, examples, what, config, peak_tflops, measured_tflops):
    steps = [r for r in read_jsonl(path) if r.get("event") == "step"]
    if not steps:
        return None
    timed = steps[WARMUP_STEPS:] or steps
    tok_s = statistics.median(r["tokens_per_s"] for r in timed)
    tokens = statistics.median(r["tokens"] for r in timed)
    fpt = train_flops_per_token(config, tokens / examples)
    out = {"what": what, "steps": len(steps), "timed_steps": len(timed), "tokens_per_step": tokens,
           "tokens_per_s": tok_s, "step_ms": 1e3 * tokens / tok_s if tok_s else None,
           "flops_per_token": fpt, "model_tflops": fpt * tok_s / 1e12,
           "losses": [r.get("loss") for r in steps]}
    if peak_tflops:
        out["mfu"] = fpt * tok_s / (peak_tflops * 1e12)
    if measured_tflops:
        out["mfu_vs_measured_matmul"] = fpt * tok_s / (measured_tflops * 1e12)
    return out


def decode_summary(log):
    m = re.findall(r"(\d+) tokens decoded in ([0-9.]+)s \(([0-9.]+) tok/s\)", read_text(log))
    if not m:
        return None
    tokens, secs, rate = m[-1]
    return {"tokens": int(tokens), "seconds": float(secs), "tokens_per_s": float(rate),
            "what": "eval_factoids --device cuda, batch 32, up to 64 new tokens, Llama-3.2-1B shape, random weights"}


def ncu_summary(path, top=10):
    text = read_text(path)
    lines = [l for l in text.splitlines() if l.startswith('"')]
    if not lines:
        return None
    kernels = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        name = row.get("Kernel Name", "?")
        k = kernels.setdefault(name, {"launches": set(), "metrics": {}})
        k["launches"].add(row.get("ID"))
        try:
            value = float(row.get("Metric Value", "").replace(",", ""))
        except ValueError:
            continue
        metric, unit = row.get("Metric Name", ""), row.get("Metric Unit", "")
        if metric == "gpu__time_duration.sum":  # to microseconds
            value *= {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}.get(unit, 1.0)
            metric = "duration_us"
        k["metrics"].setdefault(metric, []).append(value)
    rows = []
    for name, k in kernels.items():
        m = k["metrics"]
        mean = lambda key: statistics.mean(m[key]) if m.get(key) else None
        rows.append({"kernel": name, "launches": len(k["launches"]),
                     "total_us": sum(m.get("duration_us", [])), "mean_us": mean("duration_us"),
                     "dram_pct": mean("dram__throughput.avg.pct_of_peak_sustained_elapsed"),
                     "sm_pct": mean("sm__throughput.avg.pct_of_peak_sustained_elapsed"),
                     "occupancy_pct": mean("sm__warps_active.avg.pct_of_peak_sustained_active"),
                     "registers": mean("launch__registers_per_thread")})
    rows.sort(key=lambda r: -r["total_us"])
    return rows[:top]


def fmt(x, spec=".1f", none="-"):
    return none if x is None else format(x, spec)


def markdown(s):
    env, out = s["environment"], []
    out.append("# GPU check: %s (%s), %s" % (env.get("gpu_name") or "no GPU", env.get("arch", "?"), s["date"]))
    out.append("")
    out.append("Commit %s, nvcc %s, g++ %s, %s CPUs, bundle %s, CPU GEMM %s.%s Total %ds of a %ds budget."
               % (env.get("git", "?"), env.get("nvcc", "?"), env.get("gxx", "?"), env.get("cpus", "?"),
                  env.get("bundle", "?"), env.get("gemm", "?"),
                  " **Dry run** (no GPU stages ran)." if s["dry_run"] else "", s["total_s"], s["budget_s"]))
    out.append("")
    out.append("| stage | status | seconds | limit |")
    out.append("| --- | --- | ---: | ---: |")
    for st in s["stages"]:
        out.append("| %s | %s | %d | %d |" % (st["name"], st["status"], st["seconds"], st["limit_s"]))
    for key, title in (("gpu_tests", "GPU tests (test_cuda_kernels, test_cuda_train)"),
                       ("cpu_vs_cuda", "CPU vs CUDA programs (test_cuda_cli)")):
        t = s.get(key)
        if t:
            out.append("")
            out.append("%s: %d passed, %d failed (%s)." % (title, t["passed"], t["failed"],
                       ", ".join("%s %ds" % (b["name"], b["seconds"]) for b in t["binaries"])))
    card = s.get("card")
    if s.get("train"):
        out.append("")
        out.append("## Training step, Llama-3.2-1B shape (random init), train_llama --device cuda")
        out.append("")
        peak = ("%s dense bf16 %.0f TFLOP/s, datasheet" % (card["card"], card["bf16_tflops"])) if card else "peak unknown"
        out.append("| batch | tokens/step | tokens/s | step ms | model TFLOP/s | MFU (%s) | MFU vs measured matmul |" % peak)
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, t in s["train"].items():
            out.append("| %s | %.0f | %.0f | %s | %.1f | %s | %s |" % (
                t["what"], t["tokens_per_step"], t["tokens_per_s"], fmt(t["step_ms"]), t["model_tflops"],
                fmt(100 * t["mfu"], ".1f") + "%" if "mfu" in t else "-",
                fmt(100 * t["mfu_vs_measured_matmul"], ".1f") + "%" if "mfu_vs_measured_matmul" in t else "-"))
    if s.get("decode"):
        d = s["decode"]
        out.append("")
        out.append("Greedy decode: %.0f tokens/s (%d tokens in %.2fs; %s)." % (d["tokens_per_s"], d["tokens"],
                                                                               d["seconds"], d["what"]))
    kb = s.get("kernels")
    if kb:
        out.append("")
        out.append("## Kernels against the %s roofline (farthest from it first)" % kb["roofline"].get("card", "?"))
        out.append("")
        out.append("| family | case | shape | ms | GB/s | TFLOP/s | roof | % of roof |")
        out.append("| --- | --- | --- | ---: | ---: | ---: | --- | ---: |")
        for r in kb["ceilings"] + kb["farthest"]:
            out.append("| %s | %s | %s | %.4f | %.0f | %.2f | %s | %.1f%% |" % (
                r["family"], r["case"], r["shape"], r["ms"], r["gb_s"], r["tflops"], r["roof"], r["pct_of_roof"]))
        if kb["not_finite"]:
            out.append("")
            out.append("**Outputs not finite:** " + ", ".join(kb["not_finite"]))
    if s.get("ncu"):
        out.append("")
        out.append("## ncu (--clock-control none), heaviest kernels of kernel_bench --shape llama8b")
        out.append("")
        out.append("| kernel | launches | total us | DRAM % | SM % | occupancy % | registers |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in s["ncu"]:
            out.append("| %s | %d | %.0f | %s | %s | %s | %s |" % (r["kernel"][:60], r["launches"], r["total_us"],
                       fmt(r["dram_pct"]), fmt(r["sm_pct"]), fmt(r["occupancy_pct"]), fmt(r["registers"], ".0f")))
    failed = [st for st in s["stages"] if st["status"] in ("fail", "timeout")]
    if failed:
        out.append("")
        out.append("## Failed stages")
        for st in failed:
            out.append("")
            out.append("%s (%s, rc %d): `%s`" % (st["name"], st["status"], st["rc"], st["command"][:300]))
            out.append("")
            out.append("```")
            out.extend(st.get("log_tail", []))
            out.append("```")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", help="gpu_check.sh's work directory")
    ap.add_argument("--out", help="where gpu_check.json and gpu_check.md go")
    ap.add_argument("--total-seconds", type=int, default=0)
    ap.add_argument("--budget", type=int, default=0)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--write-config", metavar="PATH", help="write the Llama-3.2-1B-shaped config.json and exit")
    a = ap.parse_args()
    if a.write_config:
        with open(a.write_config, "w") as f:
            json.dump(LLAMA_3_2_1B, f, indent=2)
        return 0
    if not a.work or not a.out:
        ap.error("--work and --out are required")
    w = a.work
    stages = read_jsonl(os.path.join(w, "stages.jsonl"))
    for st in stages:
        st["log_tail"] = read_text(os.path.join(w, st["log"])).splitlines()[-25:]
    card = read_json(os.path.join(w, "card.json"))
    kb_json = read_json(os.path.join(w, "kernel_bench.json"))
    s = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "dry_run": a.dry_run,
         "total_s": a.total_seconds, "budget_s": a.budget,
         "environment": environment(os.path.join(w, "logs", "environment.log")),
         "stages": stages, "card": card,
         "gpu_tests": test_totals(os.path.join(w, "logs", "gpu-tests.log")),
         "cpu_vs_cuda": test_totals(os.path.join(w, "logs", "cpu-vs-cuda.log")),
         "estimates_note": "every figure here is measured by this run; none is an estimate"}
    measured = None
    if kb_json:
        results = kb_json.get("results", [])
        ceilings = [r for r in results if r["family"] == "ceilings"]
        for r in ceilings:
            if r["roof"] == "bf16-tc":
                measured = r["tflops"]
        others = sorted((r for r in results if r["family"] != "ceilings"), key=lambda r: r["pct_of_roof"])
        s["kernels"] = {"roofline": kb_json.get("roofline", {}), "ceilings": ceilings, "farthest": others[:12],
                        "not_finite": ["%s / %s (%s)" % (r["family"], r["case"], r["shape"])
                                       for r in results if not r["outputs_ok"]],
                        "cases": len(results)}
        if not card:
            card = kb_json.get("roofline")
            s["card"] = card
    peak = card.get("bf16_tflops") if card else None
    train = {}
    for name, log, examples, what in TRAIN_RUNS:
        t = train_summary(os.path.join(w, log), examples, what, LLAMA_3_2_1B, peak, measured)
        if t:
            train[name] = t
    s["train"] = train
    s["decode"] = decode_summary(os.path.join(w, "logs", "decode.log"))
    s["ncu"] = ncu_summary(os.path.join(w, "ncu.csv"))
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "gpu_check.json"), "w") as f:
        json.dump(s, f, indent=1)
    with open(os.path.join(a.out, "gpu_check.md"), "w") as f:
        f.write(markdown(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
