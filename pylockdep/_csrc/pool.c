/*
 * PoolMethod: the instrumented methods that run once per task, with their common case in C: those of
 * concurrent.futures for a task of a thread pool (pylockdep._waits wraps ThreadPoolExecutor.submit,
 * _WorkItem.__init__, _WorkItem.run and Future.result/exception), and asyncio's Handle._run for a
 * step of an asyncio task (role ``step``, in step.c).  Each stands in for the Python wrapper, which
 * stays the definition: any call the C code does not take, it hands to that wrapper untouched.
 * The roles of thread pools (what the wrapper of pylockdep._waits does, in C):
 *
 * - submit: a pool with a map, called from a line whose work key _keys_at knows, by a thread that
 *   runs no item of the pool (the wrapper marks such a future): the key is put in _submitting under
 *   the thread's ident for the work item to find, the original submit() runs, and what was there
 *   before is put back;
 * - work_init: after the original _WorkItem.__init__, the work item and its future get the pool's
 *   idle map of the work's class (_PoolMap.idle_work(), from the pool's dict when there);
 * - run: the item runs holding its pool's map and a map of its own (hold_maps() of waits.c, at the
 *   caller's frame: the pool's _worker), built with the four slots _WorkMap.__init__ sets and naming
 *   its runner, which its future carries while it runs; the maps are released and the future given
 *   the idle map back however it ends;
 * - result: a wait for a future that is done already (nothing to wait for): the work's map is
 *   touched (touch_work() of waits.c), then the original returns the result.  Not while the work's
 *   map is still held (a done callback, in the thread that ran the work), nor while a thread runs
 *   the future's done callbacks (its in_callbacks attribute is not empty), nor from code that reads
 *   done futures by design (the list reads_done), nor where touch_work() declines (a pool of one
 *   worker, an item of the pool waiting): the Python wrapper decides those.  A future with no map
 *   at all (not a thread pool's, nor given one) is the original's at once, done or not.
 *
 * Where a step's C half (hold, release) declines, the Python function of pylockdep._waits for that
 * step runs in its place, with a frame object made for it.  pool_setup() gives this module
 * those functions and the dictionaries the wrappers share.
 */
enum { POOL_SUBMIT, POOL_WORK_INIT, POOL_RUN, POOL_RESULT, POOL_STEP };

/* Set by pool_setup(): the Python steps, _waits' shared dicts, its attribute names and done states. */
static PyObject *g_hold_step, *g_release_step;
static PyObject *g_submitting, *g_keys_at, *g_work_kind, *g_map_attr, *g_work_attr, *g_done_states, *g_reads_done,
    *g_in_callbacks_attr;
static PyObject *s_condition, *s_is_owned, *s_state, *s_owner, *s_future, *s_idle_work;
/* All the slots of a _WorkMap, which run fills as its __init__ does. */
static Layout workmap_layout;
enum { W_KEY, W_OWNER, W_POOL, W_RUNNER };
static const char *const workmap_slots[] = {"_key", "_owner", "pool", "runner", NULL};

typedef struct {
    PyObject_HEAD
    PyObject *slow;      /* the Python wrapper of pylockdep._waits */
    PyObject *original;  /* the method of concurrent.futures it wraps */
    int role;
    vectorcallfunc vectorcall;
} PoolMethod;

static PyObject *step_call(PoolMethod *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);

/* getattr(obj, name, None) as a new reference; NULL with an exception other than AttributeError.
 * A missing attribute (most futures have no map) makes no AttributeError to clear. */
static PyObject *
attr_or_none(PyObject *obj, PyObject *name)
{
    PyObject *value;
#if PY_VERSION_HEX >= 0x030D0000
    int found = PyObject_GetOptionalAttr(obj, name, &value);
#else
    int found = _PyObject_LookupAttr(obj, name, &value);
#endif

    if (found < 0)
        return NULL;
    return found ? value : Py_NewRef(Py_None);
}

