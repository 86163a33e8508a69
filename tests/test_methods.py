"""Each method's defining behaviour, on real training with the shipped digits model."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from coun_tui.engine import UserError
from coun_tui.engine.events import Cancelled, Done, Step
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.methods import Batch, Method, Param, all_methods, check_hparams, register
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


# The live probe is evaluated before the first step and after every epoch; what these tests assert
# (losses, weights, FLOPs, the final full-set metrics) does not depend on its size.
PROBE = 64


def events_of(model, method, stop_after=None, **kw):
    spec = RunSpec(method=method, model=model, forget=kw.pop("forget", ForgetSpec(classes=[3])),
                   probe_size=PROBE, **kw)
    prep = prepare(spec)
    return prep, list(run(prep, StopAfter(stop_after) if stop_after else None))


def test_registry_has_the_paper_methods():
    assert list(all_methods()) == ["retrain", "ft", "ga", "rl", "neggrad+", "l1-sparse", "salun", "not",
                                   "scrub", "bad-teacher", "ssd", "unsir", "jit", "coun"]


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


@pytest.fixture(scope="module")
def one_epoch(digits_model):
    """One epoch of FT and of CoUn forgetting class 3: the FLOP counts of both tests below."""
    return {method: events_of(digits_model, method, hparams={"epochs": 1}) for method in ("ft", "coun")}


def test_plain_ce_flops_match_three_forward_passes_per_sample(one_epoch):
    from coun_tui.engine.metrics import forward_flops

    prep, events = one_epoch["ft"]
    done = events[-1]
    images = [e for e in events if isinstance(e, Step)][-1].images
    expected = 3 * forward_flops(prep.model, (1, 8, 8)) * images
    assert done.flops == pytest.approx(expected, rel=0.02)
    prep_cl, events_cl = one_epoch["coun"]
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


def _context(prep):
    """The run loop's Context for a prepared run, on the CPU, before training."""
    from contextlib import nullcontext

    from coun_tui.engine import data as data_mod
    from coun_tui.engine.methods.base import Context
    from coun_tui.engine.metrics import FlopMeter

    data = data_mod.prepare(prep.dataset, prep.meta["mean"], prep.meta["std"], "cpu")
    retain, forget = (torch.from_numpy(a) for a in (prep.split.retain, prep.split.forget))
    return Context(prep.model, data, retain, forget, prep.hparams, 10, prep.device, nullcontext, FlopMeter(),
                   seed=prep.spec.seed)


def test_salun_mask_is_the_references_statistic(digits_model):
    """Against a direct reading of OPTML-Group/Unlearn-Saliency's generate_mask.py: per forget batch
    (augmented, as its forget loader is) the gradient of -CE (batch mean) at the trained weights in
    eval mode, summed, absolute value, weights ranked globally, the top ratio kept."""
    from coun_tui.engine.methods.salun import forget_batches
    from coun_tui.engine.methods.salun import saliency as lab_saliency

    ratio = 0.5
    prep = prepare(RunSpec(method="salun", model=digits_model, forget=ForgetSpec(fraction=0.3, seed=1),
                           hparams={"mask_ratio": ratio, "batch_size": 128}))
    ctx = _context(prep)
    prep.method.setup(ctx)
    batches = list(forget_batches(ctx))
    assert len(batches) == 4 and sum(len(y) for _, y in batches) == len(prep.split.forget)  # 431 = 3 x 128 + 47

    model = prep.model.eval()
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        grads = torch.autograd.grad(-F.cross_entropy(model(x), y), params)
        total = [t + g for t, g in zip(total, grads)]
    saliency = torch.cat([t.abs().flatten() for t in total])
    ours = torch.cat([t.flatten() for t in lab_saliency(ctx)])
    assert torch.allclose(ours, saliency, rtol=1e-4, atol=1e-10)
    ranks = torch.argsort(torch.argsort(-saliency))  # 0 = most salient
    expected = ranks < int(len(saliency) * ratio)
    mask = torch.cat([m.flatten() for m in prep.method.mask])
    assert abs(int(mask.sum()) - int(expected.sum())) <= 1
    # Summation order moves float noise: only weights at the threshold may swap sides.
    assert (mask != expected).sum() <= 1e-5 * len(mask)

    # The lab's earlier statistic (clean images, sum of |per-batch gradients|) is another mask.
    old = prepare(RunSpec(method="salun", model=digits_model, forget=ForgetSpec(fraction=0.3, seed=1),
                          hparams={"mask_ratio": ratio, "mask": "abs-sum"}))
    old.method.setup(_context(old))
    overlap = (torch.cat([m.flatten() for m in old.method.mask]) & mask).sum() / mask.sum()
    assert 0.5 < overlap < 1.0


