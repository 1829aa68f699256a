"""Turn findings into splats: the text lockdep would print, in its layout.

Every function here only formats; the checks in :mod:`pylockdep._checks` decide.  Sites print as
``function+file:line`` where the kernel prints ``symbol+offset/length``; threads as ``name/pid``
(the pid a program gave the thread with :func:`pylockdep.identify_thread`, else its ident).

The layout is that of the validator's *era* (``v.era``): ``"modern"`` is today's lockdep; ``"3.4"``
and ``"3.10"`` are the 3.x kernels: bracketed titles, six usage characters and no wait types,
``[<address>] symbol`` frames (``[<file:line>] function`` here), and the dump line of 3.4
(``Pid: N, comm: C``) or of 3.10 (``CPU: N PID: N Comm: C``).  Lines pylockdep adds to the
kernel's start with ``pylockdep:``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._classes import USAGE_NAMES, LockClass, made_at, usage_string
from ._frames import Site, Stack, capture_stack, format_file_line, format_site, format_stack, split_at_entry
from ._graph import PathStep
from ._held import H_CLASS, H_LOCK, H_READ, HeldLock, held_site
from ._locktypes import effective_wait
from ._task import Task
from ._version import __version__

if TYPE_CHECKING:
    from ._instances import InstanceEdge
    from ._validator import Validator

VERSION = f"pylockdep {__version__}"
SCENARIO_CPU1 = " " * 31


# The title line of each report kind, in the kernel's wording; ``{fields}`` are filled in by
# :func:`title`.  A report's title is made from its kind here, never read back from a splat.
TITLES: dict[str, str] = {
    "circular": "WARNING: possible circular locking dependency detected",
    "recursive": "WARNING: possible recursive locking detected",
    "invalid_wait_context": "[ BUG: Invalid wait context ]",
    "sleep_in_atomic": "BUG: sleeping function called from invalid context at {site}",
    "inconsistent_lock_state": "WARNING: inconsistent lock state",
    "irq_inversion": "WARNING: possible irq lock inversion dependency detected",
    "irq_unsafe_order": "WARNING: {state}-safe -> {state}-unsafe lock order detected",
    "bad_unlock_balance": "WARNING: bad unlock balance detected!",
    "suspicious_rcu_usage": "WARNING: suspicious RCU usage",
    "assert_held": "WARNING: lockdep_assert_held() failed",
    "lock_held_at_exit": "WARNING: {comm} still has locks held!",
    "context_imbalance": "WARNING: {call}",
    "limit_exceeded": "{message}",
    "scheduling_while_atomic": "BUG: scheduling while atomic: {comm}/0x{count:08x}",
    "loop_blocked": "BUG: {comm} blocks its own event loop's thread {how}",
    "hung_task": "INFO: task {comm} blocked for ever",
}


# How the 3.x kernels titled the reports they had (the rest kept today's wording).
TITLES_3X: dict[str, str] = {
    "circular": "[ INFO: possible circular locking dependency detected ]",
    "recursive": "[ INFO: possible recursive locking detected ]",
    "inconsistent_lock_state": "[ INFO: inconsistent lock state ]",
    "irq_inversion": "[ INFO: possible irq lock inversion dependency detected ]",
    "irq_unsafe_order": "[ INFO: {state}-safe -> {state}-unsafe lock order detected ]",
    "bad_unlock_balance": "[ BUG: bad unlock balance detected! ]",
    "suspicious_rcu_usage": "[ INFO: suspicious RCU usage. ]",
    "lock_held_at_exit": "[ BUG: {comm} still has locks held! ]",
}


# Report once (the validator's ``report_once``): the kinds after which the kernel's lockdep turns
# itself off (``debug_locks_off()``), and the kinds still printed once it is off (the scheduler's,
# which show ``INFO: lockdep is turned off.`` instead of the held locks).
LOCKDEP_OFF_AFTER = frozenset(TITLES) - {"sleep_in_atomic", "suspicious_rcu_usage", "assert_held", "hung_task"}
PRINTED_WHEN_LOCKDEP_OFF = frozenset({"sleep_in_atomic", "scheduling_while_atomic", "hung_task"})
_THREAD_START = {"3.4": "kernel_thread_helper", "3.10": "ret_from_fork", "modern": "ret_from_fork"}
PYTHON_FRAMES = "pylockdep: Python frames below the task's entry:"


def title(kind: str, era: str = "modern", **fields: object) -> str:
    """The title line of a report of ``kind`` (a key of :data:`TITLES`) with its ``fields``, as the
    kernels of ``era`` printed it."""
    table = TITLES_3X if era != "modern" and kind in TITLES_3X else TITLES
    return table[kind].format(**fields)


def wait_suffix(v: Validator, cls: LockClass) -> str:
    """``-{outer:inner}`` with the wait values the validator's configuration uses (none before 5.7)."""
    if v.era != "modern":
        return ""
    nesting = v.nesting
    return f"-{{{effective_wait(cls.ltype.outer, nesting)}:{effective_wait(cls.ltype.inner, nesting)}}}"


