"""The dependency graph of lock classes.

An edge ``prev -> next`` records that ``next`` was taken while ``prev`` was held.  Each edge
remembers which of four kinds of dependency it has seen (lockdep's ``-(SR)->``, ``-(ER)->``,
``-(SN)->``, ``-(EN)->``: the first letter says whether ``prev`` was held Exclusively or Shared,
the second whether ``next`` was taken as a Recursive reader or Not) and where it was first made.

Only *strong* paths can deadlock: a path in which no ``*R`` edge is followed by an ``S*`` edge.
:meth:`Graph.find_path` is lockdep's breadth-first search over strong paths.

To keep a new edge cheap in a large graph the classes carry an incremental topological order: an
edge that agrees with the order cannot close a cycle, so no search is needed.  An edge ``prev ->
next`` against the order searches forwards from ``next`` among the classes placed before ``prev``
(the bounded search of Pearce and Kelly, "A dynamic topological sort algorithm for directed acyclic
graphs", 2006); if it does not find ``prev``, what it found moves, in its order, to just after
``prev``.  Places are labels of an order-maintenance list (Bender, Cole, Demaine, Farach-Colton and
Zito, "Two simplified algorithms for maintaining order in a list", 2002), so a move renumbers no
other class; and each class keeps a floor under its successors' labels, so the search passes over
a class whose successors all lie beyond ``prev`` without looking at its edges.  A re-sort costs
the classes that move plus the edges of those that may have a successor among them, not a walk
over the region between the two places nor over every edge of the classes at its ends.  Edges
that do close a cycle (a reported one, or a harmless weak one) are kept aside in
:attr:`Graph.unordered`.
For the same reason each class knows which irq-safe usage bits reach it along any path
(:meth:`Graph.irq_safe_reaching`), so a new edge far from every irq-safe class needs no search.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter

from ._classes import LockClass, LockKey
from ._frames import Site, Stack

# Dependency kinds, as bits of Edge.types.
DEP_SR = 1
DEP_ER = 2
DEP_SN = 4
DEP_EN = 8
DEP_NAMES = {DEP_SR: "SR", DEP_ER: "ER", DEP_SN: "SN", DEP_EN: "EN"}
_S_STAR = DEP_SR | DEP_SN
_STAR_N = DEP_SN | DEP_EN
_STAR_R = DEP_SR | DEP_ER


def dep_kind(prev_read: int, next_read: int) -> int:
    """The dependency bit for ``next`` (read mode ``next_read``) taken under ``prev`` (``prev_read``).

    Read modes: 0 exclusive, 1 non-recursive reader, 2 recursive reader.
    """
    exclusive = prev_read == 0
    non_recursive = next_read != 2
    return 1 << (exclusive + 2 * non_recursive)


def _backwards(types: int) -> int:
    """Dependency bits of an edge as seen when walking it backwards.

    Walking ``prev <- next``, the roles swap: "is the lock we come from held exclusively" is now
    "was ``next`` taken non-recursively", so ER and SN trade places.
    """
    swapped = types & (DEP_SR | DEP_EN)
    if types & DEP_ER:
        swapped |= DEP_SN
    if types & DEP_SN:
        swapped |= DEP_ER
    return swapped


#: A loop that took two locks one after another, as a dependency keeps it: the loop's site and
#: the name of the thread that ran it (see :func:`pylockdep._checks.check_loop_order`).
LoopMark = tuple[Site, str]


@dataclass(eq=False)
class Edge:
    """One dependency ``prev -> next`` with every kind seen and where it was first established."""

    prev: LockClass
    next: LockClass
    types: int
    stack: Stack
    thread: str
    origin: str | None = None
    ordered: bool = True
    #: The classes of threading's locks held every time the dependency was made, on every chain
    #: validated that made it (see :func:`pylockdep._checks.check_gated`).
    guards: frozenset[LockClass] = frozenset()
    #: The classes of threading's locks held, once at least, when the dependency was made (None
    #: where not known: a merged graph); see :func:`pylockdep._checks.check_gated`.
    held_ever: frozenset[LockClass] | None = None
    #: The loop that made the dependency every time, in one thread, if one did: its site and
    #: that thread (see :func:`pylockdep._checks.check_loop_order`); in a merged graph, its
    #: :func:`pylockdep._export.loop_id` (each run's threads are its own).
    loop: LoopMark | str | None = None
    #: Whether a thread that no signal handler interrupts (not the main thread) made the
    #: dependency, once at least (see :func:`pylockdep._checks.check_signal_order`).
    off_main: bool = False

    @property
    def kinds(self) -> str:
        """The dependency kinds seen, like ``EN`` or ``SR|EN``."""
        return "|".join(name for bit, name in DEP_NAMES.items() if self.types & bit)


@dataclass
class PathStep:
    """A class reached by a search, with the edge that led to it (``None`` at the start)."""

    cls: LockClass
    edge: Edge | None
    only_recursive: bool
    parent: PathStep | None = field(default=None, repr=False)

    def walk(self) -> list[PathStep]:
        """The steps from the search's start to this one."""
        steps = []
        step: PathStep | None = self
        while step is not None:
            steps.append(step)
            step = step.parent
        steps.reverse()
        return steps

    def edges(self) -> list[Edge]:
        """The dependencies the search followed from its start to this step, in order."""
        return [step.edge for step in self.walk()[1:]]  # type: ignore[misc]  # only the start has none


