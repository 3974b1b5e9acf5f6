/*
 * The fast path's per-packet loop in C (sfu/fastpath.py, Outbound.send_frame).
 *
 * protect_frame() writes one frame's RTP packets for one subscriber: for each
 * payload chunk, the 12-byte header (from the subscriber's numbering), the
 * extension/descriptor prefix and the chunk, one after the other in one buffer,
 * each SRTP-protected in place by libsrtp's srtp_protect (the one pylibsrtp
 * links, reached through the function address cffi gives: no libsrtp headers
 * or library are needed to build this), and records the frame in the
 * subscriber's NACK history. The buffer is what one sendmsg with UDP_SEGMENT
 * sends: every packet but the last has the same size.
 *
 * The Python loop in sfu/fastpath.py does the same and stays the fallback when
 * this module is not built; tests run both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

/* libsrtp 2: srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr) */
typedef int (*srtp_protect_fn)(void *ctx, void *rtp_hdr, int *len_ptr);

#define RTP_HEADER 12
#define SRTP_TRAILER_MAX (16 + 128) /* SRTP_MAX_TRAILER_LEN: tag and MKI */
#define PACKET_LIMIT 8192

static int
as_u32(PyObject *value, uint32_t limit, uint32_t *out, const char *name)
{
    unsigned long v = PyLong_AsUnsignedLong(value);
    if (v == (unsigned long)-1 && PyErr_Occurred())
        return -1;
    if (v > limit) {
        PyErr_Format(PyExc_ValueError, "%s out of range", name);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int
store_history(PyObject *history, uint32_t seq, PyObject *record)
{
    Py_ssize_t size = PyList_GET_SIZE(history);
    PyObject *old;
    Py_ssize_t slot = (Py_ssize_t)(seq & (uint32_t)(size - 1));
    old = PyList_GET_ITEM(history, slot);
    Py_INCREF(record);
    PyList_SET_ITEM(history, slot, record);
    Py_XDECREF(old);
    return 0;
}

PyDoc_STRVAR(protect_frame_doc,
"protect_frame(srtp, protect, b0, pt, seq, ts, ssrc, first, rest, chunks, history, record)\n"
"--\n\n"
"One frame's SRTP packets for one subscriber, in one buffer: (buffer, segment size).\n\n"
"srtp: the srtp_t of the subscriber's session (an address); protect: the address of\n"
"srtp_protect. Packet i is the header (b0, pt with the marker on the last, seq + i,\n"
"ts, ssrc), then first (i == 0) or rest, then chunks[i]. history[(seq + i) & (len - 1)]\n"
"is set to record for each packet (len(history) is a power of two). Every packet but\n"
"the last is segment bytes long. Raises ValueError for unusable arguments and\n"
"RuntimeError if srtp_protect fails; the history then holds the packets protected.");

static PyObject *
protect_frame(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    void *ctx, *fnp;
    srtp_protect_fn fn;
    uint32_t b0, pt, seq, ts, ssrc;
    PyObject *first, *rest, *chunks, *history, *record, *out;
    Py_ssize_t count, prefix, capacity = 0, pos = 0, segment = 0, hsize, i;
    char *buf;

    (void)module;
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "protect_frame() takes 12 arguments");
        return NULL;
    }
    ctx = PyLong_AsVoidPtr(args[0]);
    if (ctx == NULL && PyErr_Occurred())
        return NULL;
    fnp = PyLong_AsVoidPtr(args[1]);
    if (fnp == NULL && PyErr_Occurred())
        return NULL;
    if (ctx == NULL || fnp == NULL) {
        PyErr_SetString(PyExc_ValueError, "null SRTP session or function");
        return NULL;
    }
    memcpy(&fn, &fnp, sizeof fn);
    if (as_u32(args[2], 0xFF, &b0, "b0") || as_u32(args[3], 0x7F, &pt, "pt")
        || as_u32(args[4], 0xFFFF, &seq, "seq") || as_u32(args[5], 0xFFFFFFFFu, &ts, "ts")
        || as_u32(args[6], 0xFFFFFFFFu, &ssrc, "ssrc"))
        return NULL;
    first = args[7];
    rest = args[8];
    chunks = args[9];
    history = args[10];
    record = args[11];
    if (!PyBytes_Check(first) || !PyBytes_Check(rest)) {
        PyErr_SetString(PyExc_TypeError, "first and rest must be bytes");
        return NULL;
    }
    if (!PyList_Check(chunks) || !PyList_Check(history)) {
        PyErr_SetString(PyExc_TypeError, "chunks and history must be lists");
        return NULL;
    }
    prefix = PyBytes_GET_SIZE(first);
    count = PyList_GET_SIZE(chunks);
    hsize = PyList_GET_SIZE(history);
    if (PyBytes_GET_SIZE(rest) != prefix) {
        PyErr_SetString(PyExc_ValueError, "first and rest differ in length");
        return NULL;
    }
    if (count == 0 || hsize == 0 || (hsize & (hsize - 1)) != 0) {
        PyErr_SetString(PyExc_ValueError, "no chunks, or a history not a power of two long");
        return NULL;
    }
    for (i = 0; i < count; i++) {
        PyObject *chunk = PyList_GET_ITEM(chunks, i);
        Py_ssize_t size;
        if (!PyBytes_Check(chunk)) {
            PyErr_SetString(PyExc_TypeError, "chunks must be bytes");
            return NULL;
        }
        size = PyBytes_GET_SIZE(chunk);
        if (RTP_HEADER + prefix + size > PACKET_LIMIT) {
            PyErr_SetString(PyExc_ValueError, "packet is too long");
            return NULL;
        }
        /* GSO: every packet but the last the same size, the last no longer */
        if (i > 0 && size > PyBytes_GET_SIZE(PyList_GET_ITEM(chunks, 0))) {
            PyErr_SetString(PyExc_ValueError, "a chunk is longer than the first");
            return NULL;
        }
        if (i > 0 && i < count - 1 && size != PyBytes_GET_SIZE(PyList_GET_ITEM(chunks, 0))) {
            PyErr_SetString(PyExc_ValueError, "chunks before the last differ in length");
            return NULL;
        }
        capacity += RTP_HEADER + prefix + size + SRTP_TRAILER_MAX;
    }
    out = PyBytes_FromStringAndSize(NULL, capacity);
    if (out == NULL)
        return NULL;
    buf = PyBytes_AS_STRING(out);
    for (i = 0; i < count; i++) {
        PyObject *chunk = PyList_GET_ITEM(chunks, i);
        Py_ssize_t size = PyBytes_GET_SIZE(chunk);
        unsigned char *p = (unsigned char *)buf + pos;
        uint32_t marker = (i == count - 1) ? 0x80 : 0;
        int length = (int)(RTP_HEADER + prefix + size), status;

        p[0] = (unsigned char)b0;
        p[1] = (unsigned char)(pt | marker);
        p[2] = (unsigned char)(seq >> 8);
        p[3] = (unsigned char)seq;
        p[4] = (unsigned char)(ts >> 24);
        p[5] = (unsigned char)(ts >> 16);
        p[6] = (unsigned char)(ts >> 8);
        p[7] = (unsigned char)ts;
        p[8] = (unsigned char)(ssrc >> 24);
        p[9] = (unsigned char)(ssrc >> 16);
        p[10] = (unsigned char)(ssrc >> 8);
        p[11] = (unsigned char)ssrc;
        memcpy(p + RTP_HEADER, PyBytes_AS_STRING(i ? rest : first), (size_t)prefix);
        memcpy(p + RTP_HEADER + prefix, PyBytes_AS_STRING(chunk), (size_t)size);
        store_history(history, seq, record);
        status = fn(ctx, p, &length);
        if (status != 0) {
            Py_DECREF(out);
            PyErr_Format(PyExc_RuntimeError, "srtp_protect failed (status %d)", status);
            return NULL;
        }
        if (i == 0)
            segment = length;
        else if ((i < count - 1 && length != segment) || length > segment) {
            Py_DECREF(out);
            PyErr_SetString(PyExc_RuntimeError, "protected packets differ in length");
            return NULL;
        }
        pos += length;
        seq = (seq + 1) & 0xFFFF;
    }
    if (_PyBytes_Resize(&out, pos) < 0)
        return NULL;
    return Py_BuildValue("(Nn)", out, segment);
}

static PyMethodDef methods[] = {
    {"protect_frame", (PyCFunction)(void (*)(void))protect_frame, METH_FASTCALL,
     protect_frame_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "sfu._rtploop",
    "The fast path's per-packet loop: RTP headers, SRTP and NACK history for one frame.",
    -1,
    methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__rtploop(void)
{
    return PyModule_Create(&module_def);
}
