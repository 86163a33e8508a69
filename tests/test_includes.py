"""Committed docs show result files as they are: the results READMEs' tables are the table.md files."""

from pathlib import Path

import pytest

from coun_tui.includes import main, render, stale

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("doc", ["results/README.md", "results/fashion-budget/README.md"])
def test_results_readme_shows_the_committed_tables(doc):
    assert not stale(ROOT / doc, ROOT), f"{doc} is stale: run python -m coun_tui.includes {doc}"


def test_an_include_block_is_filled_and_a_stale_one_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("table.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    doc = Path("doc.md")
    doc.write_text("Intro\n\n<!-- include table.md -->\nold\n<!-- /include -->\n\nEnd\n")
    assert main(["--check", "doc.md"]) == 1 and "stale: doc.md" in capsys.readouterr().err
    assert main(["doc.md"]) == 0
    assert doc.read_text() == ("Intro\n\n<!-- include table.md -->\n| a | b |\n|---|---|\n| 1 | 2 |\n"
                               "<!-- /include -->\n\nEnd\n")
    assert main(["--check", "doc.md"]) == 0
    assert render(doc.read_text(), tmp_path) == doc.read_text()
