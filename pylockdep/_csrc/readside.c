/*
 * ReadSide: the read sides of pylockdep._rcu (SRCU's read(), read_lock(), read_unlock(), and
 * rcu_read_lock()/rcu_read_unlock()/rcu_read()) in their common case.
 */

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
        return NULL;  /* read sides do not spin: a class that does is left to Python */
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
    return PyTuple_CheckExact(*top) && PyTuple_GET_SIZE(*top) == H_FIELDS
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

    if (!current_task(&v, &t, &c) || has_pending(t) || (stack = srcu_stack(srcu, &self->map)) == NULL
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
        || !current_task(&v, &t, &c) || has_pending(t) || (stack = srcu_stack(srcu, &self->map)) == NULL
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

    if (!IS(map, self->map) || !current_task(&v, &t, &c) || has_pending(t)
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
read_side_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    ReadSide *self = (ReadSide *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *srcu, *idx;
    PyFrameObject *frame;
    int r;

    if (kwnames != NULL)
        return slow_call(self->slow, args, nargsf, kwnames);
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
    return slow_call(self->slow, args, nargsf, kwnames);
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
