#!/usr/bin/env python3
"""Kill-and-resume stress test of train_llama (not part of `make test`).

Trains a tiny model once without interruption, then again with N SIGKILLs (default 20) at random
moments: startup, steps, and checkpoint writes (a checkpoint every step makes them a large share
of the run). After each kill the run is resumed with `--resume OUT` alone (or restarted with the
original command if no checkpoint was complete yet). At the end, the final weights and the
optimizer state (model.safetensors, optimizer.safetensors) must equal the uninterrupted run's byte
for byte. Prints one summary line; exit status 0 when they match.

    python3 dev/stress_kill_resume.py [--kills 20] [--seed 1] [--steps 120]

Needs ./train_llama and ./prepare_data (make). Work files go to build/stress/.
"""
import argparse, json, os, random, shutil, signal, subprocess, sys, time

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--kills", type=int, default=20)
ap.add_argument("--seed", type=int, default=1, help="seed of the kill times")
ap.add_argument("--steps", type=int, default=120)
ap.add_argument("--workdir", default="build/stress")
a = ap.parse_args()
os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
rng = random.Random(a.seed)
w = a.workdir
shutil.rmtree(w, ignore_errors=True)
os.makedirs(w)
tok = "test/fixtures/tokenizer/ours.json"
tj = json.load(open(tok))
ids = list(tj["model"]["vocab"].values()) + [t["id"] for t in tj.get("added_tokens", [])]
vocab = (max(ids) + 1 + 63) // 64 * 64  # as the tests: the tokenizer's size rounded up to 64
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab, "hidden_size": 64,
       "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
       "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
       "tie_word_embeddings": False, "initializer_range": 0.02, "bos_token_id": 0, "eos_token_id": 1}
json.dump(cfg, open(f"{w}/tiny.json", "w"))
for name, num, seed in (("kvr", 64, 1), ("other", 40, 2)):
    subprocess.run(["./prepare_data", "--mode", "kvr", "--num", str(num), "--seed", str(seed), "--tokenizer", tok,
                    "--output", f"{w}/{name}.bin", "--quiet"], check=True)


def train_cmd(out):
    return ["./train_llama", "--init", f"{w}/tiny.json", "--tokenizer", tok, "--data", f"{w}/kvr.bin", "--mix",
            f"other={w}/other.bin:0.5", "--steps", str(a.steps), "--batch-size", "8", "--micro-batch-size", "3",
            "--seq-len", "48", "--lr", "3e-3", "--save-every", "1", "--keep", "2", "--threads", "1", "--out", out,
            "--log-every", "1000000"]


def complete_checkpoints(out):
    if not os.path.isdir(out):
        return []
    return [d for d in os.listdir(out) if d.startswith("checkpoint-") and d[11:].isdigit()
            and os.path.exists(f"{out}/{d}/trainer_state.json")]


# The uninterrupted run; its startup (until the first checkpoint) and step times set the kill times.
t0 = time.time()
p = subprocess.Popen(train_cmd(f"{w}/straight"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while p.poll() is None and not os.path.isdir(f"{w}/straight/checkpoint-1"):
    time.sleep(0.005)
t_start = time.time() - t0
if p.wait() != 0:
    sys.exit("stress: the uninterrupted run failed")
t_ref = time.time() - t0

out = f"{w}/killed"
kills = in_save = starts = 0
log = open(f"{w}/killed.log", "w")
while True:
    cmd = ["./train_llama", "--resume", out] if complete_checkpoints(out) else train_cmd(out)
    starts += 1
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    if kills < a.kills:
        # startup, then on average half of the run's share per kill: the kills spread over the run
        delay = rng.uniform(0.0, t_start + (t_ref - t_start) / a.kills)
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills += 1
            if os.path.isdir(out) and any(d.endswith(".tmp") or ".old." in d for d in os.listdir(out)):
                in_save += 1
            continue
    else:
        p.wait()
    if p.returncode != 0:
        print(f"stress: a start exited with status {p.returncode}; see {w}/killed.log")
        sys.exit(1)
    if os.path.isdir(f"{out}/final"):
        break
if kills < a.kills:
    sys.exit(f"stress: the run finished after {kills} of {a.kills} kills; use more --steps")

same = all(open(f"{out}/final/{f}", "rb").read() == open(f"{w}/straight/final/{f}", "rb").read()
           for f in ("model.safetensors", "optimizer.safetensors"))
print(f"stress: {kills} SIGKILLs ({in_save} inside a checkpoint write), {starts} starts, {a.steps} steps: final "
      f"weights and optimizer state {'byte-identical to' if same else 'DIFFER from'} the uninterrupted run "
      f"({time.strftime('%Y-%m-%d', time.gmtime())}; uninterrupted run {t_ref:.1f} s, startup {t_start:.1f} s)")
sys.exit(0 if same else 1)
