#!/usr/bin/env bash
# REMIX evaluation: exact match (strip + lowercase) of greedy answers on the stage-1 facts after
# stage 1 and after stage 2 (the drop is the forgetting), and on the stage-2 facts after stage 2.
# Each prompt is rendered with the template stored in the checkpoint/shard, i.e. exactly the
# training prompt.
#
#   STAGE1=runs/remix/stage1_random_r2/final STAGE2=runs/remix/stage2_popqa_.../final \
#   QA2=runs/remix/data/popqa.bin scripts/remix_eval.sh
#
# Environment: STAGE1, STAGE2 (checkpoints, required), QA1 (stage-1 questions, default
# $OUT/data/kvr.bin), QA2 (stage-2 questions, optional), MATCH (exact|squad|contains; REMIX uses
# contains for WebQA), OUT (default runs/remix), DEVICE (default cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${STAGE1:?set STAGE1}"; : "${STAGE2:?set STAGE2}"
OUT=${OUT:-runs/remix}; QA1=${QA1:-$OUT/data/kvr.bin}; MATCH=${MATCH:-exact}; DEVICE=${DEVICE:-cuda}
TAG=$(basename "$(dirname "$STAGE2")")
make -s eval_factoids
./eval_factoids --device "$DEVICE" --model "$STAGE1" --model "$STAGE2" --data "$QA1" --match "$MATCH" \
  --batch-size 32 --max-new-tokens 32 --out "$OUT/eval/$TAG/stage1_facts"
if [ -n "${QA2:-}" ]; then
  ./eval_factoids --device "$DEVICE" --model "$STAGE2" --data "$QA2" --match "$MATCH" --batch-size 32 \
    --max-new-tokens 32 --out "$OUT/eval/$TAG/stage2_facts"
fi
