"""Real programs, plain against under ``pylockdep run``: wall and CPU time, in alternation.

``python -m benchmarks.programs pool|queue|asyncio|tasks|threads [N]`` is the program itself: ``pool`` runs
N tiny tasks on a ``ThreadPoolExecutor`` (each ``Future`` makes a ``Condition``; the workers take
the queue's locks), ``queue`` passes N items from a producer thread to a consumer through a bounded
``queue.Queue``, ``asyncio`` the same between two tasks through an ``asyncio.Queue``, ``tasks`` runs
N/10 concurrent asyncio tasks of 40 steps each, ``threads`` starts and joins N/20 threads in
turn (a thread per request), each adding to a total under a ``threading.Lock``.  The last program
is CPython's own ``test.test_queue``.

:func:`measure` runs each program as ``python -m ...`` and as ``python -m pylockdep run -m ...``,
alternating the two ``rounds`` times, and reports the ratios of the minima and medians of wall
time and of CPU time (user + system, from the children's resource usage).
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from queue import Queue
from typing import Any

from ._timing import PYTHON, python_env

#: name -> (label, the module command line after ``-m``, goal on the wall ratio)
PROGRAMS: dict[str, tuple[str, Sequence[str], float | None]] = {
    "pool": ("ThreadPoolExecutor, {n} tiny tasks", ("benchmarks.programs", "pool", "{n}"), 1.3),
    "queue": ("queue.Queue producer/consumer, {n} items", ("benchmarks.programs", "queue", "{n}"), 2.0),
    "asyncio": (
        "asyncio.Queue producer/consumer with an asyncio.Lock, {n} items",
        ("benchmarks.programs", "asyncio", "{n}"),
        2.0,
    ),
    "tasks": (
        "asyncio, {n}/10 concurrent tasks of 40 steps, each taking an asyncio.Lock",
        ("benchmarks.programs", "tasks", "{n}"),
        None,
    ),
    "threads": (
        "a thread per request, {n}/20 threads started and joined in turn, each taking a Lock",
        ("benchmarks.programs", "threads", "{n}"),
        None,
    ),
    "test_queue": ("CPython's test.test_queue", ("test.test_queue",), None),
}
DEFAULT_SIZE = 100_000


def _tiny(i: int) -> int:
    return i + 1


def pool(n: int) -> None:
    """``n`` tiny tasks on a thread pool, each waited for."""
    with ThreadPoolExecutor() as executor:
        futures = [executor.submit(_tiny, i) for i in range(n)]
        assert sum(f.result() for f in futures) == n * (n + 1) // 2


def producer_consumer(n: int) -> None:
    """``n`` items from one thread to another through a ``Queue`` of 100."""
    q: Queue[int | None] = Queue(maxsize=100)
    got = []

    def consume() -> None:
        total = 0
        while (item := q.get()) is not None:
            total += item
        got.append(total)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(n):
        q.put(i)
    q.put(None)
    consumer.join()
    assert got == [n * (n - 1) // 2]


def asyncio_producer_consumer(n: int) -> None:
    """``n`` items from one task to another through an ``asyncio.Queue`` of 100; the consumer adds
    them up under an ``asyncio.Lock``."""
    import asyncio  # here: the threaded programs do not import it

    async def main() -> int:
        q: asyncio.Queue[int | None] = asyncio.Queue(maxsize=100)
        lock = asyncio.Lock()
        total = 0

        async def consume() -> None:
            nonlocal total
            while (item := await q.get()) is not None:
                async with lock:
                    total += item

        consumer = asyncio.create_task(consume())
        for i in range(n):
            await q.put(i)
        await q.put(None)
        await consumer
        return total

    assert asyncio.run(main()) == n * (n - 1) // 2


def asyncio_tasks(n: int) -> None:
    """``n // 10`` concurrent tasks of 40 steps each (39 ``asyncio.sleep(0)``), each adding to a
    total under one ``asyncio.Lock`` in its last: a server's task per request, in miniature."""
    import asyncio

    async def main() -> int:
        lock = asyncio.Lock()
        total = 0

        async def task(i: int) -> None:
            nonlocal total
            for _ in range(39):
                await asyncio.sleep(0)
            async with lock:
                total += i

        await asyncio.gather(*(task(i) for i in range(n // 10)))
        return total

    tasks = n // 10
    assert asyncio.run(main()) == tasks * (tasks - 1) // 2


def threads(n: int) -> None:
    """``n // 20`` threads, each started once the one before has been joined, adding its number
    to a total under one ``threading.Lock``: the start-up and end of a thread, in the main."""
    lock = threading.Lock()
    total = 0

    def handle(i: int) -> None:
        nonlocal total
        with lock:
            total += i

    count = n // 20
    for i in range(count):
        thread = threading.Thread(target=handle, args=(i,))
        thread.start()
        thread.join()
    assert total == count * (count - 1) // 2


def _run(argv: Sequence[str], pure: bool) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and exit status of one run of ``argv``."""
    # Not at the top: this module is also the program timed plain, which must not import pylockdep.
    from pylockdep.cli import REPORT_STATUS

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=python_env(pure), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode not in (0, REPORT_STATUS):
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr.decode()[-2000:]}")
    return wall, cpu, done.returncode


def measure(name: str, rounds: int, size: int, pure: bool) -> list[dict[str, Any]]:
    """Rows for program ``name``: the wall ratio and the CPU ratio under ``pylockdep run``."""
    label, module_argv, goal = PROGRAMS[name]
    module_argv = [a.format(n=size) for a in module_argv]
    plain = [PYTHON, "-m", *module_argv]
    validated = [PYTHON, "-m", "pylockdep", "run", "-m", *module_argv]
    samples: dict[str, list[tuple[float, float]]] = {"plain": [], "validated": []}
    statuses = set()
    for i in range(rounds):
        order = ("plain", "validated") if i % 2 == 0 else ("validated", "plain")
        for side in order:
            wall, cpu, status = _run(plain if side == "plain" else validated, pure)
            if side == "plain" and status:
                raise RuntimeError(f"{' '.join(plain)} failed on its own")
            if side == "validated":
                statuses.add(status)
            samples[side].append((wall, cpu))
    reported = " (pylockdep reported)" if statuses - {0} else ""
    rows = []
    for what, index, row_goal in (("wall", 0, goal), ("CPU", 1, None)):
        base = [s[index] for s in samples["plain"]]
        subj = [s[index] for s in samples["validated"]]
        rows.append(
            {
                "name": f"pylockdep run: {label.format(n=size)}, {what}",
                "group": "programs",
                "goal": row_goal,
                "figure": min(subj) / min(base),
                "median": statistics.median(subj) / statistics.median(base),
                "rounds": rounds,
                "path": "pure" if pure else "C",
                "note": f"{min(subj):.2f} s vs {min(base):.2f} s{reported}",
                "higher_is_better": False,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    which, n = args[0], int(args[1]) if len(args) > 1 else DEFAULT_SIZE
    programs = {
        "pool": pool,
        "queue": producer_consumer,
        "asyncio": asyncio_producer_consumer,
        "tasks": asyncio_tasks,
        "threads": threads,
    }
    programs[which](n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
