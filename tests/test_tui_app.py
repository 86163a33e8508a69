"""Pilot tests of the lab on the real shipped digits model, with real (short) training runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from coun_tui.engine import checkpoint, jobs
from coun_tui.engine.rundir import read_state
from coun_tui.engine.runlog import read_run
from coun_tui.tui.app import CounLab
from coun_tui.tui.help_screen import HelpScreen
from coun_tui.tui.saved_runs import SESSION_FILE
from coun_tui.tui.widgets.dialogs import LaunchScreen
from coun_tui.tui.widgets.plots import EmbeddingPlot, LossPlot
from coun_tui.tui.widgets.quit_dialog import QuitScreen
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
    """ctrl+r, then y in the one confirmation (without a Retrain reference: run anyway)."""
    await pilot.press("ctrl+r")
    await pilot.pause()
    assert isinstance(pilot.app.screen, LaunchScreen), pilot.app.screen
    await pilot.press("y")
    await pilot.pause()


def text_of(widget) -> str:
    """What a widget shows on screen now (its rendered lines)."""
    return "\n".join(widget.render_line(y).text for y in range(widget.size.height))


async def finished(pilot, pane: RunPane, timeout: float = 600) -> None:
    """Wait for a pane's job to end (its worker is a process of its own)."""
    await wait_until(pilot, lambda: pane.runlog.finished, timeout, f"{pane.runlog.title} to finish")
    await pilot.pause(0.5)


async def slow_run(pilot, steps: int) -> RunPane:
    """Launch FT on class 3 with 81 steps (time to act mid-run); return its pane once it trains."""
    await ready(pilot)
    await forget_classes(pilot, 3)
    pilot.app.setup_panel.set_hparams(epochs=1, batch_size=16)
    await launch(pilot)
    pane = single_pane(pilot.app)
    await wait_until(pilot, lambda: pane.runlog.step >= steps, 120, "training to start")
    return pane


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
        assert run_dir.parent == tmp_path and "coun-class-3" in run_dir.name
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
        await pilot.press("c")
        assert (pane.runlog.run_dir / "cancel").is_file()  # the job's cancel request
        at_press = read_state(pane.runlog.run_dir).step
        await finished(pilot, pane, 60)
        log = pane.runlog
        assert log.status == "cancelled"
        assert log.cancelled_at is not None and log.cancelled_at <= at_press + 1  # the step in flight, then stop
        assert log.cancelled_at < log.total_steps
        status = json.loads((log.run_dir / "status.json").read_text())
        assert status["state"] == "cancelled"
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
        nan_pane = app.active_pane
        await finished(pilot, nan_pane)
        assert nan_pane.runlog.status == "failed"
        assert "loss became" in nan_pane.runlog.reason
        error = nan_pane.query_one("#error")
        assert error.display and "loss became" in str(error.render())

        # 2. Invalid hyperparameters: refused at launch with one clear line; no pane, nothing written.
        runs_before = sorted(tmp_path.iterdir())
        for bad, expected in ((dict(epochs="abc"), "expected an integer >= 1"), (dict(lr="-1"), "a number > 0"),
                              (dict(lr=" "), "lr is empty")):
            app.setup_panel.set_hparams(**{"lr": "0.02", "epochs": 1, **bad})
            await pilot.pause()
            await pilot.press("ctrl+r")
            await pilot.pause(0.3)
            assert not isinstance(app.screen, LaunchScreen)
            assert app.active_pane is nan_pane and len(app.panes()) == 1
            shown = [str(n.message) for n in app._notifications if n.title == "cannot run"]
            assert shown and expected in shown[-1] and "\n" not in shown[-1], shown
        assert sorted(tmp_path.iterdir()) == runs_before

        # 3. The app is still usable: a cheap real run (GA on the forget set) finishes.
        from textual.widgets import Select

        app.query_one("#method", Select).value = "ga"
        await pilot.pause()
        app.setup_panel.set_hparams(**FAST)
        await launch(pilot)
        ok = app.active_pane
        await finished(pilot, ok)
        assert ok.runlog.status == "done", ok.runlog.reason
        assert (ok.runlog.run_dir / "model.safetensors").is_file()
        assert len(app.panes()) == 2
        assert nan_pane.runlog.status == "failed"  # earlier panes keep their verdicts
        hparams = tomllib.loads((ok.runlog.run_dir / "run.toml").read_text())["hparams"]
        assert hparams == {"epochs": 1, "batch_size": 64}  # stored with their declared types, not as text


