#!/usr/bin/env bash
# An lr search: every method in $METHODS at every lr in $LRS for $EPOCHS epochs, seed 0, one run per
# (setting, method, lr) against that setting's Retrain; then scripts/lr_table.py picks, per method,
# the lr with the lowest mean Avg. Gap over the settings. Resumable.
# Usage: MODEL=... OUT=... EPOCHS=... LRS="..." METHODS="..." [L1_EPOCHS=...] tune_lr.sh SETTING...
# where SETTING is class-N or random-Ppct (P percent); a finished Retrain already at
# OUT/SETTING/retrain is used as it is. L1_EPOCHS sets l1-sparse's --l1-epochs.
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
    extra=()
    [ "$method" = l1-sparse ] && [ -n "${L1_EPOCHS:-}" ] && extra=(--l1-epochs "$L1_EPOCHS")
    for lr in $LRS; do
      run=$dir/$method-lr$lr
      [ -f "$run/metrics.json" ] || { rm -rf "$run"; coun-lab unlearn --model "$MODEL" --method "$method" \
        "${forget[@]}" --epochs "$EPOCHS" --lr "$lr" "${extra[@]}" --reference "$dir/retrain" --out "$run" -q; }
    done
  done
  coun-lab compare "$dir"/*/ --sort avg_gap > "$dir/table.md"
done
echo "$LRS" > "$OUT/lrs.txt"
python scripts/lr_table.py "$OUT" > "$OUT/table.md"
cat "$OUT/table.md"
