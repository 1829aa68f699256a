/*
 * The method descriptors (FastMethod, speedups.h): binding, GC, repr and attributes, the
 * constructors of Acquire, Release and Section, and their type objects.
 */

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
    static char *kwlist[] = {"slow", "lock_type", "arity", "recursive", "save", "is_owned", NULL};
    PyObject *slow, *lock_type;
    Py_ssize_t arity;
    int recursive = 0, save = 0, is_owned = 0;
    FastMethod *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOn|ppp:Release", kwlist, &slow, &lock_type, &arity, &recursive,
                                     &save, &is_owned))
        return NULL;
    self = fastmethod_new(type, slow, lock_type, recursive,
                          is_owned ? is_owned_vectorcall : save ? release_save_vectorcall : release_vectorcall);
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
        return slow_call(((FastMethod *)op)->slow, args, nargsf, kwnames);
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
    "(self included) taken fast, -1 for any.  ``save``: the method is RLock._release_save().  ``is_owned``: "
    "the method is RLock._is_owned(), answered from the lock's owner.",
    release_new);

static PyTypeObject SectionType = FASTMETHOD_TYPE(
    "Section",
    "Section(slow, section_type, lock_type, role): the __enter__ (``role`` 'enter') or __exit__ ('exit') method "
    "of ``section_type`` (pylockdep._locks._Held) whose common case (a known chain, a context change without "
    "checks) runs in C for a section of ``lock_type``; every other call goes to ``slow``.  Role 'new', with "
    "``slow`` the class itself: makes a section from (lock, read, subclass, context) as the class does.",
    section_new);
