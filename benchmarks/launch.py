"""N local processes with torchrun's environment, for the DDP tests and benchmarks on one
machine without network (``tests/test_distributed.py``, ``tests/test_cuda.py``,
``benchmarks/ddp_variants.py``). Users launch with ``torchrun`` (``fa_utils.distributed``).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (for a local process group)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def launch_local(argv: Sequence[str], nprocs: int = 2, *, timeout_s: float = 120.0,
                 env: Optional[dict] = None, threads: int = 1) -> list[str]:
    """Run ``python *argv`` as ``nprocs`` local processes with torchrun's environment
    (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1, a free MASTER_PORT,
    OMP_NUM_THREADS=threads): ``torchrun --standalone`` without its agent, for tests and
    benchmarks on one machine without network.

    Returns:
        Each rank's stdout.

    Raises:
        RuntimeError: a rank failed or the time ran out (all ranks are then killed); the
            message holds the exit codes and the end of every rank's stderr.
    """
    port = free_port()
    procs, logs = [], []
    for rank in range(nprocs):
        penv = dict(os.environ, **(env or {}))
        penv.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nprocs),
                    LOCAL_WORLD_SIZE=str(nprocs), MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=str(port), OMP_NUM_THREADS=str(threads))
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        logs.append((out, err))
        procs.append(subprocess.Popen([sys.executable, *argv], env=penv, stdout=out, stderr=err))
    deadline = time.monotonic() + timeout_s
    timed_out = False
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                timed_out = True
                break
            if any(p.poll() not in (None, 0) for p in procs):  # one failed: do not wait
                time.sleep(2.0)
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    texts = []
    for out, err in logs:
        out.seek(0), err.seek(0)
        texts.append((out.read(), err.read()))
        out.close(), err.close()
    codes = [p.returncode for p in procs]
    if timed_out or any(codes):
        why = (f"timed out after {timeout_s:.0f} s" if timed_out
               else f"exit codes {codes}")
        detail = "\n".join(f"--- rank {r} stderr (end) ---\n{e[-3000:]}"
                           for r, (_, e) in enumerate(texts))
        raise RuntimeError(f"{nprocs} local processes of {' '.join(argv)}: {why}\n{detail}")
    return [o for o, _ in texts]
