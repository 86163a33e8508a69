"""The app with damaged run records (the RECORD_DAMAGE table of test_hostile.py): it starts, shows
every damaged run in its history as "damaged: FILE ...", opens each one as far as it reads, and
never crashes, also when the session file lists them (as it did after such a crash, so that every
later start crashed too) or is itself damaged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_hostile import FIXTURE_RUNS, RECORD_DAMAGE, damaged_run
from test_tui_app import ready, wait_until

from coun_tui.engine.schema import RecordError
from coun_tui.tui.app import TAB_NAME_CHARS, CounLab
from coun_tui.tui.saved_runs import SESSION_FILE, read_session
from coun_tui.tui.widgets.history import STATE_CHARS, HistoryScreen

# Which damage a run shows where: in the history's State (a file it checks) or only when opened.
OPENED_ONLY = {"events-losses-5", "events-garbage-line", "embedding-garbage", "labels-long-name"}
# The runs the session file lists (those that crashed the app, and one of each other file).
SESSION = ("metrics-no-method", "metrics-seconds-fast", "metrics-truncated", "status-not-json", "events-losses-5",
           "events-garbage-line", "run-toml-invalid", "labels-long-name", "split-garbage", "embedding-garbage")


def hostile_runs(root: Path) -> dict[str, Path]:
    runs = {case: damaged_run(root, case) for case in RECORD_DAMAGE}
    shutil.copytree(FIXTURE_RUNS / "retrain-digits-class3", root / "retrain-digits-class3")
    return runs


def history_rows(app) -> dict[str, dict[str, str]]:
    """Run directory name -> column key -> cell text (columns that did not fit are absent)."""
    table = app.screen.query_one("DataTable")
    keys = [c.key.value for c in table.ordered_columns]
    rows = {}
    for i in range(table.row_count):
        key = table.coordinate_to_cell_key((i, 0)).row_key.value
        rows[Path(key).name] = dict(zip(keys, (str(c) for c in table.get_row_at(i))))
    return rows


async def test_damaged_runs_show_in_history_open_and_never_crash_the_app(tmp_path, digits_model):
    runs = hostile_runs(tmp_path)
    (tmp_path / SESSION_FILE).write_text(json.dumps({"open": [str(runs[c]) for c in SESSION], "compare": True,
                                                      "sort": ["avg_gap", False], "active": None}))
    app = CounLab(runs_dir=tmp_path, session=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        await wait_until(pilot, lambda: len(app.panes()) == len(SESSION), 20, "the session's runs to reopen")
        for case in SESSION:
            log = app.pane_for(runs[case]).runlog
            if case != "labels-long-name":
                assert log.damage, case  # each says what is damaged
        # The panes say so too, and a tab never grows with a name of thousands of characters.
        pane = app.pane_for(runs["events-losses-5"])
        app.activate_pane(pane.run_id)
        await pilot.pause(0.6)
        error = str(pane.query_one("#error").render())
        assert "damaged: events.jsonl line" in error and "losses" in error
        assert pane.runlog.steps and pane.runlog.status == "done"  # the rest of the run still replays
        long = app.pane_for(runs["labels-long-name"])
        tab = app.query_one("#run-tabs").query_one(f"#tab-{long.run_id}")
        assert len(str(tab.label)) <= TAB_NAME_CHARS + 6
        app._refresh_compare(force=True)  # every damaged run as a row of the comparison
        await pilot.pause(0.3)
        assert app.compare_table.row_count == len(SESSION)

        # The history lists every run; a damaged record shows as its state, cut to fit.
        await pilot.press("o")
        assert isinstance(app.screen, HistoryScreen)
        rows = history_rows(app)
        assert len(rows) == len(runs) + 1
        for case, run in runs.items():
            state = rows[run.name]["State"]
            if case not in OPENED_ONLY:
                assert state.startswith("damaged: "), (case, state)
                assert RECORD_DAMAGE[case][0] in state or len(state) == STATE_CHARS, (case, state)
            names = (rows[run.name].get(k, "") for k in ("mark", "Name", "Tags"))
            assert len(state) <= STATE_CHARS and all(len(cell) <= 60 for cell in names)
        # Opening one from the history works (it is the one that used to crash the app).
        table = app.screen.query_one("DataTable")
        keys = [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(table.row_count)]
        table.move_cursor(row=keys.index(str(runs["metrics-no-method"])))
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert not isinstance(app.screen, HistoryScreen)
        assert app.active_pane is app.pane_for(runs["metrics-no-method"])
        await pilot.press("o")  # and one that was not open yet
        table = app.screen.query_one("DataTable")
        keys = [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(table.row_count)]
        table.move_cursor(row=keys.index(str(runs["metrics-RA-text"])))
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert app.active_pane is app.pane_for(runs["metrics-RA-text"]) and app.active_pane.runlog.damage
        await pilot.press("q")


@pytest.mark.parametrize("content", ["{not json", json.dumps({"open": "ft", "sort": [1, 2, 3]}),
                                     json.dumps({"open": [5, None]}), json.dumps([]), "\xff"])
def test_a_damaged_session_file_is_one_line(tmp_path, content):
    (tmp_path / SESSION_FILE).write_text(content)
    with pytest.raises(RecordError) as info:
        read_session(tmp_path / SESSION_FILE)
    assert SESSION_FILE in str(info.value) and "\n" not in str(info.value)


async def test_the_lab_starts_past_a_damaged_session_file_with_a_notice(tmp_path, digits_model):
    shutil.copytree(FIXTURE_RUNS / "ft-digits-class3", tmp_path / "ft")
    (tmp_path / SESSION_FILE).write_text("{not json")
    app = CounLab(runs_dir=tmp_path, session=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.pause(0.3)
        assert not app.panes()
        notes = [str(n.message) for n in app._notifications if n.title == "session not restored"]
        assert notes and SESSION_FILE in notes[0] and "\n" not in notes[0], notes
        await pilot.press("q")
