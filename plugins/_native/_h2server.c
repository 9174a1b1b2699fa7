/* The HTTP/2 side of the OTLP receiver's native gRPC server, on libnghttp2.
 *
 * A Session is one server connection's HTTP/2 state. Python feeds it the bytes read from the
 * socket and writes back what data_to_send() returns; nghttp2 does the framing, HPACK, flow
 * control (window updates as data is consumed), settings, pings and stream states. This module
 * collects each request stream's :path, content-type, grpc-encoding and body, and reads the
 * body's gRPC message framing (one message: a flag byte and a 4-byte big-endian length). A
 * request whose body ends is returned by feed() as
 *
 *     (stream_id, path, content_type, encoding, flag, payload)
 *
 * flag 0 / 1: payload is the message (1: compressed with the grpc-encoding);
 * flag FRAMING (-1): the body is not exactly one gRPC message (payload None);
 * flag TOO_LARGE (-2): the body went over max_message (payload: the bytes received; what came
 * beyond the limit was discarded as it arrived).
 *
 * Python answers with respond(): a normal response (headers, the framed message, trailers with
 * grpc-status 0) or a Trailers-Only error response, or a bare HTTP status. A stream the client
 * reset or closed before the answer is simply gone: respond() then does nothing. Nothing here
 * calls back into Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <nghttp2/nghttp2.h>
#include <string.h>

#define FRAMING (-1)
#define TOO_LARGE (-2)

typedef struct stream {
    int32_t id;
    uint8_t *buf; /* the request body (gRPC framed), then the response's framed message */
    size_t len, cap, received;
    size_t resp_off;
    int too_large, done, responding;
    char path[256];
    size_t path_len;
    char content_type[64];
    char encoding[32];
    struct stream *prev, *next;
} stream;

typedef struct {
    PyObject_HEAD
    nghttp2_session *session;
    size_t max_message;
    size_t buffered, max_buffered; /* request bytes held in the streams, and their bound */
    Py_ssize_t refused;            /* streams reset (REFUSED_STREAM) because of that bound */
    PyObject *ready;    /* list of completed requests, handed out by feed() */
    stream *streams;    /* every stream with state here */
    Py_ssize_t nstreams;
    int failed;         /* a callback failed (memory): the connection is unusable */
} SessionObject;

static void
stream_drop_body(SessionObject *S, stream *x)
{
    if (!x->responding)
        S->buffered -= x->len;
    PyMem_Free(x->buf);
    x->buf = NULL;
    x->len = x->cap = 0;
}

static void
stream_free(SessionObject *S, stream *x)
{
    stream_drop_body(S, x);
    if (x->prev)
        x->prev->next = x->next;
    else
        S->streams = x->next;
    if (x->next)
        x->next->prev = x->prev;
    S->nstreams--;
    PyMem_Free(x);
}

static void
copy_header(char *dst, size_t cap, const uint8_t *v, size_t vl)
{
    if (vl >= cap)
        vl = cap - 1;
    memcpy(dst, v, vl);
    dst[vl] = 0;
}

static int
on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    SessionObject *S = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    stream *x = PyMem_Calloc(1, sizeof *x);
    if (x == NULL) {
        S->failed = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    x->id = frame->hd.stream_id;
    x->next = S->streams;
    if (S->streams)
        S->streams->prev = x;
    S->streams = x;
    S->nstreams++;
    nghttp2_session_set_stream_user_data(session, x->id, x);
    return 0;
}

static int
on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
          size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    stream *x = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (x == NULL)
        return 0;
    if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
        if (valuelen >= sizeof x->path) /* no such route: keep it unmatched */
            valuelen = sizeof x->path - 1;
        copy_header(x->path, sizeof x->path, value, valuelen);
        x->path_len = valuelen;
    }
    else if (namelen == 12 && memcmp(name, "content-type", 12) == 0)
        copy_header(x->content_type, sizeof x->content_type, value, valuelen);
    else if (namelen == 13 && memcmp(name, "grpc-encoding", 13) == 0)
        copy_header(x->encoding, sizeof x->encoding, value, valuelen);
    return 0;
}

