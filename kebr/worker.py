"""Supervised worker processes: a clip that kills or hangs its process costs that clip, not its shard.

A per-shard stage's job process (the parent) never decodes media or runs a model itself. It starts
one child process, which loads the stage's models once and then processes the tasks the parent
sends it (one clip, or one ASR batch) one at a time. The parent enforces a wall-clock limit per task
and watches the child:

- the child dies (segfault, abort, an out-of-memory kill, ``os._exit``): ``Outcome("crashed",
  reason="crashed the worker (SIGSEGV)" / "crashed the worker (exit code N)")``;
- the task overruns its limit: the child is killed, ``Outcome("timeout", reason="timed out after N s")``;
- a transient error (``kebr.clips.is_transient``: storage I/O, GPU) escapes the task:
  ``Outcome("transient")``; after a GPU error the child is replaced, so a broken CUDA context does
  not carry over (after an I/O error it stays: reloading models from a failing file system helps
  nobody);
- the task finishes: ``Outcome("done", records)``.

The next task after a death gets a fresh child. Children are started with ``spawn``, never forked
from the parent: CTranslate2, MediaPipe and torch start threads that do not survive a fork, and a
spawned child costs one interpreter start plus the model load (measured in README "Scale").

Each child asks the kernel to kill it when the parent dies (``PR_SET_PDEATHSIG``), raises its own
``oom_score_adj`` so that an out-of-memory killer picks the child, not the parent that keeps the
journal, and ignores SIGINT: a Ctrl-C reaches the whole process group, and the parent decides.
SIGTERM, SIGINT and SIGHUP to the parent set a flag (``StopSignals``); the parent then kills the
child and raises ``Interrupted``, so the stage can journal the in-flight clips as interrupted (not
crashed) before it exits. A child that dies of one of those signals is an interruption too.

Test hook: ``KEBR_TEST_FAULTS="<clip id>:<fault>[@<attempt>],..."`` makes the real stage code in
the worker fail at that clip (see ``inject_fault``); it costs nothing when unset.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kebr.clips import describe_error, is_device_error, is_transient

log = logging.getLogger("kebr")

START_TIMEOUT_S = 1800.0  # loading a large model from a slow network file system takes minutes, not hours
POLL_S = 0.05  # how often the parent looks at the child, the clock and the stop flag
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_DIED, _DEADLINE = object(), object()  # what _receive returns instead of a message


class Interrupted(Exception):
    """The job was asked to stop (SIGTERM, SIGINT, SIGHUP): not a failure of any clip."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class WorkerFailed(RuntimeError):
    """The worker could not start (its models did not load) or the stage code itself failed."""


