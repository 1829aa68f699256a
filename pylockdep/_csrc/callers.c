/*
 * The calling Python frames, read where the interpreter keeps them.
 *
 * A site is a frame's code and instruction offset.  PyEval_GetFrame() and PyFrame_GetBack() hand
 * out a frame *object* for each frame they reach: for a function that has none yet (every call of a
 * method such as Condition.__enter__ or Future.set_result) that is a new GC-tracked object, made only
 * for the fast path to read two fields and dropped as the function returns.  A thread-pool task
 * takes five locks from such calls, and its Future's Condition walks a few more frames.
 *
 * CPython 3.11-3.13 keep the code and offset in the frame's record on the interpreter's stack
 * (struct _PyInterpreterFrame).  No public API reaches that record: 3.12 added
 * PyUnstable_InterpreterFrame_GetCode()/GetLasti() for a record in hand, but the running thread's
 * innermost record and each record's caller are internal on all three versions.  So this part
 * reads CPython's internal pycore_frame.h (as Cython does), and nothing else in the module does:
 * IFrame is that record, and the functions below are all the others use.  A frame object
 * is still made where one is handed to Python code.
 *
 * Records are only read while the calling function runs, so each one (and its code, which it owns)
 * outlives every use here: nothing is counted.
 */
#define Py_BUILD_CORE
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE

typedef struct _PyInterpreterFrame IFrame;

/* ``f``, or the first record out from it that runs Python code already (a frame still in its
 * prologue, or 3.12+'s entry record of a C call, is not one PyFrame_GetBack() would return). */
static IFrame *
iframe_complete(IFrame *f)
{
    while (f != NULL && _PyFrame_IsIncomplete(f))
        f = f->previous;
    return f;
}

/* The innermost Python frame of the calling thread (what PyEval_GetFrame() makes an object of), or NULL. */
static IFrame *
iframe_caller(void)
{
    PyThreadState *tstate = PyThreadState_Get();

#if PY_VERSION_HEX >= 0x030D0000
    return iframe_complete(tstate->current_frame);
#else
    return iframe_complete(tstate->cframe->current_frame);
#endif
}

/* The record of the frame object ``frame`` of a running function. */
static IFrame *
iframe_of(PyFrameObject *frame)
{
    return frame->f_frame;
}

/* The frame that called ``f`` (PyFrame_GetBack()'s), or NULL. */
static IFrame *
iframe_back(IFrame *f)
{
    return iframe_complete(f->previous);
}

/* The code ``f`` runs, borrowed (the record holds it). */
static PyCodeObject *
iframe_code(IFrame *f)
{
#if PY_VERSION_HEX >= 0x030D0000
    return _PyFrame_GetCode(f);
#else
    return f->f_code;
#endif
}

/* ``f``'s instruction offset in bytes, as PyFrame_GetLasti() and ``frame.f_lasti`` give it. */
static int
iframe_lasti(IFrame *f)
{
    int lasti = _PyInterpreterFrame_LASTI(f);

    return lasti < 0 ? -1 : lasti * (int)sizeof(_Py_CODEUNIT);
}

/* The type of ``f``'s first argument, borrowed, what pylockdep._sites.owner_of() finds: NULL
 * when the code takes no argument, or the argument is unbound, None or a class.  (An argument that
 * a closure captures is held in a cell.) */
static PyTypeObject *
iframe_owner_type(IFrame *f)
{
    PyObject *first;

    if (iframe_code(f)->co_argcount < 1)
        return NULL;
    first = f->localsplus[0];
    if (first != NULL && PyCell_Check(first))
        first = PyCell_GET(first);
    if (first == NULL || first == Py_None || PyType_Check(first))
        return NULL;
    return Py_TYPE(first);
}
