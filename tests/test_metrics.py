"""The metrics module against small hand-computed cases."""

import numpy as np
import pytest
import torch

from coun_tui.engine import metrics
from coun_tui.engine.events import Done, Embedding, EpochMetrics, Step, to_json
from coun_tui.engine.model import build
from coun_tui.engine.records import read_event


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
              Done({"RA": 99.0, "UA": 5.0, "TA": 98.0, "MIA": 10.0, "gap": None}, 10.0, 2e12)]
    for event in events:
        back = read_event(to_json(event))
        assert type(back) is type(event) and back.kind == event.kind
    assert "features" not in to_json(events[2]) and read_event(to_json(events[2])).features is None


def test_linear_cka_by_hand():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 16))
    assert metrics.linear_cka(x, x) == pytest.approx(1.0)
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert metrics.linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0)  # rotation, scale, shift
    assert metrics.linear_cka(x, rng.normal(size=(60, 16))) < 0.5  # unrelated features
    # Two samples, 1-d: centred x = (-1, 1), y = (-2, 2) -> perfectly related.
    assert metrics.linear_cka(np.array([[0.0], [2.0]]), np.array([[1.0], [5.0]])) == pytest.approx(1.0)
    assert np.isnan(metrics.linear_cka(x[:1], x[:1]))


def test_agreement_and_knn_probe_by_hand():
    assert metrics.agreement(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 75.0
    # Two tight clusters: class 0 near (1, 0), class 1 near (0, 1); cosine 5-NN votes by cluster.
    fit = np.r_[np.tile([1.0, 0.05], (5, 1)), np.tile([0.05, 1.0], (5, 1))]
    fit_y = np.r_[np.zeros(5), np.ones(5)]
    query = np.array([[2.0, 0.1], [0.1, 3.0], [1.0, 0.0]])
    assert metrics.knn_accuracy(fit, fit_y, query, np.array([0, 1, 1])) == pytest.approx(200 / 3)


def test_agreement_of_a_model_with_itself_is_100(digits_model):
    from coun_tui.engine import checkpoint, data

    model, meta = checkpoint.load(digits_model)
    ds = data.load("digits")
    x = data.prepare(ds, meta["mean"], meta["std"], "cpu").test_x
    a, b = metrics.predict(model, x), metrics.predict(model, x)
    assert metrics.agreement(a.argmax(1).numpy(), b.argmax(1).numpy()) == 100.0


def test_mia_features_by_hand():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.8, 0.1, 0.1]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    assert metrics.entropy(probs) == pytest.approx([np.log(2), -(0.8 * np.log(0.8) + 0.2 * np.log(0.1))])
    # Song & Mittal: -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)
    row0 = -0.5 * np.log(0.5) - 0.5 * np.log(0.5)
    row1 = -0.9 * np.log(0.1) - 0.8 * np.log(0.2) - 0.1 * np.log(0.9)
    assert metrics.modified_entropy(probs, labels) == pytest.approx([row0, row1])
    assert metrics.loss_values(probs, labels) == pytest.approx([np.log(2), -np.log(0.1)])
    # Each variant is an MIA efficacy in percent; members confident, non-members not.
    member = torch.tensor([[0.99, 0.01]] * 50)
    other = torch.tensor([[0.6, 0.4]] * 50)
    y = torch.zeros(50, dtype=torch.long)
    scores = metrics.mia_variants(member, y, other, y, other[:10], y[:10])
    assert set(scores) == {k for k, _, _ in metrics.MIA_VARIANTS} and all(v == 100.0 for v in scores.values())


# The paper's Table 1 (CIFAR-10, 10% random, mean of 10 trials): RA, UA, TA, MIA and Avg. Gap.
PAPER = {"retrain": (100.00, 4.81, 94.67, 11.02, 0), "ft": (99.99, 3.76, 94.70, 9.51, 0.65),
         "neggrad+": (99.95, 4.82, 94.32, 9.09, 0.58), "l1-sparse": (99.97, 5.40, 93.81, 10.97, 0.38),
         "salun": (99.10, 4.31, 93.84, 11.15, 0.59), "not": (99.99, 4.19, 94.65, 10.45, 0.30),
         "coun": (99.99, 4.12, 94.57, 10.81, 0.25)}


def test_gap_of_means_reproduces_the_papers_table_1():
    """Two trials per method whose means are the paper's row, each against its own Retrain whose
    means are the paper's Retrain: the headline Avg. Gap is the paper's; the seed mean is larger."""
    from coun_tui.engine.report import aggregate, render

    keys = ("RA", "UA", "TA", "MIA")
    ref_mean = dict(zip(keys, PAPER["retrain"]))
    spread = {"RA": 0.3, "UA": 1.0, "TA": 0.4, "MIA": 2.0}
    refs = [{k: ref_mean[k] + s * spread[k] * 0.5 for k in keys} for s in (1, -1)]
    rows = []
    for method, (*values, avg_gap) in PAPER.items():
        mean = dict(zip(keys, values))
        runs = []
        for sign, ref in zip((1, -1), refs):
            m = {k: mean[k] - sign * spread[k] for k in keys}
            per = {k: abs(m[k] - ref[k]) for k in keys}
            runs.append({**m, "method": method, "gap": per, "avg_gap": sum(per.values()) / 4,
                         "reference": ref, "pflops": 1.0, "seconds": 1.0})
        row = aggregate(runs)
        assert row["avg_gap"] == pytest.approx(avg_gap, abs=0.006), method  # the paper rounds to 0.01
        for k in keys:
            assert row[f"gap_{k}"] == pytest.approx(abs(mean[k] - ref_mean[k]))
        if method != "retrain":
            assert row["avg_gap_seeds"] > row["avg_gap"]
        rows.append(row)
    assert "Avg. Gap: the paper's" in render(rows) and "seed mean" in render(rows)


def test_paper_flop_count_by_hand():
    meter = metrics.FlopMeter()
    meter.count_images(trained=100)
    meter.count_images(forward_only=100)  # CoUn's second view of the same 100 images
    assert meter.paper_count(2.0) == 2.0 * (3 * 100 + 100)  # 4 forward costs per image
