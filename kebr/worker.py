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
- the child's resident memory passes what the job leaves it (``job_mem_mb``, below): the child is
  killed, ``Outcome("too_large", reason="... reached N MB ...", peak_mb=N)``;
- the task finishes: ``Outcome("done", records)``.

A memory limit per task. The job's memory (its ``resources.mem_mb``, or its cgroup's limit where
that is lower: ``job_memory_limit_mb``) is what the parent and the child may use together; the
child gets the job's limit minus the parent's resident memory when the child starts. The parent
reads the child's ``VmRSS`` from ``/proc/<pid>/status`` at every poll (``POLL_S``, about 20 us a
read) and kills it the moment it is over, so a clip that needs more memory than the job has costs
that clip (``too_large``, with the peak ``VmHWM`` it reached), not the job: the job stays within its
memory, so neither the kernel's out-of-memory killer nor a scheduler's cgroup has cause to act.
The child resets its peak (``/proc/self/clear_refs``) before each task, so the peak is that task's.

Why resident memory polled from outside, not ``RLIMIT_AS``: an address-space limit counts virtual
memory, which these workers reserve far beyond what they touch. Measured on the demo corpus (2
cores): VmPeak / VmHWM after a clip is 835 / 283 MB (visual, MediaPipe), 891 / 367 MB (audio), 786
/ 460 MB (ASR, CTranslate2); and it grows with the cores (a thread stack and a 64 MB malloc arena
per decoder or OpenMP thread), so a limit that spares a healthy worker on a 64-core node bounds
nothing on a small one, and allocations that fail under it surface as EAGAIN from thread creation
(retried as transient) or C++ aborts rather than as a clean skip. Resident memory is what the
out-of-memory killer and a cgroup count. The price of polling: the child can outgrow its share by
what it touches within one poll; measured, 18 MB past a 1181 MB share for a worker that fills a
4 GB array at full speed (a page fault costs more than the parent's look at /proc).

The next task after a death gets a fresh child. Children are started with ``spawn``, never forked
from the parent: CTranslate2, MediaPipe and torch start threads that do not survive a fork, and a
spawned child costs one interpreter start plus the model load (measured in docs/scale.md "What the robustness costs").

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
MB = 1 << 20


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
    status: str  # "done" | "crashed" | "timeout" | "transient" | "too_large"
    records: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    peak_mb: int | None = None  # too_large: the child's peak resident memory in the task


@dataclass
class _OverMemory:
    """What _receive returns when the child's resident memory passed its limit (it is then killed)."""
    peak_mb: int


def memory_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM (peak resident), VmSize and VmPeak of a process in MB, from /proc (Linux); {}
    when it has gone."""
    values = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                key, _, value = line.partition(b":")
                if key in (b"VmRSS", b"VmHWM", b"VmSize", b"VmPeak"):
                    values[key.decode()] = int(value.split()[0]) // 1024
    except (OSError, ValueError):
        return {}
    return values


def _cgroup_limit_bytes() -> int | None:
    """This process's cgroup memory limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``), None
    when there is none or it cannot be read (a container may hide the hierarchy)."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates = [f"/sys/fs/cgroup{path}/memory.max"]
        elif "memory" in controllers.split(","):
            candidates = [f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"]
        else:
            continue
        for candidate in candidates:
            try:
                with open(candidate) as f:
                    text = f.read().strip()
            except OSError:
                continue
            if text.isdigit() and int(text) < 1 << 60:  # "max", or v1's "no limit" (2^63 rounded to a page)
                limits.append(int(text))
    return min(limits) if limits else None


def job_memory_limit_mb(configured_mb: float | None) -> int | None:
    """The memory a job may use: its configured ``mem_mb``, or its cgroup's limit where that is lower
    (a SLURM job's allocation, a container); None when it has neither."""
    cgroup = _cgroup_limit_bytes()
    limits = [m for m in (configured_mb, None if cgroup is None else cgroup // MB) if m is not None]
    return int(min(limits)) if limits else None


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
    process start, as glibc's allocator settings are). ``job_mem_mb``: the job's memory limit
    (``job_memory_limit_mb``), which the parent and the child share (see the module docstring);
    None: no limit. Use as a context manager so the child never outlives the stage."""

    def __init__(self, factory: str, args: tuple, stop: StopSignals, name: str,
                 env: dict[str, str] | None = None, job_mem_mb: int | None = None) -> None:
        self.factory, self.args, self.stop, self.name = factory, args, stop, name
        self.env = env or {}
        self.job_mem_mb = job_mem_mb
        self.limit_mb: int | None = None  # the child's share of job_mem_mb, set at each start
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._conn: Any = None
        self.meta: dict[str, Any] | None = None
        self.starts = 0
        self.start_seconds = 0.0
        self.loaded_mb: int | None = None
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
        if self.job_mem_mb is not None:  # what the parent holds now is not the child's to use
            self.limit_mb = self.job_mem_mb - memory_status().get("VmRSS", 0)
        parent_conn, child_conn = self._context.Pipe()
        self._process = self._context.Process(target=_child_main, name=f"kebr-{self.name}-worker",
                                              args=(child_conn, self.factory, self.args, os.getpid()))
        with _environment(self.env):  # spawn copies os.environ into the child as it starts
            self._process.start()
        child_conn.close()
        self._conn = parent_conn
        message = self._receive(time.monotonic() + START_TIMEOUT_S)
        if message is _DIED or message is _DEADLINE or isinstance(message, _OverMemory) or message[0] != "ready":
            if message is _DIED:
                detail = f"it died ({exit_description(self._reap())})"
            elif message is _DEADLINE:
                detail = f"its models did not load in {START_TIMEOUT_S:g} s"
            elif isinstance(message, _OverMemory):
                detail = (f"loading its models took {message.peak_mb} MB, more than the {self.limit_mb} MB the "
                          f"job's {self.job_mem_mb} MB leave it (raise the rule's resources.mem_mb)")
            else:
                detail = message[1]
            self.close(force=True)
            raise WorkerFailed(f"the {self.name} worker did not start: {detail}")
        self.meta = message[1]
        self.starts += 1
        self.loaded_mb = memory_status(self._process.pid).get("VmRSS")
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
        if isinstance(message, _OverMemory):
            self.close(force=True)
            return Outcome("too_large", peak_mb=message.peak_mb,
                           reason=f"needed more memory than the job has: its {self.name} worker reached "
                                  f"{message.peak_mb} MB resident, over the {self.limit_mb} MB the job's "
                                  f"{self.job_mem_mb} MB leave it (resources.mem_mb; the worker held "
                                  f"{self.loaded_mb} MB when ready)")
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

    def _over_memory(self) -> _OverMemory | None:
        """The child's peak when its resident memory is over its limit (then it must be killed)."""
        if self.limit_mb is None:
            return None
        status = memory_status(self._process.pid)
        if status.get("VmRSS", 0) <= self.limit_mb:
            return None
        return _OverMemory(max(status["VmRSS"], status.get("VmHWM", 0)))

    def _receive(self, deadline: float) -> Any:
        """The child's next message, or _DIED, or _DEADLINE, or _OverMemory. Raises Interrupted on a
        stop signal."""
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
            if (over := self._over_memory()) is not None:
                return over
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


def _write_proc(name: str, value: str) -> None:
    """Write ``value`` to /proc/self/``name`` where the kernel allows it (elsewhere: nothing)."""
    try:
        with open(f"/proc/self/{name}", "w") as f:
            f.write(value)
    except OSError:
        pass


def _be_the_oom_victim() -> None:
    """The out-of-memory killer picks the highest oom_score_adj: this child, not the parent."""
    _write_proc("oom_score_adj", "1000")


def _reset_peak_memory() -> None:
    """Start VmHWM afresh (Linux >= 4.0), so the peak the parent reports is this task's."""
    _write_proc("clear_refs", "5")


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
        _reset_peak_memory()
        try:
            conn.send(("done", task_id, run_task(work, clips, attempt, upcoming)))
        except Exception as exc:
            if is_transient(exc):
                conn.send(("transient", task_id, (describe_error(exc), is_device_error(exc))))
            else:
                conn.send(("error", task_id, traceback.format_exc()))


# ---------------------------------------------------------------------------------------------
# The test hook

FAULTS = ("segv", "abort", "exit3", "sigkill", "killjob", "hang", "eio", "cuda", "boom", "bloat")
BLOAT_MB = 3072  # what the bloat fault touches at most: over any test's limit, under the test machine's RAM


def inject_fault(clip_id: str, attempt: int = 0) -> None:
    """Fail here, in the worker, when ``KEBR_TEST_FAULTS`` names this clip (tests only).

    Faults: segv (a real segmentation fault), abort, exit3 (``os._exit(3)``), sigkill (what the OOM
    killer does), killjob (SIGKILL to the parent and then the worker: a cgroup OOM kill of the whole
    job), hang, eio (OSError EIO, transient), cuda (a CUDA error, transient), boom (a ValueError,
    unexpected), bloat (touches 16 MB more every 10 ms, up to ``BLOAT_MB``: a clip that needs more
    memory than the job has; slow enough that a loaded test machine's scheduling does not blur its
    peak). ``@N`` limits the fault to attempt N (0 = the first try) of the task.
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
        elif fault == "bloat":
            held = []
            for _ in range(BLOAT_MB // 16):
                held.append(bytearray(16 * 1024 * 1024))  # zero-filled: every page touched
                time.sleep(0.01)
        else:
            raise ValueError(f"KEBR_TEST_FAULTS: unknown fault {fault!r}, one of {FAULTS}")
