"""Atomic writes and whole-line appends: every file the engine writes goes through here."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temporary file beside `path`, then rename it over `path`.

    On any error `path` keeps its old content and the temporary file is removed, so a crash or a
    full disk never leaves a half-written checkpoint, split or metrics file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())  # data on disk before the rename makes it visible
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; some platforms cannot open directories.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def append_line(log: BinaryIO, line: str) -> None:
    """Append one whole line or nothing: a failed write (a full disk) is cut back off."""
    data = memoryview((line + "\n").encode())
    start = log.tell()
    try:
        while data:
            data = data[log.write(data):]
    except OSError:
        with contextlib.suppress(OSError):
            log.seek(start)
            log.truncate()
        raise
