"""A Retrain keeps its reference.npz; runs measured against it report agreement, CKA and the k-NN
probe on D_u; the paper's Avg. Gap over seeds in `coun-lab compare --per-method`."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from coun_tui.engine.reference import REFERENCE_FILE

FIXTURES = Path(__file__).parent / "fixtures" / "runs"
DEEPER = ("agree_forget", "cka_forget", "cka_test", "knn_forget", "knn_forget_retrain")


@pytest.fixture(scope="module")
def retrain_run(digits_model, tmp_path_factory):
    from coun_tui.cli import main

    out = tmp_path_factory.mktemp("vs") / "retrain"
    with pytest.raises(SystemExit) as done:
        main(["unlearn", "--model", digits_model, "--method", "retrain", "--forget-class", "3", "--epochs", "1",
              "--out", str(out), "-q"])
    assert done.value.code in (0, None)
    return out


def test_retrain_keeps_its_view_and_a_model_agrees_with_itself(retrain_run, capsys, cli):
    with np.load(retrain_run / REFERENCE_FILE) as f:
        assert len(f["forget_idx"]) == 146 and len(f["test_idx"]) == 360  # all of D_u, every test class
        assert f["forget_feat"].shape == (146, 512) and f["test_feat"].dtype == np.float16
    m = json.loads((retrain_run / "metrics.json").read_text())
    assert not any(k in m for k in ("agree_forget", "cka_forget"))  # nothing to compare a Retrain with
    assert {"mia_entropy", "mia_m_entropy", "mia_loss", "knn_forget", "pflops_paper"} <= set(m)

    capsys.readouterr()
    assert cli("eval", "--model", retrain_run / "model.safetensors", "--reference", retrain_run, "--json") == 0
    same = json.loads(capsys.readouterr().out)
    assert same["agree_forget"] == 100.0 and same["avg_gap"] == pytest.approx(0, abs=1e-9)
    assert same["cka_forget"] == pytest.approx(1, abs=1e-4) and same["cka_test"] == pytest.approx(1, abs=1e-4)
    assert same["knn_forget"] == pytest.approx(same["knn_forget_retrain"], abs=1.0)


def test_a_run_against_a_retrain_reports_the_deeper_metrics(digits_model, retrain_run, tmp_path, capsys, cli):
    run = tmp_path / "ft"
    assert cli("unlearn", "--model", digits_model, "--method", "ft", "--forget-class", "3", "--epochs", "1",
               "--reference", retrain_run, "--out", run, "-q") == 0
    printed = capsys.readouterr().out
    assert "Agree D_u" in printed and "CKA D_u" in printed
    m = json.loads((run / "metrics.json").read_text())
    assert 0 <= m["agree_forget"] <= 100 and 0 < m["cka_forget"] <= 1 and 0 < m["cka_test"] <= 1
    assert m["reference"] == {k: json.loads((retrain_run / "metrics.json").read_text())[k]
                              for k in ("RA", "UA", "TA", "MIA")}
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    live = [e["extra"] for e in events if e["kind"] == "epoch"]
    assert all(set(DEEPER) <= set(x) for x in live)  # the live view has them every epoch

    assert cli("compare", run, retrain_run) == 0
    table = capsys.readouterr().out
    assert "| Agree D_u % |" in table and "Avg. Gap: mean over RA, UA, TA, MIA" in table


def test_old_runs_without_a_reference_view_show_a_dash(capsys, cli):
    """The committed fixtures predate reference.npz: the new columns are absent, not an error."""
    runs = [FIXTURES / n for n in ("ft-digits-class3", "coun-digits-class3", "retrain-digits-class3")]
    assert cli("compare", *runs) == 0
    table = capsys.readouterr().out
    assert "Agree D_u" not in table and "Avg. Gap ↓" in table


def test_compare_per_method_gives_the_gap_of_means(tmp_path, capsys, cli):
    """Two seeds of FT against their own Retrains: the headline is |mean - mean*| per metric."""
    keys = ("RA", "UA", "TA", "MIA")
    for seed, (ft, ref) in enumerate([((90, 10, 80, 20), (92, 12, 81, 25)), ((94, 14, 84, 22), (92, 8, 83, 21))]):
        for name, values, reference in (("ft", ft, dict(zip(keys, ref))), ("retrain", ref, None)):
            d = tmp_path / f"seed-{seed}" / name
            shutil.copytree(FIXTURES / f"{name}-digits-class3", d)
            m = json.loads((d / "metrics.json").read_text())
            m.update(dict(zip(keys, map(float, values))), forget={"classes": [3]}, reference=reference, seed=seed)
            if reference:
                per = {k: abs(m[k] - reference[k]) for k in keys}
                m.update(gap=per, avg_gap=sum(per.values()) / 4)
            (d / "metrics.json").write_text(json.dumps(m))
    assert cli("compare", *sorted(tmp_path.glob("seed-*/*")), "--per-method", "--format", "json") == 0
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)}
    # means: FT (92, 12, 82, 21), Retrain (92, 10, 82, 23) -> gaps 0, 2, 0, 2 -> 1.0
    assert rows["ft"]["avg_gap"] == pytest.approx(1.0) and rows["ft"]["n"] == 2
    # each seed's own: (2+2+1+5)/4 = 2.5 and (2+6+1+1)/4 = 2.5
    assert rows["ft"]["avg_gap_seeds"] == pytest.approx(2.5) and rows["retrain"]["avg_gap"] == 0


def test_compare_per_method_counts_a_repeated_seed_once_and_names_it(tmp_path, capsys, cli):
    """Two runs with the same seed and settings are one trial: n=1, and the table says which repeats which."""
    for name in ("ft-a", "ft-b"):
        shutil.copytree(FIXTURES / "ft-digits-class3", tmp_path / name)
    assert cli("compare", tmp_path / "ft-a", tmp_path / "ft-b", "--per-method", "--format", "json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["n"] == 1 and row["repeats"] == ["ft-b = ft-a"] and row["RA_std"] == 0
    assert cli("compare", tmp_path / "ft-a", tmp_path / "ft-b", "--per-method") == 0
    assert "ft (n=1, repeats counted once: ft-b = ft-a)" in capsys.readouterr().out
