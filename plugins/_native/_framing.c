/* The framing check of an OTLP trace request, without building any object.
 *
 * count_spans(data) walks ExportTraceServiceRequest -> ResourceSpans -> ScopeSpans -> Span as
 * the receiver's protobuf framing check does (pipeline/_wire.py: FramingTraces): every span's
 * top-level fields are checked (tags, wire types, lengths inside their message; groups skipped
 * to their matching end), nothing inside a span's fields is read. Returns the number of spans;
 * raises ValueError for input that protobuf would refuse at that depth. A field whose wire type
 * does not match its declaration is skipped as an unknown field, as protobuf does. One
 * difference: protobuf's framing parse (a span read as a message with no known fields) lets a
 * field number 0 through after a length-delimited field; this walk refuses it, as any full
 * parse of the request does.
 */
#include "pbwire.h"

#define MAX_GROUP_DEPTH 100

static int skip_group(reader *r, uint32_t number, int depth);

/* The next tag of a message; 1 at its end. Rejects field number 0 and wire types 6 and 7. */
static int
next_tag(reader *r, uint32_t *number, int *wire)
{
    if (r->p >= r->end)
        return 1;
    uint64_t tag;
    if (read_varint(r, &tag) < 0)
        return -1;
    if (tag > 0xffffffffu || (tag >> 3) == 0)
        return bad("field number");
    *number = (uint32_t)(tag >> 3);
    *wire = (int)(tag & 7);
    if (*wire > 5)
        return bad("wire type");
    return 0;
}

/* Skips one field's value; *data is set for length-delimited fields. An end-group tag here is
 * an error (it has no group to close). */
static int
skip_value(reader *r, uint32_t number, int wire, slice *data, int depth)
{
    uint64_t v;
    switch (wire) {
    case 0:
        return read_varint(r, &v);
    case 1:
        if (r->end - r->p < 8)
            return bad("truncated fixed64");
        r->p += 8;
        return 0;
    case 2:
        if (read_varint(r, &v) < 0)
            return -1;
        if (v > (uint64_t)(r->end - r->p))
            return bad("length past the end");
        data->p = r->p;
        data->n = (Py_ssize_t)v;
        r->p += v;
        return 0;
    case 3:
        return skip_group(r, number, depth + 1);
    case 5:
        if (r->end - r->p < 4)
            return bad("truncated fixed32");
        r->p += 4;
        return 0;
    default:
        return bad("unexpected end of group");
    }
}

static int
skip_group(reader *r, uint32_t number, int depth)
{
    if (depth > MAX_GROUP_DEPTH)
        return bad("groups nested too deeply");
    for (;;) {
        uint32_t f;
        int wire, rc = next_tag(r, &f, &wire);
        if (rc)
            return rc < 0 ? -1 : bad("unterminated group");
        if (wire == 4)
            return f == number ? 0 : bad("mismatched end of group");
        slice data;
        if (skip_value(r, f, wire, &data, depth) < 0)
            return -1;
    }
}

/* Walks a message's top-level fields; for each length-delimited field numbered `want`, calls
 * `inner` on its payload (when inner is NULL, counts it). */
typedef int (*visit_fn)(slice, Py_ssize_t *);

static int
walk(slice msg, uint32_t want, visit_fn inner, Py_ssize_t *count)
{
    reader r = {msg.p, msg.p + msg.n};
    for (;;) {
        uint32_t f;
        int wire, rc = next_tag(&r, &f, &wire);
        if (rc)
            return rc < 0 ? -1 : 0;
        slice data = {NULL, 0};
        if (skip_value(&r, f, wire, &data, 0) < 0)
            return -1;
        if (f == want && wire == 2) {
            if (inner == NULL) {
                (*count)++;
            }
            else if (inner(data, count) < 0)
                return -1;
        }
    }
}

/* A span's top-level fields: the common tags and lengths (one byte each, wire types 0, 1, 2,
 * 5) are read inline; anything else goes through the general path. */
static int
span(slice msg, Py_ssize_t *count)
{
    (*count)++;
    const uint8_t *p = msg.p, *end = msg.p + msg.n;
    while (p < end) {
        uint8_t tag = *p;
        if (tag >= 0x80 || (tag >> 3) == 0)
            break; /* a multi-byte tag or field number 0: the general path decides */
        int wire = tag & 7;
        if (wire == 2) {
            if (end - p < 2 || p[1] >= 0x80)
                break;
            Py_ssize_t n = p[1];
            if (n > end - p - 2)
                return bad("length past the end");
            p += 2 + n;
        }
        else if (wire == 0) {
            const uint8_t *q = p + 1;
            while (q < end && (*q & 0x80) && q - p < 9)
                q++;
            if (q >= end || (*q & 0x80))
                break;
            p = q + 1;
        }
        else if (wire == 1) {
            if (end - p < 9)
                break;
            p += 9;
        }
        else if (wire == 5) {
            if (end - p < 5)
                break;
            p += 5;
        }
        else
            break;
    }
    slice rest = {p, end - p};
    return walk(rest, 0, NULL, count); /* field 0 never occurs: only checks the framing */
}

static int
scope_spans(slice msg, Py_ssize_t *count)
{
    return walk(msg, 2, span, count);
}

static int
resource_spans(slice msg, Py_ssize_t *count)
{
    return walk(msg, 2, scope_spans, count);
}

static PyObject *
count_spans(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    slice msg = {(const uint8_t *)view.buf, view.len};
    Py_ssize_t count = 0;
    int rc = walk(msg, 1, resource_spans, &count);
    PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    return PyLong_FromSsize_t(count);
}

static PyMethodDef methods[] = {
    {"count_spans", count_spans, METH_O,
     "count_spans(data) -> int: the spans of an encoded ExportTraceServiceRequest, its framing "
     "checked down to each span's top-level fields (ValueError when malformed)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_framing", "The framing check of OTLP trace requests in C.", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__framing(void)
{
    return PyModule_Create(&module);
}
