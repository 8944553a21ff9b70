#!/usr/bin/env bash
# The demo's REMIX grid at the paper's scale: a real Llama (Llama-3-8B or any Hugging Face Llama
# directory) on a GPU machine, with user-provided QA data (PopQA / TriviaQA-style JSONL).
#
#   scripts/gpu_remix.sh --model /models/Meta-Llama-3-8B --d-b popqa=popqa_2000.jsonl \
#       --d-b triviaqa=triviaqa_2000.jsonl --generic generic_docs.jsonl [--out runs/gpu] [--dry-run]
#
# Grid (same as `make demo`, with the REMIX protocol of docs/design.md, "REMIX reference protocol"):
#   stage 1  D_A = 2,000 generated KVR pairs (or --d-a FILE.jsonl), 20 epochs, under the mixes
#            none | random words | generic | random + generic, each at every --ratios value (1 2 4);
#   stage 2  every D_B from every stage-1 checkpoint: no mixing, generic mixing (each ratio), and,
#            from the unmixed stage-1 checkpoint, replay of --replay-ratio x |D_B| D_A examples;
#            QA stops once the step loss has been below 1e-4 ten times (REMIX), else 20 epochs;
#   eval     ./eval_factoids on D_A (stage-1 and stage-2 checkpoints: accuracy and forgetting) and
#            on D_B, writing metrics.json + predictions.jsonl per run. A non-factoid D_B (chat,
#            code, math) is scored by its held-out loss and perplexity, in the D_A table beside the
#            forgetting; GSM8K also by final-answer exact match on its held-out split.
#   layers   ./analyze_layers on D_A (docs/analysis.md): logit lens and l* of every stage-1
#            checkpoint with its layer-swap profile against --model, and the lens of every stage-2
#            checkpoint trained without mixing (OUT/layers/*/metrics.json and charts).
# Hyper-parameters (REMIX): AdamW lr 5e-5, betas (0.9, 0.95), eps 1e-8, weight decay 0, clip 1.0,
# cosine schedule with 5% warmup, batch 32 examples, sequence length 2048, Tulu chat template
# (`<|user|>\n{prompt}\n<|assistant|>\n{answer}<eos>`), loss on the answer and EOS only.
#
# Inputs:
#   --d-b NAME=FILE    QA JSONL with question/answer fields (PopQA's possible_answers, TriviaQA's
#                      {"value", "aliases"} and plain strings or lists are understood; repeatable).
#   --d-b NAME=KIND:FILE  a non-factoid D_B: KIND chat (messages / ShareGPT conversations, Tulu
#                      chat template) or a prepare_data preset: evolcode, apps, gsm8k, math (Tulu
#                      template). The last --heldout N examples (default 200) are never trained on.
#   --generic FILE     generic pretraining documents (JSONL with "text", or plain text with
#                      documents separated by blank lines), e.g. a slice of the model's pretraining
#                      corpus; documents of >= 100 words become `Complete the following partial
#                      passage:` + words 0-50 -> words 50-100.
#   --words FILE       word list for random-word passages (default /usr/share/dict/words).
# A stage whose final checkpoint exists is skipped, so the script can be re-run after a failure.
# --dry-run prints the commands; --no-build skips `make`; --device, --epochs, --lr, --batch-size,
# --seq-len, --num-kvr, --ratios, --replay-ratio, --template override the protocol's values.
# Extra train_llama options (e.g. --micro-batch-size 4 for 80 GB, --save-every 500) go after "--".
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

model=""; out="runs/gpu"; generic=""; words="/usr/share/dict/words"; d_a=""; dry=0
num_kvr=2000; ratios="1 2 4"; replay_ratio=0.2; epochs=20; lr=5e-5; batch=32; seq_len=2048; heldout_n=200
device=cuda; template=tulu; build=1
d_bs=(); extra=()
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --d-a) d_a="$2"; shift 2 ;;
    --d-b) d_bs+=("$2"); shift 2 ;;
    --generic) generic="$2"; shift 2 ;;
    --words) words="$2"; shift 2 ;;
    --num-kvr) num_kvr="$2"; shift 2 ;;
    --ratios) ratios="$2"; shift 2 ;;
    --replay-ratio) replay_ratio="$2"; shift 2 ;;
    --heldout) heldout_n="$2"; shift 2 ;;
    --epochs) epochs="$2"; shift 2 ;;
    --lr) lr="$2"; shift 2 ;;
    --batch-size) batch="$2"; shift 2 ;;
    --seq-len) seq_len="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --template) template="$2"; shift 2 ;;   # tulu (default) or a template file for all data
    --dry-run) dry=1; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "gpu_remix.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$model" ] || { echo "gpu_remix.sh: --model DIR is required (see --help)" >&2; exit 2; }
