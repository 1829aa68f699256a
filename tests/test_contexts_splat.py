"""The irq-safety, wait-context and might_sleep splats, line by line, against the kernel's layouts.

Addresses, thread idents, line numbers and the Python version vary, so texts are normalised first;
stacks run into pytest's own frames, so each test compares the blocks around them.
"""

from __future__ import annotations

import re

import pylockdep

ME = "MainThread/PID"


def _normalise(text: str) -> list[str]:
    text = re.sub(r"\b[0-9a-f]{16}\b", "ADDR", text)
    text = re.sub(r"MainThread/\d+", ME, text)
    text = re.sub(r"(PID|pid): \d+", r"\1: PID", text)
    text = re.sub(r"Python \S+ ", "Python X ", text)
    text = re.sub(r"(test_contexts_splat\.py):\d+", r"\1:N", text)
    return text.splitlines()


def _assert_block(lines: list[str], block: list[str]) -> int:
    """``block`` appears in ``lines`` as consecutive lines; returns where it ends."""
    for i in range(len(lines) - len(block) + 1):
        if lines[i : i + len(block)] == block:
            return i + len(block)
    raise AssertionError("block not found:\n" + "\n".join(block) + "\n--- in ---\n" + "\n".join(lines))


def _site(function: str) -> str:
    return f"{function}+test_contexts_splat.py:N"


def test_inconsistent_lock_state_layout() -> None:
    """Section 2.5: a lock taken in a hard irq, later with irqs on."""
    a = pylockdep.SpinLock("spin_A")
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.hardirq(threaded=True), a:
            pass
        with a:
            pass
    (report,) = v.reports
    lines = _normalise(report.text)
    here = _site("test_inconsistent_lock_state_layout")
    end = _assert_block(
        lines,
        [
            "================================",
            "WARNING: inconsistent lock state",
            "pylockdep 0.1.0 Python X Not tainted",
            "--------------------------------",
            "inconsistent {IN-HARDIRQ-W} -> {HARDIRQ-ON-W} usage.",
            f"{ME} [HC0[0]:SC0[0]:HE1:SE1] takes:",
            f"ADDR (spin_A){{?...}}-{{3:3}}, at: {here}",
            "{IN-HARDIRQ-W} state was registered at:",
            f"  {here}",
        ],
    )
    end = (
        _assert_block(
            lines[end:],
            [
                "irq event stamp: 2",
                f"hardirqs last  enabled at (2): [<ADDR>] {here}",
                f"hardirqs last disabled at (1): [<ADDR>] {here}",
                "softirqs last  enabled at (0): [<ADDR>] 0x0",
                "softirqs last disabled at (0): [<ADDR>] 0x0",
                "",
                "other info that might help us debug this:",
                " Possible unsafe locking scenario:",
                "",
                "       CPU0",
                "       ----",
                "  lock(spin_A);",
                "  <Interrupt>",
                "    lock(spin_A);",
                "",
                " *** DEADLOCK ***",
                "",
                f"no locks held by {ME}.",
                "",
                "stack backtrace:",
            ],
        )
        + end
    )
    assert lines[0] == "================================"
    assert report.title == "WARNING: inconsistent lock state"


def test_inconsistent_state_found_when_irqs_are_enabled_prints_irqs_still_off() -> None:
    """Re-enabling irqs marks the held locks before the irq state flips, so the flags say HE0; a
    hard irq's own flags are HC1 with softirqs still enabled."""
    a = pylockdep.SpinLock("spin_A")
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.hardirq(threaded=True), a:
            pass
        pylockdep.local_irq_disable()
        a.lock()
        pylockdep.local_irq_enable()
        a.unlock()
    with pylockdep.validate(raise_on_report=False) as w:
        with a:
            pass
        with pylockdep.hardirq(threaded=True), a:
            pass
    lines = _normalise(v.reports[0].text)
    assert f"{ME} [HC0[0]:SC0[0]:HE0:SE1] takes:" in lines
    assert "1 lock held by MainThread/PID:" in lines
    lines = _normalise(w.reports[0].text)
    _assert_block(
        lines, ["inconsistent {HARDIRQ-ON-W} -> {IN-HARDIRQ-W} usage.", f"{ME} [HC1[1]:SC0[0]:HE0:SE1] takes:"]
    )


