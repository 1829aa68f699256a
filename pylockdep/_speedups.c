/*
 * pylockdep._speedups: the acquire/release fast path in C.
 *
 * This is an accelerator, not a second validator.  It handles exactly one case, the common one:
 * a thread takes a lock exclusively, in a chain of held locks that the validator has already
 * checked, and later releases the lock it took last.  It reads the same Python objects as
 * pylockdep._locks._acquire/_release (the active validator, the thread's Task, the lock's class)
 * and makes the same changes to them, as pylockdep._held's push() and pop() do: a held-lock entry
 * (a pylockdep._held.HeldLock) pushed or popped, the chain key updated as chain_key() computes it.
 *
 * Everything else (validation off, a thread seen for the first time, a chain not seen before, a
 * contended lock, a release out of order, other arguments) is handed, untouched, to the Python
 * method the accelerated one wraps.  The Python code stays the definition of the semantics;
 * PYLOCKDEP_PURE_PYTHON=1 runs without this module, and the test suite runs both ways.
 *
 * The objects it makes are method descriptors, installed by pylockdep/_fastpath.py:
 * ``Acquire(slow, lock_type, returns_self, skip_file, recursive)`` for ``__enter__``/``acquire``
 * and ``Release(slow, lock_type, arity, recursive)`` for ``__exit__``/``release``.  With
 * ``recursive`` (threading.RLock) the owner's re-entry and inner releases only count.
 * accelerate_new() gives a kernel lock type a constructor for a lock made again at a known site.
 * Reader-writer locks keep their state in an RWCore, which this module takes and releases without
 * a call, and their methods (``read()``, ``read_lock()``, ``up_write()``...) are RWMethods.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <structmember.h>

/* SPEEDUPS_ABI and the held entry's fields (H_*, held_fields), generated from the Python code. */
#include "_held_layout.h"

/*
 * Slots are read at their offsets in the instance, found once from the classes' member
 * descriptors, after checking the instance's type: a generic attribute lookup costs ten times
 * more, and this path is nothing but lookups.
 */
typedef struct {
    PyTypeObject *type;
    Py_ssize_t offset[16];
    int recursive;  /* a lock's layout: threading.RLock's, with an owner ident and a count */
} Layout;

#define SLOT(obj, layout, i) (*(PyObject **)((char *)(obj) + (layout).offset[i]))

/* The offset of the __slots__ attribute ``name`` of the class ``type``; -1 with an exception set. */
static Py_ssize_t
slot_offset(PyObject *type, PyObject *name)
{
    PyObject *descr = PyObject_GetAttr(type, name);
    Py_ssize_t offset = -1;

    if (descr == NULL)
        return -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type) && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX)
        offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    else
        PyErr_Format(PyExc_TypeError, "%s.%U is not a __slots__ attribute", ((PyTypeObject *)type)->tp_name, name);
    Py_DECREF(descr);
    return offset;
}

static int
layout_init(Layout *layout, PyObject *type, const char *const *names)
{
    if (!PyType_Check(type)) {
        PyErr_Format(PyExc_TypeError, "expected a class, not %.100s", Py_TYPE(type)->tp_name);
        return -1;
    }
    for (int i = 0; names[i] != NULL; i++) {
        PyObject *name;

        if (i >= (int)(sizeof layout->offset / sizeof layout->offset[0])) {
            PyErr_Format(PyExc_TypeError, "%s: too many slots for the C fast path's layout",
                         ((PyTypeObject *)type)->tp_name);
            return -1;
        }
        if ((name = PyUnicode_FromString(names[i])) == NULL)
            return -1;
        layout->offset[i] = slot_offset(type, name);
        Py_DECREF(name);
        if (layout->offset[i] < 0)
            return -1;
    }
    Py_XSETREF(layout->type, (PyTypeObject *)Py_NewRef(type));
    return 0;
}

/* Whether a constructor of ``type`` got no arguments; 0 with TypeError set when it got some. */
static int
no_arguments(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    const char *dot = strrchr(type->tp_name, '.');

    if (PyTuple_GET_SIZE(args) == 0 && (kwds == NULL || PyDict_GET_SIZE(kwds) == 0))
        return 1;
    PyErr_Format(PyExc_TypeError, "%s() takes no arguments", dot != NULL ? dot + 1 : type->tp_name);
    return 0;
}

/* Slot i of obj, replacing the old value (a new reference is taken). */
static inline void
slot_set(PyObject *obj, Py_ssize_t offset, PyObject *value)
{
    PyObject **slot = (PyObject **)((char *)obj + offset);
    Py_XSETREF(*slot, Py_NewRef(value));
}

/* The classes whose slots the fast path reads, and the held entries' type (set by setup()). */
static PyObject *g_active;
static PyTypeObject *g_held_type;
static Layout active_layout, validator_layout, task_layout, key_layout, class_layout, trace_layout;
enum { ACTIVE_VALIDATOR };
static const char *const active_slots[] = {"validator", NULL};
enum { V_OFF, V_LOCAL, V_CHAINS, V_CHAINS_FORGOTTEN, V_MAX_LOCK_DEPTH, V_PREEMPT_RT };
static const char *const validator_slots[] = {"off", "local", "chains", "chains_forgotten", "max_lock_depth",
                                              "preempt_rt", NULL};
enum {
    T_HELD, T_KEY, T_CTX, T_IRQ, T_SPINS, T_FOREIGN_RELEASES,
    /* the context counters (Task.update_ctx() hashes them in this order), and what sections change */
    T_PREEMPT, T_HARDIRQ, T_HARDIRQ_THREADED, T_SOFTIRQ, T_BH, T_IRQS_OFF, T_RCU,
    T_IRQTRACE, T_ATOMIC_SITE, T_ATOMIC_DEPTH
};
static const char *const task_slots[] = {"held", "key", "ctx", "irq", "spins", "foreign_releases", "preempt",
                                         "hardirq", "hardirq_threaded", "softirq", "bh", "irqs_off", "rcu",
                                         "irqtrace", "atomic_site", "atomic_depth", NULL};
#define N_CONTEXT_COUNTERS 7  /* T_PREEMPT .. T_RCU */
enum {
    TR_EVENTS, TR_HARDIRQ_ENABLE_EVENT, TR_HARDIRQ_ENABLE_SITE, TR_HARDIRQ_DISABLE_EVENT, TR_HARDIRQ_DISABLE_SITE,
    TR_SOFTIRQ_ENABLE_EVENT, TR_SOFTIRQ_ENABLE_SITE, TR_SOFTIRQ_DISABLE_EVENT, TR_SOFTIRQ_DISABLE_SITE
};
static const char *const trace_slots[] = {"events", "hardirq_enable_event", "hardirq_enable_site",
                                          "hardirq_disable_event", "hardirq_disable_site", "softirq_enable_event",
                                          "softirq_enable_site", "softirq_disable_event", "softirq_disable_site",
                                          NULL};
enum { K_CACHE };
static const char *const key_slots[] = {"cache", NULL};
enum { C_VARIANTS, C_SPINS, C_USAGE, C_VALIDATED };
static const char *const class_slots[] = {"variants", "spins", "usage", "validated", NULL};
/* A lock type's slots: each accelerated method has the layout of the class it was made for. */
enum { L_KEY, L_REAL, L_OWNER, L_IDENT, L_COUNT };
static const char *const lock_slots[] = {"_key", "_real", "_owner", NULL};
static const char *const rlock_slots[] = {"_key", "_real", "_owner", "_ident", "_count", NULL};

/* The ints 0 .. N_SMALL - 1, made once (counts of spinning locks and RLock re-entries are small). */
#define N_SMALL 256
static PyObject *g_small[N_SMALL];

/* A new reference to the int ``value``, from g_small when it is there (nothing made then). */
static inline PyObject *
int_of(long value)
{
    return value >= 0 && value < N_SMALL ? Py_NewRef(g_small[value]) : PyLong_FromLong(value);
}

static PyObject *g_zero, *g_one, *g_two, *g_minus_one, *s_task, *s_depth_exceeded, *s_cache_key, *s_try, *s_unlock;

#define IS(obj, layout) ((obj) != NULL && PyObject_TypeCheck((obj), (layout).type))

/*
 * Recent: the last few answers of a lookup, kept by what they were looked up from, compared by
 * identity: up to RECENT_PARTS (object, number) parts, such as the (code object, instruction
 * offset) of each frame of a stack, or a name.  An entry holds its objects, so an identity stays
 * that object's; the lookups whose answers are kept only grow, so a kept answer stays true.  Entries
 * are reused in turn.
 */
#define RECENT_PARTS 4
#define N_RECENT 8

typedef struct {
    int n;  /* parts in use; 0: unused */
    PyObject *obj[RECENT_PARTS];
    int num[RECENT_PARTS];
    PyObject *answer;
} RecentEntry;

typedef struct {
    RecentEntry entries[N_RECENT];
    int next;
} Recent;

/* The answer (borrowed) kept for parts that begin with an entry's parts (all of them, when every
 * entry has as many), or NULL. */
static PyObject *
recent_find(const Recent *r, PyObject *const *obj, const int *num, int n)
{
    for (const RecentEntry *e = r->entries; e < r->entries + N_RECENT; e++) {
        int i = 0;

        if (e->n == 0 || e->n > n)
            continue;
        while (i < e->n && e->obj[i] == obj[i] && e->num[i] == num[i])
            i++;
        if (i == e->n)
            return e->answer;
    }
    return NULL;
}

/* The most parts an entry has (how much of a stack recent_find() may compare). */
static int
recent_depth(const Recent *r)
{
    int most = 0;

    for (const RecentEntry *e = r->entries; e < r->entries + N_RECENT; e++)
        most = e->n > most ? e->n : most;
    return most;
}

/* Keep ``answer`` for the ``n`` parts given, in place of the oldest entry. */
static void
recent_keep(Recent *r, PyObject *const *obj, const int *num, int n, PyObject *answer)
{
    RecentEntry *e = &r->entries[r->next];
    PyObject *old[RECENT_PARTS + 1];

    r->next = (r->next + 1) % N_RECENT;
    for (int i = 0; i < RECENT_PARTS; i++) {
        old[i] = e->obj[i];
        e->obj[i] = i < n ? Py_NewRef(obj[i]) : NULL;
        e->num[i] = i < n ? num[i] : 0;
    }
    old[RECENT_PARTS] = e->answer;
    e->answer = Py_NewRef(answer);
    e->n = n;
    for (int i = 0; i <= RECENT_PARTS; i++)  /* last: a decref may run Python code */
        Py_XDECREF(old[i]);
}

static int
recent_traverse(Recent *r, visitproc visit, void *arg)
{
    for (RecentEntry *e = r->entries; e < r->entries + N_RECENT; e++) {
        for (int i = 0; i < e->n; i++)
            Py_VISIT(e->obj[i]);
        Py_VISIT(e->answer);
    }
    return 0;
}

static void
recent_clear(Recent *r)
{
    for (RecentEntry *e = r->entries; e < r->entries + N_RECENT; e++) {
        e->n = 0;  /* no match while its references go (a decref may run Python code) */
        for (int i = 0; i < RECENT_PARTS; i++)
            Py_CLEAR(e->obj[i]);
        Py_CLEAR(e->answer);
    }
}

/*
 * What the fast path keeps per thread, in the thread state's dict (so it goes when the thread does):
 * the thread's Task for one validator, found once through the validator's threading.local, the
 * ints it made last (chain keys, instruction offsets), to be used again rather than made anew, and
 * the chain keys it found in that validator's chain cache lately (see take_known).
 * ``local`` is a strong reference, so while it matches the active validator's, ``task`` is the
 * Task that ``v.local.task`` would give (Validator.new_task() sets it, once per thread; an asyncio
 * task's step swaps its holder in and out, and forget_task() drops ``task`` each time).
 */
#define N_INTS 16
typedef struct {
    PyObject_HEAD
    PyObject *local;
    PyObject *task;
    PyObject *ident;  /* the thread's ident as an int, made on first use */
    PyObject *ints[N_INTS];
    Py_ssize_t values[N_INTS];
    int next_int;
    Recent sites;  /* sites (code, line) of with-blocks seen last, by code and instruction offset */
    Recent chains;  /* chain keys in local's validator's chains, by (prev key, ctx, variant) and era */
} ThreadCache;

static int
threadcache_traverse(ThreadCache *self, visitproc visit, void *arg)
{
    Py_VISIT(self->local);
    Py_VISIT(self->task);
    Py_VISIT(self->ident);
    int err = recent_traverse(&self->sites, visit, arg);
    return err ? err : recent_traverse(&self->chains, visit, arg);
}

static int
threadcache_clear(ThreadCache *self)
{
    Py_CLEAR(self->local);
    Py_CLEAR(self->task);
    Py_CLEAR(self->ident);
    for (int i = 0; i < N_INTS; i++)
        Py_CLEAR(self->ints[i]);
    recent_clear(&self->sites);
    recent_clear(&self->chains);
    return 0;
}

/*
 * The thread that thread_cache() answered for last, by its PyThreadState and that state's id (an id
 * is never given to another thread state), and its cache, borrowed: the cache's dealloc forgets it.
 * Most acquisitions are made by the thread that made the last one, which then needs no dict lookup.
 */
static PyThreadState *g_last_tstate;
static uint64_t g_last_tstate_id;
static ThreadCache *g_last_cache;

static void
threadcache_dealloc(ThreadCache *self)
{
    if (g_last_cache == self)
        g_last_cache = NULL;
    PyObject_GC_UnTrack(self);
    threadcache_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ThreadCacheType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylockdep._speedups.ThreadCache",
    .tp_doc = "The fast path's per-thread state (private).",
    .tp_basicsize = sizeof(ThreadCache),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)threadcache_dealloc,
    .tp_traverse = (traverseproc)threadcache_traverse,
    .tp_clear = (inquiry)threadcache_clear,
};

/* A new reference to an int of ``value``: one this thread made recently, or a new one kept for later. */
static PyObject *
cached_int(ThreadCache *c, Py_ssize_t value)
{
    PyObject *made;

    for (int i = 0; i < N_INTS; i++)
        if (c->values[i] == value && c->ints[i] != NULL)
            return Py_NewRef(c->ints[i]);
    made = PyLong_FromSsize_t(value);
    if (made == NULL)
        return NULL;
    Py_XSETREF(c->ints[c->next_int], Py_NewRef(made));
    c->values[c->next_int] = value;
    c->next_int = (c->next_int + 1) % N_INTS;
    return made;
}

/* The calling thread's cache (borrowed), found in its thread state's dict or made there; NULL (no
 * exception) when it cannot be. */
static ThreadCache *
thread_cache(void)
{
    PyThreadState *ts = PyThreadState_Get();
    PyObject *tdict;
    ThreadCache *c;

    if (ts == g_last_tstate && ts->id == g_last_tstate_id && g_last_cache != NULL)
        return g_last_cache;
    if ((tdict = PyThreadState_GetDict()) == NULL)
        return NULL;
    c = (ThreadCache *)PyDict_GetItemWithError(tdict, s_cache_key);
    if (c == NULL) {
        if (PyErr_Occurred())
            goto fail;
        c = PyObject_GC_New(ThreadCache, &ThreadCacheType);
        if (c == NULL)
            goto fail;
        c->local = c->task = c->ident = NULL;
        for (int i = 0; i < N_INTS; i++)
            c->ints[i] = NULL;
        c->next_int = 0;
        memset(&c->sites, 0, sizeof c->sites);
        memset(&c->chains, 0, sizeof c->chains);
        PyObject_GC_Track(c);
        if (PyDict_SetItem(tdict, s_cache_key, (PyObject *)c) < 0) {
            Py_DECREF(c);
            goto fail;
        }
        Py_DECREF(c);  /* the thread's dict keeps it */
    } else if (!Py_IS_TYPE(c, &ThreadCacheType)) {
        return NULL;
    }
    g_last_tstate = ts;
    g_last_tstate_id = ts->id;
    g_last_cache = c;
    return c;
fail:
    PyErr_Clear();
    return NULL;
}

/* The calling thread's validator, Task and cache, borrowed; 0 when the fast path does not apply:
 * validation is off or the thread has no Task yet. */
static int
current_task(PyObject **v_out, PyObject **t_out, ThreadCache **c_out)
{
    PyObject *v, *local, *t;
    ThreadCache *c;

    if (g_active == NULL)
        return 0;  /* setup() not called, or failed */
    v = SLOT(g_active, active_layout, ACTIVE_VALIDATOR);
    if (!IS(v, validator_layout) || SLOT(v, validator_layout, V_OFF) != Py_False)
        return 0;
    if ((local = SLOT(v, validator_layout, V_LOCAL)) == NULL || (c = thread_cache()) == NULL)
        return 0;
    if (c->local != local || c->task == NULL) {
        t = PyObject_GetAttr(local, s_task);
        if (t == NULL)
            goto fail;
        if (!IS(t, task_layout)) {
            Py_DECREF(t);
            return 0;
        }
        Py_XSETREF(c->task, t);
        if (c->local != local) {  /* another validator: its chain cache is another */
            recent_clear(&c->chains);
            Py_XSETREF(c->local, Py_NewRef(local));
        }
    }
    *v_out = v;
    *t_out = c->task;
    *c_out = c;
    return 1;
fail:
    PyErr_Clear();
    return 0;
}

/* The value of ``obj`` in ``*value`` when it is an exact int of one digit at most (|value| < 2**30:
 * read in place, with no call); 0 for anything else. */
static inline int
compact_value(PyObject *obj, long *value)
{
    if (obj == NULL || !PyLong_CheckExact(obj))
        return 0;
#if PY_VERSION_HEX >= 0x030C0000
    if (!PyUnstable_Long_IsCompact((PyLongObject *)obj))
        return 0;
    *value = (long)PyUnstable_Long_CompactValue((PyLongObject *)obj);
#else
    Py_ssize_t size = Py_SIZE(obj);
    if (size < -1 || size > 1)
        return 0;
    *value = (long)size * (long)((PyLongObject *)obj)->ob_digit[0];
#endif
    return 1;
}

/* hash(tuple(items)), as CPython's tuple hash computes it, without making the tuple. */
#if SIZEOF_PY_UHASH_T > 4
#define XXPRIME_1 ((Py_uhash_t)11400714785074694791ULL)
#define XXPRIME_2 ((Py_uhash_t)14029467366897019727ULL)
#define XXPRIME_5 ((Py_uhash_t)2870177450012600261ULL)
#define XXROTATE(x) ((x << 31) | (x >> 33))
#else
#define XXPRIME_1 ((Py_uhash_t)2654435761UL)
#define XXPRIME_2 ((Py_uhash_t)2246822519UL)
#define XXPRIME_5 ((Py_uhash_t)374761393UL)
#define XXROTATE(x) ((x << 13) | (x >> 19))
#endif

