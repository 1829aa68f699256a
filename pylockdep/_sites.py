"""Where a Python lock is made, and the class name that says so.

A ``threading.Lock()`` call's class is its *creation site*: the call instruction, not just the
line, so two calls on one line make two classes.  A function that only makes a lock and returns
it (``def _create_lock(self): return RLock()``) is not the site: its caller is, so each attribute
assigned from such a helper is a class of its own.

A lock a method makes for ``self.attr`` is of a class per concrete type of that ``self`` (see
:func:`owner_of`): ``logging.Handler.createLock()`` makes each handler type's locks a class of
their own, as the kernel gives each file system type's inode locks a key of their own.  Without
that, a handler that forwards records to another handler while it holds a lock of its own closes a
cycle through the one class of every handler's lock, though no two handlers wait for each other.
The split hides no deadlock that instances can make: each lock is of exactly one class, so a
cycle of instances is still a cycle of their classes.

A descriptor (an object whose type defines ``__get__``: ``functools.cached_property``, a
``property``-like helper) is made once per attribute of a class and lives as long as the class, as
the kernel's statically allocated locks live as long as the kernel; each of those gets a class of
its own (keyed by its address), and so do a descriptor's locks (see :func:`owner_key`).  On Python
3.11 every ``@cached_property`` holds an ``RLock`` of its own: one class for them all would join
two unrelated properties, one computed under a lock and one read under it, into a cycle.

The class name says where the lock lives when the code shows it: ``Owner.attr@file.py:LINE`` for
``self.attr = ...`` in a method (``Owner`` the type of ``self``; in the ``__init__`` that
``dataclasses`` or attrs generate, ``LINE`` is where the class declares the field) or ``attr =
...`` in the body of class ``Owner``, ``name@file.py:LINE`` for a module's global ``name = ...``, else
``KIND@file.py:LINE`` (``Lock``, ``RLock``, or the threading or asyncio type that made the lock).
A second site on a line already naming a class of the same name adds its column,
``...@file.py:LINE:COL``.  Every name keeps ``file.py:LINE``, which
suppressions and outside tools match on.

All of this reads the calling code's bytecode once per site, on the slow path of lock creation.
"""

from __future__ import annotations

import dis
import linecache
import re
import sys
import weakref
from bisect import bisect_right
from itertools import pairwise
from types import CodeType, FrameType
from typing import Any

from ._classes import LockKey, OwnerKeys, key_for, key_for_owner
from ._frames import arguments, format_file_line, is_internal, line_at, read_code, short_filename
from ._locktypes import LockType

# These tables key a code object by its id, as hashing one hashes its contents (a long module
# body's takes 15 us on 3.11, 0.3 ms on 3.12), and each entry holds its code, so the id in its key
# stays that code's.
# (id(code), offset of the call) -> (code, what follows the call: ("return",), ("attr", owner,
# name), ("name", global or Class.attr) or (), with the call's offset and column).
_after_call: dict[tuple[int, int], tuple[CodeType, tuple[int, tuple[str, ...], int | None]]] = {}
# (id(code), f_lasti, kind) -> (code, class name); (id(code), line, name) -> (code, the call offset
# that took it first).
_names: dict[tuple[int, int, str], tuple[CodeType, str]] = {}
_first_on_line: dict[tuple[int, int, str], tuple[CodeType, int]] = {}
# (id(code), f_lasti, lock type) -> (code, that site's keys by owner type: see site_owner_keys).
_owner_keys: dict[tuple[int, int, LockType], tuple[CodeType, OwnerKeys]] = {}
# A descriptor -> the keys of the locks made for it, by site (each key holds its site's code); and
# how many descriptors each site made a key for (see descriptor_key).
_descriptor_keys: weakref.WeakKeyDictionary[Any, dict[tuple[int, int, LockType], LockKey]]
_descriptor_keys = weakref.WeakKeyDictionary()
_descriptors_made: dict[tuple[int, int, LockType], tuple[CodeType, int]] = {}
#: A site makes a class per descriptor for this many descriptors; later ones share their type's.
DESCRIPTOR_KEYS = 1024