def test_softirq_flags_count_served_softirqs_and_disabled_bottom_halves() -> None:
    """``SC1[1]`` in a softirq; each local_bh_disable() adds two to the count, and SE0."""
    a = pylockdep.SpinLock("spin_A")
    with pylockdep.validate(raise_on_report=False) as v:
        with a:
            pass
        with pylockdep.softirq():
            pylockdep.local_bh_disable()
            with a:
                pass
            pylockdep.local_bh_enable()
    lines = _normalise(v.reports[0].text)
    _assert_block(
        lines, ["inconsistent {SOFTIRQ-ON-W} -> {IN-SOFTIRQ-W} usage.", f"{ME} [HC0[0]:SC1[3]:HE1:SE0] takes:"]
    )


def test_irq_inversion_layout_with_chain() -> None:
    """Section 2.6: A -> B -> C with irqs off, C with irqs on, then A in a hard irq."""
    a, b, c = (pylockdep.SpinLock(f"spin_{x}") for x in "ABC")
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.irqs_disabled(), a, b:
            pass
        with pylockdep.irqs_disabled(), b, c:
            pass
        with c:
            pass
        with pylockdep.hardirq(threaded=True), a:
            pass
    (report,) = v.reports
    assert (report.kind, report.classes) == ("irq_inversion", ("spin_A", "spin_B", "spin_C"))
    lines = _normalise(report.text)
    here = _site("test_irq_inversion_layout_with_chain")
    end = _assert_block(
        lines,
        [
            "========================================================",
            "WARNING: possible irq lock inversion dependency detected",
            "pylockdep 0.1.0 Python X Not tainted",
            "--------------------------------------------------------",
            f"{ME} just changed the state of lock:",
            f"ADDR (spin_A){{-...}}-{{3:3}}, at: {here}",
            "but this lock took another, HARDIRQ-unsafe lock in the past:",
            " (spin_C){+.+.}-{3:3}",
            "",
            "",
            "and interrupts could create inverse lock ordering between them.",
            "",
            "",
            "other info that might help us debug this:",
            "Chain exists of:",
            "  spin_A --> spin_B --> spin_C",
            "",
            " Possible interrupt unsafe locking scenario:",
            "",
            "       CPU0                    CPU1",
            "       ----                    ----",
            "  lock(spin_C);",
            "                               local_irq_disable();",
            "                               lock(spin_A);",
            "                               lock(spin_B);",
            "  <Interrupt>",
            "    lock(spin_A);",
            "",
            " *** DEADLOCK ***",
            "",
            f"no locks held by {ME}.",  # the lock being taken is not held yet
            "",
            "the shortest dependencies between 2nd lock and 1st lock:",
            # the class found first, indented by its distance, its usage stacks indented past the label
            "  -> (spin_C){+.+.}-{3:3} {",
            "     HARDIRQ-ON-W at:",
            f"                        {here}",
        ],
    )
    end = (
        _assert_block(
            lines[end:],
            [
                "   }",
                "   ... key      at: [<ADDR>] "
                + here.replace(
                    "test_irq_inversion_layout_with_chain", "test_irq_inversion_layout_with_chain.<locals>.<genexpr>"
                ),
                "   ... acquired at:",
                f"   {here}",
            ],
        )
        + end
    )
    end = (
        _assert_block(
            lines[end:], ["", " -> (spin_B){....}-{3:3} {", "    INITIAL USE at:", f"                     {here}"]
        )
        + end
    )
    end = (
        _assert_block(
            lines[end:], ["", "-> (spin_A){-...}-{3:3} {", "   IN-HARDIRQ-W at:", f"                    {here}"]
        )
        + end
    )
    _assert_block(lines[end:], [" ... acquired at:", f"   {here}"])
    backtrace = lines.index("stack backtrace:")
    assert lines[backtrace - 2 : backtrace] == ["", ""]  # the path's closing empty line, then the dump's