static int
on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
              size_t len, void *user)
{
    SessionObject *S = user;
    stream *x = nghttp2_session_get_stream_user_data(session, stream_id);
    if (x == NULL || x->done)
        return 0;
    x->received += len;
    if (x->too_large)
        return 0;
    if (x->received > S->max_message + 5) {
        x->too_large = 1; /* discarded from now on; answered RESOURCE_EXHAUSTED at its end */
        stream_drop_body(S, x);
        return 0;
    }
    if (S->buffered + len > S->max_buffered) {
        /* the connection holds too much unfinished request data: this call is refused (gRPC
         * clients retry a REFUSED_STREAM), nothing of it reaches Python */
        stream_drop_body(S, x);
        x->done = 1;
        S->refused++;
        if (nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id,
                                      NGHTTP2_REFUSED_STREAM) != 0) {
            S->failed = 1;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    }
    if (x->len + len > x->cap) {
        size_t cap = x->cap ? x->cap : 16384;
        while (cap < x->len + len)
            cap *= 2;
        uint8_t *fresh = PyMem_Realloc(x->buf, cap);
        if (fresh == NULL) {
            S->failed = 1;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        x->buf = fresh;
        x->cap = cap;
    }
    memcpy(x->buf + x->len, data, len);
    x->len += len;
    S->buffered += len;
    return 0;
}

/* the request of a stream whose body ended, appended to S->ready */
static int
complete(SessionObject *S, stream *x)
{
    x->done = 1;
    int flag;
    PyObject *payload;
    if (x->too_large) {
        flag = TOO_LARGE;
        payload = PyLong_FromSize_t(x->received);
    }
    else if (x->len < 5) {
        flag = FRAMING;
        payload = Py_NewRef(Py_None);
    }
    else {
        uint32_t n = (uint32_t)x->buf[1] << 24 | (uint32_t)x->buf[2] << 16 |
                     (uint32_t)x->buf[3] << 8 | (uint32_t)x->buf[4];
        if (x->buf[0] > 1 || (size_t)n != x->len - 5) {
            flag = FRAMING;
            payload = Py_NewRef(Py_None);
        }
        else {
            flag = x->buf[0];
            payload = PyBytes_FromStringAndSize((const char *)x->buf + 5, (Py_ssize_t)n);
        }
    }
    stream_drop_body(S, x);
    if (payload == NULL)
        return -1;
    PyObject *item = Py_BuildValue(
        "(is#ssiN)", x->id, x->path, (Py_ssize_t)x->path_len, x->content_type, x->encoding, flag,
        payload);
    if (item == NULL)
        return -1;
    int rc = PyList_Append(S->ready, item);
    Py_DECREF(item);
    return rc;
}

static int
on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    SessionObject *S = user;
    if ((frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    stream *x = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (x == NULL || x->done)
        return 0;
    if (complete(S, x) < 0) {
        S->failed = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int
on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user)
{
    SessionObject *S = user;
    stream *x = nghttp2_session_get_stream_user_data(session, stream_id);
    if (x != NULL) {
        nghttp2_session_set_stream_user_data(session, stream_id, NULL);
        stream_free(S, x);
    }
    return 0;
}

/* the response's framed message, then the trailers (grpc-status 0) */
static ssize_t
read_response(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
              uint32_t *data_flags, nghttp2_data_source *source, void *user)
{
    stream *x = source->ptr;
    size_t n = x->len - x->resp_off;
    if (n > length)
        n = length;
    memcpy(buf, x->buf + x->resp_off, n);
    x->resp_off += n;
    if (x->resp_off == x->len) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        static const nghttp2_nv ok[] = {
            {(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, NGHTTP2_NV_FLAG_NONE},
        };
        if (nghttp2_submit_trailer(session, stream_id, ok, 1) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return (ssize_t)n;
}

static int
Session_init(SessionObject *S, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_message", "max_concurrent_streams", "stream_window",
                             "connection_window", "max_buffered", NULL};
    Py_ssize_t max_message, max_streams, stream_window, conn_window, max_buffered = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nnnn|n", kwlist, &max_message, &max_streams,
                                     &stream_window, &conn_window, &max_buffered))
        return -1;
    if (max_buffered < 0)
        max_buffered = max_message + 5; /* default: one message as large as allowed */
    if (max_message < 0 || max_buffered < max_message + 5 || max_streams < 1 ||
        stream_window < 65535 ||
        stream_window > 0x7fffffff || conn_window < 65535 || conn_window > 0x7fffffff) {
        PyErr_SetString(PyExc_ValueError, "Session: a limit out of range");
        return -1;
    }
    if (S->session != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Session: already initialized");
        return -1;
    }
    S->max_message = (size_t)max_message;
    S->max_buffered = (size_t)max_buffered;
    S->ready = PyList_New(0);
    if (S->ready == NULL)
        return -1;
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0) {
        PyErr_NoMemory();
        return -1;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int rv = nghttp2_session_server_new(&S->session, cb, S);
    nghttp2_session_callbacks_del(cb);
    if (rv != 0) {
        S->session = NULL;
        PyErr_NoMemory();
        return -1;
    }
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)(max_streams > 0x7fffffff
                                                                  ? 0x7fffffff
                                                                  : max_streams)},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)stream_window},
    };
    if (nghttp2_submit_settings(S->session, NGHTTP2_FLAG_NONE, settings, 2) != 0 ||
        nghttp2_session_set_local_window_size(S->session, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)conn_window) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "Session: cannot submit the settings");
        return -1;
    }
    return 0;
}