static Py_hash_t
hash_items(PyObject *const *items, Py_ssize_t n)
{
    Py_uhash_t acc = XXPRIME_5;

    for (Py_ssize_t i = 0; i < n; i++) {
        Py_uhash_t lane;
        long small;

        if (items[i] == Py_False || items[i] == Py_True)
            lane = items[i] == Py_True;  /* hash(True) == 1 */
        else if (compact_value(items[i], &small))
            lane = (Py_uhash_t)(small == -1 ? -2 : small);  /* an int below 2**30 is its own hash (but -1) */
        else if ((lane = (Py_uhash_t)PyObject_Hash(items[i])) == (Py_uhash_t)-1)
            return -1;
        acc += lane * XXPRIME_2;
        acc = XXROTATE(acc);
        acc *= XXPRIME_1;
    }
    acc += (Py_uhash_t)n ^ (XXPRIME_5 ^ 3527539UL);
    if (acc == (Py_uhash_t)-1)
        return 1546275796;
    return (Py_hash_t)acc;
}

/* Whether other threads have released locks this thread holds (the slow path sorts them out). */
static int
has_foreign_releases(PyObject *t)
{
    PyObject *fr = SLOT(t, task_layout, T_FOREIGN_RELEASES);
    return fr == NULL || !PyList_Check(fr) || PyList_GET_SIZE(fr) != 0;
}

/* Whether ``flag`` (a bool, as a rule) is true; an error counts as false. */
static inline int
is_true(PyObject *flag)
{
    return flag == Py_True || (flag != Py_False && PyObject_IsTrue(flag) == 1);
}

/* t.spins += delta (a small count, read in place: nothing is made). */
static int
add_spins(PyObject *t, long delta)
{
    PyObject *old = SLOT(t, task_layout, T_SPINS), *new, *by;
    long value;

    if (old == NULL)
        return -1;
    if (compact_value(old, &value)) {
        new = int_of(value + delta);
    } else {
        if ((by = PyLong_FromLong(delta)) == NULL)
            return -1;
        new = PyNumber_Add(old, by);
        Py_DECREF(by);
    }
    if (new == NULL)
        return -1;
    slot_set(t, task_layout.offset[T_SPINS], new);
    Py_DECREF(new);
    return 0;
}

/*
 * Held entries that nothing refers to any more, kept to be filled again: a HeldLock is a tuple
 * subclass, which CPython allocates and frees far more slowly than a plain tuple.  A spare's
 * fields are None, so it keeps nothing alive.
 */
#define MAX_SPARE_ENTRIES 32
static PyObject *spare_entries[MAX_SPARE_ENTRIES];
static int n_spare_entries;

/* A HeldLock of the fields given in order (H_*), as pylockdep._held.push() builds it. */
static PyObject *
held_entry(PyObject *lock, PyObject *cls, PyObject *read, PyObject *trylock, PyObject *code, PyObject *lasti,
           PyObject *prev_key, PyObject *irq, PyObject *spins, PyObject *ctx)
{
    PyObject *fields[H_FIELDS], *entry;

    fields[H_LOCK] = lock;
    fields[H_CLASS] = cls;
    fields[H_READ] = read;
    fields[H_TRYLOCK] = trylock;
    fields[H_CODE] = code;
    fields[H_LASTI] = lasti;
    fields[H_PREV_KEY] = prev_key;
    fields[H_IRQ] = irq;
    fields[H_SPIN] = spins;
    fields[H_CTX] = ctx;
    while (n_spare_entries > 0) {
        entry = spare_entries[--n_spare_entries];
        if (Py_REFCNT(entry) != 1) {  /* gc.get_objects() found it: it is someone else's now */
            Py_DECREF(entry);
            continue;
        }
        for (int i = 0; i < H_FIELDS; i++)
            Py_SETREF(PyTuple_GET_ITEM(entry, i), Py_NewRef(fields[i]));  /* replaces None */
        return entry;
    }
    entry = g_held_type->tp_alloc(g_held_type, H_FIELDS);
    if (entry == NULL)
        return NULL;
    for (int i = 0; i < H_FIELDS; i++)
        PyTuple_SET_ITEM(entry, i, Py_NewRef(fields[i]));
    return entry;
}

/* Append ``entry`` to the held list ``held``: in place while the list has room (it keeps the room
 * its entries leave, see held_pop()).  -1 with an exception set. */
static inline int
held_push(PyObject *held, PyObject *entry)
{
    Py_ssize_t n = PyList_GET_SIZE(held);

    if (n >= ((PyListObject *)held)->allocated)
        return PyList_Append(held, entry);
    PyList_SET_ITEM(held, n, Py_NewRef(entry));
    Py_SET_SIZE(held, n + 1);
    return 0;
}

/* Take the last entry off the held list ``held`` (not empty), with the list's reference to it, and
 * keep the room (list.pop() would give the memory back as the stack empties and ask again). */
static inline PyObject *
held_pop(PyObject *held)
{
    Py_ssize_t n = PyList_GET_SIZE(held) - 1;

    Py_SET_SIZE(held, n);
    return PyList_GET_ITEM(held, n);
}

/* Drop a reference to a held entry; the last one makes it a spare (while there is room). */
static void
held_entry_drop(PyObject *entry)
{
    if (Py_REFCNT(entry) != 1 || n_spare_entries == MAX_SPARE_ENTRIES) {
        Py_DECREF(entry);
        return;
    }
    for (int i = 0; i < H_FIELDS; i++)  /* may run a finalizer, which may take or drop entries */
        Py_SETREF(PyTuple_GET_ITEM(entry, i), Py_NewRef(Py_None));
    if (Py_REFCNT(entry) == 1 && n_spare_entries < MAX_SPARE_ENTRIES)
        spare_entries[n_spare_entries++] = entry;
    else
        Py_DECREF(entry);
}

/* -- the real lock ---------------------------------------------------------------------------- */

/*
 * RealLock: what a validated lock blocks on, as _thread.allocate_lock() makes (acquire(blocking=True,
 * timeout=-1), release(), locked(), with, _at_fork_reinit()), with one difference that matters
 * here: the fast path takes and releases it without a call or an argument to parse.
 */
typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    char locked;
} RealLock;

static PyTypeObject RealLockType;
static PyObject *g_monotonic;  /* time.monotonic, for a timed wait interrupted by a signal */

/* Take it if it is free, without waiting: 1 taken, 0 not. */
static inline int
reallock_try(RealLock *self)
{
    if (PyThread_acquire_lock_timed(self->lock, 0, 0) != PY_LOCK_ACQUIRED)
        return 0;
    self->locked = 1;
    return 1;
}

static inline void
reallock_release(RealLock *self)
{
    self->locked = 0;
    PyThread_release_lock(self->lock);
}

/* A new free RealLock of ``type``. */
static PyObject *
reallock_alloc(PyTypeObject *type)
{
    RealLock *self = (RealLock *)type->tp_alloc(type, 0);

    if (self == NULL)
        return NULL;
    self->locked = 0;
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static PyObject *
reallock_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (!no_arguments(type, args, kwds))
        return NULL;
    return reallock_alloc(type);
}

static void
reallock_dealloc(RealLock *self)
{
    if (self->lock != NULL) {
        if (self->locked)
            PyThread_release_lock(self->lock);
        PyThread_free_lock(self->lock);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Seconds now, on the monotonic clock; -1 with an exception set. */
static double
monotonic(void)
{
    PyObject *now = PyObject_CallNoArgs(g_monotonic);
    double value;

    if (now == NULL)
        return -1;
    value = PyFloat_AsDouble(now);
    Py_DECREF(now);
    return value;
}

/* Wait for the lock for ``seconds`` (< 0: for ever), with the GIL released, running signal handlers
 * when a signal interrupts the wait (as _thread.lock does).  1 taken, 0 timed out, -1 raised. */
static int
reallock_wait(RealLock *self, double seconds)
{
    double deadline = 0;
    PyLockStatus r;

    if (reallock_try(self))
        return 1;
    if (seconds == 0)
        return 0;
    if (seconds > 0 && (deadline = monotonic()) < 0)
        return -1;
    deadline += seconds;
    for (;;) {
        PY_TIMEOUT_T us = seconds < 0 ? -1 : (PY_TIMEOUT_T)(seconds * 1e6 + 0.999);
        Py_BEGIN_ALLOW_THREADS
        r = PyThread_acquire_lock_timed(self->lock, us, 1);
        Py_END_ALLOW_THREADS
        if (r == PY_LOCK_ACQUIRED) {
            self->locked = 1;
            return 1;
        }
        if (r == PY_LOCK_FAILURE)
            return 0;
        if (Py_MakePendingCalls() < 0)  /* PY_LOCK_INTR: a signal handler may raise */
            return -1;
        if (reallock_try(self))
            return 1;
        if (seconds > 0) {
            double now = monotonic();
            if (now < 0)
                return -1;
            if ((seconds = deadline - now) <= 0)
                return 0;
        }
    }
}

static PyObject *
reallock_acquire(RealLock *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"blocking", "timeout"};
    PyObject *given[2] = {NULL, NULL};
    int blocking = 1, r;
    double timeout = -1;

    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError, "acquire() takes at most 2 arguments (%zd given)", nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        given[i] = args[i];
    for (Py_ssize_t i = 0; kwnames != NULL && i < PyTuple_GET_SIZE(kwnames); i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i);
        int which = PyUnicode_CompareWithASCIIString(name, names[0]) == 0   ? 0
                    : PyUnicode_CompareWithASCIIString(name, names[1]) == 0 ? 1
                                                                            : -1;
        if (which < 0 || given[which] != NULL) {
            PyErr_Format(PyExc_TypeError, "acquire() got an unexpected or repeated keyword argument '%U'", name);
            return NULL;
        }
        given[which] = args[nargs + i];
    }
    if (given[0] != NULL && (blocking = PyObject_IsTrue(given[0])) < 0)
        return NULL;
    if (given[1] != NULL && ((timeout = PyFloat_AsDouble(given[1])) == -1 && PyErr_Occurred()))
        return NULL;
    if (!blocking && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return NULL;
    }
    if (timeout < 0 && timeout != -1) {
        PyErr_SetString(PyExc_ValueError, "timeout value must be a non-negative number");
        return NULL;
    }
    if (timeout >= (double)PY_TIMEOUT_MAX / 1e6) {
        PyErr_SetString(PyExc_OverflowError, "timeout value is too large");
        return NULL;
    }
    r = reallock_wait(self, blocking ? timeout : 0);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *
reallock_release_method(RealLock *self, PyObject *const *args, Py_ssize_t nargs)
{
    /* Also __exit__, whose arguments it ignores. */
    if (!self->locked) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    reallock_release(self);
    Py_RETURN_NONE;
}

static PyObject *
reallock_locked(RealLock *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->locked);
}

static PyObject *
reallock_at_fork_reinit(RealLock *self, PyObject *Py_UNUSED(ignored))
{
    /* After fork() the old lock may be held by a thread that is gone: leave it, make a new one. */
    PyThread_type_lock lock = PyThread_allocate_lock();
    if (lock == NULL)
        return PyErr_NoMemory();
    self->lock = lock;
    self->locked = 0;
    Py_RETURN_NONE;
}

static PyObject *
reallock_repr(RealLock *self)
{
    return PyUnicode_FromFormat("<%s %s object at %p>", self->locked ? "locked" : "unlocked", Py_TYPE(self)->tp_name,
                                self);
}

static PyMethodDef reallock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))reallock_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool: take the lock, as _thread.lock.acquire()."},
    {"__enter__", (PyCFunction)(void (*)(void))reallock_acquire, METH_FASTCALL | METH_KEYWORDS,
     "Take the lock, waiting as long as needed."},
    {"release", (PyCFunction)(void (*)(void))reallock_release_method, METH_FASTCALL,
     "Release the lock; RuntimeError if it is not locked."},
    {"__exit__", (PyCFunction)(void (*)(void))reallock_release_method, METH_FASTCALL, "Release the lock."},
    {"locked", (PyCFunction)reallock_locked, METH_NOARGS, "Whether the lock is taken."},
    {"_at_fork_reinit", (PyCFunction)reallock_at_fork_reinit, METH_NOARGS, "Make the lock new and free."},
    {NULL},
};

static PyTypeObject RealLockType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylockdep._speedups.RealLock",
    .tp_doc = "RealLock(): a lock as _thread.allocate_lock() makes, that the fast path takes without a call.",
    .tp_basicsize = sizeof(RealLock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = reallock_new,
    .tp_dealloc = (destructor)reallock_dealloc,
    .tp_repr = (reprfunc)reallock_repr,
    .tp_methods = reallock_methods,
};

/* The lock's ``_real`` slot as a RealLock, or NULL (unset, or another primitive: the lock's own
 * ``_try`` and ``_unlock`` methods are called then). */
static inline RealLock *
real_of(PyObject *lock, const Layout *lk)
{
    PyObject *real = SLOT(lock, *lk, L_REAL);

    return real != NULL && Py_IS_TYPE(real, &RealLockType) ? (RealLock *)real : NULL;
}

/* -- sites ------------------------------------------------------------------------------------- */

/* A new tuple ``(id(code), lasti, *more)``: the key the Python path files a frame's site under
 * (_frames._lines and _sites' trie with nothing more, _locks._made_at with name, key and type).
 * NULL with an exception set. */
