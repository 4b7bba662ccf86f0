#!/bin/bash
# batch size of the critique stage's setting (with probability scores) on a larger workload: 64 train pairs, 512 critiques
cd /work/main
source .venv/bin/activate
python bench/bench_generation.py --data ../shared/data/train.jsonl --pairs 64 \
   --variants cascade-bf16-b64+score cascade-bf16-b128+score cascade-bf16-b256+score \
   --out bench/results/speed-2026-12-07b/generation_batch_train64.json
