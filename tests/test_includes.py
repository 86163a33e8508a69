"""Committed docs show result files as they are: results/README.md's tables are the table.md files."""

from pathlib import Path

from coun_tui.includes import main, render, stale

ROOT = Path(__file__).resolve().parents[1]


def test_results_readme_shows_the_committed_tables():
    assert not stale(ROOT / "results" / "README.md", ROOT), \
        "results/README.md is stale: run python -m coun_tui.includes results/README.md"


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
