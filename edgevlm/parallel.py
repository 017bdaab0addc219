"""Independent tasks on Ray when it is installed, else one by one in this process.

Ray (PyPI ``ray``, the optional extra ``edgevlm[ray]``) is started locally with
this machine's cores (``address=None``), or joins a cluster (``"auto"``,
``"ray://host:10001"``).  Each task asks for one CPU, so a local Ray runs as
many tasks at once as it has cores.  Without Ray, or with ``workers=0``, the
same tasks run serially here and give the same results in task order.

Workers run the installed edgevlm; on a cluster every node needs it (and the
paths a task writes must be on a file system the driver can read).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from dataclasses import dataclass

from edgevlm.errors import InputError

RAY_FIX = "install it with `pip install 'edgevlm[ray]'`, or leave --ray-address out to run here one task at a time"


def ray_available() -> tuple[bool, str]:
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        return False, f"ray is not installed ({exc})"
    return True, ""


@dataclass
class Engine:
    """Where tasks run: ``kind`` "ray" (with ``workers`` CPUs) or "serial"; ``owned``: started here, so stop() ends it."""

    kind: str
    workers: int
    address: str | None = None
    owned: bool = False

    def describe(self) -> str:
        if self.kind == "serial":
            return "serial (in this process, one task at a time)"
        where = f"cluster {self.address}" if self.address else "local Ray"
        return f"{where} with {self.workers} CPUs"


def start(address: str | None = None, workers: int | None = None, want_ray: bool | None = None) -> Engine:
    """An Engine: Ray if ``want_ray`` (None: if installed), local with ``workers`` CPUs (default all cores) or at ``address``.

    ``workers == 0`` or Ray missing (and not asked for) gives the serial engine.  Asking for a cluster
    (``address``) or ``want_ray=True`` without Ray installed is an InputError.
    """
    if workers is not None and workers < 0:
        raise InputError(f"--workers must be >= 0, got {workers}", "pass e.g. --workers 2 (0: run here, one at a time)")
    ok, why = ray_available()
    if address and not ok:
        raise InputError(f"--ray-address {address} needs Ray, and {why}", RAY_FIX)
    if want_ray and not ok:
        raise InputError(f"Ray was asked for, and {why}", RAY_FIX)
    if not ok or workers == 0 or want_ray is False:
        return Engine("serial", 1)
    import ray

    owned = not ray.is_initialized()  # inside a Ray task (a sweep point) Ray is already up: use it, leave it
    if owned:
        kwargs = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
        main = threading.current_thread() is threading.main_thread()
        before = signal.getsignal(signal.SIGTERM) if main else None
        if address:
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise InputError(f"cannot join the Ray cluster at {address}: {exc}",
                                 "start it with `ray start --head` or pass its ray://host:10001 address") from None
        else:
            ray.init(num_cpus=workers or os.cpu_count() or 1, **kwargs)
        # ray.init installs its own SIGTERM handler (exit + shutdown); a caller's own (compile's: remove the
        # temporary build directory) must stay in force.
        if main and before not in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, before)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return Engine("ray", cpus, address, owned)


def stop(engine: Engine) -> None:
    if engine.kind == "ray" and engine.owned:
        import ray

        ray.shutdown()


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def session(address: str | None = None, workers: int | None = None):
    """``start`` .. ``stop`` for a command: SIGTERM, like Ctrl-C, ends the block through ``stop``, so a
    killed sweep leaves no Ray processes behind (Ray's own SIGTERM handler exits without stopping the
    local cluster it started: raylet, gcs_server and the workers lived on)."""
    engine = start(address, workers)
    main = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        yield engine
    finally:
        if main:
            signal.signal(signal.SIGTERM, before)
        stop(engine)


def as_completed(engine: Engine, fn, arg_list: list[tuple], crashed=None):
    """Yield ``(i, fn(*arg_list[i]))`` as each task finishes (serially: in order).

    A task's exception is raised here as itself (Ray wraps it in a class that is also the original one).
    A Ray worker that died under a task (killed, out of memory) yields ``(i, crashed(i, error))`` when
    ``crashed`` is given, so the other tasks go on; without it the error is raised.
    """
    if engine.kind == "serial":
        for i, args in enumerate(arg_list):
            yield i, fn(*args)
        return
    import ray

    remote = ray.remote(num_cpus=1, max_retries=0)(fn)
    pending = {remote.remote(*args): i for i, args in enumerate(arg_list)}
    while pending:
        # A timeout, so that signals (handled between Python bytecodes) are seen while tasks run.
        done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in done:
            i = pending.pop(ref)
            try:
                value = ray.get(ref)
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
                if crashed is None:
                    raise
                value = crashed(i, exc)
            yield i, value
