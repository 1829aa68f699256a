/*
 * The lock path: an exclusive acquisition on a known chain (take_known(), fast_lock()) and the
 * release of the most recent lock (drop_top(), fast_unlock()), threading.RLock's owner and count,
 * and the vectorcalls of the Acquire and Release methods (__enter__/acquire, __exit__/release,
 * _release_save/_acquire_restore), which hand every other case to the Python method they wrap.
 */

/* Read modes as _locks._acquire takes them, and READ_AS_RWLOCK: RWLock._read_mode()'s choice. */
enum { READ_AS_RWLOCK = -1, READ_MAX = 2 };
static PyObject **const read_objs[READ_MAX + 1] = {&g_zero, &g_one, &g_two};

/* The small int in ``value`` (compact_value()) if it is one from ``low`` to ``high``, else ``low - 1``. */
static long
small_int(PyObject *value, long low, long high)
{
    long found;

    if (!compact_value(value, &found))
        return low - 1;
    return found < low || found > high ? low - 1 : found;
}

/* Whether the small int ``value`` is zero (anything else, or not an exact int, counts as not). */
static inline int
is_zero(PyObject *value)
{
    return value == g_zero || small_int(value, 0, 0) == 0;
}

/* The calling thread's validator, Task and cache (borrowed) when the fast path applies to it:
 * current_task() found them and no other thread released a lock it holds.  0 otherwise. */
static int
fast_state(PyObject **v_out, PyObject **t_out, ThreadCache **c_out)
{
    return current_task(v_out, t_out, c_out) && !has_pending(*t_out);
}

/* RWLock._read_mode() for the Task ``t``: a recursive reader (2) in hardirq, softirq or
 * bottom-half context, else 1; -1 when its counters are not there (Python decides). */
static int
rwlock_read_mode(PyObject *t)
{
    PyObject *irq = SLOT(t, task_layout, T_IRQ), *bh = SLOT(t, task_layout, T_BH);

    if (irq == NULL || bh == NULL)
        return -1;
    return is_zero(irq) && is_zero(bh) ? 1 : 2;
}

/* The value of max_lock_depth ``maxd``, or -1 (no exception): read once per int object. */
static Py_ssize_t
lock_depth_limit(PyObject *maxd)
{
    static PyObject *last;  /* the int read last (held: compared by identity) and its value */
    static Py_ssize_t value;

    if (maxd != last) {
        Py_ssize_t read = PyLong_AsSsize_t(maxd);
        if (read == -1) {
            PyErr_Clear();
            return -1;
        }
        Py_XSETREF(last, Py_NewRef(maxd));
        value = read;
    }
    return value;
}

/*
 * The chain key after pushing a lock of variant ``variant`` on the stack of key ``tkey`` in context
 * ``ctx``, pylockdep._held.chain_key(): hash((tkey, ctx, variant)), when the active validator
 * ``v`` knows it (it is in v.chains): a new reference, or NULL (no exception).  One found is kept in
 * the thread's cache ``c``, by the three ints it was made from, until the chain cache is emptied
 * (v.chains_forgotten counts that; v.chains only grows in between).
 */
