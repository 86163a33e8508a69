"""Record the small runs that the TUI snapshot tests and screenshots replay (tests/fixtures/runs/).

A Retrain of digits class 3 (the reference), then a CoUn run and an FT run on the same split
(both measured against that Retrain), all through engine.runs.record, exactly as the app
records them. The checkpoints are dropped (45 MB each;
replay needs only run.toml, split.npz, events.jsonl, metrics.json), and wall-clock fields are kept
as recorded, so replays are deterministic. Run from the repository root:

    python scripts/make_tui_fixture.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.runner import RunSpec, prepare
from coun_tui.engine.runs import record

OUT = Path("tests/fixtures/runs")
MODEL = "models/resnet18-digits.safetensors"


def main() -> None:
    forget = ForgetSpec(classes=[3])
    retrain = OUT / "retrain-digits-class3"
    coun = OUT / "coun-digits-class3"
    ft = OUT / "ft-digits-class3"
    for d in (retrain, coun, ft):
        shutil.rmtree(d, ignore_errors=True)
    jobs = [
        (retrain, RunSpec(method="retrain", model=MODEL, forget=forget, hparams={"epochs": 4})),
        (coun, RunSpec(method="coun", model=MODEL, forget=forget, hparams={"epochs": 2, "batch_size": 64},
                       reference=str(retrain))),
        (ft, RunSpec(method="ft", model=MODEL, forget=forget, hparams={"epochs": 2, "batch_size": 64},
                     reference=str(retrain))),
    ]
    for out, spec in jobs:
        for event in record(prepare(spec), out):
            if event.kind != "step":
                print(out.name, event.kind, getattr(event, "metrics", "") or getattr(event, "reason", ""))
        (out / "model.safetensors").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
