"""The lab as a newcomer meets it: the README's first session end to end, and each thing that
session needs to be honest (one launch confirmation, values checked before launch, +CL that
follows the method, the Retrain pane's own settings, the setup kept across sessions).

The session trains one real CoUn epoch on the shipped digits model; the other tests only set up,
confirm or cancel, so they cost seconds.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from test_tui_app import ready, wait_until
from textual.widgets import Footer, Input, Select

from coun_tui.tui.app import CounLab
from coun_tui.tui.widgets.dialogs import ExportScreen, LaunchScreen
from coun_tui.tui.widgets.history import HistoryScreen
from coun_tui.tui.widgets.run_pane import RunPane
from coun_tui.tui.widgets.setup_panel import TickBox

FIXTURE_RUNS = Path(__file__).parent / "fixtures" / "runs"


def screen_lines(app) -> list[str]:
    """The screen as a person sees it, line by line."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def counts(app) -> str:
    return str(app.query_one("#counts").render())


def dialog_text(app) -> str:
    return str(app.screen.query_one(".dialog-text").render())


async def tick_by_keyboard(pilot, cls: int) -> None:
    """Tick a class as a person does: focus the list, move down to it, space."""
    sel = pilot.app.query_one("#forget-classes")
    sel.focus()
    await pilot.pause()
    sel.highlighted = 0
    for _ in range(cls):
        await pilot.press("down")
    await pilot.press("space")
    await pilot.pause()


async def type_into(pilot, field: Input, text: str) -> None:
    field.focus()
    field.value = ""
    for ch in text:
        await pilot.press(ch)
    await pilot.pause()


