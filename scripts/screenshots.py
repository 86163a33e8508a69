"""Write screenshots/: lab-mid-run, lab-finished and lab-compare (.svg, .png) from the app's own SVGs,
lab-80x24-no-colour (the comparison at 80x24 with NO_COLOR=1) and lab-browser.png (`coun-lab
serve` in headless Chromium).

A real CoUn run of digits class 3 (2 epochs, CPU is fine) is launched in the app, in a copy of
tests/fixtures/runs so that a Retrain reference exists and the gaps fill in; the app's
save_screenshot() SVGs are taken mid-run and at the end. Then the recorded FT run and the
Retrain reference are opened beside it for the comparison view (panes side by side and the
Table 1 comparison). Headless Chromium (apt-get install chromium) renders the SVGs to PNG and
shows the served app (through playwright, as tests/test_serve.py does). Run from the repository
root:

    python scripts/screenshots.py [--size 160x48]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from coun_tui.tui.app import CounLab

OUT = Path("screenshots")
FIXTURE_RUNS = Path("tests/fixtures/runs")


def to_png(svg: Path, png: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("headless Chromium is needed to render the SVGs: apt-get install chromium")
    view = re.search(r'viewBox="0 0 ([\d.]+) ([\d.]+)"', svg.read_text())
    width, height = (int(float(v)) + 20 for v in view.groups())
    html = svg.with_suffix(".html")
    html.write_text(f'<html><body style="margin:0;background:#000">{svg.read_text()}</body></html>')
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={png.resolve()}", f"--window-size={width},{height}", html.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    html.unlink()


async def capture(size: tuple[int, int], runs_dir: Path) -> list[Path]:
    app = CounLab(runs_dir=runs_dir)
    shots = []
    async with app.run_test(size=size) as pilot:
        while app.setup_panel.dataset is None:
            await pilot.pause(0.1)
        sel = app.query_one("#forget-classes")
        sel.deselect_all()
        sel.select(3)
        await pilot.pause()
        app.setup_panel.set_hparams(epochs=2, batch_size=64)
        await pilot.press("ctrl+r")  # the copied fixtures hold the Retrain reference: one question
        await pilot.pause()
        await pilot.press("y")
        pane = app.panes()[0]
        while pane.runlog.step < 0.6 * max(pane.runlog.total_steps, 10) and not pane.runlog.finished:
            await pilot.pause(0.2)
        await pilot.pause(0.5)
        shots.append(Path(app.save_screenshot("lab-mid-run.svg", str(OUT))))
        while not pane.runlog.finished:  # the run is a job: its pane follows it to the end
            await pilot.pause(0.2)
        await pilot.pause(1.0)
        app.clear_notifications()
        await pilot.pause(0.3)
        shots.append(Path(app.save_screenshot("lab-finished.svg", str(OUT))))
        for name in ("ft-digits-class3", "retrain-digits-class3"):
            app.open_run(runs_dir / name)
        app.set_compare_view(True)
        app.activate_pane(pane.run_id)
        await pilot.pause(1.0)
        app.clear_notifications()
        app._refresh_compare(force=True)
        await pilot.pause(0.5)
        shots.append(Path(app.save_screenshot("lab-compare.svg", str(OUT))))
    return shots


RECORDED = ("ft-digits-class3", "coun-digits-class3", "retrain-digits-class3")


async def capture_no_colour(runs_dir: Path) -> Path:
    """The recorded runs compared at 80x24 with NO_COLOR=1: state by glyph and text alone."""
    os.environ["NO_COLOR"] = "1"
    try:
        app = CounLab(runs_dir=runs_dir)
    finally:
        del os.environ["NO_COLOR"]
    async with app.run_test(size=(80, 24)) as pilot:
        while app.setup_panel.dataset is None:
            await pilot.pause(0.1)
        for name in RECORDED:
            app.open_run(runs_dir / name)
        await pilot.pause(1.0)
        app._refresh_compare(force=True)
        await pilot.pause(0.5)
        return Path(app.save_screenshot("lab-80x24-no-colour.svg", str(OUT)))


def capture_browser(runs_dir: Path) -> Path:
    """`coun-lab serve` in headless Chromium, its session set to compare the recorded runs."""
    sys.path.insert(0, "tests")
    from test_serve import open_in_browser, served

    (runs_dir / ".coun-lab-session.json").write_text(json.dumps(
        {"open": [str(runs_dir / n) for n in RECORDED], "compare": True, "sort": ["avg_gap", False],
         "active": str(runs_dir / "coun-digits-class3")}))
    png = OUT / "lab-browser.png"
    with served(runs_dir, runs_dir) as (url, _):
        open_in_browser(url, png, ("Comparison", "coun", "Avg"))
    return png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="160x48")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        shutil.copytree(FIXTURE_RUNS, runs)
        for svg in [*asyncio.run(capture(size, runs)), asyncio.run(capture_no_colour(runs))]:
            png = svg.with_suffix(".png")
            to_png(svg, png)
            print(f"wrote {png}")
        print(f"wrote {capture_browser(runs)}")


if __name__ == "__main__":
    main()