def _call_at(code: CodeType, lasti: int) -> tuple[int, tuple[str, ...], int | None]:
    """The call a frame is in (its offset), what the code does with the result, and its column.

    ``lasti`` is the frame's ``f_lasti``, which may point into the call's inline caches: the call
    is the last instruction at or before it.
    """
    instructions, offsets = read_code(code)
    index = max(bisect_right(offsets, lasti) - 1, 0)
    call = instructions[index]
    following = [ins for ins in instructions[index + 1 : index + 3] if ins.opname != "NOT_TAKEN"]
    column = call.positions.col_offset if call.positions is not None else None
    after: tuple[str, ...] = ()
    if following and following[0].opname == "RETURN_VALUE":
        after = ("return",)
    elif following and following[0].opname in _STORES_LOCAL and _returns_only(instructions, following[0].argval):
        after = ("return",)  # lock = Lock(); registry.add(lock); return lock
    elif following and following[0].opname == "STORE_GLOBAL":
        after = ("name", following[0].argval)
    elif following and following[0].opname == "STORE_NAME":
        # A module's body binds a global; any other code that stores names is a class body.
        owner = "" if code.co_name == "<module>" else f"{code.co_qualname}."
        after = ("name", owner + following[0].argval)
    else:
        if following and following[0].opname in ("JUMP_FORWARD", "JUMP"):
            # The first arm of a conditional expression: ``self.x = make() if x is DEFAULT else x``,
            # a dataclass's or attrs' generated __init__ for a field with a default factory.
            target = bisect_right(offsets, following[0].argval) - 1
            following = instructions[target : target + 2]
        if (
            len(following) == 2
            and following[0].opname in ("LOAD_FAST", "LOAD_DEREF")  # LOAD_DEREF: a closure captures it
            and code.co_argcount
            and following[0].argval == code.co_varnames[0]
            and following[1].opname == "STORE_ATTR"
        ):
            # The class is the one the method's qualified name gives; for a method that code
            # generated (``__create_fn__.<locals>.__init__`` in ``<string>``), the type of ``self``.
            owner = code.co_qualname.rpartition(".")[0].rpartition(".")[2]
            if owner and not owner.startswith("<"):
                after = ("attr", owner, following[1].argval)
            elif code.co_filename.startswith("<"):
                after = ("attr", "", following[1].argval)
    return call.offset, after, column


# The instructions that store a call's result in a local variable (3.13 fuses the store with the
# next load: its argument is a pair of names, the stored one first).
_STORES_LOCAL = ("STORE_FAST", "STORE_FAST_LOAD_FAST", "STORE_FAST_STORE_FAST")
_LOADS_LOCAL = ("LOAD_FAST", "LOAD_FAST_CHECK", "STORE_FAST_LOAD_FAST")


def _returns_only(instructions: list[dis.Instruction], stored: str | tuple[str, str]) -> bool:
    """Whether the local that the call's result is stored in (``stored``, the store's argument)
    is a lock the function makes to return: assigned nowhere else, and returned
    (``lock = Lock(); registry.add(lock); return lock``).  What else the function does with it
    meanwhile does not make it the site of a class: the function is a factory, as one that only
    returns the lock it made is."""
    name = stored[0] if isinstance(stored, tuple) else stored
    stores = 0
    returned = False
    for ins, nxt in pairwise(instructions):
        names = ins.argval if isinstance(ins.argval, tuple) else (ins.argval,)
        if ins.opname.startswith(("STORE_FAST", "DELETE_FAST")) and names[0] == name:
            stores += 1
        if ins.opname == "STORE_FAST_STORE_FAST" and names[-1] == name:
            stores += 1
        if ins.opname in _LOADS_LOCAL and names[-1] == name and nxt.opname == "RETURN_VALUE":
            returned = True
    return stores == 1 and returned


