/*
 * Making locks in C at a known site: accelerate_new() (a kernel lock type's constructor), StandIn
 * (what instrumentation puts in place of threading.Lock/RLock) and CallMake (the class-shaped
 * stand-ins' __call__).  LockMaker fills a new lock's slots as its Python constructor does.
 */

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
static PyObject *s_key, *s_key_slot, *s_at_once, *s_last, *s_made;

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
    IFrame *frame = iframe_caller();  /* a type's vectorcall has no frame of its own */
    PyCodeObject *code;
    PyObject *more[3] = {name, key, (PyObject *)m->maker.type}, *site, *found = NULL, *made;
    PyObject *parts[3] = {NULL, name, key};
    int nums[3] = {0, 0, 0}, offset;

    if (frame == NULL)
        return NULL;
    code = iframe_code(frame);
    parts[0] = (PyObject *)code;
    nums[0] = offset = iframe_lasti(frame);
    if ((made = recent_find(&m->recent, parts, nums, 3)) != NULL)
        return Py_NewRef(made);
    if ((site = site_key(code, offset, more, 3)) != NULL)
        found = PyDict_GetItemWithError(m->made_at, site);  /* an unhashable name or key raises */
    Py_XDECREF(site);
    if (found == NULL || !PyTuple_Check(found) || PyTuple_GET_SIZE(found) != 2) {
        PyErr_Clear();
        return NULL;
    }
    made = Py_NewRef(PyTuple_GET_ITEM(found, 1));
    recent_keep(&m->recent, parts, nums, 3, made);
    return made;
}

/* The LockKey class and the offsets of its ``at_once``, ``last`` and ``made`` slots, and
 * _classes.MADE_ONE_AT_A_TIME, found at the first count. */
static PyTypeObject *count_key_type;
static Py_ssize_t at_once_offset, last_offset, made_offset;
static long made_one_at_a_time = 0;

/* The small int in the slot at ``offset`` of ``key``; 0 for anything else. */
static long
slot_int(PyObject *key, Py_ssize_t offset)
{
    PyObject *value = *(PyObject **)((char *)key + offset);

    return value != NULL && PyLong_CheckExact(value) ? PyLong_AsLong(value) : 0;
}

/* Count ``lock``, just made with ``key`` (a LockKey), as _classes.count_made() does.  -1 with an
 * exception set. */
