"""Atomic writes, whole-line appends and opens that never follow a link: every file the engine
writes goes through here.

A run folder or a queue may hold a link someone planted where a file belongs (`.lock -> ~/.bashrc`);
writing through it would change a file outside the folder. So a file is either replaced whole
(atomic_write renames over the link itself) or opened with O_NOFOLLOW and checked to be a regular
file (open_file); anything else is refused with one line naming it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from coun_tui.engine import UserError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a link"), (stat.S_ISFIFO, "a pipe"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def not_a_file(path: str | Path) -> str:
    """What stands at `path` when it is neither a regular file nor absent ("a link", ...), else ""."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return ""
    except OSError as exc:
        return f"unreadable ({exc.strerror or type(exc).__name__})"
    return next((what for test, what in _KINDS if test(mode)), "" if stat.S_ISREG(mode) else "not a file")


def refuse_not_a_file(path: str | Path) -> None:
    """Raise UserError naming `path` when something other than a regular file stands there."""
    what = not_a_file(path)
    if what:
        raise UserError(f"{path} is {what}, not a file; coun-lab never writes through it: remove it "
                        f"(rm -r {path}) and try again")


def open_file(path: str | Path, flags: int, mode: int = 0o644) -> int:
    """os.open that never follows a link and opens nothing but a regular file (or creates one);
    refused with one UserError line naming the path, and one line for a folder it cannot write."""
    refuse_not_a_file(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO):  # swapped in since the check
            refuse_not_a_file(path)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise UserError(f"{path} cannot be written ({exc.strerror}); check the folder's permissions "
                            "and attributes (chattr -i) or choose another folder") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        refuse_not_a_file(path)
        raise UserError(f"{path} is not a file; remove it and try again")
    os.set_blocking(fd, True)
    return fd


def open_for_reading(path: str | Path) -> BinaryIO:
    """A file opened for reading (a link is followed: reading changes nothing), never a pipe or a
    device that would block or never end: those raise OSError like a missing file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def open_append(path: str | Path, truncate: bool = False) -> BinaryIO:
    """A log opened for appending whole lines (unbuffered), never through a link."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else os.O_APPEND)
    return os.fdopen(open_file(path, flags), "wb" if truncate else "ab", buffering=0)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write to a temporary file beside `path`, then rename it over `path`.

    On any error `path` keeps its old content and the temporary file is removed, so a crash or a
    full disk never leaves a half-written checkpoint, split or metrics file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.path.isdir(path) and not os.path.islink(path):
        refuse_not_a_file(path)  # a rename cannot replace a folder
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
