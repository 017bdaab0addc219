/* CPython binding of the edgevlm C runtime (module edgevlm.runtime._rt).
 *
 * Thin by design: the Python wrapper (edgevlm/runtime/model.py) validates
 * and converts arguments to contiguous numpy arrays; this file passes their
 * buffers to C without copying, releases the GIL around every forward pass,
 * and implements the generation iterator in C so that the per-token loop
 * (sample + decode step) never runs Python code. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "edgevlm.h"

/* ---- errors --------------------------------------------------------------- */

/* edgevlm.runtime.RuntimeLoadError etc. are Python classes; the wrapper
 * registers one callable that builds the right exception from (code, name,
 * message), so the C side needs no knowledge of the Python hierarchy. */
static PyObject *g_error_factory = NULL;

static PyObject *raise_ev(const ev_error *err) {
    if (g_error_factory) {
        /* messages quote names read from files: decode leniently */
        PyObject *msg = PyUnicode_DecodeUTF8(err->message, (Py_ssize_t)strlen(err->message), "replace");
        if (!msg) return NULL;
        PyObject *exc = PyObject_CallFunction(g_error_factory, "isN", (int)err->code, ev_status_name(err->code), msg);
        if (exc) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    PyErr_Format(PyExc_RuntimeError, "%s: %s", ev_status_name(err->code), err->message);
    return NULL;
}

static PyObject *rt_set_error_factory(PyObject *self, PyObject *fn) {
    (void)self;
    Py_XINCREF(fn);
    Py_XSETREF(g_error_factory, fn);
    Py_RETURN_NONE;
}

/* ---- Model ---------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    ev_model *model;
} ModelObject;

static void Model_dealloc(ModelObject *self) {
    ev_model_free(self->model);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Model_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", NULL};
    PyObject *path_obj;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&", kwlist, PyUnicode_FSConverter, &path_obj)) return NULL;
    ModelObject *self = (ModelObject *)type->tp_alloc(type, 0);
    if (!self) { Py_DECREF(path_obj); return NULL; }
    ev_error err;
    ev_status st;
    const char *path = PyBytes_AS_STRING(path_obj);
    Py_BEGIN_ALLOW_THREADS
    st = ev_model_load(path, &self->model, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(path_obj);
    if (st != EV_OK) {
        Py_DECREF(self);
        return raise_ev(&err);
    }
    return (PyObject *)self;
}

static PyObject *Model_info(ModelObject *self, PyObject *unused) {
    (void)unused;
    ev_model_info in;
    ev_model_get_info(self->model, &in);
    return Py_BuildValue("{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:i,s:i,s:i,s:s}", "arch", in.arch,
                         "n_vocab", in.n_vocab, "n_embd", in.n_embd, "n_layer", in.n_layer,
                         "n_head", in.n_head, "n_head_kv", in.n_head_kv, "head_dim", in.head_dim,
                         "n_ff", in.n_ff, "n_ctx_train", in.n_ctx_train, "conv_l_cache", in.conv_l_cache,
                         "n_attn_layers", in.n_attn_layers, "rope_theta", (double)in.rope_theta,
                         "norm_eps", (double)in.norm_eps, "weight_type", in.weight_type,
                         "bos_token", (int)ev_model_bos_token(self->model),
                         "eos_token", (int)ev_model_eos_token(self->model),
                         "tokenizer", ev_model_tokenizer(self->model));
}

static PyObject *Model_token_text(ModelObject *self, PyObject *arg) {
    long id = PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred()) return NULL;
    size_t len = 0;
    const char *t = (id >= INT32_MIN && id <= INT32_MAX) ? ev_model_token_text(self->model, (int32_t)id, &len) : NULL;
    if (!t) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize(t, (Py_ssize_t)len);
}

static PyObject *Model_token_type(ModelObject *self, PyObject *arg) {
    long id = PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromLong((id >= INT32_MIN && id <= INT32_MAX) ? ev_model_token_type(self->model, (int32_t)id) : 0);
}

static PyMethodDef Model_methods[] = {
    {"info", (PyCFunction)Model_info, METH_NOARGS, "Hyperparameters and special tokens as a dict."},
    {"token_text", (PyCFunction)Model_token_text, METH_O, "Bytes of one vocab entry, or None."},
    {"token_type", (PyCFunction)Model_token_type, METH_O, "GGUF token type of one vocab entry (3: control), 0 if unknown."},
    {NULL, NULL, 0, NULL}
};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgevlm.runtime._rt.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Model(path): an LFM2 or Qwen2 GGUF loaded by the C runtime.",
    .tp_methods = Model_methods,
    .tp_new = Model_new,
};

/* ---- Session -------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *model;        /* keeps the ModelObject alive */
    ev_session *s;
    int busy;               /* a forward pass runs with the GIL released */
} SessionObject;

