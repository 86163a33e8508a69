#!/usr/bin/env bash
# The search behind CoUn's digits defaults: forget class 3 with the shipped model, against one
# Retrain reference, over the learning rate (the paper searches lr in [0.01, 0.1]).
# Writes results/tuning/digits-class3/{retrain,coun-lr*}/ and prints a comparison table.
set -euo pipefail
out=results/tuning/digits-class3
model=models/resnet18-digits.safetensors
[ -f $out/retrain/metrics.json ] || coun-lab unlearn --model $model --method retrain --forget-class 3 --out $out/retrain -q
for lr in 0.02 0.05 0.1; do
  [ -f $out/coun-lr$lr/metrics.json ] || coun-lab unlearn --model $model --method coun --forget-class 3 \
    --lr $lr --reference $out/retrain --out $out/coun-lr$lr -q
done
coun-lab compare $out/*/ --sort avg_gap | tee $out/table.md
