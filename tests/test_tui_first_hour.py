"""A new user's first hour in the app. The model dialog (`m`): typing reaches the path field, Enter on
the loaded model changes nothing, and another model keeps the ticked classes it also has (saying
which it unticked). The quit dialog sits in the middle, as the others do."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from textual.widgets import Input, OptionList

from coun_tui.engine import paths
from coun_tui.tui.app import CounLab
from coun_tui.tui.messages import ModelLoaded
from coun_tui.tui.widgets.model_picker import ModelPicker
from coun_tui.tui.widgets.quit_dialog import QuitScreen
from tests.test_tui_app import forget_classes, ready, wait_until


async def test_typing_goes_to_the_path_field_and_enter_on_the_loaded_model_keeps_the_forget_set(tmp_path):
    app = CounLab(runs_dir=tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        await forget_classes(pilot, 3, 5)
        await pilot.press("m")
        await pilot.pause()
        assert isinstance(app.screen, ModelPicker)
        assert isinstance(app.focused, Input) and app.focused.id == "path"
        await pilot.press("a", "b")
        assert app.screen.query_one("#path", Input).value == "ab"
        app.screen.query_one("#path", Input).value = ""
        await pilot.press("down")  # the list is one arrow key away; its first entry is the loaded model
        assert isinstance(app.focused, OptionList)
        await pilot.press("enter")
        await pilot.pause(0.5)
        assert not isinstance(app.screen, ModelPicker)
        assert sorted(app.query_one("#forget-classes").selected) == [3, 5]
        assert Path(app.setup_panel.model_path) == paths.DEFAULT_MODEL


async def test_another_model_keeps_the_classes_it_has_and_says_which_it_unticked(tmp_path):
    other = tmp_path / "copy-of-digits.safetensors"
    shutil.copyfile(paths.DEFAULT_MODEL, other)
    app = CounLab(runs_dir=tmp_path / "runs")
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        await forget_classes(pilot, 3)
        await pilot.press("m")
        await pilot.pause()
        await pilot.press(*str(other), "enter")
        await wait_until(pilot, lambda: Path(app.setup_panel.model_path or "") == other, 60, "the copy to load")
        await pilot.pause()
        assert list(app.query_one("#forget-classes").selected) == [3]  # the same classes: kept
        # A model whose classes have other names (a dataset that is not on this machine, as Fashion-MNIST
        # may not be): its dataset as the loader would post it.
        digits = app.setup_panel.dataset
        renamed = dataclasses.replace(digits, classes=[f"letter {c}" for c in "ABCDEFGHIJ"])
        app.post_message(ModelLoaded(str(paths.DEFAULT_MODEL), app.setup_panel.meta, renamed))
        await wait_until(pilot, lambda: app.setup_panel.dataset is renamed, 10, "the renamed classes")
        await pilot.pause()
        assert list(app.query_one("#forget-classes").selected) == []
        said = [n.message for n in app._notifications]
        assert any("unticked 3" in m and paths.DEFAULT_MODEL.name in m for m in said), said


async def test_the_quit_dialog_is_centred_like_the_others(tmp_path):
    app = CounLab(runs_dir=tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        app.push_screen(QuitScreen("1 run(s) are still going"))
        await pilot.pause()
        box = app.screen.query_one(".dialog").region
        assert abs((box.x + box.width / 2) - 80) <= 1 and abs((box.y + box.height / 2) - 24) <= 1, box