/* The key _keys_at holds for work made at ``frame`` (borrowed), as map_key() looks it up first; or
 * NULL (no exception) when it holds none. */
static PyObject *
known_work_key(IFrame *frame)
{
    PyObject *site = site_key(iframe_code(frame), iframe_lasti(frame), &g_work_kind, 1), *found;

    found = site == NULL ? NULL : PyDict_GetItemWithError(g_keys_at, site);
    Py_XDECREF(site);
    if (found == NULL || !PyTuple_CheckExact(found) || PyTuple_GET_SIZE(found) != 2) {
        PyErr_Clear();
        return NULL;
    }
    return PyTuple_GET_ITEM(found, 1);
}

/* Put ``previous`` (or nothing) back as the thread ``ident``'s entry of _submitting, keeping any
 * exception being raised. */
static void
submitting_restore(PyObject *ident, PyObject *previous)
{
    PyObject *exc = raised_take();
    int failed = previous != NULL ? PyDict_SetItem(g_submitting, ident, previous) : PyDict_DelItem(g_submitting, ident);

    if (failed)
        PyErr_Clear();  /* a KeyError: no entry to drop; or out of memory */
    if (exc != NULL)
        raised_put(exc);
}

/* Whether the calling thread may run an item of ``pool`` (its held stack has the pool's map, or
 * there is no Task to tell): a submit from inside the pool is Python's, which marks the future. */
static int
may_run_item_of(PyObject *pool)
{
    PyObject *v, *t, *held;
    ThreadCache *c;

    if (!current_task(&v, &t, &c) || (held = SLOT(t, task_layout, T_HELD)) == NULL || !PyList_Check(held))
        return 1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(held); i++) {
        PyObject *entry = PyList_GET_ITEM(held, i);

        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != H_FIELDS || PyTuple_GET_ITEM(entry, H_LOCK) == pool)
            return 1;
    }
    return 0;
}

static PyObject *
pool_submit(PoolMethod *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *pool, *key, *ident, *previous, *entry, *result;
    IFrame *frame = iframe_caller();
    ThreadCache *c = thread_cache();

    if (PyVectorcall_NARGS(nargsf) < 2 || frame == NULL || c == NULL || thread_ident(c) == NULL)
        return slow_call(self->slow, args, nargsf, kwnames);
    if ((pool = attr_or_none(args[0], g_map_attr)) == NULL)
        return NULL;
    if (!IS(pool, pool_layout) || (key = known_work_key(frame)) == NULL || may_run_item_of(pool)) {
        Py_DECREF(pool);
        return slow_call(self->slow, args, nargsf, kwnames);
    }
    entry = PyTuple_Pack(2, pool, key);
    Py_DECREF(pool);
    if (entry == NULL)
        return NULL;
    ident = Py_NewRef(c->ident);
    previous = Py_XNewRef(PyDict_GetItemWithError(g_submitting, ident));  /* hidden from this submit's work */
    if ((previous == NULL && PyErr_Occurred()) || PyDict_SetItem(g_submitting, ident, entry) < 0) {
        result = NULL;
    } else {
        result = PyObject_Vectorcall(self->original, args, nargsf, kwnames);
        submitting_restore(ident, previous);
    }
    Py_DECREF(entry);
    Py_XDECREF(previous);
    Py_DECREF(ident);
    return result;
}

/* A new _WorkMap for ``key`` of ``pool`` run by ``runner``, its slots set as _WorkMap.__init__ sets them. */
static PyObject *
new_work_map(PyObject *key, PyObject *pool, PyObject *runner)
{
    PyObject *work = workmap_layout.type->tp_alloc(workmap_layout.type, 0);

    if (work == NULL)
        return NULL;
    slot_set(work, workmap_layout.offset[W_KEY], key);
    slot_set(work, workmap_layout.offset[W_OWNER], Py_None);
    slot_set(work, workmap_layout.offset[W_POOL], pool);
    slot_set(work, workmap_layout.offset[W_RUNNER], runner);
    return work;
}

