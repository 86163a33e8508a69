"""Speed tooling: `coun-lab bench --methods`'s measurement and the run loop's one host read per step.

No timing is asserted here (the machine is shared); only that the figures are measured and sound.
"""

import math

from coun_tui.engine import runner
from coun_tui.engine.bench_methods import MethodRate, method_rate, table, window_rates
from coun_tui.engine.events import Step
from coun_tui.engine.forget import ForgetSpec


def _steps(prep, n):
    out = []
    stop = type("Stop", (), {"is_set": lambda self: len(out) >= n})()
    for event in runner.run(prep, stop):
        if isinstance(event, Step):
            out.append(event)
        assert event.kind != "failed", event
    return out


def test_reported_losses_are_the_loss_tensors_bit_for_bit(digits_model):
    """The loop reads a step's losses in one transfer; each reported value is exactly the float
    of the tensor the method returned (SCRUB and Bad Teacher, fp32 and the default precision)."""
    for method, precision in (("scrub", "fp32"), ("bad-teacher", "auto"), ("ft", "fp32")):
        spec = runner.RunSpec(method=method, model=digits_model, forget=ForgetSpec(classes=[3]), precision=precision,
                              probe_size=16, cl=method == "ft", hparams={"batch_size": 32})
        prep = runner.prepare(spec)
        returned = []
        plain_loss = prep.method.loss

        def keep(ctx, batch, logits, plain_loss=plain_loss, returned=returned):
            losses = plain_loss(ctx, batch, logits)
            returned.append(losses)
            return losses

        prep.method.loss = keep
        steps = _steps(prep, 2)
        assert len(steps) == 2
        for step, losses in zip(steps, returned, strict=False):
            for key, tensor in losses.items():
                assert step.losses[key] == float(tensor.detach()), (method, key)
            total = step.losses["total"]
            assert math.isfinite(total) and set(step.losses) >= set(losses) | {"total"}


def test_window_rates_leave_out_epoch_boundaries_and_the_first_step():
    def s(step, epoch, images, flops, seconds):
        return Step(step, epoch, {"total": 1.0}, 0.1, images, flops, seconds)

    steps = [s(1, 1, 10, 100, 5.0), s(2, 1, 20, 200, 6.0), s(3, 1, 30, 300, 7.0),
             s(4, 2, 40, 400, 60.0), s(5, 2, 50, 500, 61.0)]
    ips, fpi, fps, n = window_rates(steps)
    assert n == 2  # 2->3 and 4->5; 1->2 is the counted first step, 3->4 spans the epoch's end
    assert (ips, fpi, fps) == (10.0, 10.0, 100.0)
    assert math.isnan(window_rates(steps[:1])[0])


def test_method_rates_are_measured_and_tabled_against_the_bare_step(digits_model):
    rate = method_rate(digits_model, "bad-teacher", False, "cpu", 4, 32, ForgetSpec(classes=[3]))
    assert rate.label == "bad-teacher" and rate.steps == 2 and not rate.error
    # A student's forward and backward plus two teachers' forwards: 5 forward costs an image
    # against a plain step's 3 (the FlopMeter measures them).
    plain = method_rate(digits_model, "ft", False, "cpu", 4, 32, ForgetSpec(classes=[3]))
    assert 5 / 3 - 0.05 < rate.flops_per_image / plain.flops_per_image < 5 / 3 + 0.05
    bare = (plain.flops_per_image, 2 * rate.flops_per_second)  # a bare step twice as fast: 0.5
    others = [MethodRate("ga", 1.0, 1.0, rate.flops_per_second, 2), MethodRate("x", 0, 0, 0, 0, "boom")]
    lines = table(bare, [rate, *others])
    assert "0.50" in lines[2] and "below target" in lines[2]
    assert "forget set only" in lines[3]
    assert lines[4].endswith("failed: boom")
