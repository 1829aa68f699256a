/*
 * RWCore (speedups.h): a reader-writer lock's state, taken and released in C with no Python code
 * between; the Python methods of pylockdep._locks' subclass do the waiting.  rwcore_of() finds a
 * lock's core.
 */

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
