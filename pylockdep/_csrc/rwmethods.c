/*
 * RWMethod: the reader-writer locks' methods (read_lock(), down_write(), read()...) whose common
 * case runs in C, and accelerate_rw(), which tells where the locks keep their RWCore.
 */

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
    if (!PyTuple_CheckExact(top) || PyTuple_GET_SIZE(top) != H_FIELDS || PyTuple_GET_ITEM(top, H_LOCK) != lock)
        return -1;
    return small_int(PyTuple_GET_ITEM(top, H_READ), 0, READ_MAX);
}

static PyObject *
rwmethod_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastMethod *self = (FastMethod *)op;
    IFrame *frame;
    PyObject *v, *t;
    ThreadCache *c;
    long held;
    int r, mode;

    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL || !IS(args[0], self->lock))
        return slow_call(self->slow, args, nargsf, kwnames);
    switch (self->rw_role) {
    case RW_SELF:
        return Py_NewRef(args[0]);
    case RW_SECTION:
        return new_section(self, args[0], self->rw_read < 0 ? g_minus_one : *read_objs[self->rw_read], g_zero, g_zero);
    case RW_LOCK:
        if ((frame = iframe_caller()) == NULL || !fast_state(&v, &t, &c))
            return slow_call(self->slow, args, nargsf, kwnames);
        mode = self->rw_read == READ_AS_RWLOCK ? rwlock_read_mode(t) : self->rw_read;
        r = mode < 0 ? 0 : take_known(v, t, c, args[0], &self->lock, frame, mode, 0);
        break;
    default:  /* RW_UNLOCK */
        if (!fast_state(&v, &t, &c) || (held = top_read(t, args[0])) < 0 || (held == 0) != (self->rw_read == 0))
            return slow_call(self->slow, args, nargsf, kwnames);
        r = drop_top(t, args[0], &self->lock, *read_objs[self->rw_read]);
    }
    if (r < 0)
        return NULL;
    if (r == 0)
        return slow_call(self->slow, args, nargsf, kwnames);
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
