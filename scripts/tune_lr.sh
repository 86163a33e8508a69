#!/usr/bin/env bash
# An lr search: every method in $METHODS at every lr in $LRS for $EPOCHS epochs, seed 0, one run per
# (setting, method, lr) against that setting's Retrain, in OUT/SETTING/METHOD-lrLR. Resumable.
# scripts/lr_table.py then picks, per method, the point with the lowest mean Avg. Gap over the
# settings; the calling tune script writes OUT/lrs.txt (the grid) when its whole search has run.
# Usage: MODEL=... OUT=... EPOCHS=... LRS="..." METHODS="..." [L1_EPOCHS=...] [HP=KEY=VALUE] \
#        tune_lr.sh SETTING...
# where SETTING is class-N or random-Ppct (P percent); a finished Retrain already at
# OUT/SETTING/retrain is used as it is. L1_EPOCHS sets l1-sparse's --l1-epochs. HP searches one
# more hyperparameter beside lr (e.g. HP=lambda=0.1: runs METHOD-lrLR-lambda0.1 with --lambda 0.1).
set -euo pipefail
: "${MODEL:?}" "${OUT:?}" "${EPOCHS:?}" "${LRS:?}" "${METHODS:?}"
for setting in "$@"; do
  case $setting in
    class-*) forget=(--forget-class "${setting#class-}") ;;
    random-*pct) pct=${setting#random-}; forget=(--forget-fraction "$(python -c "print(${pct%pct} / 100)")") ;;
    *) echo "unknown setting $setting: use class-N or random-Ppct" >&2; exit 2 ;;
  esac
  dir=$OUT/$setting
  [ -f "$dir/retrain/metrics.json" ] || { rm -rf "$dir/retrain"; coun-lab unlearn --model "$MODEL" \
    --method retrain "${forget[@]}" --out "$dir/retrain" -q; }
  for method in $METHODS; do
    extra=() suffix=""
    [ "$method" = l1-sparse ] && [ -n "${L1_EPOCHS:-}" ] && extra=(--l1-epochs "$L1_EPOCHS")
    if [ -n "${HP:-}" ]; then
      key=${HP%%=*} value=${HP#*=}
      extra+=("--${key//_/-}" "$value") suffix="-$key$value"
    fi
    for lr in $LRS; do
      run=$dir/$method-lr$lr$suffix
      [ -f "$run/metrics.json" ] || { rm -rf "$run"; coun-lab unlearn --model "$MODEL" --method "$method" \
        "${forget[@]}" --epochs "$EPOCHS" --lr "$lr" "${extra[@]}" --reference "$dir/retrain" --out "$run" -q; }
    done
  done
  coun-lab compare "$dir"/*/ --sort avg_gap > "$dir/table.md"
done
