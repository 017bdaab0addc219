/* CPython binding of the edgevlm C runtime (module edgevlm.runtime._rt). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "edgevlm.h"

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
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef rt_module = {
    PyModuleDef_HEAD_INIT, "_rt", "edgevlm C runtime binding.", -1, rt_methods,
    NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__rt(void) { return PyModule_Create(&rt_module); }
