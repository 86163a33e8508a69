#!/usr/bin/env bash
# The lr search behind the digits sweep: every swept method at 5 epochs (the sweep's setting),
# seed 0, class 3 and 10% random forgetting. Output: results/tuning/digits/table.md.
set -euo pipefail
out=results/tuning/digits lrs="0.005 0.01 0.02 0.05 0.1"
MODEL=models/resnet18-digits.safetensors OUT=$out EPOCHS=5 LRS=$lrs \
  METHODS="ft neggrad+ l1-sparse salun not coun" bash "$(dirname "$0")/tune_lr.sh" class-3 random-10pct
echo "$lrs" > $out/lrs.txt  # the search has run: picks may be made
python scripts/lr_table.py $out | tee $out/table.md
