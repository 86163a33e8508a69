"""A warm worker server: a job's worker starts with torch and the engine already imported.

A fresh interpreter spends seconds importing torch before a job's first step. The server is one
small process per user and environment (`python -m coun_tui.engine.warm SOCKET`), started on
demand by a launch and living past the app like the jobs; it imports what a worker needs, then
waits on a unix socket in the state folder (WARM_DIR/<fingerprint>.sock). For each launch it forks
a child that becomes the job's worker exactly as `python -m coun_tui.engine.worker ARGS` would:
its own session, its own worker.log as stdout and stderr, the launcher's working directory and
environment, and the run's lock and queue ticket at the descriptor numbers in ARGS. The child owns
the run directory from then on, so it outlives the server (SIGKILL included). The server runs no
torch operation, so no torch thread exists when it forks.

The fingerprint names the interpreter, the package's files (path, size, mtime), the installed
torch and numpy, and the environment variables read at import time: a launcher only ever talks to
a server of its own fingerprint, and a server whose files changed under it exits. With no server,
or any trouble reaching one, a launch starts the worker as a fresh process as before (and starts a
server for the launches after it).

COUN_LAB_WARM: a folder for the sockets, or "off"; COUN_LAB_WARM_IDLE: seconds a server waits for
a launch before it exits (default 1800).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from coun_tui.engine.files import open_append

PACKAGE = Path(__file__).resolve().parents[1]  # coun_tui/
ENV_NAMES = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "LD_PRELOAD")
ENV_PREFIXES = ("OMP_", "MKL_", "GOMP_", "TORCH_", "PYTORCH_", "CUDA_", "CUBLAS_", "COUN_LAB_")
# Read afresh on every call, so the child's environment (the launcher's) decides them.
ENV_READ_AT_CALL = ("COUN_LAB_QUEUES", "COUN_LAB_RUNS", "COUN_LAB_WARM", "COUN_LAB_WARM_IDLE")
CONNECT_SECONDS = 2.0  # a server that does not take the call within this is not used
REPLY_SECONDS = 60.0  # how long a launcher waits for the answer to a sent request
CHECK_SECONDS = 2.0  # how often an idle server re-reads its fingerprint
MAX_MESSAGE = 1 << 20
WORKER = "coun_tui.engine.worker"  # the module a job's worker runs, forked or fresh
# What a worker imports, by name: the server only loads them (they import the launcher's modules).
# Datasets load through scikit-learn and scipy, and PCA draws the embedding: seconds of imports.
PRELOAD = ("coun_tui.engine.runner", "coun_tui.engine.runs", WORKER, "sklearn.datasets", "sklearn.model_selection",
           "sklearn.decomposition", "scipy.io")


def warm_dir() -> Path | None:
    """Where servers' sockets live; None when warm workers are off."""
    setting = os.environ.get("COUN_LAB_WARM", "")
    if setting.lower() in ("off", "0", "no", "false"):
        return None
    if setting:
        return Path(setting)
    from platformdirs import user_data_dir

    return Path(user_data_dir("coun-lab")) / "warm"


