/*
 * pylockdep._speedups: the acquire/release fast path in C.
 *
 * This is an accelerator, not a second validator.  It handles exactly one case, the common one:
 * a thread takes a lock exclusively, in a chain of held locks that the validator has already
 * checked, and later releases the lock it took last.  It reads the same Python objects as
 * pylockdep._locks._acquire/_release (the active validator, the thread's Task, the lock's class)
 * and makes the same changes to them, as pylockdep._held's push() and pop() do: a held-lock entry
 * (a tuple of pylockdep._held.HELD_FIELDS) pushed or popped, the chain key updated as chain_key() computes it.
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
 * a call, and their methods (``read()``, ``read_lock()``, ``up_write()``...) are RWMethods.  The
 * wrappers that run once per task (of a thread pool, and asyncio's Handle._run) are PoolMethods.
 *
 * This file is the module's one translation unit: it includes speedups.h (what the parts share),
 * then the parts below, one idea each, in an order where each uses only what comes before it; and
 * it defines the module itself: setup(), forget_task(), outside_site() and PyInit__speedups().
 */
#include "speedups.h"

#include "callers.c"
#include "layout.c"
#include "threadcache.c"
#include "held.c"
#include "reallock.c"
#include "rwcore.c"
#include "maker.c"
#include "lockpath.c"
#include "sections.c"
#include "fastmethod.c"
#include "rwmethods.c"
#include "readside.c"
#include "waits.c"
#include "pool.c"
#include "step.c"

/* -- the module: setup(), forget_task(), outside_site() and the module's types ---------------- */

/* Whether ``fields`` (pylockdep._held.HELD_FIELDS) is a tuple of held_fields, in order. */
static int
check_held_fields(PyObject *fields)
{
    int same = PyTuple_Check(fields) && PyTuple_GET_SIZE(fields) == H_FIELDS;

    for (int i = 0; same && i < H_FIELDS; i++) {
        PyObject *name = PyTuple_GET_ITEM(fields, i);
        same = PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, held_fields[i]) == 0;
    }
    if (!same) {
        PyErr_SetString(PyExc_TypeError, "the held entry's fields differ from those this module was built with");
        return -1;
    }
    return 0;
}

static PyObject *
setup(PyObject *module, PyObject *args)
{
    PyObject *active, *validator_type, *task_type, *key_type, *class_type, *fields, *trace_type, *internal_files,
        *lines;
    long marks[4];

    if (!PyArg_ParseTuple(args, "OOOOOOOO!O!(llll):setup", &active, &validator_type, &task_type, &key_type,
                          &class_type, &fields, &trace_type, &PyDict_Type, &internal_files, &PyDict_Type, &lines,
                          &marks[0], &marks[1], &marks[2], &marks[3]))
        return NULL;
    if (check_held_fields(fields) < 0
        || layout_init(&trace_layout, trace_type, trace_slots) < 0
        || layout_init(&active_layout, (PyObject *)Py_TYPE(active), active_slots) < 0
        || layout_init(&validator_layout, validator_type, validator_slots) < 0
        || layout_init(&task_layout, task_type, task_slots) < 0
        || layout_init(&key_layout, key_type, key_slots) < 0
        || layout_init(&class_layout, class_type, class_slots) < 0)
        return NULL;
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
    PyObject *internal_files, *skip_file, *lasti, *result;
    IFrame *frame;

    if (nargs != 2 || !PyDict_Check(args[0]) || (args[1] != Py_None && !PyUnicode_Check(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "outside_site(internal_files: dict, skip_file: str | None)");
        return NULL;
    }
    internal_files = args[0];
    skip_file = args[1] == Py_None ? NULL : args[1];
    frame = iframe_caller();  /* the Python function that called this one */
    for (frame = frame == NULL ? NULL : iframe_back(frame); frame != NULL; frame = iframe_back(frame)) {
        PyCodeObject *code = iframe_code(frame);
        PyObject *internal = Py_True;

        if (skip_file == NULL || !(code->co_filename == skip_file
                                   || PyUnicode_Compare(code->co_filename, skip_file) == 0)) {
            internal = PyDict_GetItemWithError(internal_files, code->co_filename);
            if (internal == NULL) {  /* not seen yet (or an error): Python decides */
                if (PyErr_Occurred())
                    return NULL;
                Py_RETURN_NONE;
            }
        }
        if (internal == Py_False) {
            if ((lasti = PyLong_FromLong(iframe_lasti(frame))) == NULL)
                return NULL;
            result = PyTuple_Pack(2, (PyObject *)code, lasti);
            Py_DECREF(lasti);
            return result;
        }
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
     "setup(active, Validator, Task, LockKey, LockClass, HELD_FIELDS, IrqTrace, internal_files, lines, marks): the "
     "object whose ``validator`` slot is the active validator, the classes whose slots the fast path reads, the "
     "held entries' field names, pylockdep._frames' caches of its own files and of sites' lines, and the usage bits "
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
    INTERN(s_at_once, "at_once");
    INTERN(s_last, "last");
    INTERN(s_made, "made");
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
        || read_sides_init(m) < 0 || waits_init(m) < 0 || pool_init(m) < 0 || step_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
