#!/usr/bin/env bash
# The lr search behind the Fashion-MNIST sweep: every swept method at 2 epochs (the sweep's
# setting, l1-sparse's penalty over 1 epoch), seed 0, 10% random forgetting only (the class-wise
# setting was not searched, to save its Retrain). Output: results/tuning/fashion/table.md.
MODEL=models/resnet18-fashion-mnist-10k.safetensors OUT=results/tuning/fashion EPOCHS=2 L1_EPOCHS=1 \
  LRS="0.01 0.02 0.05 0.1" METHODS="ft neggrad+ l1-sparse salun not coun" \
  exec bash "$(dirname "$0")/tune_lr.sh" random-10pct
