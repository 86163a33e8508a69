#!/usr/bin/env bash
# The oracle on the shipped models: every method's per-example forgetting quality against a
# population of Retrains (docs/oracle.md). Hours of CPU time; resumable: run it again and the
# finished members are kept. Run from the repository root; JOBS=N runs N members at once
# (within `coun-lab runs limit cpu N`), or pass --backend ray through EXTRA.
#
# Digits: class 3 and a random 10%, population 32, every method; the six methods the lr search
# tuned (experiments/digits-search.toml: ft, neggrad+, l1-sparse, salun, not, coun at 5 epochs)
# take its picks, the others (ga, rl, scrub, bad-teacher) their defaults.
# Fashion-MNIST (10k model): a random 10%, population 16, at the paper's budget share (5 epochs
# of the 20-epoch recipe), every method at its defaults but that.
set -euo pipefail
JOBS=${JOBS:-1}
EXTRA=${EXTRA:-}
ALL=ft,ga,rl,neggrad+,l1-sparse,salun,not,scrub,bad-teacher,coun

digits() {
  coun-lab oracle --model models/resnet18-digits.safetensors --methods "$ALL" \
    --picks experiments/digits-search.toml --population 32 --jobs "$JOBS" $EXTRA "$@"
}
digits --forget-class 3 --out results/oracle/digits-class-3
digits --forget-fraction 0.1 --out results/oracle/digits-random-10pct

coun-lab oracle --model models/resnet18-fashion-mnist-10k.safetensors --methods "$ALL" \
  --forget-fraction 0.1 --epochs 5 --population 16 --jobs "$JOBS" $EXTRA \
  --out results/oracle/fashion-random-10pct
