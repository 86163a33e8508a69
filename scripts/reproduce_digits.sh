#!/usr/bin/env bash
# The paper's comparison on the shipped digits model: class 3 and 10% random forgetting, 3 seeds,
# Retrain, FT, NegGrad+, l1-sparse, SalUn, NoT and CoUn, plus every baseline +CL.
# Unlearning methods run 5 epochs at the lr that scripts/tune_digits.sh picked for each
# (results/tuning/digits/table.md), their `coun-lab methods` defaults otherwise; Retrain uses the
# original model's recipe (30 epochs). Resumable: rerun to finish an interrupted sweep.
set -euo pipefail
coun-lab sweep --model models/resnet18-digits.safetensors \
  --methods ft,neggrad+,l1-sparse,salun,not,coun --cl-too \
  --forget-class 3 --forget-fraction 0.1 --seeds 0,1,2 --set epochs=5 \
  --set ft.lr=0.1 --set neggrad+.lr=0.02 --set l1-sparse.lr=0.1 --set salun.lr=0.01 \
  --set not.lr=0.05 --set coun.lr=0.1 --out results/sweep-digits "$@"
