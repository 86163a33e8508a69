"""The metrics module against small hand-computed cases."""

import numpy as np
import pytest
import torch

from coun_tui.engine import metrics
from coun_tui.engine.events import Done, Embedding, EpochMetrics, Step, from_json, to_json
from coun_tui.engine.model import build


def test_accuracy_and_confidence_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    labels = torch.tensor([0, 2, 1, 0])
    assert metrics.accuracy(probs, labels) == 50.0  # rows 0 and 1 right
    assert metrics.confidence(probs, labels).tolist() == pytest.approx([0.7, 0.6, 0.4, 0.2])
    assert np.isnan(metrics.accuracy(probs[:0], labels[:0]))


def test_mia_calls_low_confidence_forget_samples_non_members():
    rng = np.random.default_rng(0)
    members = rng.uniform(0.95, 1.0, 200)  # retain: confident
    nonmembers = rng.uniform(0.0, 0.5, 100)  # test: unsure
    assert metrics.mia_efficacy(members, nonmembers, np.full(40, 0.2)) == 100.0
    assert metrics.mia_efficacy(members, nonmembers, np.full(40, 0.99)) == 0.0
    half = np.r_[np.full(10, 0.1), np.full(30, 0.99)]
    assert metrics.mia_efficacy(members, nonmembers, half) == 25.0
    assert np.isnan(metrics.mia_efficacy(members, nonmembers, np.empty(0)))


def test_gaps_and_average_gap_by_hand():
    run = {"RA": 99.0, "UA": 5.0, "TA": 94.0, "MIA": 12.0}
    ref = {"RA": 100.0, "UA": 4.0, "TA": 94.5, "MIA": 10.0}
    per, avg = metrics.gaps(run, ref)
    assert per == {"RA": 1.0, "UA": 1.0, "TA": 0.5, "MIA": 2.0}
    assert avg == pytest.approx(1.125)
    assert metrics.gaps(run, None) == (None, None)


def test_flop_meter_counts_two_per_multiply_add_and_caches_by_shape():
    layer = torch.nn.Linear(8, 4, bias=False)
    meter = metrics.FlopMeter()
    for batch in (16, 16, 3):
        x = torch.randn(batch, 8)
        with meter.measure((batch,)):
            layer(x).sum().backward()
    # forward 2*B*8*4, backward (grad of weight only: x needs no grad) 2*B*8*4
    assert meter.total == sum(4 * b * 8 * 4 for b in (16, 16, 3))


def test_resnet18_forward_flops_match_the_reference_figures():
    # coun-method.md: CIFAR ResNet-18 forward = 1.11 GFLOPs at 32x32x3 and 0.91 at 28x28x1.
    assert metrics.forward_flops(build(10, 3), (3, 32, 32)) / 1e9 == pytest.approx(1.11, abs=0.01)
    assert metrics.forward_flops(build(10, 1), (1, 28, 28)) / 1e9 == pytest.approx(0.91, abs=0.01)


def test_events_round_trip_through_json_without_raw_features():
    events = [Step(3, 1, {"ce": 0.5, "total": 0.5}, 0.01, 384, 1e12, 2.5),
              EpochMetrics(1, {"RA": 99.0, "UA": 5.0, "TA": 98.0, "MIA": 10.0}, None),
              Embedding(1, [[0.0, 1.0]], [3], [True], features=np.ones((1, 512))),
              Done({"RA": 99.0}, 10.0, 2e12)]
    for event in events:
        back = from_json(to_json(event))
        assert type(back) is type(event) and back.kind == event.kind
    assert "features" not in to_json(events[2]) and from_json(to_json(events[2])).features is None
