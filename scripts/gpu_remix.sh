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
#   eval     ./eval_factoids --score on D_A (stage-1 and stage-2 checkpoints: accuracy, forgetting,
#            gold-answer log-prob and its change, top-1 share, first-token rank) and on D_B. A
#            non-factoid D_B (chat, code, math) is scored by its held-out loss and perplexity, in
#            the D_A table beside the forgetting; GSM8K also by final-answer exact match;
#   savings  D_A relearned from every stage-2 checkpoint with its stage-1 recipe until 100% exact
#            match (--no-savings skips it), against the step at which stage 1 first reached 100%
#            (stage 1 evaluates D_A every epoch and trains all its epochs, as REMIX does);
#   seeds    every run for each of --seeds (default "1 2 3": the D_A set, the random words and the
#            data order); stage 2 at each of --lrs (default 5e-5; a list gives the frontier);
#   summary  scripts/gpu_summary.py: means with 95% t-intervals over seeds, paired differences
#            against the unmixed runs and verdicts by the demo's rule, in OUT/summary.md.
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
# --dry-run prints the commands; --no-build skips `make`; --device, --epochs, --lr (stage 1),
# --lrs (stage 2), --seeds, --batch-size, --seq-len, --num-kvr, --ratios, --replay-ratio, --template
# override the protocol's values.
# Several GPUs (docs/distributed.md): --launcher none|mpirun|srun|torchrun and --nproc N start each
# training run as N processes, one GPU each (REMIX's setup: --launcher mpirun --nproc 2 --zero 2
# --optimizer-state bf16); --zero S (default 0) is the ZeRO stage, --optimizer-state fp32|bf16
# the AdamW moments. Evaluation and the layer analysis run as one process.
# Extra train_llama options (e.g. --micro-batch-size 4 for 80 GB, --save-every 500) go after "--".
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

model=""; out="runs/gpu"; generic=""; words="/usr/share/dict/words"; d_a=""; dry=0
num_kvr=2000; ratios="1 2 4"; replay_ratio=0.2; epochs=20; lr=5e-5; batch=32; seq_len=2048
device=cuda; template=tulu; build=1; seeds="1 2 3"; lrs=""; savings=1; heldout_n=200
launcher=none; nproc=1; zero=0; opt_state=fp32
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
    --lrs) lrs="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --no-savings) savings=0; shift ;;
    --batch-size) batch="$2"; shift 2 ;;
    --seq-len) seq_len="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --template) template="$2"; shift 2 ;;   # tulu (default) or a template file for all data
    --launcher) launcher="$2"; shift 2 ;;
    --nproc) nproc="$2"; shift 2 ;;
    --zero) zero="$2"; shift 2 ;;
    --optimizer-state) opt_state="$2"; shift 2 ;;
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
[ -n "$lrs" ] || lrs="$lr"
. "$here/scripts/launcher.sh"
launcher_setup "$launcher" "$nproc" "" >/dev/null || exit 2  # checks the options before anything runs

cd "$here"
run() {  # prints the command; runs it unless --dry-run
  echo "+ $*"
  [ $dry = 1 ] || "$@"
}
train() {  # train OUT_DIR LR ARGS...: skipped when OUT_DIR/final exists
  local dir="$1" rate="$2"; shift 2
  if [ -f "$dir/final/model.safetensors" ]; then echo "= $dir/final exists, skipped"; return; fi
  launcher_setup "$launcher" "$nproc" "$dir.rendezvous"
  run ${LAUNCH[@]+"${LAUNCH[@]}"} ./train_llama --device "$device" --batch-size "$batch" --seq-len "$seq_len" --lr "$rate" \
    --schedule cosine --warmup-ratio 0.05 --beta1 0.9 --beta2 0.95 --eps 1e-8 --weight-decay 0 \
    --clip 1.0 --zero "$zero" --optimizer-state "$opt_state" ${DIST[@]+"${DIST[@]}"} \
    --out "$dir" --log "$dir.log.jsonl" "$@" ${extra[@]+"${extra[@]}"}
}
evaluate() {  # evaluate OUT_DIR DATA|"" MODEL... [--template T] [--heldout SHARD] [--match M] ...
  local dir="$1" data="$2"; shift 2
  if [ -f "$dir/metrics.json" ]; then echo "= $dir/metrics.json exists, skipped"; return; fi
  local models=() opts=()
  [ -n "$data" ] && opts+=(--data "$data")
  while [ $# -gt 0 ]; do
    case "$1" in --*) opts+=("$1" "$2"); shift 2 ;; *) models+=(--model "$1"); shift ;; esac
  done
  run ./eval_factoids --device "$device" "${models[@]}" --score --quiet ${opts[@]+"${opts[@]}"} --out "$dir"
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
  run ./analyze_layers --device "$device" "${models[@]}" --data "$da" ${opts[@]+"${opts[@]}"} --out "$dir"
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
for seed in $seeds; do
  if [ -n "$d_a" ]; then  # a given D_A is the same for every seed (the seed still orders the data)
    run ./prepare_data --mode qa --input "$d_a" --template "$qa_template" --tokenizer "$tok" --output "$out/data/d_a-s$seed.bin"
  else
    run ./prepare_data --mode kvr --num "$num_kvr" --seed $((1000 + seed)) --template "$kvr_template" --tokenizer "$tok" \
      --output "$out/data/d_a-s$seed.bin"
  fi
  run ./prepare_data --mode random-words --num $((num_kvr * 4)) --length 50 --seed $((2000 + seed)) --word-list "$words" \
    --tokenizer "$tok" --output "$out/data/random-s$seed.bin"
