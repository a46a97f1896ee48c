"""Launch a 2-rank ``torch.distributed.run`` job from a test, so that a hang fails loudly and leaves
nothing behind.

``subprocess.run(..., timeout=...)`` kills only torchrun itself on a timeout: its worker processes
lived on (one rank blocked in a gloo collective forever) and the output that says why was lost. Here
on a timeout torchrun and every process below it (its ranks run in sessions of their own) are killed
and the test fails with the job's last output.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest

RENDEZVOUS = ["--master_port=0", "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0"]


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def worker_env(**extra: str) -> dict[str, str]:
    """The test process's environment without torchrun's rank variables, one thread per rank."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def torchrun(args: list[str], *, nproc: int = 2, timeout: float = 240, extra: list[str] | None = None,
             env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node=nproc <rendezvous on a free port> <extra> <args>``;
    returns the completed process (check ``returncode``), or fails the test after ``timeout`` seconds with
    its output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", *RENDEZVOUS, *(extra or []), *args]
    proc = subprocess.Popen(cmd, env=worker_env() if env is None else env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *_descendants(proc.pid)]:  # the ranks run in sessions of their own
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout:g}s: {' '.join(args)}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
