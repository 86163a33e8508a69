"""The help a new user reads first: one line per command in `coun-lab --help`, no value shown for a
flag, `coun-lab methods` in aligned columns with per-method defaults not passed off as common ones."""

from __future__ import annotations

import re

from coun_tui.cli.base import COMMAND_ORDER
from coun_tui.engine.methods import all_methods


def test_top_level_help_gives_each_command_one_line(cli, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert cli("--help") == 0
    out = capsys.readouterr().out
    box = out[out.index("Commands"):]
    rows = [line for line in box.splitlines()[1:] if line.startswith("│")]
    assert [row.split()[1] for row in rows] == list(COMMAND_ORDER), rows  # no continuation rows


def test_flags_show_no_value_type(cli, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    assert cli("compare", "--help") == 0
    help_text = capsys.readouterr().out
    assert "--per-method" in help_text and "<bool>" not in help_text


def test_eval_seed_is_the_forget_draws(cli, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    assert cli("eval", "--help") == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if "--seed" in ln]
    assert "forget set" in line and "training" not in line


def test_methods_lists_common_defaults_only_where_every_method_shares_them(cli, capsys):
    assert cli("methods") == 0
    out = capsys.readouterr().out
    common, _, per_method = out.partition("The contrastive term")
    assert re.search(r"^  lr +per method", common, re.M) and "lambda" not in common
    summaries = [ln for ln in per_method.splitlines() if re.match(r"^[a-z]", ln) and not ln.startswith("Any")]
    starts = {len(ln) - len(ln.split(None, 1)[1]) for ln in summaries}
    assert len(summaries) == len(all_methods()) and len(starts) == 1, summaries  # bad-teacher too
