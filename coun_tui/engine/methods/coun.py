"""CoUn: CE on view 1 of retain batches plus lambda * cross-view InfoNCE (Khalil et al., 2025).

The contrastive term itself lives in the run loop (base.info_nce), since `--cl` adds the same
term to any other method; CoUn is the method for which it is always on.
"""

from __future__ import annotations

from coun_tui.engine.methods import register
from coun_tui.engine.methods.base import Method


@register
class CoUn(Method):
    name = "coun"
    summary = "contrastive unlearning: retain CE + lambda * cross-view InfoNCE on penultimate features"
    params = {"epochs": 10, "lr": 0.05, "lambda": 1.0, "tau": 0.1}  # lr: experiments/digits-coun-class3.toml
    always_cl = True