/* pool.idle_work(key) as a new reference: from the pool map's dict of idle maps when it has one. */
static PyObject *
idle_work(PyObject *pool, PyObject *key)
{
    PyObject *idle = SLOT(pool, pool_layout, P_IDLE), *work;

    if (idle != NULL && PyDict_CheckExact(idle)) {
        work = PyDict_GetItemWithError(idle, key);
        if (work != NULL)
            return Py_NewRef(work);
        if (PyErr_Occurred())
            return NULL;
    }
    return PyObject_CallMethodOneArg(pool, s_idle_work, key);
}

static PyObject *
pool_work_init(PoolMethod *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *done, *submitting, *work;
    ThreadCache *c = thread_cache();
    int failed;

    if (PyVectorcall_NARGS(nargsf) != 5 || kwnames != NULL || c == NULL || thread_ident(c) == NULL)
        return slow_call(self->slow, args, nargsf, kwnames);
    if ((done = PyObject_Vectorcall(self->original, args, nargsf, NULL)) == NULL)
        return NULL;
    Py_DECREF(done);
    submitting = PyDict_GetItemWithError(g_submitting, c->ident);
    if (submitting == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
    if (!PyTuple_CheckExact(submitting) || PyTuple_GET_SIZE(submitting) != 2
        || !IS(PyTuple_GET_ITEM(submitting, 0), pool_layout))
        return PyErr_Format(PyExc_SystemError, "pylockdep: _submitting holds %R", submitting);
    if (PyTuple_GET_ITEM(submitting, 1) == Py_None)
        Py_RETURN_NONE;
    work = idle_work(PyTuple_GET_ITEM(submitting, 0), PyTuple_GET_ITEM(submitting, 1));
    if (work == NULL)
        return NULL;
    failed = PyObject_GenericSetAttr(args[0], g_work_attr, work) < 0  /* object.__setattr__ */
             || PyObject_GenericSetAttr(args[1], g_work_attr, work) < 0;
    Py_DECREF(work);
    return failed ? NULL : Py_NewRef(Py_None);
}

/* A step of pylockdep._waits with the arguments (first, the caller's frame object), or without the
 * frame when ``with_frame`` is 0: 0 when done, -1 with its exception. */
static int
python_step(PyObject *step, PyObject *first, int with_frame)
{
    PyObject *args[2] = {first, NULL}, *done;

    if (with_frame && (args[1] = (PyObject *)PyEval_GetFrame()) == NULL) {
        PyErr_SetString(PyExc_SystemError, "pylockdep: no calling frame");
        return -1;
    }
    done = PyObject_Vectorcall(step, args, with_frame ? 2 : 1, NULL);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* Release ``maps`` after the work ran (``result``, NULL when it raised): a new reference to the
 * result, or NULL with the exception of the work, else of the release (chained as a finally
 * clause's would be). */
static PyObject *
release_after(PyObject *maps, PyObject *result)
{
    PyObject *raised = result == NULL ? raised_take() : NULL;
    int r = release_maps(maps);

    if (r == 0)
        r = python_step(g_release_step, maps, 0) < 0 ? -1 : 1;
    return finally_end(result, raised, r != 1);
}

/* Give ``future`` the map ``work`` back after its run (``result``, NULL when it raised), keeping
 * the run's exception: ``result``, or NULL with the exception of the run, else of the setting. */
static PyObject *
idle_after(PyObject *future, PyObject *work, PyObject *result)
{
    PyObject *raised = result == NULL ? raised_take() : NULL;

    return finally_end(result, raised, PyObject_GenericSetAttr(future, g_work_attr, work) < 0);
}

static PyObject *
pool_run(PoolMethod *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *idle, *pool, *key, *work = NULL, *future = NULL, *held = NULL, *released = NULL, *result = NULL;
    IFrame *frame = iframe_caller();
    ThreadCache *c = thread_cache();
    int r;

    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL || frame == NULL || c == NULL || thread_ident(c) == NULL)
        return slow_call(self->slow, args, nargsf, kwnames);
    if ((idle = attr_or_none(args[0], g_work_attr)) == NULL)
        return NULL;
    /* Python raises AttributeError for a slot not set */
    if (!IS(idle, workmap_layout) || (pool = SLOT(idle, workmap_layout, W_POOL)) == NULL
        || (key = SLOT(idle, workmap_layout, W_KEY)) == NULL) {
        Py_DECREF(idle);
        return slow_call(self->slow, args, nargsf, kwnames);
    }
    if ((future = PyObject_GetAttr(args[0], s_future)) == NULL
        || (work = new_work_map(key, pool, c->ident)) == NULL
        || (held = PyTuple_Pack(2, pool, work)) == NULL || (released = PyTuple_Pack(2, work, pool)) == NULL
        || PyObject_GenericSetAttr(future, g_work_attr, work) < 0)
        goto done;
    if ((r = hold_maps(held, frame)) == 0)
        r = python_step(g_hold_step, held, 1) < 0 ? -1 : 1;
    if (r > 0)
        result = release_after(released, PyObject_Vectorcall(self->original, args, nargsf, NULL));
    result = idle_after(future, idle, result);
done:
    Py_XDECREF(held);
    Py_XDECREF(released);
    Py_XDECREF(work);
    Py_XDECREF(future);
    Py_DECREF(idle);
    return result;
}

/* Whether the future ``future`` is done (1), not (0), or the Python wrapper must decide (-1, no
 * exception): its condition is held by the caller (concurrent.futures.wait() calls result() so). */
static int
future_done(PyObject *future)
{
    PyObject *state = PyObject_GetAttr(future, s_state), *cond, *owned;
    int done = state == NULL ? -1 : PySet_Contains(g_done_states, state);

    Py_XDECREF(state);
    if (done == 1) {
        cond = PyObject_GetAttr(future, s_condition);
        owned = cond == NULL ? NULL : PyObject_CallMethodNoArgs(cond, s_is_owned);
        done = owned == Py_False ? 1 : -1;
        Py_XDECREF(cond);
        Py_XDECREF(owned);
    }
    if (done < 0)
        PyErr_Clear();
    return done;
}

/* Whether the work's map is still held (1), by the thread that runs the work: the future's done
 * callbacks run there, before the map is released.  0 when not, -1 (no exception) when unknown. */
static int
work_running(PyObject *work)
{
    PyObject *owner = PyObject_GetAttr(work, s_owner);
    int running = owner == NULL ? -1 : owner != Py_None;

    Py_XDECREF(owner);
    if (running < 0)
        PyErr_Clear();
    return running;
}

/* Whether some thread runs the done callbacks of ``future`` (1), none (0), or -1 with an exception. */
static int
in_callbacks(PyObject *future)
{
    PyObject *inside = attr_or_none(future, g_in_callbacks_attr);
    int busy;

    if (inside == NULL)
        return -1;
    busy = inside == Py_None ? 0 : PyObject_IsTrue(inside);
    Py_DECREF(inside);
    return busy;
}

/* Whether ``code`` is in the list ``reads_done``, by identity (a code object's hash is not kept). */
static int
reads_done_futures(PyCodeObject *code)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(g_reads_done); i++)
        if (PyList_GET_ITEM(g_reads_done, i) == (PyObject *)code)
            return 1;
    return 0;
}