[ -n "$generic" ] || { echo "gpu_remix.sh: --generic FILE is required (see --help)" >&2; exit 2; }
[ ${#d_bs[@]} -gt 0 ] || { echo "gpu_remix.sh: give at least one --d-b NAME=FILE (see --help)" >&2; exit 2; }
[ -f "$model/tokenizer.json" ] || { echo "gpu_remix.sh: $model/tokenizer.json is missing" >&2; exit 2; }

cd "$here"
run() {  # prints the command; runs it unless --dry-run
  echo "+ $*"
  [ $dry = 1 ] || "$@"
}
train() {  # train OUT_DIR ARGS...: skipped when OUT_DIR/final exists
  local dir="$1"; shift
  if [ -f "$dir/final/model.safetensors" ]; then echo "= $dir/final exists, skipped"; return; fi
  run ./train_llama --device "$device" --batch-size "$batch" --seq-len "$seq_len" --lr "$lr" \
    --schedule cosine --warmup-ratio 0.05 --beta1 0.9 --beta2 0.95 --eps 1e-8 --weight-decay 0 \
    --clip 1.0 --out "$dir" --log "$dir.log.jsonl" "$@" ${extra[@]+"${extra[@]}"}
}
evaluate() {  # evaluate OUT_DIR DATA|"" MODEL... [--template T] [--heldout SHARD] [--match M] ...
  local dir="$1" data="$2"; shift 2
  if [ -f "$dir/metrics.json" ]; then echo "= $dir/metrics.json exists, skipped"; return; fi
  local models=() opts=()
  [ -n "$data" ] && opts+=(--data "$data")
  while [ $# -gt 0 ]; do
    case "$1" in --*) opts+=("$1" "$2"); shift 2 ;; *) models+=(--model "$1"); shift ;; esac
  done
  run ./eval_factoids --device "$device" "${models[@]}" ${opts[@]+"${opts[@]}"} --out "$dir"
}
d_b_kind() {  # NAME=[KIND:]FILE -> KIND (qa when none)
  local file="${1#*=}"
  case "$file" in chat:*|evolcode:*|apps:*|gsm8k:*|math:*) echo "${file%%:*}" ;; *) echo qa ;; esac
}
analyze() {  # analyze OUT_DIR [--reference DIR] MODEL...: logit lens (and layer swaps) on D_A
  local dir="$1"; shift
  if [ -f "$dir/metrics.json" ]; then echo "= $dir/metrics.json exists, skipped"; return; fi
  local models=() opts=()
  while [ $# -gt 0 ]; do
    if [ "$1" = --reference ]; then opts+=(--reference "$2"); shift 2; else models+=(--model "$1"); shift; fi
  done
  run ./analyze_layers --device "$device" "${models[@]}" --data "$out/data/d_a.bin" ${opts[@]+"${opts[@]}"} --out "$dir"
}

[ $dry = 1 ] || [ $build = 0 ] || make -j"$(nproc)" all
mkdir -p "$out/data"
tok="$model/tokenizer.json"

# Data: shards with the model's tokenizer and the REMIX prompts inside the Tulu chat template
# (template files; --template PATH replaces them).
if [ "$template" = tulu ]; then
  printf '<|user|>\nThe value of key {key} is?\n<|assistant|>\n{value}{eos}\n' > "$out/data/kvr_template.txt"
  printf '<|user|>\n{question}\nThe answer is:\n<|assistant|>\n{answer}{eos}\n' > "$out/data/qa_template.txt"
  kvr_template="$out/data/kvr_template.txt"; qa_template="$out/data/qa_template.txt"
else
  kvr_template="$template"; qa_template="$template"
fi
if [ -n "$d_a" ]; then
  run ./prepare_data --mode qa --input "$d_a" --template "$qa_template" --tokenizer "$tok" --output "$out/data/d_a.bin"
else
  run ./prepare_data --mode kvr --num "$num_kvr" --seed 1 --template "$kvr_template" --tokenizer "$tok" --output "$out/data/d_a.bin"
fi
run ./prepare_data --mode random-words --num $((num_kvr * 4)) --length 50 --seed 2 --word-list "$words" \
  --tokenizer "$tok" --output "$out/data/random.bin"
run ./prepare_data --mode text --text-mode remix --input "$generic" --tokenizer "$tok" --output "$out/data/generic.bin"
for spec in "${d_bs[@]}"; do
  name="${spec%%=*}"; file="${spec#*=}"; kind="$(d_b_kind "$spec")"; file="${file#"$kind":}"
  case "$kind" in
    qa) run ./prepare_data --mode qa --input "$file" --template "$qa_template" --tokenizer "$tok" --output "$out/data/$name.bin" ;;
    chat) run ./prepare_data --mode chat --chat-template tulu --max-tokens "$seq_len" --heldout "$heldout_n" \
            --input "$file" --tokenizer "$tok" --output "$out/data/$name.bin" ;;
    *) run ./prepare_data --mode qa --preset "$kind" --template tulu --heldout "$heldout_n" --input "$file" \
         --tokenizer "$tok" --output "$out/data/$name.bin" ;;
  esac