_BY_ORD = attrgetter("ord")
# Labels of classes appended to the order are this far apart.
_GAP = 1 << 32
# A relabelled range of 2**i labels holds at most (2 / _DENSITY)**i classes: the larger the range,
# the sparser it is left (Bender et al.'s threshold; between 1 and 2).
_DENSITY = 1.5


class _Place:
    """A class's place in the order list, and a floor under the labels of its ordered successors.

    ``prior``/``later`` are its neighbours in the list.  No ordered successor has a label below
    ``first`` (infinite while there is none): a new edge or a relabelling lowers it where needed, a
    move only raises labels, and a search that looks at every edge of the class raises it again.
    """

    __slots__ = ("prior", "later", "first")

    def __init__(self, prior: LockClass | None) -> None:
        self.prior = prior
        self.later: LockClass | None = None
        self.first: float = math.inf


class LimitExceeded(Exception):
    """A capacity limit set by the user was reached; the message is the kernel's ``BUG:`` line."""


class Graph:
    """Lock classes and the dependencies between them, for one validator.

    Not thread-safe: the validator serialises every change under its graph lock.
    """

    def __init__(self, max_classes: int | None = None, max_dependencies: int | None = None) -> None:
        self.classes: list[LockClass] = []
        self.nr_edges = 0
        self.unordered: list[Edge] = []
        self.max_classes = max_classes
        self.max_dependencies = max_dependencies
        # Whether some edge takes its next lock as a recursive reader (-(*R)->): a search may then
        # reach a class first by a weak path and miss a cycle through it, as the kernel's does.
        self.recursive_reads = False
        self._name_counts: dict[str, int] = {}
        # Irq-safe usage bits of each class and of every class with a path to it.
        self._safe_reaching: dict[LockClass, int] = {}
        # The topological order: a doubly linked list of places, ``LockClass.ord`` their labels.
        self._places: dict[LockClass, _Place] = {}
        self._last: LockClass | None = None
        # The last forward search, (src, dst, result): a new edge's may_reach() and its _reorder()
        # ask the same question.  Any new edge forgets it.
        self._last_search: tuple[LockClass, LockClass, set[LockClass] | None] | None = None

    # -- classes -------------------------------------------------------------------------------

    def new_class(self, key: LockKey, subclass: int) -> LockClass:
        """Register the class of ``key``/``subclass``; it goes last in the topological order."""
        if self.max_classes is not None and len(self.classes) >= self.max_classes:
            raise LimitExceeded("BUG: MAX_LOCKDEP_KEYS too low!")
        if subclass == 0 or not any(c.key is key for c in self.classes):
            count = self._name_counts.get(key.name, 0) + 1
            self._name_counts[key.name] = count
            base = key.name if count == 1 else f"{key.name}#{count}"
        else:
            base = next(c.name.split("/")[0] for c in self.classes if c.key is key)
        name = f"{base}/{subclass}" if subclass else base
        cls = LockClass(len(self.classes), key, subclass, name)
        self.classes.append(cls)
        last = self._last
        self._places[cls] = _Place(last)
        self._last = cls
        if last is None:
            cls.ord = 0
        else:
            self._places[last].later = cls
            self._label(last, [cls])
        return cls

    # -- edges ---------------------------------------------------------------------------------

    def add_types(self, edge: Edge, kind: int) -> None:
        """Give the existing ``edge`` the dependency bits ``kind`` too."""
        edge.types |= kind
        self.recursive_reads = self.recursive_reads or bool(kind & _STAR_R)

    def add_edge(
        self,
        prev: LockClass,
        nxt: LockClass,
        kind: int,
        stack: Stack,
        thread: str,
        origin: str | None,
        closes_cycle: bool,
        guards: frozenset[LockClass] = frozenset(),
        loop: LoopMark | str | None = None,
        off_main: bool = False,
        held_ever: frozenset[LockClass] | None = None,
    ) -> Edge:
        """Store the new dependency ``prev -> nxt`` (made while holding ``guards``, by the loop at
        ``loop`` if one made it, by a thread other than the main one if ``off_main``; ``held_ever``
        as :attr:`Edge.held_ever`) and keep the topological order valid.

        ``closes_cycle`` says the caller already knows ``nxt`` reaches ``prev``; such an edge can
        have no place in the order and is kept in :attr:`unordered`.
        """
        if self.max_dependencies is not None and self.nr_edges >= self.max_dependencies:
            raise LimitExceeded("BUG: MAX_LOCKDEP_ENTRIES too low!")
        self.recursive_reads = self.recursive_reads or bool(kind & _STAR_R)
        edge = Edge(
            prev, nxt, kind, stack, thread, origin, guards=guards, loop=loop, off_main=off_main, held_ever=held_ever
        )
        if prev is not nxt and (closes_cycle or not self._reorder(prev, nxt)):
            edge.ordered = False
            self.unordered.append(edge)
        elif prev is not nxt:
            place = self._places[prev]
            if nxt.ord < place.first:
                place.first = nxt.ord
        prev.after[nxt] = edge
        nxt.before[prev] = edge
        self.nr_edges += 1
        self._last_search = None
        bits = self._safe_reaching.get(prev, 0)
        if bits:
            self._spread_safe(nxt, bits)
        return edge

    def mark_irq_safe(self, cls: LockClass, bits: int) -> None:
        """Note that ``cls`` gained irq-safe (USED_IN) usage ``bits``."""
        self._spread_safe(cls, bits)

    def irq_safe_reaching(self, cls: LockClass) -> int:
        """The irq-safe usage bits of ``cls`` and of every class with a path (of any kind) to it.

        A superset of what lockdep's backward search over strong paths can find, so zero proves
        that no irq-safe class stands behind ``cls``.
        """
        return self._safe_reaching.get(cls, 0)

    def _spread_safe(self, start: LockClass, bits: int) -> None:
        """Add ``bits`` to ``start`` and everything it reaches, stopping where they are known.

        A class gains each bit once, so keeping this up to date costs O(edges) over the graph's life.
        """
        known = self._safe_reaching
        stack = [start]
        while stack:
            cls = stack.pop()
            have = known.get(cls, 0)
            if not bits & ~have:
                continue
            known[cls] = have | bits
            stack.extend(cls.after)

    def may_reach(self, src: LockClass, dst: LockClass) -> bool:
        """False only when no path leads from ``src`` to ``dst``; cheap in the common case.

        Paths made of ordered edges only climb the topological order, so from ``src`` they reach
        nothing ordered before it.  A path may still use an unordered edge whose tail is at or
        after ``src``; when there is one the answer is a conservative True.
        """
        if src is dst:
            return True
        if src.ord < dst.ord and self._ordered_descendants(src, dst) is None:
            return True
        return any(e.prev.ord >= src.ord for e in self.unordered)

    def _ordered_descendants(self, src: LockClass, dst: LockClass) -> set[LockClass] | None:
        """What ordered edges lead to from ``src`` (``src`` included), or None if they lead to ``dst``.

        Only classes ordered before ``dst`` are visited: ordered edges climb the order, so no path of
        them to ``dst`` passes a class placed after it.  A class whose remembered earliest successor
        lies after ``dst`` has no edge worth following; the edges of any other class visited are
        looked at, and its earliest successor noted.
        """
        last = self._last_search
        if last is not None and last[0] is src and last[1] is dst:
            return last[2]
        found = self._search_forward(src, dst)
        self._last_search = (src, dst, found)
        return found

    def _search_forward(self, src: LockClass, dst: LockClass) -> set[LockClass] | None:
        """:meth:`_ordered_descendants`, worked out."""
        limit = dst.ord
        places = self._places
        seen = {src}
        stack = [src]
        while stack:
            cls = stack.pop()
            place = places[cls]
            if place.first > limit:
                continue
            first = math.inf
            after = cls.after
            for nxt in after:
                label = nxt.ord
                if label < first:
                    first = label
                if label <= limit and nxt not in seen and after[nxt].ordered:
                    if nxt is dst:
                        return None
                    seen.add(nxt)
                    stack.append(nxt)
            place.first = first
        return seen

    def _reorder(self, prev: LockClass, nxt: LockClass) -> bool:
        """Make room for ``prev -> nxt`` in the order; False if it closes a cycle.

        The classes placed before ``prev`` that ordered edges lead to from ``nxt`` (``nxt``
        included) move, keeping their order, to just after ``prev``: every other ordered edge into
        or out of them still climbs, and nothing moves towards the front.
        """
        if nxt.ord > prev.ord:
            return True
        forward = self._ordered_descendants(nxt, prev)
        if forward is None:
            return False
        self._move_after(prev, sorted(forward, key=_BY_ORD))
        return True

    def _move_after(self, anchor: LockClass, run: list[LockClass]) -> None:
        """Take the classes of ``run`` out of the list and put them back, in that order, after ``anchor``."""
        places = self._places
        for cls in run:
            place = places[cls]
            prior, later = place.prior, place.later
            if prior is not None:
                places[prior].later = later
            if later is not None:
                places[later].prior = prior
            else:
                self._last = prior
        prior, later = anchor, places[anchor].later
        for cls in run:
            places[prior].later = cls
            places[cls].prior = prior
            prior = cls
        places[prior].later = later
        if later is None:
            self._last = prior
        else:
            places[later].prior = prior
        self._label(anchor, run)

    def _label(self, anchor: LockClass, run: list[LockClass]) -> None:
        """Give labels to ``run``, the classes linked just after ``anchor`` in the list.

        They share the room up to the next label evenly (at most :data:`_GAP` apart at the end of
        the list); without room, the labels of the smallest aligned range around ``anchor`` that is
        sparse enough are spread evenly over it, lowering the floors (:class:`_Place`) it breaks.
        """
        low = anchor.ord
        later = self._places[run[-1]].later
        high = later.ord if later is not None else low + _GAP * (len(run) + 1)
        step = (high - low) // (len(run) + 1)
        if step:
            for i, cls in enumerate(run, 1):
                cls.ord = low + i * step
            return
        places = self._places
        first, last = anchor, run[-1]
        count = 1 + len(run)
        bits = 0
        while True:
            bits += 1
            base = low >> bits << bits
            end = base + (1 << bits)
            while (before := places[first].prior) is not None and before.ord >= base:
                first = before
                count += 1
            while (after := places[last].later) is not None and after.ord < end:
                last = after
                count += 1
            if count <= (2 / _DENSITY) ** bits:
                break
        step = (1 << bits) // count
        cls: LockClass | None = first
        label = base
        while cls is not None:
            cls.ord = label
            for pred in cls.before:
                place = places[pred]
                if label < place.first:
                    place.first = label
            label += step
            cls = places[cls].later if cls is not last else None

    # -- searches ------------------------------------------------------------------------------

    def find_path(
        self,
        start: LockClass,
        only_recursive: bool,
        match: Callable[[PathStep], bool],
        backwards: bool = False,
        passable: Callable[[Edge], bool] | None = None,
    ) -> PathStep | None:
        """Breadth-first search along strong paths from ``start``; the first step ``match`` accepts.

        ``only_recursive`` says how ``start`` itself is held: as lockdep's ``only_xr``, true when
        the dependency into it is a recursive read (forwards) or it is held shared (backwards).
        Each class is expanded once, on first arrival, even when that arrival is not strong, as
        lockdep does; the path found is a shortest one.  With ``passable``, only the edges it
        accepts are walked.
        """
        root = PathStep(start, None, only_recursive)
        seen = {start}
        if match(root):
            return root
        queue = deque([root])
        while queue:
            step = queue.popleft()
            neighbours = step.cls.before if backwards else step.cls.after
            for cls, edge in neighbours.items():
                if cls in seen or (passable is not None and not passable(edge)):
                    continue
                seen.add(cls)
                types = _backwards(edge.types) if backwards else edge.types
                if step.only_recursive:
                    types &= ~_S_STAR
                if not types:
                    continue
                nxt = PathStep(cls, edge, not types & _STAR_N, step)
                if match(nxt):
                    return nxt
                queue.append(nxt)
        return None

    def edges(self) -> Iterator[Edge]:
        """Every edge, grouped by tail class."""
        for cls in self.classes:
            yield from cls.after.values()
