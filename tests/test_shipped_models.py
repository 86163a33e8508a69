"""The shipped checkpoints: their metadata and accuracy are what models/README.md says."""

from pathlib import Path

import pytest
import torch

from coun_tui.engine import checkpoint, data, metrics
from coun_tui.engine.paths import MODELS_DIR

FASHION = MODELS_DIR / "resnet18-fashion-mnist-10k.safetensors"


def test_digits_model_metadata(digits_model):
    meta = checkpoint.read_meta(digits_model)
    assert meta["dataset"] == "digits" and meta["stem"] == "cifar" and meta["in_channels"] == 1
    assert meta["metrics"]["TA"] >= 98.0 and meta["recipe"]["epochs"] == 30


@pytest.mark.skipif(not FASHION.is_file(), reason="Fashion-MNIST model not shipped")
@pytest.mark.skipif(not Path(data.DEFAULT_ROOTS["fashion-mnist"]).is_dir(),
                    reason="apt-get install dataset-fashion-mnist")
def test_fashion_model_half_precision_loads_as_float32_with_the_same_accuracy():
    model, meta = checkpoint.load(FASHION)
    assert meta["stored_dtype"] == "float16" and FASHION.stat().st_size < 25e6
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert meta["subset"] == 10000 and meta["subset_seed"] == 0
    ds = data.load("fashion-mnist")
    d = data.prepare(ds, meta["mean"], meta["std"], "cpu")
    ta = metrics.accuracy(metrics.predict(model, d.test_x), d.test_y)
    assert ta >= 90.0
    assert ta == pytest.approx(meta["metrics"]["TA"], abs=0.1)  # as trained, in float32
