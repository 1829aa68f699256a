/*
 * Per-thread state: Recent (the last few answers of a lookup, by identity), the ThreadCache kept in
 * the thread state's dict (its Task, the ints it made last, the chains and sites it saw lately), and
 * current_task(), which finds the calling thread's validator, Task and cache.
 */

/* The answer (borrowed) kept for parts that begin with an entry's parts (all of them, when every
 * entry has as many), or NULL. */
static PyObject *
recent_find(const Recent *r, PyObject *const *obj, const int *num, int n)
{
    for (const RecentEntry *e = r->entries; e < r->entries + N_RECENT; e++) {
        int i = 0;

        if (e->n == 0 || e->n > n)
            continue;
        while (i < e->n && e->obj[i] == obj[i] && e->num[i] == num[i])
            i++;
        if (i == e->n)
            return e->answer;
    }
    return NULL;
}

/* The most parts an entry has (how much of a stack recent_find() may compare). */
static int
recent_depth(const Recent *r)
{
    int most = 0;

    for (const RecentEntry *e = r->entries; e < r->entries + N_RECENT; e++)
        most = e->n > most ? e->n : most;
    return most;
}

/* Keep ``answer`` for the ``n`` parts given, in place of the oldest entry. */
static void
recent_keep(Recent *r, PyObject *const *obj, const int *num, int n, PyObject *answer)
{
    RecentEntry *e = &r->entries[r->next];
    PyObject *old[RECENT_PARTS + 1];

    r->next = (r->next + 1) % N_RECENT;
    for (int i = 0; i < RECENT_PARTS; i++) {
        old[i] = e->obj[i];
        e->obj[i] = i < n ? Py_NewRef(obj[i]) : NULL;
        e->num[i] = i < n ? num[i] : 0;
    }
    old[RECENT_PARTS] = e->answer;
    e->answer = Py_NewRef(answer);
    e->n = n;
    for (int i = 0; i <= RECENT_PARTS; i++)  /* last: a decref may run Python code */
        Py_XDECREF(old[i]);
}

static int
recent_traverse(Recent *r, visitproc visit, void *arg)
{
    for (RecentEntry *e = r->entries; e < r->entries + N_RECENT; e++) {
        for (int i = 0; i < e->n; i++)
            Py_VISIT(e->obj[i]);
        Py_VISIT(e->answer);
    }
    return 0;
}

static void
recent_clear(Recent *r)
{
    for (RecentEntry *e = r->entries; e < r->entries + N_RECENT; e++) {
        e->n = 0;  /* no match while its references go (a decref may run Python code) */
        for (int i = 0; i < RECENT_PARTS; i++)
            Py_CLEAR(e->obj[i]);
        Py_CLEAR(e->answer);
    }
}

static int
threadcache_traverse(ThreadCache *self, visitproc visit, void *arg)
{
    Py_VISIT(self->local);
    Py_VISIT(self->task);
    Py_VISIT(self->ident);
    int err = recent_traverse(&self->sites, visit, arg);
    return err ? err : recent_traverse(&self->chains, visit, arg);
}

static int
threadcache_clear(ThreadCache *self)
{
    Py_CLEAR(self->local);
    Py_CLEAR(self->task);
    Py_CLEAR(self->ident);
    for (int i = 0; i < N_INTS; i++)
        Py_CLEAR(self->ints[i]);
    recent_clear(&self->sites);
    recent_clear(&self->chains);
    return 0;
}

/*
 * The thread that thread_cache() answered for last, by its PyThreadState and that state's id (an id
 * is never given to another thread state), and its cache, borrowed: the cache's dealloc forgets it.
 * Most acquisitions are made by the thread that made the last one, which then needs no dict lookup.
 */
static PyThreadState *g_last_tstate;
static uint64_t g_last_tstate_id;
static ThreadCache *g_last_cache;

