"""Give finished Retrain runs the reference.npz they predate, by repeating each run exactly.

    python scripts/backfill_reference.py RETRAIN_RUN_DIR...

Each Retrain is rerun from its run.toml into a temporary directory. Only when the rerun's RA, UA,
TA and MIA equal the recorded ones to the bit (the same model, deterministic on this machine) are
its reference.npz and model kept in the original directory; otherwise the run is left as it was
and the difference printed. Nothing else in the run directory changes.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

from coun_tui.engine.events import Done, Failed
from coun_tui.engine.reference import REFERENCE_FILE
from coun_tui.engine.runner import prepare
from coun_tui.engine.runs import read_spec, record

KEYS = ("RA", "UA", "TA", "MIA")


def backfill(run_dir: Path) -> bool:
    recorded = json.loads((run_dir / "metrics.json").read_text())
    if recorded.get("method") != "retrain":
        print(f"{run_dir}: not a Retrain run, skipped")
        return False
    if (run_dir / REFERENCE_FILE).is_file():
        print(f"{run_dir}: has its {REFERENCE_FILE} already")
        return True
    with tempfile.TemporaryDirectory() as tmp:
        again = Path(tmp) / "retrain"
        last = None
        for event in record(prepare(read_spec(run_dir)), again):
            last = event
        if not isinstance(last, Done):
            print(f"{run_dir}: the rerun did not finish ({last.reason if isinstance(last, Failed) else last})")
            return False
        fresh = json.loads((again / "metrics.json").read_text())
        differ = {k: (recorded[k], fresh[k]) for k in KEYS if recorded[k] != fresh[k]}
        if differ:
            print(f"{run_dir}: the rerun differs ({differ}); left as it was")
            return False
        for name in (REFERENCE_FILE, "model.safetensors"):
            shutil.copy2(again / name, run_dir / name)
    print(f"{run_dir}: reran identically ({fresh['seconds']:.0f} s); kept its {REFERENCE_FILE}")
    return True


if __name__ == "__main__":
    results = [backfill(Path(d)) for d in sys.argv[1:]]
    sys.exit(0 if all(results) else 1)
