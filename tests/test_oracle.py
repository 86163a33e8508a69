"""The oracle: the competition's epsilon and F on synthetic populations whose answer is known, and
`coun-lab oracle` for real on digits (small populations, through the jobs), with its bad input."""

import json
import os
import shutil

import numpy as np
import pytest

from coun_tui.engine import oracle_scores as scores


def normal(shift, n=16, examples=40, sd=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(shift, sd, (n, examples))


def test_margin_is_the_logit_scaled_confidence_without_rounding():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, (50, 10))
    labels = rng.integers(0, 10, 50)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    py = p[np.arange(50), labels]
    assert np.allclose(scores.margins(logits, labels), np.log(py) - np.log1p(-py), atol=1e-9)
    # Far beyond where 1 - p_y rounds to 0, the margin stays exact.
    assert scores.margins(np.array([[200.0, 0.0, 0.0]]), np.array([0]))[0] == pytest.approx(200 - np.log(2))


def test_separated_populations_give_larger_epsilon_growing_with_the_separation():
    retrained = normal(0.0, seed=1)
    medians = [np.median(scores.epsilons(normal(shift, seed=2), retrained)) for shift in (0.0, 1.0, 2.0, 4.0)]
    assert medians == sorted(medians) and medians[0] < medians[1] < medians[-1]
    quality = [scores.forget_quality(scores.epsilons(normal(s, seed=2), retrained), 16) for s in (0.0, 1.0, 4.0)]
    assert quality[0] > quality[1] > quality[2]
    # Identical distributions do not score 1: the max over ~160k thresholds finds tail noise
    # (the reference notes F ~ 0.16-0.22 at any N from 16 to 512).
    assert 0.1 < quality[0] < 0.35


def test_swapping_the_populations_leaves_epsilon_unchanged():
    u, r = normal(0.7, seed=3), normal(0.0, seed=4)
    assert np.array_equal(scores.epsilons(u, r), scores.epsilons(r, u))


def test_edge_cases_of_epsilon_and_f():
    ones = np.ones(8)
    assert scores.example_epsilon(ones, ones) == 0.0  # identical constants: nothing to tell apart
    assert scores.example_epsilon(ones, 2 * ones) == scores.EPSILON_CAP
    peaky = np.linspace(0, 0.001, 8)  # a population 1000x narrower than the other: the cap
    assert scores.example_epsilon(peaky, np.linspace(-1, 1, 8)) == scores.EPSILON_CAP
    # N = 16: max_eps = ceil(ln 15) = 3, six bins of 0.5 worth 1, 1/2 ... 1/32; the cap earns 0.
    eps = np.array([0.2, 0.7, 2.9, 3.0, 50.0])
    assert scores.forget_quality(eps, 16) == pytest.approx((1 + 0.5 + 1 / 32) / 5)
    assert scores.final_score(0.5, 90, 100, 99, 90) == pytest.approx(0.5 * 0.9 * 1.1)  # not capped at 1


def test_klom_is_near_zero_for_identical_and_large_for_separated_margins():
    same = scores.klom(normal(0, n=100, seed=5), normal(0, n=100, seed=6))
    apart = scores.klom(normal(4, n=100, seed=5), normal(0, n=100, seed=6))
    assert np.median(same) < 0.6 < 5 < np.median(apart) <= np.log(1e5)


# The whole command on digits --------------------------------------------------------------------

ARGS = ["--methods", "ft", "--forget-fraction", "0.1", "--population", "4", "--epochs", "1",
        "--set", "retrain.epochs=1", "--single-original", "--jobs", "2", "--device", "cpu"]


