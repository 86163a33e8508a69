"""The CLI as a newcomer meets it: help for every option, flags shown as flags, `--cl` only where
it means something, run.toml as the run was made, and the errors of a mistyped path."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import click
import pytest
import typer

from coun_tui.cli import app

REPO = Path(__file__).resolve().parents[1]


def commands() -> dict[str, click.Command]:
    return typer.main.get_command(app).commands


def test_every_option_has_help_and_flags_take_no_value(capsys, cli):
    for name, command in commands().items():
        ctx = click.Context(command)
        for param in [*command.params, command.get_help_option(ctx)]:
            if isinstance(param, click.Option):
                assert (param.help or "").strip(), f"coun-lab {name} {param.opts[0]} has no help"
    for args in (["unlearn", "--help"], ["eval", "--help"], ["train", "--help"], ["sweep", "--help"], ["--help"]):
        capsys.readouterr()
        assert cli(*args) == 0
        out = capsys.readouterr().out
        assert "<bool>" not in out, f"coun-lab {' '.join(args)} shows a flag as taking a value"
    # A flag is used as documented: present means on; `--cl true` is refused as an extra argument.
    assert cli("unlearn", "--model", "m", "--method", "ft", "--out", "o", "--cl", "true") == 2
    assert "unexpected extra argument" in capsys.readouterr().err.lower()


def test_square_brackets_in_help_survive_rich_markup(capsys, cli, monkeypatch):
    """Typer renders help as rich markup, where an unescaped "[plots]" is a style tag and vanishes."""
    tag = re.compile(r"(?<!\\)\[[a-z/#@][^\]]*\]")
    for name, command in commands().items():
        for what, text in [("", command.help), *((p.name, getattr(p, "help", None)) for p in command.params)]:
            assert not tag.search(text or ""), f"coun-lab {name} {what}: escape [ as \\[ in {text!r}"
    monkeypatch.setenv("COLUMNS", "200")
    capsys.readouterr()
    assert cli("curve", "--help") == 0
    assert "pip install -e '.[plots]'" in capsys.readouterr().out


def test_compare_of_a_missing_directory_says_so(capsys, cli):
    assert cli("compare", "/nonexistent") == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: /nonexistent: no such directory; give finished run directories"


@pytest.mark.parametrize("method, says", [("retrain", "is the reference"), ("coun", "always on"),
                                          ("CoUn", "always on")])
def test_cl_is_refused_where_it_means_nothing(method, says, digits_model, tmp_path, capsys, cli):
    out = tmp_path / "run"
    assert cli("unlearn", "--model", digits_model, "--method", method, "--cl", "--forget-class", "3",
               "--out", out, "-q") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and says in err and "drop --cl" in err and "\n" not in err
    assert not out.exists()  # refused before anything was written


def test_run_toml_records_the_run_as_made(digits_model, tmp_path, monkeypatch, cli):
    """A relative model path and a method typed as `GA`: run.toml holds the full path and `ga`."""
    monkeypatch.chdir(REPO)
    out = tmp_path / "ga"
    relative = Path(digits_model).resolve().relative_to(REPO)
    assert cli("unlearn", "--model", relative, "--method", "GA", "--forget-class", "3", "--epochs", "1",
               "--lr", "0.001", "--out", out, "-q") == 0
    spec = tomllib.loads((out / "run.toml").read_text())
    assert spec["method"] == "ga"
    assert spec["model"] == str(Path(digits_model).resolve())
    assert spec["hparams"] == {"epochs": 1, "lr": 0.001}
    assert json.loads((out / "metrics.json").read_text())["method"] == "ga"


def test_eval_takes_the_split_from_the_reference(digits_model, tmp_path, capsys, cli):
    ref = tmp_path / "retrain"
    assert cli("unlearn", "--model", digits_model, "--method", "retrain", "--forget-class", "3",
               "--epochs", "1", "--out", ref, "-q") == 0
    capsys.readouterr()
    assert cli("eval", "--model", digits_model, "--reference", ref, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["n_retain"], result["n_forget"]) == (1291, 146)
    retrain = json.loads((ref / "metrics.json").read_text())
    assert result["gap"]["UA"] == pytest.approx(abs(result["UA"] - retrain["UA"]))
