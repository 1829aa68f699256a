/*
 * RealLock (speedups.h): what a validated lock blocks on, _thread.allocate_lock()'s lock in C,
 * which the lock path takes and releases without a call.
 */

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

/* Take it, waiting at most the first slice of a wait (FIRST_SLICE_US) with the GIL released: 1
 * taken, 0 not.  A signal ends the wait early and its handler runs later, in Python; nothing else
 * runs in this thread meanwhile, so the caller's state stays as it left it. */
static int
reallock_try_slice(RealLock *self)
{
    PyLockStatus r;

    Py_BEGIN_ALLOW_THREADS
    r = PyThread_acquire_lock_timed(self->lock, FIRST_SLICE_US, 1);
    Py_END_ALLOW_THREADS
    if (r != PY_LOCK_ACQUIRED)
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
