"""`coun-lab export`: a digits run (with its Retrain, for the gaps) exported; the folder loads in plain
torchvision from the card's own snippet, and `coun-lab eval` gives the run's metrics back."""

from __future__ import annotations

import json
import re

import pytest
import torch

import coun_tui
from coun_tui import ForgetSet
from coun_tui.engine import checkpoint


@pytest.fixture(scope="module")
def exported(tmp_path_factory, digits_model):
    where = tmp_path_factory.mktemp("export")
    forget = ForgetSet.classes(3)
    retrain = coun_tui.unlearn(digits_model, "retrain", forget, out=where / "retrain", epochs=1, device="cpu")
    run = coun_tui.unlearn(digits_model, "ft", forget, reference=retrain, out=where / "ft-3", epochs=1,
                           device="cpu")
    assert (retrain.state, run.state) == ("done", "done")
    from coun_tui.cli import main

    try:
        main(["export", str(run.path), str(where / "ft-3-card")])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return where, run, where / "ft-3-card"


def test_the_folder_loads_in_plain_torchvision_from_the_cards_snippet(exported, monkeypatch):
    _, run, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    card = (folder / "README.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)```", card, re.S)
    assert "coun_tui" not in snippet
    monkeypatch.chdir(folder)
    namespace: dict = {}
    exec(snippet, namespace)  # noqa: S102 - the card we just wrote
    model, normalize = namespace["model"], namespace["normalize"]
    assert type(model).__name__ == "ResNet"  # torchvision's own class
    lab_model, meta = checkpoint.load(run.checkpoint)
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = model(normalize(images))
        ours = lab_model(normalize(images))
    assert torch.allclose(theirs, ours, atol=1e-5)
    config = json.loads((folder / "config.json").read_text())
    assert config["mean"] == meta["mean"] and config["classes"] == meta["classes"] and config["stem"] == "cifar"
    assert config["unlearning"]["method"] == "ft" and config["unlearning"]["forget"]["classes"] == [3]


def test_coun_lab_eval_of_the_export_gives_the_runs_metrics(exported, cli, capsys):
    where, run, folder = exported
    capsys.readouterr()
    assert cli("eval", "--model", folder / "model.safetensors", "--reference", where / "retrain", "--json") == 0
    scores = json.loads(capsys.readouterr().out)
    for key in ("RA", "UA", "TA", "MIA", "avg_gap"):
        assert scores[key] == pytest.approx(run.metrics[key], abs=1e-9), key
    assert scores["n_forget"] == run.metrics["forget"]["n_forget"]


def test_the_card_holds_the_metrics_gaps_method_and_how_to_upload(exported):
    yaml = pytest.importorskip("yaml")
    _, run, folder = exported
    card = (folder / "README.md").read_text()
    header = yaml.safe_load(card.split("---\n")[1])
    assert "machine-unlearning" in header["tags"] and header["datasets"] == ["digits"]
    (result,) = header["model-index"][0]["results"]
    assert result["dataset"]["name"] == "digits" and result["task"]["type"] == "image-classification"
    values = {m["type"]: m["value"] for m in result["metrics"]}
    m = run.metrics
    for key in ("RA", "UA", "TA", "MIA"):
        assert values[key.lower()] == pytest.approx(m[key], abs=1e-4)
        assert values[f"gap_{key.lower()}"] == pytest.approx(m["gap"][key], abs=1e-4)
    assert values["avg_gap"] == pytest.approx(m["avg_gap"], abs=1e-4)
    body = card.split("---\n", 2)[2]
    assert "resnet18-digits.safetensors" in body and "class 3" in body and "| lr | 0.05 |" in body
    assert f"| Avg. Gap | - | {m['avg_gap']:.2f} |" in body and "the Retrain run `retrain`" in body
    assert f"coun-lab {coun_tui.__version__}" in body and "TFLOPs" in body
    assert "huggingface-cli upload" in body


def test_refused_exports_write_nothing(exported, cli, capsys, tmp_path):
    where, run, folder = exported
    before = sorted(p.name for p in folder.iterdir())
    capsys.readouterr()
    assert cli("export", run.path, folder) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not an empty folder" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in folder.iterdir()) == before
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "run.toml").write_text('method = "ft"\n')
    assert cli("export", tmp_path / "unfinished", tmp_path / "out") == 2
    assert "not a finished run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unfinished"]
