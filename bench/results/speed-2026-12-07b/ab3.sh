#!/bin/bash
# A/B of the engine with probability scores at the critique stage's batch (64): HEAD (worktree) vs working tree
set -e
cd /work/main
source .venv/bin/activate
OUT=bench/results/speed-2026-12-07b
for round in 1 2; do for side in new base; do
  if [ $side = base ]; then SRC=/tmp/exp/base/src; V="cascade-bf16-b64+score"; else SRC=/work/main/src; V="cascade-bf16-b64+score"; fi
  PYTHONPATH=$SRC python bench/bench_generation.py --data ../shared/data/train.jsonl --pairs 16 \
     --variants $V --out $OUT/generation_score_${side}_r$round.json
done; done
PYTHONPATH=/work/main/src python bench/bench_generation.py --data ../shared/data/train.jsonl --pairs 16 \
     --variants cascade-bf16-b128+score cascade-bf16-b128 --out $OUT/generation_b128_new.json
