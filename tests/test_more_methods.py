"""SSD, UNSIR and JiT: each one's defining behaviour, on real runs with the shipped digits model."""

import torch
import torch.nn.functional as F

from coun_tui.engine import UserError, checkpoint
from coun_tui.engine.events import Done, EpochMetrics
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.runner import RunSpec, prepare, run


def run_method(model, method, forget=None, **kw):
    prep = prepare(RunSpec(method=method, model=model, forget=forget or ForgetSpec(classes=[3]), **kw))
    events = list(run(prep))
    assert isinstance(events[-1], Done), events[-1]
    return prep, events


def fisher_diagonal(model, x, y, batch_size=128):
    """Mean over batches of squared batch-mean CE gradients (SSD's importance), written afresh."""
    model.eval()
    total = [torch.zeros_like(p) for p in model.parameters()]
    batches = range(0, len(x), batch_size)
    for i in batches:
        model.zero_grad()
        F.cross_entropy(model(x[i:i + batch_size]), y[i:i + batch_size]).backward()
        for t, p in zip(total, model.parameters()):
            t += p.grad.square()
    return [t / len(batches) for t in total]


def test_ssd_dampens_exactly_the_selected_weights_and_leaves_the_rest_bit_identical(digits_model):
    alpha = 2.0
    prep, events = run_method(digits_model, "ssd", hparams={"selection": alpha})
    assert events[0].epochs == 0  # no training loop: the dampening is the whole method
    original, meta = checkpoint.load(digits_model)
    from coun_tui.engine import data as data_mod

    data = data_mod.prepare(prep.dataset, meta["mean"], meta["std"], torch.device("cpu"))
    retain, forget = (torch.from_numpy(a) for a in (prep.split.retain, prep.split.forget))
    every = torch.cat([retain, forget])
    f_imp = fisher_diagonal(original, data.train_x[forget], data.train_y[forget])
    d_imp = fisher_diagonal(original, data.train_x[every], data.train_y[every])
    n_selected = n_total = disagree = far = 0
    for (name, p), q, f, d, chosen in zip(prep.model.named_parameters(), original.parameters(), f_imp, d_imp,
                                          prep.method.selected):
        p, q, chosen = p.detach().cpu(), q.detach(), chosen.cpu()
        assert torch.equal(p[~chosen], q[~chosen]), name  # bit-identical where not selected
        assert bool((p[chosen] != q[chosen])[q[chosen] != 0].all()), name  # every selected weight moved
        beta = (d / f).clamp(max=1.0)[chosen]  # by lambda = 1: tiny squared gradients round apart
        far += int(((p[chosen] - q[chosen] * beta).abs() > 1e-2 * (q[chosen] * beta).abs()).sum())
        # the selection is the paper's rule, up to weights within rounding of the threshold
        disagree += int((chosen != (f > alpha * d)).sum())
        n_selected += int(chosen.sum())
        n_total += chosen.numel()
    assert disagree <= 1e-4 * n_total and far <= 1e-3 * n_selected
    assert 0 < n_selected < n_total
    for name, buf in prep.model.named_buffers():  # BatchNorm statistics untouched (eval mode)
        assert torch.equal(buf.cpu(), dict(original.named_buffers())[name]), name
    done = events[-1]
    # the cost is the two importance passes: forget samples twice, retain samples once
    assert done.flops > 0
    n_images = 2 * len(forget) + len(retain)
    forward = done.paper_flops / (3 * n_images)
    assert forward > 0 and abs(done.flops - 3 * n_images * forward) / done.flops < 0.2


def test_cl_is_refused_in_one_line_where_a_method_cannot_take_it(digits_model):
    for method, why in (("ssd", "no training loop"), ("jit", "never reads the retain set")):
        try:
            prepare(RunSpec(method=method, model=digits_model, forget=ForgetSpec(classes=[3]), cl=True))
        except UserError as exc:
            assert why in str(exc) and "drop --cl" in str(exc) and "\n" not in str(exc)
        else:
            raise AssertionError(f"{method} accepted --cl")


