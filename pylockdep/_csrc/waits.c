/*
 * Completion maps (pylockdep._waits): every work item of a thread pool runs holding two maps, its
 * pool's and its own, and whoever waits for it touches its map.  accelerate_waits() returns
 * MapPaths in place of the three Python functions that do it, _hold_maps(maps, frame),
 * _release_maps(maps) and _touch_work(work, caller): each does its function's common case, for
 * every map of the call or for none, and calls the function, untouched, for anything else.
 *
 * - hold: each map pushed as a trylock (no lock beneath, nothing to take) on a chain known to the
 *   validator, below the depth limit;
 * - release: the maps, in the order given, are the top of the stack: popped, as pop() does;
 * - touch_work: the work's map touched (lock_sync) changes nothing, because the chain is known or a
 *   map of the same class (another item's) is held, and the pool's map needs no touch (the pool
 *   runs more than one worker, and the waiter does not hold its map).
 */

/* Slots read in place: a map's (_key, _owner), a work map's pool, a pool map's max_workers and idle
 * work maps (pool.c), a Task's busy. */
static Layout map_layout, work_layout, pool_layout, busy_layout;
enum { M_KEY, M_OWNER };
static const char *const map_slots[] = {"_key", "_owner", NULL};
static const char *const work_slots[] = {"pool", NULL};
enum { P_MAX_WORKERS, P_IDLE };
static const char *const pool_slots[] = {"max_workers", "idle", NULL};
static const char *const busy_slots[] = {"busy", NULL};
/* Offsets into LockClass.variants: a trylock (hold) and an empty write section (touch). */
static Py_ssize_t g_variant_try, g_variant_sync;

enum { MAPS_HOLD, MAPS_RELEASE, MAPS_TOUCH_WORK };
#define MAX_MAPS 4  /* a call with more maps goes to Python */

typedef struct {
    PyObject_HEAD
    PyObject *slow;  /* the Python function */
    int role;
    vectorcallfunc vectorcall;
} MapPath;

/* The class (borrowed) of the map ``m`` in the validator ``v``, when its key caches it; else NULL. */
static PyObject *
map_class(PyObject *v, PyObject *m)
{
    PyObject *key, *cache, *classes, *cls;

    if (!IS(m, map_layout) || !IS(key = SLOT(m, map_layout, M_KEY), key_layout))
        return NULL;
    cache = SLOT(key, key_layout, K_CACHE);
    if (cache == NULL || !PyTuple_Check(cache) || PyTuple_GET_SIZE(cache) != 2 || PyTuple_GET_ITEM(cache, 0) != v)
        return NULL;
    classes = PyTuple_GET_ITEM(cache, 1);
    if (!PyList_Check(classes) || PyList_GET_SIZE(classes) < 1)
        return NULL;
    cls = PyList_GET_ITEM(classes, 0);
    return IS(cls, class_layout) ? cls : NULL;
}

/* The variant ``index`` (borrowed) of the class ``cls``, or NULL. */
static PyObject *
class_variant(PyObject *cls, Py_ssize_t index)
{
    PyObject *variants = SLOT(cls, class_layout, C_VARIANTS);

    if (variants == NULL || !PyTuple_Check(variants) || PyTuple_GET_SIZE(variants) <= index)
        return NULL;
    return PyTuple_GET_ITEM(variants, index);
}

/* _hold_maps(maps, frame) for the calling thread: 1 when every map is pushed, 0 when Python must
 * do it (nothing changed), -1 with an exception set (out of memory: the maps pushed so far stay). */
