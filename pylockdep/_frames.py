"""Python frames as lockdep shows code: creation sites, acquisition sites and call traces.

A *site* is ``(code, lineno)``; it prints as ``function+file:line``.  Frames inside pylockdep (and,
for instrumented standard-library locks, inside :mod:`threading`) are skipped when looking for the
place that created or took a lock, so a site names the user's code.  Call traces also leave out
the frames of test harnesses and program runners (pytest, pluggy, runpy), which say nothing about
the user's locking.
"""

from __future__ import annotations

import bisect
import contextlib
import dis
import gc
import inspect
import os
import sys
import threading
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import TypeVar

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_THREADING_FILE = threading.__file__
_CONTEXTLIB_FILE = contextlib.__file__  # @contextmanager wrappers around our context managers

Site = tuple[CodeType, int]
Stack = tuple[Site, ...]


#: Which files are pylockdep's own (or contextlib's), filled as :func:`is_internal` meets them,
#: contextlib's from the start; the fast paths, C and pure, read it to site a lock taken inside
#: threading or contextlib (an ``ExitStack``) without asking :func:`is_internal`.
internal_files: dict[str, bool] = {_CONTEXTLIB_FILE: True}


def is_internal(filename: str, skip_threading: bool = False) -> bool:
    """True for pylockdep's own files and :mod:`contextlib` (and :mod:`threading` when ``skip_threading``)."""
    if skip_threading and filename == _THREADING_FILE:
        return True
    internal = internal_files.get(filename)
    if internal is None:
        internal = internal_files[filename] = filename.startswith(_PACKAGE_DIR) or filename == _CONTEXTLIB_FILE
    return internal


# Test harnesses and program runners (``python -m``, ``pylockdep run``): packages, and runpy's files.
_HARNESS_PACKAGES = ("_pytest", "pytest", "pluggy", "xdist", "execnet")
# asyncio's event loop counts as a runner: a task's stack ends with its outermost coroutine.
_RUNPY_FILES = frozenset(
    ["<frozen runpy>", os.path.join(os.path.dirname(os.__file__), "runpy.py")]
    + [os.path.join(os.path.dirname(os.__file__), "asyncio", f) for f in ("events.py", "base_events.py", "runners.py")]
)
_harness_files: dict[str, bool] = {}


def is_harness(filename: str) -> bool:
    """True for the files of pytest (with pluggy, pytest-xdist and execnet), of runpy, and of asyncio's
    event loop."""
    harness = _harness_files.get(filename)
    if harness is None:
        # A frame of one of these packages means it is imported: its directory is known.
        dirs = tuple(
            os.path.dirname(module.__file__) + os.sep
            for name in _HARNESS_PACKAGES
            if (module := sys.modules.get(name)) is not None and getattr(module, "__file__", None)
        )
        harness = filename in _RUNPY_FILES or filename.startswith(dirs)
        _harness_files[filename] = harness
    return harness


def outside_frame(frame: FrameType | None, skip_threading: bool = False) -> FrameType | None:
    """The first frame, walking outwards from ``frame``, that is not pylockdep's (nor threading's)."""
    while frame is not None:
        filename = frame.f_code.co_filename
        # is_internal(), its memo read inline: this walk runs for each lock threading takes.
        internal = internal_files.get(filename)
        if not (internal or (skip_threading and filename == _THREADING_FILE)):
            if internal is not None or not is_internal(filename):
                return frame
        frame = frame.f_back
    return frame


#: The C module's walk for :func:`caller_site` (``_speedups.outside_site``), set by
#: :mod:`pylockdep._fastpath` when it is in use: it answers from :data:`internal_files`, or None.
c_outside_site: Callable[[dict[str, bool], str | None], tuple[CodeType, int] | None] | None = None


def getframe(depth: int = 0) -> FrameType:
    """``sys._getframe(depth)`` as its caller would call it; where the stack is not that deep, the
    outermost frame there is.  A function the interpreter calls from C with no Python frame below
    it (an ``atexit`` callback: a pool's ``shutdown``, a lock's ``acquire`` registered directly)
    is then its own caller, instead of raising ``ValueError`` into the program."""
    try:
        return sys._getframe(depth + 1)
    except ValueError:
        frame = sys._getframe(1)
        while frame.f_back is not None:
            frame = frame.f_back
        return frame