def lname(v: Validator, cls: LockClass) -> str:
    """`` (name){usage}-{o:i}``: a class without instance or site (3.x: six usage characters, the
    reclaim-fs pair not tracked, and no wait types)."""
    usage = usage_string(cls.usage) + ("" if v.era == "modern" else "..")
    return f" ({cls.name}){{{usage}}}{wait_suffix(v, cls)}"


def hline(v: Validator, cls: LockClass, lock: object, site: Site | None) -> str:
    """A held-lock line: instance address, class, usage, wait types and where it was taken (3.x:
    no instance address, the site as an instruction pointer); then, for a lock that
    :func:`pylockdep.set_class` moved to a named class, where the lock was made."""
    made = made_at(lock)
    made_part = f", made at {format_file_line(made)}" if made is not None else ""
    if v.era != "modern":
        return f"{lname(v, cls)}, at: {ip_sym(v, site)}{made_part}"
    return f"{id(lock):016x}{lname(v, cls)}, at: {format_site(site)}{made_part}"


def held_lines(v: Validator, t: Task) -> list[str]:
    """The task's held locks, oldest first, or the kernel's 'no locks held' line; once lockdep has
    turned itself off (report once), the line saying so instead."""
    if not v.debug_locks:
        return ["INFO: lockdep is turned off."]
    if not t.held:
        return [f"no locks held by {t.comm}."]
    n = len(t.held)
    lines = [f"{n} lock{'s' if n > 1 else ''} held by {t.comm}:"]
    for i, entry in enumerate(t.held):
        lines.append(f" #{i}: {hline(v, entry[H_CLASS], entry[H_LOCK], held_site(entry))}")
    return lines


def banner(v: Validator, title: str, width: int) -> list[str]:
    """Empty line, rule, title, identity line (this pylockdep, Python, taint), rule (3.x: the rules
    as wide as the title)."""
    if v.era != "modern":
        width = len(title)
    return framed(title, f"{VERSION} Python {sys.version.split()[0]} {v.taint}", width)


def framed(title: str, identity: str, width: int) -> list[str]:
    """Empty line, rule ``width`` wide, title, identity line, rule: how a lockdep splat opens."""
    return ["", "=" * width, title, identity, "-" * width]


# What a circular splat says between the two locks and the chain of dependencies.
DEPENDS_ON_NEW = [
    "which lock already depends on the new lock.",
    "",
    "",
    "the existing dependency chain (in reverse order) is:",
]


def circular_scenario(first: str, nxt: str, parent: str | None, prev: str, last: str) -> list[str]:
    """The end of a circular splat: the chain ``nxt --> parent --> prev`` when the cycle has a
    ``parent`` class between the two locks (None: it has not), then the two-CPU scenario
    (``first``/``last`` are the lock functions used)."""
    lines = ["", "other info that might help us debug this:", ""]
    if parent is not None:
        lines += ["Chain exists of:", f"  {nxt} --> {parent} --> {prev}", ""]
    else:
        parent = nxt
    return lines + scenario_two_cpus(f"{first}({prev});", [f"lock({parent});", f"lock({prev});"], f"{last}({nxt});")