async def test_readme_first_session(tmp_path, digits_model):
    runs = tmp_path / "runs"
    app = CounLab(runs_dir=runs, session=True)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        setup = app.setup_panel
        # 1. Set up: nothing is ticked at first; tick class 3 and the README's numbers show.
        sel = app.query_one("#forget-classes")
        assert sel.selected == [] and counts(app).startswith("! tick the classes")
        await tick_by_keyboard(pilot, 3)
        assert sel.selected == [3]
        assert "retain 1,291 · forget 146 (class 3)" in counts(app)
        boxes = [sel.render_line(y).text[:3] for y in range(10)]
        assert boxes[3] == "▐X▌" and all(b == "▐ ▌" for i, b in enumerate(boxes) if i != 3)  # not by colour
        # coun with its defaults (README Methods: 10 epochs, lr 0.05, lambda 1, tau 0.1); +CL is CoUn itself.
        assert app.query_one("#method", Select).value == "coun"
        assert {k: setup.hparam_input(k).value for k in ("epochs", "lr", "batch_size", "lambda", "tau")} == \
            {"epochs": "10", "lr": "0.05", "batch_size": "128", "lambda": "1.0", "tau": "0.1"}
        cl = app.query_one("#cl", TickBox)
        assert cl.value and cl.disabled and "always on" in str(cl.label)
        await type_into(pilot, setup.hparam_input("epochs"), "1")  # one epoch keeps the test short

        # 2. Run: one confirmation, which says there is no Retrain reference yet and offers it.
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, LaunchScreen)
        text = dialog_text(app)
        assert "coun · forget class 3 (forget 146 · retain 1,291)" in text and "epochs 1*" in text
        assert "No Retrain reference for class 3" in text and app.screen.query("#retrain_first")
        for key in ("ctrl+r", "r", "enter"):  # a doubled or stray key starts nothing
            await pilot.press(key)
            await pilot.pause()
        assert isinstance(app.screen, LaunchScreen) and not app.panes()
        await pilot.press("y")  # run without a reference (t would queue Retrain first)
        await pilot.pause()
        assert len(app.panes()) == 1 and not isinstance(app.screen, LaunchScreen)
        pane = app.panes()[0]
        await wait_until(pilot, lambda: pane.runlog.finished, 1800, "the CoUn run to finish")
        await pilot.pause(0.6)
        log = pane.runlog
        assert log.status == "done", log.reason
        assert "probe estimates" in str(pane.query_one(".metrics-note").render())

        # 3. Finished: the run record, as README says; run.toml as the run was made.
        run_dir = log.run_dir
        for name in ("run.toml", "split.npz", "events.jsonl", "metrics.json", "model.safetensors", "embedding.npy"):
            assert (run_dir / name).is_file(), name
        spec = tomllib.loads((run_dir / "run.toml").read_text())
        assert spec["method"] == "coun" and spec["hparams"] == {"epochs": 1}
        assert spec["model"] == str(Path(digits_model).resolve())

        # 4. Compare: reopen two saved runs (FT and its Retrain, made earlier on the same split).
        for name in ("ft-digits-class3", "retrain-digits-class3"):
            shutil.copytree(FIXTURE_RUNS / name, runs / name)
        await pilot.press("o")
        assert isinstance(app.screen, HistoryScreen)
        history = app.screen.query_one("DataTable")
        listed = [history.coordinate_to_cell_key((i, 0)).row_key.value for i in range(history.row_count)]
        for name in ("ft-digits-class3", "retrain-digits-class3"):
            history.move_cursor(row=listed.index(str(runs / name)))
            await pilot.press("space")
        await pilot.press("a")
        await pilot.pause(0.5)
        assert len(app.panes()) == 3 and app.compare_view
        app._refresh_compare(force=True)
        await pilot.pause(0.3)
        table = app.compare_table
        rows = {e.run_dir.name: e for e in table.shown()}
        assert rows[run_dir.name].row["avg_gap"] is not None  # the reopened Retrain filled the gaps in
        gaps = {n: e.row["avg_gap"] for n, e in rows.items() if e.row["avg_gap"] is not None}
        best = min(gaps, key=gaps.get)
        assert str(table.get_cell(rows[best].run_id, "avg_gap")).endswith("*")  # best: a glyph, not only green
        heading = str(app.query_one("#compare-head").render())
        assert "reference retrain-digits-class3" in heading and "* best" in heading
        await pilot.press("k")
        assert table.sort_key == "method"
        # x: all three formats at once, under the runs directory, with one time stamp.
        await pilot.press("x")
        assert isinstance(app.screen, ExportScreen)
        app.screen.query_one("OptionList").highlighted = 3
        await pilot.press("enter")
        await pilot.pause(0.3)
        exported = sorted((runs / "exports").iterdir())
        assert [p.suffix for p in exported] == [".csv", ".json", ".md"]
        assert len({p.stem for p in exported}) == 1
        await pilot.press("q")

    # Next time: the panes and the setup come back as they were.
    again = CounLab(runs_dir=runs, session=True)
    async with again.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        await wait_until(pilot, lambda: len(again.panes()) == 3, 30, "the session's runs to reopen")
        await pilot.pause(0.3)
        assert again.query_one("#forget-classes").selected == [3]
        assert "retain 1,291 · forget 146 (class 3)" in counts(again)
        assert again.query_one("#method", Select).value == "coun"
        assert again.setup_panel.hparam_input("epochs").value == "1"