static void Session_dealloc(SessionObject *self) {
    ev_session_free(self->s);
    Py_XDECREF(self->model);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Session_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"model", "n_ctx", "n_threads", NULL};
    PyObject *model;
    int n_ctx, n_threads;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!ii", kwlist, &ModelType, &model, &n_ctx, &n_threads)) return NULL;
    SessionObject *self = (SessionObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    Py_INCREF(model);
    self->model = model;
    ev_session_opts o = {n_ctx, n_threads};
    ev_error err;
    if (ev_session_new(((ModelObject *)model)->model, &o, &self->s, &err) != EV_OK) {
        Py_DECREF(self);
        return raise_ev(&err);
    }
    return (PyObject *)self;
}

static int claim(SessionObject *self) {
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "session is in use by another thread");
        return 0;
    }
    self->busy = 1;
    return 1;
}

/* run(kind, inp, n, out): kind 0 = token ids (int32 buffer), 1 = embeddings
 * (float32 buffer [n, n_embd]); out is a writable float32 buffer [n_vocab]
 * or None.  Shapes and dtypes were checked by the Python wrapper; buffer
 * sizes are checked again here so a bad call cannot read out of bounds. */
static PyObject *Session_run(SessionObject *self, PyObject *args) {
    int kind, n;
    PyObject *inp, *out;
    if (!PyArg_ParseTuple(args, "iOiO", &kind, &inp, &n, &out)) return NULL;
    Py_buffer ib, ob = {0};
    if (PyObject_GetBuffer(inp, &ib, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    const ev_model *m = ((ModelObject *)self->model)->model;
    Py_ssize_t need_in = kind == 0 ? (Py_ssize_t)n * 4 : (Py_ssize_t)n * ev_model_n_embd(m) * 4;
    if (n < 0 || ib.len < need_in) {
        PyBuffer_Release(&ib);
        return PyErr_Format(PyExc_ValueError, "input buffer holds %zd bytes, need %zd", ib.len, need_in);
    }
    if (out != Py_None) {
        if (PyObject_GetBuffer(out, &ob, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
            PyBuffer_Release(&ib);
            return NULL;
        }
        if (ob.len < (Py_ssize_t)ev_model_n_vocab(m) * 4) {
            PyBuffer_Release(&ib);
            PyBuffer_Release(&ob);
            return PyErr_Format(PyExc_ValueError, "logits buffer holds %zd bytes, need %d", ob.len, ev_model_n_vocab(m) * 4);
        }
    }
    if (!claim(self)) {
        PyBuffer_Release(&ib);
        if (ob.obj) PyBuffer_Release(&ob);
        return NULL;
    }
    ev_error err;
    ev_status st;
    float *logits = ob.obj ? (float *)ob.buf : NULL;
    Py_BEGIN_ALLOW_THREADS
    st = kind == 0 ? ev_prefill(self->s, (const int32_t *)ib.buf, n, logits, &err)
                   : ev_prefill_embeds(self->s, (const float *)ib.buf, n, logits, &err);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    PyBuffer_Release(&ib);
    if (ob.obj) PyBuffer_Release(&ob);
    if (st != EV_OK) return raise_ev(&err);
    Py_RETURN_NONE;
}

static PyObject *Session_reset(SessionObject *self, PyObject *unused) {
    (void)unused;
    if (!claim(self)) return NULL;
    ev_session_reset(self->s);
    self->busy = 0;
    Py_RETURN_NONE;
}

static PyObject *Session_n_past(SessionObject *self, void *closure) {
    (void)closure;
    return PyLong_FromLong(ev_session_n_past(self->s));
}

static PyMethodDef Session_methods[] = {
    {"run", (PyCFunction)Session_run, METH_VARARGS, "run(kind, input_buffer, n, logits_out_or_None)"},
    {"reset", (PyCFunction)Session_reset, METH_NOARGS, "Forget all tokens."},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef Session_getset[] = {
    {"n_past", (getter)Session_n_past, NULL, "tokens processed so far", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyTypeObject SessionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgevlm.runtime._rt.Session",
    .tp_basicsize = sizeof(SessionObject),
    .tp_dealloc = (destructor)Session_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Session(model, n_ctx, n_threads): KV cache, conv state and thread pool.",
    .tp_methods = Session_methods,
    .tp_getset = Session_getset,
    .tp_new = Session_new,
};

/* ---- Generator: the per-token loop in C ------------------------------------ */

typedef struct {
    PyObject_HEAD
    SessionObject *session;
    ev_sampler *smp;
    int remaining;
    int32_t stop;
} GenObject;

static void Gen_dealloc(GenObject *self) {
    ev_sampler_free(self->smp);
    Py_XDECREF(self->session);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Generator(session, max_new_tokens, temperature, top_k, top_p, seed, stop_token) */
static PyObject *Gen_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"session", "max_new_tokens", "temperature", "top_k", "top_p", "seed", "stop_token", NULL};
    PyObject *session;
    int max_new, top_k, stop;
    float temperature, top_p;
    unsigned long long seed;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!ififKi", kwlist, &SessionType, &session, &max_new, &temperature,
                                     &top_k, &top_p, &seed, &stop))
        return NULL;
    GenObject *self = (GenObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    ev_sampler_opts o = {temperature, top_k, top_p, (uint64_t)seed};
    self->smp = ev_sampler_new(&o);
    if (!self->smp) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    Py_INCREF(session);
    self->session = (SessionObject *)session;
    self->remaining = max_new;
    self->stop = stop;
    return (PyObject *)self;
}

static PyObject *Gen_next(GenObject *self) {
    if (self->remaining <= 0) return NULL;   /* StopIteration */
    if (!claim(self->session)) return NULL;
    int32_t tok;
    int done;
    ev_error err;
    ev_status st;
    Py_BEGIN_ALLOW_THREADS
    st = ev_generate_next(self->session->s, self->smp, self->stop, &tok, &done, &err);
    Py_END_ALLOW_THREADS
    self->session->busy = 0;
    if (st != EV_OK) {
        self->remaining = 0;
        return raise_ev(&err);
    }
    self->remaining--;
    if (done) {
        self->remaining = 0;
        return NULL;
    }
    return PyLong_FromLong(tok);
}

static PyTypeObject GenType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgevlm.runtime._rt.Generator",
    .tp_basicsize = sizeof(GenObject),
    .tp_dealloc = (destructor)Gen_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Iterator of sampled token ids; sampling and decoding run in C.",
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)Gen_next,
    .tp_new = Gen_new,
};

/* ---- sampling without a model (tests, custom loops) ------------------------ */

/* sample(logits, count, temperature, top_k, top_p, seed) -> list of count ids,
 * drawn by one sampler from the same float32 logits buffer. */
static PyObject *rt_sample(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *obj;
    int count, top_k;
    float temperature, top_p;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "OififK", &obj, &count, &temperature, &top_k, &top_p, &seed)) return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(obj, &b, PyBUF_C_CONTIGUOUS) < 0) return NULL;
    int n = (int)(b.len / 4);
    if (n < 1 || count < 0) {
        PyBuffer_Release(&b);
        return PyErr_Format(PyExc_ValueError, "need at least one logit and count >= 0");
    }
    ev_sampler_opts o = {temperature, top_k, top_p, (uint64_t)seed};
    ev_sampler *smp = ev_sampler_new(&o);
    PyObject *out = smp ? PyList_New(count) : PyErr_NoMemory();
    for (int i = 0; out && i < count; i++) {
        PyObject *v = PyLong_FromLong(ev_sampler_sample(smp, (const float *)b.buf, n));
        if (!v) { Py_CLEAR(out); break; }
        PyList_SET_ITEM(out, i, v);
    }
    ev_sampler_free(smp);
    PyBuffer_Release(&b);
    return out;
}

