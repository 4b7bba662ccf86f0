#!/bin/bash
# A/B of the engine, repeated: HEAD (worktree /tmp/exp/base) against the working tree, alternating
set -e
cd /work/main
source .venv/bin/activate
OUT=bench/results/speed-2026-12-07b
mkdir -p $OUT
for round in 1 2; do for side in new base; do
  if [ $side = base ]; then SRC=/tmp/exp/base/src; else SRC=/work/main/src; fi
  PYTHONPATH=$SRC python bench/bench_generation.py --data ../shared/data/train.jsonl --pairs 16 \
     --variants cascade-bf16-b64 cascade-bf16-b32+score cascade-bf16-b64 --out $OUT/generation_${side}_r$round.json
done; done