async def test_cl_follows_the_method(tmp_path, digits_model):
    app = CounLab(runs_dir=tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        await tick_by_keyboard(pilot, 3)
        setup, method = app.setup_panel, app.query_one("#method", Select)
        cl = app.query_one("#cl", TickBox)
        assert cl.value and cl.disabled  # coun: always on
        method.value = "ft"
        await pilot.pause()
        assert not cl.value and not cl.disabled and not setup.build_spec().cl
        assert cl.render_line(0).text.lstrip().startswith("▐ ▌")  # off: a blank box
        assert "lambda" not in {i.name for i in setup.query("Input.hp")}  # no CL term, no lambda
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert dialog_text(app).split("\n")[2].startswith("ft · forget class 3")
        await pilot.press("escape")
        # +CL on for FT: kept while the method takes it, forced by coun, off for Retrain.
        cl.focus()
        await pilot.press("space")
        await pilot.pause()
        assert cl.value and setup.build_spec().cl and "▐X▌" in cl.render_line(0).text
        assert {"lambda", "tau"} <= {i.name for i in setup.query("Input.hp")}
        for name, on, disabled in (("coun", True, True), ("ft", True, False), ("retrain", False, True),
                                   ("neggrad+", True, False)):
            method.value = name
            await pilot.pause()
            assert (cl.value, cl.disabled) == (on, disabled), name
        method.value = "retrain"
        await pilot.pause()
        assert not setup.build_spec().cl


async def test_values_are_checked_before_launch(tmp_path, digits_model):
    app = CounLab(runs_dir=tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        await tick_by_keyboard(pilot, 3)
        setup = app.setup_panel
        for text, says in (("", "epochs is empty: give an integer >= 1 (default 10)"),
                           ("abc", "epochs 'abc': expected an integer >= 1"),
                           ("0", "epochs '0': expected an integer >= 1")):
            await type_into(pilot, setup.hparam_input("epochs"), text)
            assert says in str(app.query_one("#hp-problems").render())
            await pilot.press("ctrl+r")
            await pilot.pause()
            assert not isinstance(app.screen, LaunchScreen)
            assert any(says in str(n.message) for n in app._notifications)
        assert not any(tmp_path.iterdir()) and not app.panes()  # nothing was created
        await type_into(pilot, setup.hparam_input("epochs"), "2")
        await type_into(pilot, setup.hparam_input("lr"), "0.02")
        assert str(app.query_one("#hp-problems").render()) == ""
        assert setup.build_spec().hparams == {"epochs": 2, "lr": 0.02}  # typed, as run.toml will hold them


async def test_launch_confirms_once_and_flags_an_identical_run(tmp_path, digits_model):
    runs = tmp_path / "runs"
    shutil.copytree(FIXTURE_RUNS / "retrain-digits-class3", runs / "retrain-digits-class3")
    app = CounLab(runs_dir=runs)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        await tick_by_keyboard(pilot, 3)
        app.query_one("#method", Select).value = "ga"
        await pilot.pause()
        app.setup_panel.set_hparams(epochs=1)
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, LaunchScreen) and "No Retrain reference" not in dialog_text(app)
        assert not app.screen.query("#retrain_first")  # a reference exists: nothing to offer
        assert "identical" not in dialog_text(app)
        await pilot.press("y")
        await pilot.pause()
        first = app.active_pane
        # The same spec again: flagged, and escape starts nothing.
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, LaunchScreen)
        assert "An identical run exists already" in dialog_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert app.panes() == [first]
        # t (Retrain on this split) asks too.
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, LaunchScreen) and dialog_text(app).split("\n")[2].startswith("retrain")
        await pilot.press("escape")
        app.activate_pane(first.run_id)
        await pilot.press("c")
        await app.workers.wait_for_complete()
        assert len(app.panes()) == 1


async def test_retrain_pane_shows_its_own_settings(digits_model):
    app = CounLab(runs_dir=FIXTURE_RUNS)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        pane: RunPane = app.open_run(FIXTURE_RUNS / "retrain-digits-class3")
        await pilot.pause(0.6)
        details = str(pane.query_one("#details").render())
        assert "lambda" not in details and "tau" not in details
        assert "lr=" in details and "the Retrain reference" in details
        assert "no Retrain reference" not in details
        coun = app.open_run(FIXTURE_RUNS / "coun-digits-class3")
        app.set_compare_view(False)
        await pilot.pause(0.6)
        assert "lambda=" in str(coun.query_one("#details").render())


async def test_footer_fits_80_columns(digits_model):
    app = CounLab(runs_dir=FIXTURE_RUNS)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        footer = screen_lines(app)[-1].rstrip()
        assert footer.endswith("q Quit") and "^r Run" in footer and "s Setup" in footer, footer
        assert app.query_one(Footer).region.bottom == 24