def fingerprint() -> str:
    """What a forked worker inherits from the server and a fresh one would read anew."""
    parts: list[str] = [sys.executable, sys.version, str(PACKAGE)]
    for path in sorted(PACKAGE.rglob("*.py")):
        with contextlib.suppress(OSError):
            st = path.stat()
            parts.append(f"{path.relative_to(PACKAGE)} {st.st_size} {st.st_mtime_ns}")
    for name in ("torch", "numpy"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            st = os.stat(spec.origin)
            parts.append(f"{spec.origin} {st.st_mtime_ns}")
    env = sorted((key, value) for key, value in os.environ.items()
                 if (key in ENV_NAMES or key.startswith(ENV_PREFIXES)) and key not in ENV_READ_AT_CALL)
    parts += [f"{key}={value}" for key, value in env]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def socket_path(fp: str | None = None) -> Path | None:
    folder = warm_dir()
    return None if folder is None else folder / f"{fp or fingerprint()}.sock"


# --- the launcher's side --------------------------------------------------------------------


def spawn_worker(args: list[str], fds: list[int], log: Path) -> int | None:
    """Ask this environment's server to fork the worker `python -m coun_tui.engine.worker ARGS`,
    handing it `fds` at the same numbers; its pid, or None when no fresh server answered (a server
    is then started for the next launch, and the caller starts the worker itself)."""
    fp = fingerprint()
    path = socket_path(fp)
    if path is None:
        return None
    request = {"fingerprint": fp, "args": args, "fds": fds, "log": str(log), "cwd": os.getcwd(),
               "env": dict(os.environ)}
    try:
        reply = _ask(path, request, fds)
    except (OSError, ValueError):
        start_server(fp)
        return None
    pid = reply.get("pid")
    return pid if isinstance(pid, int) else None


def _ask(path: Path, request: dict[str, Any], fds: list[int]) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.settimeout(CONNECT_SECONDS)
        conn.connect(str(path))
        # Once sent, the server may have forked the worker: wait long rather than start a second one.
        conn.settimeout(REPLY_SECONDS)
        socket.send_fds(conn, [json.dumps(request).encode()], fds)
        answer = conn.recv(MAX_MESSAGE)
    reply = json.loads(answer or b"{}")
    if not isinstance(reply, dict):
        raise ValueError("not a reply")
    return reply


def start_server(fp: str | None = None) -> None:
    """Start this environment's server in the background (a second one exits at once)."""
    fp = fp or fingerprint()
    path = socket_path(fp)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_append(path.with_suffix(".log")) as log:
        subprocess.Popen([sys.executable, "-m", "coun_tui.engine.warm", str(path)], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def start_if_absent() -> None:
    """Have this environment's server ready for the first launch (the app calls it at start)."""
    if warm_dir() is not None and server_pid() is None:
        start_server()


def server_pid(fp: str | None = None) -> int | None:
    """The pid of this environment's server if it answers, else None."""
    path = socket_path(fp)
    if path is None:
        return None
    try:
        pid = _ask(path, {"ping": True}, []).get("pid")
    except (OSError, ValueError):
        return None
    return pid if isinstance(pid, int) else None


def ensure_server(timeout: float = 120.0) -> int | None:
    """This environment's server's pid, starting it and waiting until it answers (bench, tests)."""
    pid = server_pid()
    if pid is None and warm_dir() is not None:
        start_server()
        deadline = time.monotonic() + timeout
        while pid is None and time.monotonic() < deadline:
            time.sleep(0.1)
            pid = server_pid()
    return pid


# --- the server's side -----------------------------------------------------------------------


def serve(path: Path) -> int:
    """Run the server on `path` until idle, stale or killed; 0 also when another one holds it."""
    fp = path.stem
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another server of this fingerprint is up
    if fingerprint() != fp:
        return 0  # started by a launcher whose files have changed since
    _preload()
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(path))
    bound = os.stat(path).st_ino  # unlinked at exit only if no newer server has replaced it
    listener.listen(16)
    listener.settimeout(CHECK_SECONDS)
    idle = float(os.environ.get("COUN_LAB_WARM_IDLE", 1800))
    last = time.monotonic()
    try:
        while time.monotonic() - last < idle:
            _reap()
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                if fingerprint() != fp:
                    return 0  # code or packages changed: a new launch gets a new server
                continue
            last = time.monotonic()
            with conn:
                if not _handle(conn, fp, (listener.fileno(), lock_fd)):
                    return 0
    finally:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == bound:
                path.unlink()
        listener.close()
    return 0


def _preload() -> None:
    """Import what a worker imports (torch, the engine, every method); run nothing."""
    for name in PRELOAD:
        importlib.import_module(name)
    importlib.import_module("coun_tui.engine.methods").all_methods()  # each method's module

def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _handle(conn: socket.socket, fp: str, server_fds: tuple[int, ...]) -> bool:
    """Answer one request; False when the server must exit (a launcher of another fingerprint)."""
    conn.settimeout(CONNECT_SECONDS)
    data, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, 16)
    try:
        request = json.loads(data or b"{}")
        if request.get("ping"):
            conn.send(json.dumps({"pid": os.getpid()}).encode())
            return True
        if request.get("fingerprint") != fp:
            conn.send(json.dumps({"error": "stale"}).encode())
            return False
        pid = os.fork()
        if pid == 0:
            _become_worker(request, fds, (conn.fileno(), *server_fds))
        conn.send(json.dumps({"pid": pid}).encode())
        return True
    finally:
        for fd in fds:
            os.close(fd)


def _become_worker(request: dict[str, Any], fds: list[int], server_fds: tuple[int, ...]) -> None:
    """In the forked child: become the job's worker, as a fresh `python -m` would be; never returns."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in server_fds:  # the server's socket and its lock stay the server's
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _place_descriptors(fds, [int(n) for n in request["fds"]], Path(request["log"]))
        worker = importlib.import_module(WORKER)  # preloaded: named, as `python -m` names it
        sys.argv = [str(worker.__file__), *request["args"]]
        code = worker.main(list(request["args"]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - the child must never return into the server's loop
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _place_descriptors(received: list[int], wanted: list[int], log: Path) -> None:
    """stdin from /dev/null, stdout and stderr to the run's log, the received descriptors at the
    numbers the worker's arguments name, and nothing else open (as subprocess's close_fds)."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 1000) for fd in received]
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    keep = {0, 1, 2, *high}
    for fd in _open_fds():
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    for source, target in zip(high, wanted, strict=True):
        os.dup2(source, target)
        os.close(source)


def _open_fds() -> list[int]:
    return [int(name) for name in os.listdir("/proc/self/fd") if name.isdigit()]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m coun_tui.engine.warm SOCKET", file=sys.stderr)
        return 2
    return serve(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