static PyObject *
site_key(PyCodeObject *code, int lasti, PyObject *const *more, Py_ssize_t n_more)
{
    PyObject *key = PyTuple_New(2 + n_more), *item;

    if (key == NULL)
        return NULL;
    if ((item = PyLong_FromVoidPtr(code)) == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    PyTuple_SET_ITEM(key, 0, item);
    if ((item = PyLong_FromLong(lasti)) == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    PyTuple_SET_ITEM(key, 1, item);
    for (Py_ssize_t i = 0; i < n_more; i++)
        PyTuple_SET_ITEM(key, 2 + i, Py_NewRef(more[i]));
    return key;
}

/* -- the reader-writer core ------------------------------------------------------------------- */

/*
 * RWCore: the state of a reader-writer lock, as pylockdep._locks._RWCore keeps it (readers and a
 * writer by thread ident, writer preference), in C.  Taking without waiting and releasing change the
 * state with no Python code in between (no call that a signal handler, finalizer or trace hook could
 * run in), so it needs no internal mutex; a wait (the Python ``timed_acquire`` of the subclass
 * pylockdep._locks makes) sleeps on a condition over a mutex made by the first wait (``_cond``,
 * ``_mutex``), keeps ``waiting_writers`` and ``sleepers``, and a release wakes the sleepers through
 * the subclass's ``_wake()``.  One reader is kept inline; other readers at the same time in a dict
 * (``more_readers``, made by the first of them).
 */
typedef struct {
    PyObject_HEAD
    unsigned long writer;       /* the writer's thread ident, when has_writer */
    unsigned long reader;       /* a reader's thread ident, when reader_count > 0 */
    Py_ssize_t reader_count;    /* its holds */
    Py_ssize_t sleepers;        /* threads waiting on _cond (kept by the Python waits) */
    PyObject *more_readers;     /* {ident: holds} of the other readers, or NULL */
    PyObject *waiting_writers;  /* {ident: waits} of writers waiting, or NULL/None (kept by the Python waits) */
    PyObject *mutex, *cond;     /* made by the first wait, forgotten in a forked child */
    PyObject *weakreflist;      /* for pylockdep._locks.every_rw_core */
    char has_writer;
} RWCore;

static PyTypeObject RWCoreType;
static PyObject *s_wake;

/* Whether the core's readers map holds a reader. */
static inline int
rwcore_more(RWCore *self)
{
    return self->more_readers != NULL && PyDict_GET_SIZE(self->more_readers) > 0;
}

/* Whether a writer is waiting (``waiting_writers`` not empty). */
static inline int
rwcore_writers_wait(RWCore *self)
{
    PyObject *w = self->waiting_writers;

    return w != NULL && w != Py_None && (!PyDict_Check(w) || PyDict_GET_SIZE(w) > 0);
}

/* Add ``delta`` (+1 or -1) to the holds of ``ident`` in ``more_readers``: 0, or -1 with an exception. */
static int
rwcore_more_add(RWCore *self, unsigned long ident, long delta)
{
    PyObject *key = PyLong_FromUnsignedLong(ident), *count, *value;
    long now;
    int r;

    if (key == NULL)
        return -1;
    count = PyDict_GetItemWithError(self->more_readers, key);
    now = (count != NULL ? PyLong_AsLong(count) : 0) + delta;
    if (now <= 0) {
        r = count == NULL ? 0 : PyDict_DelItem(self->more_readers, key);
    } else if ((value = PyLong_FromLong(now)) == NULL) {
        r = -1;
    } else {
        r = PyDict_SetItem(self->more_readers, key, value);
        Py_DECREF(value);
    }
    Py_DECREF(key);
    return r;
}

/*
 * Take the lock for thread ``ident`` in mode ``read`` (0 writer, 1 reader, 2 recursive reader) if
 * nothing holds it back, as _RWCore._take does: 1 taken, 0 not, -1 with an exception (out of memory).
 * Nothing in it runs Python code; the only allocation that could (a new readers map, a GC object) is
 * made before anything is read, and the state is read after it.
 */
static int
rwcore_take(RWCore *self, int read, unsigned long ident)
{
    if (read && self->more_readers == NULL && self->reader_count > 0 && self->reader != ident) {
        PyObject *made = PyDict_New();  /* a second reader at the same time: the first needs the map */
        if (made == NULL)
            return -1;
        if (self->more_readers == NULL)
            self->more_readers = made;
        else
            Py_DECREF(made);
    }
    if (self->has_writer)
        return 0;
    if (!read) {
        if (self->reader_count > 0 || rwcore_more(self))
            return 0;
        self->writer = ident;
        self->has_writer = 1;
        return 1;
    }
    if (read == 1 && rwcore_writers_wait(self))
        return 0;
    if (self->reader_count > 0 && self->reader == ident) {
        self->reader_count++;
        return 1;
    }
    if (self->reader_count == 0 && !rwcore_more(self)) {
        self->reader = ident;
        self->reader_count = 1;
        return 1;
    }
    if (self->more_readers == NULL) {  /* made above, unless a finalizer dropped it since: never */
        PyErr_SetString(PyExc_SystemError, "reader-writer core without its readers map");
        return -1;
    }
    return rwcore_more_add(self, ident, 1) < 0 ? -1 : 1;
}

/*
 * Release mode ``read`` for thread ``ident``, as _RWCore.release does: a reader releases its own
 * hold, or another reader's when it has none (a read side released by another thread); then wake
 * the sleepers, if any, through ``_wake()``.  0, or -1 with an exception.
 */
static int
rwcore_release(RWCore *self, int read, unsigned long ident)
{
    if (!read) {
        self->has_writer = 0;
        self->writer = 0;
    } else if (self->reader_count > 0 && self->reader == ident) {
        self->reader_count--;
    } else if (rwcore_more(self)) {
        PyObject *key = PyLong_FromUnsignedLong(ident);
        int mine;

        if (key == NULL)
            return -1;
        mine = PyDict_Contains(self->more_readers, key);
        Py_DECREF(key);
        if (mine < 0)
            return -1;
        if (mine) {
            if (rwcore_more_add(self, ident, -1) < 0)
                return -1;
        } else if (self->reader_count > 0) {
            self->reader_count--;
        } else {
            Py_ssize_t pos = 0;
            PyObject *first, *count;
            unsigned long other;

            PyDict_Next(self->more_readers, &pos, &first, &count);
            other = PyLong_AsUnsignedLong(first);
            if ((other == (unsigned long)-1 && PyErr_Occurred()) || rwcore_more_add(self, other, -1) < 0)
                return -1;
        }
    } else if (self->reader_count > 0) {
        self->reader_count--;
    } else {
        PyErr_SetString(PyExc_RuntimeError, "release of a read side no thread holds");
        return -1;
    }
    if (self->sleepers > 0) {
        PyObject *r = PyObject_CallMethodNoArgs((PyObject *)self, s_wake);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* Whether mode ``read`` is held: by a writer (0) or by any reader (1, 2). */
static inline int
rwcore_is_held(RWCore *self, int read)
{
    return read ? self->reader_count > 0 || rwcore_more(self) : self->has_writer;
}

/* The mode argument of a core method: 0, 1 or 2; -1 with an exception. */
static int
rwcore_mode(PyObject *value)
{
    long mode = PyLong_AsLong(value);

    if (mode == -1 && PyErr_Occurred())
        return -1;
    if (mode < 0 || mode > 2) {
        PyErr_Format(PyExc_ValueError, "mode must be 0, 1 or 2, not %ld", mode);
        return -1;
    }
    return (int)mode;
}

static PyObject *
rwcore_take_method(RWCore *self, PyObject *const *args, Py_ssize_t nargs)
{
    int read, r;
    unsigned long ident;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_take(read, ident) takes 2 arguments");
        return NULL;
    }
    if ((read = rwcore_mode(args[0])) < 0)
        return NULL;
    ident = PyLong_AsUnsignedLong(args[1]);
    if (ident == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    r = rwcore_take(self, read, ident);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *
rwcore_try_acquire(RWCore *self, PyObject *arg)
{
    int read = rwcore_mode(arg), r;

    if (read < 0 || (r = rwcore_take(self, read, PyThread_get_thread_ident())) < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *
rwcore_release_method(RWCore *self, PyObject *arg)
{
    int read = rwcore_mode(arg);

    if (read < 0 || rwcore_release(self, read, PyThread_get_thread_ident()) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
rwcore_is_held_method(RWCore *self, PyObject *arg)
{
    int read = rwcore_mode(arg);

    return read < 0 ? NULL : PyBool_FromLong(rwcore_is_held(self, read));
}

/* Append the thread ``ident`` to ``found``: 0, or -1 with an exception. */
static int
append_ident(PyObject *found, unsigned long ident)
{
    PyObject *value = PyLong_FromUnsignedLong(ident);
    int r;

    if (value == NULL)
        return -1;
    r = PyList_Append(found, value);
    Py_DECREF(value);
    return r;
}

/* blockers(read): the idents that hold back a taker in mode ``read``, as _RWCore.blockers. */
static PyObject *
rwcore_blockers(RWCore *self, PyObject *arg)
{
    int read = rwcore_mode(arg);
    PyObject *found, *more;

    if (read < 0 || (found = PyList_New(0)) == NULL)
        return NULL;
    if (self->has_writer && append_ident(found, self->writer) < 0)
        goto fail;
    more = read ? (read == 1 && rwcore_writers_wait(self) ? self->waiting_writers : NULL) : self->more_readers;
    if (!read && self->reader_count > 0 && append_ident(found, self->reader) < 0)
        goto fail;
    if (more != NULL) {
        PyObject *keys = PySequence_List(more);
        if (keys == NULL)
            goto fail;
        Py_SETREF(found, PySequence_InPlaceConcat(found, keys));
        Py_DECREF(keys);
        if (found == NULL)
            return NULL;
    }
    return found;
fail:
    Py_DECREF(found);
    return NULL;
}

static PyObject *
rwcore_at_fork_reinit(RWCore *self, PyObject *Py_UNUSED(ignored))
{
    /* A forked child: the mutex and condition are made again by the next wait, the waiters did not follow. */
    Py_CLEAR(self->mutex);
    Py_CLEAR(self->cond);
    Py_CLEAR(self->waiting_writers);
    self->sleepers = 0;
    Py_RETURN_NONE;
}

static PyObject *
rwcore_get_writer(RWCore *self, void *Py_UNUSED(closure))
{
    if (!self->has_writer)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(self->writer);
}

/* ``readers``: {ident: holds} of every reader, or None when there is none (as _RWCore's). */
static PyObject *
rwcore_get_readers(RWCore *self, void *Py_UNUSED(closure))
{
    PyObject *readers;

    if (self->reader_count == 0 && !rwcore_more(self))
        Py_RETURN_NONE;
    readers = PyDict_New();
    if (readers == NULL)
        return NULL;
    if (self->reader_count > 0) {
        PyObject *key = PyLong_FromUnsignedLong(self->reader), *value = PyLong_FromSsize_t(self->reader_count);
        int r = key == NULL || value == NULL ? -1 : PyDict_SetItem(readers, key, value);
        Py_XDECREF(key);
        Py_XDECREF(value);
        if (r < 0)
            goto fail;
    }
    if (self->more_readers != NULL && PyDict_Update(readers, self->more_readers) < 0)
        goto fail;
    return readers;
fail:
    Py_DECREF(readers);
    return NULL;
}

static PyObject *
rwcore_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a reader-writer core takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0);  /* zeroed: free, no waiter */
}

static void
rwcore_dealloc(RWCore *self)
{
    PyTypeObject *type = Py_TYPE(self);

    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    Py_CLEAR(self->more_readers);
    Py_CLEAR(self->waiting_writers);
    Py_CLEAR(self->mutex);
    Py_CLEAR(self->cond);
    type->tp_free((PyObject *)self);  /* a subclass's instance: subtype_dealloc drops the class */
}

static PyMethodDef rwcore_methods[] = {
    {"_take", (PyCFunction)(void (*)(void))rwcore_take_method, METH_FASTCALL,
     "_take(read, ident): take the lock for the thread ``ident`` in mode ``read`` if nothing holds it back."},
    {"try_acquire", (PyCFunction)rwcore_try_acquire, METH_O, "try_acquire(read): take it now if it is free."},
    {"release", (PyCFunction)rwcore_release_method, METH_O, "release(read): release mode ``read``, waking waiters."},
    {"is_held", (PyCFunction)rwcore_is_held_method, METH_O, "is_held(read): whether a writer (0) or a reader holds it."},
    {"blockers", (PyCFunction)rwcore_blockers, METH_O, "blockers(read): the idents a taker in mode ``read`` waits for."},
    {"_at_fork_reinit", (PyCFunction)rwcore_at_fork_reinit, METH_NOARGS,
     "In a forked child: no mutex, condition or waiters (the next wait makes them again)."},
    {NULL},
};

static PyMemberDef rwcore_members[] = {
    {"sleepers", T_PYSSIZET, offsetof(RWCore, sleepers), 0, "Threads waiting on the condition."},
    {"waiting_writers", T_OBJECT, offsetof(RWCore, waiting_writers), 0, "{ident: waits} of waiting writers, or None."},
    {"_mutex", T_OBJECT, offsetof(RWCore, mutex), 0, "The waits' mutex, or None before the first wait."},
    {"_cond", T_OBJECT, offsetof(RWCore, cond), 0, "The condition over it, or None before the first wait."},
    {NULL},
};

static PyGetSetDef rwcore_getset[] = {
    {"writer", (getter)rwcore_get_writer, NULL, "The writer's thread ident, or None.", NULL},
    {"readers", (getter)rwcore_get_readers, NULL, "A new {ident: holds} of the readers, or None.", NULL},
    {NULL},
};

static PyTypeObject RWCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylockdep._speedups.RWCore",
    .tp_doc = "RWCore(): a reader-writer lock's state, taken and released in C (see pylockdep._locks._RWCore).",
    .tp_basicsize = sizeof(RWCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_weaklistoffset = offsetof(RWCore, weakreflist),
    .tp_new = rwcore_new,
    .tp_dealloc = (destructor)rwcore_dealloc,
    .tp_methods = rwcore_methods,
    .tp_members = rwcore_members,
    .tp_getset = rwcore_getset,
};

/* Where reader-writer locks keep their core (``_rw``): set by accelerate_rw(). */
static Layout rw_layout;

/* The core of ``lock`` when it is a reader-writer lock whose core is an RWCore: borrowed, or NULL (not
 * one, or not made yet: the lock's own ``_try``/``_unlock`` are called then, or the slow path). */
static RWCore *
rwcore_of(PyObject *lock)
{
    PyObject *core;

    if (rw_layout.type == NULL || !PyObject_TypeCheck(lock, rw_layout.type))
        return NULL;
    core = SLOT(lock, rw_layout, 0);
    return core != NULL && PyObject_TypeCheck(core, &RWCoreType) ? (RWCore *)core : NULL;
}

/* -- making a lock ---------------------------------------------------------------------------- */

/*
 * ``Mutex("name")`` (or ``(name, key=k)``) where a lock of that type, name and key was made before:
 * a kernel lock type's ``__init__`` looks its key up in pylockdep._locks._made_at, keyed by the
 * calling frame's ``(id(code), f_lasti, name, key, type)``, and fills its slots.  accelerate_new()
 * makes calls of one class (not of its subclasses: a type's vectorcall is not inherited) do the same
 * here when the key is found, and hands every other call, untouched, to ``type.__call__``
 * (``object.__new__`` and the Python ``__init__``, which finds or makes the key, or raises).
 */
#define MAX_MADE_TYPES 16
#define MAX_MADE_FIELDS 12

/* How to build a lock of ``type`` with a given key, as its Python constructor does. */
typedef struct {
    PyTypeObject *type;
    Py_ssize_t key_offset;                  /* the ``_key`` slot */
    int nfields;
    Py_ssize_t offset[MAX_MADE_FIELDS];     /* the other slots the constructor sets, ... */
    PyObject *factory[MAX_MADE_FIELDS];     /* ... each to factory() (RealLock: made without a call), or to
                                               the value itself when it is not callable (None, 0, ...) */
} LockMaker;

typedef struct {
    LockMaker maker;
    PyObject *made_at;                      /* the dict of sites */
    Recent recent;                          /* what _made_at answered lately, by (code, offset), name, key */
} MadeType;

static MadeType made_types[MAX_MADE_TYPES];
static int n_made_types;
static PyObject *s_key, *s_key_slot;

static PyObject *
new_slow(PyObject *type, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *tuple = PyTuple_New(nargs), *kwargs = NULL, *result = NULL;

    if (tuple == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        if ((kwargs = PyDict_New()) == NULL)
            goto done;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++)
            if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0)
                goto done;
    }
    result = PyType_Type.tp_call(type, tuple, kwargs);  /* not PyObject_Call: it would come back here */
done:
    Py_DECREF(tuple);
    Py_XDECREF(kwargs);
    return result;
}

/* The key _made_at holds for a lock of ``m``'s type named ``name`` with ``key`` made by the running
 * frame: a new reference, or NULL (no exception) when it is not there or anything is unusual. */
static PyObject *
made_key(MadeType *m, PyObject *name, PyObject *key)
{
    PyFrameObject *frame = PyEval_GetFrame();  /* the caller: a type's vectorcall has no frame of its own */
    PyCodeObject *code;
    PyObject *more[3] = {name, key, (PyObject *)m->maker.type}, *site, *found = NULL, *made;
    PyObject *parts[3] = {NULL, name, key};
    int nums[3] = {0, 0, 0}, offset;

    if (frame == NULL)
        return NULL;
    code = PyFrame_GetCode(frame);
    parts[0] = (PyObject *)code;
    nums[0] = offset = PyFrame_GetLasti(frame);
    if ((made = recent_find(&m->recent, parts, nums, 3)) != NULL) {
        Py_DECREF(code);
        return Py_NewRef(made);
    }
    if ((site = site_key(code, offset, more, 3)) != NULL)
        found = PyDict_GetItemWithError(m->made_at, site);  /* an unhashable name or key raises */
    Py_XDECREF(site);
    if (found == NULL || !PyTuple_Check(found) || PyTuple_GET_SIZE(found) != 2) {
        Py_DECREF(code);
        PyErr_Clear();
        return NULL;
    }
    made = Py_NewRef(PyTuple_GET_ITEM(found, 1));
    recent_keep(&m->recent, parts, nums, 3, made);
    Py_DECREF(code);
    return made;
}

/* A new lock of ``mk``'s type with key ``made`` (a reference this steals), its other slots filled. */
static PyObject *
build_lock(const LockMaker *mk, PyObject *made)
{
    PyObject *lock = mk->type->tp_alloc(mk->type, 0), *value;

    if (lock == NULL) {
        Py_DECREF(made);
        return NULL;
    }
    *(PyObject **)((char *)lock + mk->key_offset) = made;
    for (int i = 0; i < mk->nfields; i++) {
        if (mk->factory[i] == (PyObject *)&RealLockType)
            value = reallock_alloc(&RealLockType);
        else if (PyCallable_Check(mk->factory[i]))
            value = PyObject_CallNoArgs(mk->factory[i]);
        else
            value = Py_NewRef(mk->factory[i]);
        if (value == NULL) {
            Py_DECREF(lock);
            return NULL;
        }
        *(PyObject **)((char *)lock + mk->offset[i]) = value;
    }
    return lock;
}

static PyObject *
new_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    MadeType *m = NULL;
    PyObject *made;

    for (int i = 0; i < n_made_types; i++)
        if (made_types[i].maker.type == (PyTypeObject *)type)
            m = &made_types[i];
    if (m == NULL || PyVectorcall_NARGS(nargsf) != 1
        || (kwnames != NULL
            && (PyTuple_GET_SIZE(kwnames) != 1 || PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, 0), s_key) != 0)))
        return new_slow(type, args, nargsf, kwnames);
    if ((made = made_key(m, args[0], kwnames != NULL ? args[1] : Py_None)) == NULL)
        return new_slow(type, args, nargsf, kwnames);
    return build_lock(&m->maker, made);
}

/* Set ``mk`` up to build locks of ``cls`` as its constructor does: ``fields`` is ``((slot, factory or
 * value), ...)`` for the slots it sets besides ``_key``, each to ``factory()`` for a callable (a new
 * object per lock), else to the value itself (None, 0, False: shared).  -1 with an exception set. */
static int
maker_init(LockMaker *mk, PyObject *cls, PyObject *fields)
{
    if (!PyType_Check(cls) || !(((PyTypeObject *)cls)->tp_flags & Py_TPFLAGS_HEAPTYPE) || !PyTuple_Check(fields)
        || PyTuple_GET_SIZE(fields) > MAX_MADE_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "a lock class of ours and a few (slot, factory or value) fields");
        return -1;
    }
    if ((mk->key_offset = slot_offset(cls, s_key_slot)) < 0)
        return -1;
    for (mk->nfields = 0; mk->nfields < PyTuple_GET_SIZE(fields); mk->nfields++) {
        PyObject *field = PyTuple_GET_ITEM(fields, mk->nfields), *factory;
        if (!PyTuple_Check(field) || PyTuple_GET_SIZE(field) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(field, 0))) {
            PyErr_SetString(PyExc_TypeError, "fields are (slot name, factory or value)");
            return -1;
        }
        if ((mk->offset[mk->nfields] = slot_offset(cls, PyTuple_GET_ITEM(field, 0))) < 0)
            return -1;
        factory = PyTuple_GET_ITEM(field, 1);
        Py_XSETREF(mk->factory[mk->nfields], Py_NewRef(factory));
    }
    Py_XSETREF(mk->type, (PyTypeObject *)Py_NewRef(cls));
    return 0;
}

static int
maker_traverse(LockMaker *mk, visitproc visit, void *arg)
{
    Py_VISIT(mk->type);
    for (int i = 0; i < mk->nfields; i++)
        Py_VISIT(mk->factory[i]);
    return 0;
}

static void
maker_clear(LockMaker *mk)
{
    Py_CLEAR(mk->type);
    for (int i = 0; i < mk->nfields; i++)
        Py_CLEAR(mk->factory[i]);
    mk->nfields = 0;
}

/*
 * accelerate_new(cls, made_at, fields): calls of ``cls`` with a name (and ``key=``) whose key
 * ``made_at`` holds make the lock here: ``_key`` from it, then each ``(slot, factory or value)``
 * of ``fields`` set as ``cls.__init__`` sets it (see maker_init).
 */
static PyObject *
accelerate_new(PyObject *module, PyObject *args)
{
    PyObject *cls, *made_at, *fields;
    MadeType *m;

    if (!PyArg_ParseTuple(args, "O!O!O:accelerate_new", &PyType_Type, &cls, &PyDict_Type, &made_at, &fields))
        return NULL;
    if (((PyTypeObject *)cls)->tp_new != PyBaseObject_Type.tp_new) {
        PyErr_SetString(PyExc_TypeError, "accelerate_new: a class with object's __new__");
        return NULL;
    }
    for (m = made_types; m < made_types + n_made_types; m++)
        if (m->maker.type == (PyTypeObject *)cls) {
            PyErr_Format(PyExc_RuntimeError, "accelerate_new: %R is accelerated already", cls);
            return NULL;
        }
    if (n_made_types == MAX_MADE_TYPES) {
        PyErr_SetString(PyExc_RuntimeError, "accelerate_new: too many classes");
        return NULL;
    }
    m = &made_types[n_made_types];  /* counted once set up: an error leaves it unused */
    if (maker_init(&m->maker, cls, fields) < 0)
        return NULL;
    Py_XSETREF(m->made_at, Py_NewRef(made_at));
    ((PyTypeObject *)cls)->tp_vectorcall = new_vectorcall;
    n_made_types++;
    Py_RETURN_NONE;
}

/*
 * StandIn(make, memo, lock_type, fields, skip_code): what instrumentation puts in place of
 * ``threading.Lock``/``RLock`` (pylockdep._threading._stand_in).  ``make`` is the Python stand-in;
 * a call with no arguments from a stack whose site ``memo`` (its pylockdep._sites.SiteMemo: a trie
 * keyed by each frame's ``(id(code), f_lasti)``) already knows to be a validated lock's builds that
 * lock here, as ``lock_type._new(key)`` does; every other call (arguments, a plain lock, a stack
 * not seen before) goes to ``make``.  A call from ``skip_code`` (the class-shaped stand-in's
 * ``__call__``) is sited from its caller.  The last stacks answered are kept by identity, so a hit
 * builds no key.  It has a ``__dict__`` for functools.update_wrapper() and pickles by name.
 */
