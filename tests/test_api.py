"""The Python API: docs/python-api.md's example run as written (digits, one epoch), in this process
and as a background job cancelled and waited on; what the handles give; bad input; no heavy imports."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import coun_tui
from coun_tui import ForgetSet, Run, Table, UserError
from coun_tui.engine.paths import MODELS_DIR

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "python-api.md"


def doc_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, "docs/python-api.md should hold one runnable example"
    return blocks[0]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The doc's example, executed as written from a folder where models/ is the shipped models."""
    where = tmp_path_factory.mktemp("example")
    (where / "models").symlink_to(MODELS_DIR)
    namespace: dict = {}
    before = os.getcwd()
    os.chdir(where)
    try:
        exec(compile(doc_example(), str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    finally:
        os.chdir(before)
    namespace["where"] = where
    return namespace


def test_the_doc_example_runs_in_process_and_as_a_cancelled_job(example, capsys):
    retrain, run, job = example["retrain"], example["run"], example["job"]
    assert (retrain.state, run.state, job.state) == ("done", "done", "cancelled")
    where = example["where"]
    assert run.path == (where / "demo/coun").resolve() and (where / "demo/coun/metrics.json").is_file()
    # in this process, as the worker runs a job: its status says so, with this process's id
    status = (where / "demo/coun/status.json").read_text()
    assert f'"pid": {os.getpid()}' in status and '"state": "done"' in status
    # the background job was a worker process of its own, stopped within a step of the cancel
    job_events = list(Run(where / "demo/ft").events())
    assert job_events[-1].kind == "cancelled" and sum(e.kind == "step" for e in job_events) <= 3
    assert example["event"].kind == "step"


def test_handles_give_events_metrics_and_the_checkpoint(example):
    where, run = example["where"], Run(example["where"] / "demo/coun")
    kinds = [e.kind for e in run.events()]
    assert kinds[0] == "started" and kinds[-1] == "done" and "step" in kinds and kinds.count("epoch") == 2
    metrics = run.metrics
    assert metrics["method"] == "coun" and metrics["hparams"]["epochs"] == 1 and metrics["hparams"]["lr"] == 0.01
    assert metrics["avg_gap"] is not None and metrics["forget"]["classes"] == [3]
    model = coun_tui.load_model(run.checkpoint)
    assert model.dataset == "digits" and model.classes[3] == "3" and model.meta["method"] == "coun"
    assert coun_tui.load_model(where / "demo/coun").path == run.checkpoint  # a run's directory loads its model
    assert Run(where / "demo/ft").metrics is None and Run(where / "demo/ft").checkpoint is None
    assert Run(where / "demo/ft").cancel() is False  # no longer live


def test_evaluate_gives_the_runs_own_metrics(example):
    scores, run = example["scores"], example["run"]
    for key in ("RA", "UA", "TA", "MIA", "avg_gap"):
        assert scores[key] == pytest.approx(run.metrics[key], abs=1e-9), key
    assert scores["n_forget"] == run.metrics["forget"]["n_forget"] and scores["dataset"] == "digits"


def test_compare_is_a_table_without_pandas(example):
    table = example["table"]
    assert isinstance(table, Table) and len(table) == 2
    assert [r["method"] for r in table.rows] == ["retrain", "coun"] and "avg_gap" in table.columns
    assert table.to_markdown().startswith("| Method |") and table._repr_markdown_() == table.to_markdown()
    header, *lines = table.to_csv().splitlines()
    assert header.split(",")[:3] == ["run", "method", "RA"] and len(lines) == 2
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="needs pandas"):
            table.to_pandas()
    else:
        assert list(table.to_pandas()["method"]) == ["retrain", "coun"]
    # the CLI's table of the same runs is the same text
    from coun_tui.engine.report import compare as cli_compare

    paths = [example["where"] / "demo/retrain", example["where"] / "demo/coun"]
    assert coun_tui.compare(paths).to_markdown() == cli_compare(paths, "md")


def test_bad_input_is_one_line_and_writes_nothing(digits_model, tmp_path):
    forget = ForgetSet.classes("Coat")
    with pytest.raises(UserError, match="unknown class 'Coat' for digits"):
        coun_tui.unlearn(digits_model, "coun", forget, out=tmp_path / "a")
    with pytest.raises(UserError, match="unknown method|no method"):
        coun_tui.unlearn(digits_model, "nope", ForgetSet.classes(3), out=tmp_path / "b")
    with pytest.raises(UserError, match="lr"):
        coun_tui.unlearn(digits_model, "ft", ForgetSet.classes(3), out=tmp_path / "c", lr=-1)
    with pytest.raises(UserError, match="unknown tracker"):
        coun_tui.unlearn(digits_model, "ft", ForgetSet.classes(3), out=tmp_path / "d", log=["wandb"])
    with pytest.raises(UserError):
        coun_tui.unlearn(digits_model, "ft", ForgetSet.fraction(1.5), out=tmp_path / "e", background=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="no such checkpoint"):
        coun_tui.load_model(tmp_path / "missing.safetensors")


def test_import_loads_neither_torch_nor_the_app():
    code = ("import sys, coun_tui; coun_tui.ForgetSet.classes(3); coun_tui.Run('.');"
            "print(sorted(m for m in ('torch', 'textual', 'typer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    assert out.strip() == "[]"


def test_every_public_name_has_a_docstring():
    for name in coun_tui.__all__:
        obj = getattr(coun_tui, name)
        assert inspect.getdoc(obj), name
        if inspect.isclass(obj) and obj is not UserError:
            for member, value in vars(obj).items():
                if not member.startswith("_") and (inspect.isfunction(value) or isinstance(
                        value, (property, classmethod))):
                    assert inspect.getdoc(getattr(value, "__func__", value)), f"{name}.{member}"