def _what_follows(code: CodeType, lasti: int) -> tuple[int, tuple[str, ...], int | None]:
    key = (id(code), lasti)
    found = _after_call.get(key)
    if found is None:
        found = _after_call[key] = (code, _call_at(code, lasti))
    return found[1]


def creation_frame(frame: FrameType) -> FrameType:
    """The frame that made a lock, from the first frame outside threading and pylockdep: callers of
    helpers that only return the lock they made take their place."""
    return creation_walk(frame)[0]


def creation_walk(frame: FrameType) -> tuple[FrameType, int]:
    """:func:`creation_frame` of ``frame``, and how many frames from ``frame`` outwards decided it
    (their code and offsets alone: see :func:`remember`), or 0 when the stack ended on the way."""
    looked = 1
    while True:
        if _what_follows(frame.f_code, frame.f_lasti)[1] != ("return",):
            return frame, looked
        caller = frame.f_back
        if caller is None:
            return frame, 0
        if is_internal(caller.f_code.co_filename, skip_threading=True):
            return frame, looked + 1
        frame = caller
        looked += 1


#: What :func:`recall` returns for a stack not remembered.
UNKNOWN = object()

# A memo of what was found by walking out from a frame, keyed by the frames the walk looked at:
# a trie whose edges are one frame's ``(id(code), offset)``, each to ``(code, next node)`` or, on
# the last frame looked at, ``(code, what was found)``.  Every entry holds its code object, so the
# id in its edge stays that code's.
SiteMemo = dict[tuple[int, int], tuple[CodeType, Any]]


#: The answers of a memo that one or two frames decided, kept by its user and indexed by the first
#: frame's offset: ``(code, caller's code, its offset, what was found)`` of the last such stack seen
#: at that offset (None and -1 for the caller when one frame decided).  The code objects are held, so
#: they are compared by identity: the user answers a lock made again where one was made before
#: with no lookup, and asks :func:`recall` otherwise (always for offsets past the end).
Recent = list[tuple[Any, Any, int, Any]]

#: What a :data:`Recent` holds for an offset it has seen no stack at; and how many offsets it holds.
NOT_RECENT = (None, None, -1, UNKNOWN)
RECENT_SLOTS = 2048


def no_recent() -> Recent:
    """A :data:`Recent` that matches no stack."""
    return [NOT_RECENT] * RECENT_SLOTS


def recall(memo: SiteMemo, frame: FrameType | None, recent: Recent) -> Any:
    """What :func:`remember` stored for the frames from ``frame`` outwards, else :data:`UNKNOWN`;
    an answer that one or two frames decided is kept in ``recent``."""
    first, depth = frame, 0
    node: Any = memo
    while frame is not None:
        entry = node.get((id(frame.f_code), frame.f_lasti))
        if entry is None:
            return UNKNOWN
        node = entry[1]
        depth += 1
        if type(node) is not dict:
            offset = first.f_lasti  # type: ignore[union-attr]
            if depth <= 2 and offset < RECENT_SLOTS:
                caller = (frame.f_code, frame.f_lasti) if depth == 2 else (None, -1)
                recent[offset] = (first.f_code, *caller, node)  # type: ignore[union-attr]
            return node
        frame = frame.f_back
    return UNKNOWN


def remember(memo: SiteMemo, frame: FrameType, looked: int, found: Any) -> None:
    """Store ``found`` (anything but a dict) for the ``looked`` frames from ``frame`` outwards,
    which decided it by their code and offsets alone; nothing when ``looked`` is 0."""
    node = memo
    for _ in range(looked - 1):
        code = frame.f_code
        node = node.setdefault((id(code), frame.f_lasti), (code, {}))[1]
        frame = frame.f_back  # type: ignore[assignment]
    if looked:
        node[id(frame.f_code), frame.f_lasti] = (frame.f_code, found)