static PyObject *
known_chain(PyObject *v, ThreadCache *c, PyObject *tkey, PyObject *ctx, PyObject *variant)
{
    PyObject *parts[3] = {tkey, ctx, variant}, *chains = SLOT(v, validator_layout, V_CHAINS), *chain;
    int nums[3] = {-1, 0, 0};
    Py_hash_t h;
    long era;

    if (compact_value(SLOT(v, validator_layout, V_CHAINS_FORGOTTEN), &era) && era >= 0 && era <= INT_MAX) {
        nums[0] = (int)era;
        if ((chain = recent_find(&c->chains, parts, nums, 3)) != NULL)
            return Py_NewRef(chain);
    }
    if (chains == NULL || !PyAnySet_Check(chains) || (h = hash_items(parts, 3)) == -1
        || (chain = cached_int(c, h)) == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (PySet_Contains(chains, chain) != 1) {
        PyErr_Clear();
        Py_DECREF(chain);
        return NULL;
    }
    if (nums[0] >= 0)
        recent_keep(&c->chains, parts, nums, 3, chain);  /* drops ints only: no Python code runs */
    return chain;
}

/*
 * Take ``lock`` in mode ``read`` as subclass ``subclass`` on a known chain, as
 * _locks._acquire(lock, read, subclass, frame) would, for the thread whose fast_state() is ``v``,
 * ``t`` and ``c``.  Returns 1 when the lock is taken and pushed, 0 when the caller must take the
 * slow path (nothing has changed), -1 with an exception set (nothing has changed either).
 */
static int
take_known(PyObject *v, PyObject *t, ThreadCache *c, PyObject *lock, const Layout *lk, IFrame *frame,
           int read, int subclass)
{
    PyObject *key, *cache, *classes, *cls, *variants, *tkey, *ctx, *chains, *spins, *irq, *held, *maxd;
    PyObject *chain = NULL, *lasti = NULL, *entry = NULL, *ok = NULL;
    RealLock *real = real_of(lock, lk);
    RWCore *core;
    Py_ssize_t limit;
    int result = 0, taken;

    key = SLOT(lock, *lk, L_KEY);
    if (!IS(key, key_layout))
        return 0;
    cache = SLOT(key, key_layout, K_CACHE);
    if (cache == NULL || !PyTuple_Check(cache) || PyTuple_GET_SIZE(cache) != 2 || PyTuple_GET_ITEM(cache, 0) != v)
        return 0;
    classes = PyTuple_GET_ITEM(cache, 1);
    if (!PyList_Check(classes) || PyList_GET_SIZE(classes) <= subclass)
        return 0;
    cls = PyList_GET_ITEM(classes, subclass);
    if (!IS(cls, class_layout))
        return 0;
    variants = SLOT(cls, class_layout, C_VARIANTS);
    spins = SLOT(cls, class_layout, C_SPINS);
    tkey = SLOT(t, task_layout, T_KEY);
    ctx = SLOT(t, task_layout, T_CTX);
    irq = SLOT(t, task_layout, T_IRQ);
    held = SLOT(t, task_layout, T_HELD);
    chains = SLOT(v, validator_layout, V_CHAINS);
    maxd = SLOT(v, validator_layout, V_MAX_LOCK_DEPTH);
    if (read < 0 || read > READ_MAX || (read != 0 && real != NULL))
        return 0;  /* a plain lock has no read side */
    if (variants == NULL || !PyTuple_Check(variants) || PyTuple_GET_SIZE(variants) <= read || spins == NULL
        || tkey == NULL || ctx == NULL || irq == NULL || held == NULL || !PyList_Check(held) || chains == NULL
        || !PyAnySet_Check(chains) || maxd == NULL || !PyLong_Check(maxd))
        return 0;

    if ((chain = known_chain(v, c, tkey, ctx, PyTuple_GET_ITEM(variants, read))) == NULL)
        goto fallback;
    /* A known chain: build the held entry before taking the lock, so nothing can fail after. */
    limit = lock_depth_limit(maxd);
    lasti = cached_int(c, iframe_lasti(frame));
    if (limit == -1 || lasti == NULL)
        goto fallback;
    entry = held_entry(lock, cls, *read_objs[read], Py_False, (PyObject *)iframe_code(frame), lasti, tkey, irq,
                       spins, ctx);
    if (entry == NULL)
        goto fallback;
    /* The entry owns what the rest needs (lock, cls, t.key, t.ctx) while _try may run Python code. */
    Py_INCREF(v);
    Py_INCREF(t);
    if (real != NULL) {
        /* A contended lock is waited for a slice, as pylockdep._waitfor.wait() does first. */
        taken = reallock_try(real) || reallock_try_slice(real);
    } else if ((core = rwcore_of(lock)) != NULL) {
        taken = rwcore_take(core, read, PyThread_get_thread_ident());
    } else {
        ok = PyObject_CallMethodOneArg(lock, s_try, *read_objs[read]);
        taken = ok == NULL ? -1 : PyObject_IsTrue(ok);
    }
    if (taken < 0) {
        result = -1;  /* the real lock raised: report that, as Python would */
    } else if (taken == 0) {
        result = 0;  /* still contended: the slow path waits on (and checks for a deadlock) */
    } else if (held_push(held, entry) < 0) {
        result = -1;  /* out of memory, in practice */
    } else {
        slot_set(lock, lk->offset[L_OWNER], t);
        slot_set(t, task_layout.offset[T_KEY], chain);
        result = 1;
        if (PyList_GET_SIZE(held) >= limit) {
            PyObject *r = PyObject_CallMethodOneArg(v, s_depth_exceeded, t);
            if (r == NULL)
                result = -1;
            Py_XDECREF(r);
        }
    }
    Py_DECREF(v);
    Py_DECREF(t);
    goto done;

fallback:
    /* Anything odd goes to the slow path, which either handles it or raises the real error. */
    PyErr_Clear();
    result = 0;
done:
    Py_XDECREF(chain); Py_XDECREF(lasti); Py_XDECREF(ok);
    if (entry != NULL)
        held_entry_drop(entry);
    return result;
}

/* take_known() of an exclusive lock for the calling thread; ``*c_out`` is its cache when taken. */
static int
fast_lock(PyObject *lock, const Layout *lk, IFrame *frame, ThreadCache **c_out)
{
    PyObject *v, *t;

    if (!fast_state(&v, &t, c_out))
        return 0;
    return take_known(v, t, *c_out, lock, lk, frame, 0, 0);
}

/*
 * Release ``lock`` when it is the most recent lock of the Task ``t`` (the calling thread's, from
 * fast_state()), as _locks._release(lock, read) would (for an RLock, the owner's last release: its
 * owner and count are reset too).  Returns 1 when done, 0 for the slow path (nothing changed), -1
 * with an exception set by the real lock's release.
 */
static int
drop_top(PyObject *t, PyObject *lock, const Layout *lk, PyObject *read)
{
    PyObject *held, *top, *r;
    RealLock *real;
    RWCore *core;
    Py_ssize_t n;
    long mode;
    int result;

    held = SLOT(t, task_layout, T_HELD);
    if (held == NULL || !PyList_Check(held) || (n = PyList_GET_SIZE(held)) == 0)
        return 0;
    top = PyList_GET_ITEM(held, n - 1);
    if (!PyTuple_CheckExact(top) || PyTuple_GET_SIZE(top) != H_FIELDS || PyTuple_GET_ITEM(top, H_LOCK) != lock)
        return 0;
    Py_INCREF(t);
    held_pop(held);  /* the list's reference to top is ours now */
    slot_set(t, task_layout.offset[T_KEY], PyTuple_GET_ITEM(top, H_PREV_KEY));
    slot_set(lock, lk->offset[L_OWNER], Py_None);
    if (lk->recursive) {  /* the owner's last release: nobody owns it from here */
        slot_set(lock, lk->offset[L_COUNT], g_zero);
        slot_set(lock, lk->offset[L_IDENT], Py_None);
    }
    if ((real = real_of(lock, lk)) != NULL && read == g_zero && real->locked) {
        reallock_release(real);
        result = 1;
    } else if ((core = rwcore_of(lock)) != NULL && (mode = small_int(read, 0, READ_MAX)) >= 0) {
        result = rwcore_release(core, (int)mode, PyThread_get_thread_ident()) < 0 ? -1 : 1;
    } else {
        r = PyObject_CallMethodOneArg(lock, s_unlock, read);
        result = r == NULL ? -1 : 1;
        Py_XDECREF(r);
    }
    held_entry_drop(top);
    Py_DECREF(t);
    return result;
}

/* drop_top() for the calling thread. */
static int
fast_unlock(PyObject *lock, const Layout *lk, PyObject *read)
{
    PyObject *v, *t;
    ThreadCache *c;

    return fast_state(&v, &t, &c) ? drop_top(t, lock, lk, read) : 0;
}

/* Whether the calling thread owns the RLock ``lock`` (its ``_ident`` is the thread's ident). */
static int
owned_by_caller(PyObject *lock, const Layout *lk)
{
    PyObject *ident = SLOT(lock, *lk, L_IDENT);
    unsigned long value;

    if (ident == NULL || !PyLong_CheckExact(ident))
        return 0;
    value = PyLong_AsUnsignedLong(ident);
    if (value == (unsigned long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return value == PyThread_get_thread_ident();
}

/* The RLock's recursion count, or -1 when it is not a small int. */
static long
rlock_count(PyObject *lock, const Layout *lk)
{
    long value;

    return compact_value(SLOT(lock, *lk, L_COUNT), &value) ? value : -1;
}

/* Set the RLock's count (and, when ``ident`` is not NULL, its owner). */
static int
rlock_set(PyObject *lock, const Layout *lk, long count, PyObject *ident)
{
    PyObject *value = int_of(count);

    if (value == NULL)
        return -1;
    if (ident != NULL)
        slot_set(lock, lk->offset[L_IDENT], ident);
    slot_set(lock, lk->offset[L_COUNT], value);
    Py_DECREF(value);
    return 0;
}

/* RLock._is_owned(), which a Condition asks before notify() and wait(): whether the calling thread
 * owns it, read in place when ``_ident`` is None or an int.  Anything else goes to the Python method. */
static PyObject *
is_owned_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastMethod *self = (FastMethod *)op;
    PyObject *ident;

    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL || !self->lock.recursive || !IS(args[0], self->lock))
        return slow_call(self->slow, args, nargsf, kwnames);
    ident = SLOT(args[0], self->lock, L_IDENT);
    if (ident == Py_None)
        Py_RETURN_FALSE;
    if (ident == NULL || !PyLong_CheckExact(ident))
        return slow_call(self->slow, args, nargsf, kwnames);
    return PyBool_FromLong(owned_by_caller(args[0], &self->lock));
}

/* _frames.internal_files (filename -> whether pylockdep's or contextlib's) and _frames._lines
 * ((id(code), lasti) -> (code, line)), the Python path's caches, set by setup(). */
static PyObject *g_internal_files, *g_lines;

/* What the Python path knows of ``code``'s file (internal_files): Py_True for pylockdep's or
 * contextlib's, Py_False for any other, NULL for a file it has not seen yet.  Borrowed. */
static PyObject *
known_file(PyCodeObject *code)
{
    PyObject *internal = g_internal_files == NULL ? NULL : PyDict_GetItemWithError(g_internal_files, code->co_filename);

    if (internal == NULL)
        PyErr_Clear();
    return internal;
}

/* Whether the Python path knows ``code``'s file to be outside pylockdep (a file it has not seen
 * yet is not known). */
static int
known_outside(PyCodeObject *code)
{
    return known_file(code) == Py_False;
}

/* Whether ``frame`` runs code of the file ``filename``. */
static int
in_file(IFrame *frame, PyObject *filename)
{
    PyObject *name = iframe_code(frame)->co_filename;

    return name == filename || PyUnicode_Compare(name, filename) == 0;
}

/* Whether ``frame`` runs code the site of a lock of ``self`` passes over: ``skip_file`` (threading.py:
 * a Condition taking its lock) or, with it, code known_file() to be pylockdep's or contextlib's (an
 * ExitStack entering the lock). */
static int
passed_over(FastMethod *self, IFrame *frame)
{
    return in_file(frame, self->skip_file) || known_file(iframe_code(frame)) == Py_True;
}

/*
 * The frame the Python path names as the site of an acquisition called from ``frame``: ``frame``
 * itself, unless the lock has a ``skip_file`` and ``frame`` is passed_over(), and then the first
 * frame out from it that is not; NULL to let Python find it, when that frame's file is not
 * known_outside() pylockdep (or there is none).
 */
static IFrame *
site_frame(FastMethod *self, IFrame *frame)
{
    if (frame == NULL || self->skip_file == NULL || !passed_over(self, frame))
        return frame;
    do
        frame = iframe_back(frame);
    while (frame != NULL && passed_over(self, frame));
    return frame != NULL && known_outside(iframe_code(frame)) ? frame : NULL;
}

static PyObject *
acquire_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastMethod *self = (FastMethod *)op;
    IFrame *frame;
    ThreadCache *c;
    int r;

    if (self->blocking_arg && PyVectorcall_NARGS(nargsf) == 2 && kwnames == NULL && !self->lock.recursive
        && (args[1] == Py_False || args[1] == g_zero) && IS(args[0], self->lock)) {
        /* acquire(False) of a lock that is taken (Condition._is_owned asks so): a trylock that fails,
         * which changes nothing.  A RealLock is marked taken only while it is. */
        RealLock *real = real_of(args[0], &self->lock);
        if (real != NULL && real->locked)
            Py_RETURN_FALSE;
        return slow_call(self->slow, args, nargsf, kwnames);
    }
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL || !IS(args[0], self->lock))
        return slow_call(self->slow, args, nargsf, kwnames);
    if (self->lock.recursive && owned_by_caller(args[0], &self->lock)) {
        long count = rlock_count(args[0], &self->lock);  /* the owner again: count, nothing more */
        if (count < 1)
            return slow_call(self->slow, args, nargsf, kwnames);
        if (rlock_set(args[0], &self->lock, count + 1, NULL) < 0)
            return NULL;
        Py_RETURN_TRUE;
    }
    frame = site_frame(self, iframe_caller());  /* a C method has no frame of its own */
    if (frame == NULL)
        return slow_call(self->slow, args, nargsf, kwnames);
    r = fast_lock(args[0], &self->lock, frame, &c);
    if (r < 0)
        return NULL;
    if (r == 0)
        return slow_call(self->slow, args, nargsf, kwnames);
    if (self->lock.recursive) {  /* a new owner */
        if (c->ident == NULL && (c->ident = PyLong_FromUnsignedLong(PyThread_get_thread_ident())) == NULL)
            return NULL;
        if (rlock_set(args[0], &self->lock, 1, c->ident) < 0)
            return NULL;
    }
    return Py_NewRef(self->returns_self ? args[0] : Py_True);
}

