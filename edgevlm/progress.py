"""Progress of the long steps inside a compile (calibration, verification, ...): items done and an ETA.

The loops that take minutes on a real-size checkpoint (a calibration pass
over the samples, a verification over its samples, an evaluation) iterate
through :func:`track`; the compile pipeline installs the reporter that
shows it (a bar in a terminal, lines in a log or pipe).  Without a reporter
``track`` is a plain iteration, so library code can use it unconditionally.
"""
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator

# reporter(label, done, total, elapsed_s): called at the start (done=0) and after each item
Reporter = Callable[[str, int, int, float], None]
_reporters: list[Reporter] = []


@contextlib.contextmanager
def reporting(reporter: Reporter):
    """Send the progress of every :func:`track` inside the ``with`` block to ``reporter``."""
    _reporters.append(reporter)
    try:
        yield
    finally:
        _reporters.remove(reporter)


def track(items: Iterable, label: str, total: int | None = None) -> Iterator:
    """Yield ``items``, reporting ``label`` with items done of ``total`` (default ``len(items)``) after each."""
    if not _reporters:
        yield from items
        return
    report = _reporters[-1]
    total = len(items) if total is None else total
    t0 = time.perf_counter()
    report(label, 0, total, 0.0)
    for done, item in enumerate(items, 1):
        yield item
        report(label, done, total, time.perf_counter() - t0)


def report(label: str, done: int, total: int, elapsed_s: float) -> None:
    """Report progress of a step that is not a loop here (e.g. a child process writing one file per item)."""
    if _reporters:
        _reporters[-1](label, done, total, elapsed_s)


def eta_s(done: int, total: int, elapsed_s: float) -> float | None:
    """Seconds left at the mean time per item so far (None before the first item is done)."""
    if done <= 0 or total <= done:
        return None if done <= 0 else 0.0
    return elapsed_s / done * (total - done)


def fmt_s(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