static int
check(SessionObject *S)
{
    if (S->session == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Session: not initialized");
        return -1;
    }
    return 0;
}

/* feed(data) -> [completed requests]; ValueError on a protocol error (the connection is to be
 * closed once data_to_send() has been written: it may hold a GOAWAY) */
static PyObject *
Session_feed(SessionObject *S, PyObject *arg)
{
    if (check(S) < 0)
        return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    ssize_t rv = nghttp2_session_mem_recv(S->session, b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    PyObject *ready = S->ready;
    if (S->failed || rv < 0) {
        if (!PyErr_Occurred()) {
            if (S->failed)
                PyErr_NoMemory();
            else
                PyErr_Format(PyExc_ValueError, "HTTP/2: %s", nghttp2_strerror((int)rv));
        }
        S->failed = 1;
        return NULL;
    }
    if (PyList_GET_SIZE(ready) == 0)
        return Py_NewRef(ready); /* an empty list stays for the next call */
    S->ready = PyList_New(0);
    if (S->ready == NULL) {
        S->ready = ready;
        return NULL;
    }
    return ready;
}

/* data_to_send() -> bytes (b"" when there is nothing to write) */
static PyObject *
Session_data_to_send(SessionObject *S, PyObject *unused)
{
    if (check(S) < 0)
        return NULL;
    PyObject *out = NULL;
    char *acc = NULL;
    size_t total = 0, cap = 0;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(S->session, &data);
        if (n < 0) {
            PyErr_Format(PyExc_ValueError, "HTTP/2: %s", nghttp2_strerror((int)n));
            goto done;
        }
        if (n == 0)
            break;
        if (total == 0 && out == NULL && acc == NULL) {
            /* most often one piece: peek whether more follows before copying twice */
            acc = PyMem_Malloc((size_t)n > 4096 ? (size_t)n : 4096);
            if (acc == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            cap = (size_t)n > 4096 ? (size_t)n : 4096;
        }
        else if (total + (size_t)n > cap) {
            size_t ncap = cap * 2;
            while (ncap < total + (size_t)n)
                ncap *= 2;
            char *fresh = PyMem_Realloc(acc, ncap);
            if (fresh == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            acc = fresh;
            cap = ncap;
        }
        memcpy(acc + total, data, (size_t)n);
        total += (size_t)n;
    }
    out = PyBytes_FromStringAndSize(acc ? acc : "", (Py_ssize_t)total);
done:
    PyMem_Free(acc);
    return out;
}

/* respond(stream_id, status, message=None, payload=None, details=None, http_status=200)
 * status 0: a normal response carrying payload framed as one uncompressed gRPC message
 * (payload None: an empty message); otherwise a Trailers-Only response with grpc-status,
 * grpc-message (already percent-encoded) and grpc-status-details-bin (already base64) when
 * given. http_status other than 200: a bare HTTP response with that status (for requests that
 * are not gRPC). Returns False when the stream is gone (reset or closed by the client). */
static PyObject *
Session_respond(SessionObject *S, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream_id", "status", "message", "payload", "details",
                             "http_status", NULL};
    int stream_id, status, http_status = 200;
    const char *message = NULL, *details = NULL;
    Py_ssize_t message_len = 0, details_len = 0;
    Py_buffer payload = {NULL, NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ii|z#z*z#i", kwlist, &stream_id, &status,
                                     &message, &message_len, &payload, &details, &details_len,
                                     &http_status))
        return NULL;
    PyObject *result = NULL;
    if (check(S) < 0)
        goto done;
    stream *x = nghttp2_session_get_stream_user_data(S->session, stream_id);
    if (x == NULL || !x->done || x->responding) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    x->responding = 1; /* from here x->buf holds the response, not counted in S->buffered */
    char code[12], hstatus[4];
    if (http_status < 100 || http_status > 599) {
        PyErr_SetString(PyExc_ValueError, "respond: http_status out of range");
        goto done;
    }
    snprintf(hstatus, sizeof hstatus, "%d", http_status);
    int ncode = snprintf(code, sizeof code, "%d", status);
    nghttp2_nv nv[5];
    size_t n = 0;
#define NV(k, v, vl)                                                                         \
    do {                                                                                     \
        nv[n].name = (uint8_t *)(k);                                                         \
        nv[n].namelen = sizeof(k) - 1;                                                       \
        nv[n].value = (uint8_t *)(v);                                                        \
        nv[n].valuelen = (size_t)(vl);                                                       \
        nv[n].flags = NGHTTP2_NV_FLAG_NONE;                                                  \
        n++;                                                                                 \
    } while (0)
    NV(":status", hstatus, strlen(hstatus));
    int rv;
    if (http_status != 200)
        rv = nghttp2_submit_response(S->session, stream_id, nv, n, NULL);
    else if (status != 0) {
        NV("content-type", "application/grpc", 16);
        NV("grpc-status", code, ncode);
        if (message != NULL && message_len)
            NV("grpc-message", message, message_len);
        if (details != NULL && details_len)
            NV("grpc-status-details-bin", details, details_len);
        rv = nghttp2_submit_response(S->session, stream_id, nv, n, NULL);
    }
    else {
        NV("content-type", "application/grpc", 16);
        Py_ssize_t plen = payload.buf ? payload.len : 0;
        if ((size_t)plen > 0xffffffffu) {
            PyErr_SetString(PyExc_ValueError, "respond: payload too large");
            goto done;
        }
        x->buf = PyMem_Malloc((size_t)plen + 5);
        if (x->buf == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        x->buf[0] = 0;
        x->buf[1] = (uint8_t)(plen >> 24);
        x->buf[2] = (uint8_t)(plen >> 16);
        x->buf[3] = (uint8_t)(plen >> 8);
        x->buf[4] = (uint8_t)plen;
        if (plen)
            memcpy(x->buf + 5, payload.buf, (size_t)plen);
        x->len = x->cap = (size_t)plen + 5;
        x->resp_off = 0;
        nghttp2_data_provider provider;
        provider.source.ptr = x;
        provider.read_callback = read_response;
        rv = nghttp2_submit_response(S->session, stream_id, nv, n, &provider);
    }
#undef NV
    if (rv != 0) {
        PyErr_Format(PyExc_ValueError, "HTTP/2: %s", nghttp2_strerror(rv));
        goto done;
    }
    result = Py_NewRef(Py_True);
done:
    if (payload.buf)
        PyBuffer_Release(&payload);
    return result;
}

/* goaway(): the final GOAWAY: streams after the last one received are refused (the client may
 * retry them elsewhere); those received are still answered */
static PyObject *
Session_goaway(SessionObject *S, PyObject *unused)
{
    if (check(S) < 0)
        return NULL;
    int rv = nghttp2_submit_goaway(S->session, NGHTTP2_FLAG_NONE,
                                   nghttp2_session_get_last_proc_stream_id(S->session),
                                   NGHTTP2_NO_ERROR, NULL, 0);
    if (rv != 0 && rv != NGHTTP2_ERR_INVALID_STATE) {
        PyErr_Format(PyExc_ValueError, "HTTP/2: %s", nghttp2_strerror(rv));
        return NULL;
    }
    Py_RETURN_NONE;
}

/* want_io() -> bool: False once the session is over (both sides said GOAWAY and no stream is
 * left, or a fatal error) */
static PyObject *
Session_want_io(SessionObject *S, PyObject *unused)
{
    if (check(S) < 0)
        return NULL;
    if (S->failed)
        Py_RETURN_FALSE;
    return PyBool_FromLong(nghttp2_session_want_read(S->session) ||
                           nghttp2_session_want_write(S->session));
}

static PyObject *
Session_get_open_streams(SessionObject *S, void *closure)
{
    return PyLong_FromSsize_t(S->nstreams);
}

static void
Session_dealloc(SessionObject *S)
{
    /* the streams' state is freed here, detached first so that no callback can reach it */
    while (S->streams != NULL) {
        if (S->session != NULL)
            nghttp2_session_set_stream_user_data(S->session, S->streams->id, NULL);
        stream_free(S, S->streams);
    }
    if (S->session != NULL)
        nghttp2_session_del(S->session);
    Py_XDECREF(S->ready);
    Py_TYPE(S)->tp_free((PyObject *)S);
}

static PyMethodDef Session_methods[] = {
    {"feed", (PyCFunction)Session_feed, METH_O,
     "feed(data) -> [(stream_id, path, content_type, encoding, flag, payload)]"},
    {"data_to_send", (PyCFunction)Session_data_to_send, METH_NOARGS,
     "data_to_send() -> the bytes to write to the peer (b'' for none)"},
    {"respond", (PyCFunction)(void (*)(void))Session_respond, METH_VARARGS | METH_KEYWORDS,
     "respond(stream_id, status, message=None, payload=None, details=None, http_status=200) "
     "-> False when the stream is gone"},
    {"goaway", (PyCFunction)Session_goaway, METH_NOARGS,
     "the final GOAWAY (last stream id: the last one received)"},
    {"want_io", (PyCFunction)Session_want_io, METH_NOARGS,
     "False once the session is over"},
    {NULL, NULL, 0, NULL},
};

static PyObject *
Session_get_refused(SessionObject *S, void *closure)
{
    return PyLong_FromSsize_t(S->refused);
}

static PyObject *
Session_get_buffered(SessionObject *S, void *closure)
{
    return PyLong_FromSize_t(S->buffered);
}

static PyGetSetDef Session_getset[] = {
    {"refused", (getter)Session_get_refused, NULL,
     "streams reset with REFUSED_STREAM because max_buffered was reached", NULL},
    {"buffered", (getter)Session_get_buffered, NULL,
     "request bytes held in unfinished streams", NULL},
    {"open_streams", (getter)Session_get_open_streams, NULL,
     "streams received and not yet closed (answered and sent, or reset)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SessionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "plugins._native._h2server.Session",
    .tp_doc = "One server connection's HTTP/2 state (nghttp2) for unary gRPC calls.",
    .tp_basicsize = sizeof(SessionObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Session_init,
    .tp_dealloc = (destructor)Session_dealloc,
    .tp_methods = Session_methods,
    .tp_getset = Session_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_h2server",
    "HTTP/2 server sessions (libnghttp2) for the OTLP receiver's native gRPC server.", -1,
    NULL,
};

PyMODINIT_FUNC
PyInit__h2server(void)
{
    if (PyType_Ready(&SessionType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Session", (PyObject *)&SessionType) < 0 ||
        PyModule_AddIntConstant(m, "FRAMING", FRAMING) < 0 ||
        PyModule_AddIntConstant(m, "TOO_LARGE", TOO_LARGE) < 0 ||
        PyModule_AddStringConstant(m, "NGHTTP2_VERSION", NGHTTP2_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