def caller_site(skip_threading: bool = False) -> Site:
    """The site of the first frame outside pylockdep that led to this call."""
    if c_outside_site is not None:
        found = c_outside_site(internal_files, _THREADING_FILE if skip_threading else None)
        if found is not None:
            return (found[0], line_at(found[0], found[1]))
    frame = outside_frame(sys._getframe(1), skip_threading)
    if frame is None:  # pragma: no cover - only when called from pylockdep's top level
        return (sys._getframe(0).f_code, 0)
    # The line from the instruction offset, cached per offset: f_lineno scans the line table.
    return (frame.f_code, line_at(frame.f_code, frame.f_lasti))


# (id(code), lasti) -> (code, line): keyed by id, as hashing a code object hashes its contents
# (on 3.12, a long module body's takes about 0.3 ms); each entry holds its code object, so the id in
# its key stays that code's.
_lines: dict[tuple[int, int], tuple[CodeType, int]] = {}


# Before 3.13 a frame's ``f_locals`` is a dict the frame keeps (the one ``locals()`` returns there),
# refreshed at each read: the frame holds it, and so do the reader's variable and getrefcount().
_LOCALS_SNAPSHOT = sys.version_info < (3, 13)
_SNAPSHOT_ONLY_REFS = 3


def arguments(frame: FrameType) -> list[object]:
    """The values of the arguments of ``frame``'s function now, in order (None for one deleted);
    none for a module or a class body.  Before 3.13, reading a frame's variables leaves a copy of
    them on the frame, which would keep alive what its code goes on to let go of until it returns:
    the copy is dropped again, unless the program holds it too (a ``locals()`` it kept)."""
    code = frame.f_code
    count = code.co_argcount + code.co_kwonlyargcount
    if not count or not code.co_flags & inspect.CO_OPTIMIZED:
        return []
    values = frame.f_locals
    try:
        return [values.get(name) for name in code.co_varnames[:count]]
    finally:
        if _LOCALS_SNAPSHOT and sys.getrefcount(values) <= _SNAPSHOT_ONLY_REFS:
            values.clear()


def line_at(code: CodeType, lasti: int) -> int:
    """The source line of the instruction at byte offset ``lasti`` in ``code`` (a frame's ``f_lasti``)."""
    found = _lines.get((id(code), lasti))
    if found is not None:
        return found[1]
    starts, ends, lines = _kept(_line_tables, code, _line_table)
    at = bisect.bisect_right(starts, lasti) - 1
    line = lines[at] if at >= 0 and lasti < ends[at] else code.co_firstlineno
    _lines[id(code), lasti] = (code, line)
    return line


def _line_table(code: CodeType) -> tuple[list[int], list[int], list[int]]:
    """``code``'s ranges of instruction offsets, as their starts, their ends and their lines (the
    code's first line for instructions of no line)."""
    ranges = list(code.co_lines())
    first = code.co_firstlineno
    return [r[0] for r in ranges], [r[1] for r in ranges], [first if r[2] is None else r[2] for r in ranges]


# id(code) -> (code, what was read of it), for the codes read most recently, the most recent last:
# a module body that makes thousands of locks, each a site of its own, is read once, not once per
# site, even when each site is a helper function of its own.
_read: dict[int, tuple[CodeType, tuple[list[dis.Instruction], list[int]]]] = {}
_line_tables: dict[int, tuple[CodeType, tuple[list[int], list[int], list[int]]]] = {}
_KEPT = 64
_T = TypeVar("_T")


def _kept(cache: dict[int, tuple[CodeType, _T]], code: CodeType, read: Callable[[CodeType], _T]) -> _T:
    """``read(code)``, kept in ``cache`` while it is among the :data:`_KEPT` codes used most recently."""
    found = cache.pop(id(code), None)  # an entry holds its code: the id is that code's
    if found is None:
        while len(cache) >= _KEPT:
            try:
                cache.pop(next(iter(cache)), None)  # the least recently used
            except (RuntimeError, StopIteration):  # another thread changed it meanwhile
                break
        found = (code, read(code))
    cache[id(code)] = found
    return found[1]