#define STAND_IN_DEPTH 4

typedef struct {
    PyObject_HEAD
    PyObject *dict;
    PyObject *make, *memo, *skip_code;
    LockMaker maker;
    Recent recent;  /* what memo answered lately, by the (code, offset) of each frame of the stack */
    vectorcallfunc vectorcall;
} StandIn;

/* What ``memo`` holds for the stack from ``frame`` out, as _sites.recall() finds it: a new
 * reference, or NULL (no exception) for "not known".  Records the stack in ``self->recent``. */
static PyObject *
stand_in_recall(StandIn *self, PyFrameObject *frame)
{
    PyObject *node = self->memo, *codes[STAND_IN_DEPTH], *found = NULL;
    int lastis[STAND_IN_DEPTH], depth = 0;

    Py_INCREF(frame);
    while (frame != NULL && depth < STAND_IN_DEPTH) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        int lasti = PyFrame_GetLasti(frame);
        PyObject *edge = NULL, *entry = NULL;
        PyFrameObject *back;

        if (PyDict_CheckExact(node) && (edge = site_key(code, lasti, NULL, 0)) != NULL)
            entry = PyDict_GetItemWithError(node, edge);
        Py_XDECREF(edge);
        codes[depth] = (PyObject *)code;
        lastis[depth++] = lasti;
        if (entry == NULL || !PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2)
            break;
        node = PyTuple_GET_ITEM(entry, 1);
        if (!PyDict_CheckExact(node)) {
            found = Py_NewRef(node);
            break;
        }
        back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    Py_XDECREF(frame);
    PyErr_Clear();
    if (found != NULL)
        recent_keep(&self->recent, codes, lastis, depth, found);
    for (int d = 0; d < depth; d++)
        Py_DECREF(codes[d]);
    return found;
}

/* The key kept in ``self->recent`` for the stack from ``frame`` out (a new reference), or NULL. */
static PyObject *
stand_in_recent(StandIn *self, PyFrameObject *frame)
{
    PyObject *codes[STAND_IN_DEPTH], *key;
    int lastis[STAND_IN_DEPTH], depth = 0, most = recent_depth(&self->recent);
    PyFrameObject *f = (PyFrameObject *)Py_XNewRef(frame), *back;

    while (f != NULL && depth < most) {  /* the frames the kept stacks may compare, no more */
        codes[depth] = (PyObject *)PyFrame_GetCode(f);
        lastis[depth++] = PyFrame_GetLasti(f);
        back = depth < most ? PyFrame_GetBack(f) : NULL;
        Py_DECREF(f);
        f = back;
    }
    Py_XDECREF(f);
    key = Py_XNewRef(recent_find(&self->recent, codes, lastis, depth));
    for (int d = 0; d < depth; d++)
        Py_DECREF(codes[d]);
    return key;
}

static PyObject *
stand_in_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    StandIn *self = (StandIn *)op;
    PyFrameObject *frame;
    PyObject *key;

    if (PyVectorcall_NARGS(nargsf) != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)
        || (frame = PyEval_GetFrame()) == NULL)
        return PyObject_Vectorcall(self->make, args, nargsf, kwnames);
    Py_INCREF(frame);
    if (self->skip_code != NULL) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        if ((PyObject *)code == self->skip_code)
            Py_SETREF(frame, PyFrame_GetBack(frame));
        Py_DECREF(code);
        if (frame == NULL)
            return PyObject_Vectorcall(self->make, args, nargsf, kwnames);
    }
    if ((key = stand_in_recent(self, frame)) == NULL)
        key = stand_in_recall(self, frame);
    Py_DECREF(frame);
    if (key == NULL || key == Py_None) {  /* not known, or a plain lock: make() decides */
        Py_XDECREF(key);
        return PyObject_Vectorcall(self->make, args, nargsf, kwnames);
    }
    return build_lock(&self->maker, key);
}

static PyObject *
stand_in_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"make", "memo", "lock_type", "fields", "skip_code", NULL};
    PyObject *make, *memo, *lock_type, *fields, *skip_code = Py_None;
    StandIn *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!OO|O:StandIn", kwlist, &make, &PyDict_Type, &memo, &lock_type,
                                     &fields, &skip_code))
        return NULL;
    self = (StandIn *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (maker_init(&self->maker, lock_type, fields) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->make = Py_NewRef(make);
    self->memo = Py_NewRef(memo);
    self->skip_code = skip_code == Py_None ? NULL : Py_NewRef(skip_code);
    self->vectorcall = stand_in_vectorcall;
    return (PyObject *)self;
}

static int
stand_in_traverse(StandIn *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    Py_VISIT(self->make);
    Py_VISIT(self->memo);
    Py_VISIT(self->skip_code);
    int err = recent_traverse(&self->recent, visit, arg);
    return err ? err : maker_traverse(&self->maker, visit, arg);
}

static int
stand_in_clear(StandIn *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->make);
    Py_CLEAR(self->memo);
    Py_CLEAR(self->skip_code);
    recent_clear(&self->recent);
    maker_clear(&self->maker);
    return 0;
}

static void
stand_in_dealloc(StandIn *self)
{
    PyObject_GC_UnTrack(self);
    stand_in_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The repr of the function it stands for (``__wrapped__``), as pylockdep._threading._BuiltinLike's. */
static PyObject *
stand_in_repr(PyObject *self)
{
    PyObject *wrapped = PyObject_GetAttrString(self, "__wrapped__"), *repr;

    if (wrapped == NULL)
        return NULL;
    repr = PyObject_Repr(wrapped);
    Py_DECREF(wrapped);
    return repr;
}

/* Pickled by reference, as the function it stands for: the name its __qualname__ gives. */
static PyObject *
stand_in_reduce(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyObject_GetAttrString(self, "__qualname__");
}

static PyMethodDef stand_in_methods[] = {
    {"__reduce__", stand_in_reduce, METH_NOARGS, "Pickled by reference: its __qualname__."},
    {NULL},
};

static PyGetSetDef stand_in_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL},
};

static PyTypeObject StandInType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylockdep._speedups.StandIn",
    .tp_doc = "StandIn(make, memo, lock_type, fields, skip_code=None): a lock factory stand-in whose calls at a "
              "known site build the lock in C; every other call goes to ``make``.",
    .tp_basicsize = sizeof(StandIn),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = stand_in_new,
    .tp_vectorcall_offset = offsetof(StandIn, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_dictoffset = offsetof(StandIn, dict),
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_setattro = PyObject_GenericSetAttr,
    .tp_dealloc = (destructor)stand_in_dealloc,
    .tp_repr = stand_in_repr,
    .tp_traverse = (traverseproc)stand_in_traverse,
    .tp_clear = (inquiry)stand_in_clear,
    .tp_methods = stand_in_methods,
    .tp_getset = stand_in_getset,
};

/*
 * CallMake(): the ``__call__`` of the class-shaped stand-ins' metaclass (pylockdep._threading's
 * _StandInType), as its Python method does: ``cls(*args, **kwargs)`` is ``cls._make(*args,
 * **kwargs)``, here with no Python frame in between.
 */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
} CallMake;

static PyObject *s_make;
static PyObject *fastmethod_get(PyObject *self, PyObject *obj, PyObject *type);

static PyObject *
call_make_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *make, *result;

    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "__call__() needs the class");
        return NULL;
    }
    if ((make = PyObject_GetAttr(args[0], s_make)) == NULL)
        return NULL;
    result = PyObject_Vectorcall(make, args + 1, nargs - 1, kwnames);
    Py_DECREF(make);
    return result;
}

static PyObject *
call_make_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    CallMake *self;

    if (!no_arguments(type, args, kwds))
        return NULL;
    if ((self = (CallMake *)type->tp_alloc(type, 0)) == NULL)
        return NULL;
    self->vectorcall = call_make_vectorcall;
    return (PyObject *)self;
}

static PyTypeObject CallMakeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylockdep._speedups.CallMake",
    .tp_doc = "CallMake(): a method whose call cls(*args) is cls._make(*args) (a class-shaped stand-in's __call__).",
    .tp_basicsize = sizeof(CallMake),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_new = call_make_new,
    .tp_vectorcall_offset = offsetof(CallMake, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_descr_get = fastmethod_get,
};

/* Read modes as _locks._acquire takes them, and READ_AS_RWLOCK: RWLock._read_mode()'s choice. */
enum { READ_AS_RWLOCK = -1, READ_MAX = 2 };
static PyObject **const read_objs[READ_MAX + 1] = {&g_zero, &g_one, &g_two};

/* The small int in ``value`` (compact_value()) if it is one from ``low`` to ``high``, else ``low - 1``. */
static long
small_int(PyObject *value, long low, long high)
{
    long found;

    if (!compact_value(value, &found))
        return low - 1;
    return found < low || found > high ? low - 1 : found;
}

/* Whether the small int ``value`` is zero (anything else, or not an exact int, counts as not). */
static inline int
is_zero(PyObject *value)
{
    return value == g_zero || small_int(value, 0, 0) == 0;
}

/* The calling thread's validator, Task and cache (borrowed) when the fast path applies to it:
 * current_task() found them and no other thread released a lock it holds.  0 otherwise. */
static int
fast_state(PyObject **v_out, PyObject **t_out, ThreadCache **c_out)
{
    return current_task(v_out, t_out, c_out) && !has_foreign_releases(*t_out);
}

/* RWLock._read_mode() for the Task ``t``: a recursive reader (2) in hardirq, softirq or
 * bottom-half context, else 1; -1 when its counters are not there (Python decides). */
static int
rwlock_read_mode(PyObject *t)
{
    PyObject *irq = SLOT(t, task_layout, T_IRQ), *bh = SLOT(t, task_layout, T_BH);

    if (irq == NULL || bh == NULL)
        return -1;
    return is_zero(irq) && is_zero(bh) ? 1 : 2;
}

/* The value of max_lock_depth ``maxd``, or -1 (no exception): read once per int object. */
static Py_ssize_t
lock_depth_limit(PyObject *maxd)
{
    static PyObject *last;  /* the int read last (held: compared by identity) and its value */
    static Py_ssize_t value;

    if (maxd != last) {
        Py_ssize_t read = PyLong_AsSsize_t(maxd);
        if (read == -1) {
            PyErr_Clear();
            return -1;
        }
        Py_XSETREF(last, Py_NewRef(maxd));
        value = read;
    }
    return value;
}

/*
 * The chain key after pushing a lock of variant ``variant`` on the stack of key ``tkey`` in context
 * ``ctx``, pylockdep._held.chain_key(): hash((tkey, ctx, variant)), when the active validator
 * ``v`` knows it (it is in v.chains): a new reference, or NULL (no exception).  One found is kept in
 * the thread's cache ``c``, by the three ints it was made from, until the chain cache is emptied
 * (v.chains_forgotten counts that; v.chains only grows in between).
 */
static PyObject *
known_chain(PyObject *v, ThreadCache *c, PyObject *tkey, PyObject *ctx, PyObject *variant)
{
    PyObject *parts[3] = {tkey, ctx, variant}, *chains = SLOT(v, validator_layout, V_CHAINS), *chain;
    int nums[3] = {-1, 0, 0};
    Py_hash_t h;
    long era;

    if (compact_value(SLOT(v, validator_layout, V_CHAINS_FORGOTTEN), &era) && era >= 0 && era <= INT_MAX) {
        nums[0] = (int)era;
        if ((chain = recent_find(&c->chains, parts, nums, 3)) != NULL)
            return Py_NewRef(chain);
    }
    if (chains == NULL || !PyAnySet_Check(chains) || (h = hash_items(parts, 3)) == -1
        || (chain = cached_int(c, h)) == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (PySet_Contains(chains, chain) != 1) {
        PyErr_Clear();
        Py_DECREF(chain);
        return NULL;
    }
    if (nums[0] >= 0)
        recent_keep(&c->chains, parts, nums, 3, chain);  /* drops ints only: no Python code runs */
    return chain;
}

/*
 * Take ``lock`` in mode ``read`` as subclass ``subclass`` on a known chain, as
 * _locks._acquire(lock, read, subclass, frame) would, for the thread whose fast_state() is ``v``,
 * ``t`` and ``c``.  Returns 1 when the lock is taken and pushed, 0 when the caller must take the
 * slow path (nothing has changed), -1 with an exception set (nothing has changed either).
 */
static int
take_known(PyObject *v, PyObject *t, ThreadCache *c, PyObject *lock, const Layout *lk, PyFrameObject *frame,
           int read, int subclass)
{
    PyObject *key, *cache, *classes, *cls, *variants, *tkey, *ctx, *chains, *spins, *irq, *held, *maxd;
    PyObject *chain = NULL, *code = NULL, *lasti = NULL, *entry = NULL, *ok = NULL;
    RealLock *real = real_of(lock, lk);
    RWCore *core;
    Py_ssize_t limit;
    int result = 0, taken;

    key = SLOT(lock, *lk, L_KEY);
    if (!IS(key, key_layout))
        return 0;
    cache = SLOT(key, key_layout, K_CACHE);
    if (cache == NULL || !PyTuple_Check(cache) || PyTuple_GET_SIZE(cache) != 2 || PyTuple_GET_ITEM(cache, 0) != v)
        return 0;
    classes = PyTuple_GET_ITEM(cache, 1);
    if (!PyList_Check(classes) || PyList_GET_SIZE(classes) <= subclass)
        return 0;
    cls = PyList_GET_ITEM(classes, subclass);
    if (!IS(cls, class_layout))
        return 0;
    variants = SLOT(cls, class_layout, C_VARIANTS);
    spins = SLOT(cls, class_layout, C_SPINS);
    tkey = SLOT(t, task_layout, T_KEY);
    ctx = SLOT(t, task_layout, T_CTX);
    irq = SLOT(t, task_layout, T_IRQ);
    held = SLOT(t, task_layout, T_HELD);
    chains = SLOT(v, validator_layout, V_CHAINS);
    maxd = SLOT(v, validator_layout, V_MAX_LOCK_DEPTH);
    if (read < 0 || read > READ_MAX || (read != 0 && real != NULL))
        return 0;  /* a plain lock has no read side */
    if (variants == NULL || !PyTuple_Check(variants) || PyTuple_GET_SIZE(variants) <= read || spins == NULL
        || tkey == NULL || ctx == NULL || irq == NULL || held == NULL || !PyList_Check(held) || chains == NULL
        || !PyAnySet_Check(chains) || maxd == NULL || !PyLong_Check(maxd))
        return 0;

    if ((chain = known_chain(v, c, tkey, ctx, PyTuple_GET_ITEM(variants, read))) == NULL)
        goto fallback;
    /* A known chain: build the held entry before taking the lock, so nothing can fail after. */
    limit = lock_depth_limit(maxd);
    code = (PyObject *)PyFrame_GetCode(frame);
    lasti = cached_int(c, PyFrame_GetLasti(frame));
    if (limit == -1 || lasti == NULL)
        goto fallback;
    entry = held_entry(lock, cls, *read_objs[read], Py_False, code, lasti, tkey, irq, spins, ctx);
    if (entry == NULL)
        goto fallback;
    /* The entry owns what the rest needs (lock, cls, t.key, t.ctx) while _try may run Python code. */
    Py_INCREF(v);
    Py_INCREF(t);
    if (real != NULL) {
        taken = reallock_try(real);
    } else if ((core = rwcore_of(lock)) != NULL) {
        taken = rwcore_take(core, read, PyThread_get_thread_ident());
    } else {
        ok = PyObject_CallMethodOneArg(lock, s_try, *read_objs[read]);
        taken = ok == NULL ? -1 : PyObject_IsTrue(ok);
    }
    if (taken < 0) {
        result = -1;  /* the real lock raised: report that, as Python would */
    } else if (taken == 0) {
        result = 0;  /* contended: the slow path waits (and checks for a deadlock) */
    } else if (held_push(held, entry) < 0 || (is_true(spins) && add_spins(t, 1) < 0)) {
        result = -1;  /* out of memory, in practice */
    } else {
        slot_set(lock, lk->offset[L_OWNER], t);
        slot_set(t, task_layout.offset[T_KEY], chain);
        result = 1;
        if (PyList_GET_SIZE(held) >= limit) {
            PyObject *r = PyObject_CallMethodOneArg(v, s_depth_exceeded, t);
            if (r == NULL)
                result = -1;
            Py_XDECREF(r);
        }
    }
    Py_DECREF(v);
    Py_DECREF(t);
    goto done;

fallback:
    /* Anything odd goes to the slow path, which either handles it or raises the real error. */
    PyErr_Clear();
    result = 0;
done:
    Py_XDECREF(chain); Py_XDECREF(code); Py_XDECREF(lasti); Py_XDECREF(ok);
    if (entry != NULL)
        held_entry_drop(entry);
    return result;
}

/* take_known() of an exclusive lock for the calling thread; ``*c_out`` is its cache when taken. */
static int
fast_lock(PyObject *lock, const Layout *lk, PyFrameObject *frame, ThreadCache **c_out)
{
    PyObject *v, *t;

    if (!fast_state(&v, &t, c_out))
        return 0;
    return take_known(v, t, *c_out, lock, lk, frame, 0, 0);
}

/*
 * Release ``lock`` when it is the most recent lock of the Task ``t`` (the calling thread's, from
 * fast_state()), as _locks._release(lock, read) would (for an RLock, the owner's last release: its
 * owner and count are reset too).  Returns 1 when done, 0 for the slow path (nothing changed), -1
 * with an exception set by the real lock's release.
 */
static int
drop_top(PyObject *t, PyObject *lock, const Layout *lk, PyObject *read)
{
    PyObject *held, *top, *r;
    RealLock *real;
    RWCore *core;
    Py_ssize_t n;
    long mode;
    int result;

    held = SLOT(t, task_layout, T_HELD);
    if (held == NULL || !PyList_Check(held) || (n = PyList_GET_SIZE(held)) == 0)
        return 0;
    top = PyList_GET_ITEM(held, n - 1);
    if (!Py_IS_TYPE(top, g_held_type) || PyTuple_GET_SIZE(top) != H_FIELDS || PyTuple_GET_ITEM(top, H_LOCK) != lock)
        return 0;
    Py_INCREF(t);
    held_pop(held);  /* the list's reference to top is ours now */
    if (is_true(PyTuple_GET_ITEM(top, H_SPIN)) && add_spins(t, -1) < 0) {
        result = -1;
    } else {
        slot_set(t, task_layout.offset[T_KEY], PyTuple_GET_ITEM(top, H_PREV_KEY));
        slot_set(lock, lk->offset[L_OWNER], Py_None);
        if (lk->recursive) {  /* the owner's last release: nobody owns it from here */
            slot_set(lock, lk->offset[L_COUNT], g_zero);
            slot_set(lock, lk->offset[L_IDENT], Py_None);
        }
        if ((real = real_of(lock, lk)) != NULL && read == g_zero && real->locked) {
            reallock_release(real);
            result = 1;
        } else if ((core = rwcore_of(lock)) != NULL && (mode = small_int(read, 0, READ_MAX)) >= 0) {
            result = rwcore_release(core, (int)mode, PyThread_get_thread_ident()) < 0 ? -1 : 1;
        } else {
            r = PyObject_CallMethodOneArg(lock, s_unlock, read);
            result = r == NULL ? -1 : 1;
            Py_XDECREF(r);
        }
    }
    held_entry_drop(top);
    Py_DECREF(t);
    return result;
}

/* drop_top() for the calling thread. */
static int
fast_unlock(PyObject *lock, const Layout *lk, PyObject *read)
{
    PyObject *v, *t;
    ThreadCache *c;

    return fast_state(&v, &t, &c) ? drop_top(t, lock, lk, read) : 0;
}

/* Whether the calling thread owns the RLock ``lock`` (its ``_ident`` is the thread's ident). */
static int
owned_by_caller(PyObject *lock, const Layout *lk)
{
    PyObject *ident = SLOT(lock, *lk, L_IDENT);
    unsigned long value;

    if (ident == NULL || !PyLong_CheckExact(ident))
        return 0;
    value = PyLong_AsUnsignedLong(ident);
    if (value == (unsigned long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return value == PyThread_get_thread_ident();
}

/* The RLock's recursion count, or -1 when it is not a small int. */
static long
rlock_count(PyObject *lock, const Layout *lk)
{
    long value;

    return compact_value(SLOT(lock, *lk, L_COUNT), &value) ? value : -1;
}

/* Set the RLock's count (and, when ``ident`` is not NULL, its owner). */
static int
rlock_set(PyObject *lock, const Layout *lk, long count, PyObject *ident)
{
    PyObject *value = int_of(count);

    if (value == NULL)
        return -1;
    if (ident != NULL)
        slot_set(lock, lk->offset[L_IDENT], ident);
    slot_set(lock, lk->offset[L_COUNT], value);
    Py_DECREF(value);
    return 0;
}

/* -- the method descriptors --------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *slow;       /* the Python method this one accelerates */
    Layout lock;          /* where the lock class keeps _key, _real and _owner */
    PyObject *skip_file;  /* Acquire: the site is the first frame outside this file (or NULL) */
    int returns_self;     /* Acquire: return the lock (__enter__) or True (acquire) */
    int blocking_arg;     /* Acquire: the method takes ``blocking`` first (threading's acquire()) */
    Py_ssize_t arity;     /* Release: the positional argument count it takes fast, -1 any */
    Layout section;       /* Section: where the section class keeps _lock, _read, _subclass, ... */
    int rw_role, rw_read;  /* RWMethod: what it does (RW_LOCK...) and in which mode */
    vectorcallfunc vectorcall;
} FastMethod;

static PyObject *
slow_call(FastMethod *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return PyObject_Vectorcall(self->slow, args, PyVectorcall_NARGS(nargsf), kwnames);
}

/* _frames.internal_files (filename -> whether pylockdep's) and _frames._lines ((id(code), lasti) ->
 * (code, line)), the Python path's caches, set by setup(). */
static PyObject *g_internal_files, *g_lines;

/* Whether the Python path knows ``code``'s file to be outside pylockdep (internal_files says False;
 * a file it has not seen yet is not known). */
static int
known_outside(PyCodeObject *code)
{
    PyObject *internal = g_internal_files == NULL ? NULL : PyDict_GetItemWithError(g_internal_files, code->co_filename);

    if (internal == NULL)
        PyErr_Clear();
    return internal == Py_False;
}

/* Whether ``frame`` runs code of the file ``filename``. */
static int
in_file(PyFrameObject *frame, PyObject *filename)
{
    PyCodeObject *code = PyFrame_GetCode(frame);
    int same = code->co_filename == filename || PyUnicode_Compare(code->co_filename, filename) == 0;

    Py_DECREF(code);
    return same;
}

/*
 * The frame that called into ``skip_file`` (threading.py: a Condition taking its lock), which the
 * Python path names as the site: a new reference, or NULL (no exception) to let Python find it,
 * when that frame's file is not known_outside() pylockdep.
 */
static PyFrameObject *
outside_skip_file(FastMethod *self, PyFrameObject *frame)
{
    PyFrameObject *f = (PyFrameObject *)Py_NewRef(frame), *back;
    PyCodeObject *code;
    int outside;

    while (in_file(f, self->skip_file)) {
        back = PyFrame_GetBack(f);
        Py_DECREF(f);
        if (back == NULL)
            return NULL;
        f = back;
    }
    code = PyFrame_GetCode(f);
    outside = known_outside(code);
    Py_DECREF(code);
    if (!outside) {
        Py_DECREF(f);
        return NULL;
    }
    return f;
}

static PyObject *
acquire_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastMethod *self = (FastMethod *)op;
    PyFrameObject *frame;
    ThreadCache *c;
    int r;

    if (self->blocking_arg && PyVectorcall_NARGS(nargsf) == 2 && kwnames == NULL && !self->lock.recursive
        && (args[1] == Py_False || args[1] == g_zero) && IS(args[0], self->lock)) {
        /* acquire(False) of a lock that is taken (Condition._is_owned asks so): a trylock that fails,
         * which changes nothing.  A RealLock is marked taken only while it is. */
        RealLock *real = real_of(args[0], &self->lock);
        if (real != NULL && real->locked)
            Py_RETURN_FALSE;
        return slow_call(self, args, nargsf, kwnames);
    }
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL || !IS(args[0], self->lock))
        return slow_call(self, args, nargsf, kwnames);
    if (self->lock.recursive && owned_by_caller(args[0], &self->lock)) {
        long count = rlock_count(args[0], &self->lock);  /* the owner again: count, nothing more */
        if (count < 1)
            return slow_call(self, args, nargsf, kwnames);
        if (rlock_set(args[0], &self->lock, count + 1, NULL) < 0)
            return NULL;
        Py_RETURN_TRUE;
    }
    frame = PyEval_GetFrame();  /* the caller: a C method has no frame of its own */
    if (frame == NULL)
        return slow_call(self, args, nargsf, kwnames);
    if (self->skip_file != NULL && in_file(frame, self->skip_file)) {
        PyFrameObject *outside = outside_skip_file(self, frame);
        if (outside == NULL)
            return slow_call(self, args, nargsf, kwnames);
        r = fast_lock(args[0], &self->lock, outside, &c);
        Py_DECREF(outside);
    } else {
        r = fast_lock(args[0], &self->lock, frame, &c);
    }
    if (r < 0)
        return NULL;
    if (r == 0)
        return slow_call(self, args, nargsf, kwnames);
    if (self->lock.recursive) {  /* a new owner */
        if (c->ident == NULL && (c->ident = PyLong_FromUnsignedLong(PyThread_get_thread_ident())) == NULL)
            return NULL;
        if (rlock_set(args[0], &self->lock, 1, c->ident) < 0)
            return NULL;
    }
    return Py_NewRef(self->returns_self ? args[0] : Py_True);
}