def makes_attr(frame: FrameType) -> bool:
    """Whether ``frame`` (a :func:`creation_frame`) stores the lock it makes as ``self.attr``: a
    lock of a class per type of ``self`` (see :func:`owner_key`)."""
    return _what_follows(frame.f_code, frame.f_lasti)[1][:1] == ("attr",)


def owner_of(frame: FrameType) -> Any:
    """The instance a method running in ``frame`` makes a lock for: its first argument; None when
    that is a class (a class method's ``cls``), None or unbound.  (Reading a frame's locals costs
    as much as making the lock: this runs once per lock made where :func:`makes_attr`, on the pure
    path; the C stand-in reads the argument itself.)"""
    given = arguments(frame)
    owner = given[0] if given else None
    return None if isinstance(owner, type) else owner


def site_owner_keys(frame: FrameType, ltype: LockType) -> OwnerKeys:
    """The keys by owner type of the locks of ``ltype`` that ``frame`` (a :func:`creation_frame`
    that :func:`makes_attr`) makes: one dict per site, whatever stack reached it."""
    code = frame.f_code
    return _owner_keys.setdefault((id(code), frame.f_lasti, ltype), (code, {}))[1]


def owner_key(keys: OwnerKeys, frame: FrameType, kind: str, ltype: LockType) -> LockKey:
    """The key of a lock of ``ltype`` that ``frame`` (a :func:`creation_frame` that
    :func:`makes_attr`) makes for its ``self`` (:func:`owner_of`): one per descriptor
    (:func:`descriptor_key`), else one per type of ``self``, named for that type, kept in ``keys``,
    the site's (:func:`site_owner_keys`; see :func:`pylockdep._classes.key_for_owner`).  The C
    stand-in finds a type's key in ``keys`` itself, and comes here for a type not there: a
    descriptor's type never is."""
    owner = owner_of(frame)
    owner_type = None if owner is None else type(owner)
    if owner_type is not None and hasattr(owner_type, "__get__"):
        key = descriptor_key(owner, frame, kind, ltype)
        if key is not None:
            return key
    return key_for_owner(keys, owner_type, _new_owner_key, frame, kind, ltype)


def descriptor_key(descriptor: Any, frame: FrameType, kind: str, ltype: LockType) -> LockKey | None:
    """The key of a lock of ``ltype`` that ``frame`` makes for ``descriptor``: one per descriptor,
    named for where the descriptor was made (``cached_property.lock@app.py:12`` for the lock of the
    ``@cached_property`` at line 12), at the lock's site.  None (its type's key then) for one that
    cannot be referenced weakly or past :data:`DESCRIPTOR_KEYS` descriptors at the site."""
    site = (id(frame.f_code), frame.f_lasti, ltype)
    try:
        keys = _descriptor_keys.get(descriptor)
    except TypeError:  # neither hashable nor weakly referable
        return None
    key = keys.get(site) if keys is not None else None
    if key is not None:
        return key
    made = _descriptors_made.get(site, (None, 0))[1]
    if made >= DESCRIPTOR_KEYS:
        return None
    maker = frame.f_back
    while maker is not None and owner_of(maker) is descriptor:  # out of the descriptor's __init__
        maker = maker.f_back
    base = class_name(kind, frame, type(descriptor)).rpartition("@")[0]
    name = f"{base}@{format_file_line((maker.f_code, maker.f_lineno))}" if maker is not None else base
    key = LockKey(name, ltype, (frame.f_code, line_at(frame.f_code, frame.f_lasti)), None)
    try:
        _descriptor_keys.setdefault(descriptor, {})[site] = key
    except TypeError:
        return None
    _descriptors_made[site] = (frame.f_code, made + 1)
    return key


def _new_owner_key(owner: type | None, frame: FrameType, kind: str, ltype: LockType) -> LockKey:
    name, site = class_name(kind, frame, owner), (frame.f_code, line_at(frame.f_code, frame.f_lasti))
    # Not key_for() for an owner type: its registry would keep the type alive.
    return LockKey(name, ltype, site, None) if owner is not None else key_for(name, ltype, site)