def test_rl_labels_are_redrawn_every_batch_unless_asked_once(digits_model):
    from coun_tui.engine.methods.base import Batch

    for labels, redrawn in (("per-batch", True), ("once", False)):
        prep = prepare(RunSpec(method="rl", model=digits_model, forget=ForgetSpec(classes=[3]),
                               hparams={"labels": labels}))
        ctx = _context(prep)
        prep.method.setup(ctx)
        y = torch.full((200,), 3)
        is_retain = torch.arange(200) < 40
        batch = Batch(torch.zeros(200, 1, 8, 8), y, is_retain)
        a, b = prep.method.targets(ctx, batch), prep.method.targets(ctx, batch)
        assert torch.equal(a[:40], y[:40]) and torch.equal(b[:40], y[:40])  # retain rows keep theirs
        assert (not torch.equal(a[40:], b[40:])) == redrawn
        if redrawn:  # uniform over every class, as the reference draws them
            assert set(a[40:].tolist()) == set(range(10))
    with pytest.raises(UserError, match="expected one of per-batch, once"):
        prepare(RunSpec(method="salun", model=digits_model, forget=ForgetSpec(classes=[3]),
                        hparams={"labels": "sometimes"}))


def test_scrub_ascends_on_forget_then_descends_on_retain(digits_model):
    forget = ForgetSpec(classes=[3])
    base = prepare(RunSpec(method="scrub", model=digits_model, forget=forget))
    before = _forget_ce(base)
    prep, events = events_of(digits_model, "scrub", hparams={"epochs": 2, "max_epochs": 1, "lr": 0.05})
    assert isinstance(events[-1], Done)
    steps = [e for e in events if isinstance(e, Step)]
    assert {"ce", "kl"} <= set(steps[0].losses)
    assert prep.method.teacher is not prep.model and _forget_ce(prep) > before
    ft, ft_events = events_of(digits_model, "ft", hparams={"epochs": 2, "lr": 0.05})
    # The teacher's forwards and the max-pass (146 forget images in batches of 32) are measured.
    assert events[-1].flops > 1.2 * ft_events[-1].flops


def test_bad_teacher_pulls_forget_outputs_toward_the_random_teacher(digits_model):
    prep, events = events_of(digits_model, "bad-teacher", hparams={"epochs": 2, "lr": 0.05})
    assert isinstance(events[-1], Done) and events[-1].metrics["UA"] > 50  # class 3 mostly forgotten
    assert events[-1].metrics["RA"] > 90  # the competent teacher keeps the rest
    steps = [e for e in events if isinstance(e, Step)]
    assert set(steps[0].losses) == {"kl", "total"}


def test_paper_count_is_four_thirds_of_ft_for_coun_at_equal_epochs(one_epoch):
    (_, ft), (_, coun) = one_epoch["ft"], one_epoch["coun"]
    assert coun[-1].paper_flops / ft[-1].paper_flops == pytest.approx(4 / 3)
    assert coun[-1].flops / ft[-1].flops == pytest.approx(2.0, rel=0.02)  # measured: both views' backward


# --- hyperparameter declarations --------------------------------------------------------------

