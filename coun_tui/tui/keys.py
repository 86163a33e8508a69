"""The lab's keys, declared once: the app's BINDINGS, the command palette, the `?` screen and the
README's key table are all built from KEYS.

`python -m coun_tui.tui.keys --markdown` prints the table (the README holds it between
`<!-- keys:start -->` and `<!-- keys:end -->`; tests/test_tui_keys.py checks they agree).
The dialogs (yes/no, export, history, quit) keep their few keys beside them: they apply only there.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from textual.binding import Binding, BindingType
from textual.keys import key_to_character


@dataclass(frozen=True)
class Key:
    """One action of the lab and the keys that run it.

    keys: Textual key names, the first one is shown (footer and table). footer: the footer's label
    (None: not in the footer). palette: the command palette's title (None: not there).
    priority: keys that fire even when a field has the focus. bound_by_app: False for keys Textual
    itself binds (ctrl+p), listed for the table only.
    """

    action: str
    keys: tuple[str, ...]
    description: str
    footer: str | None = None
    palette: str | None = None
    priority: tuple[str, ...] = ()
    bound_by_app: bool = True


# In table order. The footer shows what a newcomer needs and fits 80 columns; every key is in `?`.
KEYS: tuple[Key, ...] = (
    Key("launch", ("ctrl+r", "r"), "run the method set up in the panel (asks once: `y` runs, `esc` not)",
        footer="Run", palette="Run", priority=("ctrl+r",)),
    Key("retrain", ("t",), "Retrain on the same forget set beside it (the reference for gaps; asks once too)",
        footer="Retrain", palette="Retrain beside"),
    Key("cancel", ("c",), "cancel the shown run (within a step; a queued run never starts)",
        footer="Cancel", palette="Cancel run"),
    Key("compare_view", ("v",), "compare view: every run side by side + the comparison table / one pane",
        footer="Compare", palette="Compare view: side by side / one pane"),
    Key("open_run", ("o",), "run history: open (replay), rename, tag, delete saved runs",
        footer="Runs", palette="Run history: open saved runs"),
    Key("export", ("x",), "export the comparison (Markdown, CSV, JSON) or the screen (SVG)",
        footer="Export", palette="Export comparison (Markdown, CSV, JSON) or screen (SVG)"),
    Key("tsne", ("e",), "embedding: t-SNE of the latest epoch / back to PCA", palette="Embedding: t-SNE / PCA"),
    Key("pick_model", ("m",), "choose another model", palette="Choose model"),
    Key("toggle_setup", ("s",), "show / hide the setup panel", footer="Setup", palette="Toggle setup panel"),
    Key("rename", ("n",), "rename the shown run (kept in its labels.json)", palette="Rename run"),
    Key("tag", ("g",), "tag the shown run", palette="Tag run"),
    Key("delete_run", ("delete",), "delete the shown run's directory (asks first)", palette="Delete run"),
    Key("sort", ("k",), "sort the comparison by the next column (or click a header)",
        palette="Sort comparison: next column"),
    Key("sort_reverse", ("K",), "reverse the comparison's order", palette="Sort comparison: reverse"),
    Key("close_pane", ("w",), "close the shown pane (a run still going goes on; it stays saved)",
        palette="Close pane"),
    Key("prev_pane", ("left_square_bracket",), "previous run pane (or click a pane, a tab, a table row)"),
    Key("next_pane", ("right_square_bracket",), "next run pane"),
    Key("toggle_dark", ("d",), "light / dark theme", palette="Toggle light/dark"),
    Key("command_palette", ("ctrl+p",), "command palette (every action)", bound_by_app=False),
    Key("help", ("question_mark", "f1"), "help: the keys and how to read a run", footer="Help", palette="Help",
        priority=("f1",)),
    Key("quit", ("q",), "quit; with runs going, asks: leave them running (the default) or cancel them",
        footer="Quit", palette="Quit"),
)


def bindings(keys: tuple[Key, ...] = KEYS) -> list[BindingType]:
    """The Textual bindings: one per key, only the first key of an action in the footer."""
    out: list[BindingType] = []
    for key in keys:
        if not key.bound_by_app:
            continue
        for i, name in enumerate(key.keys):
            out.append(Binding(name, key.action, key.footer or key.palette or key.description,
                               show=key.footer is not None and i == 0, priority=name in key.priority))
    return out


def palette(keys: tuple[Key, ...] = KEYS) -> list[tuple[str, str, str]]:
    """(title, action, help) for the command palette, in table order."""
    return [(key.palette, key.action, key.description[0].upper() + key.description[1:])
            for key in keys if key.palette is not None]


def shown(name: str) -> str:
    """How a key is written for a person: `[` for left_square_bracket, `ctrl+r` as it is."""
    if "_" in name:  # a printable key Textual spells out
        return key_to_character(name) or name
    return name


def markdown_table(keys: tuple[Key, ...] = KEYS) -> str:
    """The key table in Markdown (the `?` screen and the README)."""
    rows = ["| key | action |", "|---|---|"]
    for key in keys:
        rows.append(f"| {' / '.join(f'`{shown(name)}`' for name in key.keys)} | {key.description} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m coun_tui.tui.keys", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the key table in Markdown (the default)")
    parser.parse_args(argv)
    print(markdown_table(), end="")


if __name__ == "__main__":
    main()
