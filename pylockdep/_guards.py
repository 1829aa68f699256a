"""Thread-local re-entrancy guards: the idiom that keeps an interrupt out of a locked section.

A library whose lock a finalizer or a signal handler may reach often fixes the deadlock with a
flag in a ``threading.local``: the section's entry returns early (or raises) when the flag is set
in its thread, else sets it, takes the lock, and clears the flag on the way out::

    def add(self, item):
        if getattr(self._active, "flag", False):
            return                      # this thread is inside already: a finalizer got here
        self._active.flag = True
        try:
            with self._lock:
                ...
        finally:
            self._active.flag = False

An interrupt that reaches the section in a thread holding the lock then finds the flag set and
leaves without waiting (sentry-python 2.55's log batcher, loguru 0.7's handlers).  lockdep judges
a lock by its class and would still call it inconsistent: taken in an interrupt, and taken where
one may come.  So the rules (:func:`pylockdep._checks.check_inconsistent_state`) give each usage of
a Python state its guards, named here:

- an interrupt's acquisition (``IN-GC``, ``IN-SIGNAL``) is guarded by a flag that a function
  between the interrupt's start and the lock *checks, leaving when it is set, then sets*
  (:func:`checked_on_path`);
- any other acquisition (``GC-ON``, ``SIGNAL-ON``) is guarded by a flag that a function on the
  stack sets, and that is set now (:func:`set_on_stack`).

The two usages clash only if no flag guards both.  A flag is named by what holds its
``threading.local`` (the class of ``self`` in ``self._active.flag``, or the module of a global), the
attributes leading to it and its own name, not by the objects: the class of a lock stands for all
its instances, each guarded by its own ``threading.local``.

What is recognised is the idiom as written: the flag read as ``local.flag`` or ``getattr(local,
"flag", default)`` straight into an ``if`` whose set branch returns or raises, and set by an
assignment to ``local.flag`` (``=`` or ``+=``), where ``local`` is a variable, a global or a chain
of attributes of one.  Nothing here runs the program's code: the values are read from the frames
and the instances' dictionaries, never through properties or ``__getattr__``.  The code of test
harnesses and program runners (pytest's, runpy's, asyncio's loop: see
:func:`pylockdep._frames.is_harness`) is not read: it guards no lock of the program, and reading
it cost milliseconds at a test's first lock.
"""

from __future__ import annotations

import _thread
import dis
from types import CodeType, FrameType, GetSetDescriptorType, MemberDescriptorType

from ._frames import is_harness, is_internal, read_code

#: A guard: what holds the ``threading.local`` (the type of the object a variable names, or the
#: module and global), the attributes from there to it, and the flag's name.
Guard = tuple[object, tuple[str, ...], str]
#: Where a code sets a flag: how to reach the ``threading.local`` from the frame (``"fast"``,
#: ``"global"`` or ``"deref"``, the variable's name, the attributes after it), the flag's name,
#: and whether the same code checks the flag first and leaves when it is set.
_GuardSite = tuple[str, str, tuple[str, ...], str, bool]

NO_GUARDS: frozenset[Guard] = frozenset()
#: The guards no flag names, the interpreter's own: a finalizer runs only where a collection
#: starts, a signal handler only where the interpreter checks for pending work.  Every ``IN-GC``
#: acquisition has the first, and so has a ``GC-ON`` one by a ``with`` block whose body nothing
#: can interrupt (:func:`pylockdep._frames.uninterruptible`): no finalizer runs in a thread while
#: such a block holds the lock.  Likewise every ``IN-SIGNAL`` acquisition has the second, and so
#: has a ``SIGNAL-ON`` one by such a block.
NO_COLLECTION: Guard = ("gc", (), "no collection starts in the section")
ONLY_NO_COLLECTION = frozenset({NO_COLLECTION})
NO_SIGNAL: Guard = ("signal", (), "no signal handler runs in the section")
ONLY_NO_SIGNAL = frozenset({NO_SIGNAL})
#: The guards no flag names: those of the interpreter.
UNINTERRUPTIBLE = ONLY_NO_COLLECTION | ONLY_NO_SIGNAL

_STORE_ATTR = dis.opmap["STORE_ATTR"]
_ROOTS = {
    "LOAD_FAST": "fast",
    "LOAD_FAST_CHECK": "fast",
    "LOAD_DEREF": "deref",
    "LOAD_GLOBAL": "global",
    "LOAD_NAME": "global",
}
_LEAVES = frozenset({"RETURN_VALUE", "RETURN_CONST", "RAISE_VARARGS"})
# What an early exit's branch may not do before it leaves: branch again, loop, enter a block, wait.
_STAYS = ("JUMP_BACKWARD", "POP_JUMP", "JUMP_IF", "FOR_ITER", "BEFORE_WITH", "BEFORE_ASYNC_WITH", "SEND", "YIELD_VALUE")
# How many instructions an early exit's branch may take before it leaves.
_EXIT_WITHIN = 48