def test_every_module_in_the_package_registers_its_method():
    import pkgutil

    import coun_tui.engine.methods as package

    modules = {m.name for m in pkgutil.iter_modules(package.__path__)} - set(package.NOT_METHODS)
    assert {cls.__module__.rsplit(".", 1)[-1] for cls in all_methods().values()} == modules


@pytest.mark.parametrize("param,good,bad", [
    (Param(0.1, "h", gt=0), [("0.5", 0.5), (3, 3.0), ("1e-3", 1e-3)], ["0", "-1", "nan", "inf", "x", "", True]),
    (Param(4, "h", ge=1), [("7", 7), (2, 2), (" 3 ", 3)], ["0", "1.5", 1.5, "x", False]),
    (Param(0.5, "h", gt=0, le=1), [("1", 1.0), (0.25, 0.25)], ["0", "1.01", "2"]),
    (Param("a", "h", choices=("a", "b")), [("b", "b")], ["c", "", 1]),
    (Param(False, "h"), [("true", True), ("off", False), (True, True)], ["maybe", 1, "2"]),
])
def test_a_declaration_parses_its_type_and_range(param, good, bad):
    for value, expected in good:
        parsed = param.parse(value)
        assert parsed == expected and type(parsed) is param.kind
    for value in bad:
        with pytest.raises(ValueError, match=f"expected {re.escape(param.describe())}"):
            param.parse(value)


def test_values_are_checked_against_the_method_and_typed():
    coun = all_methods()["coun"]
    assert check_hparams(coun, {"lr": "0.02", "epochs": "3", "schedule": "step"}) == \
        {"lr": 0.02, "epochs": 3, "schedule": "step"}
    with pytest.raises(UserError, match=r"^--tau '0': expected a number > 0 \(temperature"):
        check_hparams(coun, {"tau": "0"})
    with pytest.raises(UserError, match="coun has no hyperparameter mask_ratio"):
        check_hparams(coun, {"mask_ratio": 0.5})
    with pytest.raises(UserError, match=r"^mask_ratio 2: expected a number in \(0, 1\]"):
        check_hparams(all_methods()["salun"], {"mask_ratio": 2}, label=str)


def test_a_method_declares_its_own_hyperparameters_with_a_range():
    class NoRange(Method):
        name, summary, params = "no-range", "x", {"beta": 0.5}

    class Legacy(Method):
        name, summary, defaults = "legacy", "x", {"epochs": 2}

    class OutOfRange(Method):
        name, summary, params = "out-of-range", "x", {"lr": -1.0}

    for cls, why in ((NoRange, "declare its own hyperparameter 'beta'"), (Legacy, "`defaults` is now `params`"),
                     (OutOfRange, "default lr=-1.0")):
        with pytest.raises(TypeError, match=re.escape(why)):
            register(cls)
        assert cls.name not in all_methods()


def test_methods_without_a_loss_of_their_own_train_on_cross_entropy():
    ce_only = [n for n, cls in all_methods().items() if "loss" not in vars(cls)]
    assert set(ce_only) >= {"retrain", "ft", "not", "coun"}  # RL and SalUn draw forget labels in theirs
    logits, y = torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
    batch = Batch(torch.zeros(4, 1, 8, 8), y, torch.ones(4, dtype=torch.bool))
    losses = all_methods()["ft"]({}).loss(None, batch, logits)
    assert losses.keys() == {"ce"} and torch.equal(losses["ce"], F.cross_entropy(logits, y))


def test_unlearn_has_a_flag_for_every_declared_hyperparameter(capsys, cli):
    from coun_tui.engine.methods import all_params, flag

    assert cli("unlearn", "--help") == 0
    shown = capsys.readouterr().out
    for key, (param, _) in all_params().items():
        text = " ".join(shown.replace("│", " ").split())  # the help's table wraps lines inside its borders
        assert flag(key) in shown and param.describe()[:12] in text, key