done
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

stage1=("none")
for r in $ratios; do stage1+=("random-$r" "generic-$r" "remix-$r"); done
stage1_mix() {  # the mixed streams of stage-1 recipe $1 for seed $2
  local r="${1##*-}"
  case "$1" in
    random-*) echo "--mix random=$out/data/random-s$2.bin:$r" ;;
    generic-*) echo "--mix generic=$out/data/generic.bin:$r" ;;
    remix-*) echo "--mix random=$out/data/random-s$2.bin:$r --mix generic=$out/data/generic.bin:$r" ;;
  esac
}

for seed in $seeds; do
  da="$out/data/d_a-s$seed.bin"
  # Stage 1: D_A under each mix and ratio, all epochs (REMIX), evaluated every epoch: the first step
  # at 100% is the step count that savings compares relearning with.
  for s1 in "${stage1[@]}"; do
    # shellcheck disable=SC2046
    train "$out/stage1-$s1-s$seed" "$lr" --model "$model" --data "$da" --epochs "$epochs" --seed "$seed" \
      --eval-data "$da" --eval-every-epochs 1 $(stage1_mix "$s1" "$seed")
  done
  # Where the stage-1 facts are stored, and which layers they depend on (swaps against the base model).
  stage1_final=(); for s1 in "${stage1[@]}"; do stage1_final+=("$out/stage1-$s1-s$seed/final"); done
  analyze "$out/layers/stage1-s$seed" --reference "$model" "${stage1_final[@]}"
  # Stage 2, evaluation and relearning.
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
          replay) mix=(--mix "replay=$da:$replay_ratio") ;;
        esac
        for rate in $lrs; do
          run_id="$name-from-$s1-mix-$s2-lr$rate-s$seed"
          dir="$out/stage2-$run_id"
          train "$dir" "$rate" --model "$out/stage1-$s1-s$seed/final" --data "$out/data/$name.bin" --epochs "$epochs" \
            --seed "$seed" --stop-loss 1e-4 --stop-loss-count 10 ${mix[@]+"${mix[@]}"}
          # D_A questions come from its shard (exact training prompts): a stage-2 checkpoint records
          # the D_B template. D_B uses its JSONL (all gold answers) with the QA template.
          # A non-factoid D_B's held-out perplexity sits in the same table, beside D_A's forgetting.
          evaluate "$out/eval/$run_id/d_a" "$da" "$out/stage1-$s1-s$seed/final" "$dir/final" \
            ${d_b_metric[@]+"${d_b_metric[@]}"}
          case "$kind" in
            qa) evaluate "$out/eval/$run_id/d_b" "$out/data/$name.jsonl" "$dir/final" --template "$qa_template" ;;
            gsm8k) evaluate "$out/eval/$run_id/d_b" "$out/data/$name-heldout.jsonl" "$dir/final" \
                     --template tulu --match gsm8k --max-new-tokens 320 ;;
          esac
          if [ $savings = 1 ]; then
            # shellcheck disable=SC2046
            train "$out/relearn-$run_id" "$lr" --model "$dir/final" --data "$da" --epochs "$epochs" --seed "$seed" \
              --eval-data "$da" --eval-every-epochs 1 --stop-at-accuracy 1.0 $(stage1_mix "$s1" "$seed")
          fi
        done
      done
    done
    # Where the stage-1 facts are after stage 2 (no mixing in stage 2), at each rate.
    for rate in $lrs; do
      finals=(); for s1 in "${stage1[@]}"; do finals+=("$out/stage2-$name-from-$s1-mix-none-lr$rate-s$seed/final"); done
      analyze "$out/layers/stage2-$name-lr$rate-s$seed" "${finals[@]}"
    done
  done
done
run python3 scripts/gpu_summary.py --out "$out"
echo "done: $out/summary.md (means and 95% intervals over seeds, verdicts); per run: $out/eval/*/d_a/metrics.json, */d_b/metrics.json;"
echo "      layers in $out/layers/*/metrics.json"
