/*
 * Sections (pylockdep._locks._Held: nested(), read(), irqsave(), bh()): the context changes of
 * irqsave() and bh() in their common case, and the Section methods' __enter__ and __exit__.
 */

/*
 * Sections: the with-blocks of pylockdep._locks._Held (``nested()``, ``read()``, ``irqsave()``,
 * ``bh()``), whose slots say how the lock is held.  __enter__ does what _Held.__enter__ does: the
 * context change (``_context``: CONTEXT_IRQSAVE turns hard interrupts off, pushing (section,
 * whether they were on) on the Task's ``irq_saves``; CONTEXT_BH disables bottom halves), then the
 * lock in the
 * section's mode and subclass, the mode taken kept in ``_mode``; __exit__ releases that mode and
 * undoes the context change.  The context changes run here only in their common case (a normal
 * kernel, process context, no held lock to mark when interrupts come back on, the with-block's
 * site known); otherwise the whole __enter__ (nothing changed yet) or the rest of it (_Held._take
 * after the context change, _Held._restore after the release) goes to Python.
 */
enum { S_LOCK, S_READ, S_SUBCLASS, S_CONTEXT, S_MODE };
static const char *const section_slots[] = {"_lock", "_read", "_subclass", "_context", "_mode", NULL};
enum { CONTEXT_NONE, CONTEXT_IRQSAVE, CONTEXT_BH };  /* _locks' 0, _IRQSAVE, _BH */

/* The names this part calls. */
static PyObject *s_take, *s_restore;
/* The usage bits enabling interrupts sets on held locks (_classes' ENABLED_*), set by setup(). */
static long g_enabled_hardirq, g_enabled_hardirq_read, g_enabled_softirq, g_enabled_softirq_read;

/* Whether every held validated lock already has the usage bits enabling interrupts would give it
 * (all of ``write_bits``, or of ``read_bits`` for a reader): _checks.held_unmarked() is false for
 * each of them, nothing to mark. */
static int
held_marked(PyObject *held, long write_bits, long read_bits)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(held); i++) {
        PyObject *entry = PyList_GET_ITEM(held, i), *cls, *validated, *usage;
        long bits;

        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != H_FIELDS)
            return 0;
        cls = PyTuple_GET_ITEM(entry, H_CLASS);
        if (!IS(cls, class_layout) || (validated = SLOT(cls, class_layout, C_VALIDATED)) == NULL)
            return 0;
        if (validated == Py_False)
            continue;
        usage = SLOT(cls, class_layout, C_USAGE);
        if (validated != Py_True || usage == NULL || !PyLong_CheckExact(usage))
            return 0;
        bits = PyLong_AsLong(usage);
        if (bits == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        long wanted = is_zero(PyTuple_GET_ITEM(entry, H_READ)) ? write_bits : read_bits;
        if ((bits & wanted) != wanted)
            return 0;
    }
    return 1;
}

/*
 * The site (code, line) of ``frame``'s current instruction, as _locks._site_of() finds it,
 * borrowed: from the thread's recent sites, else from _frames' line cache.  NULL (no exception)
 * when Python must find it: the frame's file is pylockdep's or not seen yet, or its line not cached.
 */
static PyObject *
frame_site(ThreadCache *c, PyFrameObject *frame)
{
    PyCodeObject *code = PyFrame_GetCode(frame);
    PyObject *part = (PyObject *)code, *site, *key;
    int lasti = PyFrame_GetLasti(frame);

    if ((site = recent_find(&c->sites, &part, &lasti, 1)) != NULL || !known_outside(code))
        goto done;
    if ((key = site_key(code, lasti, NULL, 0)) == NULL)
        goto done;
    site = PyDict_GetItemWithError(g_lines, key);
    Py_DECREF(key);
    if (site == NULL || !PyTuple_CheckExact(site) || PyTuple_GET_SIZE(site) != 2
        || PyTuple_GET_ITEM(site, 0) != (PyObject *)code) {
        site = NULL;
        goto done;
    }
    recent_keep(&c->sites, &part, &lasti, 1, site);
done:
    PyErr_Clear();
    Py_DECREF(code);
    return site;
}

/* A new reference to ``count + 1`` (read in place when small). */
static PyObject *
next_int(PyObject *count)
{
    long value;

    return compact_value(count, &value) ? PyLong_FromLong(value + 1) : PyNumber_Add(count, g_one);
}

/* Task.update_ctx()'s context signature of ``t`` with ``irqs_off`` and ``bh`` in place of its own
 * (a new reference), or NULL (an exception may be set).  The irq context does not depend on them. */