# id(code) -> (code, the guard sites in it) (a few thousand codes at most: the slow path reads
# each once).  Keyed by id, as hashing a code object hashes its contents; each entry holds its
# code, so the id in its key stays that code's.
_sites: dict[int, tuple[CodeType, tuple[_GuardSite, ...]]] = {}
_SITES_KEPT = 4096
# The flags some code read so far checks and leaves on.  Only a frame setting one of them has its
# variables read by set_on_stack(): before 3.13, reading them (``frame.f_locals``) leaves a copy
# of them on the frame, which would keep alive what the frame's code let go of.
_checked: set[tuple[str, str]] = set()  # (see _name)


def checked_on_path(frame: FrameType | None, interrupted: int | None) -> frozenset[Guard]:
    """The flags guarding an interrupt's acquisition: each checked, then set, by a function
    between ``frame`` (the acquisition's) and the frame the interrupt stopped (``interrupted``, its
    ``id()``; a running frame keeps its identity), which is not part of it, and set now.  Empty when
    that frame is not on the stack."""
    found = set()
    while frame is not None and id(frame) != interrupted:
        for site in _guard_sites(frame.f_code):
            if site[4] and (guard := _set_guard(frame, site)) is not None:
                found.add(guard)
        frame = frame.f_back
    return NO_GUARDS if frame is None else frozenset(found)


def set_on_stack(frame: FrameType | None) -> frozenset[Guard]:
    """The flags guarding an acquisition outside any interrupt: each set by a function on the
    stack from ``frame`` out, set now, and the flag of some guard (some code read so far checks it
    and leaves when it is set, as :func:`checked_on_path` wants)."""
    found = set()
    while frame is not None:
        for site in _guard_sites(frame.f_code):
            if _name(site) in _checked and (guard := _set_guard(frame, site)) is not None:
                found.add(guard)
        frame = frame.f_back
    return frozenset(found)


def _name(site: _GuardSite) -> tuple[str, str]:
    """What a site's flag is called in its code: the name holding its ``threading.local``, and its own."""
    return (site[2][-1] if site[2] else site[1]), site[3]


def _guard_sites(code: CodeType) -> tuple[_GuardSite, ...]:
    """The flags ``code`` sets on something it reaches by a variable and attributes, each with
    whether ``code`` also checks it and leaves when it is set (see the module's documentation)."""
    found = _sites.get(id(code))
    if found is not None:
        return found[1]
    if is_internal(code.co_filename) or is_harness(code.co_filename) or _STORE_ATTR not in code.co_code[::2]:
        sites = ()
    else:
        sites = _read_sites(code)
    if len(_sites) >= _SITES_KEPT:
        _sites.clear()
    _sites[id(code)] = (code, sites)
    return sites


def _read_sites(code: CodeType) -> tuple[_GuardSite, ...]:
    """:func:`_guard_sites` read from ``code``'s instructions; the flags it checks and leaves on
    are added to those :func:`set_on_stack` reads."""
    instructions = read_code(code)[0]
    at_offset = {ins.offset: index for index, ins in enumerate(instructions)}
    stores = {}
    checked = set()
    for index, ins in enumerate(instructions):
        if ins.opname == "STORE_ATTR":
            reach = _reach(instructions, _stored_on(instructions, index))
            if reach is not None:
                stores[reach + (ins.argval,)] = True
        flag_read = _flag_read(instructions, index)
        if flag_read is not None and _leaves_when_set(instructions, at_offset, flag_read[1]):
            checked.add(flag_read[0])
    sites = tuple(key + (key in checked,) for key in stores)
    _checked.update(_name(site) for site in sites if site[4])
    return sites


def _stored_on(instructions: list[dis.Instruction], store: int) -> int:
    """The index of the last instruction loading the object that the ``STORE_ATTR`` at ``store``
    stores on: the one before it, or for ``local.flag += n`` (``COPY 1; LOAD_ATTR flag; ...;
    SWAP 2; STORE_ATTR flag``) the one before the ``COPY``."""
    if store >= 1 and instructions[store - 1].opname == "SWAP" and instructions[store - 1].arg == 2:
        name = instructions[store].argval
        for index in range(store - 2, 0, -1):
            ins = instructions[index]
            if ins.opname == "LOAD_ATTR" and ins.argval == name and instructions[index - 1].opname == "COPY":
                return index - 2
    return store - 1


def _reach(instructions: list[dis.Instruction], last: int) -> tuple[str, str, tuple[str, ...]] | None:
    """The variable and attributes that the instructions ending at ``last`` load, if that is all
    they do: ``self._active`` is ``("fast", "self", ("_active",))``."""
    attrs: list[str] = []
    index = last
    while index >= 0 and instructions[index].opname == "LOAD_ATTR":
        attrs.append(instructions[index].argval)
        index -= 1
    if index < 0:
        return None
    root = instructions[index]
    if root.opname == "LOAD_FAST_LOAD_FAST":  # 3.13: two variables loaded at once, ours the second
        return "fast", root.argval[1], tuple(reversed(attrs))
    kind = _ROOTS.get(root.opname)
    return None if kind is None else (kind, root.argval, tuple(reversed(attrs)))


