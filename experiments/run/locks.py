"""One writer per run directory and per sweep: an OS file lock held while a process trains or drives it.

``fcntl.flock`` on a lock file: the kernel drops it when its process ends, however it ends (kill -9
included), so a lock is never stale and nothing needs cleaning up. The file also records who holds it
(pid, host, command, since when), so that a second process is refused at once with the holder's pid and
what to do, instead of training the same run twice (two MLflow runs claiming one directory) or resuming a
sweep that another process is driving. The lock file itself is never deleted: removing it while another
process waits on it would let two processes hold "the" lock at once.

Locks are advisory and hold between processes that share a kernel (or a file system whose locks reach
every client): on a cluster, one driver process drives a sweep, and each trial's run directory is locked on
the node that trains it. A Tune retry that starts while the failed attempt's process is still exiting is
refused like any second process, and counts as one more failure of the trial (``sweep.max_failures``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from experiments.config import ConfigError

RUN_LOCK = ".lock"  # in a run directory, held by ``train`` from its first check to its MLflow run's end
SWEEP_LOCK = ".sweep.lock"  # in <paths.runs>/<sweep id>, held by the sweep's driver before Ray starts


class Busy(ConfigError):
    """Another live process holds the lock: refused at once (``error:`` and exit 2 at an entry point)."""


def holder(path: str | Path) -> dict:
    """Who holds (or last held) the lock at ``path``: {"pid", "host", "command", "since"}, or {} if unknown."""
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def describe(info: dict) -> str:
    if not info.get("pid"):
        return "another process (its pid is not recorded yet)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"])) if info.get("since") else "?"
    return (f"process {info['pid']} on {info.get('host', '?')} (`{info.get('command', '?')}`, since {since})")


@contextlib.contextmanager
def exclusive(path: str | Path, what: str, fix: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` body, or raise ``Busy``
    naming ``what`` is locked, the holder and ``fix`` (what the refused user can do). Not re-entrant: a
    second ``exclusive`` on the same file in the same process is refused too."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise ConfigError(f"cannot create the lock file {path} of {what} ({err.strerror}); "
                          f"check that {path.parent} is a folder you can write to") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        info = holder(path)
        pid = info.get("pid", "<pid>")
        raise Busy(f"{what} is in use by {describe(info)}; {fix.format(pid=pid)}") from None
    except BaseException:
        os.close(fd)
        raise
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                  "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        yield path
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def run_dir_lock(run_dir: str | Path):
    """The lock ``train`` holds on its run directory (every check, every step, the MLflow run's end)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_dir={run_dir} is a file, not a folder; pass run_dir=<a folder> (or leave it unset)")
    return exclusive(
        run_dir / RUN_LOCK, f"run directory {run_dir}",
        "wait for it to finish (its result is then reused by the same command), or stop it (kill {pid}) and "
        "rerun the same command to resume from its last checkpoint; to train this config again alongside, "
        "pass another run_dir",
    )


def sweep_lock(runs: str | Path, sweep_id: str):
    """The lock a sweep's driver holds on its sweep id, taken before Ray starts and before the sweep's
    MLflow run is opened, released once that run has ended."""
    return exclusive(
        Path(runs) / sweep_id / SWEEP_LOCK, f"sweep {sweep_id}",
        "wait for it to finish, or stop it (kill {pid}: Ctrl-C saves its state) and rerun the same command to "
        "resume it; to run this config again alongside, pass another sweep.id",
    )
