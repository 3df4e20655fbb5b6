"""Local worker processes on one study (``mtlsearch run SPACE --workers N``).

Each worker is ``python -m mtlsearch worker STUDY``, given the storage URL in its environment
(``MTLSEARCH_STORAGE``, never on its command line, where ``ps`` shows a password): a separate process (its own
Python interpreter and torch threads) that joins the stored study like a worker on another
machine would. They coordinate through the storage only: the study-wide budget, heartbeats and
retries are the storage's. Each gets ``run.threads`` torch threads (``auto``: one for small models,
else the cores shared out, see :func:`mtlsearch.training.auto_threads`), so N trials share the
cores instead of fighting over them. See docs/search.md#local-workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from ..config import RunConfig
from ..errors import MTLSearchError
from ..storage_url import ENV, redact
from ._progress import Progress
from ._signals import guarded, stoppable

STOP_TIMEOUT = 60  # seconds a stopped worker gets to re-queue its trial


def worker_command(study: str, run: RunConfig, index: int, threads: int, mode: str) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "mtlsearch",
        "worker",
        study,
        "--device",
        run.device,
        "--worker-index",
        str(index),
        "--threads",
        str(threads),
    ]
    if mode in ("quiet", "json"):
        cmd.append(f"--{mode}")
    return cmd


def launch_workers(study: str, run: RunConfig, progress: Progress, threads: int) -> None:
    """Start ``run.workers`` worker processes of ``threads`` torch threads each and wait for all
    of them. Ctrl-C or SIGTERM is passed on to each as Ctrl-C (they re-queue their running trials
    and stop; one still running after :data:`STOP_TIMEOUT` seconds is killed); a worker that
    fails is reported."""
    progress.event(
        "workers",
        f"starting {run.workers} worker processes ({threads} torch thread(s) each)",
        workers=run.workers,
        threads=threads,
    )
    env = {**os.environ, ENV: run.storage}
    from ..problem import FACTORY_FOLDERS  # a factory found beside the space file: the workers import it too

    if FACTORY_FOLDERS:
        env["PYTHONPATH"] = os.pathsep.join([*FACTORY_FOLDERS, *filter(None, [os.environ.get("PYTHONPATH")])])
    procs = [
        subprocess.Popen(worker_command(study, run, i, threads, progress.mode), env=env)
        for i in range(1, run.workers + 1)
    ]
    with guarded():  # a second signal must not leave workers behind: it waits, and is dropped
        try:
            with stoppable():
                codes = [p.wait() for p in procs]
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: each worker re-queues its trial and stops
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for p in procs:
                try:
                    p.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            raise
    failed = [(i, c) for i, c in enumerate(codes, 1) if c != 0]
    if failed:
        raise MTLSearchError(
            "worker(s) " + ", ".join(f"{i} (exit code {c})" for i, c in failed) + " failed; see their messages above. "
            f"Finished trials are kept: `mtlsearch resume {study} --storage {redact(run.storage)}` continues"
        )
