"""Each method's defining behaviour, on real training with the shipped digits model."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from coun_tui.engine import UserError
from coun_tui.engine.events import Cancelled, Done, Step
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.methods import all_methods
from coun_tui.engine.methods.base import info_nce
from coun_tui.engine.methods.l1_sparse import l1_weight
from coun_tui.engine.runner import RunSpec, prepare, run


class StopAfter:
    """A cancel token that trips after n steps have been seen."""

    def __init__(self, n):
        self.n, self.seen = n, 0

    def is_set(self):
        self.seen += 1
        return self.seen > self.n


def events_of(model, method, stop_after=None, **kw):
    spec = RunSpec(method=method, model=model, forget=kw.pop("forget", ForgetSpec(classes=[3])), **kw)
    prep = prepare(spec)
    return prep, list(run(prep, StopAfter(stop_after) if stop_after else None))


def test_registry_has_the_paper_methods():
    assert list(all_methods()) == ["retrain", "ft", "ga", "rl", "neggrad+", "l1-sparse", "salun", "not", "coun"]


def test_coun_loss_equals_hand_computation():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    z2 = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    tau = 0.5
    n1 = z1.numpy() / np.linalg.norm(z1.numpy(), axis=1, keepdims=True)
    n2 = z2.numpy() / np.linalg.norm(z2.numpy(), axis=1, keepdims=True)
    s = n1 @ n2.T / tau

    def ce_diag(m):
        return np.mean([-m[i, i] + math.log(np.exp(m[i]).sum()) for i in range(len(m))])

    expected = ce_diag(s) + ce_diag(s.T)
    assert info_nce(z1, z2, tau).item() == pytest.approx(expected, rel=1e-6)


def test_not_negates_exactly_the_first_conv(digits_model):
    from coun_tui.engine.methods.base import Context

    prep = prepare(RunSpec(method="not", model=digits_model, forget=ForgetSpec(classes=[3])))
    before = {k: v.clone() for k, v in prep.model.state_dict().items()}
    prep.method.setup(Context(prep.model, None, None, None, prep.hparams, 10, prep.device, None, None))
    after = prep.model.state_dict()
    assert torch.equal(after["conv1.weight"], -before["conv1.weight"])
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ["conv1.weight"]  # BatchNorm and everything else untouched


def test_salun_unmasked_weights_are_bit_identical(digits_model):
    prep, events = events_of(digits_model, "salun", stop_after=6,
                             hparams={"epochs": 1, "mask_ratio": 0.3, "weight_decay": 5e-3, "momentum": 0.9})
    from coun_tui.engine import checkpoint

    original, _ = checkpoint.load(digits_model)
    moved = 0
    for p, q, keep in zip(prep.model.parameters(), original.parameters(), prep.method.mask):
        p, keep = p.detach().cpu(), keep.cpu()
        assert torch.equal(p[~keep], q.detach()[~keep])
        moved += int((p[keep] != q.detach()[keep]).sum())
    total = sum(int(m.sum()) for m in prep.method.mask)
    n = sum(m.numel() for m in prep.method.mask)
    assert total == pytest.approx(0.3 * n, rel=0.01)
    assert moved > 0.5 * total  # the masked weights did train


def _forget_ce(prep):
    model = prep.model.eval()
    idx = torch.from_numpy(prep.split.forget)
    from coun_tui.engine import data as data_mod

    d = data_mod.prepare(prep.dataset, prep.meta["mean"], prep.meta["std"], "cpu")
    with torch.no_grad():
        return F.cross_entropy(model.cpu()(d.train_x[idx]), d.train_y[idx]).item()


def test_neggrad_plus_raises_forget_loss(digits_model):
    forget = ForgetSpec(fraction=0.1, seed=0)
    base = prepare(RunSpec(method="neggrad+", model=digits_model, forget=forget))
    before = _forget_ce(base)
    prep, events = events_of(digits_model, "neggrad+", forget=forget, hparams={"epochs": 2, "alpha": 0.9})
    assert isinstance(events[-1], Done)
    ft, _ = events_of(digits_model, "ft", forget=forget, hparams={"epochs": 2})
    after = _forget_ce(prep)
    assert after > 2 * before and after > 2 * _forget_ce(ft)  # FT alone does not raise it
    assert all("forget" in e.losses for e in events if isinstance(e, Step))


def test_l1_weight_reaches_zero_on_schedule(digits_model):
    assert l1_weight(1e-3, 0, 10) == 1e-3
    assert l1_weight(1e-3, 5, 10) == pytest.approx(5e-4)
    assert l1_weight(1e-3, 10, 10) == 0.0 and l1_weight(1e-3, 50, 10) == 0.0
    prep, events = events_of(digits_model, "l1-sparse", hparams={"epochs": 2, "l1_epochs": 1})
    steps = [e for e in events if isinstance(e, Step)]
    per_epoch = prep and steps[-1].step // 2
    assert all("l1" in s.losses for s in steps[:per_epoch])
    assert not any("l1" in s.losses for s in steps[per_epoch:])
    l1 = [s.losses["l1"] for s in steps[:per_epoch]]
    assert l1[0] > l1[-1] > 0  # decaying linearly within the first epoch


def test_cl_changes_the_loss_and_nothing_else(digits_model):
    kw = dict(stop_after=4, hparams={"epochs": 1})
    plain, ev_plain = events_of(digits_model, "ft", **kw)
    zero, ev_zero = events_of(digits_model, "ft", cl=True, **{**kw, "hparams": {"epochs": 1, "lambda": 0.0}})
    cl, ev_cl = events_of(digits_model, "ft", cl=True, **kw)
    steps = lambda evs: [e for e in evs if isinstance(e, Step)]  # noqa: E731
    assert isinstance(ev_plain[-1], Cancelled) and len(steps(ev_plain)) == 4
    assert "cl" not in steps(ev_plain)[0].losses and steps(ev_cl)[0].losses["cl"] > 0
    assert steps(ev_cl)[0].losses["ce"] == steps(ev_plain)[0].losses["ce"]  # same batch, same CE
    for p, q in zip(plain.model.parameters(), zero.model.parameters()):
        assert torch.equal(p, q)  # lambda = 0: the very same training
    assert any(not torch.equal(p, q) for p, q in zip(plain.model.parameters(), cl.model.parameters()))
    coun, ev_coun = events_of(digits_model, "coun", **kw)  # CoUn is FT+CL, as the paper defines it
    assert [e.losses for e in steps(ev_coun)] == [e.losses for e in steps(ev_cl)]
    for p, q in zip(cl.model.parameters(), coun.model.parameters()):
        assert torch.equal(p, q)


def test_plain_ce_flops_match_three_forward_passes_per_sample(digits_model):
    from coun_tui.engine.metrics import forward_flops

    prep, events = events_of(digits_model, "ft", hparams={"epochs": 1})
    done = events[-1]
    images = [e for e in events if isinstance(e, Step)][-1].images
    expected = 3 * forward_flops(prep.model, (1, 8, 8)) * images
    assert done.flops == pytest.approx(expected, rel=0.02)
    prep_cl, events_cl = events_of(digits_model, "coun", hparams={"epochs": 1})
    assert events_cl[-1].flops > 1.8 * done.flops  # CoUn's second view is counted


def test_bad_hyperparameters_and_missing_forget_set(digits_model):
    with pytest.raises(UserError, match="no hyperparameter"):
        prepare(RunSpec(method="ft", model=digits_model, forget=ForgetSpec(classes=[3]), hparams={"alpha": 0.5}))
    with pytest.raises(UserError, match="nothing to forget"):
        prepare(RunSpec(method="ga", model=digits_model, forget=ForgetSpec()))
    with pytest.raises(UserError, match="unknown method"):
        prepare(RunSpec(method="magic", model=digits_model, forget=ForgetSpec(classes=[3])))


def test_nan_loss_fails_cleanly(digits_model):
    _, events = events_of(digits_model, "ft", hparams={"epochs": 1, "lr": 1e12})
    assert events[-1].kind == "failed" and "lower --lr" in events[-1].reason
