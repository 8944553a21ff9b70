#!/usr/bin/env bash
# REMIX stage 1 on a real model (GPU): full fine-tuning of Llama-3-8B on 2,000 KVR pairs, with
# random-word and/or generic data mixed in at RATIO x 2,000 examples per epoch (REMIX ratios 1, 2, 4;
# RATIO=0 is the no-mixing baseline). KVR trains all 20 epochs (REMIX); the stage is evaluated on
# its own questions at every epoch end.
#
#   MODEL=/models/Meta-Llama-3-8B RATIO=2 MIX=random scripts/remix_stage1.sh
#   MODEL=... RATIO=4 MIX=generic GENERIC=pile_docs.jsonl scripts/remix_stage1.sh
#
# Environment: MODEL (HF dir with tokenizer.json, required), RATIO (0|1|2|4, default 1),
# MIX (random|generic|both, default random), GENERIC (documents for MIX=generic|both: JSONL with
# "text", or plain text with blank-line separated documents), WORDS (word list, default
# /usr/share/dict/words), OUT (default runs/remix), DEVICE (default cuda), MICRO (micro-batch
# size, default 4: 32 examples per step by gradient accumulation); several GPUs of this node:
# LAUNCHER (none|mpirun|srun|torchrun, default none) and NPROC (default 1) start train_llama as
# NPROC processes, ZERO (default 0) and OPT_STATE (fp32|bf16, default fp32) pick the ZeRO stage
# and the AdamW moments (REMIX's 2 GPUs: LAUNCHER=mpirun NPROC=2 ZERO=2 OPT_STATE=bf16).
# Outputs: $OUT/data/*.bin (shards), $OUT/stage1_<mix>_r<ratio>/final (checkpoint), its log.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${MODEL:?set MODEL to a Hugging Face Llama directory (e.g. Meta-Llama-3-8B)}"
RATIO=${RATIO:-1}; MIX=${MIX:-random}; OUT=${OUT:-runs/remix}; DEVICE=${DEVICE:-cuda}; MICRO=${MICRO:-4}
LAUNCHER=${LAUNCHER:-none}; NPROC=${NPROC:-1}; ZERO=${ZERO:-0}; OPT_STATE=${OPT_STATE:-fp32}
. scripts/launcher.sh
WORDS=${WORDS:-/usr/share/dict/words}; N=2000
make -s train_llama prepare_data
mkdir -p "$OUT/data"
D="$OUT/data"

# Data: D_A = 2,000 KVR pairs in the Tulu chat template, loss on the answer + EOS only; mixing pools
# big enough for the largest ratio (4 x 2,000), drawn without replacement and cycled across epochs.
[ -f "$D/kvr.bin" ] || ./prepare_data --mode kvr --num $N --seed 1 --template tulu --tokenizer "$MODEL" --output "$D/kvr.bin"
mix=()
if [ "$RATIO" != 0 ]; then
  if [ "$MIX" = random ] || [ "$MIX" = both ]; then
    [ -f "$D/random.bin" ] || ./prepare_data --mode random-words --num $((4 * N)) --length 100 --seed 3 \
      --word-list "$WORDS" --tokenizer "$MODEL" --output "$D/random.bin"
    mix+=(--mix "random=$D/random.bin:$RATIO")
  fi
  if [ "$MIX" = generic ] || [ "$MIX" = both ]; then
    : "${GENERIC:?set GENERIC to a file of pretraining-like documents for MIX=$MIX}"
    [ -f "$D/generic.bin" ] || ./prepare_data --mode text --text-mode remix --input "$GENERIC" --limit $((4 * N)) \
      --template passage --tokenizer "$MODEL" --output "$D/generic.bin"
    mix+=(--mix "generic=$D/generic.bin:$RATIO")
  fi
fi

# REMIX hyper-parameters (these are also train_llama's defaults, spelled out for the record).
RUN="$OUT/stage1_${MIX}_r${RATIO}"
launcher_setup "$LAUNCHER" "$NPROC" "$RUN.rendezvous"
${LAUNCH[@]+"${LAUNCH[@]}"} ./train_llama --model "$MODEL" --device "$DEVICE" --data "$D/kvr.bin" ${mix[@]+"${mix[@]}"} \
  --zero "$ZERO" --optimizer-state "$OPT_STATE" ${DIST[@]+"${DIST[@]}"} \
  --epochs 20 --batch-size 32 --micro-batch-size "$MICRO" --seq-len 2048 \
  --lr 5e-5 --schedule cosine --warmup-ratio 0.05 --beta1 0.9 --beta2 0.95 --eps 1e-8 --weight-decay 0 --clip 1.0 \
  --eval-data "$D/kvr.bin" --eval-every-epochs 1 --save-every 200 --keep 1 --save-dtype BF16 \
  --out "$RUN" --log "$RUN.jsonl"
echo "stage 1 done: $RUN/final"