static int
count_made(PyObject *key, PyObject *lock)
{
    PyObject **at_once, **last, **made, *alive = NULL, *ref, *count;
    long times;

    if (Py_TYPE(key) != count_key_type) {
        PyObject *type = (PyObject *)Py_TYPE(key);
        Py_ssize_t once = slot_offset(type, s_at_once), past, many;
        PyObject *classes, *limit;

        if (once < 0 || (past = slot_offset(type, s_last)) < 0 || (many = slot_offset(type, s_made)) < 0)
            return -1;
        if ((classes = PyImport_ImportModule("pylockdep._classes")) == NULL)
            return -1;
        limit = PyObject_GetAttrString(classes, "MADE_ONE_AT_A_TIME");
        Py_DECREF(classes);
        if (limit == NULL)
            return -1;
        made_one_at_a_time = PyLong_AsLong(limit);
        Py_DECREF(limit);
        if (made_one_at_a_time == -1 && PyErr_Occurred())
            return -1;
        count_key_type = Py_TYPE(key);
        at_once_offset = once;
        last_offset = past;
        made_offset = many;
    }
    at_once = (PyObject **)((char *)key + at_once_offset);
    last = (PyObject **)((char *)key + last_offset);
    made = (PyObject **)((char *)key + made_offset);
    if (slot_int(key, at_once_offset) >= 2)
        return 0;
    times = slot_int(key, made_offset);
    if (*last != NULL && PyWeakref_Check(*last)) {
#if PY_VERSION_HEX >= 0x030D0000
        if (PyWeakref_GetRef(*last, &alive) < 0)
            return -1;
#else
        alive = Py_XNewRef(PyWeakref_GetObject(*last));
        if (alive == Py_None)
            Py_CLEAR(alive);
#endif
    }
    if (alive != NULL || times >= made_one_at_a_time) {
        Py_XDECREF(alive);
        Py_XSETREF(*at_once, PyLong_FromLong(2));
        Py_XSETREF(*last, Py_NewRef(Py_None));
        return 0;
    }
    if ((ref = PyWeakref_NewRef(lock, NULL)) == NULL)
        return -1;
    if ((count = PyLong_FromLong(times + 1)) == NULL) {
        Py_DECREF(ref);
        return -1;
    }
    Py_XSETREF(*made, count);
    Py_XSETREF(*at_once, PyLong_FromLong(1));
    Py_XSETREF(*last, ref);
    return 0;
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
 * StandIn(make, memo, lock_type, fields, skip_code, binds, plain, keeps_plain): what instrumentation puts in place of
 * ``threading.Lock``/``RLock`` (pylockdep._threading._stand_in).  ``make`` is the Python stand-in;
 * a call with no arguments from a stack whose site ``memo`` (its pylockdep._sites.SiteMemo: a trie
 * keyed by each frame's ``(id(code), f_lasti)``) already knows to be a validated lock's builds that
 * lock here, as ``lock_type._new(key)`` does; every other call (arguments, a plain lock, a stack
 * not seen before) goes to ``make``.  A call from ``skip_code`` (the class-shaped stand-in's
 * ``__call__``) is sited from its caller.  The last stacks answered are kept by identity, so a hit
 * builds no key.  It has a ``__dict__`` for functools.update_wrapper() and pickles by name.  Like a C
 * function it does not bind as a method, unless ``binds``: then it binds as a Python function does
 * (threading.RLock is one), and a call through the binding, having an argument, goes to ``make``.
 * Given ``plain`` (CPython's factory) and ``keeps_plain`` (pylockdep._threading._keeps_plain), it
 * stands in for a name bound before instrumentation: a call from code in a file that dict maps to
 * True (threading's own, such as a Condition's waiter) gets ``plain``'s lock, arguments and all.
 */
#define STAND_IN_DEPTH 4

typedef struct {
    PyObject_HEAD
    PyObject *dict;
    PyObject *make, *memo, *skip_code;
    PyObject *plain, *keeps_plain;  /* both NULL unless it stands in for a name bound before */
    LockMaker maker;
    Recent recent;  /* what memo answered lately, by the (code, offset) of each frame of the stack */
    int binds;      /* binds as a method */
    vectorcallfunc vectorcall;
} StandIn;

/* What ``memo`` holds for the stack from ``frame`` out, as _sites.recall() finds it: a new
 * reference, or NULL (no exception) for "not known".  Records the stack in ``self->recent``. */
static PyObject *
stand_in_recall(StandIn *self, IFrame *frame)
{
    PyObject *node = self->memo, *codes[STAND_IN_DEPTH], *found = NULL;
    int lastis[STAND_IN_DEPTH], depth = 0;

    for (; frame != NULL && depth < STAND_IN_DEPTH; frame = iframe_back(frame)) {
        PyCodeObject *code = iframe_code(frame);
        int lasti = iframe_lasti(frame);
        PyObject *edge = NULL, *entry = NULL;

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
    }
    PyErr_Clear();
    if (found != NULL)
        recent_keep(&self->recent, codes, lastis, depth, found);
    return found;
}

/* The key kept in ``self->recent`` for the stack from ``frame`` out (a new reference), or NULL. */
static PyObject *
stand_in_recent(StandIn *self, IFrame *frame)
{
    PyObject *codes[STAND_IN_DEPTH];
    int lastis[STAND_IN_DEPTH], depth = 0, most = recent_depth(&self->recent);

    for (; frame != NULL && depth < most; frame = iframe_back(frame)) {  /* the frames the kept stacks may compare */
        codes[depth] = (PyObject *)iframe_code(frame);
        lastis[depth++] = iframe_lasti(frame);
    }
    return Py_XNewRef(recent_find(&self->recent, codes, lastis, depth));
}

/* The key in ``answer`` (a pylockdep._threading.ByOwner) for the owner type of the frame its depth
 * out from ``frame``, as _owner_key() finds it: a new reference, or NULL (no exception) when that
 * type has none yet. */
static PyObject *
owner_key(PyObject *answer, IFrame *frame)
{
    PyObject *keys, *owner, *key;
    long depth;

    if (PyTuple_GET_SIZE(answer) != 3 || !PyDict_CheckExact(keys = PyTuple_GET_ITEM(answer, 2)))
        return NULL;
    depth = PyLong_AsLong(PyTuple_GET_ITEM(answer, 0));
    for (; depth > 0 && frame != NULL; depth--)
        frame = iframe_back(frame);
    if (depth != 0 || frame == NULL) {
        PyErr_Clear();
        return NULL;
    }
    owner = (PyObject *)iframe_owner_type(frame);
    /* keys holds a type by the weak reference with no callback that weakref.ref(type) returns while
     * one lives: this finds that one (a type not there gets a new one, which matches nothing). */
    if (owner != NULL && (owner = PyWeakref_NewRef(owner, NULL)) == NULL) {
        PyErr_Clear();
        return NULL;
    }
    key = PyDict_GetItemWithError(keys, owner == NULL ? Py_None : owner);
    Py_XDECREF(owner);
    PyErr_Clear();
    return Py_XNewRef(key);
}

static PyObject *
stand_in_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    StandIn *self = (StandIn *)op;
    IFrame *frame;
    PyObject *key, *lock;

    if ((frame = iframe_caller()) == NULL)
        return PyObject_Vectorcall(self->make, args, nargsf, kwnames);
    if (self->skip_code != NULL && (PyObject *)iframe_code(frame) == self->skip_code
        && (frame = iframe_back(frame)) == NULL)
        return PyObject_Vectorcall(self->make, args, nargsf, kwnames);
    if (self->plain != NULL) {  /* make()'s first question: is the caller's file one that keeps plain? */
        PyObject *keeps = PyDict_GetItemWithError(self->keeps_plain, iframe_code(frame)->co_filename);

        if (keeps == Py_True)
            return PyObject_Vectorcall(self->plain, args, nargsf, kwnames);
        if (keeps == NULL && PyErr_Occurred())
            return NULL;
    }
    if (PyVectorcall_NARGS(nargsf) != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0))
        return PyObject_Vectorcall(self->make, args, nargsf, kwnames);
    if ((key = stand_in_recent(self, frame)) == NULL)
        key = stand_in_recall(self, frame);
    if (key != NULL && PyTuple_Check(key))  /* a ByOwner: the key by the owner's type */
        Py_SETREF(key, owner_key(key, frame));
    if (key == NULL || key == Py_None) {  /* not known, or a plain lock: make() decides */
        Py_XDECREF(key);
        return PyObject_Vectorcall(self->make, args, nargsf, kwnames);
    }
    if ((lock = build_lock(&self->maker, key)) != NULL && count_made(key, lock) < 0)
        Py_CLEAR(lock);
    return lock;
}

static PyObject *
stand_in_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"make", "memo", "lock_type", "fields", "skip_code", "binds", "plain", "keeps_plain", NULL};
    PyObject *make, *memo, *lock_type, *fields, *skip_code = Py_None, *plain = Py_None, *keeps_plain = NULL;
    int binds = 0;
    StandIn *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!OO|OpOO!:StandIn", kwlist, &make, &PyDict_Type, &memo,
                                     &lock_type, &fields, &skip_code, &binds, &plain, &PyDict_Type, &keeps_plain))
        return NULL;
    if ((plain == Py_None) != (keeps_plain == NULL))
        return PyErr_Format(PyExc_TypeError, "StandIn: plain and keeps_plain go together");
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
    self->plain = plain == Py_None ? NULL : Py_NewRef(plain);
    self->keeps_plain = Py_XNewRef(keeps_plain);
    self->binds = binds;
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
    Py_VISIT(self->plain);
    Py_VISIT(self->keeps_plain);
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
    Py_CLEAR(self->plain);
    Py_CLEAR(self->keeps_plain);
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

/* Bound to an instance when ``binds``, as a Python function is; else itself, as a C function is. */
static PyObject *
stand_in_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None || !((StandIn *)self)->binds)
        return Py_NewRef(self);
    return PyMethod_New(self, obj);
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
    .tp_doc = "StandIn(make, memo, lock_type, fields, skip_code=None, binds=False, plain=None, keeps_plain=None): a "
              "lock factory stand-in whose calls at a known site build the lock in C; every other call goes to "
              "``make``.  ``binds``: it binds as a method, as a Python function does.  ``plain``: a call from a file "
              "``keeps_plain`` maps to True gets ``plain``'s lock.",
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
    .tp_descr_get = stand_in_get,
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