def backtrace(
    v: Validator, t: Task, stack: Stack | None = None, header: str = "stack backtrace:", functions: Iterable[str] = ()
) -> list[str]:
    """The dump that ends a splat: the task and its CPU, then its call trace, innermost first.

    ``functions`` are kernel functions pylockdep stands in for (``__might_sleep``), printed first.
    For a thread with an identity the trace ends at its entry function, followed for a kernel
    thread by ``kthread`` and the era's thread-start frame; the Python frames below the entry
    follow a ``pylockdep:`` separator.
    """
    if stack is None:
        stack = capture_stack()
    identity = t.identity
    task_part, python_part = split_at_entry(stack, identity.entry if identity is not None else None)
    tail = ["kthread", _THREAD_START[v.era]] if identity is not None and identity.kthread else []
    if v.era == "modern" and tail:
        tail.append("ret_from_fork_asm")
    lines = [header] if header else []
    if v.era == "3.4":
        lines.append(f"Pid: {t.pid}, comm: {t.name} {v.taint} {VERSION}")
    elif v.era == "3.10":
        lines.append(f"CPU: {t.cpu} PID: {t.pid} Comm: {t.name} {v.taint} {VERSION}")
    else:
        lines.append(f"CPU: {t.cpu} UID: 0 PID: {t.pid} Comm: {t.name} {v.taint} {VERSION}")
    lines.append("Call Trace:")
    if v.era == "modern":
        lines.append(" <TASK>")
        lines.extend(f" {fn}" for fn in functions)
        lines.extend(format_stack(task_part))
        lines.extend(f" {fn}" for fn in tail)
        lines.append(" </TASK>")
    else:
        lines.extend(f" [<pylockdep>] {fn}" for fn in functions)
        lines.extend(f" {ip_sym(v, site)}" for site in task_part)
        lines.extend(f" [<thread start>] {fn}" for fn in tail)
    if python_part:
        lines.append(PYTHON_FRAMES)
        lines.extend(format_stack(python_part) if v.era == "modern" else [f" {ip_sym(v, s)}" for s in python_part])
    return lines


def scenario_two_cpus(cpu0_first: str, cpu1: list[str], cpu0_last: str) -> list[str]:
    """The 'Possible unsafe locking scenario' table for two CPUs."""
    lines = [
        " Possible unsafe locking scenario:",
        "",
        "       CPU0                    CPU1",
        "       ----                    ----",
        f"  {cpu0_first}",
    ]
    lines.extend(SCENARIO_CPU1 + line for line in cpu1)
    lines.append(f"  {cpu0_last}")
    lines += ["", " *** DEADLOCK ***", ""]
    return lines


def taking_while_holding(
    v: Validator,
    t: Task,
    cls: LockClass,
    lock: object,
    site: Site,
    prev_entry: tuple,
    holding: str = "lock",
    held_cls: LockClass | None = None,
) -> list[str]:
    """The opening of a lock-conflict splat: the lock being taken and the held one it clashes with
    (shown as ``held_cls`` when given, else as the class it was taken as)."""
    return [
        f"{t.comm} is trying to acquire lock:",
        hline(v, cls, lock, site),
        "",
        f"but task is already holding {holding}:",
        hline(v, held_cls or prev_entry[H_CLASS], prev_entry[H_LOCK], held_site(prev_entry)),
        "",
    ]


def circular(
    v: Validator,
    t: Task,
    title: str,
    prev_entry: tuple,
    nxt_cls: LockClass,
    nxt_lock: object,
    nxt_read: int,
    nxt_site: Site,
    path: PathStep,
    sync: bool,
) -> list[str]:
    """'possible circular locking dependency detected': the new edge closes a strong cycle.

    ``path`` runs from the class being taken to the held class ``prev_entry`` along existing edges.
    """
    prev_cls = prev_entry[H_CLASS]
    steps = path.walk()
    lines = banner(v, title, 54)
    lines += taking_while_holding(v, t, nxt_cls, nxt_lock, nxt_site, prev_entry)
    lines += DEPENDS_ON_NEW
    current = capture_stack()
    for depth in range(len(steps) - 1, -1, -1):
        step = steps[depth]
        edge_stack = step.edge.stack if step.edge is not None else current
        lines += ["", f"-> #{depth}{lname(v, step.cls)}:"]
        if step.edge is not None and step.edge.origin:
            lines.append(f"       [in {step.edge.origin}, thread {step.edge.thread}]")
        elif step.edge is not None:
            lines.append(f"       [thread {step.edge.thread}]")
        elif v.origin:  # the new dependency, being made now
            lines.append(f"       [in {v.origin}, thread {t.comm}]")
        lines += format_stack(edge_stack, " " * 7)
    parent = steps[-2].cls if len(steps) >= 2 else nxt_cls
    first = "rlock" if prev_entry[H_READ] else "lock"
    # lock_sync() waits (SRCU) print "sync"; a wait for work touches its completion map with an
    # ordinary acquire and release, as the kernel's flush_work() does, so it prints "lock".
    last = "sync" if sync and not nxt_cls.ltype.pseudo else ("rlock" if nxt_read else "lock")
    via = parent.name if parent is not nxt_cls else None
    lines += circular_scenario(first, nxt_cls.name, via, prev_cls.name, last)
    lines += held_lines(v, t) + [""] + backtrace(v, t, current)
    return lines