def _flag_read(instructions: list[dis.Instruction], index: int) -> tuple[tuple, int] | None:
    """If the instruction at ``index`` ends a read of a flag (``local.flag``, or ``getattr(local,
    "flag"[, default])``), the flag's site key and the index of the read's last instruction."""
    ins = instructions[index]
    if ins.opname == "LOAD_ATTR":
        reach = _reach(instructions, index - 1)
        return None if reach is None else (reach + (ins.argval,), index)
    if ins.opname != "CALL" or ins.arg not in (2, 3):
        return None
    start = index - 1
    if instructions[start].opname == "PRECALL":
        start -= 1
    if ins.arg == 3:
        if instructions[start].opname != "LOAD_CONST":
            return None
        start -= 1
    name = instructions[start]
    if name.opname != "LOAD_CONST" or not isinstance(name.argval, str):
        return None
    end = start - 1
    begin = end
    while begin >= 0 and instructions[begin].opname == "LOAD_ATTR":
        begin -= 1
    reach = _reach(instructions, end)
    if reach is None or begin < 1:
        return None
    func = instructions[begin - 1]
    if func.opname not in ("LOAD_GLOBAL", "LOAD_NAME") or func.argval != "getattr":
        return None
    return reach + (name.argval,), index


def _leaves_when_set(instructions: list[dis.Instruction], at_offset: dict[int, int], read: int) -> bool:
    """Whether the branch the flag read at ``read`` takes when the flag is set returns or raises
    soon, in a straight line (counting what it dropped, say), entering no block and waiting for
    nothing on the way."""
    index = read + 1
    negated = False
    while index < len(instructions) and instructions[index].opname in ("TO_BOOL", "UNARY_NOT"):
        negated ^= instructions[index].opname == "UNARY_NOT"
        index += 1
    if index >= len(instructions):
        return False
    jump = instructions[index].opname
    if not jump.startswith("POP_JUMP") or not jump.endswith(("IF_TRUE", "IF_FALSE")):
        return False
    jumps_when_set = jump.endswith("IF_TRUE") != negated
    index = at_offset.get(instructions[index].argval, -1) if jumps_when_set else index + 1
    for _ in range(_EXIT_WITHIN):
        if not 0 <= index < len(instructions):
            return False
        ins = instructions[index]
        if ins.opname in _LEAVES:
            return True
        if ins.opname in ("JUMP_FORWARD", "JUMP"):
            index = at_offset.get(ins.argval, -1)
        elif ins.opname.startswith(_STAYS):
            return False
        else:
            index += 1
    return False


def _set_guard(frame: FrameType, site: _GuardSite) -> Guard | None:
    """The guard of the flag of ``site`` if it is set in this thread, reached from ``frame``'s
    variables; else None."""
    kind, name, attrs, flag, _ = site
    if kind == "global":
        scope = frame.f_globals
        root = scope.get(name, _MISSING) if type(scope) is dict else _MISSING
        owner: object = (scope.get("__name__"), name) if type(scope) is dict else None
    else:
        root = frame.f_locals.get(name, _MISSING)
        owner = type(root)
    holder = root
    for attr in attrs:
        holder = _static_attr(holder, attr)
    klass = type(holder)
    if not issubclass(klass, _thread._local) or any("__init__" in base.__dict__ for base in klass.__mro__[:-2]):
        return None  # not a thread-local, or one whose first use in a thread runs the program's code
    value = _thread._local.__getattribute__(holder, "__dict__").get(flag)
    if value is None or value is False or (type(value) in (int, str) and not value):
        return None
    return owner, attrs, flag


_MISSING = object()


def _static_attr(obj: object, name: str) -> object:
    """``obj.name`` from the instance's dictionary, its slots or its class, without calling any
    property, descriptor or ``__getattr__`` of the program's (``_MISSING`` if not found so)."""
    if obj is _MISSING:
        return obj
    for klass in type(obj).__mro__:
        found = klass.__dict__.get(name, _MISSING)
        if found is not _MISSING:
            if type(found) is MemberDescriptorType:  # a slot
                try:
                    return found.__get__(obj, type(obj))
                except AttributeError:
                    return _MISSING
            break
    else:
        found = _MISSING
    for klass in type(obj).__mro__:
        slot = klass.__dict__.get("__dict__")
        if slot is not None:
            if type(slot) is not GetSetDescriptorType:
                return _MISSING
            instance = slot.__get__(obj, type(obj))
            if type(instance) is dict and name in instance:
                return instance[name]
            break
    return found