static PyObject *
release_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastMethod *self = (FastMethod *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    int r;

    if (nargs < 1 || kwnames != NULL || (self->arity >= 0 && nargs != self->arity) || !IS(args[0], self->lock))
        return slow_call(self, args, nargsf, kwnames);
    if (self->lock.recursive) {
        long count = rlock_count(args[0], &self->lock);
        if (!owned_by_caller(args[0], &self->lock) || count < 1)
            return slow_call(self, args, nargsf, kwnames);  /* it raises */
        if (count > 1) {
            if (rlock_set(args[0], &self->lock, count - 1, NULL) < 0)
                return NULL;
            Py_RETURN_NONE;
        }
    }
    r = fast_unlock(args[0], &self->lock, g_zero);
    if (r < 0)
        return NULL;
    if (r == 0)
        return slow_call(self, args, nargsf, kwnames);
    Py_RETURN_NONE;
}

/*
 * RLock._release_save(), for Condition.wait(): the owner's full release on the fast path, returning
 * (count, ident) as the Python method does.  Anything else goes to the Python method.
 */
static PyObject *
release_save_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastMethod *self = (FastMethod *)op;
    PyObject *count, *ident, *state;
    int r;

    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL || !self->lock.recursive || !IS(args[0], self->lock)
        || !owned_by_caller(args[0], &self->lock) || rlock_count(args[0], &self->lock) < 1)
        return slow_call(self, args, nargsf, kwnames);
    count = Py_NewRef(SLOT(args[0], self->lock, L_COUNT));
    ident = Py_NewRef(SLOT(args[0], self->lock, L_IDENT));
    state = PyTuple_Pack(2, count, ident);
    Py_DECREF(count);
    Py_DECREF(ident);
    if (state == NULL)
        return NULL;
    r = fast_unlock(args[0], &self->lock, g_zero);  /* the last release: count 0, no owner */
    if (r == 1)
        return state;
    Py_DECREF(state);
    return r < 0 ? NULL : slow_call(self, args, nargsf, kwnames);
}

/*
 * RLock._acquire_restore(state), for Condition.wait(): take the lock again on the fast path, sited
 * as __enter__ sites a call from threading.py, then restore (count, ident).
 */
static PyObject *
acquire_restore_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastMethod *self = (FastMethod *)op;
    PyFrameObject *frame, *outside;
    PyObject *state;
    ThreadCache *c;
    int r;

    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL || !self->lock.recursive || !IS(args[0], self->lock))
        return slow_call(self, args, nargsf, kwnames);
    state = args[1];
    if (!PyTuple_CheckExact(state) || PyTuple_GET_SIZE(state) != 2 || !PyLong_CheckExact(PyTuple_GET_ITEM(state, 0))
        || (frame = PyEval_GetFrame()) == NULL)
        return slow_call(self, args, nargsf, kwnames);
    if (self->skip_file != NULL && in_file(frame, self->skip_file)) {
        if ((outside = outside_skip_file(self, frame)) == NULL)
            return slow_call(self, args, nargsf, kwnames);
    } else {
        outside = (PyFrameObject *)Py_NewRef(frame);
    }
    r = fast_lock(args[0], &self->lock, outside, &c);
    Py_DECREF(outside);
    if (r < 0)
        return NULL;
    if (r == 0)
        return slow_call(self, args, nargsf, kwnames);
    slot_set(args[0], self->lock.offset[L_COUNT], PyTuple_GET_ITEM(state, 0));
    slot_set(args[0], self->lock.offset[L_IDENT], PyTuple_GET_ITEM(state, 1));
    Py_RETURN_NONE;
}

/*
 * Sections: the with-blocks of pylockdep._locks._Held (``nested()``, ``read()``, ``irqsave()``,
 * ``bh()``), whose slots say how the lock is held.  __enter__ does what _Held.__enter__ does: the
 * context change (``_context``: CONTEXT_IRQSAVE turns hard interrupts off, remembering in
 * ``_irqs_were_on`` whether they were on; CONTEXT_BH disables bottom halves), then the lock in the
 * section's mode and subclass, the mode taken kept in ``_mode``; __exit__ releases that mode and
 * undoes the context change.  The context changes run here only in their common case (a normal
 * kernel, process context, no held lock to mark when interrupts come back on, the with-block's
 * site known); otherwise the whole __enter__ (nothing changed yet) or the rest of it (_Held._take
 * after the context change, _Held._restore after the release) goes to Python.
 */
enum { S_LOCK, S_READ, S_SUBCLASS, S_CONTEXT, S_MODE, S_IRQS_WERE_ON };
static const char *const section_slots[] = {"_lock", "_read", "_subclass", "_context", "_mode", "_irqs_were_on",
                                            NULL};
enum { CONTEXT_NONE, CONTEXT_IRQSAVE, CONTEXT_BH };  /* _locks' 0, _IRQSAVE, _BH */

/* The names this part calls. */
static PyObject *s_take, *s_restore;
/* The usage bits enabling interrupts sets on held locks (_classes' ENABLED_*), set by setup(). */
static long g_enabled_hardirq, g_enabled_hardirq_read, g_enabled_softirq, g_enabled_softirq_read;

/* Whether every held validated lock already has the usage bits enabling interrupts would give it
 * (all of ``write_bits``, or of ``read_bits`` for a reader): _checks.held_unmarked() is false for
 * each of them, nothing to mark. */
static int
held_marked(PyObject *held, long write_bits, long read_bits)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(held); i++) {
        PyObject *entry = PyList_GET_ITEM(held, i), *cls, *validated, *usage;
        long bits;

        if (!Py_IS_TYPE(entry, g_held_type) || PyTuple_GET_SIZE(entry) != H_FIELDS)
            return 0;
        cls = PyTuple_GET_ITEM(entry, H_CLASS);
        if (!IS(cls, class_layout) || (validated = SLOT(cls, class_layout, C_VALIDATED)) == NULL)
            return 0;
        if (validated == Py_False)
            continue;
        usage = SLOT(cls, class_layout, C_USAGE);
        if (validated != Py_True || usage == NULL || !PyLong_CheckExact(usage))
            return 0;
        bits = PyLong_AsLong(usage);
        if (bits == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        long wanted = is_zero(PyTuple_GET_ITEM(entry, H_READ)) ? write_bits : read_bits;
        if ((bits & wanted) != wanted)
            return 0;
    }
    return 1;
}

/*
 * The site (code, line) of ``frame``'s current instruction, as _locks._site_of() finds it,
 * borrowed: from the thread's recent sites, else from _frames' line cache.  NULL (no exception)
 * when Python must find it: the frame's file is pylockdep's or not seen yet, or its line not cached.
 */
static PyObject *
frame_site(ThreadCache *c, PyFrameObject *frame)
{
    PyCodeObject *code = PyFrame_GetCode(frame);
    PyObject *part = (PyObject *)code, *site, *key;
    int lasti = PyFrame_GetLasti(frame);

    if ((site = recent_find(&c->sites, &part, &lasti, 1)) != NULL || !known_outside(code))
        goto done;
    if ((key = site_key(code, lasti, NULL, 0)) == NULL)
        goto done;
    site = PyDict_GetItemWithError(g_lines, key);
    Py_DECREF(key);
    if (site == NULL || !PyTuple_CheckExact(site) || PyTuple_GET_SIZE(site) != 2
        || PyTuple_GET_ITEM(site, 0) != (PyObject *)code) {
        site = NULL;
        goto done;
    }
    recent_keep(&c->sites, &part, &lasti, 1, site);
done:
    PyErr_Clear();
    Py_DECREF(code);
    return site;
}

/* A new reference to ``count + 1`` (read in place when small). */
static PyObject *
next_int(PyObject *count)
{
    long value;

    return compact_value(count, &value) ? PyLong_FromLong(value + 1) : PyNumber_Add(count, g_one);
}

/* Task.update_ctx()'s context signature of ``t`` with ``irqs_off`` and ``bh`` in place of its own
 * (a new reference), or NULL (an exception may be set).  The irq context does not depend on them. */
static PyObject *
context_with(ThreadCache *c, PyObject *t, PyObject *irqs_off, PyObject *bh)
{
    PyObject *items[N_CONTEXT_COUNTERS];
    Py_hash_t h;

    for (int i = 0; i < N_CONTEXT_COUNTERS; i++)
        if ((items[i] = SLOT(t, task_layout, T_PREEMPT + i)) == NULL)
            return NULL;
    items[T_IRQS_OFF - T_PREEMPT] = irqs_off;
    items[T_BH - T_PREEMPT] = bh;
    if ((h = hash_items(items, N_CONTEXT_COUNTERS)) == -1)
        return NULL;
    return cached_int(c, h);
}

/* Whether the active validator models a PREEMPT_RT kernel (anything but False counts as yes: Python
 * decides). */
static inline int
preempt_rt(PyObject *v)
{
    return SLOT(v, validator_layout, V_PREEMPT_RT) != Py_False;
}

/*
 * Change the context as ``change`` says, at ``site``, as _context does: the counter ``counter``
 * (T_IRQS_OFF or T_BH) becomes ``value``, the irq event stamp ``event``/``event_site`` of the
 * thread's IrqTrace is taken, and the context signature follows.  Everything that can fail is
 * done before anything changes: 1 changed, 0 nothing changed (Python will).
 */
static int
change_context(ThreadCache *c, PyObject *t, int counter, PyObject *value, int event, int event_site, PyObject *site)
{
    PyObject *trace = SLOT(t, task_layout, T_IRQTRACE), *events, *ctx, *irqs_off, *bh;

    irqs_off = counter == T_IRQS_OFF ? value : SLOT(t, task_layout, T_IRQS_OFF);
    bh = counter == T_BH ? value : SLOT(t, task_layout, T_BH);
    if (!IS(trace, trace_layout) || (events = SLOT(trace, trace_layout, TR_EVENTS)) == NULL || irqs_off == NULL
        || bh == NULL)
        return 0;
    if ((ctx = context_with(c, t, irqs_off, bh)) == NULL || (events = next_int(events)) == NULL) {
        Py_XDECREF(ctx);
        PyErr_Clear();
        return 0;
    }
    slot_set(trace, trace_layout.offset[TR_EVENTS], events);
    slot_set(trace, trace_layout.offset[event], events);
    slot_set(trace, trace_layout.offset[event_site], site);
    slot_set(t, task_layout.offset[counter], value);
    slot_set(t, task_layout.offset[T_CTX], ctx);
    Py_DECREF(events);
    Py_DECREF(ctx);
    return 1;
}

/* _context.irq_save_for() on a normal kernel: hard interrupts off, ``*was_on`` whether they were
 * on (borrowed).  1 done, 0 for Python (nothing changed). */
static int
irqs_off_fast(ThreadCache *c, PyObject *v, PyObject *t, PyFrameObject *frame, PyObject **was_on)
{
    PyObject *irqs_off = SLOT(t, task_layout, T_IRQS_OFF), *site;

    if (preempt_rt(v))
        return 0;  /* a spinlock_t leaves interrupts on there: Python knows the lock types */
    *was_on = irqs_off == Py_False ? Py_True : Py_False;
    if (irqs_off == Py_True)
        return 1;  /* already off: nothing changes */
    if (irqs_off != Py_False || (site = frame_site(c, frame)) == NULL)
        return 0;
    return change_context(c, t, T_IRQS_OFF, Py_True, TR_HARDIRQ_DISABLE_EVENT, TR_HARDIRQ_DISABLE_SITE, site);
}

/* _context.irq_restore_at(was_on) when there is nothing to check: interrupts were on, are off, not
 * in a hard interrupt, no held lock to mark (with hardirqs, and softirqs if those are on, enabled).
 * 1 done, 0 for Python (nothing changed). */