def instance_cycle(
    v: Validator,
    t: Task,
    title: str,
    prev_entry: tuple,
    cls: LockClass,
    lock: object,
    site: Site,
    path: list[InstanceEdge],
    stack: Stack,
) -> list[str]:
    """'possible circular locking dependency detected' between instances of one Python lock class.

    ``lock`` is taken while ``prev_entry``'s instance is held; ``path`` is the existing chain of
    instance-order edges from ``lock`` back to it.
    """
    held = prev_entry[H_LOCK]
    lines = banner(v, title, 54)
    lines += taking_while_holding(v, t, cls, lock, site, prev_entry, "another instance of its class", cls)
    lines += [
        "and elsewhere the instance being taken was already held when the held one was taken:",
        "",
        "the existing instance order is:",
    ]
    for edge in path:
        where = f"in {edge.origin}, thread {edge.thread}" if edge.origin else f"thread {edge.thread}"
        lines += ["", f"-> {edge.prev.address:016x} then {edge.next.address:016x} ({cls.name}):", f"       [{where}]"]
        lines += format_stack(edge.stack, " " * 7)
    x, y = f"{cls.name}#{id(held):x}", f"{cls.name}#{id(lock):x}"
    lines += ["", "other info that might help us debug this:", ""]
    lines += scenario_two_cpus(f"lock({x});", [f"lock({y});", f"lock({x});"], f"lock({y});")
    lines += held_lines(v, t) + [""] + backtrace(v, t, stack)
    return lines


def recursive(
    v: Validator, t: Task, title: str, prev_entry: tuple, nxt_cls: LockClass, nxt_lock: object, nxt_site: Site
) -> list[str]:
    """'possible recursive locking detected': a class is taken while already held."""
    prev_cls = prev_entry[H_CLASS]
    lines = banner(v, title, 44)
    lines += taking_while_holding(v, t, nxt_cls, nxt_lock, nxt_site, prev_entry)
    lines += [
        "other info that might help us debug this:",
        " Possible unsafe locking scenario:",
        "",
        "       CPU0",
        "       ----",
        f"  lock({prev_cls.name});",
        f"  lock({nxt_cls.name});",
        "",
        " *** DEADLOCK ***",
        "",
        " May be due to missing lock nesting notation",
        "",
    ]
    return lines + held_lines(v, t) + [""] + backtrace(v, t)


def invalid_wait_context(
    v: Validator, t: Task, title: str, cls: LockClass, lock: object, site: Site, context: int
) -> list[str]:
    """'[ BUG: Invalid wait context ]': a lock that may wait longer than its context allows."""
    lines = banner(v, title, 29)
    lines += [
        f"{t.comm} is trying to lock:",
        hline(v, cls, lock, site),
        "other info that might help us debug this:",
        f"context-{{{context}:{context}}}",
    ]
    return lines + held_lines(v, t) + backtrace(v, t)


