"""The setup panel: the model's facts, what to forget, the method and its hyperparameters, device,
and the Retrain reference for the chosen split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, Select, SelectionList, Static, Switch

from coun_tui.engine import UserError
from coun_tui.engine.forget import ForgetSpec, Split, make_split
from coun_tui.engine.methods import all_methods
from coun_tui.engine.runner import RunSpec, merged_hparams
from coun_tui.tui.runlog import find_reference, read_metrics
from coun_tui.tui.widgets.run_pane import short_path

SHOWN_FIRST = ("epochs", "lr", "batch_size", "lambda", "tau")


def device_choices() -> list[str]:
    import torch

    return ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def model_facts(path: str, meta: dict, dataset) -> Text:
    t = Text()
    t.append(Path(path).name + "\n", style="bold")
    arch = f"{meta.get('arch', '?')} ({meta.get('stem', '?')} stem, {meta.get('in_channels', '?')} ch)"
    t.append(f"{arch}\n")
    n_classes = len(dataset.classes)
    size = f"{dataset.image_size}×{dataset.image_size}"
    t.append(f"{dataset.name}: {len(dataset.train_y):,} train · {len(dataset.test_y):,} test · {size}\n")
    m = meta.get("metrics") or {}
    acc = " · ".join(f"{k} {float(m[k]):.1f}%" for k in ("TA", "RA") if isinstance(m.get(k), (int, float)))
    t.append("accuracy: ", style="dim")
    t.append((acc or "not recorded") + "\n", style="bold green" if acc else "yellow")
    names = ", ".join(dataset.classes[:12]) + (" …" if n_classes > 12 else "")
    t.append(f"{n_classes} classes: ", style="dim")
    t.append(names)
    return t


class SetupPanel(VerticalScroll):
    """Builds a RunSpec from what is shown; counts and the reference update as choices change."""

    def __init__(self, runs_dir: Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.runs_dir = Path(runs_dir)
        self.model_path: str | None = None
        self.meta: dict[str, Any] = {}
        self.dataset = None
        self.data_root: str | None = None
        self.dataset_name: str | None = None
        self.split: Split | None = None
        self.reference: Path | None = None
        self._defaults: dict[str, Any] = {}
        self._hp_generation = 0

    def compose(self) -> ComposeResult:
        methods = all_methods()
        yield Static("Model", classes="section")
        yield Static("no model loaded", id="model-facts")
        yield Button("Choose model… (m)", id="pick-model", compact=True)
        yield Static("Forget", classes="section")
        yield Select([("classes", "classes"), ("random fraction", "fraction")], value="classes",
                     allow_blank=False, id="forget-mode", compact=True)
        yield SelectionList[int](id="forget-classes", compact=True)
        with Horizontal(id="fraction-row", classes="field-row"):
            yield Label("fraction")
            yield Input("0.1", id="fraction", compact=True)
            yield Label("seed")
            yield Input("0", id="forget-seed", compact=True, type="integer")
        yield Static(id="counts")
        yield Static("Method", classes="section")
        yield Select([(name, name) for name in methods], value="coun", allow_blank=False, id="method",
                     compact=True)
        yield Static(id="method-summary")
        with Horizontal(classes="field-row"):
            yield Label("+CL")
            yield Switch(False, id="cl")
            yield Label("device")
            yield Select([(d, d) for d in device_choices()], value="auto", allow_blank=False, id="device",
                         compact=True)
        yield Vertical(id="hparams")
        yield Static("Retrain reference", classes="section")
        yield Static(id="reference")
        yield Static(id="runs-dir")
        with Horizontal(classes="buttons"):
            yield Button("Run ^r", id="launch", variant="primary", compact=True)
            yield Button("Retrain beside t", id="retrain", compact=True)

    def on_mount(self) -> None:
        self.query_one("#fraction-row").display = False
        self.query_one("#runs-dir", Static).update(Text(f"runs saved in {short_path(self.runs_dir)}", style="dim"))
        self._fill_hparams()

    # --- model --------------------------------------------------------------------------------

    def set_model(self, path: str, meta: dict, dataset, data_root: str | None = None) -> None:
        self.model_path, self.meta, self.dataset, self.data_root = path, meta, dataset, data_root
        self.dataset_name = dataset.name
        self.query_one("#model-facts", Static).update(model_facts(path, meta, dataset))
        counts = np.bincount(dataset.train_y.numpy(), minlength=len(dataset.classes))
        sel = self.query_one("#forget-classes", SelectionList)
        sel.clear_options()
        sel.add_options([(f"{name}  ({counts[i]})", i, i == 0) for i, name in enumerate(dataset.classes)])
        self._fill_hparams()
        self.update_split()

    # --- forget set ---------------------------------------------------------------------------

    def forget_spec(self) -> ForgetSpec:
        if self.query_one("#forget-mode", Select).value == "classes":
            chosen = sorted(self.query_one("#forget-classes", SelectionList).selected)
            if not chosen:
                raise UserError("choose at least one class to forget, or switch to a random fraction")
            return ForgetSpec(classes=chosen)
        text = self.query_one("#fraction", Input).value.strip().rstrip("%")
        try:
            fraction = float(text)
        except ValueError:
            raise UserError(f"fraction {text!r} is not a number: give e.g. 0.1 for 10%") from None
        if fraction >= 1:  # "10" means 10%
            fraction /= 100
        seed_text = self.query_one("#forget-seed", Input).value.strip() or "0"
        try:
            seed = int(seed_text)
        except ValueError:
            raise UserError(f"seed {seed_text!r} is not an integer") from None
        return ForgetSpec(fraction=fraction, seed=seed)

    def update_split(self) -> None:
        counts = self.query_one("#counts", Static)
        if self.dataset is None:
            return
        try:
            spec = self.forget_spec()
            self.split = make_split(spec, self.dataset.train_y.numpy())
        except UserError as exc:
            self.split = None
            counts.update(Text(str(exc), style="red"))
            self._show_reference()
            return
        counts.update(Text.assemble(("retain ", "dim"), (f"{len(self.split.retain):,}", "bold"),
                                    ("  ·  forget ", "dim"), (f"{len(self.split.forget):,}", "bold"),
                                    (f"  ({spec.describe(self.dataset.classes)})", "dim")))
        self._show_reference()

    def refresh_reference(self) -> None:
        self._show_reference()

    def _show_reference(self) -> None:
        ref = self.query_one("#reference", Static)
        self.reference = None
        if self.split is None or self.dataset is None:
            ref.update(Text("choose a forget set first", style="dim"))
            return
        self.reference = find_reference(self.runs_dir, self.dataset.name, self.split)
        if self.reference is None:
            ref.update(Text.assemble(("none for this split yet: gaps stay empty.\n", "yellow"),
                                     ("press t to launch Retrain beside the run", "dim")))
            return
        m = read_metrics(self.reference) or {}
        ref.update(Text.assemble((self.reference.name + "\n", "green"),
                                 (" ".join(f"{k} {float(m[k]):.1f}" for k in ("RA", "UA", "TA", "MIA") if k in m),
                                  "dim")))

    # --- method -------------------------------------------------------------------------------

    @property
    def method_name(self) -> str:
        return str(self.query_one("#method", Select).value)

    def _fill_hparams(self) -> None:
        cls = all_methods()[self.method_name]
        self.query_one("#method-summary", Static).update(Text(cls.summary, style="dim italic"))
        cl = self.query_one("#cl", Switch)
        cl.disabled = cls.always_cl
        if cls.always_cl:
            cl.value = True
        try:
            self._defaults = merged_hparams(cls, dict(self.meta), {})
        except UserError:
            self._defaults = cls.all_defaults()
        box = self.query_one("#hparams", Vertical)
        box.remove_children()
        self._hp_generation += 1  # fresh ids: removal is asynchronous
        keys = [k for k in SHOWN_FIRST if k in self._defaults] + sorted(k for k in self._defaults if k not in SHOWN_FIRST)
        rows = []
        for key in keys:
            rows.append(Horizontal(Label(key, classes="hp-name"),
                                   Input(str(self._defaults[key]), name=key, classes="hp",
                                         id=f"hp-{key}-{self._hp_generation}", compact=True),
                                   classes="field-row"))
        box.mount_all(rows)

    def hparam_input(self, key: str) -> Input:
        return self.query_one(f"#hp-{key}-{self._hp_generation}", Input)

    def set_hparams(self, **values: Any) -> None:
        for key, value in values.items():
            self.hparam_input(key).value = str(value)

    def overrides(self) -> dict[str, str]:
        out = {}
        for inp in self.query("Input.hp"):
            if not inp.id or not inp.id.endswith(f"-{self._hp_generation}"):
                continue
            if inp.value.strip() != str(self._defaults.get(inp.name)):
                out[inp.name] = inp.value.strip()
        return out

    # --- the spec -----------------------------------------------------------------------------

    def build_spec(self, method: str | None = None) -> RunSpec:
        """The RunSpec for Run (or for `method`, e.g. Retrain beside, with that method's defaults)."""
        if self.model_path is None:
            raise UserError("no model loaded yet: press m to choose one")
        forget = self.forget_spec()
        own = method is None
        method = method or self.method_name
        cls = all_methods()[method]
        cl = self.query_one("#cl", Switch).value and not cls.always_cl if own else False
        reference = str(self.reference) if self.reference and method != "retrain" else None
        return RunSpec(method=method, model=self.model_path, dataset=self.dataset_name, data_root=self.data_root,
                       forget=forget, cl=bool(cl), hparams=self.overrides() if own else {},
                       device=str(self.query_one("#device", Select).value), reference=reference)

    # --- events -------------------------------------------------------------------------------

    @on(Select.Changed, "#forget-mode")
    def _mode_changed(self, event: Select.Changed) -> None:
        fraction = event.value == "fraction"
        self.query_one("#fraction-row").display = fraction
        self.query_one("#forget-classes").display = not fraction
        self.update_split()

    @on(SelectionList.SelectedChanged)
    @on(Input.Changed, "#fraction, #forget-seed")
    def _forget_changed(self) -> None:
        self.update_split()

    @on(Select.Changed, "#method")
    def _method_changed(self) -> None:
        self._fill_hparams()
