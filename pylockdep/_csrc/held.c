/*
 * The Task's held-lock stack as pylockdep._held keeps it: entries (tuples of the H_* fields) built,
 * pushed and popped in place (spare entries reused rather than freed), and the Task's pending
 * work.
 */

/* Whether the Task has pending work (Task.pending: locks other threads released for it, a run of
 * chain keys to write back), which the slow path does first. */
static int
has_pending(PyObject *t)
{
    PyObject *pending = SLOT(t, task_layout, T_PENDING);
    return pending == NULL || !PyList_Check(pending) || PyList_GET_SIZE(pending) != 0;
}

/*
 * Held entries that nothing refers to any more, kept to be filled again: refilling one costs less
 * than making a tuple and freeing it (which tracks and untracks it with the garbage collector).  A
 * spare's fields are None, so it keeps nothing alive.
 */
#define MAX_SPARE_ENTRIES 32
static PyObject *spare_entries[MAX_SPARE_ENTRIES];
static int n_spare_entries;

/* A held entry of the fields given in order (H_*), as pylockdep._held.push() builds it. */
static PyObject *
held_entry(PyObject *lock, PyObject *cls, PyObject *read, PyObject *trylock, PyObject *code, PyObject *lasti,
           PyObject *prev_key, PyObject *irq, PyObject *spins, PyObject *ctx)
{
    PyObject *fields[H_FIELDS], *entry;

    fields[H_LOCK] = lock;
    fields[H_CLASS] = cls;
    fields[H_READ] = read;
    fields[H_TRYLOCK] = trylock;
    fields[H_CODE] = code;
    fields[H_LASTI] = lasti;
    fields[H_PREV_KEY] = prev_key;
    fields[H_IRQ] = irq;
    fields[H_SPIN] = spins;
    fields[H_CTX] = ctx;
    while (n_spare_entries > 0) {
        entry = spare_entries[--n_spare_entries];
        if (Py_REFCNT(entry) != 1) {  /* gc.get_objects() found it: it is someone else's now */
            Py_DECREF(entry);
            continue;
        }
        for (int i = 0; i < H_FIELDS; i++)
            Py_SETREF(PyTuple_GET_ITEM(entry, i), Py_NewRef(fields[i]));  /* replaces None */
        return entry;
    }
    entry = PyTuple_New(H_FIELDS);
    if (entry == NULL)
        return NULL;
    for (int i = 0; i < H_FIELDS; i++)
        PyTuple_SET_ITEM(entry, i, Py_NewRef(fields[i]));
    return entry;
}

/* Append ``entry`` to the held list ``held``: in place while the list has room (it keeps the room
 * its entries leave, see held_pop()).  -1 with an exception set. */
static inline int
held_push(PyObject *held, PyObject *entry)
{
    Py_ssize_t n = PyList_GET_SIZE(held);

    if (n >= ((PyListObject *)held)->allocated)
        return PyList_Append(held, entry);
    PyList_SET_ITEM(held, n, Py_NewRef(entry));
    Py_SET_SIZE(held, n + 1);
    return 0;
}

/* Take the last entry off the held list ``held`` (not empty), with the list's reference to it, and
 * keep the room (list.pop() would give the memory back as the stack empties and ask again). */
static inline PyObject *
held_pop(PyObject *held)
{
    Py_ssize_t n = PyList_GET_SIZE(held) - 1;

    Py_SET_SIZE(held, n);
    return PyList_GET_ITEM(held, n);
}

/* Drop a reference to a held entry; the last one makes it a spare (while there is room). */
static void
held_entry_drop(PyObject *entry)
{
    if (Py_REFCNT(entry) != 1 || n_spare_entries == MAX_SPARE_ENTRIES) {
        Py_DECREF(entry);
        return;
    }
    for (int i = 0; i < H_FIELDS; i++)  /* may run a finalizer, which may take or drop entries */
        Py_SETREF(PyTuple_GET_ITEM(entry, i), Py_NewRef(Py_None));
    if (Py_REFCNT(entry) == 1 && n_spare_entries < MAX_SPARE_ENTRIES)
        spare_entries[n_spare_entries++] = entry;
    else
        Py_DECREF(entry);
}