static int
irqs_on_fast(ThreadCache *c, PyObject *t, PyFrameObject *frame, PyObject *was_on)
{
    PyObject *held = SLOT(t, task_layout, T_HELD), *site;
    long write_bits = g_enabled_hardirq, read_bits = g_enabled_hardirq_read;

    if (was_on == Py_False)
        return 1;  /* they stay off */
    if (is_zero(SLOT(t, task_layout, T_BH)) && is_zero(SLOT(t, task_layout, T_SOFTIRQ))) {
        write_bits |= g_enabled_softirq;  /* softirqs come on with them: both marks, in one walk */
        read_bits |= g_enabled_softirq_read;
    }
    if (was_on != Py_True || SLOT(t, task_layout, T_IRQS_OFF) != Py_True || !is_zero(SLOT(t, task_layout, T_HARDIRQ))
        || held == NULL || !PyList_Check(held) || !held_marked(held, write_bits, read_bits)
        || (site = frame_site(c, frame)) == NULL)
        return 0;
    return change_context(c, t, T_IRQS_OFF, Py_False, TR_HARDIRQ_ENABLE_EVENT, TR_HARDIRQ_ENABLE_SITE, site);
}

/* _context.bh_disable_at() in process context on a normal kernel (bottom halves on, not atomic):
 * the atomic section starts here.  1 done, 0 for Python (nothing changed). */
static int
bh_off_fast(ThreadCache *c, PyObject *v, PyObject *t, PyFrameObject *frame)
{
    PyObject *held = SLOT(t, task_layout, T_HELD), *site, *depth;

    if (preempt_rt(v) || !is_zero(SLOT(t, task_layout, T_PREEMPT)) || !is_zero(SLOT(t, task_layout, T_HARDIRQ))
        || !is_zero(SLOT(t, task_layout, T_SOFTIRQ)) || !is_zero(SLOT(t, task_layout, T_BH)) || held == NULL
        || !PyList_Check(held) || (site = frame_site(c, frame)) == NULL
        || (depth = PyLong_FromSsize_t(PyList_GET_SIZE(held))) == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_INCREF(site);  /* change_context() may drop the last other reference (the thread's site cache) */
    if (!change_context(c, t, T_BH, g_one, TR_SOFTIRQ_DISABLE_EVENT, TR_SOFTIRQ_DISABLE_SITE, site)) {
        Py_DECREF(site);
        Py_DECREF(depth);
        return 0;
    }
    slot_set(t, task_layout.offset[T_ATOMIC_SITE], site);
    slot_set(t, task_layout.offset[T_ATOMIC_DEPTH], depth);
    Py_DECREF(site);
    Py_DECREF(depth);
    return 1;
}

/* _context.bh_enable_at() for the last bottom-half section outside a softirq, with no held lock to
 * mark (when hard interrupts are on).  1 done, 0 for Python (nothing changed). */
static int
bh_on_fast(ThreadCache *c, PyObject *t, PyFrameObject *frame)
{
    PyObject *held = SLOT(t, task_layout, T_HELD), *bh = SLOT(t, task_layout, T_BH), *site;
    PyObject *irqs_off = SLOT(t, task_layout, T_IRQS_OFF);

    if (small_int(bh, 1, 1) != 1 || !is_zero(SLOT(t, task_layout, T_SOFTIRQ))
        || held == NULL || !PyList_Check(held) || (irqs_off != Py_True && irqs_off != Py_False)
        || (irqs_off == Py_False && !held_marked(held, g_enabled_softirq, g_enabled_softirq_read))
        || (site = frame_site(c, frame)) == NULL)
        return 0;
    return change_context(c, t, T_BH, g_zero, TR_SOFTIRQ_ENABLE_EVENT, TR_SOFTIRQ_ENABLE_SITE, site);
}

/* With an exception set (taking or releasing the lock raised): call _Held._restore(frame), as the
 * Python method's except/finally does; an exception it raises replaces the first, as its context. */
static void
restore_raising(PyObject *section, PyFrameObject *frame)
{
    PyObject *r;
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException(), *next;

    r = PyObject_CallMethodOneArg(section, s_restore, (PyObject *)frame);
    if (r != NULL) {
        Py_DECREF(r);
        PyErr_SetRaisedException(exc);
        return;
    }
    next = PyErr_GetRaisedException();
    PyException_SetContext(next, exc);
    PyErr_SetRaisedException(next);
#else
    PyObject *type, *value, *tb, *type2, *value2, *tb2;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    r = PyObject_CallMethodOneArg(section, s_restore, (PyObject *)frame);
    if (r != NULL) {
        Py_DECREF(r);
        PyErr_Restore(type, value, tb);
        return;
    }
    PyErr_Fetch(&type2, &value2, &tb2);
    PyErr_NormalizeException(&type2, &value2, &tb2);
    if (tb2 != NULL)
        PyException_SetTraceback(value2, tb2);
    PyException_SetContext(value2, value);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    PyErr_Restore(type2, value2, tb2);
#endif
}


static PyObject *
section_enter_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastMethod *self = (FastMethod *)op;
    PyObject *section, *lock, *v, *t, *was_on = NULL;
    PyFrameObject *frame;
    ThreadCache *c;
    long read, subclass, context;
    int r, mode;

    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL || !IS(args[0], self->section))
        return slow_call(self, args, nargsf, kwnames);
    section = args[0];
    lock = SLOT(section, self->section, S_LOCK);
    read = small_int(SLOT(section, self->section, S_READ), READ_AS_RWLOCK, READ_MAX);
    subclass = small_int(SLOT(section, self->section, S_SUBCLASS), 0, PY_SSIZE_T_MAX);
    context = small_int(SLOT(section, self->section, S_CONTEXT), CONTEXT_NONE, CONTEXT_BH);
    if (!IS(lock, self->lock) || read < READ_AS_RWLOCK || subclass < 0 || context < CONTEXT_NONE
        || (frame = PyEval_GetFrame()) == NULL)
        return slow_call(self, args, nargsf, kwnames);
    if (!fast_state(&v, &t, &c))
        return slow_call(self, args, nargsf, kwnames);
    if (context == CONTEXT_IRQSAVE) {
        if (!irqs_off_fast(c, v, t, frame, &was_on))
            return slow_call(self, args, nargsf, kwnames);
        slot_set(section, self->section.offset[S_IRQS_WERE_ON], was_on);
    } else if (context == CONTEXT_BH && !bh_off_fast(c, v, t, frame)) {
        return slow_call(self, args, nargsf, kwnames);
    }
    /* The context is changed (no Python code ran: v, t and c stand): from here on, what C cannot do
     * goes to _Held._take, which undoes it when the acquisition raises. */
    mode = read == READ_AS_RWLOCK ? rwlock_read_mode(t) : (int)read;
    r = mode < 0 ? 0 : take_known(v, t, c, lock, &self->lock, frame, mode, (int)subclass);
    if (r < 0) {
        if (context != CONTEXT_NONE)
            restore_raising(section, frame);
        return NULL;
    }
    if (r == 0)
        return context == CONTEXT_NONE ? slow_call(self, args, nargsf, kwnames)
                                       : PyObject_CallMethodOneArg(section, s_take, (PyObject *)frame);
    slot_set(section, self->section.offset[S_MODE], *read_objs[mode]);
    return Py_NewRef(lock);
}

static PyObject *
section_exit_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastMethod *self = (FastMethod *)op;
    PyObject *section, *lock, *mode, *v, *t;
    PyFrameObject *frame;
    ThreadCache *c;
    long context;
    int r, restored = 0;

    if (PyVectorcall_NARGS(nargsf) < 1 || kwnames != NULL || !IS(args[0], self->section))
        return slow_call(self, args, nargsf, kwnames);
    section = args[0];
    lock = SLOT(section, self->section, S_LOCK);
    mode = SLOT(section, self->section, S_MODE);
    context = small_int(SLOT(section, self->section, S_CONTEXT), CONTEXT_NONE, CONTEXT_BH);
    if (!IS(lock, self->lock) || context < CONTEXT_NONE || small_int(mode, 0, READ_MAX) < 0
        || (frame = PyEval_GetFrame()) == NULL || !fast_state(&v, &t, &c))
        return slow_call(self, args, nargsf, kwnames);
    /* The context is restored on the Task the lock was released from (held: a release that calls
     * Python code, such as a reader-writer core's, may let it go). */
    Py_INCREF(t);
    Py_INCREF(c);
    r = drop_top(t, lock, &self->lock, mode);
    if (r == 1 && context == CONTEXT_IRQSAVE)
        restored = (mode = SLOT(section, self->section, S_IRQS_WERE_ON)) != NULL && irqs_on_fast(c, t, frame, mode);
    else if (r == 1 && context == CONTEXT_BH)
        restored = bh_on_fast(c, t, frame);
    Py_DECREF(t);
    Py_DECREF(c);
    if (r == 0)
        return slow_call(self, args, nargsf, kwnames);
    if (context == CONTEXT_NONE) {
        if (r < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    /* Released (or the release raised): the context is restored however the release ended. */
    if (r < 0) {
        restore_raising(section, frame);
        return NULL;
    }
    if (restored)
        Py_RETURN_NONE;
    return PyObject_CallMethodOneArg(section, s_restore, (PyObject *)frame);
}

static PyObject *
fastmethod_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
}

static int
fastmethod_traverse(FastMethod *self, visitproc visit, void *arg)
{
    Py_VISIT(self->slow);
    Py_VISIT(self->skip_file);
    Py_VISIT(self->lock.type);
    Py_VISIT(self->section.type);
    return 0;
}

static int
fastmethod_clear(FastMethod *self)
{
    Py_CLEAR(self->slow);
    Py_CLEAR(self->skip_file);
    Py_CLEAR(self->lock.type);
    Py_CLEAR(self->section.type);
    return 0;
}

static void
fastmethod_dealloc(FastMethod *self)
{
    PyObject_GC_UnTrack(self);
    fastmethod_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
fastmethod_repr(FastMethod *self)
{
    return PyUnicode_FromFormat("<%s of %R>", Py_TYPE(self)->tp_name, self->slow);
}

/* An attribute of a C stand-in for a Python function or method ``wrapped``: its __doc__, __name__,
 * __qualname__ and __module__ are the wrapped one's, the rest the stand-in's own. */
static PyObject *
wrapper_getattr(PyObject *op, PyObject *name, PyObject *wrapped)
{
    if (PyUnicode_Check(name) && (PyUnicode_CompareWithASCIIString(name, "__doc__") == 0
                                  || PyUnicode_CompareWithASCIIString(name, "__name__") == 0
                                  || PyUnicode_CompareWithASCIIString(name, "__qualname__") == 0
                                  || PyUnicode_CompareWithASCIIString(name, "__module__") == 0))
        return PyObject_GetAttr(wrapped, name);
    return PyObject_GenericGetAttr(op, name);
}

static PyObject *
fastmethod_getattro(PyObject *op, PyObject *name)
{
    return wrapper_getattr(op, name, ((FastMethod *)op)->slow);
}

static PyMemberDef fastmethod_members[] = {
    {"__wrapped__", T_OBJECT, offsetof(FastMethod, slow), READONLY, "The Python method this one accelerates."},
    {NULL},
};

static FastMethod *
fastmethod_new(PyTypeObject *type, PyObject *slow, PyObject *lock_type, int recursive, vectorcallfunc call)
{
    FastMethod *self;

    if (!PyCallable_Check(slow)) {
        PyErr_Format(PyExc_TypeError, "%s needs a callable, not %.100s", type->tp_name, Py_TYPE(slow)->tp_name);
        return NULL;
    }
    self = (FastMethod *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->slow = Py_NewRef(slow);
    self->vectorcall = call;
    self->lock.recursive = recursive;
    if (layout_init(&self->lock, lock_type, recursive ? rlock_slots : lock_slots) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return self;
}

static PyObject *
acquire_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"slow", "lock_type", "returns_self", "skip_file", "recursive", "blocking_arg", "restore",
                             NULL};
    PyObject *slow, *lock_type, *skip_file = Py_None;
    int returns_self, recursive = 0, blocking_arg = 0, restore = 0;
    FastMethod *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOp|Oppp:Acquire", kwlist, &slow, &lock_type, &returns_self,
                                     &skip_file, &recursive, &blocking_arg, &restore))
        return NULL;
    if (skip_file != Py_None && !PyUnicode_Check(skip_file)) {
        PyErr_SetString(PyExc_TypeError, "skip_file must be a str or None");
        return NULL;
    }
    self = fastmethod_new(type, slow, lock_type, recursive, restore ? acquire_restore_vectorcall : acquire_vectorcall);
    if (self == NULL)
        return NULL;
    self->returns_self = returns_self;
    self->blocking_arg = blocking_arg;
    self->skip_file = skip_file == Py_None ? NULL : Py_NewRef(skip_file);
    return (PyObject *)self;
}

static PyObject *
release_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"slow", "lock_type", "arity", "recursive", "save", NULL};
    PyObject *slow, *lock_type;
    Py_ssize_t arity;
    int recursive = 0, save = 0;
    FastMethod *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOn|pp:Release", kwlist, &slow, &lock_type, &arity, &recursive,
                                     &save))
        return NULL;
    self = fastmethod_new(type, slow, lock_type, recursive, save ? release_save_vectorcall : release_vectorcall);
    if (self == NULL)
        return NULL;
    self->arity = arity;
    return (PyObject *)self;
}

/*
 * A new section, as _Held(lock, read, subclass, context) makes it (its __init__ only stores the four),
 * without running Python code; other arguments go to the class.
 */
static PyObject *
new_section(FastMethod *self, PyObject *lock, PyObject *read, PyObject *subclass, PyObject *context)
{
    PyTypeObject *type = self->section.type;
    PyObject *section = type->tp_alloc(type, 0);

    if (section == NULL)
        return NULL;
    slot_set(section, self->section.offset[S_LOCK], lock);
    slot_set(section, self->section.offset[S_READ], read);
    slot_set(section, self->section.offset[S_SUBCLASS], subclass);
    slot_set(section, self->section.offset[S_CONTEXT], context);
    return section;
}

static PyObject *
section_make_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames != NULL)
        return slow_call((FastMethod *)op, args, nargsf, kwnames);
    return new_section((FastMethod *)op, args[0], args[1], args[2], args[3]);
}

static PyObject *
section_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"slow", "section_type", "lock_type", "role", NULL};
    PyObject *slow, *section_type, *lock_type;
    const char *role;
    vectorcallfunc call;
    FastMethod *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOs:Section", kwlist, &slow, &section_type, &lock_type, &role))
        return NULL;
    if (strcmp(role, "enter") == 0)
        call = section_enter_vectorcall;
    else if (strcmp(role, "exit") == 0)
        call = section_exit_vectorcall;
    else if (strcmp(role, "new") == 0 && slow == section_type)
        call = section_make_vectorcall;
    else {
        PyErr_Format(PyExc_ValueError, "Section role must be 'enter', 'exit' or 'new' (of the class), not %R", role);
        return NULL;
    }
    self = fastmethod_new(type, slow, lock_type, 0, call);
    if (self == NULL)
        return NULL;
    if (layout_init(&self->section, section_type, section_slots) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* The three types differ only in name, documentation and constructor. */
#define FASTMETHOD_TYPE(NAME, DOC, NEW)                                                              \
    {                                                                                                \
        PyVarObject_HEAD_INIT(NULL, 0)                                                               \
        .tp_name = "pylockdep._speedups." NAME,                                                      \
        .tp_doc = DOC,                                                                               \
        .tp_basicsize = sizeof(FastMethod),                                                          \
        .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL             \
                    | Py_TPFLAGS_METHOD_DESCRIPTOR,                                                  \
        .tp_new = NEW,                                                                               \
        .tp_vectorcall_offset = offsetof(FastMethod, vectorcall),                                    \
        .tp_call = PyVectorcall_Call,                                                                \
        .tp_descr_get = fastmethod_get,                                                              \
        .tp_dealloc = (destructor)fastmethod_dealloc,                                                \
        .tp_traverse = (traverseproc)fastmethod_traverse,                                            \
        .tp_clear = (inquiry)fastmethod_clear,                                                       \
        .tp_repr = (reprfunc)fastmethod_repr,                                                        \
        .tp_getattro = fastmethod_getattro,                                                          \
        .tp_members = fastmethod_members,                                                            \
    }

static PyTypeObject AcquireType = FASTMETHOD_TYPE(
    "Acquire",
    "Acquire(slow, lock_type, returns_self, skip_file=None, recursive=False, blocking_arg=False, restore=False): an "
    "__enter__/acquire method of ``lock_type`` whose known-chain case runs in C; every other call goes to "
    "``slow``.  Called from ``skip_file``, the site is the first frame outside it, if pylockdep._frames' cache "
    "of its own files says that frame's is not one.  ``recursive``: the owner may take the lock again "
    "(threading.RLock).  ``blocking_arg``: acquire(False) of a taken lock returns False at once.  ``restore``: "
    "the method is RLock._acquire_restore(state).",
    acquire_new);

static PyTypeObject ReleaseType = FASTMETHOD_TYPE(
    "Release",
    "Release(slow, lock_type, arity, recursive=False): an __exit__/release method of ``lock_type`` whose "
    "most-recent-lock case runs in C; every other call goes to ``slow``.  ``arity`` is the argument count "
    "(self included) taken fast, -1 for any.  ``save``: the method is RLock._release_save().",
    release_new);

static PyTypeObject SectionType = FASTMETHOD_TYPE(
    "Section",
    "Section(slow, section_type, lock_type, role): the __enter__ (``role`` 'enter') or __exit__ ('exit') method "
    "of ``section_type`` (pylockdep._locks._Held) whose common case (a known chain, a context change without "
    "checks) runs in C for a section of ``lock_type``; every other call goes to ``slow``.  Role 'new', with "
    "``slow`` the class itself: makes a section from (lock, read, subclass, context) as the class does.",
    section_new);

/* -- reader-writer methods -------------------------------------------------------------------- */

/*
 * RWMethod(slow, lock_type, section_type, role, mode): a method of the reader-writer locks (made for
 * ``lock_type``, pylockdep._locks._RWLockBase) whose common case runs in C, every other call going to
 * ``slow``, the Python method it wraps.  Roles:
 * - 'lock' (``read_lock``, ``down_read``, ``down_write``...): take the lock in ``mode`` (0, 1, or -1 for
 *   RWLock._read_mode()'s choice) on a known chain, uncontended, as _locks._acquire does; returns None;
 * - 'unlock' (``read_unlock``, ``up_write``...): release side ``mode`` (0 writing, 1 reading) when the
 *   lock is the thread's most recent and taken on that side (so not a bad unlock balance: see
 *   _RWLockBase._unlock_side), as _locks._release does;
 * - 'section' (``read()``): a new section of ``section_type`` holding the lock in ``mode``;
 * - 'self' (``write()``): the lock itself.
 */
enum { RW_LOCK, RW_UNLOCK, RW_SECTION, RW_SELF };

/* The read mode of the Task ``t``'s most recent held lock if it is ``lock``, else -1. */
static long
top_read(PyObject *t, PyObject *lock)
{
    PyObject *held = SLOT(t, task_layout, T_HELD), *top;
    Py_ssize_t n;

    if (held == NULL || !PyList_Check(held) || (n = PyList_GET_SIZE(held)) == 0)
        return -1;
    top = PyList_GET_ITEM(held, n - 1);
    if (!Py_IS_TYPE(top, g_held_type) || PyTuple_GET_SIZE(top) != H_FIELDS || PyTuple_GET_ITEM(top, H_LOCK) != lock)
        return -1;
    return small_int(PyTuple_GET_ITEM(top, H_READ), 0, READ_MAX);
}

static PyObject *
rwmethod_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastMethod *self = (FastMethod *)op;
    PyFrameObject *frame;
    PyObject *v, *t;
    ThreadCache *c;
    long held;
    int r, mode;

    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL || !IS(args[0], self->lock))
        return slow_call(self, args, nargsf, kwnames);
    switch (self->rw_role) {
    case RW_SELF:
        return Py_NewRef(args[0]);
    case RW_SECTION:
        return new_section(self, args[0], self->rw_read < 0 ? g_minus_one : *read_objs[self->rw_read], g_zero, g_zero);
    case RW_LOCK:
        if ((frame = PyEval_GetFrame()) == NULL || !fast_state(&v, &t, &c))
            return slow_call(self, args, nargsf, kwnames);
        mode = self->rw_read == READ_AS_RWLOCK ? rwlock_read_mode(t) : self->rw_read;
        r = mode < 0 ? 0 : take_known(v, t, c, args[0], &self->lock, frame, mode, 0);
        break;
    default:  /* RW_UNLOCK */
        if (!fast_state(&v, &t, &c) || (held = top_read(t, args[0])) < 0 || (held == 0) != (self->rw_read == 0))
            return slow_call(self, args, nargsf, kwnames);
        r = drop_top(t, args[0], &self->lock, *read_objs[self->rw_read]);
    }
    if (r < 0)
        return NULL;
    if (r == 0)
        return slow_call(self, args, nargsf, kwnames);
    Py_RETURN_NONE;
}