done

# Stage 1: D_A to memorization under each mix and ratio (KVR trains all epochs, as in REMIX).
stage1=("none")
for r in $ratios; do stage1+=("random-$r" "generic-$r" "remix-$r"); done
for s1 in "${stage1[@]}"; do
  mix=(); r="${s1##*-}"
  case "$s1" in
    random-*) mix=(--mix "random=$out/data/random.bin:$r") ;;
    generic-*) mix=(--mix "generic=$out/data/generic.bin:$r") ;;
    remix-*) mix=(--mix "random=$out/data/random.bin:$r" --mix "generic=$out/data/generic.bin:$r") ;;
  esac
  train "$out/stage1-$s1" --model "$model" --data "$out/data/d_a.bin" --epochs "$epochs" ${mix[@]+"${mix[@]}"}
done

# Where the stage-1 facts are stored, and which layers they depend on (swaps against the base model).
stage1_final=(); for s1 in "${stage1[@]}"; do stage1_final+=("$out/stage1-$s1/final"); done
analyze "$out/layers/stage1" --reference "$model" "${stage1_final[@]}"

# Stage 2 and evaluation.
for spec in "${d_bs[@]}"; do
  name="${spec%%=*}"; kind="$(d_b_kind "$spec")"
  d_b_metric=(); [ "$kind" = qa ] || d_b_metric=(--heldout "$out/data/$name-heldout.bin")
  for s1 in "${stage1[@]}"; do
    variants=("none"); for r in $ratios; do variants+=("generic-$r"); done
    [ "$s1" = none ] && variants+=("replay")
    for s2 in "${variants[@]}"; do
      mix=()
      case "$s2" in
        generic-*) mix=(--mix "generic=$out/data/generic.bin:${s2#generic-}") ;;
        replay) mix=(--mix "replay=$out/data/d_a.bin:$replay_ratio") ;;
      esac
      dir="$out/stage2-$name-from-$s1-mix-$s2"
      train "$dir" --model "$out/stage1-$s1/final" --data "$out/data/$name.bin" --epochs "$epochs" \
        --stop-loss 1e-4 --stop-loss-count 10 ${mix[@]+"${mix[@]}"}
      # D_A questions come from its shard (exact training prompts): a stage-2 checkpoint records
      # the D_B template. D_B uses its JSONL (all gold answers) with the QA template.
      # A non-factoid D_B's held-out perplexity sits in the same table, beside D_A's forgetting.
      evaluate "$out/eval/$name-from-$s1-mix-$s2/d_a" "$out/data/d_a.bin" "$out/stage1-$s1/final" "$dir/final" \
        ${d_b_metric[@]+"${d_b_metric[@]}"}
      case "$kind" in
        qa) evaluate "$out/eval/$name-from-$s1-mix-$s2/d_b" "$out/data/$name.jsonl" "$dir/final" --template "$qa_template" ;;
        gsm8k) evaluate "$out/eval/$name-from-$s1-mix-$s2/d_b" "$out/data/$name-heldout.jsonl" "$dir/final" \
                 --template tulu --match gsm8k --max-new-tokens 320 ;;
      esac
    done
  done
done
# Where the stage-1 facts are after stage 2 (no mixing in stage 2), per D_B.
for spec in "${d_bs[@]}"; do
  name="${spec%%=*}"; finals=()
  for s1 in "${stage1[@]}"; do finals+=("$out/stage2-$name-from-$s1-mix-none/final"); done
  analyze "$out/layers/stage2-$name" "${finals[@]}"
done
echo "done: metrics in $out/eval/*/d_a/metrics.json (D_A before/after, forgetting; a non-factoid D_B's held-out loss and perplexity) and */d_b/metrics.json;"
echo "      layers in $out/layers/*/metrics.json"