static PyObject *
pool_result(PoolMethod *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    IFrame *caller = iframe_caller();
    PyObject *work;
    int r = 0;

    if (nargs < 1 || nargs > 2 || kwnames != NULL || caller == NULL || reads_done_futures(iframe_code(caller)))
        return slow_call(self->slow, args, nargsf, kwnames);
    if ((work = attr_or_none(args[0], g_work_attr)) == NULL)
        return NULL;
    if (work == Py_None) {  /* no pool's work, nor a map given (a process pool's, a user's): no wait to model */
        Py_DECREF(work);
        return PyObject_Vectorcall(self->original, args, nargsf, NULL);
    }
    if (!IS(work, workmap_layout) || future_done(args[0]) != 1 || work_running(work) != 0
        || (r = in_callbacks(args[0])) != 0) {
        Py_DECREF(work);
        if (r < 0)
            PyErr_Clear();  /* the wrapper looks again, and says */
        return slow_call(self->slow, args, nargsf, kwnames);
    }
    r = touch_work(work);
    Py_DECREF(work);
    if (r == 0)
        return slow_call(self->slow, args, nargsf, kwnames);
    return PyObject_Vectorcall(self->original, args, nargsf, NULL);
}

static PyObject *
pool_method_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PoolMethod *self = (PoolMethod *)op;

    if (self->role == POOL_STEP)
        return step_call(self, args, nargsf, kwnames);
    if (g_submitting == NULL)  /* pool_setup() not called */
        return slow_call(self->slow, args, nargsf, kwnames);
    switch (self->role) {
    case POOL_SUBMIT:
        return pool_submit(self, args, nargsf, kwnames);
    case POOL_WORK_INIT:
        return pool_work_init(self, args, nargsf, kwnames);
    case POOL_RUN:
        return pool_run(self, args, nargsf, kwnames);
    default:
        return pool_result(self, args, nargsf, kwnames);
    }
}