static PyObject *
context_with(ThreadCache *c, PyObject *t, PyObject *irqs_off, PyObject *bh)
{
    PyObject *items[N_CONTEXT_COUNTERS];
    Py_hash_t h;

    for (int i = 0; i < N_CONTEXT_COUNTERS; i++)
        if ((items[i] = SLOT(t, task_layout, T_PREEMPT + i)) == NULL)
            return NULL;
    items[T_IRQS_OFF - T_PREEMPT] = irqs_off;
    items[T_BH - T_PREEMPT] = bh;
    if ((h = hash_items(items, N_CONTEXT_COUNTERS)) == -1)
        return NULL;
    return cached_int(c, h);
}

/* Whether the active validator models a PREEMPT_RT kernel (anything but False counts as yes: Python
 * decides). */
static inline int
preempt_rt(PyObject *v)
{
    return SLOT(v, validator_layout, V_PREEMPT_RT) != Py_False;
}

/*
 * Change the context as ``change`` says, at ``site``, as _context does: the counter ``counter``
 * (T_IRQS_OFF or T_BH) becomes ``value``, the irq event stamp ``event``/``event_site`` of the
 * thread's IrqTrace is taken, and the context signature follows.  Everything that can fail is
 * done before anything changes: 1 changed, 0 nothing changed (Python will).
 */
static int
change_context(ThreadCache *c, PyObject *t, int counter, PyObject *value, int event, int event_site, PyObject *site)
{
    PyObject *trace = SLOT(t, task_layout, T_IRQTRACE), *events, *ctx, *irqs_off, *bh;

    irqs_off = counter == T_IRQS_OFF ? value : SLOT(t, task_layout, T_IRQS_OFF);
    bh = counter == T_BH ? value : SLOT(t, task_layout, T_BH);
    if (!IS(trace, trace_layout) || (events = SLOT(trace, trace_layout, TR_EVENTS)) == NULL || irqs_off == NULL
        || bh == NULL)
        return 0;
    if ((ctx = context_with(c, t, irqs_off, bh)) == NULL || (events = next_int(events)) == NULL) {
        Py_XDECREF(ctx);
        PyErr_Clear();
        return 0;
    }
    slot_set(trace, trace_layout.offset[TR_EVENTS], events);
    slot_set(trace, trace_layout.offset[event], events);
    slot_set(trace, trace_layout.offset[event_site], site);
    slot_set(t, task_layout.offset[counter], value);
    slot_set(t, task_layout.offset[T_CTX], ctx);
    Py_DECREF(events);
    Py_DECREF(ctx);
    return 1;
}

/* _context.irq_save_for() on a normal kernel: hard interrupts off, ``*was_on`` whether they were
 * on (borrowed).  1 done, 0 for Python (nothing changed). */
static int
irqs_off_fast(ThreadCache *c, PyObject *v, PyObject *t, PyFrameObject *frame, PyObject **was_on)
{
    PyObject *irqs_off = SLOT(t, task_layout, T_IRQS_OFF), *site;

    if (preempt_rt(v))
        return 0;  /* a spinlock_t leaves interrupts on there: Python knows the lock types */
    *was_on = irqs_off == Py_False ? Py_True : Py_False;
    if (irqs_off == Py_True)
        return 1;  /* already off: nothing changes */
    if (irqs_off != Py_False || (site = frame_site(c, frame)) == NULL)
        return 0;
    return change_context(c, t, T_IRQS_OFF, Py_True, TR_HARDIRQ_DISABLE_EVENT, TR_HARDIRQ_DISABLE_SITE, site);
}

/* _context.irq_restore_for() of a save ``was_on`` when there is nothing to check: interrupts were on, are off, not
 * in a hard interrupt, no held lock to mark (with hardirqs, and softirqs if those are on, enabled).
 * 1 done, 0 for Python (nothing changed). */
static int
irqs_on_fast(ThreadCache *c, PyObject *t, PyFrameObject *frame, PyObject *was_on)
{
    PyObject *held = SLOT(t, task_layout, T_HELD), *site;
    long write_bits = g_enabled_hardirq, read_bits = g_enabled_hardirq_read;

    if (was_on == Py_False)
        return 1;  /* they stay off */
    if (is_zero(SLOT(t, task_layout, T_BH)) && is_zero(SLOT(t, task_layout, T_SOFTIRQ))) {
        write_bits |= g_enabled_softirq;  /* softirqs come on with them: both marks, in one walk */
        read_bits |= g_enabled_softirq_read;
    }
    if (was_on != Py_True || SLOT(t, task_layout, T_IRQS_OFF) != Py_True || !is_zero(SLOT(t, task_layout, T_HARDIRQ))
        || held == NULL || !PyList_Check(held) || !held_marked(held, write_bits, read_bits)
        || (site = frame_site(c, frame)) == NULL)
        return 0;
    return change_context(c, t, T_IRQS_OFF, Py_False, TR_HARDIRQ_ENABLE_EVENT, TR_HARDIRQ_ENABLE_SITE, site);
}