static int
hold_maps(PyObject *maps, IFrame *frame)
{
    PyObject *v, *t, *held, *tkey, *ctx, *irq, *maxd, *lasti = NULL;
    PyObject *classes[MAX_MAPS], *chains[MAX_MAPS] = {NULL}, *entries[MAX_MAPS] = {NULL};
    Py_ssize_t n, limit, i;
    ThreadCache *c;
    int result = 0;

    if (!PyTuple_CheckExact(maps) || (n = PyTuple_GET_SIZE(maps)) == 0 || n > MAX_MAPS
        || frame == NULL || !fast_state(&v, &t, &c))
        return 0;
    held = SLOT(t, task_layout, T_HELD);
    tkey = SLOT(t, task_layout, T_KEY);
    ctx = SLOT(t, task_layout, T_CTX);
    irq = SLOT(t, task_layout, T_IRQ);
    maxd = SLOT(v, validator_layout, V_MAX_LOCK_DEPTH);
    if (held == NULL || !PyList_Check(held) || tkey == NULL || ctx == NULL || irq == NULL || maxd == NULL
        || !PyLong_Check(maxd) || (limit = lock_depth_limit(maxd)) == -1 || PyList_GET_SIZE(held) + n >= limit)
        return 0;
    /* Every chain first: all the maps are pushed, or none. */
    for (i = 0; i < n; i++) {
        PyObject *variant;

        if ((classes[i] = map_class(v, PyTuple_GET_ITEM(maps, i))) == NULL
            || SLOT(classes[i], class_layout, C_SPINS) != Py_False  /* maps never spin: Python counts any */
            || (variant = class_variant(classes[i], g_variant_try)) == NULL
            || (chains[i] = known_chain(v, c, i ? chains[i - 1] : tkey, ctx, variant)) == NULL)
            goto done;
    }
    if ((lasti = cached_int(c, iframe_lasti(frame))) == NULL) {
        PyErr_Clear();
        goto done;
    }
    for (i = 0; i < n; i++) {
        entries[i] = held_entry(PyTuple_GET_ITEM(maps, i), classes[i], g_zero, Py_True, (PyObject *)iframe_code(frame),
                                lasti, i ? chains[i - 1] : tkey, irq, Py_False, ctx);
        if (entries[i] == NULL) {
            PyErr_Clear();
            goto done;
        }
    }
    /* The entries own what the rest needs (maps, classes, keys) while references change hands. */
    Py_INCREF(t);
    for (i = 0; i < n; i++) {
        if (held_push(held, entries[i]) < 0) {
            result = -1;
            break;
        }
        slot_set(PyTuple_GET_ITEM(maps, i), map_layout.offset[M_OWNER], t);
        slot_set(t, task_layout.offset[T_KEY], chains[i]);
        result = 1;
    }
    Py_DECREF(t);
done:
    for (i = 0; i < n; i++) {
        Py_XDECREF(chains[i]);
        if (entries[i] != NULL)
            held_entry_drop(entries[i]);
    }
    Py_XDECREF(lasti);
    return result;
}

/* _release_maps(maps) for the calling thread: 1 when every map was on top, in order, and is popped;
 * 0 when Python must do it (nothing changed). */
static int
release_maps(PyObject *maps)
{
    PyObject *v, *t, *held;
    Py_ssize_t n, depth, i;
    ThreadCache *c;

    if (!PyTuple_CheckExact(maps) || (n = PyTuple_GET_SIZE(maps)) == 0 || !fast_state(&v, &t, &c))
        return 0;
    held = SLOT(t, task_layout, T_HELD);
    if (held == NULL || !PyList_Check(held) || (depth = PyList_GET_SIZE(held)) < n)
        return 0;
    for (i = 0; i < n; i++) {
        PyObject *entry = PyList_GET_ITEM(held, depth - 1 - i), *m = PyTuple_GET_ITEM(maps, i);
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != H_FIELDS
            || PyTuple_GET_ITEM(entry, H_LOCK) != m || PyTuple_GET_ITEM(entry, H_SPIN) != Py_False
            || !IS(m, map_layout))
            return 0;
    }
    Py_INCREF(t);
    for (i = 0; i < n; i++) {
        PyObject *m = PyTuple_GET_ITEM(maps, i), *top = held_pop(held);  /* the list's reference is ours */

        slot_set(t, task_layout.offset[T_KEY], PyTuple_GET_ITEM(top, H_PREV_KEY));
        if (SLOT(m, map_layout, M_OWNER) == t)  /* another holder may have taken the map since */
            slot_set(m, map_layout.offset[M_OWNER], Py_None);
        held_entry_drop(top);
    }
    Py_DECREF(t);
    return 1;
}

/* _touch_work(work, caller) for the calling thread: 1 when it changes nothing, 0 when Python must
 * decide (nothing changed). */
static int
touch_work(PyObject *work)
{
    PyObject *v, *t, *held, *cls, *variant, *pool, *chain;
    Py_ssize_t i, depth;
    ThreadCache *c;
    long workers;
    int same_class = 0;

    if (!IS(work, work_layout) || !fast_state(&v, &t, &c) || !IS(t, busy_layout)
        || !is_zero(SLOT(t, busy_layout, 0)) || (cls = map_class(v, work)) == NULL)
        return 0;
    pool = SLOT(work, work_layout, 0);
    held = SLOT(t, task_layout, T_HELD);
    if (!IS(pool, pool_layout) || !compact_value(SLOT(pool, pool_layout, P_MAX_WORKERS), &workers) || workers == 1
        || held == NULL || !PyList_Check(held))
        return 0;
    depth = PyList_GET_SIZE(held);
    for (i = 0; i < depth; i++) {
        PyObject *entry = PyList_GET_ITEM(held, i), *lock;

        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != H_FIELDS)
            return 0;
        lock = PyTuple_GET_ITEM(entry, H_LOCK);
        if (lock == pool)
            return 0;  /* a work item of the pool waits for the pool's work: Python touches the pool */
        same_class |= PyTuple_GET_ITEM(entry, H_CLASS) == cls && lock != work;
    }
    if (same_class)
        return 1;  /* another instance of the work's class is held: instances are judged apart */
    if ((variant = class_variant(cls, g_variant_sync)) == NULL
        || (chain = known_chain(v, c, SLOT(t, task_layout, T_KEY), SLOT(t, task_layout, T_CTX), variant)) == NULL)
        return 0;
    Py_DECREF(chain);
    return 1;
}