def read_code(code: CodeType) -> tuple[list[dis.Instruction], list[int]]:
    """``code``'s instructions and their offsets, in order."""
    return _kept(_read, code, _instructions)


def _instructions(code: CodeType) -> tuple[list[dis.Instruction], list[int]]:
    listing = list(dis.get_instructions(code))
    return listing, [ins.offset for ins in listing]


_BEFORE_WITH = dis.opmap.get("BEFORE_WITH")


def enters_with(code: CodeType, lasti: int) -> bool:
    """Whether the instruction at byte offset ``lasti`` in ``code`` enters a ``with`` block, or an
    ``async with`` block (awaiting its ``__aenter__``: the ``SEND`` of the ``GET_AWAITABLE 1`` that
    follows ``BEFORE_ASYNC_WITH``, the offset of the ``SEND`` or of its inline cache): what it takes
    there, the block's end gives back in the same thread or task."""
    if lasti >= len(code.co_code):
        return False
    if code.co_code[lasti] == _BEFORE_WITH:
        return True
    instructions, offsets = read_code(code)
    at = bisect.bisect_right(offsets, lasti) - 1
    if at < 2 or instructions[at].opname != "SEND":
        return False
    awaitable = instructions[at - 2]
    return awaitable.opname == "GET_AWAITABLE" and awaitable.arg == 1


# What a with block's body may run and still be interrupted by nothing: no call (nor anything
# that builds a container or an exception), no backward jump.  A garbage collection starts at an
# allocation of a tracked object (3.11), or where the interpreter checks for pending work: a call,
# a function's start, a backward jump (3.12 on); a Python signal handler runs only at such a check.
# Arithmetic and attribute access on a user's own types could still run Python code: counted as
# what they are for numbers and plain instances.
_UNINTERRUPTIBLE_OPS = frozenset(
    {
        "NOP", "CACHE", "EXTENDED_ARG", "POP_TOP", "COPY", "SWAP", "LOAD_CONST", "LOAD_SMALL_INT",
        "LOAD_FAST", "LOAD_FAST_CHECK", "LOAD_FAST_LOAD_FAST", "STORE_FAST", "STORE_FAST_LOAD_FAST",
        "STORE_FAST_STORE_FAST", "LOAD_DEREF", "STORE_DEREF", "LOAD_GLOBAL", "STORE_GLOBAL",
        "LOAD_NAME", "STORE_NAME", "LOAD_ATTR", "STORE_ATTR", "BINARY_OP", "COMPARE_OP", "IS_OP",
        "UNARY_NOT", "UNARY_NEGATIVE", "UNARY_INVERT", "TO_BOOL",
    }
)  # fmt: skip


def uninterruptible(code: CodeType, lasti: int) -> bool:
    """Whether the instruction at byte offset ``lasti`` in ``code`` enters a ``with`` block whose
    body nothing can interrupt, in plain CPython: no garbage collection starts in it and no Python
    signal handler runs in it.  Every way through it, following its forward jumps, runs only
    instructions of :data:`_UNINTERRUPTIBLE_OPS` up to an exit of the block (the call of
    ``__exit__(None, None, None)``, before a ``return`` or at the end).  ``with self.lock:
    self.n += 1`` is such a block; so, then, is no finalizer or signal handler that the thread
    holding that lock could run."""
    if not 0 <= lasti < len(code.co_code) or code.co_code[lasti] != _BEFORE_WITH:
        return False
    instructions, offsets = read_code(code)
    todo = [bisect.bisect_left(offsets, lasti) + 1]
    seen: set[int] = set()
    while todo:
        at = todo.pop()
        while at not in seen and not _exits_with(instructions, at):
            if at >= len(instructions):
                return False
            seen.add(at)
            ins = instructions[at]
            if ins.opname.startswith(_FORWARD_JUMPS):
                target = bisect.bisect_left(offsets, ins.argval)
                if ins.opname == "JUMP_FORWARD":
                    at = target
                    continue
                todo.append(target)
            elif ins.opname not in _UNINTERRUPTIBLE_OPS:
                return False
            at += 1
    return True


