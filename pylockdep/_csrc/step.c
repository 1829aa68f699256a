/*
 * PoolMethod's role ``step``: asyncio's Handle._run while instrumented (pylockdep._asyncio._step),
 * its common case in C.  A handle whose callback is no task's step runs as CPython's own.  A step of a task whose
 * holder exists, whose work has started (or which has no work map) and which awaits no task's map
 * runs with that holder as the thread's current one, as _step puts it there: the holder's
 * ``running`` is the task meanwhile, and _after_step() follows only when the task is done or holds
 * more than its work's map (else _step finds nothing to do after the step).  Every other call,
 * validation off or a task's first step included, goes to _step, the definition.
 */
/* Set by step_setup(): after(v, holder, task), the Python half that follows a step, and asyncio.Task. */
static PyObject *g_after_step, *g_task_type;

/* The slots read of a TaskHolder and of a Handle (set by step_setup()). */
static Layout holder_layout, handle_layout;
enum { TH_WORKING, TH_WORK, TH_AWAITING, TH_RUNNING };
static const char *const holder_slots[] = {"working", "work", "awaiting", "running", NULL};
static const char *const handle_slots[] = {"_callback", NULL};
static PyObject *s_self, *s_done;

/* The task whose step ``handle`` runs (a new reference), or NULL, no exception, when its callback
 * is not a bound method of an instance of ``task_type``. */
static PyObject *
step_task(PyObject *handle, PyObject *task_type)
{
    PyObject *callback = SLOT(handle, handle_layout, 0), *task;

    task = callback == NULL ? NULL : PyObject_GetAttr(callback, s_self);
    if (task != NULL && !PyObject_TypeCheck(task, (PyTypeObject *)task_type))
        Py_CLEAR(task);
    if (task == NULL)
        PyErr_Clear();
    return task;
}

/* Whether ``seq`` is an empty tuple or list. */
static int
empty_sequence(PyObject *seq)
{
    return (PyTuple_CheckExact(seq) && PyTuple_GET_SIZE(seq) == 0)
           || (PyList_CheckExact(seq) && PyList_GET_SIZE(seq) == 0);
}

/* The holder of ``task`` in validator ``v`` (borrowed) when the step can run in C: made, its work
 * started or none, awaiting nothing.  NULL, no exception, otherwise. */
static PyObject *
step_holder(PyObject *v, PyObject *task)
{
    PyObject *holders = SLOT(v, validator_layout, V_ASYNC_HOLDERS), *id, *h, *working, *work, *awaiting;

    if (holders == NULL || !PyDict_CheckExact(holders) || (id = PyLong_FromVoidPtr(task)) == NULL) {
        PyErr_Clear();
        return NULL;
    }
    h = PyDict_GetItemWithError(holders, id);
    Py_DECREF(id);
    if (h == NULL || !IS(h, holder_layout) || !IS(h, task_layout)) {
        PyErr_Clear();
        return NULL;
    }
    working = SLOT(h, holder_layout, TH_WORKING);
    work = SLOT(h, holder_layout, TH_WORK);
    awaiting = SLOT(h, holder_layout, TH_AWAITING);
    if (working == NULL || work == NULL || awaiting == NULL || SLOT(h, holder_layout, TH_RUNNING) == NULL)
        return NULL;
    return (working == Py_True || work == Py_None) && empty_sequence(awaiting) ? h : NULL;
}

/* Whether the step just run left _after_step() something to do (1): the task is done, or its
 * holder holds more than its work's map; 0 if not; -1 with an exception. */
static int
step_left_work(PyObject *h, PyObject *task)
{
    PyObject *done = PyObject_VectorcallMethod(s_done, &task, 1, NULL), *held, *work;
    int r;

    if (done == NULL)
        return -1;
    r = PyObject_IsTrue(done);
    Py_DECREF(done);
    if (r != 0)
        return r;
    held = SLOT(h, task_layout, T_HELD);
    work = SLOT(h, holder_layout, TH_WORK);
    if (held == NULL || !PyList_CheckExact(held) || PyList_GET_SIZE(held) > 1)
        return 1;
    return PyList_GET_SIZE(held) == 1 && PyTuple_GET_ITEM(PyList_GET_ITEM(held, 0), H_LOCK) != work;
}

