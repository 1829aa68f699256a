/*
 * pylockdep._speedups' private header: what every part of the C fast path shares.  The layouts of
 * the Python objects it reads in place (Layout, SLOT() and the slot positions of each class), the
 * objects made once at import (small ints, interned names), and the structs that more than one part
 * uses: Recent, ThreadCache, RealLock, RWCore and FastMethod.
 *
 * The module is one translation unit: module.c includes this header, then every part in the order
 * it lists, so every helper stays static and the compiler can inline the lock path across parts
 * (thread cache -> take_known -> held entries) as it did when they were one file.  A part may use
 * what the parts before it define.
 */
#ifndef PYLOCKDEP_SPEEDUPS_H
#define PYLOCKDEP_SPEEDUPS_H

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
    Py_ssize_t offset[20];
    int recursive;  /* a lock's layout: threading.RLock's, with an owner ident and a count */
} Layout;

#define SLOT(obj, layout, i) (*(PyObject **)((char *)(obj) + (layout).offset[i]))

/* The active-validator holder and the classes whose slots the fast path reads (set by setup()). */
static PyObject *g_active;
static Layout active_layout, validator_layout, task_layout, key_layout, class_layout, trace_layout;
enum { ACTIVE_VALIDATOR };
static const char *const active_slots[] = {"validator", NULL};
enum { V_OFF, V_LOCAL, V_CHAINS, V_CHAINS_FORGOTTEN, V_MAX_LOCK_DEPTH, V_PREEMPT_RT, V_ASYNC_HOLDERS };
static const char *const validator_slots[] = {"off", "local", "chains", "chains_forgotten", "max_lock_depth",
                                              "preempt_rt", "async_holders", NULL};
enum {
    T_HELD, T_KEY, T_CTX, T_IRQ, T_PENDING,
    /* the context counters (Task.update_ctx() hashes them in this order), and what sections change */
    T_PREEMPT, T_HARDIRQ, T_HARDIRQ_THREADED, T_SOFTIRQ, T_BH, T_IRQS_OFF, T_RCU, T_IN_SIGNAL, T_SIGNALS_ON,
    T_IN_GC, T_IRQTRACE, T_ATOMIC_SITE, T_ATOMIC_DEPTH, T_IRQ_SAVES
};
static const char *const task_slots[] = {"held", "key", "ctx", "irq", "pending", "preempt",
                                         "hardirq", "hardirq_threaded", "softirq", "bh", "irqs_off", "rcu",
                                         "in_signal", "signals_on", "in_gc", "irqtrace", "atomic_site", "atomic_depth",
                                         "irq_saves", NULL};
#define N_CONTEXT_COUNTERS 10  /* T_PREEMPT .. T_IN_GC */
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

/* FastMethod: an accelerated method (Acquire, Release and Section, made in fastmethod.c; RWMethod,
 * in rwmethods.c), the Python method it wraps and the layouts it reads. */
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

/* The __get__ of the method types (fastmethod.c), which CallMake (maker.c, before it) and ReadSide
 * share: itself from the class, else bound to the instance. */
static PyObject *fastmethod_get(PyObject *self, PyObject *obj, PyObject *type);

#endif /* PYLOCKDEP_SPEEDUPS_H */