/* _context.irq_restore_for(section) when the Task's most recent save is the section's and
 * irqs_on_fast() can restore it: popped.  1 done, 0 for Python (nothing changed). */
static int
irqs_restore_fast(ThreadCache *c, PyObject *t, PyFrameObject *frame, PyObject *section)
{
    PyObject *saves = SLOT(t, task_layout, T_IRQ_SAVES), *last;
    Py_ssize_t n;

    if (saves == NULL || !PyList_CheckExact(saves) || (n = PyList_GET_SIZE(saves)) == 0)
        return 0;
    last = PyList_GET_ITEM(saves, n - 1);
    if (!PyTuple_CheckExact(last) || PyTuple_GET_SIZE(last) != 2 || PyTuple_GET_ITEM(last, 0) != section
        || !irqs_on_fast(c, t, frame, PyTuple_GET_ITEM(last, 1)))
        return 0;
    if (PyList_SetSlice(saves, n - 1, n, NULL) < 0) {
        PyErr_Clear();  /* out of memory shrinking the list: Python pops it */
        return 0;
    }
    return 1;
}

/* _context.bh_disable_at() in process context on a normal kernel (bottom halves on, not atomic):
 * the atomic section starts here.  1 done, 0 for Python (nothing changed). */
static int
bh_off_fast(ThreadCache *c, PyObject *v, PyObject *t, PyFrameObject *frame)
{
    PyObject *held = SLOT(t, task_layout, T_HELD), *site, *depth;

    if (preempt_rt(v) || !is_zero(SLOT(t, task_layout, T_PREEMPT)) || !is_zero(SLOT(t, task_layout, T_HARDIRQ))
        || !is_zero(SLOT(t, task_layout, T_SOFTIRQ)) || !is_zero(SLOT(t, task_layout, T_BH)) || held == NULL
        || !PyList_Check(held) || (site = frame_site(c, frame)) == NULL
        || (depth = PyLong_FromSsize_t(PyList_GET_SIZE(held))) == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_INCREF(site);  /* change_context() may drop the last other reference (the thread's site cache) */
    if (!change_context(c, t, T_BH, g_one, TR_SOFTIRQ_DISABLE_EVENT, TR_SOFTIRQ_DISABLE_SITE, site)) {
        Py_DECREF(site);
        Py_DECREF(depth);
        return 0;
    }
    slot_set(t, task_layout.offset[T_ATOMIC_SITE], site);
    slot_set(t, task_layout.offset[T_ATOMIC_DEPTH], depth);
    Py_DECREF(site);
    Py_DECREF(depth);
    return 1;
}

/* _context.bh_enable_at() for the last bottom-half section outside a softirq, with no held lock to
 * mark (when hard interrupts are on).  1 done, 0 for Python (nothing changed). */
static int
bh_on_fast(ThreadCache *c, PyObject *t, PyFrameObject *frame)
{
    PyObject *held = SLOT(t, task_layout, T_HELD), *bh = SLOT(t, task_layout, T_BH), *site;
    PyObject *irqs_off = SLOT(t, task_layout, T_IRQS_OFF);

    if (small_int(bh, 1, 1) != 1 || !is_zero(SLOT(t, task_layout, T_SOFTIRQ))
        || held == NULL || !PyList_Check(held) || (irqs_off != Py_True && irqs_off != Py_False)
        || (irqs_off == Py_False && !held_marked(held, g_enabled_softirq, g_enabled_softirq_read))
        || (site = frame_site(c, frame)) == NULL)
        return 0;
    return change_context(c, t, T_BH, g_zero, TR_SOFTIRQ_ENABLE_EVENT, TR_SOFTIRQ_ENABLE_SITE, site);
}

/* With an exception set (taking or releasing the lock raised): call _Held._restore(frame), as the
 * Python method's except/finally does; an exception it raises replaces the first, as its context. */
static void
restore_raising(PyObject *section, PyFrameObject *frame)
{
    PyObject *exc = raised_take(), *r;

    r = PyObject_CallMethodOneArg(section, s_restore, (PyObject *)frame);
    Py_XDECREF(r);
    finally_end(NULL, exc, r == NULL);
}


static PyObject *
section_enter_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastMethod *self = (FastMethod *)op;
    PyObject *section, *lock, *v, *t, *was_on = NULL;
    PyFrameObject *frame;
    ThreadCache *c;
    long read, subclass, context;
    int r, mode;

    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL || !IS(args[0], self->section))
        return slow_call(self->slow, args, nargsf, kwnames);
    section = args[0];
    lock = SLOT(section, self->section, S_LOCK);
    read = small_int(SLOT(section, self->section, S_READ), READ_AS_RWLOCK, READ_MAX);
    subclass = small_int(SLOT(section, self->section, S_SUBCLASS), 0, PY_SSIZE_T_MAX);
    context = small_int(SLOT(section, self->section, S_CONTEXT), CONTEXT_NONE, CONTEXT_BH);
    if (!IS(lock, self->lock) || read < READ_AS_RWLOCK || subclass < 0 || context < CONTEXT_NONE
        || (frame = PyEval_GetFrame()) == NULL)
        return slow_call(self->slow, args, nargsf, kwnames);
    if (!fast_state(&v, &t, &c))
        return slow_call(self->slow, args, nargsf, kwnames);
    if (context == CONTEXT_IRQSAVE) {
        PyObject *saves = SLOT(t, task_layout, T_IRQ_SAVES), *saved;

        if (saves == NULL || !PyList_CheckExact(saves))  /* None until Python's first save */
            return slow_call(self->slow, args, nargsf, kwnames);
        if ((saved = PyTuple_New(2)) == NULL)
            return NULL;
        if (!irqs_off_fast(c, v, t, frame, &was_on)) {
            Py_DECREF(saved);
            return slow_call(self->slow, args, nargsf, kwnames);
        }
        PyTuple_SET_ITEM(saved, 0, Py_NewRef(section));
        PyTuple_SET_ITEM(saved, 1, Py_NewRef(was_on));
        r = PyList_Append(saves, saved);  /* out of memory: interrupts stay off, as a failed entry leaves them */
        Py_DECREF(saved);
        if (r < 0)
            return NULL;
    } else if (context == CONTEXT_BH && !bh_off_fast(c, v, t, frame)) {
        return slow_call(self->slow, args, nargsf, kwnames);
    }
    /* The context is changed (no Python code ran: v, t and c stand): from here on, what C cannot do
     * goes to _Held._take, which undoes it when the acquisition raises. */
    mode = read == READ_AS_RWLOCK ? rwlock_read_mode(t) : (int)read;
    r = mode < 0 ? 0 : take_known(v, t, c, lock, &self->lock, iframe_of(frame), mode, (int)subclass);
    if (r < 0) {
        if (context != CONTEXT_NONE)
            restore_raising(section, frame);
        return NULL;
    }
    if (r == 0)
        return context == CONTEXT_NONE ? slow_call(self->slow, args, nargsf, kwnames)
                                       : PyObject_CallMethodOneArg(section, s_take, (PyObject *)frame);
    slot_set(section, self->section.offset[S_MODE], *read_objs[mode]);
    return Py_NewRef(lock);
}