static PyObject *
rwmethod_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"slow", "lock_type", "section_type", "role", "mode", NULL};
    static const char *const roles[] = {"lock", "unlock", "section", "self", NULL};
    PyObject *slow, *lock_type, *section_type;
    const char *role;
    int mode, which;
    FastMethod *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOsi:RWMethod", kwlist, &slow, &lock_type, &section_type, &role,
                                     &mode))
        return NULL;
    for (which = 0; roles[which] != NULL && strcmp(roles[which], role) != 0; which++)
        ;
    if (roles[which] == NULL || mode < READ_AS_RWLOCK || mode > 1 || (which == RW_UNLOCK && mode < 0)) {
        PyErr_Format(PyExc_ValueError, "RWMethod: role '%s' (lock, unlock, section or self) and mode %d do not fit",
                     role, mode);
        return NULL;
    }
    self = fastmethod_new(type, slow, lock_type, 0, rwmethod_vectorcall);
    if (self == NULL)
        return NULL;
    self->rw_role = which;
    self->rw_read = mode;
    if (layout_init(&self->section, section_type, section_slots) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyTypeObject RWMethodType = FASTMETHOD_TYPE(
    "RWMethod",
    "RWMethod(slow, lock_type, section_type, role, mode): a method of the reader-writer locks whose common case "
    "runs in C ('lock' or 'unlock' in ``mode`` on a known chain, 'section' of ``section_type`` in ``mode``, "
    "'self'); every other call goes to ``slow``.",
    rwmethod_new);

/* accelerate_rw(lock_type): reader-writer locks (``lock_type``) keep their core in ``_rw``, which the
 * fast path takes and releases in C when it is an RWCore (once made, by the lock's first use). */
static PyObject *
accelerate_rw(PyObject *module, PyObject *lock_type)
{
    static const char *const rw_slots[] = {"_rw", NULL};

    if (layout_init(&rw_layout, lock_type, rw_slots) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* -- SRCU and RCU read sides ---------------------------------------------------------------------- */

/*
 * The read sides of pylockdep._rcu, in their common case: a known chain, a read side entered and
 * left by the same thread in order, no grace period waiting.  What they change is what the Python
 * code changes, in the same objects: the map pushed as a recursive reader (as _locks._acquire(map,
 * 2, 0, frame) pushes it) and popped; for an SRCU, the thread's count in counter ``_idx`` of
 * ``_readers`` and its per-thread stack of indexes (``_tls.stack``), as SRCU._enter and read_unlock
 * do; for RCU, the thread's nesting across validators (``_nesting.depth``) and its holder's ``rcu``
 * count and context signature, as _rcu_enter and rcu_read_unlock do.  Whatever can fail is done
 * before anything changes, and nothing between the first change and the last runs Python code: a
 * signal handler's exception finds the read side either entered or not.  Every other case (a new
 * chain, the first read side of a thread, a synchronizer waiting, an index out of order, another
 * validator state) goes to the Python function unchanged.
 */
enum { RS_KEY, RS_OWNER, RS_IDX, RS_READERS, RS_SYNC_OWNER, RS_TLS };  /* an SRCU's slots */
static const char *const srcu_slots[] = {"_key", "_owner", "_idx", "_readers", "_sync_owner", "_tls", NULL};
static const char *const rcu_map_slots[] = {"_key", "_owner", NULL};
enum { SIDE_SRCU, SIDE_IDX };  /* a with s.read() block's slots (_rcu._SRCUReadSide) */
static const char *const srcu_side_slots[] = {"_srcu", "_idx", NULL};

enum { SRCU_READ, SRCU_ENTER, SRCU_EXIT, SRCU_LOCK, SRCU_UNLOCK, RCU_ENTER, RCU_EXIT, RCU_LOCK, RCU_UNLOCK, N_ROLES };
static const char *const read_side_roles[] = {"srcu_read", "srcu_enter", "srcu_exit", "srcu_lock", "srcu_unlock",
                                              "rcu_enter", "rcu_exit", "rcu_lock", "rcu_unlock", NULL};
static PyObject *s_stack, *s_depth;

typedef struct {
    PyObject_HEAD
    PyObject *slow;     /* the Python function or method this one accelerates */
    int role;
    Layout map;         /* SRCU roles: the SRCU type's slots; RCU roles: the map's type's */
    Layout side;        /* SRCU roles: _SRCUReadSide's slots */
    PyObject *rcu;      /* RCU roles: the map (pylockdep.RCU) */
    PyObject *nesting;  /* RCU roles: _rcu._nesting, the threading.local counting read sides across validators */
    vectorcallfunc vectorcall;
} ReadSide;

/*
 * The map's held entry for a recursive read on a known chain (a new reference), with the chain key
 * after it in ``*chain_out`` (a new reference), or NULL (no exception) when Python must push it.
 */
static PyObject *
read_side_entry(PyObject *map, const Layout *ml, PyObject *v, PyObject *t, ThreadCache *c, PyFrameObject *frame,
                PyObject **chain_out)
{
    PyObject *key = SLOT(map, *ml, RS_KEY), *cache, *classes, *cls, *variants, *spins, *tkey, *ctx, *irq, *held;
    PyObject *chains = SLOT(v, validator_layout, V_CHAINS), *maxd = SLOT(v, validator_layout, V_MAX_LOCK_DEPTH);
    PyObject *chain = NULL, *code = NULL, *lasti = NULL, *entry = NULL;
    Py_ssize_t limit;

    if (!IS(key, key_layout) || (cache = SLOT(key, key_layout, K_CACHE)) == NULL || !PyTuple_Check(cache)
        || PyTuple_GET_SIZE(cache) != 2 || PyTuple_GET_ITEM(cache, 0) != v)
        return NULL;
    classes = PyTuple_GET_ITEM(cache, 1);
    if (!PyList_Check(classes) || PyList_GET_SIZE(classes) < 1 || !IS((cls = PyList_GET_ITEM(classes, 0)), class_layout))
        return NULL;
    variants = SLOT(cls, class_layout, C_VARIANTS);
    spins = SLOT(cls, class_layout, C_SPINS);
    tkey = SLOT(t, task_layout, T_KEY);
    ctx = SLOT(t, task_layout, T_CTX);
    irq = SLOT(t, task_layout, T_IRQ);
    held = SLOT(t, task_layout, T_HELD);
    if (variants == NULL || !PyTuple_Check(variants) || PyTuple_GET_SIZE(variants) <= 2 || spins != Py_False
        || tkey == NULL || ctx == NULL || irq == NULL || held == NULL || !PyList_Check(held) || chains == NULL
        || !PyAnySet_Check(chains) || maxd == NULL || !PyLong_Check(maxd))
        return NULL;  /* a map that spins would change the spin count: Python does that */
    limit = PyLong_AsSsize_t(maxd);
    if (limit == -1 || PyList_GET_SIZE(held) + 1 >= limit  /* Python reports the depth */
        || (chain = known_chain(v, c, tkey, ctx, PyTuple_GET_ITEM(variants, 2))) == NULL)
        goto fail;
    code = (PyObject *)PyFrame_GetCode(frame);
    if ((lasti = cached_int(c, PyFrame_GetLasti(frame))) == NULL)
        goto fail;
    entry = held_entry(map, cls, g_two, Py_False, code, lasti, tkey, irq, spins, ctx);
    if (entry == NULL)
        goto fail;
    Py_DECREF(code);
    Py_DECREF(lasti);
    *chain_out = chain;
    return entry;
fail:
    PyErr_Clear();
    Py_XDECREF(chain);
    Py_XDECREF(code);
    Py_XDECREF(lasti);
    return NULL;
}

/* Push ``entry`` (from read_side_entry) and make ``chain`` the holder's key; the map is the holder's.
 * Nothing here fails or runs Python code but the append, which is done first. */
static int
read_side_push(PyObject *map, const Layout *ml, PyObject *t, PyObject *entry, PyObject *chain)
{
    if (PyList_Append(SLOT(t, task_layout, T_HELD), entry) < 0)
        return -1;
    slot_set(map, ml->offset[RS_OWNER], t);
    slot_set(t, task_layout.offset[T_KEY], chain);
    return 0;
}

/* Whether the holder's most recent held entry is the map's (borrowed into ``*top``). */
static int
read_side_on_top(PyObject *map, PyObject *t, PyObject **top)
{
    PyObject *held = SLOT(t, task_layout, T_HELD);
    Py_ssize_t n;

    if (held == NULL || !PyList_Check(held) || (n = PyList_GET_SIZE(held)) == 0)
        return 0;
    *top = PyList_GET_ITEM(held, n - 1);
    return Py_IS_TYPE(*top, g_held_type) && PyTuple_GET_SIZE(*top) == H_FIELDS
           && PyTuple_GET_ITEM(*top, H_LOCK) == map && PyTuple_GET_ITEM(*top, H_SPIN) == Py_False;
}

/* Pop the map's entry, on top (read_side_on_top), as _held.pop() does; the map stays the holder's
 * only if another holder took it meanwhile. */
static void
read_side_pop(PyObject *map, const Layout *ml, PyObject *t, PyObject *top)
{
    PyObject *held = SLOT(t, task_layout, T_HELD);

    Py_INCREF(top);
    slot_set(t, task_layout.offset[T_KEY], PyTuple_GET_ITEM(top, H_PREV_KEY));
    (void)PyList_SetSlice(held, PyList_GET_SIZE(held) - 1, PyList_GET_SIZE(held), NULL);  /* shrinks: no failure */
    if (SLOT(map, *ml, RS_OWNER) == t)
        slot_set(map, ml->offset[RS_OWNER], Py_None);
    held_entry_drop(top);
}

/* The thread's stack of read-side indexes of the SRCU (its ``_tls.stack``), borrowed, or NULL (no
 * exception) when it has none yet: its first read side registers it in Python. */
static PyObject *
srcu_stack(PyObject *srcu, const Layout *ml)
{
    PyObject *tls = SLOT(srcu, *ml, RS_TLS), *stack;

    if (tls == NULL || tls == Py_None || (stack = PyObject_GetAttr(tls, s_stack)) == NULL) {
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(stack);  /* the thread's locals keep it */
    return PyList_CheckExact(stack) ? stack : NULL;
}

/* Counter ``idx`` (borrowed) of the SRCU, or NULL when the counters are not made yet. */
static PyObject *
srcu_counter(PyObject *srcu, const Layout *ml, long idx)
{
    PyObject *counters = SLOT(srcu, *ml, RS_READERS), *readers;

    if (idx < 0 || counters == NULL || !PyTuple_CheckExact(counters) || PyTuple_GET_SIZE(counters) != 2)
        return NULL;
    readers = PyTuple_GET_ITEM(counters, idx);
    return PyDict_CheckExact(readers) ? readers : NULL;
}

/* The thread's ident as an int (borrowed), made once per thread. */
static PyObject *
thread_ident(ThreadCache *c)
{
    if (c->ident == NULL && (c->ident = PyLong_FromUnsignedLong(PyThread_get_thread_ident())) == NULL)
        PyErr_Clear();
    return c->ident;
}

/* SRCU._enter(frame): a new reference to the read side's index, or NULL, with an exception when the
 * push failed (nothing changed), else for Python (nothing changed). */
static PyObject *
srcu_enter(ReadSide *self, PyObject *srcu, PyFrameObject *frame)
{
    PyObject *v, *t, *stack, *readers, *ident, *idx_obj, *old, *count = NULL, *entry = NULL, *chain = NULL;
    ThreadCache *c;
    long idx, n;

    if (!current_task(&v, &t, &c) || has_foreign_releases(t) || (stack = srcu_stack(srcu, &self->map)) == NULL
        || (idx = small_int((idx_obj = SLOT(srcu, self->map, RS_IDX)), 0, 1)) < 0
        || (readers = srcu_counter(srcu, &self->map, idx)) == NULL || (ident = thread_ident(c)) == NULL)
        return NULL;
    old = PyDict_GetItemWithError(readers, ident);
    n = old == NULL ? 0 : small_int(old, 1, LONG_MAX - 1);  /* a count is never 0: it is deleted then */
    if (PyErr_Occurred() || (old != NULL && n < 1) || (count = PyLong_FromLong(n + 1)) == NULL
        || (entry = read_side_entry(srcu, &self->map, v, t, c, frame, &chain)) == NULL)
        goto fail;
    /* Held entry first (it may fail), then the count and the stack, as Python leaves them. */
    Py_INCREF(idx_obj);
    if (read_side_push(srcu, &self->map, t, entry, chain) < 0) {
        Py_DECREF(idx_obj);
        held_entry_drop(entry);
        Py_DECREF(chain);
        Py_DECREF(count);
        return NULL;
    }
    if (PyDict_SetItem(readers, ident, count) < 0 || PyList_Append(stack, idx_obj) < 0) {
        /* out of memory: undo what was done, then report it */
        PyObject *type, *value, *tb, *top;
        PyErr_Fetch(&type, &value, &tb);
        if (PyDict_GetItemWithError(readers, ident) == count
            && (old == NULL ? PyDict_DelItem(readers, ident) : PyDict_SetItem(readers, ident, old)) < 0)
            PyErr_Clear();
        if (read_side_on_top(srcu, t, &top))
            read_side_pop(srcu, &self->map, t, top);
        PyErr_Restore(type, value, tb);
        Py_CLEAR(idx_obj);
    }
    held_entry_drop(entry);
    Py_DECREF(chain);
    Py_DECREF(count);
    return idx_obj;
fail:
    PyErr_Clear();
    Py_XDECREF(count);
    return NULL;
}

/* SRCU.read_unlock(idx) of the thread's most recent read side, with no grace period waiting: 1 done,
 * 0 for Python (nothing changed). */
static int
srcu_leave(ReadSide *self, PyObject *srcu, PyObject *idx_obj)
{
    PyObject *v, *t, *stack, *readers, *ident, *old, *count = NULL, *top;
    ThreadCache *c;
    Py_ssize_t depth;
    long idx, n;

    if ((idx = small_int(idx_obj, 0, 1)) < 0 || SLOT(srcu, self->map, RS_SYNC_OWNER) != Py_None
        || !current_task(&v, &t, &c) || has_foreign_releases(t) || (stack = srcu_stack(srcu, &self->map)) == NULL
        || (depth = PyList_GET_SIZE(stack)) == 0 || small_int(PyList_GET_ITEM(stack, depth - 1), 0, 1) != idx
        || (readers = srcu_counter(srcu, &self->map, idx)) == NULL || (ident = thread_ident(c)) == NULL
        || !read_side_on_top(srcu, t, &top))
        return 0;
    old = PyDict_GetItemWithError(readers, ident);
    if (old == NULL || (n = small_int(old, 1, LONG_MAX)) < 1 || (n > 1 && (count = PyLong_FromLong(n - 1)) == NULL)) {
        PyErr_Clear();
        return 0;
    }
    /* The count (the only step that may fail), then the stack and the held entry. */
    if ((count == NULL ? PyDict_DelItem(readers, ident) : PyDict_SetItem(readers, ident, count)) < 0) {
        PyErr_Clear();
        Py_XDECREF(count);
        return 0;
    }
    Py_XDECREF(count);
    (void)PyList_SetSlice(stack, depth - 1, depth, NULL);  /* shrinks: no failure */
    read_side_pop(srcu, &self->map, t, top);
    return 1;
}

/* The context signature Task.update_ctx() gives ``t`` with ``rcu`` as its RCU nesting (a new
 * reference), or NULL (an exception may be set). */
static PyObject *
context_with_rcu(ThreadCache *c, PyObject *t, PyObject *rcu)
{
    PyObject *items[N_CONTEXT_COUNTERS];
    Py_hash_t h;

    for (int i = 0; i < N_CONTEXT_COUNTERS; i++)
        if ((items[i] = SLOT(t, task_layout, T_PREEMPT + i)) == NULL)
            return NULL;
    items[T_RCU - T_PREEMPT] = rcu;
    if ((h = hash_items(items, N_CONTEXT_COUNTERS)) == -1)
        return NULL;
    return cached_int(c, h);
}

/* The thread's RCU nesting across validators (``_nesting.depth``, 0 when unset), or -1 for Python. */
static long
rcu_thread_depth(ReadSide *self)
{
    PyObject *depth = PyObject_GetAttr(self->nesting, s_depth);
    long found;

    if (depth == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            return -1;
        }
        PyErr_Clear();
        return 0;
    }
    found = small_int(depth, 0, LONG_MAX - 1);
    Py_DECREF(depth);
    return found;
}

/*
 * rcu_read_lock() (``delta`` 1, from ``frame``) or rcu_read_unlock() (``delta`` -1): 1 done, 0 for
 * Python (nothing changed), -1 with an exception set (nothing changed).
 */
static int
rcu_step(ReadSide *self, PyFrameObject *frame, int delta)
{
    PyObject *v, *t, *map = self->rcu, *rcu_obj, *top = NULL, *entry = NULL, *chain = NULL;
    PyObject *depth = NULL, *rcu = NULL, *ctx = NULL;
    PyCodeObject *code;
    ThreadCache *c;
    long nesting, count;
    int result = 0, outside;

    if (!IS(map, self->map) || !current_task(&v, &t, &c) || has_foreign_releases(t)
        || (count = small_int((rcu_obj = SLOT(t, task_layout, T_RCU)), 0, LONG_MAX - 1)) < 0
        || (nesting = rcu_thread_depth(self)) < 0)
        return 0;
    if (delta > 0) {
        /* The site is the caller's, when its file is known not to be pylockdep's. */
        code = PyFrame_GetCode(frame);
        outside = known_outside(code);
        Py_DECREF(code);
        if (!outside || (entry = read_side_entry(map, &self->map, v, t, c, frame, &chain)) == NULL)
            goto done;
    } else if (count < 1 || nesting < 1 || !read_side_on_top(map, t, &top)) {
        goto done;
    }
    if ((depth = PyLong_FromLong(nesting + delta)) == NULL || (rcu = PyLong_FromLong(count + delta)) == NULL
        || (ctx = context_with_rcu(c, t, rcu)) == NULL)
        goto done;
    if (entry != NULL && read_side_push(map, &self->map, t, entry, chain) < 0) {
        result = -1;
        goto done;
    }
    /* Pushed (or about to pop): nothing below fails; setting an attribute of a threading.local that
     * this thread has already read runs no Python code. */
    if (PyObject_SetAttr(self->nesting, s_depth, depth) < 0)
        PyErr_Clear();
    slot_set(t, task_layout.offset[T_RCU], rcu);
    slot_set(t, task_layout.offset[T_CTX], ctx);
    if (top != NULL)
        read_side_pop(map, &self->map, t, top);
    result = 1;
done:
    if (result == 0)
        PyErr_Clear();
    if (entry != NULL)
        held_entry_drop(entry);
    Py_XDECREF(chain);
    Py_XDECREF(depth);
    Py_XDECREF(rcu);
    Py_XDECREF(ctx);
    return result;
}

static PyObject *
read_side_slow(ReadSide *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return PyObject_Vectorcall(self->slow, args, PyVectorcall_NARGS(nargsf), kwnames);
}

static PyObject *
read_side_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    ReadSide *self = (ReadSide *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *srcu, *idx;
    PyFrameObject *frame;
    int r;

    if (kwnames != NULL)
        return read_side_slow(self, args, nargsf, kwnames);
    switch (self->role) {
    case SRCU_READ:  /* SRCU.read(): a _SRCUReadSide over it, made as its __init__ does */
        if (nargs != 1 || !IS(args[0], self->map))
            break;
        if ((srcu = self->side.type->tp_alloc(self->side.type, 0)) != NULL)
            slot_set(srcu, self->side.offset[SIDE_SRCU], args[0]);
        return srcu;
    case SRCU_ENTER:
    case SRCU_LOCK:
        if (nargs != 1 || (frame = PyEval_GetFrame()) == NULL)
            break;
        srcu = args[0];
        if (self->role == SRCU_ENTER) {
            if (!IS(srcu, self->side))
                break;
            srcu = SLOT(srcu, self->side, SIDE_SRCU);
        }
        if (!IS(srcu, self->map))
            break;
        if ((idx = srcu_enter(self, srcu, frame)) == NULL) {
            if (PyErr_Occurred())
                return NULL;
            break;
        }
        if (self->role == SRCU_ENTER)
            slot_set(args[0], self->side.offset[SIDE_IDX], idx);
        return idx;
    case SRCU_EXIT:
    case SRCU_UNLOCK:
        if (self->role == SRCU_EXIT) {
            if (nargs < 1 || !IS(args[0], self->side) || (srcu = SLOT(args[0], self->side, SIDE_SRCU)) == NULL
                || (idx = SLOT(args[0], self->side, SIDE_IDX)) == NULL)
                break;
        } else {
            if (nargs != 2)
                break;
            srcu = args[0];
            idx = args[1];
        }
        if (!IS(srcu, self->map) || !srcu_leave(self, srcu, idx))
            break;
        Py_RETURN_NONE;
    case RCU_ENTER:
    case RCU_LOCK:
        if (nargs != (self->role == RCU_ENTER) || (frame = PyEval_GetFrame()) == NULL)
            break;
        if ((r = rcu_step(self, frame, 1)) < 0)
            return NULL;
        if (r == 0)
            break;
        Py_RETURN_NONE;
    case RCU_EXIT:
    case RCU_UNLOCK:
        if (self->role == RCU_EXIT ? nargs < 1 : nargs != 0)
            break;
        if ((r = rcu_step(self, NULL, -1)) < 0)
            return NULL;
        if (r == 0)
            break;
        Py_RETURN_NONE;
    }
    return read_side_slow(self, args, nargsf, kwnames);
}

static PyObject *
read_side_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"slow", "role", "map_type", "side_type", "rcu", "nesting", NULL};
    PyObject *slow, *map_type, *side_type = Py_None, *rcu = Py_None, *nesting = Py_None;
    const char *role;
    ReadSide *self;
    int r = 0;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OsO|OOO:ReadSide", kwlist, &slow, &role, &map_type, &side_type,
                                     &rcu, &nesting))
        return NULL;
    while (read_side_roles[r] != NULL && strcmp(read_side_roles[r], role) != 0)
        r++;
    if (r == N_ROLES || !PyCallable_Check(slow) || (r < RCU_ENTER ? side_type == Py_None : nesting == Py_None)) {
        PyErr_Format(PyExc_TypeError, "ReadSide(%R, %s): a callable, a known role, and for SRCU roles the read "
                     "side's type, for RCU roles the map and the nesting", slow, role);
        return NULL;
    }
    if ((self = (ReadSide *)type->tp_alloc(type, 0)) == NULL)
        return NULL;
    self->slow = Py_NewRef(slow);
    self->role = r;
    self->vectorcall = read_side_vectorcall;
    if (layout_init(&self->map, map_type, r < RCU_ENTER ? srcu_slots : rcu_map_slots) < 0
        || (r < RCU_ENTER && layout_init(&self->side, side_type, srcu_side_slots) < 0)) {
        Py_DECREF(self);
        return NULL;
    }
    if (r >= RCU_ENTER) {
        self->rcu = Py_NewRef(rcu);
        self->nesting = Py_NewRef(nesting);
    }
    return (PyObject *)self;
}

