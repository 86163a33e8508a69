"""Faults planted in run folders and device queues, as a table: links where files belong, folders
and pipes where files belong, values of the wrong type, clocks that disagree, names the file system
cannot hold. Each row runs one real command and must end with rc 0 or exactly one `error:` line,
change nothing outside the run folder (the sentinel a planted link points at keeps its bytes, and
no file appears beside it) and lose nothing inside it.

Run folders are written by hand in the real formats (a recorded fixture run, a tiny safetensors
model), so the table needs no training; two rows start a real worker that waits in its queue.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from coun_tui.engine import devqueue, jobs
from coun_tui.engine.forget import ForgetSpec
from coun_tui.engine.rundir import RunLock, read_state, read_status
from coun_tui.engine.runner import RunSpec

FIXTURE_RUNS = Path(__file__).parent / "fixtures" / "runs"
SECRET = b"the user's own file: never written by coun-lab\n"


@dataclass
class Ctx:
    root: Path  # the test's folder: runs go in root/runs, the sentinel in root/outside
    model: str
    queues: Path
    argv: list[str] = field(default_factory=list)
    may_change: set[str] = field(default_factory=set)  # paths (relative to root) a row may rewrite
    stop: threading.Event = field(default_factory=threading.Event)  # the writer this test plays lets go
    holding: list[threading.Thread] = field(default_factory=list)
    frozen: list[Path] = field(default_factory=list)  # made immutable (chattr +i) by the row

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def secret(self) -> Path:
        return self.root / "outside" / "secret.txt"

    def run(self, name: str = "run", base: str = "ft-digits-class3", finished: bool = False) -> Path:
        """A recorded run (run.toml, split.npz, events.jsonl; metrics.json when `finished`)."""
        run = self.runs / name
        shutil.copytree(FIXTURE_RUNS / base, run)
        if not finished:
            (run / "metrics.json").unlink()
            lines = (run / "events.jsonl").read_text().splitlines()
            (run / "events.jsonl").write_text("\n".join(lines[:12]) + "\n")  # died mid-run
        return run

    def unlearn(self, out: str | Path) -> list[str]:
        return ["unlearn", "--model", self.model, "--method", "ft", "--forget-class", "3", "--detach",
                "--out", str(out)]


def tiny_model(path: Path) -> None:
    """A complete safetensors file (what rundir.model_is_whole checks), made without training."""
    save_file({"w": np.arange(8, dtype=np.float32)}, str(path), metadata={"kind": "test"})


def status(run: Path, **fields) -> None:
    (run / "status.json").write_text(json.dumps(fields))


def play_the_writer(c: Ctx, run: Path) -> None:
    """This test holds the run's lock (a live writer) and lets it go, as a worker stops, once a
    cancel request is a file in the run folder (or the row is over)."""
    lock = RunLock.acquire(run)

    def writer() -> None:
        deadline = time.monotonic() + 60
        while not c.stop.is_set() and time.monotonic() < deadline:
            if (run / "cancel").is_file() and not (run / "cancel").is_symlink():
                break
            time.sleep(0.05)
        lock.release()

    thread = threading.Thread(target=writer)
    thread.start()
    c.holding.append(thread)


# --- the rows: each sets up its fault and returns (argv, rc, fragment of the message) -------------

def lock_link(c: Ctx):
    run = c.run()
    (run / ".lock").symlink_to(c.secret)
    return c.unlearn(run), 2, ".lock is a link, not a file"


def lock_link_dangling(c: Ctx):
    run = c.run()
    (run / ".lock").symlink_to(c.root / "outside" / "created-by-coun-lab")
    return c.unlearn(run), 2, ".lock is a link"


def lock_pipe(c: Ctx):
    run = c.run()
    os.mkfifo(run / ".lock")
    return c.unlearn(run), 2, ".lock is a pipe"


def lock_link_in_new_folder(c: Ctx):
    run = c.runs / "fresh"
    run.mkdir(parents=True)
    (run / ".lock").symlink_to(c.secret)
    return c.unlearn(run), 2, ".lock is a link"


def cancel_link(c: Ctx):
    run = c.run()
    (run / "cancel").symlink_to(c.secret)
    play_the_writer(c, run)
    c.may_change.add("runs/run/cancel")  # the link itself is replaced by the cancel request
    return ["runs", "cancel", run], 0, "died"


def cancel_folder(c: Ctx):
    run = c.run()
    (run / "cancel").mkdir()
    play_the_writer(c, run)
    return ["runs", "cancel", run], 2, "cancel is a directory"


def limit_dotdot(c: Ctx):
    return ["runs", "limit", "..", "3"], 2, "'..' is not a device name"


def limit_dot(c: Ctx):
    return ["runs", "limit", ".", "3"], 2, "not a device name"


def limit_slash(c: Ctx):
    return ["runs", "limit", "cuda:0/../../outside", "3"], 2, "not a device name"


def limit_empty(c: Ctx):
    return ["runs", "limit", "", "3"], 2, "not a device name"


def limit_is_folder(c: Ctx):
    (c.queues / "cpu" / "limit").mkdir(parents=True)
    return ["runs", "limit", "cpu", "2"], 2, "limit is a directory, not a file"


def limit_is_folder_shown(c: Ctx):
    (c.queues / "cpu" / "limit").mkdir(parents=True)
    return ["runs", "limit", "cpu"], 2, "the cpu queue cannot be used"


def limit_link(c: Ctx):
    (c.queues / "cpu").mkdir(parents=True)
    (c.queues / "cpu" / "limit").symlink_to(c.secret)
    return ["runs", "limit", "cpu", "2"], 2, "limit is a link"


def whole_model_no_metrics(c: Ctx):
    run = c.run(finished=True)
    (run / "metrics.json").unlink()  # its events say done; its model is whole
    tiny_model(run / "model.safetensors")
    return c.unlearn(run), 2, "holds a whole model (model.safetensors) but no metrics.json"


def whole_model_died(c: Ctx):
    run = c.run()  # died after saving its model, before metrics.json
    tiny_model(run / "model.safetensors")
    return c.unlearn(run), 2, "holds a whole model"


def whole_model_listed(c: Ctx):
    run = c.run(finished=True)
    (run / "metrics.json").unlink()
    tiny_model(run / "model.safetensors")
    return ["runs", c.runs], 0, "the model is whole"


def events_folder(c: Ctx):
    run = c.run()
    np.save(run / "embedding.npy", np.zeros((4, 2), dtype=np.float16))
    (run / "events.jsonl").unlink()
    (run / "events.jsonl").mkdir()
    return c.unlearn(run), 2, "events.jsonl is a directory, not a file; nothing was changed"


def events_folder_listed(c: Ctx):
    run = c.run()
    (run / "events.jsonl").unlink()
    (run / "events.jsonl").mkdir()
    return ["runs", c.runs], 0, str(run)


def events_pipe(c: Ctx):
    run = c.run()
    (run / "events.jsonl").unlink()
    os.mkfifo(run / "events.jsonl")
    return c.unlearn(run), 2, "events.jsonl is a pipe"


def events_pipe_listed(c: Ctx):
    run = c.run()
    (run / "events.jsonl").unlink()
    os.mkfifo(run / "events.jsonl")
    return ["runs", c.runs], 0, "died"


def run_toml_link(c: Ctx):
    run = c.run()
    (run / "run.toml").unlink()
    (run / "run.toml").symlink_to(c.secret)
    return c.unlearn(run), 2, "run.toml is a link"


def status_link(c: Ctx):
    run = c.run()
    (run / "status.json").symlink_to(c.secret)
    return c.unlearn(run), 2, "status.json is a link"


def worker_log_link(c: Ctx):
    run = c.run()
    (run / "worker.log").symlink_to(c.secret)
    return c.unlearn(run), 2, "worker.log is a link"


def split_folder(c: Ctx):
    run = c.run()
    (run / "split.npz").unlink()
    (run / "split.npz").mkdir()
    return c.unlearn(run), 2, "split.npz is a directory"


def heartbeat_text(c: Ctx):
    run = c.run()
    status(run, state="running", host="another-host", heartbeat="soon", pid=12)
    c.run("neighbour", finished=True)
    return ["runs", c.runs], 0, "heartbeat is not a number"


def heartbeat_future(c: Ctx):
    run = c.run()
    status(run, state="running", host="another-host", heartbeat=time.time() + 86400, pid=12)
    return ["runs", c.runs], 0, "ahead of this machine's clock"


def heartbeat_nan(c: Ctx):
    run = c.run()
    (run / "status.json").write_text('{"state": "running", "host": "another-host", "heartbeat": NaN}')
    return ["runs", c.runs], 0, "heartbeat is not a number"


def reason_not_text(c: Ctx):
    run = c.run()
    status(run, state="failed", reason={"why": ["a", 1]})
    (run / "events.jsonl").write_text((run / "events.jsonl").read_text().splitlines()[0] + "\n")
    return ["runs", c.runs], 0, "failed"


def status_every_type_wrong(c: Ctx):
    run = c.run()
    status(run, state=5, pid="x", host=[1], device={"a": 1}, note=None, step=[], exit_code="one",
           signal=7, heartbeat=True, reason=3.5)
    c.run("neighbour", finished=True)
    return ["runs", c.runs], 0, "neighbour"


def status_deeply_nested(c: Ctx):
    run = c.run()
    (run / "status.json").write_text("[" * 100000 + "]" * 100000)
    return ["runs", c.runs], 0, "status.json is damaged"


def status_json_output(c: Ctx):
    run = c.run()
    status(run, state="died", signal={"n": 9}, exit_code=[2])
    return ["runs", "--json", c.runs], 0, '"state": "died"'


def long_event_lines(c: Ctx):
    run = c.run()
    lines = (run / "events.jsonl").read_text().splitlines()
    big = json.dumps({"kind": "embedding", "epoch": 1, "xy": [[0.5, 0.25]] * 4000, "labels": [1] * 4000,
                      "forget": [False] * 4000})
    step = max(i for i, line in enumerate(lines) if '"kind":"step"' in line)
    last = json.loads(lines[step])["step"]
    total = read_state(run).total
    (run / "events.jsonl").write_text("\n".join(lines[: step + 1] + [big] * 5) + "\n")
    assert len(big) > 65536
    return ["runs", c.runs], 0, f"{last}/{total}"


def long_line_before_done(c: Ctx):
    run = c.run(finished=True)
    lines = (run / "events.jsonl").read_text().splitlines()
    filler = json.dumps({"kind": "epoch", "epoch": 1, "metrics": {"RA": 1.0}, "note": "x" * 200000})
    (run / "events.jsonl").write_text("\n".join(lines[:-1] + [filler, lines[-1]]) + "\n")
    (run / "metrics.json").unlink()
    status(run, state="failed", reason="only the event log says why")
    return ["runs", c.runs], 0, "the run says done"


def identity_disagrees(c: Ctx):
    run = c.run(finished=True)
    (run / "run.toml").write_text((run / "run.toml").read_text().replace('method = "ft"', 'method = "coun"'))
    return ["runs", c.runs], 0, "method coun in run.toml, ft in metrics.json"


def identity_disagrees_compare(c: Ctx):
    run = c.run(finished=True)
    (run / "run.toml").write_text((run / "run.toml").read_text().replace("3,", "5,"))
    return ["compare", run], 0, "run.toml and metrics.json disagree"


def out_too_long(c: Ctx):
    return c.unlearn(c.runs / ("x" * 300)), 2, "more than the file system allows"


def out_part_too_long(c: Ctx):
    return c.unlearn(c.runs / ("y" * 256) / "run"), 2, "more than the file system allows"


def out_not_utf8(c: Ctx):
    return c.unlearn(c.runs / os.fsdecode(b"run-\xff\xfe")), 2, "is not valid utf-8"


def slot_folder(c: Ctx):
    (c.queues / "cpu" / "slot-0").mkdir(parents=True)
    return c.unlearn(c.runs / "new"), 2, "the cpu queue cannot be used"


def slot_folder_listed(c: Ctx):
    (c.queues / "cpu" / "slot-0").mkdir(parents=True)
    c.run()
    return ["runs", c.runs], 0, "died"  # and the warning on stderr (checked below)


def slot_link(c: Ctx):
    (c.queues / "cpu").mkdir(parents=True)
    (c.queues / "cpu" / "slot-0").symlink_to(c.secret)
    return c.unlearn(c.runs / "new"), 2, "slot-0 is a link"


def events_link(c: Ctx):
    run = c.run()
    (run / "events.jsonl").unlink()
    (run / "events.jsonl").symlink_to(c.secret)
    return c.unlearn(run), 2, "events.jsonl is a link"


def metrics_link(c: Ctx):
    run = c.run()
    (run / "metrics.json").symlink_to(c.secret)
    return c.unlearn(run), 2, "metrics.json is a link"


def embedding_link(c: Ctx):
    run = c.run()
    (run / "embedding.npy").symlink_to(c.secret)
    return c.unlearn(run), 2, "embedding.npy is a link"


def model_folder(c: Ctx):
    run = c.run()
    (run / "model.safetensors").mkdir()
    return c.unlearn(run), 2, "model.safetensors is a directory"


def status_a_list(c: Ctx):
    run = c.run()
    (run / "status.json").write_text("[1, 2]")
    return ["runs", c.runs], 0, "status.json is damaged (not an object)"


def events_deeply_nested(c: Ctx):
    run = c.run()
    with (run / "events.jsonl").open("a") as fh:
        fh.write("[" * 100000 + "]" * 100000 + "\n")
    return ["runs", c.runs], 0, "1 damaged line(s) in events.jsonl"


def watch_wrong_types(c: Ctx):
    run = c.run()
    status(run, state=["running"], host=None, heartbeat={"t": 1}, signal=["SIGKILL"])
    return ["runs", "watch", run], 0, "died"


def cancel_future_heartbeat(c: Ctx):
    run = c.run()
    status(run, state="running", host="another-host", heartbeat=time.time() + 86400, pid=12)
    return ["runs", "cancel", run], 2, "nothing to cancel"


def queue_folder_link(c: Ctx):
    c.queues.mkdir(parents=True, exist_ok=True)
    (c.queues / "cpu").symlink_to(c.secret.parent, target_is_directory=True)
    return c.unlearn(c.runs / "new"), 2, "cpu is a link, not a folder"


def runs_name_too_long(c: Ctx):
    return ["runs", c.runs / ("z" * 300)], 2, "does not exist"


def cancel_name_too_long(c: Ctx):
    return ["runs", "cancel", c.runs / ("z" * 300)], 2, "is not a run directory"


def compare_name_too_long(c: Ctx):
    return ["compare", c.runs / ("z" * 300)], 2, "no such directory"


def forget_fraction_huge(c: Ctx):
    run = c.run(finished=True)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["forget"] = {"classes": None, "fraction": 10**400, "seed": "s"}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return ["runs", c.runs], 0, "in metrics.json (metrics.json is shown)"


def _immutable(c: Ctx, path: Path) -> None:
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here (needs root and a file system that keeps it)")
    c.frozen.append(path)


def folder_immutable(c: Ctx):
    run = c.run()
    _immutable(c, run)
    return c.unlearn(run), 2, "cannot be written"


def lock_immutable(c: Ctx):
    run = c.run()
    (run / ".lock").write_bytes(b"")
    _immutable(c, run / ".lock")
    return c.unlearn(run), 2, ".lock cannot be written"


def run_toml_immutable(c: Ctx):
    run = c.run()  # a dead run: its files would be cleared, but one of them cannot be removed
    _immutable(c, run / "run.toml")
    c.may_change.add("runs/run/.lock")  # the lock was taken before the clearing found out
    return c.unlearn(run), 2, "run.toml cannot be removed (Operation not permitted); nothing was changed"


ROWS: list[Callable[[Ctx], tuple]] = [
    lock_link, lock_link_dangling, lock_pipe, lock_link_in_new_folder, cancel_link, cancel_folder,
    limit_dotdot, limit_dot, limit_slash, limit_empty, limit_is_folder, limit_is_folder_shown, limit_link,
    whole_model_no_metrics, whole_model_died, whole_model_listed, events_folder, events_folder_listed,
    events_pipe, events_pipe_listed, run_toml_link, status_link, worker_log_link, split_folder,
    heartbeat_text, heartbeat_future, heartbeat_nan, reason_not_text, status_every_type_wrong,
    status_deeply_nested, status_json_output, long_event_lines, long_line_before_done, identity_disagrees,
    identity_disagrees_compare, out_too_long, out_part_too_long, out_not_utf8, slot_folder, slot_folder_listed,
    slot_link, folder_immutable, lock_immutable, events_link, metrics_link, embedding_link, model_folder,
    status_a_list, events_deeply_nested, watch_wrong_types, cancel_future_heartbeat, queue_folder_link,
    runs_name_too_long, cancel_name_too_long, compare_name_too_long, forget_fraction_huge, run_toml_immutable,
]


def _tree(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry under root: its kind and, for a file, its bytes (a link: where it points)."""
    out: dict[str, tuple[str, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", os.fsencode(os.readlink(path)))
            elif path.is_file():
                out[rel] = ("file", path.read_bytes())
            else:
                out[rel] = ("dir" if path.is_dir() else "other", b"")
    return out


def _unfreeze(paths: list[Path]) -> None:
    for path in paths:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


@pytest.mark.parametrize("row", ROWS, ids=[r.__name__ for r in ROWS])
def test_fault(row, tmp_path, cli, capsys, digits_model, monkeypatch):
    queues = Path(os.environ["COUN_LAB_QUEUES"])
    ctx = Ctx(tmp_path, digits_model, queues)
    ctx.secret.parent.mkdir()
    ctx.secret.write_bytes(SECRET)
    ctx.runs.mkdir()
    try:
        argv, rc, fragment = row(ctx)
        before, queues_before = _tree(tmp_path), _tree(queues)
        beside_queues = sorted(p.name for p in queues.parent.iterdir())
        capsys.readouterr()
        code = cli(*argv)
        out, err = capsys.readouterr()
    finally:
        _unfreeze(ctx.frozen)
        ctx.stop.set()  # the writer this test played lets go before the next checks
        for thread in ctx.holding:
            thread.join()
    assert "Traceback" not in out + err, err
    assert code == rc, (code, out, err)
    if rc == 2:
        lines = err.splitlines()
        assert out == "" and len(lines) == 1 and lines[0].startswith("error: "), err
        assert fragment.lower() in lines[0].lower(), lines[0]
    else:
        assert fragment in out, out
    # Nothing outside the run folders changed; nothing in them was lost (a row may rewrite its own file).
    assert ctx.secret.read_bytes() == SECRET
    assert sorted(p.name for p in ctx.secret.parent.iterdir()) == ["secret.txt"]
    after = _tree(tmp_path)
    for rel, entry in before.items():
        if rel not in ctx.may_change:
            assert after.get(rel) == entry, f"{rel} changed or was lost"
    if rc == 2:
        new = set(after) - set(before) - ctx.may_change
        assert not new and after.keys() >= before.keys(), f"a refused command wrote {new}"
    assert _tree(queues) == queues_before, "a queue file changed"
    assert sorted(p.name for p in queues.parent.iterdir()) == beside_queues, "a file appeared beside the queues"
    if row is slot_folder_listed:
        assert "queue cpu:" in err and "slot-0 is a directory" in err
    print(f"{row.__name__}: rc {code}: {(err or out).strip().splitlines()[0].replace(str(tmp_path), 'TMP')}")


# --- two rows with a real worker (it waits in its queue: no training) -----------------------------

def _queued_job(model: str, run: Path) -> tuple[Path, devqueue.Ticket]:
    """A job that waits in the cpu queue behind a ticket this test holds."""
    blocker = devqueue.Ticket.take("cpu", run.parent / "blocker")
    spec = RunSpec(method="ft", model=model, forget=ForgetSpec(classes=[3]), device="cpu")
    jobs.launch(spec, run, "cpu")
    deadline = time.monotonic() + 60
    while "1 ahead" not in read_state(run).detail:
        assert time.monotonic() < deadline, read_state(run)
        time.sleep(0.1)
    return run, blocker


def test_the_lock_names_the_worker_that_holds_it_not_the_launcher(digits_model, tmp_path, cli, capsys):
    run, blocker = _queued_job(digits_model, tmp_path / "run")
    try:
        capsys.readouterr()
        assert cli(*Ctx(tmp_path, digits_model, tmp_path).unlearn(run)) == 2
        err = capsys.readouterr().err.strip()
        supervisor = read_status(run)[0]["supervisor"]
        assert f"in use by pid {supervisor} on " in err and "(worker)" in err and "\n" not in err, err
        assert supervisor != os.getpid()  # the launcher (this process) has let go
    finally:
        jobs.cancel(run)
        assert jobs.wait(run, 30).state == "cancelled"
        blocker.release()


def test_a_queue_slot_broken_while_a_job_waits_fails_it_with_the_cause(digits_model, tmp_path, cli, capsys):
    run, blocker = _queued_job(digits_model, tmp_path / "run")
    (devqueue.device_dir("cpu") / "slot-0").mkdir()
    blocker.release()
    state = jobs.wait(run, 30)
    assert state.state == "failed" and "the cpu queue cannot be used" in state.detail, state
    assert "slot-0 is a directory" in state.detail
    capsys.readouterr()
    assert cli("runs", tmp_path) == 0
    out, err = capsys.readouterr()
    assert "the cpu queue cannot be used" in out and "queue cpu:" in err and "Traceback" not in out + err


def test_the_table_counts_are_the_readmes():
    assert len(ROWS) == len({r.__name__ for r in ROWS})
    cases = len(ROWS) + 2  # and the two rows with a real worker
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert f"plants {cases} such faults" in readme and f"{cases} of {cases} hold" in readme
