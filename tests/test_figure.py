"""`coun-lab figure`: the poster's figures drawn from a small real digits sweep (random 10% and 30%,
FT and FT+CL, 1 epoch), to PNG and terminal; one `error:` line for a folder missing what a figure
needs."""

import json
import shutil

import numpy as np
import pytest

from coun_tui.engine.figures import cl_gains, nearest_centroid, table1

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ratio_sweep(digits_model, tmp_path_factory):
    from coun_tui.engine.forget import ForgetSpec
    from coun_tui.engine.sweep import Sweep, execute

    out = tmp_path_factory.mktemp("figure") / "sweep"
    sweep = Sweep(digits_model, ["ft"], [ForgetSpec(fraction=0.1), ForgetSpec(fraction=0.3)], [0], out, cl_too=True,
                  hparams={"*": {"epochs": 1}, "retrain": {"epochs": 1}}, device="cpu")
    for _ in execute(sweep, jobs=2):
        pass
    assert all((d / "metrics.json").is_file() for d, _ in sweep.runs())
    return out


def test_embedding_panels_share_samples_and_compare_with_retrain(ratio_sweep, tmp_path, capsys, cli):
    png = tmp_path / "embedding.png"
    assert cli("figure", "embedding", ratio_sweep, "--runs", "retrain,ft,ft+cl", "--retain-samples", "150",
               "--forget-samples", "40", "--png", png) == 0
    out = capsys.readouterr().out
    assert png.read_bytes()[:8] == PNG and png.stat().st_size < 500_000
    for tag in ("random-10pct", "random-30pct"):  # one row of panels per forget set
        assert f"{tag}, seed-0: random forgetting; 150 retain, 40 forget samples" in out
    # Retrain agrees with itself; every other panel carries its share and its k-NN probe against Retrain's.
    assert out.count("retrain                nearest centroid as Retrain's: 100.0%; kNN D_u ") == 2
    m = json.loads((ratio_sweep / "random-10pct" / "seed-0" / "ft" / "metrics.json").read_text())
    assert f"(Retrain {m['knn_forget_retrain']:.1f}%)" in out


def test_nearest_centroid_is_by_direction():
    retain = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0]])
    forget = np.array([[10.0, 1.0], [0.2, 0.5]])  # far from class 0's points, but along their direction
    assert nearest_centroid(retain, np.array([0, 0, 7, 7]), forget).tolist() == [0, 7]


def test_table1_uses_the_comparison_table(ratio_sweep, tmp_path, capsys, cli):
    png = tmp_path / "table1.png"
    assert cli("figure", "table1", ratio_sweep, "--png", png) == 0
    out = capsys.readouterr().out
    assert png.read_bytes()[:8] == PNG
    assert [r["method"] for r in table1(ratio_sweep)] == ["retrain", "ft"]  # the poster's rows: no +CL
    header = next(line for line in out.splitlines() if line.startswith("| Method"))
    assert header == "| Method | RA (Δ) | UA (Δ) | TA (Δ) | MIA (Δ) | Avg. Gap ↓ | PFLOPs ↓ |"
    assert "| retrain (n=1) | " in out and "| ft (n=1) | " in out


def test_fig4_gains_by_ratio_match_the_sweep_tables(ratio_sweep, tmp_path, capsys, cli):
    png = tmp_path / "fig4.png"
    assert cli("figure", "fig4", ratio_sweep, "--png", png) == 0
    out = capsys.readouterr().out
    assert png.read_bytes()[:8] == PNG
    tables = json.loads((ratio_sweep / "table.json").read_text())
    gains = cl_gains([ratio_sweep])
    assert [(g.method, g.ratio) for g in gains] == [("ft", 10.0), ("ft", 30.0)]
    for g in gains:
        rows = tables[f"random-{g.ratio:g}pct"]
        assert (g.gap, g.gap_cl) == (rows["ft"]["avg_gap"], rows["ft+CL"]["avg_gap"])
        assert f"{g.ratio:>4g}%  ft             {g.gap:6.2f} -> {g.gap_cl:6.2f}  {g.improvement:+6.1f}%" in out


def test_a_folder_missing_runs_is_refused_in_one_line(ratio_sweep, tmp_path, capsys, cli):
    partial = tmp_path / "partial"
    shutil.copytree(ratio_sweep, partial, ignore=shutil.ignore_patterns("model.safetensors", "*.npy"))
    assert cli("figure", "embedding", partial, "--runs", "retrain,ft") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no model.safetensors (model files are not committed)" in err
    assert cli("figure", "embedding", ratio_sweep) == 2  # coun and neggrad+ never ran there
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no finished 'coun' run" in err
    for kind in ("table1", "fig4"):
        assert cli("figure", kind, tmp_path) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "table.json: no sweep table here" in err
    assert cli("figure", "table1", ratio_sweep, "--forget", "class-3") == 2
    assert "no finished runs on class-3 (it has random-10pct, random-30pct)" in capsys.readouterr().err
    assert cli("figure", "table1", ratio_sweep, ratio_sweep) == 2
    assert "table1 draws one sweep folder" in capsys.readouterr().err
    assert cli("figure", "fig5", ratio_sweep) == 2
    assert "unknown figure 'fig5'" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))  # a refused figure writes nothing
