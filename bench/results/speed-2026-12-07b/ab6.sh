#!/bin/bash
# prepacked linear weights up to 512 rows (working tree) against up to 64 (HEAD worktree), batch 128
cd /work/main
source .venv/bin/activate
OUT=bench/results/speed-2026-12-07b
for side in new base new base; do
  if [ $side = base ]; then SRC=/tmp/exp/base/src; else SRC=/work/main/src; fi
  PYTHONPATH=$SRC python bench/bench_generation.py --data ../shared/data/train.jsonl --pairs 16 \
     --variants cascade-bf16-b128 --out $OUT/generation_packed512_$side.json
done
