#!/usr/bin/env bash
# The lr search behind the digits sweep: every swept method at 5 epochs (the sweep's setting),
# seed 0, class 3 and 10% random forgetting. Output: results/tuning/digits/table.md.
MODEL=models/resnet18-digits.safetensors OUT=results/tuning/digits EPOCHS=5 \
  LRS="0.005 0.01 0.02 0.05 0.1" METHODS="ft neggrad+ l1-sparse salun not coun" \
  exec bash "$(dirname "$0")/tune_lr.sh" class-3 random-10pct