/* ---- module --------------------------------------------------------------- */

static PyObject *rt_cpu_features(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    unsigned f = ev_cpu_features();
    PyObject *out = PyList_New(0);
    if (!out) return NULL;
    for (unsigned bit = 1; bit && bit <= EV_CPU_F16C; bit <<= 1) {
        const char *name = ev_cpu_feature_name(bit);
        if ((f & bit) && name) {
            PyObject *s = PyUnicode_FromString(name);
            if (!s || PyList_Append(out, s) < 0) { Py_XDECREF(s); Py_DECREF(out); return NULL; }
            Py_DECREF(s);
        }
    }
    return out;
}

static PyMethodDef rt_methods[] = {
    {"cpu_features", rt_cpu_features, METH_NOARGS,
     "List of SIMD levels detected at run time (e.g. 'avx2', 'avx512_vnni', 'neon_dotprod')."},
    {"sample", rt_sample, METH_VARARGS,
     "sample(logits_f32, count, temperature, top_k, top_p, seed) -> list of token ids"},
    {"_set_error_factory", rt_set_error_factory, METH_O,
     "Register f(code, name, message) -> exception instance for C errors."},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef rt_module = {
    PyModuleDef_HEAD_INIT, "_rt", "edgevlm C runtime binding.", -1, rt_methods,
    NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__rt(void) {
    if (PyType_Ready(&ModelType) < 0 || PyType_Ready(&SessionType) < 0 || PyType_Ready(&GenType) < 0) return NULL;
    PyObject *m = PyModule_Create(&rt_module);
    if (!m) return NULL;
    PyTypeObject *types[] = {&ModelType, &SessionType, &GenType};
    const char *names[] = {"Model", "Session", "Generator"};
    for (int i = 0; i < 3; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