class StopSignals:
    """While active, SIGTERM/SIGINT/SIGHUP set ``signum`` instead of killing the process."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum

    def check(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up to raise ``Interrupted`` when a stop signal arrives."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check()
            time.sleep(min(left, POLL_S))
        self.check()


@dataclass
class Outcome:
    status: str  # "done" | "crashed" | "timeout" | "transient"
    records: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""


def exit_description(exitcode: int | None) -> str:
    if exitcode is None:
        return "no exit status"
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


class Worker:
    """One supervised child process that runs ``factory(*args)`` (a ``"module:Class"`` path) and
    then its ``process(clips, attempt) -> records`` for every task (``run_task``); ``meta()`` is what
    it reports when ready. ``env``: variables the child starts with, over the parent's (read at
    process start, as glibc's allocator settings are). Use as a context manager so the child never
    outlives the stage."""

    def __init__(self, factory: str, args: tuple, stop: StopSignals, name: str,
                 env: dict[str, str] | None = None) -> None:
        self.factory, self.args, self.stop, self.name = factory, args, stop, name
        self.env = env or {}
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._conn: Any = None
        self.meta: dict[str, Any] | None = None
        self.starts = 0
        self.start_seconds = 0.0
        self._task_id = 0

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def start(self) -> dict[str, Any]:
        """Start the child if none is running; returns its meta once its models are loaded."""
        if self.alive:
            return self.meta or {}
        self.close()
        began = time.perf_counter()
        parent_conn, child_conn = self._context.Pipe()
        self._process = self._context.Process(target=_child_main, name=f"kebr-{self.name}-worker",
                                              args=(child_conn, self.factory, self.args, os.getpid()))
        with _environment(self.env):  # spawn copies os.environ into the child as it starts
            self._process.start()
        child_conn.close()
        self._conn = parent_conn
        message = self._receive(time.monotonic() + START_TIMEOUT_S)
        if message is _DIED or message is _DEADLINE or message[0] != "ready":
            if message is _DIED:
                detail = f"it died ({exit_description(self._reap())})"
            elif message is _DEADLINE:
                detail = f"its models did not load in {START_TIMEOUT_S:g} s"
            else:
                detail = message[1]
            self.close(force=True)
            raise WorkerFailed(f"the {self.name} worker did not start: {detail}")
        self.meta = message[1]
        self.starts += 1
        self.start_seconds += time.perf_counter() - began
        log.info("%s worker (pid %d) ready in %.1f s", self.name, self._process.pid, time.perf_counter() - began)
        return self.meta

    def run(self, clips: list[Any], timeout_s: float, attempt: int = 0, upcoming: list[Any] | None = None) -> Outcome:
        """Process one task in the child (started if needed); see the module docstring. ``upcoming``:
        the clips of the task that will most likely follow, for a stage that reads ahead (``run_task``)."""
        self.start()
        self._task_id += 1
        self._conn.send((self._task_id, clips, attempt, upcoming or []))
        message = self._receive(time.monotonic() + timeout_s)
        if message is _DEADLINE:
            self.close(force=True)
            return Outcome("timeout", reason=f"timed out after {timeout_s:g} s")
        if message is _DIED:
            exitcode = self._reap()
            self.close()
            if exitcode is not None and -exitcode in STOP_SIGNALS:
                # Killed by a stop signal (SLURM signals every process of the job): an interruption.
                self.stop.sleep(1.0)  # our own copy of the signal is usually on its way
                raise Interrupted(-exitcode)
            return Outcome("crashed", reason=f"crashed the worker ({exit_description(exitcode)})")
        kind, task_id, payload = message
        if task_id != self._task_id:
            raise WorkerFailed(f"the {self.name} worker answered task {task_id}, not {self._task_id}")
        if kind == "done":
            return Outcome("done", records=payload)
        if kind == "transient":
            reason, device = payload
            if device:
                self.close()  # a fresh child for the retry: a CUDA error can leave the context unusable
            return Outcome("transient", reason=reason)
        self.close()
        raise WorkerFailed(f"the {self.name} stage code failed (not a clip's fault):\n{payload}")

    def _receive(self, deadline: float) -> Any:
        """The child's next message, or _DIED, or _DEADLINE. Raises Interrupted on a stop signal."""
        while True:
            if self.stop.signum is not None:
                self.close(force=True)
                self.stop.check()
            try:
                if self._conn.poll(min(POLL_S, max(0.0, deadline - time.monotonic()))):
                    return self._conn.recv()
            except (EOFError, ConnectionResetError):
                return _DIED
            if not self._process.is_alive():
                if self._conn.poll(0):  # it may have answered just before exiting
                    continue
                return _DIED
            if time.monotonic() >= deadline:
                return _DEADLINE

    def _reap(self) -> int | None:
        self._process.join(30)  # a dying process may still be writing its core dump
        return self._process.exitcode

    def close(self, force: bool = False) -> None:
        """Stop the child: politely when idle, SIGKILL when it does not go at once (or ``force``)."""
        if self._process is None:
            return
        if force and self._process.is_alive():
            self._process.kill()
        if self._process.is_alive():
            try:
                self._conn.send(None)
            except (OSError, ValueError):
                pass
            self._process.join(0.5)
            if self._process.is_alive():
                self._process.kill()
            self._process.join(5)
        self._conn.close()
        self._process = self._conn = None


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this process when its parent dies, so no worker outlives a killed job."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _be_the_oom_victim() -> None:
    """The out-of-memory killer picks the highest oom_score_adj: this child, not the parent."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with ``values`` added where not set already, for the duration of the block."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def run_task(work: Any, clips: list[Any], attempt: int, upcoming: list[Any]) -> list[dict[str, Any]]:
    """What the child does with one task (bench/asr.py runs it in-process): a stage that reads ahead
    (``prefetch``: the ASR's decode thread) is told this task's clips and the next task's first,
    so its reading of the next overlaps this task's model work; then ``process``."""
    if hasattr(work, "prefetch"):
        work.prefetch(clips, upcoming)
    return work.process(clips, attempt)


def _child_main(conn: Any, factory: str, args: tuple, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    _be_the_oom_victim()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        module, name = factory.split(":")
        work = getattr(importlib.import_module(module), name)(*args)
        conn.send(("ready", work.meta()))
    except BaseException:
        conn.send(("init_error", traceback.format_exc()))
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        task_id, clips, attempt, upcoming = message
        try:
            conn.send(("done", task_id, run_task(work, clips, attempt, upcoming)))
        except Exception as exc:
            if is_transient(exc):
                conn.send(("transient", task_id, (describe_error(exc), is_device_error(exc))))
            else:
                conn.send(("error", task_id, traceback.format_exc()))


# ---------------------------------------------------------------------------------------------
# The test hook

FAULTS = ("segv", "abort", "exit3", "sigkill", "killjob", "hang", "eio", "cuda", "boom")


def inject_fault(clip_id: str, attempt: int = 0) -> None:
    """Fail here, in the worker, when ``KEBR_TEST_FAULTS`` names this clip (tests only).

    Faults: segv (a real segmentation fault), abort, exit3 (``os._exit(3)``), sigkill (what the OOM
    killer does), killjob (SIGKILL to the parent and then the worker: a cgroup OOM kill of the whole
    job), hang, eio (OSError EIO, transient), cuda (a CUDA error, transient), boom (a ValueError,
    unexpected). ``@N`` limits the fault to attempt N (0 = the first try) of the task.
    """
    spec = os.environ.get("KEBR_TEST_FAULTS")
    if not spec:
        return
    for item in spec.split(","):
        target, _, fault = item.partition(":")
        fault, _, only = fault.partition("@")
        if target != clip_id or (only and int(only) != attempt):
            continue
        sys.stderr.flush()
        if fault == "segv":
            ctypes.string_at(0)
        elif fault == "abort":
            os.abort()
        elif fault == "exit3":
            os._exit(3)
        elif fault == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == "killjob":
            os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == "hang":
            while True:
                time.sleep(1)
        elif fault == "eio":
            raise OSError(errno.EIO, "Input/output error (test fault)")
        elif fault == "cuda":
            raise RuntimeError("CUDA error: an illegal memory access was encountered (test fault)")
        elif fault == "boom":
            raise ValueError("test fault: something unexpected")
        else:
            raise ValueError(f"KEBR_TEST_FAULTS: unknown fault {fault!r}, one of {FAULTS}")