def _exits_with(instructions: list[dis.Instruction], at: int) -> bool:
    """Whether ``instructions[at:]`` start with a ``with`` block's exit: ``__exit__(None, None, None)``."""
    call = instructions[at + 3] if at + 3 < len(instructions) else None
    return (
        call is not None
        and call.opname in ("CALL", "PRECALL")
        and call.arg == 2
        and all(ins.opname == "LOAD_CONST" and ins.argval is None for ins in instructions[at : at + 3])
    )


_FORWARD_JUMPS = ("POP_JUMP_IF_", "POP_JUMP_FORWARD_IF_", "JUMP_FORWARD")


# From 3.12 on, a LOAD_ATTR whose argument's low bit is set loads a method to call (3.11 has LOAD_METHOD).
_LOAD_ATTR_CALLS = sys.version_info >= (3, 12)


def calls_method(code: CodeType, name: str) -> bool:
    """Whether ``code`` calls a method ``name`` of some object (``x.name(...)``), rather than only
    reads the attribute (``threading.Timer(1, x.name)``)."""
    return any(
        ins.argval == name
        and (ins.opname == "LOAD_METHOD" or (_LOAD_ATTR_CALLS and ins.opname == "LOAD_ATTR" and ins.arg & 1))
        for ins in read_code(code)[0]
    )


# (id(code), line) -> (code, whether the line is inside a loop), as _lines keeps its entries.
_loop_lines: dict[tuple[int, int], tuple[CodeType, bool]] = {}


def in_loop(site: Site) -> bool:
    """Whether the line of ``site`` is inside a loop of its code: some backward jump goes from
    after one of its instructions to before it (``for``/``while`` bodies, comprehensions)."""
    code, line = site
    found = _loop_lines.get((id(code), line))
    if found is None:
        spans = [(start, end) for start, end, number in code.co_lines() if number == line]
        loops = [(ins.argval, ins.offset) for ins in read_code(code)[0] if ins.opname.startswith("JUMP_BACKWARD")]
        inside = any(top < end and start <= bottom for start, end in spans for top, bottom in loops)
        found = _loop_lines[id(code), line] = (code, inside)
    return found[1]


class _StandIn(threading.local):
    stack: Stack | None = None  # what capture_stack() returns in this thread instead of its stack


_stand_in = _StandIn()


@contextlib.contextmanager
def stack_standing_in(stack: Stack) -> Iterator[None]:
    """Within the block, :func:`capture_stack` called without a frame returns ``stack``: for work
    done on behalf of a holder whose frames are not on the thread's stack (a suspended asyncio
    task, whose waits are checked after its step)."""
    outer, _stand_in.stack = _stand_in.stack, stack
    try:
        yield
    finally:
        _stand_in.stack = outer


def stack_stood_in() -> Stack | None:
    """The stack standing in for this thread's (:func:`stack_standing_in`), else None."""
    return _stand_in.stack


#: Whether a collection can start inside ``sys._current_frames()``: up to 3.11, at any allocation;
#: from 3.12 the collector runs only between instructions.
_GC_IN_FRAME_COPY = sys.version_info < (3, 12)


def current_frames() -> dict[int, FrameType]:
    """``sys._current_frames()``: each thread's ident and innermost frame, without CPython 3.11's
    hang (gh-106883).

    On 3.11 the copy holds the interpreter's lock on its list of threads while it makes frame
    objects; a collection started by one of them may switch threads (its callbacks are Python
    code, pylockdep's own among them), and a thread that then starts a thread waits for that lock
    while holding the GIL: neither moves again.  So on 3.11 the collector is off for the copy when
    it was on.  (Another thread's ``gc.disable()`` in the few instructions between is lost.)
    """
    if _GC_IN_FRAME_COPY and gc.isenabled():
        gc.disable()
        try:
            return sys._current_frames()
        finally:
            gc.enable()
    return sys._current_frames()


def other_threads_frames() -> dict[int, FrameType]:
    """:func:`current_frames` without the calling thread's own.  Its entry is the frame of the
    copy's caller here, whose object, kept past that frame's end, would keep the frames of its
    callers, and their variables, alive in a cycle only the collector frees (a future's
    exception, raised through a waiting frame, would outlive its handling)."""
    frames = current_frames()
    frames.pop(threading.get_ident(), None)
    return frames


