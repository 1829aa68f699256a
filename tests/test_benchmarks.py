"""The benchmark harness runs: ``python -m benchmarks --smoke`` prints a row for every measure.

Tiny sizes, no timing assertions: the figures of a smoke run mean nothing, only that every
benchmark still runs against the current code (on both paths where the C module is built).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks import micro, programs
from benchmarks.graph_scale import measure, measure_rounds

ROOT = Path(__file__).resolve().parent.parent


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows by measure name (the header and rule left out)."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] != "measure":
            rows[cells[0]] = cells
    return rows


def test_smoke_run_prints_every_measure():
    env = {k: v for k, v in os.environ.items() if k != "PYLOCKDEP_PURE_PYTHON"}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    rows = table_rows(out.stdout)
    expected = [m.name for m in micro.measures()]
    expected += [f"memory per {kind}" for kind in ("Mutex", "threading.Lock (instrumented)")]
    expected += ["8 threads vs 1, own Mutex each (vs plain's)"]
    expected += [f"pylockdep run: ThreadPoolExecutor, 200 tiny tasks, {what}" for what in ("wall", "CPU")]
    expected += [f"pylockdep run: queue.Queue producer/consumer, 200 items, {what}" for what in ("wall", "CPU")]
    expected += [
        f"pylockdep run: asyncio.Queue producer/consumer with an asyncio.Lock, 200 items, {what}"
        for what in ("wall", "CPU")
    ]
    expected += ["wait() on 50 done futures, s", "20 nested Mutexes released oldest first, s"]
    assert set(expected) <= set(rows), sorted(set(expected) - set(rows))
    assert any(name.startswith("new edge, 100 classes, 1000 edges") for name in rows)
    assert any(name.startswith("re-sorting edges") for name in rows)
    c_ran = ", paths C" in out.stdout.splitlines()[0]
    figure, goal, verdict = (2, 1, 9) if c_ran else (6, 5, 10)
    for name in expected:
        cells = rows[name]
        float(cells[figure])  # a figure for the path that ran
        assert cells[verdict] == "-" if cells[goal] == "-" else cells[verdict] in ("met", "MISSED"), cells


def test_the_harness_says_which_path_ran():
    # Python code of pylockdep that runs per operation is counted, so a section that misses the C
    # path shows it; a plain lock runs none.
    import threading

    plain = threading.Lock()
    assert micro.python_calls_per_op(micro.with_block(plain)) == 0
    mutex = __import__("pylockdep").Mutex("bench_test_path")
    assert micro.python_calls_per_op(micro.with_call(lambda: mutex.nested(1)), n=5) > 0


def test_graph_growth_counts_only_edges_that_re_sort():
    s = measure(classes=60, edges=600, seed=3)
    assert s.early_count > 0 and s.late_count > 0
    assert s.early_count <= 60 and s.late_count <= 60  # each window is a tenth of the edges


def test_graph_rounds_repeat_the_same_work():
    # Rounds differ only by the machine's disturbance: the same edges re-sort the order in each.
    m = measure_rounds(classes=60, edges=600, seed=3, rounds=3)
    assert len(m.rounds) == 3
    assert len({(s.early_count, s.late_count) for s in m.rounds}) == 1
    assert m.rounds[0].early_count == measure(classes=60, edges=600, seed=3).early_count
    assert min(m.growths) <= m.growth <= max(m.growths)


def test_programs_are_the_work_they_claim():
    programs.pool(50)
    programs.producer_consumer(50)
    programs.asyncio_producer_consumer(50)
    programs.asyncio_tasks(50)
    programs.threads(500)


def test_the_baselines_stay_plain_while_threading_is_instrumented():
    import _thread

    import pylockdep

    rlock_type = _thread.RLock  # instrumentation rebinds the name
    with pylockdep.instrument_threading():
        assert type(micro.plain_lock()) is _thread.LockType
        assert type(micro.plain_rlock()) is rlock_type
        assert type(micro.plain_condition()._lock) is rlock_type
        assert type(micro.PlainWrapper()._lock) is _thread.LockType


def test_the_baselines_run_no_code_of_pylockdep_while_threading_is_instrumented():
    # threading.RLock() calls threading._CRLock, which instrumentation rebinds to a stand-in that
    # makes CPython's lock for threading's own calls: plain, but at the stand-in's cost.
    import pylockdep

    called = []

    def profile(frame, event, arg):
        if event == "call":
            called.append(frame.f_code.co_filename)

    with pylockdep.instrument_threading():
        sys.setprofile(profile)
        try:
            micro.plain_lock()
            micro.plain_rlock()
            micro.plain_condition()
        finally:
            sys.setprofile(None)
    assert called and not [name for name in called if name.startswith(os.path.dirname(pylockdep.__file__))]


def test_a_row_can_be_judged_on_its_median():
    from benchmarks.run import _verdict

    row = {"name": "growth", "goal": 1.5, "figure": 1.2, "median": 1.6, "higher_is_better": False}
    assert _verdict(row) == "met"
    assert _verdict(dict(row, judged_on="median")) == "MISSED"