def sleep_in_atomic(
    v: Validator,
    t: Task,
    title: str,
    site: Site,
    preempt_count: int,
    rcu_depth: int,
    expected_rcu: int,
    atomic_site: Site | None,
    functions: list[str],
    taking: LockClass | None = None,
) -> list[str]:
    """'BUG: sleeping function called from invalid context': the scheduler's might_sleep() check.

    ``preempt_count`` is in the kernel's units; a non-zero one also prints where the atomic
    section began (``atomic_site``).  ``taking`` is the lock being taken, which pylockdep names on
    a line of its own (the kernel does not).  The 3.x layout has neither ``non_block`` nor the
    count and RCU lines, and prints the preemption site on the same line.
    """
    lines = [title]
    if v.era == "modern":
        lines += [
            f"in_atomic(): {int(preempt_count != 0)}, irqs_disabled(): {int(t.irqs_off)}, non_block: 0, "
            f"pid: {t.pid}, name: {t.name}",
            f"preempt_count: {preempt_count:x}, expected: 0",
            f"RCU nest depth: {rcu_depth}, expected: {expected_rcu}",
        ]
    else:
        lines.append(
            f"in_atomic(): {int(preempt_count != 0)}, irqs_disabled(): {int(t.irqs_off)}, pid: {t.pid}, name: {t.name}"
        )
    if taking is not None:
        lines.append(f"pylockdep: the lock being taken is {taking.name}, at {format_site(site)}")
    lines += held_lines(v, t)
    if t.irqs_off:
        lines += irq_stamps(v, t)
    if preempt_count:
        if v.era == "modern":
            lines += ["Preemption disabled at:", ip_sym(v, atomic_site)]
        else:
            lines.append(f"Preemption disabled at:{ip_sym(v, atomic_site)}")
    return lines + backtrace(v, t, header="", functions=functions)


# What interrupts the code in the scenario of an inconsistent state of Python's own states (the
# kernel's print <Interrupt>), by state name.
_INTERRUPTS = {"SIGNAL": "  <Signal handler>", "GC": "  <Garbage collector: finalizer>"}


def inconsistent(
    v: Validator,
    t: Task,
    title: str,
    cls: LockClass,
    lock: object,
    site: Site,
    old_name: str,
    new_name: str,
    old_stack: Stack,
    ctx_flags: str,
) -> list[str]:
    """'inconsistent lock state': one class both irq-safe and irq-unsafe."""
    interrupt = next((line for state, line in _INTERRUPTS.items() if state in new_name), "  <Interrupt>")
    lines = banner(v, title, 32)
    lines += [
        f"inconsistent {{{old_name}}} -> {{{new_name}}} usage.",
        f"{t.comm} {ctx_flags} takes:",
        hline(v, cls, lock, site),
        f"{{{old_name}}} state was registered at:",
    ]
    lines += format_stack(old_stack, "  ")
    lines += irq_stamps(v, t)
    lines += [
        "",
        "other info that might help us debug this:",
        " Possible unsafe locking scenario:",
        "",
        "       CPU0",
        "       ----",
        f"  lock({cls.name});",
        interrupt,
        f"    lock({cls.name});",
        "",
        " *** DEADLOCK ***",
        "",
    ]
    return lines + held_lines(v, t) + [""] + backtrace(v, t)


def ip_sym(v: Validator, site: Site | None) -> str:
    """``[<address>] symbol`` for a code site, as the kernel prints an instruction pointer (0 when
    unknown); in the 3.x layout the address is the site's Python location: ``[<file:line>] function``."""
    if v.era != "modern":
        if site is None:
            return "[<          (null)>]           (null)"
        return f"[<{format_file_line(site)}>] {site[0].co_qualname}"
    if site is None:
        return "[<0000000000000000>] 0x0"
    return f"[<{id(site[0]):016x}>] {format_site(site)}"


def irq_stamps(v: Validator, t: Task) -> list[str]:
    """The irq event stamps: when (event number) and where the thread last turned hard and soft irqs on and off."""
    trace = t.irqtrace
    return [
        f"irq event stamp: {trace.events}",
        f"hardirqs last  enabled at ({trace.hardirq_enable_event}): {ip_sym(v, trace.hardirq_enable_site)}",
        f"hardirqs last disabled at ({trace.hardirq_disable_event}): {ip_sym(v, trace.hardirq_disable_site)}",
        f"softirqs last  enabled at ({trace.softirq_enable_event}): {ip_sym(v, trace.softirq_enable_site)}",
        f"softirqs last disabled at ({trace.softirq_disable_event}): {ip_sym(v, trace.softirq_disable_site)}",
    ]


