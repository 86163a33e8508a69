#!/usr/bin/env bash
# The learning-rate search behind the digits sweep: every swept method at 5 epochs (the sweep's
# setting), seed 0, for class 3 and for 10% random forgetting, against that setting's Retrain.
# Writes results/tuning/digits/<setting>/<method>-lr<lr>/ and results/tuning/digits/table.md
# (Avg. Gap per setting and their mean; the lowest mean picks each method's lr). Resumable.
set -euo pipefail
out=results/tuning/digits
model=models/resnet18-digits.safetensors
lrs="0.005 0.01 0.02 0.05 0.1"
methods="ft neggrad+ l1-sparse salun not coun"
for setting in class-3 random-10pct; do
  case $setting in
    class-3) forget=(--forget-class 3) ;;
    random-10pct) forget=(--forget-fraction 0.1) ;;
  esac
  dir=$out/$setting
  [ -f $dir/retrain/metrics.json ] || coun-lab unlearn --model $model --method retrain "${forget[@]}" \
    --out $dir/retrain -q
  for method in $methods; do
    for lr in $lrs; do
      run=$dir/$method-lr$lr
      [ -f $run/metrics.json ] || { rm -rf $run; coun-lab unlearn --model $model --method $method \
        "${forget[@]}" --epochs 5 --lr $lr --reference $dir/retrain --out $run -q; }
    done
  done
  coun-lab compare $dir/*/ --sort avg_gap > $dir/table.md
done
python scripts/lr_table.py $out > $out/table.md
cat $out/table.md
