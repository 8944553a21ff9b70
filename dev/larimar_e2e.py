#!/usr/bin/env python3
"""End-to-end Larimar proof on the CPU (docs/larimar.md, "End to end"): a tiny Larimar (encoder,
memory, decoder) trained from scratch on the demo's generic English text, a handful of new facts
written into a memory in one shot, and the facts' answers scored conditioned on that memory
against two controls. Not part of `make test` (a few CPU-minutes); the programs must be built
(`make train_llama larimar_edit eval_factoids prepare_data tokenize`).

    python3 dev/larimar_e2e.py [--out runs/larimar-e2e] [--steps 1500] [--threads 2]
    python3 dev/larimar_e2e.py --checkpoint RUN/final --facts-a A.jsonl [--facts-b B.jsonl] --out DIR
                               # stages 3-4 only, on a trained Larimar checkpoint and given facts

Stages (each a command line of the engine's programs, printed as it runs):
  1. generic text from Debian `fortunes` (dev/data/fortunes_to_jsonl.py), a byte-level BPE
     (./tokenize train), language-model chunks of --seq-len tokens (./prepare_data --mode text);
  2. ./train_llama --init DECODER.json: the decoder alone, --decoder-steps steps; then
     ./train_llama --model DECODER --larimar ENCODER.json --memory-slots K --beta B: episodes of
     --episode chunks, the four-term loss, the decoder trained on with the encoder and memory;
  3. facts "the password of NAME is WORD" (names and words drawn with --seed, never in the
     training text as such), written with ./larimar_edit write into memory A; the same number of
     other facts (other names, other words) into memory B;
  4. ./eval_factoids --score on the questions "the password of NAME is" with the gold answer WORD:
       plain        the decoder alone (no memory slot at all)
       memory A     conditioned on each question's readout from the memory holding its fact
       memory B     conditioned on a memory of other facts (does any memory help?)
     The memory query is the question (eval_factoids reads the readout of the question text), not
     the whole fact: recall from a partial cue, which training (reading back the episode's own
     texts) does not practise.
Outputs OUT/results.json and OUT/results.md (the table). The numbers are what they are: a model
this small, trained this briefly, may show a weak effect; the report says which.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
         "oscar", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yvonne", "zoe"]


def run(cmd, log=None):
    print("+", " ".join(cmd), flush=True)
    t0 = time.time()
    out = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if log:
        with open(log, "w") as f:
            f.write(out.stdout)
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-4000:])
        sys.exit(f"error: {cmd[0]} failed with status {out.returncode}")
    return out.stdout, time.time() - t0


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/larimar-e2e")
    ap.add_argument("--decoder-steps", type=int, default=1500, help="steps of the decoder alone first")
    ap.add_argument("--steps", type=int, default=1500, help="Larimar training steps (episodes)")
    ap.add_argument("--beta", type=float, default=0.0,
                    help="peak KL weight (IBM: 0.5; at this size it collapses the codes, see docs/larimar.md)")
    ap.add_argument("--episode", type=int, default=8, help="texts per episode")
    ap.add_argument("--seq-len", type=int, default=24, help="tokens per training text")
    ap.add_argument("--slots", type=int, default=16, help="memory slots K (< --code: a memory written by larimar_edit holds a K-dimensional subspace of codes; K >= Cz reads every code back)")
    ap.add_argument("--code", type=int, default=32, help="code size Cz")
    ap.add_argument("--hidden", type=int, default=64, help="decoder and encoder width")
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--facts", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--words", type=int, default=200000, help="pretraining words taken from fortunes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--checkpoint", help="score an existing Larimar checkpoint (train_llama --larimar) instead of "
                                         "making the data and training one")
    ap.add_argument("--facts-a", help="JSONL facts {question, answer, text} to write into memory A and to score "
                                      "(default: generated)")
    ap.add_argument("--facts-b", help="JSONL control facts for memory B (default: generated)")
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    os.makedirs(out, exist_ok=True)
    p = lambda *x: os.path.join(out, *x)

    # 1. Data and tokenizer.
    if not a.checkpoint and not os.path.exists(p("text.bin")):
        run([sys.executable, "dev/data/fortunes_to_jsonl.py", "--pretrain", p("pretrain"), "--heldout",
             p("heldout.jsonl"), "--num-heldout", "10", "--max-pretrain-words", str(a.words)])
        run(["./tokenize", "train", "--vocab-size", str(a.vocab), "--special", "<|begin_of_text|>,<|end_of_text|>",
             "--bos", "<|begin_of_text|>", "--output", p("tokenizer.json"), p("pretrain.txt")])
        run(["./prepare_data", "--mode", "text", "--text-mode", "lm", "--input", p("pretrain.jsonl"), "--seq-len",
             str(a.seq_len), "--tokenizer", p("tokenizer.json"), "--output", p("text.bin"), "--jsonl",
             p("text_examples.jsonl")])
    ck = os.path.abspath(a.checkpoint) if a.checkpoint else p("train", "final")
    train_s, log = None, []
    if not a.checkpoint:
        ck, train_s, log = train(a, p)
    fa, fb = facts(a, p)
    scores = score_all(a, p, ck, fa, fb)
    report(a, p, log, train_s, scores)


def train(a, p):
    tok = json.load(open(p("tokenizer.json")))
    vocab = len(tok["model"]["vocab"]) + len(tok.get("added_tokens", []))
    vocab = (vocab + 63) // 64 * 64
    dec = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=vocab, hidden_size=a.hidden,
               intermediate_size=a.hidden * 8 // 3 // 8 * 8, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=a.hidden // 4, tie_word_embeddings=True,
               max_position_embeddings=2 * a.seq_len, rms_norm_eps=1e-5, rope_theta=10000.0,
               initializer_range=0.02)
    enc = dict(dec, num_hidden_layers=2, larimar_code_size=a.code)
    json.dump(dec, open(p("decoder.json"), "w"), indent=2)
    json.dump(enc, open(p("encoder.json"), "w"), indent=2)

    # 2. Training: the decoder alone first (a plain language model), then the Larimar model around it.
    common = ["--device", "cpu", "--threads", str(a.threads), "--data", p("text.bin"), "--batch-size", str(a.episode),
              "--seq-len", str(a.seq_len), "--lr", str(a.lr), "--warmup-ratio", "0.02", "--log-every", "100",
              "--seed", str(a.seed)]
    if not os.path.exists(p("decoder", "final")):
        run(["./train_llama", "--init", p("decoder.json"), "--tokenizer", p("tokenizer.json"), "--steps",
             str(a.decoder_steps), "--out", p("decoder")] + common, log=p("decoder.out"))
    ck = p("train", "final")
    train_s = None
    if not os.path.exists(ck):
        _, train_s = run(["./train_llama", "--model", p("decoder", "final"), "--larimar", p("encoder.json"),
                          "--memory-slots", str(a.slots), "--beta", str(a.beta), "--steps", str(a.steps), "--out",
                          p("train"), "--log", p("train_log.jsonl")] + common, log=p("train.out"))
    return ck, train_s, [j for j in read_jsonl(p("train_log.jsonl")) if j.get("event") == "step"]


# 3. Facts: "the password of NAME is WORD" with words of the training text (or a fixed list), or given.
def facts(a, p):
    if a.facts_a:
        fa = read_jsonl(a.facts_a)
        fb = read_jsonl(a.facts_b) if a.facts_b else []
    else:
        rng = random.Random(a.seed)
        src = read_jsonl(p("pretrain.jsonl"))[:2000] if os.path.exists(p("pretrain.jsonl")) else \
            [{"text": "apple river stone garden window silver morning candle forest violin orange pepper "
                      "island marble thunder copper meadow lantern harbor pillow"}]
        words = sorted({w for t in src for w in t["text"].lower().split() if w.isalpha() and 4 <= len(w) <= 8})
        names = rng.sample(NAMES, 2 * a.facts)
        answers = rng.sample(words, 2 * a.facts)
        made = [{"question": f"the password of {n} is", "answer": w, "text": f"the password of {n} is {w}"}
                for n, w in zip(names, answers)]
        fa, fb = made[:a.facts], made[a.facts:]
    write_jsonl(p("facts_a.jsonl"), fa)
    if fb:
        write_jsonl(p("facts_b.jsonl"), fb)
    return fa, fb


# 4. Memories (larimar_edit write, one episode each) and scoring (eval_factoids --score).
def score_all(a, p, ck, fa, fb):
    for name in ("a", "b") if fb else ("a",):
        if os.path.exists(p(f"memory_{name}.safetensors")):
            os.remove(p(f"memory_{name}.safetensors"))
        run(["./larimar_edit", "write", "--encoder", os.path.join(ck, "encoder"), "--params",
             os.path.join(ck, "larimar.safetensors"), "--memory", p(f"memory_{name}.safetensors"), "--facts",
             p(f"facts_{name}.jsonl")])
    results = {}
    def score(label, extra):
        d = p("eval", label)
        run(["./eval_factoids", "--model", ck, "--data", p("facts_a.jsonl"), "--template", "plain", "--score",
             "--max-new-tokens", "4", "--device", "cpu", "--threads", str(a.threads), "--quiet", "--out", d] + extra)
        rows = read_jsonl(os.path.join(d, "predictions.jsonl"))
        results[label] = {
            "accuracy": sum(r["correct"] for r in rows) / len(rows),
            "answer_logprob_mean": sum(r["answer_logprob_mean"] for r in rows) / len(rows),
            "answer_logprob_sum": sum(r["answer_logprob_sum"] for r in rows) / len(rows),
            "first_token_rank_median": sorted(r["first_token_rank"] for r in rows)[len(rows) // 2],
        }
    score("plain", [])
    score("memory A (its facts)", ["--larimar", ck, "--memory", p("memory_a.safetensors")])
    if fb:
        score("memory B (other facts)", ["--larimar", ck, "--memory", p("memory_b.safetensors")])
    return results


def report(a, p, log, train_s, results):
    first, last = log[:50], log[-50:]
    mean = lambda xs, k: sum(x[k] for x in xs) / len(xs)
    summary = {
        "args": vars(a),
        "training": {k: {"first50": mean(first, k), "last50": mean(last, k)}
                     for k in ("loss", "ce_read", "ce_code", "ce_zero", "kl")} if log else {},
        "training_seconds": train_s,
        "scores": results,
    }
    json.dump(summary, open(p("results.json"), "w"), indent=2)
    lines = ["# Larimar end to end (dev/larimar_e2e.py)", "",
             f"Training: the decoder alone for {a.decoder_steps} steps, then {a.steps} Larimar episodes of "
             f"{a.episode} texts of {a.seq_len} tokens, peak beta {a.beta}; memory {a.slots} slots, code {a.code}; "
             f"decoder and encoder width {a.hidden}.", "",
             "| term | mean of the first 50 steps | mean of the last 50 steps |", "|---|---|---|"]
    for k, v in summary["training"].items():
        lines.append(f"| {k} | {v['first50']:.4f} | {v['last50']:.4f} |")
    n = len(read_jsonl(p("facts_a.jsonl")))
    lines += ["", f"{n} facts, each answer scored after its question:", "",
              "| condition | exact match | mean log-prob per answer token | log-prob of the answer | median first-token rank |",
              "|---|---|---|---|---|"]
    for k, v in results.items():
        lines.append(f"| {k} | {v['accuracy']:.2f} | {v['answer_logprob_mean']:.4f} | {v['answer_logprob_sum']:.4f} | "
                     f"{v['first_token_rank_median']} |")
    open(p("results.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
