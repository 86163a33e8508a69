"""The lab's actions in the command palette (ctrl+p)."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

COMMANDS: list[tuple[str, str, str]] = [
    ("Run", "launch", "Train the method set up in the panel, in the background"),
    ("Retrain beside", "retrain", "Launch Retrain on the same forget set: the reference for gaps"),
    ("Cancel run", "cancel", "Stop the run in the shown pane within a step (a queued run never starts)"),
    ("Compare view: side by side / one pane", "compare_view",
     "Every open run side by side with the comparison table (Table 1), or one pane at a time"),
    ("Sort comparison: next column", "sort", "Sort the comparison table by the next column"),
    ("Sort comparison: reverse", "sort_reverse", "Reverse the comparison table's order"),
    ("Export comparison (Markdown, CSV, JSON) or screen (SVG)", "export",
     "Write the table as `coun-lab compare` prints it, or save this screen as SVG"),
    ("Embedding: t-SNE / PCA", "tsne", "Toggle a t-SNE of the latest epoch's features"),
    ("Run history: open saved runs", "open_run", "Every kept run: open (replay), rename, tag or delete"),
    ("Rename run", "rename", "Give the shown run a name (kept in its labels.json)"),
    ("Tag run", "tag", "Set the shown run's tags"),
    ("Delete run", "delete_run", "Delete the shown run's directory (asks first)"),
    ("Choose model", "pick_model", "Load another checkpoint to unlearn"),
    ("Close pane", "close_pane", "Close the shown run pane (a running run is cancelled; it stays saved)"),
    ("Toggle setup panel", "toggle_setup", "Show or hide the setup panel"),
    ("Toggle light/dark", "toggle_dark", "Switch between the light and dark theme"),
    ("Help", "help", "Keys and how to read a run"),
    ("Quit", "quit", "Cancel running work, wait for it, and quit"),
]


class LabCommands(Provider):
    async def _run(self, action: str) -> None:
        await self.app.run_action(action)

    async def discover(self) -> Hits:
        for title, action, help_text in COMMANDS:
            yield DiscoveryHit(title, partial(self._run, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, action, help_text in COMMANDS:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self._run, action), help=help_text)
