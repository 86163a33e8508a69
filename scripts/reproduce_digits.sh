#!/usr/bin/env bash
# The paper's comparison on the shipped digits model: class 3 and 10% random forgetting, 3 seeds,
# Retrain, FT, NegGrad+, l1-sparse, SalUn, NoT and CoUn, plus every baseline +CL.
# Unlearning methods run 5 epochs at the lr the search picked for each (scripts/tune_digits.sh,
# results/tuning/digits/table.md), their `coun-lab methods` defaults otherwise; Retrain uses the
# original model's recipe (30 epochs). Resumable: rerun to finish an interrupted sweep.
set -euo pipefail
methods="ft neggrad+ l1-sparse salun not coun"
lrs=$(python scripts/lr_table.py results/tuning/digits --picks $methods)
coun-lab sweep --model models/resnet18-digits.safetensors --methods "${methods// /,}" --cl-too \
  --forget-class 3 --forget-fraction 0.1 --seeds 0,1,2 --set epochs=5 $lrs \
  --out results/sweep-digits "$@"