static int
read_side_traverse(ReadSide *self, visitproc visit, void *arg)
{
    Py_VISIT(self->slow);
    Py_VISIT(self->map.type);
    Py_VISIT(self->side.type);
    Py_VISIT(self->rcu);
    Py_VISIT(self->nesting);
    return 0;
}

static int
read_side_clear(ReadSide *self)
{
    Py_CLEAR(self->slow);
    Py_CLEAR(self->map.type);
    Py_CLEAR(self->side.type);
    Py_CLEAR(self->rcu);
    Py_CLEAR(self->nesting);
    return 0;
}

static void
read_side_dealloc(ReadSide *self)
{
    PyObject_GC_UnTrack(self);
    read_side_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
read_side_repr(ReadSide *self)
{
    return PyUnicode_FromFormat("<%s of %R>", Py_TYPE(self)->tp_name, self->slow);
}

static PyObject *
read_side_getattro(PyObject *op, PyObject *name)
{
    return wrapper_getattr(op, name, ((ReadSide *)op)->slow);
}

static PyMemberDef read_side_members[] = {
    {"__wrapped__", T_OBJECT, offsetof(ReadSide, slow), READONLY, "The Python function this one accelerates."},
    {NULL},
};

static PyTypeObject ReadSideType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylockdep._speedups.ReadSide",
    .tp_doc = "ReadSide(slow, role, map_type, side_type=None, rcu=None, nesting=None): an SRCU or RCU read-side "
              "function or method (``role``: srcu_read, srcu_enter, srcu_exit, srcu_lock, srcu_unlock, rcu_enter, "
              "rcu_exit, rcu_lock, rcu_unlock) whose common case runs in C; every other call goes to ``slow``.  "
              "``map_type`` is SRCU (with ``side_type``, _SRCUReadSide) or the RCU map's type (with ``rcu``, the "
              "map, and ``nesting``, the threading.local counting a thread's read sides).",
    .tp_basicsize = sizeof(ReadSide),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_new = read_side_new,
    .tp_vectorcall_offset = offsetof(ReadSide, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_descr_get = fastmethod_get,
    .tp_dealloc = (destructor)read_side_dealloc,
    .tp_traverse = (traverseproc)read_side_traverse,
    .tp_clear = (inquiry)read_side_clear,
    .tp_repr = (reprfunc)read_side_repr,
    .tp_getattro = read_side_getattro,
    .tp_members = read_side_members,
};

/* Called by PyInit__speedups: the type, added to the module, and the names it uses. */
static int
read_sides_init(PyObject *m)
{
    if ((s_stack = PyUnicode_InternFromString("stack")) == NULL
        || (s_depth = PyUnicode_InternFromString("depth")) == NULL || PyType_Ready(&ReadSideType) < 0)
        return -1;
    return PyModule_AddObjectRef(m, "ReadSide", (PyObject *)&ReadSideType);
}

/* Whether ``type`` is a tuple subclass without a __dict__ whose _fields are held_fields, in order. */
static int
check_held_type(PyObject *type)
{
    PyObject *fields;
    int same;

    if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, &PyTuple_Type)
        || ((PyTypeObject *)type)->tp_dictoffset != 0) {
        PyErr_SetString(PyExc_TypeError, "the held-lock type must be a tuple subclass without a __dict__");
        return -1;
    }
    fields = PyObject_GetAttrString(type, "_fields");
    if (fields == NULL)
        PyErr_Clear();
    same = fields != NULL && PyTuple_Check(fields) && PyTuple_GET_SIZE(fields) == H_FIELDS;
    for (int i = 0; same && i < H_FIELDS; i++) {
        PyObject *name = PyTuple_GET_ITEM(fields, i);
        same = PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, held_fields[i]) == 0;
    }
    Py_XDECREF(fields);
    if (!same) {
        PyErr_Format(PyExc_TypeError, "%s._fields differ from those this module was built with",
                     ((PyTypeObject *)type)->tp_name);
        return -1;
    }
    return 0;
}

static PyObject *
setup(PyObject *module, PyObject *args)
{
    PyObject *active, *validator_type, *task_type, *key_type, *class_type, *held_type, *trace_type, *internal_files,
        *lines;
    long marks[4];

    if (!PyArg_ParseTuple(args, "OOOOOOOO!O!(llll):setup", &active, &validator_type, &task_type, &key_type,
                          &class_type, &held_type, &trace_type, &PyDict_Type, &internal_files, &PyDict_Type, &lines,
                          &marks[0], &marks[1], &marks[2], &marks[3]))
        return NULL;
    if (check_held_type(held_type) < 0
        || layout_init(&trace_layout, trace_type, trace_slots) < 0
        || layout_init(&active_layout, (PyObject *)Py_TYPE(active), active_slots) < 0
        || layout_init(&validator_layout, validator_type, validator_slots) < 0
        || layout_init(&task_layout, task_type, task_slots) < 0
        || layout_init(&key_layout, key_type, key_slots) < 0
        || layout_init(&class_layout, class_type, class_slots) < 0)
        return NULL;
    Py_XSETREF(g_held_type, (PyTypeObject *)Py_NewRef(held_type));
    g_enabled_hardirq = marks[0];
    g_enabled_hardirq_read = marks[1];
    g_enabled_softirq = marks[2];
    g_enabled_softirq_read = marks[3];
    Py_XSETREF(g_internal_files, Py_NewRef(internal_files));
    Py_XSETREF(g_lines, Py_NewRef(lines));
    Py_XSETREF(g_active, Py_NewRef(active));
    Py_RETURN_NONE;
}

/* Forget the calling thread's cached Task: the next fast path reads ``v.local.task`` again.  Called
 * whenever that changes after the thread's first lock (an asyncio task's step swaps its holder in). */
static PyObject *
forget_task(PyObject *self, PyObject *unused)
{
    PyObject *tdict = PyThreadState_GetDict();
    ThreadCache *c;

    if (tdict == NULL)
        Py_RETURN_NONE;
    c = (ThreadCache *)PyDict_GetItemWithError(tdict, s_cache_key);
    if (c == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    if (Py_IS_TYPE(c, &ThreadCacheType))
        Py_CLEAR(c->task);
    Py_RETURN_NONE;
}

/*
 * outside_site(internal_files, skip_file): where the Python function calling this was called
 * from, outside pylockdep: ``(code, lasti)`` of the first frame out from its caller whose file
 * ``internal_files`` (pylockdep._frames' cache: filename -> whether it is pylockdep's) says is not
 * pylockdep's, also skipping ``skip_file`` (threading.py) when given; None when a file on the way is
 * not in the cache yet, or the stack ends (the Python walk then decides).
 */
static PyObject *
outside_site(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyFrameObject *frame, *back;
    PyObject *internal_files, *skip_file, *result = NULL;

    if (nargs != 2 || !PyDict_Check(args[0]) || (args[1] != Py_None && !PyUnicode_Check(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "outside_site(internal_files: dict, skip_file: str | None)");
        return NULL;
    }
    internal_files = args[0];
    skip_file = args[1] == Py_None ? NULL : args[1];
    frame = PyEval_GetFrame();  /* the Python function that called this one */
    if (frame == NULL)
        Py_RETURN_NONE;
    frame = PyFrame_GetBack(frame);  /* its caller: where the walk starts */
    while (frame != NULL) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        PyObject *internal = Py_True;

        if (skip_file == NULL || !(code->co_filename == skip_file
                                   || PyUnicode_Compare(code->co_filename, skip_file) == 0)) {
            internal = PyDict_GetItemWithError(internal_files, code->co_filename);
            if (internal == NULL) {  /* not seen yet (or an error): Python decides */
                Py_DECREF(code);
                Py_DECREF(frame);
                if (PyErr_Occurred())
                    return NULL;
                Py_RETURN_NONE;
            }
        }
        if (internal == Py_False) {
            PyObject *lasti = PyLong_FromLong(PyFrame_GetLasti(frame));
            if (lasti != NULL)
                result = PyTuple_Pack(2, (PyObject *)code, lasti);
            Py_XDECREF(lasti);
            Py_DECREF(code);
            Py_DECREF(frame);
            return result;
        }
        Py_DECREF(code);
        back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    Py_RETURN_NONE;
}

static PyMethodDef speedups_methods[] = {
    {"outside_site", (PyCFunction)(void (*)(void))outside_site, METH_FASTCALL,
     "outside_site(internal_files, skip_file): (code, lasti) of the first frame outside pylockdep that "
     "called the caller, or None when Python must look (pylockdep._frames.caller_site)."},
    {"forget_task", forget_task, METH_NOARGS,
     "forget_task(): the calling thread's holder changed; look ``v.local.task`` up again."},
    {"accelerate_rw", accelerate_rw, METH_O,
     "accelerate_rw(lock_type): take and release reader-writer locks' RWCore in C (see pylockdep._locks)."},
    {"accelerate_new", accelerate_new, METH_VARARGS,
     "accelerate_new(cls, made_at, fields): make calls of ``cls`` at a known site in C (see pylockdep._locks)."},
    {"setup", setup, METH_VARARGS,
     "setup(active, Validator, Task, LockKey, LockClass, HeldLock, IrqTrace, internal_files, lines, marks): the "
     "object whose ``validator`` slot is the active validator, the classes whose slots the fast path reads, the "
     "held entries' type, pylockdep._frames' caches of its own files and of sites' lines, and the usage bits "
     "enabling interrupts sets (ENABLED_HARDIRQ, its _READ, ENABLED_SOFTIRQ, its _READ)."},
    {NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pylockdep._speedups",
    .m_doc = "The acquire/release fast path of pylockdep in C (optional; see pylockdep/_fastpath.py).",
    .m_size = -1,
    .m_methods = speedups_methods,
};

#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m;

    INTERN(s_task, "task");
    INTERN(s_cache_key, "pylockdep._speedups.ThreadCache");
    INTERN(s_depth_exceeded, "depth_exceeded");
    INTERN(s_try, "_try");
    INTERN(s_unlock, "_unlock");
    INTERN(s_take, "_take");
    INTERN(s_restore, "_restore");
    INTERN(s_key, "key");
    INTERN(s_key_slot, "_key");
    INTERN(s_make, "_make");
    INTERN(s_wake, "_wake");
    for (int i = 0; i < N_SMALL; i++)
        if ((g_small[i] = PyLong_FromLong(i)) == NULL)
            return NULL;
    g_zero = g_small[0];
    g_one = g_small[1];
    g_two = g_small[2];
    if ((g_minus_one = PyLong_FromLong(-1)) == NULL)
        return NULL;
    {
        PyObject *time = PyImport_ImportModule("time");
        if (time == NULL)
            return NULL;
        g_monotonic = PyObject_GetAttrString(time, "monotonic");
        Py_DECREF(time);
        if (g_monotonic == NULL)
            return NULL;
    }
    if (PyType_Ready(&AcquireType) < 0 || PyType_Ready(&ReleaseType) < 0 || PyType_Ready(&SectionType) < 0 || PyType_Ready(&ThreadCacheType) < 0
        || PyType_Ready(&RealLockType) < 0 || PyType_Ready(&StandInType) < 0
        || PyType_Ready(&CallMakeType) < 0 || PyType_Ready(&RWCoreType) < 0 || PyType_Ready(&RWMethodType) < 0)
        return NULL;
    m = PyModule_Create(&speedups_module);
    if (m == NULL)
        return NULL;
    /* _fastpath ignores a build whose ABI is not its own SPEEDUPS_ABI (a stale build in a source tree). */
    if (PyModule_AddIntConstant(m, "ABI", SPEEDUPS_ABI) < 0
        || PyModule_AddObjectRef(m, "Acquire", (PyObject *)&AcquireType) < 0
        || PyModule_AddObjectRef(m, "Release", (PyObject *)&ReleaseType) < 0
        || PyModule_AddObjectRef(m, "Section", (PyObject *)&SectionType) < 0
        || PyModule_AddObjectRef(m, "RealLock", (PyObject *)&RealLockType) < 0
        || PyModule_AddObjectRef(m, "StandIn", (PyObject *)&StandInType) < 0
        || PyModule_AddObjectRef(m, "CallMake", (PyObject *)&CallMakeType) < 0
        || PyModule_AddObjectRef(m, "RWCore", (PyObject *)&RWCoreType) < 0
        || PyModule_AddObjectRef(m, "RWMethod", (PyObject *)&RWMethodType) < 0
        || read_sides_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
