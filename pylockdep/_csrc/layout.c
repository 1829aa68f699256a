/*
 * Reading and building Python objects in place: a class's __slots__ offsets (Layout), a slot set
 * with no attribute lookup, a small int read without a call, hash(tuple) computed without the
 * tuple, and the site key the Python path files a frame's site under.
 */

/* The offset of the __slots__ attribute ``name`` of the class ``type``; -1 with an exception set. */
static Py_ssize_t
slot_offset(PyObject *type, PyObject *name)
{
    PyObject *descr = PyObject_GetAttr(type, name);
    Py_ssize_t offset = -1;

    if (descr == NULL)
        return -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type) && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX)
        offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    else
        PyErr_Format(PyExc_TypeError, "%s.%U is not a __slots__ attribute", ((PyTypeObject *)type)->tp_name, name);
    Py_DECREF(descr);
    return offset;
}

static int
layout_init(Layout *layout, PyObject *type, const char *const *names)
{
    if (!PyType_Check(type)) {
        PyErr_Format(PyExc_TypeError, "expected a class, not %.100s", Py_TYPE(type)->tp_name);
        return -1;
    }
    for (int i = 0; names[i] != NULL; i++) {
        PyObject *name;

        if (i >= (int)(sizeof layout->offset / sizeof layout->offset[0])) {
            PyErr_Format(PyExc_TypeError, "%s: too many slots for the C fast path's layout",
                         ((PyTypeObject *)type)->tp_name);
            return -1;
        }
        if ((name = PyUnicode_FromString(names[i])) == NULL)
            return -1;
        layout->offset[i] = slot_offset(type, name);
        Py_DECREF(name);
        if (layout->offset[i] < 0)
            return -1;
    }
    Py_XSETREF(layout->type, (PyTypeObject *)Py_NewRef(type));
    return 0;
}

/* The Python function ``slow`` called with a fast path's arguments, as given: what every accelerated
 * method does with a case it does not handle. */
static PyObject *
slow_call(PyObject *slow, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return PyObject_Vectorcall(slow, args, PyVectorcall_NARGS(nargsf), kwnames);
}

/* The exception being raised, as one object (a new reference), now no longer set; NULL when none.
 * 3.12's PyErr_GetRaisedException(), on 3.11 too. */
static PyObject *
raised_take(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* Raise ``exc`` (raised_take()'s, a reference this steals) again. */
static void
raised_put(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef(Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* How a finally clause ends: the body's ``result`` (NULL when the body raised ``raised``,
 * raised_take()'s, which this steals) if the clause's own work succeeded; else (``failed``, its
 * exception set) NULL with the clause's exception, its context the body's, as Python chains them. */
static PyObject *
finally_end(PyObject *result, PyObject *raised, int failed)
{
    if (failed) {
        Py_CLEAR(result);
        if (raised != NULL) {
            PyObject *later = raised_take();

            PyException_SetContext(later, raised);  /* steals ``raised`` */
            raised = later;
        }
    }
    if (raised != NULL)
        raised_put(raised);
    return result;
}

/* Whether a constructor of ``type`` got no arguments; 0 with TypeError set when it got some. */
static int
no_arguments(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    const char *dot = strrchr(type->tp_name, '.');

    if (PyTuple_GET_SIZE(args) == 0 && (kwds == NULL || PyDict_GET_SIZE(kwds) == 0))
        return 1;
    PyErr_Format(PyExc_TypeError, "%s() takes no arguments", dot != NULL ? dot + 1 : type->tp_name);
    return 0;
}

/* Slot i of obj, replacing the old value (a new reference is taken). */
static inline void
slot_set(PyObject *obj, Py_ssize_t offset, PyObject *value)
{
    PyObject **slot = (PyObject **)((char *)obj + offset);
    Py_XSETREF(*slot, Py_NewRef(value));
}

/* The value of ``obj`` in ``*value`` when it is an exact int of one digit at most (|value| < 2**30:
 * read in place, with no call); 0 for anything else. */
static inline int
compact_value(PyObject *obj, long *value)
{
    if (obj == NULL || !PyLong_CheckExact(obj))
        return 0;
#if PY_VERSION_HEX >= 0x030C0000
    if (!PyUnstable_Long_IsCompact((PyLongObject *)obj))
        return 0;
    *value = (long)PyUnstable_Long_CompactValue((PyLongObject *)obj);
#else
    Py_ssize_t size = Py_SIZE(obj);
    if (size < -1 || size > 1)
        return 0;
    *value = (long)size * (long)((PyLongObject *)obj)->ob_digit[0];
#endif
    return 1;
}

/* hash(tuple(items)), as CPython's tuple hash computes it, without making the tuple. */
#if SIZEOF_PY_UHASH_T > 4
#define XXPRIME_1 ((Py_uhash_t)11400714785074694791ULL)
#define XXPRIME_2 ((Py_uhash_t)14029467366897019727ULL)
#define XXPRIME_5 ((Py_uhash_t)2870177450012600261ULL)
#define XXROTATE(x) ((x << 31) | (x >> 33))
#else
#define XXPRIME_1 ((Py_uhash_t)2654435761UL)
#define XXPRIME_2 ((Py_uhash_t)2246822519UL)
#define XXPRIME_5 ((Py_uhash_t)374761393UL)
#define XXROTATE(x) ((x << 13) | (x >> 19))
#endif

static Py_hash_t
hash_items(PyObject *const *items, Py_ssize_t n)
{
    Py_uhash_t acc = XXPRIME_5;

    for (Py_ssize_t i = 0; i < n; i++) {
        Py_uhash_t lane;
        long small;

        if (items[i] == Py_False || items[i] == Py_True)
            lane = items[i] == Py_True;  /* hash(True) == 1 */
        else if (compact_value(items[i], &small))
            lane = (Py_uhash_t)(small == -1 ? -2 : small);  /* an int below 2**30 is its own hash (but -1) */
        else if ((lane = (Py_uhash_t)PyObject_Hash(items[i])) == (Py_uhash_t)-1)
            return -1;
        acc += lane * XXPRIME_2;
        acc = XXROTATE(acc);
        acc *= XXPRIME_1;
    }
    acc += (Py_uhash_t)n ^ (XXPRIME_5 ^ 3527539UL);
    if (acc == (Py_uhash_t)-1)
        return 1546275796;
    return (Py_hash_t)acc;
}

/* A new tuple ``(id(code), lasti, *more)``: the key the Python path files a frame's site under
 * (_frames._lines and _sites' trie with nothing more, _locks._made_at with name, key and type).
 * NULL with an exception set. */
static PyObject *
site_key(PyCodeObject *code, int lasti, PyObject *const *more, Py_ssize_t n_more)
{
    PyObject *key = PyTuple_New(2 + n_more), *item;

    if (key == NULL)
        return NULL;
    if ((item = PyLong_FromVoidPtr(code)) == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    PyTuple_SET_ITEM(key, 0, item);
    if ((item = PyLong_FromLong(lasti)) == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    PyTuple_SET_ITEM(key, 1, item);
    for (Py_ssize_t i = 0; i < n_more; i++)
        PyTuple_SET_ITEM(key, 2 + i, Py_NewRef(more[i]));
    return key;
}