def test_irq_inversion_backwards_layout() -> None:
    """The other direction: A (held) -> B with irqs off, A irq-safe, then B taken with irqs on."""
    a, b = (pylockdep.SpinLock(f"spin_{x}") for x in "AB")
    with pylockdep.validate(raise_on_report=False) as v:
        with pylockdep.irqs_disabled(), a, b:
            pass
        with pylockdep.hardirq(threaded=True), a:
            pass
        with b:
            pass
    (report,) = v.reports
    assert (report.kind, report.classes) == ("irq_inversion", ("spin_B", "spin_A"))
    lines = _normalise(report.text)
    _assert_block(
        lines,
        [
            "but this lock was taken by another, HARDIRQ-safe lock in the past:",
            " (spin_A){-...}-{3:3}",
            "",
            "",
            "and interrupts could create inverse lock ordering between them.",
            "",
            "",
            "other info that might help us debug this:",
            " Possible interrupt unsafe locking scenario:",
            "",
            "       CPU0                    CPU1",
            "       ----                    ----",
            "  lock(spin_B);",
            "                               local_irq_disable();",
            "                               lock(spin_A);",
            "                               lock(spin_B);",
            "  <Interrupt>",
            "    lock(spin_A);",
        ],
    )
    _assert_block(lines, ["the shortest dependencies between 2nd lock and 1st lock:", " -> (spin_A){-...}-{3:3} {"])


def test_irq_unsafe_order_layout() -> None:
    """Section 2.7: B taken with irqs on, A in a hard irq, then A -> B with irqs off."""
    a, b = (pylockdep.SpinLock(f"spin_{x}") for x in "AB")
    with pylockdep.validate(raise_on_report=False) as v:
        with b:
            pass
        with pylockdep.hardirq(threaded=True), a:
            pass
        with pylockdep.irqs_disabled(), a, b:
            pass
    (report,) = v.reports
    assert (report.kind, report.classes) == ("irq_unsafe_order", ("spin_A", "spin_B"))
    assert report.title == "WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected"
    lines = _normalise(report.text)
    here = _site("test_irq_unsafe_order_layout")
    _assert_block(
        lines,
        [
            "=====================================================",
            "WARNING: HARDIRQ-safe -> HARDIRQ-unsafe lock order detected",
            "pylockdep 0.1.0 Python X Not tainted",
            "-----------------------------------------------------",
            f"{ME} [HC0[0]:SC0[0]:HE0:SE1] is trying to acquire:",
            f"ADDR (spin_B){{+.+.}}-{{3:3}}, at: {here}",
            "",
            "and this task is already holding:",
            f"ADDR (spin_A){{-...}}-{{3:3}}, at: {here}",
            "which would create a new lock dependency:",
            " (spin_A){-...}-{3:3} -> (spin_B){+.+.}-{3:3}",
            "",
            "but this new dependency connects a HARDIRQ-irq-safe lock:",
            " (spin_A){-...}-{3:3}",
            "",
            "... which became HARDIRQ-irq-safe at:",
            f"  {here}",
        ],
    )
    _assert_block(
        lines,
        [
            "to a HARDIRQ-irq-unsafe lock:",
            " (spin_B){+.+.}-{3:3}",
            "",
            "... which became HARDIRQ-irq-unsafe at:",
            "...",
            f"  {here}",
        ],
    )
    _assert_block(
        lines,
        [
            "other info that might help us debug this:",
            "",
            " Possible interrupt unsafe locking scenario:",
        ],
    )
    # The held lock is the safe class itself: it is printed alone, without a dependency.
    end = _assert_block(
        lines,
        [
            f" #0: ADDR (spin_A){{-...}}-{{3:3}}, at: {here}",
            "",
            "the dependencies between HARDIRQ-irq-safe lock and the holding lock:",
            "-> (spin_A){-...}-{3:3} {",
        ],
    )
    end = _assert_block(lines[end:], [" }"]) + end
    _assert_block(
        lines[end:],
        [
            "",
            "the dependencies between the lock to be acquired",
            " and HARDIRQ-irq-unsafe lock:",
            "-> (spin_B){+.+.}-{3:3} {",
            "   HARDIRQ-ON-W at:",
            f"                    {here}",
        ],
    )