/* ``result`` of the step (NULL when it raised), then what follows it: ``running`` back to None and,
 * when there is work left, after(v, h, task).  A new reference to the result, or NULL with the
 * step's exception, else that of what followed (its context the step's, as a finally clause's). */
static PyObject *
step_end(PyObject *v, PyObject *h, PyObject *task, PyObject *result)
{
    PyObject *raised = result == NULL ? raised_take() : NULL, *called;
    int r;

    slot_set(h, holder_layout.offset[TH_RUNNING], Py_None);
    if ((r = step_left_work(h, task)) == 1) {
        called = PyObject_CallFunctionObjArgs(g_after_step, v, h, task, NULL);
        r = called == NULL ? -1 : 0;
        Py_XDECREF(called);
    }
    return finally_end(result, raised, r < 0);
}

/* Make ``t`` the thread's current holder (``v.local.task``) and the cache's: 0, or -1 with an
 * exception. */
static int
step_swap(PyObject *v, ThreadCache *c, PyObject *t)
{
    if (PyObject_SetAttr(SLOT(v, validator_layout, V_LOCAL), s_task, t) < 0)
        return -1;
    Py_XSETREF(c->task, Py_NewRef(t));
    return 0;
}

/* PoolMethod's role ``step``: ``original`` is CPython's Handle._run, ``slow`` pylockdep._asyncio._step. */
static PyObject *
step_call(PoolMethod *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *task, *v, *outer, *h, *result = NULL;
    ThreadCache *c;

    if (g_task_type == NULL || PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL)  /* step_setup() not called */
        return slow_call(self->slow, args, nargsf, kwnames);
    if (!IS(args[0], handle_layout))
        return slow_call(self->slow, args, nargsf, kwnames);
    if ((task = step_task(args[0], g_task_type)) == NULL)
        return PyObject_Vectorcall(self->original, args, nargsf, NULL);
    if (!current_task(&v, &outer, &c) || (h = step_holder(v, task)) == NULL) {
        Py_DECREF(task);
        return slow_call(self->slow, args, nargsf, kwnames);
    }
    /* all three kept: the step may change the active validator, and the cache's reference to
     * ``outer`` goes in step_swap() */
    Py_INCREF(v);
    Py_INCREF(outer);
    Py_INCREF(h);
    if (step_swap(v, c, h) == 0) {
        slot_set(h, holder_layout.offset[TH_RUNNING], task);
        result = PyObject_Vectorcall(self->original, args, nargsf, NULL);
        result = step_end(v, h, task, result);
        /* the thread's holder back however the step ended, its exception kept */
        PyObject *raised = result == NULL ? raised_take() : NULL;
        result = finally_end(result, raised, step_swap(v, c, outer) < 0);
    }
    Py_DECREF(v);
    Py_DECREF(outer);
    Py_DECREF(h);
    Py_DECREF(task);
    return result;
}

/* step_setup(after, task_type, holder_type, handle_type): what the role ``step`` reads (see
 * pylockdep._fastpath.accelerate_step).  After setup(). */
static PyObject *
step_setup(PyObject *module, PyObject *args)
{
    PyObject *after, *task_type, *holder_type, *handle_type;

    if (!PyArg_ParseTuple(args, "OO!OO:step_setup", &after, &PyType_Type, &task_type, &holder_type, &handle_type))
        return NULL;
    if (task_layout.type == NULL || validator_layout.type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "step_setup() needs setup() first");
        return NULL;
    }
    if (layout_init(&holder_layout, holder_type, holder_slots) < 0
        || layout_init(&handle_layout, handle_type, handle_slots) < 0)
        return NULL;
    Py_XSETREF(g_after_step, Py_NewRef(after));
    Py_XSETREF(g_task_type, Py_NewRef(task_type));  /* last: the role starts with it */
    Py_RETURN_NONE;
}

static PyMethodDef step_methods[] = {
    {"step_setup", step_setup, METH_VARARGS,
     "step_setup(after, task_type, holder_type, handle_type): what PoolMethod's role 'step' reads (see "
     "pylockdep._fastpath.accelerate_step)."},
    {NULL},
};

/* Add step_setup() to the module, and make the names the role looks up. */
static int
step_init(PyObject *m)
{
    if (PyModule_AddFunctions(m, step_methods) < 0)
        return -1;
    s_self = PyUnicode_InternFromString("__self__");
    s_done = PyUnicode_InternFromString("done");
    return s_self == NULL || s_done == NULL ? -1 : 0;
}