def _declared_at(owner: type, attr: str) -> tuple[str, int] | None:
    """Where the source of class ``owner``, or of the first of its bases that does, declares
    ``attr`` in its body (a dataclass's or attrs' field, ``attr: T = field(...)`` or ``attr =
    ...``): the file and line; None when no source says so."""
    for klass in owner.__mro__[:-1]:
        found = _declared_in(klass, attr)
        if found is not None:
            return found
    return None


def _declared_in(owner: type, attr: str) -> tuple[str, int] | None:
    """:func:`_declared_at` for ``owner``'s own body, read with linecache from its class statement
    on: the first ``class Owner`` of its module's source (from the class's first line where Python
    tells it: 3.13)."""
    module = sys.modules.get(owner.__module__)
    filename = getattr(module, "__file__", None)
    if not isinstance(filename, str):
        return None
    lines = linecache.getlines(filename)
    first = getattr(owner, "__firstlineno__", 1)  # its first decorator's line, from 3.13
    header = re.compile(rf"\s*class\s+{re.escape(owner.__name__)}\b")
    start = next((n for n in range(max(first, 1), len(lines) + 1) if header.match(lines[n - 1])), None)
    if start is None:
        return None
    indent = _indent(lines[start - 1])
    body = None  # the indent of the body's statements
    field = re.compile(rf"{re.escape(attr)}\s*[:=]")
    for number in range(start + 1, len(lines) + 1):
        text = lines[number - 1]
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        if _indent(text) <= indent:
            return None  # the class body ended
        body = _indent(text) if body is None else body
        if _indent(text) == body and field.match(text.lstrip()):
            return filename, number
    return None


def _indent(line: str) -> int:
    """How many blanks ``line`` starts with."""
    return len(line) - len(line.lstrip())


def name_on_line(name: str, frame: FrameType) -> str:
    """``name``, for a class made by the call ``frame`` is in, with the call's column added when
    another call on its line made a class of that name first: two sites on one line are two
    classes, ``...:LINE`` and ``...:LINE:COL``."""
    code = frame.f_code
    offset, _, column = _what_follows(code, frame.f_lasti)
    return _on_line(name, code, offset, column, line_at(code, frame.f_lasti))


def _on_line(name: str, code: CodeType, offset: int, column: int | None, line: int) -> str:
    first = _first_on_line.setdefault((id(code), line, name), (code, offset))[1]
    return f"{name}:{column + 1}" if first != offset and column is not None else name


def class_name(kind: str, frame: FrameType, owner: type | None = None) -> str:
    """The class name of a lock of ``kind`` made by ``frame`` (a :func:`creation_frame`), for an
    instance of ``owner`` where :func:`makes_attr` (None: of the class that defines the method)."""
    code = frame.f_code
    found = _names.get((id(code), frame.f_lasti, kind)) if owner is None else None
    if found is not None:
        return found[1]
    offset, after, column = _what_follows(code, frame.f_lasti)
    if after[:1] == ("attr",) and (owner is not None or after[1]):
        base = f"{after[1] if owner is None else owner.__name__}.{after[2]}"
    elif after[:1] == ("name",):
        base = after[1]
    else:
        base = kind
    line = line_at(code, frame.f_lasti)
    declared = None
    if owner is not None and after[:1] == ("attr",) and code.co_filename.startswith("<"):
        declared = _declared_at(owner, after[2])  # code generated for the class: where the class says so
    if declared is not None:
        name = f"{base}@{short_filename(declared[0])}:{declared[1]}"
    else:
        name = f"{base}@{format_file_line((code, line))}"
    name = _on_line(name, code, offset, column, line)
    if owner is None:  # an owner's name is asked for once per key made: kept, it would keep the type
        _names[(id(code), frame.f_lasti, kind)] = (code, name)
    return name
