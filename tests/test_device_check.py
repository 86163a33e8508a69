"""scripts/device_check.sh in its dry mode: every step it takes on a GPU, on the CPU, tiny."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from coun_tui.engine import warm

ROOT = Path(__file__).resolve().parents[1]


def test_the_device_check_dry_run_takes_every_step_and_records_it(tmp_path, monkeypatch):
    folder = Path(tempfile.mkdtemp(prefix="cw", dir="/tmp"))  # the check's warm server, killed below
    monkeypatch.setenv("COUN_LAB_WARM", str(folder))
    out = tmp_path / "gpu"
    try:
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "device_check.sh"), "--dry-run", "--out", str(out),
                               "--methods", "ft"], capture_output=True, text=True, env=dict(os.environ),
                              timeout=480)
    finally:
        for sock in folder.glob("*.sock"):
            pid = warm.server_pid(sock.stem)
            if pid:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)
    record = json.loads((out / "device_check.json").read_text())
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert record["dry_run"] and record["device"] == "cpu"
    steps = record["steps"]
    assert list(steps) == ["bench", "digits", "fashion", "coun-45k", "share"]
    assert all(entry["ok"] for entry in steps.values()), steps
    for dataset in ("digits", "fashion"):  # the sweep adds the Retrain its gaps are measured against
        assert set(steps[dataset]["runs"]) == {"retrain", "ft", "ft+cl"}
    assert steps["coun-45k"]["retain_images"] == 450 and steps["coun-45k"]["epoch_seconds"] > 0
    assert steps["share"]["throughput_ratio"] > 0
    assert "DRY RUN" in (out / "README.md").read_text()
    assert "not yet measured" in (ROOT / "results" / "gpu" / "README.md").read_text().lower()