async def test_quit_asks_and_can_cancel_the_runs(tmp_path, digits_model):
    app = CounLab(runs_dir=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await slow_run(pilot, 1)
        run_dir = pane.runlog.run_dir
        app.query_one("#forget-classes").focus()
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, QuitScreen) and "1 run(s) are still going" in app.screen.note
        await pilot.press("c")
        await wait_until(pilot, lambda: app.return_code is not None, 60, "the app to exit")
    state = jobs.wait(run_dir, 60)
    assert state.state == "cancelled" and json.loads((run_dir / "status.json").read_text())["state"] == "cancelled"


def test_a_job_outlives_the_app_and_sighup_and_is_reattached_live(tmp_path, digits_model):
    """The real app in a terminal launches a job (ctrl+r, then y: run without a reference); SIGHUP ends
    the app, not the job; a new app reattaches to it live; quitting leaves it running (the default)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    # The last session's setup (class 3, CoUn for many epochs) comes back, so keys alone launch it.
    (runs / SESSION_FILE).write_text(json.dumps({"setup": {
        "model": digits_model, "mode": "classes", "classes": [3], "method": "coun",
        "hparams": {"epochs": "50"}}}))
    app_proc, master = start_app_in_a_terminal(runs)
    try:
        deadline = time.monotonic() + 300
        while not jobs.find_runs(runs, depth=1):
            assert time.monotonic() < deadline and app_proc.poll() is None, "the app launched no run"
            os.write(master, b"\x12")  # ctrl+r
            time.sleep(1.0)
            os.write(master, b"y")
            time.sleep(2.0)
        run_dir = jobs.find_runs(runs, depth=1)[0]
        wait_steps(run_dir, 1, 300)
        os.kill(app_proc.pid, signal.SIGHUP)
        try:
            app_proc.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail("the app did not end on SIGHUP")
    finally:
        if app_proc.poll() is None:
            app_proc.kill()
        os.close(master)
    step = wait_steps(run_dir, read_state(run_dir).step + 2, 120)  # it trains on without the app
    assert read_state(run_dir).state == "running"

    async def reattach():
        app = CounLab(runs_dir=runs)
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await wait_until(pilot, lambda: len(app.panes()) == 1, 30, "the running job's pane")
            pane = app.panes()[0]
            assert pane.live and pane.runlog.run_dir == run_dir and pane.runlog.step >= step
            seen = pane.runlog.step
            await wait_until(pilot, lambda: pane.runlog.step > seen + 1, 120, "live steps in the pane")
            assert pane.runlog.status == "running"
            await pilot.press("q")
            assert isinstance(app.screen, QuitScreen)
            await pilot.press("enter")  # the default: leave it running
            await wait_until(pilot, lambda: app.return_code is not None, 30, "the app to exit")

    asyncio.run(reattach())
    assert read_state(run_dir).state == "running"
    jobs.cancel(run_dir)
    assert jobs.wait(run_dir, 60).state == "cancelled"


def start_app_in_a_terminal(runs: Path):
    """`coun-lab tui --runs-dir RUNS` on a pseudo-terminal of 120x40; its output is drained."""
    import fcntl
    import pty
    import struct
    import sys
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "coun_tui", "tui", "--runs-dir", str(runs)],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            env={**os.environ, "TERM": "xterm-256color"},
                            # as from a login shell, even when the tests run under nohup (SIGHUP ignored)
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    os.close(slave)

    def drain():
        with contextlib.suppress(OSError):
            while os.read(master, 65536):
                pass

    threading.Thread(target=drain, daemon=True).start()
    return proc, master


def wait_steps(run_dir: Path, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (step := read_state(run_dir).step) < n:
        assert time.monotonic() < deadline, f"timed out waiting for step {n} of {run_dir}"
        time.sleep(0.2)
    return step


async def test_a_killed_worker_and_damaged_files_show_as_such(tmp_path, digits_model):
    app = CounLab(runs_dir=tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await slow_run(pilot, 2)
        run_dir = pane.runlog.run_dir
        with open(run_dir / "events.jsonl", "ab") as fh:  # a damaged line: skipped, never a crash
            fh.write(b'{"kind": "step", "step": \n')
        os.kill(json.loads((run_dir / "status.json").read_text())["pid"], signal.SIGKILL)
        await finished(pilot, pane, 60)
        assert pane.runlog.status == "died" and "killed by SIGKILL at step" in pane.runlog.reason
        assert "the worker died: killed by SIGKILL" in text_of(pane.query_one("#error"))
        (run_dir / "status.json").write_text("{not json")  # a damaged status: still a state
        again = app.open_run(run_dir)
        await pilot.pause(0.5)
        assert again is pane  # shown, not opened twice
        assert read_state(run_dir).state == "died" and "status.json is damaged" in read_state(run_dir).detail
        await pilot.press("o")  # the app goes on
        await pilot.pause(0.5)
        await pilot.press("escape")


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