def irq_scenario(safe: LockClass, middle: LockClass, unsafe: LockClass, state: str) -> list[str]:
    """The interrupt scenario shared by the inversion and safe->unsafe reports.  For Python's
    SIGNAL state CPU0 is the main thread and its interrupt a signal handler; CPU1, another
    thread, has no interrupts to turn off."""
    lines = []
    if middle is not unsafe:
        lines += ["Chain exists of:", f"  {safe.name} --> {middle.name} --> {unsafe.name}", ""]
    python = state.split("-")[0] in _INTERRUPTS
    lines += [
        " Possible interrupt unsafe locking scenario:",
        "",
        "       CPU0                    CPU1",
        "       ----                    ----",
        f"  lock({unsafe.name});",
    ]
    if not python:
        lines.append(SCENARIO_CPU1 + "local_irq_disable();")
    lines += [
        SCENARIO_CPU1 + f"lock({safe.name});",
        SCENARIO_CPU1 + f"lock({middle.name});",
        _INTERRUPTS[state.split("-")[0]] if python else "  <Interrupt>",
        f"    lock({safe.name});",
        "",
        " *** DEADLOCK ***",
        "",
    ]
    return lines


def _class_header(v: Validator, cls: LockClass, depth: int) -> list[str]:
    """One class of a printed dependency path: its usage bits, each with where it was first set, and its key."""
    pad = " " * depth
    lines = [f"{pad}->{lname(v, cls)} {{"]
    for bit in sorted(cls.usage_stacks):
        name = USAGE_NAMES[bit]
        lines.append(f"{pad}   {name} at:")
        # The kernel indents these stacks by the length of what it printed before them.
        lines += format_stack(cls.usage_stacks[bit], " " * (2 * depth + len(name) + 8))
    key = f"[<{id(cls.key):016x}>] {format_site(cls.key.site)}"
    return lines + [f"{pad} }}", f"{pad} ... key      at: {key}"]


def dependencies(v: Validator, path: PathStep, start_stack: Stack) -> list[str]:
    """The path a search found, from the class it found back to the one it started from.

    Each class is indented by its distance from the start and followed by the stack of the
    dependency that reached it (``start_stack`` for the start itself), then an empty line.
    """
    steps = path.walk()
    lines = []
    for depth in range(len(steps) - 1, -1, -1):
        step = steps[depth]
        lines += _class_header(v, step.cls, depth)
        lines.append(f"{' ' * depth} ... acquired at:")
        lines += format_stack(step.edge.stack if step.edge is not None else start_stack, "   ")
        lines.append("")
    return lines


def dependencies_backwards(v: Validator, path: PathStep) -> list[str]:
    """A backward search's path, printed in dependency order: from the class found to the start.

    Each class after the first is followed by the stack of the dependency from the class before.
    """
    steps = path.walk()
    lines = []
    stack = None
    for depth in range(len(steps) - 1, -1, -1):
        step = steps[depth]
        lines += _class_header(v, step.cls, depth)
        if stack is not None:
            lines.append(f"{' ' * depth} ... acquired at:")
            lines += format_stack(stack, "   ")
            lines.append("")
        stack = step.edge.stack if step.edge is not None else None
    return lines


def irq_inversion(
    v: Validator,
    t: Task,
    title: str,
    cls: LockClass,
    lock: object,
    site: Site,
    state: str,
    forwards: bool,
    path: PathStep,
) -> list[str]:
    """'possible irq lock inversion dependency detected'.

    ``cls`` just gained a usage bit; ``path`` leads from it (forwards: to an irq-unsafe class;
    backwards: to an irq-safe one) along existing dependencies.
    """
    other = path.cls
    lines = banner(v, title, 56)
    lines += [f"{t.comm} just changed the state of lock:", hline(v, cls, lock, site)]
    if forwards:
        lines.append(f"but this lock took another, {state}-unsafe lock in the past:")
        safe, unsafe = cls, other
    else:
        lines.append(f"but this lock was taken by another, {state}-safe lock in the past:")
        safe, unsafe = other, cls
    # The scenario's middle lock is the one next to this lock on the path.
    middle = path.walk()[1].cls
    if middle is safe:
        middle = unsafe
    lines += [
        lname(v, other),
        "",
        "",
        "and interrupts could create inverse lock ordering between them.",
        "",
        "",
        "other info that might help us debug this:",
    ]
    lines += irq_scenario(safe, middle, unsafe, state)
    current = capture_stack()
    lines += held_lines(v, t) + ["", "the shortest dependencies between 2nd lock and 1st lock:"]
    lines += dependencies(v, path, current)
    return lines + [""] + backtrace(v, t, current)