static PyObject *
release_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastMethod *self = (FastMethod *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    int r;

    if (nargs < 1 || kwnames != NULL || (self->arity >= 0 && nargs != self->arity) || !IS(args[0], self->lock))
        return slow_call(self->slow, args, nargsf, kwnames);
    if (self->lock.recursive) {
        long count = rlock_count(args[0], &self->lock);
        if (!owned_by_caller(args[0], &self->lock) || count < 1)
            return slow_call(self->slow, args, nargsf, kwnames);  /* it raises */
        if (count > 1) {
            if (rlock_set(args[0], &self->lock, count - 1, NULL) < 0)
                return NULL;
            Py_RETURN_NONE;
        }
    }
    r = fast_unlock(args[0], &self->lock, g_zero);
    if (r < 0)
        return NULL;
    if (r == 0)
        return slow_call(self->slow, args, nargsf, kwnames);
    Py_RETURN_NONE;
}

/*
 * RLock._release_save(), for Condition.wait(): the owner's full release on the fast path, returning
 * (count, ident) as the Python method does.  Anything else goes to the Python method.
 */
static PyObject *
release_save_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastMethod *self = (FastMethod *)op;
    PyObject *count, *ident, *state;
    int r;

    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL || !self->lock.recursive || !IS(args[0], self->lock)
        || !owned_by_caller(args[0], &self->lock) || rlock_count(args[0], &self->lock) < 1)
        return slow_call(self->slow, args, nargsf, kwnames);
    count = Py_NewRef(SLOT(args[0], self->lock, L_COUNT));
    ident = Py_NewRef(SLOT(args[0], self->lock, L_IDENT));
    state = PyTuple_Pack(2, count, ident);
    Py_DECREF(count);
    Py_DECREF(ident);
    if (state == NULL)
        return NULL;
    r = fast_unlock(args[0], &self->lock, g_zero);  /* the last release: count 0, no owner */
    if (r == 1)
        return state;
    Py_DECREF(state);
    return r < 0 ? NULL : slow_call(self->slow, args, nargsf, kwnames);
}