static PyObject *
map_path_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    MapPath *self = (MapPath *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    int done = 0;

    if (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0) {
        if (self->role == MAPS_HOLD && nargs == 2)
            done = hold_maps(args[0], PyFrame_Check(args[1]) ? iframe_of((PyFrameObject *)args[1]) : NULL);
        else if (self->role == MAPS_RELEASE && nargs == 1)
            done = release_maps(args[0]);
        else if (self->role == MAPS_TOUCH_WORK && nargs == 2)
            done = touch_work(args[0]);
    }
    if (done < 0)
        return NULL;
    if (done)
        Py_RETURN_NONE;
    return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
}

static int
map_path_traverse(MapPath *self, visitproc visit, void *arg)
{
    Py_VISIT(self->slow);
    return 0;
}

static int
map_path_clear(MapPath *self)
{
    Py_CLEAR(self->slow);
    return 0;
}

static void
map_path_dealloc(MapPath *self)
{
    PyObject_GC_UnTrack(self);
    map_path_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
map_path_repr(MapPath *self)
{
    return PyUnicode_FromFormat("<C fast path of %R>", self->slow);
}

static PyMemberDef map_path_members[] = {
    {"__wrapped__", T_OBJECT, offsetof(MapPath, slow), READONLY, "the Python function it accelerates"},
    {NULL},
};

static PyTypeObject MapPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylockdep._speedups.MapPath",
    .tp_doc = "A completion-map function of pylockdep._waits whose common case runs in C (see accelerate_waits).",
    .tp_basicsize = sizeof(MapPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(MapPath, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_dealloc = (destructor)map_path_dealloc,
    .tp_repr = (reprfunc)map_path_repr,
    .tp_traverse = (traverseproc)map_path_traverse,
    .tp_clear = (inquiry)map_path_clear,
    .tp_members = map_path_members,
};

static PyObject *
map_path_new(PyObject *slow, int role)
{
    MapPath *self = PyObject_GC_New(MapPath, &MapPathType);

    if (self == NULL)
        return NULL;
    self->slow = Py_NewRef(slow);
    self->role = role;
    self->vectorcall = map_path_vectorcall;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

/*
 * accelerate_waits(hold_maps, release_maps, touch_work, map_type, work_type, pool_type, variant_try,
 * variant_sync): the three MapPaths, (hold, release, touch_work).  After setup(): the Task's layout
 * is setup()'s.
 */
static PyObject *
accelerate_waits(PyObject *module, PyObject *args)
{
    PyObject *hold, *release, *touch, *map_type, *work_type, *pool_type, *paths[3];
    Py_ssize_t variant_try, variant_sync;

    if (!PyArg_ParseTuple(args, "OOOOOOnn:accelerate_waits", &hold, &release, &touch, &map_type, &work_type,
                          &pool_type, &variant_try, &variant_sync))
        return NULL;
    if (task_layout.type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "accelerate_waits() needs setup() first");
        return NULL;
    }
    if (layout_init(&map_layout, map_type, map_slots) < 0 || layout_init(&work_layout, work_type, work_slots) < 0
        || layout_init(&pool_layout, pool_type, pool_slots) < 0
        || layout_init(&busy_layout, (PyObject *)task_layout.type, busy_slots) < 0)
        return NULL;
    g_variant_try = variant_try;
    g_variant_sync = variant_sync;
    paths[0] = map_path_new(hold, MAPS_HOLD);
    paths[1] = map_path_new(release, MAPS_RELEASE);
    paths[2] = map_path_new(touch, MAPS_TOUCH_WORK);
    if (paths[0] == NULL || paths[1] == NULL || paths[2] == NULL) {
        for (int i = 0; i < 3; i++)
            Py_XDECREF(paths[i]);
        return NULL;
    }
    return Py_BuildValue("(NNN)", paths[0], paths[1], paths[2]);
}

static PyMethodDef waits_methods[] = {
    {"accelerate_waits", accelerate_waits, METH_VARARGS,
     "accelerate_waits(hold_maps, release_maps, touch_work, map_type, work_type, pool_type, variant_try, "
     "variant_sync): C versions of pylockdep._waits' three functions (see pylockdep._fastpath)."},
    {NULL},
};

/* Ready the type and add accelerate_waits() to the module. */
static int
waits_init(PyObject *m)
{
    return PyType_Ready(&MapPathType) < 0 ? -1 : PyModule_AddFunctions(m, waits_methods);
}
