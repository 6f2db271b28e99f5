"""JobPool: superqt workers on a pool of the owner's own; results, progress, cancel, shutdown joins."""

from __future__ import annotations

import threading
import time

import pytest
from PySide6.QtWidgets import QApplication

from deeplab_studio.gui.workers.background_jobs import JobPool


def _count(task, n: int, gate: threading.Event | None = None) -> str:
    for i in range(n):
        if task.cancelled():
            return f"stopped at {i}"
        task.report(i)
        if gate is not None:
            gate.wait(5)
        time.sleep(0.002)
    return "done"


@pytest.fixture
def pool(qtbot):
    p = JobPool()
    yield p
    assert p.shutdown(5000)


def test_results_and_progress_arrive_in_order(qtbot, pool) -> None:
    got = []
    pool.start(_count, 4, on_result=got.append, on_progress=got.append)
    qtbot.waitUntil(lambda: "done" in got, timeout=5000)
    assert got == [0, 1, 2, 3, "done"]
    qtbot.waitUntil(lambda: not pool.jobs())


def test_errors_reach_on_error(qtbot, pool) -> None:
    def fail(task):
        raise ValueError("broken")

    errors = []
    pool.start(fail, on_error=errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=5000)
    assert [str(e) for e in errors] == ["broken"]


def test_cancel_still_reports_the_result(qtbot, pool) -> None:
    gate, got = threading.Event(), []
    worker = pool.start(_count, 1000, gate, on_result=got.append)
    qtbot.waitUntil(lambda: worker.is_running, timeout=5000)
    worker.cancel()
    gate.set()
    qtbot.waitUntil(lambda: bool(got), timeout=5000)
    assert got[0].startswith("stopped at")


def test_shutdown_aborts_joins_and_reports_nothing(qtbot) -> None:
    pool = JobPool(max_threads=2)
    gate, got = threading.Event(), []
    workers = [pool.start(_count, 10_000, gate, on_result=got.append) for _ in range(3)]  # one waits its turn
    qtbot.waitUntil(lambda: sum(w.is_running for w in workers) == 2, timeout=5000)
    gate.set()
    assert pool.shutdown(5000)
    assert all(w.ended for w in workers) and not pool.jobs()
    QApplication.processEvents()  # anything still posted is delivered now: nothing was reported after shutdown
    assert got == []
    assert pool.start(_count, 1) is None  # closed: nothing starts any more