static PyObject *
section_exit_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastMethod *self = (FastMethod *)op;
    PyObject *section, *lock, *mode, *v, *t;
    PyFrameObject *frame;
    ThreadCache *c;
    long context;
    int r, restored = 0;

    if (PyVectorcall_NARGS(nargsf) < 1 || kwnames != NULL || !IS(args[0], self->section))
        return slow_call(self->slow, args, nargsf, kwnames);
    section = args[0];
    lock = SLOT(section, self->section, S_LOCK);
    mode = SLOT(section, self->section, S_MODE);
    context = small_int(SLOT(section, self->section, S_CONTEXT), CONTEXT_NONE, CONTEXT_BH);
    if (!IS(lock, self->lock) || context < CONTEXT_NONE || small_int(mode, 0, READ_MAX) < 0
        || (frame = PyEval_GetFrame()) == NULL || !fast_state(&v, &t, &c))
        return slow_call(self->slow, args, nargsf, kwnames);
    /* The context is restored on the Task the lock was released from (held: a release that calls
     * Python code, such as a reader-writer core's, may let it go). */
    Py_INCREF(t);
    Py_INCREF(c);
    r = drop_top(t, lock, &self->lock, mode);
    if (r == 1 && context == CONTEXT_IRQSAVE)
        restored = irqs_restore_fast(c, t, frame, section);
    else if (r == 1 && context == CONTEXT_BH)
        restored = bh_on_fast(c, t, frame);
    Py_DECREF(t);
    Py_DECREF(c);
    if (r == 0)
        return slow_call(self->slow, args, nargsf, kwnames);
    if (context == CONTEXT_NONE) {
        if (r < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    /* Released (or the release raised): the context is restored however the release ended. */
    if (r < 0) {
        restore_raising(section, frame);
        return NULL;
    }
    if (restored)
        Py_RETURN_NONE;
    return PyObject_CallMethodOneArg(section, s_restore, (PyObject *)frame);
}