#: The code of asyncio's ``Handle._run``, which runs each callback and task step of an event loop
#: (set by :mod:`pylockdep._asyncio`): what lies beyond it on a stack runs the loop, not the task.
loop_runner: CodeType | None = None
#: What stands for a task's stack when none of its own frames is the program's (a task whose
#: coroutine is asyncio's or pylockdep's, as ``create_task(lock.acquire())``): the line that made
#: the running task, set by :mod:`pylockdep._asyncio`.
task_made_at: Callable[[], Stack] | None = None


def capture_stack(frame: FrameType | None = None, limit: int = 64) -> Stack:
    """The call stack outside pylockdep, innermost first, as sites (at most ``limit`` of them).

    Harness frames (:func:`is_harness`) are left out, and so is all that lies outside the outermost
    of them (the console script or ``python -m`` that started the harness): under pytest the stack
    ends with the test function; in a thread, with threading's bootstrap; in an asyncio task or
    callback, with its outermost coroutine or function (or, if none is the program's, the line
    that made the task).  Walks the whole stack: for the slow path only (a new dependency, a new
    usage, a report).
    """
    if frame is None and _stand_in.stack is not None:
        return _stand_in.stack[:limit]
    frame = outside_frame(frame if frame is not None else sys._getframe(1))
    sites: list[Site] = []
    end = None  # how many sites lie inside the outermost harness frame seen so far
    while frame is not None:
        filename = frame.f_code.co_filename
        if frame.f_code is loop_runner:
            if not sites and task_made_at is not None:
                return task_made_at()[:limit]
            return tuple(sites[:limit])
        if is_harness(filename):
            end = len(sites)
        elif not is_internal(filename):
            sites.append((frame.f_code, frame.f_lineno))
        frame = frame.f_back
    return tuple(sites[: limit if end is None else min(end, limit)])


_short_names: dict[str, str] = {}

# The working directory when pylockdep was imported: a relative ``sys.path`` entry ('' or an editable
# install's path hook) is taken relative to it.  Naming a lock class is a string operation and makes no
# system call: it runs inside the observed program (an event loop's thread, where a checker such as
# blockbuster fails any ``os.getcwd()``, or a signal handler).
try:
    _START_DIR = os.getcwd()
except OSError:  # started in a directory since removed: relative entries name nothing
    _START_DIR = ""


def short_filename(filename: str) -> str:
    """``filename`` relative to the ``sys.path`` entry that holds it (``queue.py``, ``kvm_model/mmu.py``)."""
    short = _short_names.get(filename)
    if short is None:
        short = filename
        best = ""
        for entry in sys.path:
            entry = os.path.normpath(os.path.join(_START_DIR, entry)) + os.sep
            if filename.startswith(entry) and len(entry) > len(best):
                best = entry
        if best:
            short = filename[len(best) :]
        _short_names[filename] = short
    return short


def format_site(site: Site | None) -> str:
    """``function+file:line`` for a site, the way lockdep prints ``symbol+offset/length``."""
    if site is None:
        return "?"
    code, lineno = site
    return f"{code.co_qualname}+{short_filename(code.co_filename)}:{lineno}"


def format_file_line(site: Site | None) -> str:
    """``file:line`` of a site."""
    if site is None:
        return "?"
    return f"{short_filename(site[0].co_filename)}:{site[1]}"


def format_stack(stack: Stack, indent: str = " ") -> list[str]:
    """One line per frame of ``stack``, innermost first, each prefixed by ``indent``."""
    return [indent + format_site(site) for site in stack]


def split_at_entry(stack: Stack, entry: CodeType | None) -> tuple[Stack, Stack]:
    """``stack`` cut below the frame of ``entry`` (a thread's entry function): the frames down to it,
    innermost first, and the Python frames that called it.  Without ``entry``, or when no frame runs
    it, everything is in the first part."""
    if entry is not None:
        for i, (code, _line) in enumerate(stack):
            if code is entry:
                return stack[: i + 1], stack[i + 1 :]
    return stack, ()