def test_ssd_epochs_other_than_zero_are_refused(digits_model):
    try:
        prepare(RunSpec(method="ssd", model=digits_model, forget=ForgetSpec(classes=[3]), hparams={"epochs": 2}))
    except UserError as exc:
        assert "--epochs" in str(exc) and "no epochs" in str(exc)
    else:
        raise AssertionError("ssd accepted --epochs 2")


def _probe(events, key):
    return [e.metrics[key] for e in events if isinstance(e, EpochMetrics)]


def _final_weights(prep):
    events = list(run(prep))
    assert isinstance(events[-1], Done), events[-1]
    return {k: v.detach().clone() for k, v in prep.model.state_dict().items()}


def test_jit_never_reads_the_retain_set(digits_model):
    import dataclasses

    spec = RunSpec(method="jit", model=digits_model, forget=ForgetSpec(classes=[3]), hparams={"samples": 3})
    clean = _final_weights(prepare(spec))
    prep = prepare(spec)
    original = {k: v.clone() for k, v in prep.model.state_dict().items()}
    poisoned = prep.dataset.train_x.clone()
    retain = torch.from_numpy(prep.split.retain)
    poisoned[retain] = torch.rand(poisoned[retain].shape, generator=torch.Generator().manual_seed(1))
    prep.dataset = dataclasses.replace(prep.dataset, train_x=poisoned)
    after = _final_weights(prep)
    assert all(torch.equal(clean[k], after[k]) for k in clean)  # retain images cannot matter
    assert any(not torch.equal(clean[k], original[k]) for k in clean)  # and the run did train


def _forget_loss(prep):
    from coun_tui.engine import data as data_mod

    data = data_mod.prepare(prep.dataset, prep.meta["mean"], prep.meta["std"], torch.device("cpu"))
    forget = torch.from_numpy(prep.split.forget)
    prep.model.eval()
    with torch.no_grad():
        return F.cross_entropy(prep.model(data.train_x[forget]), data.train_y[forget]).item()


def test_unsir_noise_raises_the_forget_loss_before_the_repair(digits_model):
    """The impair epoch alone (no repair), against fine-tuning on the same retain batches with the
    same lr and seed: only the noise differs, so the rise is the noise's."""
    impair_only = {"epochs": 1, "impair_epochs": 1, "noise_steps": 20}
    unsir, events = run_method(digits_model, "unsir", hparams=impair_only)
    before = _forget_loss(prepare(RunSpec(method="ft", model=digits_model, forget=ForgetSpec(classes=[3]))))
    ft, _ = run_method(digits_model, "ft", hparams={"epochs": 1, "lr": unsir.hparams["lr"]})
    assert _forget_loss(unsir) > 100 * max(before, _forget_loss(ft))
    n_noise = len(unsir.split.forget)  # one noise image per forget sample, each trained on once
    assert events[-1].paper_flops > 0 and unsir.method.noise.shape[0] == n_noise


async def test_the_app_runs_ssd_with_its_cl_box_off_and_fixed(tmp_path, digits_model):
    import time
    import tomllib

    from textual.widgets import Select

    from coun_tui.tui.app import CounLab
    from coun_tui.tui.widgets.dialogs import LaunchScreen

    async def until(pilot, condition, timeout, what):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await pilot.pause(0.1)

    app = CounLab(runs_dir=tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(pilot, lambda: app.setup_panel.dataset is not None, 60, "the model to load")
        sel = app.query_one("#forget-classes")
        sel.deselect_all()
        sel.select(3)
        app.query_one("#method", Select).value = "ssd"
        await pilot.pause()
        box = app.query_one("#cl")
        assert box.disabled and not box.value and "not for ssd" in str(box.label)
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, LaunchScreen), app.screen
        await pilot.press("y")
        await pilot.pause()
        pane = app.panes()[0]
        await until(pilot, lambda: pane.runlog.finished, 300, "SSD to finish")
        assert pane.runlog.status == "done", pane.runlog.reason
        spec = tomllib.loads((pane.runlog.run_dir / "run.toml").read_text())
        assert spec["method"] == "ssd" and not spec.get("cl")
