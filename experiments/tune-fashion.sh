#!/usr/bin/env bash
# Equal tuning on the shipped Fashion-MNIST model (10k images): a random 10% forgotten, 5 epochs a
# trial (the paper's share of Retrain's 20), 16 trials for every method and every baseline +CL
# (lambda and tau searched too), each its own Optuna study in results/tune-fashion/<method>/ beside
# one Retrain measured on the validation half. Then seeds 0, 1, 2 of each at its best, scored on the
# report half. Hours on 2 CPU cores: run it in the background; rerun the same line to resume
# (finished trials are kept, a trial cut off is retried with its parameters).
#
#   nohup experiments/tune-fashion.sh > tune-fashion.log 2>&1 &
#   coun-lab tune --show results/tune-fashion/ft          # any time, from another shell
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=models/resnet18-fashion-mnist-10k.safetensors
METHODS=ft,neggrad+,l1-sparse,salun,not,scrub,bad-teacher,coun
CL=ft+cl,neggrad++cl,l1-sparse+cl,salun+cl,not+cl,scrub+cl,bad-teacher+cl
OUT=results/tune-fashion

coun-lab tune --model "$MODEL" --method "$METHODS,$CL" --forget-fraction 0.1 --seed 0 \
              --trials 16 --epochs 5 --pruner median --half-seed 0 --jobs 1 --out "$OUT"

STUDIES=$(for m in ${METHODS//,/ } ${CL//,/ }; do printf '%s,' "$OUT/$m"; done)
coun-lab sweep --model "$MODEL" --from-study "${STUDIES%,}" --forget-fraction 0.1 --seeds 0,1,2 \
               --jobs 1 --out results/sweep-fashion/tuned