def run_cli(*args):
    from coun_tui.cli import main

    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    return done.value.code


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A digits model of 1 epoch on a 300-image subset: its Retrains train on ~270 images."""
    path = tmp_path_factory.mktemp("model") / "digits-300.safetensors"
    assert run_cli("train", "--dataset", "digits", "--subset", 300, "--epochs", 1, "--device", "cpu",
                   "--out", path) == 0
    return str(path)


@pytest.fixture(scope="module")
def oracle_dir(small_model, tmp_path_factory):
    """4 Retrains, 4 control Retrains and 4 FT runs of one epoch, through the jobs."""
    out = tmp_path_factory.mktemp("oracle") / "o"
    assert run_cli("oracle", "--model", small_model, *ARGS, "--out", out) == 0
    return out


def test_originals_are_retrained_on_the_checkpoints_own_subset(small_model, tmp_path):
    from coun_tui.engine.forget import ForgetSpec
    from coun_tui.engine.oracle import Oracle

    plan = Oracle(small_model, ["ft"], ForgetSpec(fraction=0.1), 4, tmp_path).runs()
    originals = [spec for run_dir, spec in plan if run_dir.parent.name == "original"]
    assert [s.seed for s in originals] == [0, 1, 2, 3] and {s.subset_seed for s in originals} == {0}
    assert all(s.subset == 300 and s.model is None and not s.forget.fraction for s in originals)
    assert [d.name for d, s in plan if d.parent.name == "retrain-control"][0] == "seed-100000"


def test_oracle_scores_the_controls_in_order_and_resumes(oracle_dir, small_model, cli, capsys):
    capsys.readouterr()
    assert cli("oracle", "--show", oracle_dir, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    rows = {r["group"]: r for r in result["rows"]}
    assert set(rows) == {"retrain-control", "original", "ft"} and all(r["n"] == 4 for r in rows.values())
    assert rows["retrain-control"]["F"] > rows["original"]["F"]
    assert 0 <= rows["ft"]["F"] <= 1 and len(rows["ft"]["eps"]) == 30  # 10% of 300
    assert [o["method"] for o in result["ranking"][0]["order"]] == ["ft"]

    members = sorted(p for p in oracle_dir.glob("*/seed-*"))
    stamps = {p: (p / "metrics.json").stat().st_mtime_ns for p in members}
    assert cli("oracle", "--model", small_model, *ARGS, "--out", oracle_dir) == 0
    out = capsys.readouterr()
    assert sorted(p for p in oracle_dir.glob("*/seed-*")) == members  # no new member
    assert all((p / "metrics.json").stat().st_mtime_ns == t for p, t in stamps.items())
    assert "| retrain-control |" in out.out and "N = 4: ft" in out.out and "[1/" not in out.err


def test_damaged_member_is_named_left_out_and_counted(oracle_dir, cli, capsys, tmp_path):
    copy = tmp_path / "o"
    shutil.copytree(oracle_dir, copy, ignore=shutil.ignore_patterns(".*", "*.lock"))
    victim = copy / "ft" / "seed-2"
    (victim / "metrics.json").write_text("{not json")
    os.utime(victim / "metrics.json")
    capsys.readouterr()
    assert cli("oracle", "--show", copy) == 0
    out = capsys.readouterr().out
    assert "ft/seed-2" in out and "1 damaged" in out
    assert "| ft | — |" in out  # 3 usable members: too few to score at N >= 4


def test_bad_input_is_one_line_and_writes_nothing(small_model, oracle_dir, cli, capsys, tmp_path):
    out = tmp_path / "new"
    assert cli("oracle", "--model", small_model, *ARGS[:4], "--population", "3", "--out", out) == 2
    assert "--population 3" in capsys.readouterr().err and not out.exists()
    # A population made with another recipe is refused when reused, before anything runs.
    before = sorted(p.name for p in oracle_dir.rglob("*"))
    args = [a if a != "retrain.epochs=1" else "retrain.epochs=2" for a in ARGS]
    assert cli("oracle", "--model", small_model, *args, "--out", oracle_dir) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "retrain" in err and "epochs" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in oracle_dir.rglob("*")) == before
    assert cli("oracle", "--show", tmp_path / "nothing") == 2
    assert "holds no oracle" in capsys.readouterr().err