def test_read_safe_order_names_the_read_state() -> None:
    """A class only read in the irq makes the report ``HARDIRQ-READ-safe -> HARDIRQ-READ-unsafe``."""
    a, b = pylockdep.RWLock("rwlock_A"), pylockdep.SpinLock("spin_B")
    with pylockdep.validate(raise_on_report=False) as v:
        with b:
            pass
        with pylockdep.hardirq(threaded=True), a.read():
            pass
        with pylockdep.irqs_disabled(), a.write(), b:
            pass
    (report,) = v.reports
    assert report.title == "WARNING: HARDIRQ-READ-safe -> HARDIRQ-READ-unsafe lock order detected"
    assert "but this new dependency connects a HARDIRQ-READ-irq-safe lock:" in report.text.splitlines()


def test_invalid_wait_context_layout() -> None:
    """Section 2.3, the reference's own example: a spinlock_t taken under a raw_spinlock_t."""
    r, s = pylockdep.RawSpinLock("raw_R"), pylockdep.SpinLock("spin_A")
    with pylockdep.validate(raise_on_report=False) as v:
        with r, s:
            pass
    (report,) = v.reports
    here = _site("test_invalid_wait_context_layout")
    _assert_block(
        _normalise(report.text),
        [
            "=============================",
            "[ BUG: Invalid wait context ]",
            "pylockdep 0.1.0 Python X Not tainted",
            "-----------------------------",
            f"{ME} is trying to lock:",
            f"ADDR (spin_A){{....}}-{{3:3}}, at: {here}",
            "other info that might help us debug this:",
            "context-{5:5}",
            "1 lock held by MainThread/PID:",
            f" #0: ADDR (raw_R){{+.+.}}-{{2:2}}, at: {here}",
            "stack backtrace:",
        ],
    )


def test_sleep_in_atomic_layout_with_irqs_disabled() -> None:
    """Section 2.4 (modern): the stamps follow the held locks when irqs are off, then where
    preemption was disabled."""
    r = pylockdep.RawSpinLock("raw_R")
    with pylockdep.validate(raise_on_report=False) as v:
        with r.irqsave():
            pylockdep.might_sleep()
    (report,) = v.reports
    lines = _normalise(report.text)
    here = _site("test_sleep_in_atomic_layout_with_irqs_disabled")
    assert lines[0] == "BUG: sleeping function called from invalid context at test_contexts_splat.py:N"
    _assert_block(
        lines,
        [
            "in_atomic(): 1, irqs_disabled(): 1, non_block: 0, pid: PID, name: MainThread",
            "preempt_count: 1, expected: 0",
            "RCU nest depth: 0, expected: 0",
            "1 lock held by MainThread/PID:",
            f" #0: ADDR (raw_R){{....}}-{{2:2}}, at: {here}",
            "irq event stamp: 1",
            "hardirqs last  enabled at (0): [<ADDR>] 0x0",
            f"hardirqs last disabled at (1): [<ADDR>] {here}",
            "softirqs last  enabled at (0): [<ADDR>] 0x0",
            "softirqs last disabled at (0): [<ADDR>] 0x0",
            "Preemption disabled at:",
            f"[<ADDR>] {here}",
            "CPU: 0 UID: 0 PID: PID Comm: MainThread Not tainted pylockdep 0.1.0",
            "Call Trace:",
            " <TASK>",
            " __might_sleep",
            " might_sleep",
            f" {here}",
        ],
    )
