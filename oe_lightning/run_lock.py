"""One writer per run directory: ``oe-train`` holds an exclusive lock on ``RUN_DIR/.oe-train.lock``.

Two trainings writing one directory at once interleave their rows in ``csv/metrics.csv`` and replace
each other's checkpoints. The lock is ``flock``'s: the kernel drops it when the process ends, however
it ends, so a killed run never leaves a stale lock. Only the process of global rank 0 takes it (the
other ranks of a DDP run work in the same directory on purpose).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from oe_lightning.errors import OEUserError

LOCK_FILE = ".oe-train.lock"
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
_HELD: dict[str, int] = {}  # real run directory -> the locked file descriptor, in this process


def launched_as_rank_zero() -> bool:
    """Whether this process is rank 0 as its launcher tells (Lightning's DDP children get ``LOCAL_RANK``,
    torchrun ``RANK``, SLURM ``SLURM_PROCID``): a single-process run is."""
    return all(os.environ.get(name, "0") in ("", "0") for name in RANK_VARIABLES)


@contextmanager
def run_dir_lock(run_dir: str | Path, command: str = "oe-train") -> Iterator[None]:
    """Hold the run directory's lock for the block; if another process holds it, refuse at once
    (non-blocking) with an error naming the directory and that process. Re-entrant within a process."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): nothing to hold
        yield
        return
    if not launched_as_rank_zero():
        yield
        return
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _HELD:
        yield
        return
    path = folder / LOCK_FILE
    try:  # never through a link planted at the lock's name
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise OEUserError(f"Cannot open the lock file {str(path)!r} of the run directory ({err.strerror}); "
                          f"remove it if it is a link or not a file, or choose another hydra.run.dir.") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise OEUserError(
            f"Another {command} is writing {str(folder)!r} (pid {holder}): two runs in one directory at once "
            f"would mix their rows in csv/metrics.csv and replace each other's checkpoints. Wait for it to "
            f"finish (then run this again: auto_resume continues or skip_complete skips), or choose another "
            f"directory with hydra.run.dir=..."
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = fd
    try:
        yield
    finally:
        del _HELD[key]
        os.close(fd)  # releases the lock
