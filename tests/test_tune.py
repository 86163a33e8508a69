"""`coun-lab tune`: a real Optuna study on digits whose trials are jobs (run directories), pruned,
killed with SIGKILL and resumed; --show; a sweep at its best parameters scored on the report half;
and bad input refused in one line with nothing changed."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import optuna
import pytest

from coun_tui.engine import study as studies
from coun_tui.engine import tune
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.jobs import read_spec_dict, wait
from coun_tui.engine.runner import RunSpec, half_rows, prepare
from coun_tui.engine.runs import record

TRIALS = 3


class PruneTrials(optuna.pruners.BasePruner):
    """Prunes the given trials at their first report: a pruned trial, deterministically."""

    def __init__(self, numbers):
        self.numbers = set(numbers)

    def prune(self, study, trial):
        return trial.number in self.numbers


def tune_args(model, ref, out, *extra):
    return ["tune", "--model", model, "--method", "ft", "--forget-class", "3", "--trials", str(TRIALS),
            "--epochs", "1", "--device", "cpu", "--reference", str(ref), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def study(digits_model, tmp_path_factory):
    """One study shared by the tests: started by `coun-lab tune`, SIGKILLed once trial 0 has
    finished and trial 1 runs, then resumed here with a pruner that prunes the next trial."""
    root = tmp_path_factory.mktemp("tune")
    ref = root / "retrain"  # a quick Retrain on the validation half (the study's own takes 30 epochs)
    spec = RunSpec(method="retrain", model=digits_model, forget=ForgetSpec(classes=[3]), hparams={"epochs": 1},
                   device="cpu", test_half="val")
    for _ in record(prepare(spec), ref):
        pass
    out = root / "study"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "coun_tui", *tune_args(digits_model, ref, out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (out / "trial-0001" / "events.jsonl").is_file():  # its worker has started
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "trial 1 never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = optuna.load_study(study_name=studies.read_settings(out)[1], storage=f"sqlite:///{out / 'study.db'}")
    states = [t.state for t in killed.get_trials()]
    settings, name = studies.read_settings(out)
    lines = []
    prepared, started_as = studies.prepare(out, settings, "cpu")
    tune.run(prepared, started_as, pruner=PruneTrials({2}), say=lines.append, own_reference=False)
    return {"out": out, "ref": ref, "killed": states, "lines": lines, "model": digits_model}


def trials_of(out):
    _, ostudy = studies.load(out)
    return ostudy.get_trials()


def test_trials_are_run_directories_of_the_validation_half(study):
    trials = trials_of(study["out"])
    assert len(trials) == TRIALS
    for t in trials:
        run = study["out"] / t.user_attrs["run"]
        spec = read_spec_dict(run)
        assert spec["test_half"] == "val" and spec["hparams"]["lr"] == pytest.approx(t.params["lr"])
        assert spec["hparams"]["epochs"] == 1
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    for t in done:  # the objective is the run's own Avg. Gap against the study's Retrain
        import json

        metrics = json.loads((study["out"] / t.user_attrs["run"] / "metrics.json").read_text())
        assert metrics["test_half"] == "val" and t.value == pytest.approx(metrics["avg_gap"])


def test_sigkill_then_resume_finishes_the_same_trials(study):
    # Killed with trial 0 told and trial 1 running; the resumed study followed trial 1's run to its
    # end and told it, and ran only what the budget had left.
    assert study["killed"][:2] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]
    assert "trial 1: following its run, still going" in study["lines"]
    trials = trials_of(study["out"])
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert len(studies.counted(trials)) == TRIALS
    assert sorted(p.name for p in study["out"].glob("trial-*")) == ["trial-0000", "trial-0001", "trial-0002"]


def test_a_pruned_trial_keeps_its_run(study):
    pruned = trials_of(study["out"])[2]
    assert pruned.state == optuna.trial.TrialState.PRUNED and pruned.intermediate_values
    run = study["out"] / pruned.user_attrs["run"]
    assert wait(run, timeout=60).state in ("cancelled", "done")  # stopped through the job system, kept
    assert (run / "run.toml").is_file() and (run / "events.jsonl").is_file()
    assert any(line.startswith("trial 2 pruned at epoch 1") for line in study["lines"])


def test_show_prints_trials_best_parameters_and_importance(study, cli, capsys):
    assert cli("tune", "--show", study["out"]) == 0
    text = capsys.readouterr().out
    best = min((t for t in trials_of(study["out"]) if t.value is not None and t.state.name == "COMPLETE"),
               key=lambda t: t.value)
    assert f"best: trial {best.number}, Avg. Gap {best.value:.3f}: lr={best.params['lr']:.4g}" in text
    assert "pruned" in text and "search space: lr [0.001, 0.1] log" in text
    assert "importance: lr 1.00" in text


def test_a_tuned_sweep_reports_on_the_report_half_only(study, cli, capsys, tmp_path):
    out = tmp_path / "final"
    assert cli("sweep", "--model", study["model"], "--from-study", study["out"], "--seeds", "0",
               "--set", "retrain.epochs=1", "--out", out) == 0
    capsys.readouterr()
    table = (out / "table.md").read_text()
    assert "the report half of the test set (split seed 0)" in table and f"ft: study {study['out']}" in table
    best = min((t for t in trials_of(study["out"]) if t.state.name == "COMPLETE"), key=lambda t: t.value)
    runs = sorted(p.parent for p in out.rglob("run.toml"))
    assert [p.name for p in runs] == ["ft", "retrain"]  # the study's forget set, class 3
    for run in runs:
        assert read_spec_dict(run)["test_half"] == "report"
    assert read_spec_dict(runs[0])["hparams"] == {"lr": pytest.approx(best.params["lr"]), "epochs": 1}
    assert cli("compare", *runs) == 0
    assert "TA on the report half of the test set (split seed 0)." in capsys.readouterr().out


def test_a_trial_whose_run_was_cut_off_is_retried_with_its_parameters(study, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(study["out"], copy, ignore=shutil.ignore_patterns(".study.lock"))
    settings, _ = studies.read_settings(copy)
    _, ostudy = studies.load(copy)
    cut = ostudy.ask(studies.distributions(settings))  # a study process died here: its run never wrote a line
    cut.set_user_attr("run", "trial-0003")
    (copy / "trial-0003").mkdir()
    lines = []
    assert tune.resume_left_trials(ostudy, copy, lines.append) == []
    trials = ostudy.get_trials()
    assert [t.state.name for t in trials[3:]] == ["FAIL", "WAITING"]
    assert trials[4].user_attrs == {"retry_of": 3} and trials[4].system_attrs["fixed_params"] == cut.params
    assert len(studies.counted(trials)) == TRIALS  # the cut-off trial does not spend the budget
    assert "trial 3: its run was cut off; its parameters are tried again" in lines


def test_the_halves_split_the_test_set_once():
    val, report = half_rows(1000, "val", 7), half_rows(1000, "report", 7)
    assert len(val) == len(report) == 500 and not set(val) & set(report)
    assert np.array_equal(np.sort(np.r_[val, report]), np.arange(1000))
    assert np.array_equal(val, half_rows(1000, "val", 7)) and not np.array_equal(val, half_rows(1000, "val", 8))


def snapshot(folder):
    return {p: p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}


def test_bad_input_is_one_line_and_changes_nothing(study, cli, capsys, tmp_path):
    out, model, ref = study["out"], study["model"], study["ref"]
    before = snapshot(out)
    fresh = tmp_path / "new"

    def refused(*args, says):
        assert cli(*args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and says in err, err

    refused(*tune_args(model, ref, fresh)[:4], "nope", *tune_args(model, ref, fresh)[5:], says="unknown method 'nope'")
    args = tune_args(model, ref, fresh)
    args[args.index("ft")] = "neggrad+"
    refused(*args, "--range", "alpha=0.5:1.5", says="outside the valid values")
    refused(*tune_args(model, ref, fresh, "--range", "lr=0.1:0.01"), says="must be below")
    assert not fresh.exists()
    # Another study's settings into this study's folder
    refused(*tune_args(model, ref, out, "--trials", "5"), says="holds another study (trials: 3 there, 5 now)")
    # A damaged and a foreign SQLite file beside this study's settings
    for content, says in ((b"not a database at all" * 100, "not a readable SQLite database"),
                          (None, "not an Optuna study's")):
        other = tmp_path / f"copy-{says[:7].replace(' ', '')}"
        other.mkdir()
        shutil.copy(out / "study.toml", other / "study.toml")
        if content is None:
            with sqlite3.connect(other / "study.db") as con:
                con.execute("CREATE TABLE notes (text TEXT)")
        else:
            (other / "study.db").write_bytes(content)
        kept = snapshot(other)
        refused(*tune_args(model, ref, other), says=says)
        refused("tune", "--show", other, says=says)
        assert snapshot(other) == kept
    # Another study's database in this folder: the copy names a study its database does not hold
    alien = tmp_path / "alien"
    shutil.copytree(out, alien, ignore=shutil.ignore_patterns("trial-*", ".study.lock"))
    text = (alien / "study.toml").read_text()
    (alien / "study.toml").write_text(text.replace(tomllib.loads(text)["name"], "someone-else"))
    refused("tune", "--show", alien, says="holds another study")
    refused("tune", "--show", tmp_path, says="holds no study")
    assert snapshot(out) == before


def test_search_ranges_are_declared_once_beside_each_method(cli, capsys):
    from coun_tui.engine.methods import Param, Search, all_methods, searched

    with pytest.raises(ValueError, match="outside the valid values"):
        Param(0.5, "h", ge=0, le=1, search=Search(0.1, 2.0))
    spaces = {name: searched(cls) for name, cls in all_methods().items()}
    assert set(spaces["coun"]) == {"lr", "lambda", "tau"} and set(spaces["ft"]) == {"lr"}
    assert set(searched(all_methods()["ft"], cl=True)) == {"lr", "lambda", "tau"}  # ft+CL tunes its term too
    assert spaces["neggrad+"]["alpha"] == Search(0.95, 0.9999) and spaces["salun"]["mask_ratio"] == Search(0.1, 1.0)
    assert spaces["l1-sparse"]["gamma"] == Search(1e-4, 0.1, log=True)
    assert all(space["lr"].log for space in spaces.values() if "lr" in space)
    assert set(spaces["ssd"]) == {"selection", "dampening"}  # no step uses an lr
    assert cli("methods") == 0
    assert "tune searches: lr [0.001, 0.1] log, alpha [0.95, 0.9999]" in capsys.readouterr().out


def test_trackers_given_to_a_study_reach_every_trial_and_its_retrain(digits_model, tmp_path):
    """`tune --log` logs every trial (and the study's own Retrain) like `unlearn --log` does, and
    which trackers are used is not a setting of the study: a rerun may change them."""
    from coun_tui.engine import study as study_api
    from coun_tui.engine.forget import ForgetSpec

    settings = study_api.StudySettings(model=digits_model, method="ft", forget=ForgetSpec(classes=[3]),
                                       trials=2, epochs=1, space=study_api.search_space("ft", False, {}))
    study, _ = study_api.prepare(tmp_path / "s", settings, log=["tensorboard"])
    assert study.trial_spec({"lr": 0.01}).log == ["tensorboard"]
    assert study.retrain_spec().log == ["tensorboard"]
    plain, _ = study_api.prepare(tmp_path / "s", settings)
    assert plain.trial_spec({"lr": 0.01}).log == []