def irq_unsafe_order(
    v: Validator,
    t: Task,
    title: str,
    prev_entry: tuple,
    nxt_cls: LockClass,
    nxt_lock: object,
    nxt_site: Site,
    state: str,
    safe_path: PathStep,
    unsafe_path: PathStep,
    safe_bit: int,
    unsafe_bit: int,
    ctx_flags: str,
) -> list[str]:
    """'<STATE>-safe -> <STATE>-unsafe lock order detected'.

    ``safe_path`` leads backwards from the held lock to an irq-safe class, ``unsafe_path``
    forwards from the lock being taken to an irq-unsafe one; the bits are the clashing pair.
    """
    prev_cls = prev_entry[H_CLASS]
    safe, unsafe = safe_path.cls, unsafe_path.cls
    lines = banner(v, title, 53)
    lines += [
        f"{t.comm} {ctx_flags} is trying to acquire:",
        hline(v, nxt_cls, nxt_lock, nxt_site),
        "",
        "and this task is already holding:",
        hline(v, prev_cls, prev_entry[H_LOCK], held_site(prev_entry)),
        "which would create a new lock dependency:",
        f"{lname(v, prev_cls)} ->{lname(v, nxt_cls)}",
        "",
        f"but this new dependency connects a {state}-irq-safe lock:",
        lname(v, safe),
        "",
        f"... which became {state}-irq-safe at:",
    ]
    lines += format_stack(safe.usage_stacks.get(safe_bit, ()), "  ")
    lines += [
        "",
        f"to a {state}-irq-unsafe lock:",
        lname(v, unsafe),
        "",
        f"... which became {state}-irq-unsafe at:",
        "...",
    ]
    lines += format_stack(unsafe.usage_stacks.get(unsafe_bit, ()), "  ")
    middle = prev_cls if safe is not prev_cls else nxt_cls
    lines += ["", "other info that might help us debug this:", ""]
    lines += irq_scenario(safe, middle, unsafe, state)
    lines += held_lines(v, t)
    lines += ["", f"the dependencies between {state}-irq-safe lock and the holding lock:"]
    lines += dependencies_backwards(v, safe_path)
    current = capture_stack()
    lines += ["", "the dependencies between the lock to be acquired", f" and {state}-irq-unsafe lock:"]
    lines += dependencies(v, unsafe_path, current)
    return lines + [""] + backtrace(v, t, current)


def bad_unlock_balance(v: Validator, t: Task, title: str, name: str, site: Site) -> list[str]:
    """'bad unlock balance detected!': a release of a lock this thread does not hold."""
    lines = banner(v, title, 37)
    lines += [
        f"{t.comm} is trying to release lock ({name}) at:",
        f"[<{id(site[0]):016x}>] {format_site(site)}",
        "but there are no more locks to release!",
        "",
        "other info that might help us debug this:",
    ]
    return lines + held_lines(v, t) + [""] + backtrace(v, t)


def suspicious_rcu(v: Validator, t: Task, title: str, site: Site, message: str, info: Iterable[str] = ()) -> list[str]:
    """'suspicious RCU usage': an RCU-protected access outside the read side that protects it.

    ``info`` lines go where the kernel puts its optional remarks, before ``rcu_scheduler_active``.
    """
    lines = banner(v, title, 29)
    lines += [f"{format_file_line(site)} {message}!", "", "other info that might help us debug this:", "", ""]
    lines += info
    lines.append(f"rcu_scheduler_active = 2, debug_locks = {int(not v.off)}")
    return lines + held_lines(v, t) + [""] + backtrace(v, t)