static PyObject *
pool_method_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"role", "slow", "original", NULL};
    static const char *const roles[] = {"submit", "work_init", "run", "result", "step", NULL};
    PyObject *slow, *original;
    const char *role;
    PoolMethod *self;
    int which;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sOO:PoolMethod", kwlist, &role, &slow, &original))
        return NULL;
    for (which = 0; roles[which] != NULL && strcmp(roles[which], role) != 0; which++)
        ;
    if (roles[which] == NULL)
        return PyErr_Format(PyExc_ValueError, "PoolMethod role must be submit, work_init, run, result or step, not %R",
                            PyTuple_GET_ITEM(args, 0));
    if (!PyCallable_Check(slow) || !PyCallable_Check(original))
        return PyErr_Format(PyExc_TypeError, "PoolMethod needs callables");
    if ((self = (PoolMethod *)type->tp_alloc(type, 0)) == NULL)
        return NULL;
    self->slow = Py_NewRef(slow);
    self->original = Py_NewRef(original);
    self->role = which;
    self->vectorcall = pool_method_vectorcall;
    return (PyObject *)self;
}

static int
pool_method_traverse(PoolMethod *self, visitproc visit, void *arg)
{
    Py_VISIT(self->slow);
    Py_VISIT(self->original);
    return 0;
}

static int
pool_method_clear(PoolMethod *self)
{
    Py_CLEAR(self->slow);
    Py_CLEAR(self->original);
    return 0;
}

