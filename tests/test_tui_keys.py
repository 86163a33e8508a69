"""The keys are declared once (coun_tui/tui/keys.py): the app's bindings, the command palette, the
`?` screen and the README's key table all come from that declaration."""

from __future__ import annotations

import re
from pathlib import Path

from coun_tui.tui import keys
from coun_tui.tui.app import CounLab
from coun_tui.tui.commands import COMMANDS
from coun_tui.tui.help_screen import HELP

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_key_table_is_the_declaration():
    found = re.search(r"<!-- keys:start[^>]*-->\n(.*?)<!-- keys:end -->", README.read_text(), re.S)
    assert found, "README.md has no <!-- keys:start --> ... <!-- keys:end --> block"
    assert found.group(1) == keys.markdown_table(), (
        "README's key table differs from coun_tui/tui/keys.py: paste `python -m coun_tui.tui.keys --markdown`")


def test_the_table_is_printed_for_the_readme(capsys):
    keys.main(["--markdown"])
    printed = capsys.readouterr().out
    assert printed == keys.markdown_table()
    assert "| `[` | previous run pane" in printed and "| `?` / `f1` |" in printed


def test_every_declared_key_is_bound_to_an_action_of_the_app():
    bound = {(b.key, b.action) for b in CounLab.BINDINGS}
    for key in keys.KEYS:
        if key.bound_by_app:
            assert callable(getattr(CounLab, f"action_{key.action}", None)), key.action
            assert {(name, key.action) for name in key.keys} <= bound
    assert len(bound) == len(CounLab.BINDINGS), "a key is bound twice"
    assert [b.description for b in CounLab.BINDINGS if b.show] == [
        "Run", "Retrain", "Cancel", "Compare", "Runs", "Export", "Setup", "Help", "Quit"]
    assert {b.key for b in CounLab.BINDINGS if b.priority} == {"ctrl+r", "f1"}


def test_palette_and_help_come_from_the_declaration():
    assert [action for _, action, _ in COMMANDS] == [k.action for k in keys.KEYS if k.palette]
    assert keys.markdown_table() in HELP
