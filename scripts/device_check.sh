#!/usr/bin/env bash
# The GPU path in one call: bench, every method end to end on digits and Fashion-MNIST, one CoUn
# epoch over 45,000 32x32 images, four runs sharing the GPU against one at a time; recorded in
# results/gpu/ (device_check.json and README.md). At most 8 minutes on a CUDA machine.
#   scripts/device_check.sh                      on cuda:0 (Fashion-MNIST from the lab's default root)
#   scripts/device_check.sh --fashion-root DIR   Fashion-MNIST's files elsewhere
#   scripts/device_check.sh --dry-run --out DIR  every step on the CPU, tiny (what the tests run)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import coun_tui" 2>/dev/null; then
    echo "error: coun_tui is not importable; run \`pip install -e .\` first (see README.md)" >&2
    exit 2
fi
exec timeout 480 python scripts/device_check.py "$@"