static void
pool_method_dealloc(PoolMethod *self)
{
    PyObject_GC_UnTrack(self);
    pool_method_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
pool_method_repr(PoolMethod *self)
{
    return PyUnicode_FromFormat("<C fast path of %R>", self->slow);
}

static PyObject *
pool_method_getattro(PyObject *op, PyObject *name)
{
    return wrapper_getattr(op, name, ((PoolMethod *)op)->slow);
}

static PyMemberDef pool_method_members[] = {
    {"__wrapped__", T_OBJECT, offsetof(PoolMethod, slow), READONLY, "The Python wrapper this one accelerates."},
    {NULL},
};

static PyTypeObject PoolMethodType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylockdep._speedups.PoolMethod",
    .tp_doc = "PoolMethod(role, slow, original): an instrumented method run once per task, whose common case "
              "runs in C (role 'submit', 'work_init', 'run' or 'result' of concurrent.futures, see "
              "pylockdep._fastpath.accelerate_pool; 'step', asyncio's Handle._run, see accelerate_step); every "
              "other call goes to ``slow``, the Python wrapper of ``original``.",
    .tp_basicsize = sizeof(PoolMethod),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_new = pool_method_new,
    .tp_vectorcall_offset = offsetof(PoolMethod, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_descr_get = fastmethod_get,
    .tp_dealloc = (destructor)pool_method_dealloc,
    .tp_traverse = (traverseproc)pool_method_traverse,
    .tp_clear = (inquiry)pool_method_clear,
    .tp_repr = (reprfunc)pool_method_repr,
    .tp_getattro = pool_method_getattro,
    .tp_members = pool_method_members,
};

/*
 * pool_setup(hold_maps, release_maps, submitting, keys_at, work_kind, map_attr, work_attr, done_states,
 * reads_done, in_callbacks_attr, work_type): what the PoolMethods share (see
 * pylockdep._fastpath.accelerate_pool).  After accelerate_waits().
 */
static PyObject *
pool_setup(PyObject *module, PyObject *args)
{
    PyObject *steps[2], *submitting, *keys_at, *kind, *map_attr, *work_attr, *done_states, *reads_done,
        *in_callbacks_attr, *work_type;

    if (!PyArg_ParseTuple(args, "OOO!O!UUUO!O!UO:pool_setup", &steps[0], &steps[1], &PyDict_Type,
                          &submitting, &PyDict_Type, &keys_at, &kind, &map_attr, &work_attr, &PySet_Type,
                          &done_states, &PyList_Type, &reads_done, &in_callbacks_attr, &work_type))
        return NULL;
    if (pool_layout.type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "pool_setup() needs accelerate_waits() first");
        return NULL;
    }
    if (layout_init(&workmap_layout, work_type, workmap_slots) < 0)
        return NULL;
    Py_XSETREF(g_hold_step, Py_NewRef(steps[0]));
    Py_XSETREF(g_release_step, Py_NewRef(steps[1]));
    Py_XSETREF(g_keys_at, Py_NewRef(keys_at));
    Py_XSETREF(g_work_kind, Py_NewRef(kind));
    Py_XSETREF(g_map_attr, Py_NewRef(map_attr));
    Py_XSETREF(g_work_attr, Py_NewRef(work_attr));
    Py_XSETREF(g_done_states, Py_NewRef(done_states));
    Py_XSETREF(g_reads_done, Py_NewRef(reads_done));
    Py_XSETREF(g_in_callbacks_attr, Py_NewRef(in_callbacks_attr));
    Py_XSETREF(g_submitting, Py_NewRef(submitting));  /* last: the PoolMethods start with it */
    Py_RETURN_NONE;
}

static PyMethodDef pool_methods[] = {
    {"pool_setup", pool_setup, METH_VARARGS,
     "pool_setup(hold_maps, release_maps, submitting, keys_at, work_kind, map_attr, work_attr, done_states, "
     "reads_done, in_callbacks_attr, work_type): what the PoolMethods share (see pylockdep._fastpath.accelerate_pool)."},
    {NULL},
};

/* Ready the type, add it and pool_setup() to the module, and make the names it looks up. */
static int
pool_init(PyObject *m)
{
    if (PyType_Ready(&PoolMethodType) < 0 || PyModule_AddObjectRef(m, "PoolMethod", (PyObject *)&PoolMethodType) < 0
        || PyModule_AddFunctions(m, pool_methods) < 0)
        return -1;
    s_condition = PyUnicode_InternFromString("_condition");
    s_is_owned = PyUnicode_InternFromString("_is_owned");
    s_state = PyUnicode_InternFromString("_state");
    s_owner = PyUnicode_InternFromString("_owner");
    s_future = PyUnicode_InternFromString("future");
    s_idle_work = PyUnicode_InternFromString("idle_work");
    return s_condition == NULL || s_is_owned == NULL || s_state == NULL || s_owner == NULL || s_future == NULL
                   || s_idle_work == NULL
               ? -1
               : 0;
}
