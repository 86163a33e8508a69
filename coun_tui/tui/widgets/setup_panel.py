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
from textual.message import Message
from textual.strip import Strip
from textual.widgets import Button, Checkbox, Input, Label, Select, SelectionList, Static

from coun_tui.engine import UserError
from coun_tui.engine.forget import ForgetSpec, Split, make_split
from coun_tui.engine.methods import all_methods, check_hparams
from coun_tui.engine.methods import get as get_method
from coun_tui.engine.records import find_reference, read_metrics
from coun_tui.engine.runner import RunSpec, merged_hparams
from coun_tui.tui.widgets.run_pane import short_path

SHOWN_FIRST = ("epochs", "lr", "batch_size", "lambda", "tau")
TICKED, UNTICKED = "X", " "  # a tick box's glyph: state by shape, not by colour alone


def parse_hparam(method, name: str, text: str, default: Any) -> Any:
    """The value typed for hyperparameter `name` of `method`, checked against its declaration and
    converted to its type, or a UserError that names the field and says what to type."""
    if not text.strip():
        raise UserError(f"{name} is empty: give {method.declared()[name].describe()} (default {default})")
    return check_hparams(method, {name: text}, label=lambda key: key)[name]


class ForgetClasses(SelectionList[int]):
    """The classes to forget: a ticked class shows X in its box, an unticked one a blank box."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        segments = list(strip)
        try:
            option = self.get_option_at_index(self.scroll_offset.y + y)
        except Exception:  # noqa: BLE001 - below the last option
            return strip
        if len(segments) > 1 and segments[1].text == TICKED and option.value not in self.selected:
            segments[1] = segments[1]._replace(text=UNTICKED)
            return Strip(segments, strip.cell_length)
        return strip


class TickBox(Checkbox):
    """A checkbox whose box shows X when on and stays blank when off."""

    @property
    def BUTTON_INNER(self) -> str:  # type: ignore[override]  # noqa: N802 - Textual reads the glyph from it
        return TICKED if self.value else UNTICKED


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


class SetupPanel(VerticalScroll, can_focus=False):
    """Builds a RunSpec from what is shown; counts and the reference update as choices change."""

    class Changed(Message):
        """Something a person set changed (the app keeps it for the next session)."""

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
        self._hp_method: str | None = None  # the method whose hyperparameters are shown
        self._cl_choice = False  # +CL as the person set it, for the methods that take it

    def compose(self) -> ComposeResult:
        methods = all_methods()
        yield Static("Model", classes="section")
        yield Static("no model loaded", id="model-facts")
        yield Button("Choose model… (m)", id="pick-model", compact=True)
        yield Static("Forget", classes="section")
        yield Select([("classes", "classes"), ("random fraction", "fraction")], value="classes",
                     allow_blank=False, id="forget-mode", compact=True)
        yield ForgetClasses(id="forget-classes", compact=True)
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
        yield TickBox("+CL", id="cl", compact=True)
        with Horizontal(classes="field-row"):
            yield Label("device")
            yield Select([(d, d) for d in device_choices()], value="auto", allow_blank=False, id="device",
                         compact=True)
        yield Vertical(id="hparams")
        yield Static(id="hp-problems")
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

    def set_model(self, path: str, meta: dict, dataset, data_root: str | None = None) -> list[str]:
        """Show the model and its classes; ticked classes the new model also has (by name) stay
        ticked. Returns the names of those it has not, which are unticked."""
        sel = self.query_one("#forget-classes", SelectionList)
        old_names: list[str] = list(self.dataset.classes) if self.dataset is not None else []
        ticked = [old_names[i] for i in sorted(sel.selected) if 0 <= i < len(old_names)]
        self.model_path, self.meta, self.dataset, self.data_root = path, meta, dataset, data_root
        self.dataset_name = dataset.name
        self.query_one("#model-facts", Static).update(model_facts(path, meta, dataset))
        counts = np.bincount(dataset.train_y.numpy(), minlength=len(dataset.classes))
        sel.clear_options()
        sel.add_options([(f"{name}  ({counts[i]})", i) for i, name in enumerate(dataset.classes)])
        for name in ticked:
            if name in dataset.classes:
                sel.select(list(dataset.classes).index(name))
        self._fill_hparams()
        self.update_split()
        return [name for name in ticked if name not in dataset.classes]

    # --- forget set ---------------------------------------------------------------------------

    def forget_spec(self) -> ForgetSpec:
        if self.query_one("#forget-mode", Select).value == "classes":
            chosen = sorted(self.query_one("#forget-classes", SelectionList).selected)
            if not chosen:
                raise UserError("tick the classes to forget (space or a click), or switch to a random fraction")
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
            counts.update(Text("! " + str(exc), style="yellow"))
            self._show_reference()
            return
        counts.update(Text.assemble(("retain ", "dim"), (f"{len(self.split.retain):,}", "bold"),
                                    (" · forget ", "dim"), (f"{len(self.split.forget):,}", "bold"),
                                    (f" ({spec.describe(self.dataset.classes)})", "dim")))
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
                                     ("t runs Retrain on it; the gaps fill in when it finishes", "dim")))
            return
        scores = read_metrics(self.reference).scores()  # find_reference only returns sound runs
        ref.update(Text.assemble((self.reference.name + "\n", "green"),
                                 (" ".join(f"{k} {v:.1f}" for k, v in scores.items()), "dim")))

    # --- method -------------------------------------------------------------------------------

    @property
    def method_name(self) -> str:
        return str(self.query_one("#method", Select).value)

    def _fill_hparams(self, keep: dict[str, str] | None = None) -> None:
        """One field per hyperparameter of the method, with its default (or the text in `keep`)."""
        cls = all_methods()[self.method_name]
        self._hp_method = cls.name
        self.query_one("#method-summary", Static).update(Text(cls.summary, style="dim italic"))
        self._show_cl(cls)
        try:
            self._defaults = merged_hparams(cls, dict(self.meta), {})
        except UserError:
            self._defaults = cls.all_defaults()
        box = self.query_one("#hparams", Vertical)
        box.remove_children()
        self._hp_generation += 1  # fresh ids: removal is asynchronous
        shown = self._shown_keys(cls)
        keys = [k for k in SHOWN_FIRST if k in shown] + sorted(k for k in shown if k not in SHOWN_FIRST)
        rows = []
        for key in keys:
            rows.append(Horizontal(Label(key, classes="hp-name"),
                                   Input((keep or {}).get(key, str(self._defaults[key])), name=key, classes="hp",
                                         id=f"hp-{key}-{self._hp_generation}", compact=True),
                                   classes="field-row"))
        box.mount_all(rows)
        self.query_one("#hp-problems", Static).update("")
        if keep:
            self.call_after_refresh(self._show_problems)

    def _shown_keys(self, cls) -> list[str]:
        """The hyperparameters the method uses: CL's lambda and tau only with the CL term."""
        cl_on = cls.always_cl or (self._cl_choice and not (cls.from_scratch or cls.cl_refusal))
        return [k for k in self._defaults if cl_on or k not in ("lambda", "tau")]

    def _show_cl(self, cls) -> None:
        """+CL: forced on in CoUn, off in Retrain (the reference), else as the person left it."""
        box = self.query_one("#cl", TickBox)
        fixed = cls.always_cl or cls.from_scratch or bool(cls.cl_refusal)
        with box.prevent(Checkbox.Changed):
            box.value = cls.always_cl or (self._cl_choice and not fixed)
        box.disabled = fixed
        box.label = ("+CL (always on in coun)" if cls.always_cl else
                     "+CL (not for the reference)" if cls.from_scratch else
                     f"+CL (not for {cls.name}: see `coun-lab methods`)" if cls.cl_refusal else
                     "+CL (CoUn's contrastive term)")

    def hparam_input(self, key: str) -> Input:
        return self.query_one(f"#hp-{key}-{self._hp_generation}", Input)

    def set_hparams(self, **values: Any) -> None:
        for key, value in values.items():
            self.hparam_input(key).value = str(value)

    def _hp_inputs(self) -> dict[str, Input]:
        """The current method's hyperparameter fields by name."""
        return {inp.name: inp for inp in self.query("Input.hp").results(Input)
                if inp.id and inp.id.endswith(f"-{self._hp_generation}") and inp.name and inp.name in self._defaults}

    def overrides(self) -> dict[str, Any]:
        """The hyperparameters changed from the method's defaults, typed; a UserError names the
        first field that holds no valid value."""
        cls = all_methods()[self.method_name]
        out = {}
        for name, inp in self._hp_inputs().items():
            value = parse_hparam(cls, name, inp.value, self._defaults[name])
            if value != self._defaults[name]:
                out[name] = value
        return out

    def problems(self) -> list[str]:
        """One line per hyperparameter field that holds no valid value."""
        cls = all_methods()[self.method_name]
        found = []
        for name, inp in self._hp_inputs().items():
            try:
                parse_hparam(cls, name, inp.value, self._defaults[name])
                inp.remove_class("-invalid")
            except UserError as exc:
                inp.add_class("-invalid")
                found.append(str(exc))
        return found

    def _show_problems(self) -> None:
        found = self.problems()
        self.query_one("#hp-problems", Static).update(
            Text("\n".join(f"✖ {p}" for p in found), style="bold red") if found else "")

    # --- the spec -----------------------------------------------------------------------------

    def build_spec(self, method: str | None = None) -> RunSpec:
        """The RunSpec for Run (or for `method`, e.g. Retrain beside, with that method's defaults)."""
        if self.model_path is None:
            raise UserError("no model loaded yet: press m to choose one")
        forget = self.forget_spec()
        own = method is None
        method = method or self.method_name
        cls = all_methods()[method]
        cl = self.query_one("#cl", TickBox).value and not cls.always_cl if own else False
        reference = str(self.reference) if self.reference and method != "retrain" else None
        return RunSpec(method=method, model=str(Path(self.model_path).resolve()), dataset=self.dataset_name,
                       data_root=self.data_root, forget=forget, cl=bool(cl),
                       hparams=self.overrides() if own else {},
                       device=str(self.query_one("#device", Select).value), reference=reference)

    def effective_hparams(self, spec: RunSpec) -> dict[str, Any]:
        """Every hyperparameter `spec` runs with (its method's defaults for this model + overrides)."""
        try:
            return merged_hparams(get_method(spec.method), dict(self.meta), spec.hparams)
        except UserError:
            return dict(spec.hparams)

    # --- the session --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What a person set, to restore next time (see restore)."""
        return {"model": self.model_path, "mode": self.query_one("#forget-mode", Select).value,
                "classes": sorted(self.query_one("#forget-classes", SelectionList).selected),
                "fraction": self.query_one("#fraction", Input).value,
                "seed": self.query_one("#forget-seed", Input).value,
                "method": self.method_name, "cl": self._cl_choice,
                "device": self.query_one("#device", Select).value,
                "hparams": {name: inp.value for name, inp in self._hp_inputs().items()}}

    def restore(self, state: dict[str, Any]) -> None:
        """Set the panel as `state` (from state()) says, skipping what does not fit this model."""
        methods = all_methods()
        n_classes = len(self.dataset.classes) if self.dataset else 0
        mode = state.get("mode")
        if mode in ("classes", "fraction"):
            self.query_one("#forget-mode", Select).value = mode
            self.query_one("#fraction-row").display = mode == "fraction"
            self.query_one("#forget-classes").display = mode == "classes"
        sel = self.query_one("#forget-classes", SelectionList)
        sel.deselect_all()
        for c in state.get("classes") or []:
            if isinstance(c, int) and 0 <= c < n_classes:
                sel.select(c)
        for key, widget in (("fraction", "#fraction"), ("seed", "#forget-seed")):
            if isinstance(state.get(key), str):
                self.query_one(widget, Input).value = state[key]
        if state.get("device") in device_choices():
            self.query_one("#device", Select).value = state["device"]
        self._cl_choice = bool(state.get("cl"))
        if state.get("method") in methods:
            self.query_one("#method", Select).value = state["method"]
        texts = state["hparams"] if isinstance(state.get("hparams"), dict) else {}
        self._fill_hparams(keep={k: v for k, v in texts.items() if isinstance(v, str)})  # fields mount later
        self.update_split()

    # --- events -------------------------------------------------------------------------------

    @on(Select.Changed, "#forget-mode")
    def _mode_changed(self, event: Select.Changed) -> None:
        fraction = event.value == "fraction"
        self.query_one("#fraction-row").display = fraction
        self.query_one("#forget-classes").display = not fraction
        self.update_split()
        self.post_message(self.Changed())

    @on(SelectionList.SelectedChanged)
    @on(Input.Changed, "#fraction, #forget-seed")
    def _forget_changed(self) -> None:
        self.update_split()
        self.post_message(self.Changed())

    @on(Select.Changed, "#method")
    def _method_changed(self) -> None:
        if self.method_name != self._hp_method:
            self._fill_hparams()
        self.post_message(self.Changed())

    @on(Checkbox.Changed, "#cl")
    def _cl_changed(self, event: Checkbox.Changed) -> None:
        self._cl_choice = event.value
        cls = all_methods()[self.method_name]
        if not (cls.always_cl or cls.from_scratch or cls.cl_refusal):  # lambda and tau come and go with CL
            self._fill_hparams(keep={name: inp.value for name, inp in self._hp_inputs().items()})
        self.post_message(self.Changed())

    @on(Select.Changed, "#device")
    def _device_changed(self) -> None:
        self.post_message(self.Changed())

    @on(Input.Changed, ".hp")
    def _hparam_changed(self) -> None:
        self._show_problems()
        self.post_message(self.Changed())