def assert_held(
    v: Validator, t: Task, title: str, cls: LockClass | None, name: str, site: Site, what: str
) -> list[str]:
    """'lockdep_assert_held() failed': a lock (or data it guards) used without holding it."""
    lines = banner(v, title, len(title))
    described = lname(v, cls) if cls is not None else f" ({name})"
    lines += [f"{t.comm} {what} without holding lock:", described, f"at: {format_site(site)}", ""]
    return lines + held_lines(v, t) + [""] + backtrace(v, t)


def locks_held_at_exit(v: Validator, t: Task, title: str) -> list[str]:
    """'<comm> still has locks held!': a thread ended holding locks."""
    lines = banner(v, title, 36)
    return lines + held_lines(v, t)


def limit_reached(v: Validator, t: Task, title: str, extra: list[str]) -> list[str]:
    """A capacity limit was reached (``title`` says which): validation stops rather than give wrong verdicts."""
    lines = [title, "turning off the locking correctness validator.", *extra]
    lines += held_lines(v, t) + ["INFO: lockdep is turned off."]
    return lines + backtrace(v, t, header="")


def context_imbalance(v: Validator, t: Task, title: str, detail: str, site: Site) -> list[str]:
    """A context call with nothing to undo, or not allowed where it is made (preempt_enable() without
    preempt_disable(), local_irq_enable() in a hardirq handler, ...): ``detail`` says what is wrong."""
    lines = banner(v, title, len(title))
    lines += [f"{t.comm} is calling it at:", ip_sym(v, site), detail, "", "other info that might help us debug this:"]
    return lines + held_lines(v, t) + [""] + backtrace(v, t)


def srcu_bad_index(v: Validator, t: Task, title: str, name: str, idx: object, site: Site) -> list[str]:
    """srcu_read_unlock() given an index that no read side of this thread holds."""
    lines = banner(v, title, 37)
    lines += [
        f"{t.comm} is trying to release lock ({name}) at:",
        f"[<{id(site[0]):016x}>] {format_site(site)}",
        f"but srcu_read_unlock() was given index {idx!r}, which no read side of this task holds!",
        "",
        "other info that might help us debug this:",
    ]
    return lines + held_lines(v, t) + [""] + backtrace(v, t)


def scheduling_while_atomic(v: Validator, t: Task, title: str, blocking: list[HeldLock], suspended: Stack) -> list[str]:
    """'BUG: scheduling while atomic': an asyncio task suspended holding locks that block its thread.

    The first of ``blocking`` is printed where the kernel prints where preemption was disabled,
    then where the task suspended (``suspended``, innermost first).
    """
    first = blocking[0]
    lines = [title]
    lines += held_lines(v, t)
    lines += [
        f"{first[H_CLASS].name} (a lock that blocks the loop's thread) taken at:",
        ip_sym(v, held_site(first)),
        f"{t.comm} suspended at:",
    ]
    lines += format_stack(suspended)
    return lines + backtrace(v, t, suspended, header="", functions=["__schedule_bug", "schedule"])


def hung_task(v: Validator, t: Task, title: str, stuck: list[tuple[str, Any]], site: Site) -> list[str]:
    """'blocked for ever': ``t``'s wait at ``site``, and the waits it stands behind (``stuck``:
    each thread's name and what it waits for, ``t``'s first), which no thread is left to end."""
    lines = banner(v, title, 54)
    lines.append(f"{t.comm} is waiting at {format_site(site)}, and these waits can never end:")
    lines += [f" {name} waits for {what.name!r}" for name, what in stuck]
    lines += ["no other thread is left that could let them end: the wait raises DeadlockError.", ""]
    return lines + held_lines(v, t) + [""] + backtrace(v, t)


def loop_blocked(v: Validator, t: Task, title: str, what: str, site: Site, timeout: float | None = None) -> list[str]:
    """'blocks its own event loop's thread for ever' (or 'until its wait times out', given the
    ``timeout``): a blocking wait, on the thread that runs an event loop, for ``what``, which only
    that loop can complete."""
    lines = banner(v, title, 54)
    lines += [
        f"{t.comm} is waiting at {format_site(site)} for:",
        f" {what}",
        "which only its own event loop can complete, and the loop's thread is the one waiting.",
    ]
    if timeout is not None:
        lines.append(f"The wait can only time out, after {timeout:g} s, with the loop stalled until then.")
    lines.append("")
    return lines + held_lines(v, t) + [""] + backtrace(v, t)
