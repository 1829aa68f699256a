"""Cutting a call trace at a thread's entry function (for splats of identified threads)."""

from __future__ import annotations

import gc
import sys
import threading
import types
import weakref

import pytest

from pylockdep import _frames
from pylockdep._frames import capture_stack, current_frames, split_at_entry


def inner() -> tuple:
    return capture_stack()


def entry(out: list) -> None:
    out.append(inner())


def test_the_trace_ends_with_the_entry_function_and_the_rest_follows():
    out: list = []
    thread = threading.Thread(target=lambda: entry(out))
    thread.start()
    thread.join()
    (stack,) = out
    kernel, python = split_at_entry(stack, entry.__code__)
    assert [code.co_name for code, _ in kernel] == ["inner", "entry"]
    assert python and python[-1][0].co_name == "_bootstrap"


def test_without_an_entry_nothing_is_cut():
    stack = inner()
    assert split_at_entry(stack, None) == (stack, ())
    assert split_at_entry(stack, entry.__code__) == (stack, ())


@pytest.mark.parametrize("enabled", [True, False])
def test_the_frame_copy_runs_with_the_collector_off_on_3_11_and_leaves_it_as_it_was(monkeypatch, enabled):
    # CPython 3.11 can hang when a collection starts inside sys._current_frames() (gh-106883).
    seen: list[bool] = []
    copy = sys._current_frames
    monkeypatch.setattr(sys, "_current_frames", lambda: (seen.append(gc.isenabled()), copy())[1])
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        frames = current_frames()
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    mine, chain = sys._getframe(), frames[threading.get_ident()]
    while chain is not None and chain is not mine:
        chain = chain.f_back
    assert chain is mine  # the copy is this thread's stack
    assert seen == [enabled and sys.version_info >= (3, 12)]


def test_a_code_read_between_many_others_stays_read():
    """A module body whose every lock is made by a helper function of its own is read once, not
    once per helper: the codes read most recently are kept, not dropped all at once when full."""
    body = compile("x = 1", "body.py", "exec")
    listing = _frames.read_code(body)[0]
    helpers = [compile(f"y = {i}", f"helper{i}.py", "exec") for i in range(4 * _frames._KEPT)]
    for helper in helpers:
        _frames.read_code(helper)
        assert _frames.read_code(body)[0] is listing
    assert len(_frames._read) <= _frames._KEPT


def test_calls_method_tells_a_call_of_a_method_from_a_read_of_it():
    """``gate.release()`` in a ``finally`` is a call; ``Timer(1, gate.release)`` only reads the
    attribute, and so does ``gate.release`` alone: on each Python's bytecode (3.11's LOAD_METHOD,
    3.12's LOAD_ATTR with its method bit)."""

    def mutex(lock):
        lock.acquire()
        try:
            pass
        finally:
            lock.release()

    def gate(lock):
        lock.acquire()
        threading.Timer(1, lock.release)
        return lock.release

    assert _frames.calls_method(mutex.__code__, "release")
    assert not _frames.calls_method(gate.__code__, "release")
    assert _frames.calls_method(gate.__code__, "acquire")


def test_uninterruptible_follows_every_way_through_a_with_block():
    """Arithmetic, attributes and forward jumps to a ``return`` start no collection; a call, a new
    list, a loop's backward jump or a block not entered by ``with`` may."""
    import dis

    class Shapes:
        def branches(self):
            with self.lock:
                if self.n < self.most:
                    self.n += 1
                    return True
                return False

        def calls(self):
            with self.lock:
                self.n = len(self.items)

        def builds(self):
            with self.lock:
                if self.n:
                    return True
                self.items = []

        def loops(self):
            with self.lock:
                while self.n:
                    self.n -= 1

        def bare(self):
            self.lock.acquire()
            self.n += 1

    def verdict(function):
        entered = [ins.offset for ins in dis.get_instructions(function) if ins.opname == "BEFORE_WITH"]
        taken = [ins.offset for ins in dis.get_instructions(function) if ins.argval == "acquire"]
        return _frames.uninterruptible(function.__code__, (entered or taken)[0])

    assert [verdict(getattr(Shapes, name)) for name in ("branches", "calls", "builds", "loops", "bare")] == [
        True,
        False,
        False,
        False,
        False,
    ]


def test_reading_a_frames_arguments_keeps_no_copy_of_its_variables_but_the_programs():
    """_frames.arguments() reads a function's arguments; before 3.13 that leaves a copy of all its
    variables on the frame, which must not keep alive what the function lets go of, and must stay
    when the program holds it (``locals()``)."""

    class Payload:
        pass

    def reads(a, *, b=2):
        big = Payload()
        gone = weakref.ref(big)
        assert _frames.arguments(sys._getframe()) == [a, b]
        del big
        return gone() is None

    def holds_its_locals(a):
        mine = locals()
        assert _frames.arguments(sys._getframe()) == [a]
        return mine.get("a")

    assert reads(1) is True
    assert holds_its_locals(5) == 5
    module_frame = types.SimpleNamespace(f_code=compile("x = 1", "m", "exec"))
    assert _frames.arguments(module_frame) == []  # type: ignore[arg-type]
