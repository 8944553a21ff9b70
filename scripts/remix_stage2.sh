#!/usr/bin/env bash
# REMIX stage 2 on a real model (GPU): continue from a stage-1 checkpoint on a second factoid
# dataset D_B (2,000 PopQA / TriviaQA-style QA pairs), optionally with the same kind of mixing.
# QA data stops early once the step loss has been below 1e-4 ten times (REMIX), with 20 epochs
# as the cap. The optimizer starts fresh (--model loads weights only).
#
#   STAGE1=runs/remix/stage1_random_r2/final QA=popqa_2000.jsonl RATIO=2 MIX=random scripts/remix_stage2.sh
#
# Environment: STAGE1 (stage-1 checkpoint, required), QA (JSONL with question/answer fields,
# required; PopQA's possible_answers and TriviaQA's {"value","aliases"} are understood), NAME
# (default: QA's file name), RATIO (0|1|2|4, default 0), MIX (random|generic|both), GENERIC,
# WORDS, OUT, DEVICE, MICRO, LAUNCHER, NPROC, ZERO, OPT_STATE as in remix_stage1.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${STAGE1:?set STAGE1 to a stage-1 checkpoint directory}"
: "${QA:?set QA to a QA JSONL file (2,000 examples)}"
NAME=${NAME:-$(basename "${QA%.*}")}; RATIO=${RATIO:-0}; MIX=${MIX:-random}; OUT=${OUT:-runs/remix}
DEVICE=${DEVICE:-cuda}; MICRO=${MICRO:-4}; WORDS=${WORDS:-/usr/share/dict/words}; N=2000
LAUNCHER=${LAUNCHER:-none}; NPROC=${NPROC:-1}; ZERO=${ZERO:-0}; OPT_STATE=${OPT_STATE:-fp32}
. scripts/launcher.sh
make -s train_llama prepare_data
D="$OUT/data"; mkdir -p "$D"

[ -f "$D/$NAME.bin" ] || ./prepare_data --mode qa --input "$QA" --limit $N --template tulu --tokenizer "$STAGE1" \
  --output "$D/$NAME.bin"
mix=()
if [ "$RATIO" != 0 ]; then
  if [ "$MIX" = random ] || [ "$MIX" = both ]; then
    [ -f "$D/random2.bin" ] || ./prepare_data --mode random-words --num $((4 * N)) --length 100 --seed 4 \
      --word-list "$WORDS" --tokenizer "$STAGE1" --output "$D/random2.bin"
    mix+=(--mix "random=$D/random2.bin:$RATIO")
  fi
  if [ "$MIX" = generic ] || [ "$MIX" = both ]; then
    : "${GENERIC:?set GENERIC for MIX=$MIX}"
    [ -f "$D/generic.bin" ] || ./prepare_data --mode text --text-mode remix --input "$GENERIC" --limit $((4 * N)) \
      --template passage --tokenizer "$STAGE1" --output "$D/generic.bin"
    mix+=(--mix "generic=$D/generic.bin:$RATIO")
  fi
fi

RUN="$OUT/stage2_${NAME}_from_$(basename "$(dirname "$STAGE1")")_${MIX}_r${RATIO}"
launcher_setup "$LAUNCHER" "$NPROC" "$RUN.rendezvous"
${LAUNCH[@]+"${LAUNCH[@]}"} ./train_llama --model "$STAGE1" --device "$DEVICE" --data "$D/$NAME.bin" ${mix[@]+"${mix[@]}"} \
  --zero "$ZERO" --optimizer-state "$OPT_STATE" ${DIST[@]+"${DIST[@]}"} \
  --epochs 20 --stop-loss 1e-4 --stop-loss-count 10 --batch-size 32 --micro-batch-size "$MICRO" --seq-len 2048 \
  --lr 5e-5 --schedule cosine --warmup-ratio 0.05 --beta1 0.9 --beta2 0.95 --eps 1e-8 --weight-decay 0 --clip 1.0 \
  --save-every 200 --keep 1 --save-dtype BF16 --out "$RUN" --log "$RUN.jsonl"
echo "stage 2 done: $RUN/final"
