"""The spread over original training: a recipe trained again with other seeds, and a sweep over
several original models."""

import json

import torch

from coun_tui.engine import checkpoint


def test_train_like_repeats_a_recipe_with_another_seed_and_a_sweep_takes_both(tmp_path, capsys, cli):
    first, second = tmp_path / "orig-s0.safetensors", tmp_path / "orig-s1.safetensors"
    assert cli("train", "--dataset", "digits", "--subset", "400", "--epochs", "1", "--seed", "0",
               "--out", first) == 0
    assert cli("train", "--like", first, "--seed", "1", "--out", second) == 0
    a, b = checkpoint.read_meta(first), checkpoint.read_meta(second)
    assert (b["subset"], b["subset_seed"], b["seed"]) == (400, 0, 1)  # the same data, another seed
    assert b["recipe"] == a["recipe"] and b["recipe"]["epochs"] == 1
    wa, wb = checkpoint.load(first)[0], checkpoint.load(second)[0]
    assert not torch.equal(wa.conv1.weight, wb.conv1.weight)
    assert cli("train", "--like", first, "--dataset", "digits", "--out", tmp_path / "x.safetensors") == 2
    assert "drop --dataset" in capsys.readouterr().err

    out = tmp_path / "sweep"
    args = ["sweep", "--models", f"{first},{second}", "--forget-fraction", "0.1", "--seeds", "0",
            "--set", "ft.epochs=1", "--set", "retrain.epochs=1", "--out", out]
    assert cli(*args, "--methods", "ft,ssd", "--cl-too", "--dry-run") == 0
    listed = capsys.readouterr().out
    for folder in ("orig-s0-seed-0", "orig-s1-seed-0"):
        for run in ("retrain", "ft", "ssd", "ft+cl"):
            assert f"{out / 'random-10pct' / folder / run}: to run" in listed
    assert "ssd+cl" not in listed  # SSD takes no contrastive term, so --cl-too skips it
    assert cli(*args, "--methods", "ft") == 0
    rows = json.loads((out / "table.json").read_text())["random-10pct"]
    assert set(rows) == {"retrain", "ft"} and all(r["n"] == 2 for r in rows.values())
    header = (out / "table.md").read_text().splitlines()[0]
    assert "2 original models" in header and "orig-s1.safetensors" in header and "spread of original" in header
    capsys.readouterr()