/*
 * RLock._acquire_restore(state), for Condition.wait(): take the lock again on the fast path, sited
 * as __enter__ sites a call from threading.py, then restore (count, ident).
 */
static PyObject *
acquire_restore_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastMethod *self = (FastMethod *)op;
    IFrame *frame;
    PyObject *state;
    ThreadCache *c;
    int r;

    if (PyVectorcall_NARGS(nargsf) != 2 || kwnames != NULL || !self->lock.recursive || !IS(args[0], self->lock))
        return slow_call(self->slow, args, nargsf, kwnames);
    state = args[1];
    if (!PyTuple_CheckExact(state) || PyTuple_GET_SIZE(state) != 2 || !PyLong_CheckExact(PyTuple_GET_ITEM(state, 0))
        || (frame = site_frame(self, iframe_caller())) == NULL)
        return slow_call(self->slow, args, nargsf, kwnames);
    r = fast_lock(args[0], &self->lock, frame, &c);
    if (r < 0)
        return NULL;
    if (r == 0)
        return slow_call(self->slow, args, nargsf, kwnames);
    slot_set(args[0], self->lock.offset[L_COUNT], PyTuple_GET_ITEM(state, 0));
    slot_set(args[0], self->lock.offset[L_IDENT], PyTuple_GET_ITEM(state, 1));
    Py_RETURN_NONE;
}
