"""Pilot tests of the lab on the real shipped digits model, with real (short) training runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from coun_tui.engine import checkpoint
from coun_tui.tui.app import CounLab
from coun_tui.tui.help_screen import HelpScreen
from coun_tui.tui.runlog import read_run
from coun_tui.tui.widgets.dialogs import NoReferenceScreen
from coun_tui.tui.widgets.plots import EmbeddingPlot, LossPlot
from coun_tui.tui.widgets.run_pane import MetricsTable, RunPane

FIXTURE_RUNS = Path(__file__).parent / "fixtures" / "runs"
FAST = {"epochs": 1, "batch_size": 64}


async def wait_until(pilot, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await pilot.pause(0.1)


async def ready(pilot) -> CounLab:
    """Wait for the default model to load into the setup panel."""
    app = pilot.app
    await wait_until(pilot, lambda: app.setup_panel.dataset is not None, 60, "the model to load")
    await pilot.pause()
    return app


async def forget_classes(pilot, *classes: int) -> None:
    sel = pilot.app.query_one("#forget-classes")
    sel.deselect_all()
    for c in classes:
        sel.select(c)
    await pilot.pause()


async def launch(pilot) -> None:
    """ctrl+r; with no Retrain reference for the split the app offers to run one first: run anyway."""
    await pilot.press("ctrl+r")
    await pilot.pause()
    if isinstance(pilot.app.screen, NoReferenceScreen):
        await pilot.press("r")
        await pilot.pause()


def text_of(widget) -> str:
    """What a widget shows on screen now (its rendered lines)."""
    return "\n".join(widget.render_line(y).text for y in range(widget.size.height))


def single_pane(app) -> RunPane:
    panes = app.panes()
    assert len(panes) == 1
    return panes[0]


async def test_coun_class3_live_saved_and_loadable(tmp_path, digits_model):
    app = CounLab(runs_dir=tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        assert "digits" in str(app.query_one("#model-facts").render())
        await forget_classes(pilot, 3)
        assert "forget 146" in str(app.query_one("#counts").render())
        app.setup_panel.set_hparams(**FAST)
        await launch(pilot)
        pane = single_pane(app)
        table, loss = pane.query_one(MetricsTable), pane.query_one(LossPlot)
        scatter = pane.query_one(EmbeddingPlot).query_one("#scatter")

        await wait_until(pilot, lambda: pane.runlog.step >= 2 and pane.runlog.embedding is not None, 120,
                         "the first steps")
        await pilot.pause(0.5)  # let the throttled redraw happen
        early = (text_of(loss), text_of(scatter), table.row_count)
        assert early[2] == 1  # epoch 0, before training
        assert "epoch 0" in early[1]

        await wait_until(pilot, lambda: pane.runlog.finished, 900, "the run to finish")
        await pilot.pause(0.5)
        log = pane.runlog
        assert log.status == "done", log.reason
        assert text_of(loss) != early[0], "the loss curve did not change"
        assert "epoch 1" in text_of(scatter) and text_of(scatter) != early[1]
        assert table.row_count == 3  # epochs 0, 1 and final
        assert set(log.losses) >= {"ce", "cl", "total"}
        assert log.done.metrics["UA"] >= 0 and 0 < log.done.metrics["TA"] <= 100
        assert "took" in str(pane.query_one("#stats").render())

        # Saved where the pane says, and the checkpoint loads.
        run_dir = log.run_dir
        assert run_dir.parent == tmp_path and "coun-class3" in run_dir.name
        assert "saved in" in str(pane.query_one("#where").render())
        for name in ("run.toml", "split.npz", "events.jsonl", "metrics.json", "model.safetensors"):
            assert (run_dir / name).is_file(), name
        # The last embedding's features are kept, so t-SNE works on the run when it is reopened.
        assert (run_dir / "embedding.npy").is_file()
        replayed = read_run(run_dir)
        assert replayed.embedding.features is not None
        assert replayed.embedding.features.shape[0] == len(replayed.embedding.xy)
        model, meta = checkpoint.load(run_dir / "model.safetensors")
        assert meta["method"] == "coun" and meta["forget"]["classes"] == [3]
        assert model.num_classes == 10

        # t-SNE on request, from the live run's features; e again returns to PCA.
        await pilot.press("e")
        await wait_until(pilot, lambda: pane.tsne is not None, 120, "t-SNE")
        await pilot.pause(0.5)
        assert "t-SNE" in text_of(scatter)
        await pilot.press("e")
        await pilot.pause(0.5)
        assert "PCA" in text_of(scatter)


async def test_cancel_mid_epoch_stops_within_a_step(tmp_path, digits_model):
    app = CounLab(runs_dir=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await forget_classes(pilot, 3)
        app.setup_panel.set_hparams(epochs=1, batch_size=16)  # 81 steps: the cancel lands mid-epoch
        await launch(pilot)
        pane = single_pane(app)
        await wait_until(pilot, lambda: pane.runlog.step >= 2, 120, "training to start")
        seen = app._cancels[pane.run_id]
        await pilot.press("c")
        assert seen.is_set()
        at_press = pane.runlog.step
        await app.workers.wait_for_complete()
        await pilot.pause(0.5)
        log = pane.runlog
        assert log.status == "cancelled"
        assert log.cancelled_at is not None and log.cancelled_at <= at_press + 3  # steps in flight, then stop
        assert log.cancelled_at < log.total_steps
        status = json.loads((log.run_dir / "status.json").read_text())
        assert status["status"] == "cancelled"
        assert not (log.run_dir / "model.safetensors").exists()
        assert "cancelled at step" in str(pane.query_one("#status").render())


async def test_failing_runs_show_their_reason_and_the_app_goes_on(tmp_path, digits_model):
    app = CounLab(runs_dir=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await forget_classes(pilot, 3)
        # 1. A diverging run: lr 1e9 makes the loss NaN/inf within a couple of steps.
        app.setup_panel.set_hparams(epochs=1, batch_size=64, lr="1e9")
        await launch(pilot)
        await app.workers.wait_for_complete()
        await pilot.pause(0.5)
        nan_pane = app.active_pane
        assert nan_pane.runlog.status == "failed"
        assert "loss became" in nan_pane.runlog.reason
        error = nan_pane.query_one("#error")
        assert error.display and "loss became" in str(error.render())

        # 2. An invalid hyperparameter: refused with one clear line, in its own pane.
        app.setup_panel.set_hparams(lr="0.02", epochs="abc")
        await launch(pilot)
        await app.workers.wait_for_complete()
        await pilot.pause(0.5)
        bad_pane = app.active_pane
        assert bad_pane is not nan_pane and bad_pane.runlog.status == "failed"
        assert "epochs" in bad_pane.runlog.reason and "expected an integer" in bad_pane.runlog.reason

        # 3. The app is still usable: a cheap real run (GA on the forget set) finishes.
        from textual.widgets import Select

        app.query_one("#method", Select).value = "ga"
        await pilot.pause()
        app.setup_panel.set_hparams(**FAST)
        await launch(pilot)
        await app.workers.wait_for_complete()
        await pilot.pause(0.5)
        ok = app.active_pane
        assert ok.runlog.status == "done", ok.runlog.reason
        assert (ok.runlog.run_dir / "model.safetensors").is_file()
        assert len(app.panes()) == 3
        assert nan_pane.runlog.status == "failed"  # earlier panes keep their verdicts


async def test_quit_cancels_running_work_and_waits(tmp_path, digits_model):
    app = CounLab(runs_dir=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await forget_classes(pilot, 3)
        app.setup_panel.set_hparams(epochs=1, batch_size=16)
        await launch(pilot)
        pane = single_pane(app)
        await wait_until(pilot, lambda: pane.runlog.step >= 1, 120, "training to start")
        run_dir = pane.runlog.run_dir
        app.query_one("#forget-classes").focus()
        await pilot.press("q")
        await wait_until(pilot, lambda: app.return_code is not None, 60, "the app to exit")
    assert not [w for w in app.workers if w.is_running]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "cancelled"


async def test_setup_counts_reference_and_replay(digits_model):
    app = CounLab(runs_dir=FIXTURE_RUNS)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        # Counts update live as the forget set changes.
        await forget_classes(pilot, 3, 5)
        assert "forget 291" in str(app.query_one("#counts").render())
        from textual.widgets import Input, Select

        app.query_one("#forget-mode", Select).value = "fraction"
        await pilot.pause()
        app.query_one("#fraction", Input).value = "0.1"
        await pilot.pause()
        assert "forget 144" in str(app.query_one("#counts").render())
        assert "none for this split" in str(app.query_one("#reference").render())
        # Class 3 has a Retrain reference among the saved runs.
        app.query_one("#forget-mode", Select).value = "classes"
        await forget_classes(pilot, 3)
        assert "retrain-digits-class3" in str(app.query_one("#reference").render())
        spec = app.setup_panel.build_spec()
        assert spec.reference and spec.reference.endswith("retrain-digits-class3")
        # The method's hyperparameters are shown with its defaults.
        app.query_one("#method", Select).value = "neggrad+"
        await pilot.pause()
        assert app.setup_panel.hparam_input("alpha").value == "0.99"

        # Opening a saved run replays it exactly.
        pane = app.open_run(FIXTURE_RUNS / "coun-digits-class3")
        await pilot.pause(0.5)
        log = pane.runlog
        assert log.status == "done" and log.done is not None
        table = pane.query_one(MetricsTable)
        assert table.row_count == log.started.epochs + 2
        assert log.epochs[-1].gap is not None  # recorded with its Retrain reference
        metrics = json.loads((FIXTURE_RUNS / "coun-digits-class3" / "metrics.json").read_text())
        assert log.done.metrics["avg_gap"] == pytest.approx(metrics["avg_gap"])

        # Help, palette commands and themes.
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        dark = app.current_theme.dark
        await pilot.press("d")
        assert app.current_theme.dark != dark
