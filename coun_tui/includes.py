"""Markdown that shows committed result files as they are, never pasted by hand.

A block between `<!-- include PATH -->` and `<!-- /include -->` holds the text of PATH (relative to
the repository root, where every command runs). `python -m coun_tui.includes FILE...` rewrites the
blocks from the files; `--check` only reports the stale ones (exit 1), which a test runs so that a
table regenerated without its README fails the suite.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

BLOCK = re.compile(r"(<!-- include (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- /include -->)", re.S)


def render(text: str, root: Path) -> str:
    """`text` with every include block holding its file's current text."""
    def fill(m: re.Match[str]) -> str:
        path = root / m.group("path")
        try:
            body = path.read_text()
        except OSError as exc:
            raise SystemExit(f"error: include {m.group('path')}: {exc.strerror or exc}") from None
        return m.group(1) + body.rstrip("\n") + "\n" + m.group(4)

    return BLOCK.sub(fill, text)


def stale(path: Path, root: Path = Path(".")) -> bool:
    text = path.read_text()
    return render(text, root) != text


def main(argv: list[str]) -> int:
    check = "--check" in argv
    files = [Path(a) for a in argv if a != "--check"]
    if not files:
        print("usage: python -m coun_tui.includes [--check] FILE.md...", file=sys.stderr)
        return 2
    out_of_date = []
    for path in files:
        text = path.read_text()
        new = render(text, Path("."))
        if new != text:
            out_of_date.append(path)
            if not check:
                path.write_text(new)
    if check and out_of_date:
        print("stale: " + ", ".join(map(str, out_of_date)) + "; run python -m coun_tui.includes "
              + " ".join(map(str, out_of_date)), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