static void
threadcache_dealloc(ThreadCache *self)
{
    if (g_last_cache == self)
        g_last_cache = NULL;
    PyObject_GC_UnTrack(self);
    threadcache_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ThreadCacheType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pylockdep._speedups.ThreadCache",
    .tp_doc = "The fast path's per-thread state (private).",
    .tp_basicsize = sizeof(ThreadCache),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)threadcache_dealloc,
    .tp_traverse = (traverseproc)threadcache_traverse,
    .tp_clear = (inquiry)threadcache_clear,
};

/* A new reference to an int of ``value``: one this thread made recently, or a new one kept for later. */
static PyObject *
cached_int(ThreadCache *c, Py_ssize_t value)
{
    PyObject *made;

    for (int i = 0; i < N_INTS; i++)
        if (c->values[i] == value && c->ints[i] != NULL)
            return Py_NewRef(c->ints[i]);
    made = PyLong_FromSsize_t(value);
    if (made == NULL)
        return NULL;
    Py_XSETREF(c->ints[c->next_int], Py_NewRef(made));
    c->values[c->next_int] = value;
    c->next_int = (c->next_int + 1) % N_INTS;
    return made;
}

/* The calling thread's cache (borrowed), found in its thread state's dict or made there; NULL (no
 * exception) when it cannot be. */
static ThreadCache *
thread_cache(void)
{
    PyThreadState *ts = PyThreadState_Get();
    PyObject *tdict;
    ThreadCache *c;

    if (ts == g_last_tstate && ts->id == g_last_tstate_id && g_last_cache != NULL)
        return g_last_cache;
    if ((tdict = PyThreadState_GetDict()) == NULL)
        return NULL;
    c = (ThreadCache *)PyDict_GetItemWithError(tdict, s_cache_key);
    if (c == NULL) {
        if (PyErr_Occurred())
            goto fail;
        c = PyObject_GC_New(ThreadCache, &ThreadCacheType);
        if (c == NULL)
            goto fail;
        c->local = c->task = c->ident = NULL;
        for (int i = 0; i < N_INTS; i++)
            c->ints[i] = NULL;
        c->next_int = 0;
        memset(&c->sites, 0, sizeof c->sites);
        memset(&c->chains, 0, sizeof c->chains);
        PyObject_GC_Track(c);
        if (PyDict_SetItem(tdict, s_cache_key, (PyObject *)c) < 0) {
            Py_DECREF(c);
            goto fail;
        }
        Py_DECREF(c);  /* the thread's dict keeps it */
    } else if (!Py_IS_TYPE(c, &ThreadCacheType)) {
        return NULL;
    }
    g_last_tstate = ts;
    g_last_tstate_id = ts->id;
    g_last_cache = c;
    return c;
fail:
    PyErr_Clear();
    return NULL;
}

/* The calling thread's validator, Task and cache, borrowed; 0 when the fast path does not apply:
 * validation is off or the thread has no Task yet. */
static int
current_task(PyObject **v_out, PyObject **t_out, ThreadCache **c_out)
{
    PyObject *v, *local, *t;
    ThreadCache *c;

    if (g_active == NULL)
        return 0;  /* setup() not called, or failed */
    v = SLOT(g_active, active_layout, ACTIVE_VALIDATOR);
    if (!IS(v, validator_layout) || SLOT(v, validator_layout, V_OFF) != Py_False)
        return 0;
    if ((local = SLOT(v, validator_layout, V_LOCAL)) == NULL || (c = thread_cache()) == NULL)
        return 0;
    if (c->local != local || c->task == NULL) {
        t = PyObject_GetAttr(local, s_task);
        if (t == NULL)
            goto fail;
        if (!IS(t, task_layout)) {
            Py_DECREF(t);
            return 0;
        }
        Py_XSETREF(c->task, t);
        if (c->local != local) {  /* another validator: its chain cache is another */
            recent_clear(&c->chains);
            Py_XSETREF(c->local, Py_NewRef(local));
        }
    }
    *v_out = v;
    *t_out = c->task;
    *c_out = c;
    return 1;
fail:
    PyErr_Clear();
    return 0;
}
