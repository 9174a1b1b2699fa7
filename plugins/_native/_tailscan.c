/* _tailscan: one pass over encoded spans or requests giving what tail_sampling's policies and the
 * redaction processor's "anything to do?" check need, so neither decodes what it does not change.
 *
 * trace_facts(spans, keys, error_key)
 *     The facts of one trace (its encoded Span messages, in order) that the tail_sampling policies
 *     read: (status_mask, start_min, end_max, roots, values, failed), or None when a span is
 *     malformed or irregular (then the policies read the spans as before: nothing is guessed).
 *     - status_mask: bit c for each Status.code c in 0..2 seen (a span without a status has code
 *       0), bit 3 for any other code. The code is Status field 3 (a varint, as int32; the last
 *       one written wins).
 *     - start_min / end_max: the least start_time_unix_nano and the greatest end_time_unix_nano
 *       (fields 7 and 8, fixed64; 0 when absent; the last one written wins).
 *     - roots: (index, start, end) of each span whose parent_span_id (field 4) is empty.
 *     - values: per key of ``keys``, the encoded AnyValue of the first attribute (field 9) with
 *       that key, spans in order, attributes in order (b"" when the KeyValue has no value), or
 *       None when no span has one.
 *     - failed: the indices of the spans whose status code is 2 (ERROR) or that have an
 *       attribute ``error_key``.
 *     Irregular (None): a field read above with another wire type than its own, a KeyValue with
 *     its key or value written twice, a status written twice (decoders differ: merged or last), a Status whose code is not a varint; malformed framing
 *     (pbwire.h) anywhere in the fields read. The Python twin is
 *     plugins.tailsamplingprocessor.scan.trace_facts_python.
 *
 * decide_request(data, keys, error_key, markers, program, first_match, tool)
 *     tail_sampling's decision of a whole release in one call: every trace of an encoded
 *     request of whole traces (ExportTraceServiceRequest; spans grouped by their trace id, in
 *     order of first appearance) gets the facts above in one pass over the request, then each
 *     op of ``program`` (plugins.tailsamplingprocessor.policies.compile_program: one per policy,
 *     each answering as that policy's fast answer from the facts) is evaluated in order; with
 *     first_match, up to the first sampled one. Returns (entries, deferred): entries per trace
 *     (trace_id, span count, codes), codes the bytes of the decisions (0 sampled, 1 not sampled,
 *     2 invert sampled, 3 invert not sampled, 4 dropped, 5 error) or None when an op cannot
 *     settle it from the facts (or the trace has none); deferred (index, spans, groups) of those
 *     traces, groups (resource, resource schema url, scope, scope schema url) per span, for the
 *     policies to read. None for a request the call does not take: malformed framing, a wire
 *     type other than its field's on the path to the spans, a span not starting with its
 *     16-byte trace id (0x0a 0x10). ValueError for a malformed program (checked first, whole).
 *     tool_call_failed (op 8) reads the failed spans holding one of ``markers``, in order: with
 *     ``tool`` = (op_key, op_value, mcp_key, mcp_value, check), such a span is first checked to
 *     decode (``check`` of it wrapped in a request; ValueError: unknown) and is a tool call
 *     when the last value of op_key (or of mcp_key) is an AnyValue whose string_value is
 *     op_value (mcp_value); without ``tool``, unknown. Unknown: the policy reads the spans. The
 *     Python twin is plugins.tailsamplingprocessor.scan.decide_request_python.
 *
 * find_patterns(data, table)
 *     The bit mask of the patterns of ``table`` (at most 64, compiled by
 *     plugins.redactionprocessor.prefilter) found in ``data``: a pattern is a sequence of byte
 *     classes (each a 256-bit set) matched at consecutive bytes; flag 1 asks the match to follow
 *     a span event's name field start (0x12 and a one-byte length 1..127, or 0x12, a byte with
 *     the high bit and a length byte 1..127). Positions are filtered by the pair of bytes a match
 *     starts with (a 65,536-bit table). The Python twin is
 *     plugins.redactionprocessor.prefilter.find_patterns_python.
 *
 *     table: 8192 bytes (pair bitmap, bit a*256+b), then per pattern: length (1 byte, >= 1),
 *     flags (1 byte), length x 32 bytes of classes. ValueError for a table not so made.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

#include "pbwire.h"

#define MAX_KEYS 32

/* -- trace_facts ------------------------------------------------------------------------------ */

typedef struct {
    int irregular;          /* set on anything the facts cannot say exactly */
} scan_state;

/* The status code of a Status message (merged into *code); -1 on malformed framing. */
static int read_status(slice s, uint64_t *code, scan_state *st) {
    reader r = {s.p, s.p + s.n};
    field f;
    int rc;
    while ((rc = next_field(&r, &f)) == 0) {
        if (f.number == 3) {
            if (f.wire != 0) { st->irregular = 1; return 0; }
            *code = f.value;
        }
    }
    return rc < 0 ? -1 : 0;
}

/* A KeyValue: its key and value (value.p NULL without one); -1 malformed; irregular noted. */
static int read_kv(slice s, slice *key, slice *value, int *has_key, scan_state *st) {
    reader r = {s.p, s.p + s.n};
    field f;
    int rc, keys = 0, values = 0;
    key->p = (const uint8_t *)""; key->n = 0;
    value->p = NULL; value->n = 0;
    while ((rc = next_field(&r, &f)) == 0) {
        if (f.number == 1) {
            if (f.wire != 2 || keys++) { st->irregular = 1; return 0; }
            *key = f.data;
        } else if (f.number == 2) {
            if (f.wire != 2 || values++) { st->irregular = 1; return 0; }
            *value = f.data;
            if (value->p == NULL) value->p = (const uint8_t *)"";
        }
    }
    *has_key = 1;
    return rc < 0 ? -1 : 0;
}

static int status_bit(uint64_t code) {
    uint32_t c = (uint32_t)code;  /* an int32 enum: the low 32 bits */
    return c <= 2 ? (int)c : 3;
}

/* What one span tells the facts: SPAN_OK, SPAN_IRREGULAR or SPAN_MALFORMED (the error
 * cleared). ``found``/``have``/``missing``: the first value of each key, updated in place. */
enum { SPAN_OK = 0, SPAN_IRREGULAR = 1, SPAN_MALFORMED = 2 };

typedef struct {
    int is_root, has_error_key;
    uint64_t start, end, code;
} span_facts;

static int scan_span(const uint8_t *p, Py_ssize_t len, Py_ssize_t nkeys, const uint8_t *const *kp,
                     const Py_ssize_t *kn, slice *found, uint8_t *have, int *missing,
                     const Py_buffer *error_key, span_facts *o) {
    reader r = {p, p + len};
    field f;
    int rc, statuses = 0;
    scan_state st = {0};
    o->is_root = 1; o->has_error_key = 0;
    o->start = o->end = o->code = 0;
    while ((rc = next_field(&r, &f)) == 0) {
        switch (f.number) {
        case 4:
            if (f.wire != 2) return SPAN_IRREGULAR;
            o->is_root = f.data.n == 0;
            break;
        case 7:
            if (f.wire != 1) return SPAN_IRREGULAR;
            o->start = f.value;
            break;
        case 8:
            if (f.wire != 1) return SPAN_IRREGULAR;
            o->end = f.value;
            break;
        case 15:
            if (f.wire != 2 || statuses++) return SPAN_IRREGULAR;
            if (read_status(f.data, &o->code, &st) < 0) { PyErr_Clear(); return SPAN_MALFORMED; }
            if (st.irregular) return SPAN_IRREGULAR;
            break;
        case 9: {
            if (f.wire != 2) return SPAN_IRREGULAR;
            slice key, value;
            int has_key = 0;
            if (read_kv(f.data, &key, &value, &has_key, &st) < 0) {
                PyErr_Clear();
                return SPAN_MALFORMED;
            }
            if (st.irregular) return SPAN_IRREGULAR;
            if (key.n == error_key->len && memcmp(key.p, error_key->buf, (size_t)key.n) == 0)
                o->has_error_key = 1;
            if (*missing) {
                for (Py_ssize_t k = 0; k < nkeys; k++) {
                    if (!have[k] && kn[k] == key.n && memcmp(kp[k], key.p, (size_t)key.n) == 0) {
                        have[k] = 1;
                        (*missing)--;
                        found[k] = value;
                    }
                }
            }
            break;
        }
        default:
            break;
        }
    }
    if (rc < 0) { PyErr_Clear(); return SPAN_MALFORMED; }
    return SPAN_OK;
}

/* The keys tuple read into kp/kn (at most MAX_KEYS bytes objects); -1 with an error set. */
static int read_keys(PyObject *keys_obj, const char *who, const uint8_t **kp, Py_ssize_t *kn) {
    Py_ssize_t nkeys = PyTuple_GET_SIZE(keys_obj);
    if (nkeys > MAX_KEYS) {
        PyErr_Format(PyExc_ValueError, "%s: at most 32 keys", who);
        return -1;
    }
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        PyObject *key = PyTuple_GET_ITEM(keys_obj, k);
        if (!PyBytes_Check(key)) {
            PyErr_Format(PyExc_TypeError, "%s: keys must be bytes", who);
            return -1;
        }
        kp[k] = (const uint8_t *)PyBytes_AS_STRING(key);
        kn[k] = PyBytes_GET_SIZE(key);
    }
    return 0;
}

static PyObject *trace_facts(PyObject *self, PyObject *args) {
    PyObject *spans, *keys_obj;
    Py_buffer error_key;
    if (!PyArg_ParseTuple(args, "O!O!y*:trace_facts", &PyList_Type, &spans, &PyTuple_Type,
                          &keys_obj, &error_key))
        return NULL;
    PyObject *result = NULL, *roots = NULL, *failed = NULL, *values = NULL;
    Py_ssize_t nkeys = PyTuple_GET_SIZE(keys_obj);
    const uint8_t *kp[MAX_KEYS];
    Py_ssize_t kn[MAX_KEYS];
    slice found[MAX_KEYS];
    uint8_t have[MAX_KEYS] = {0};
    if (read_keys(keys_obj, "trace_facts", kp, kn) < 0) goto done;
    roots = PyList_New(0);
    failed = PyList_New(0);
    if (roots == NULL || failed == NULL) goto done;
    uint64_t start_min = 0, end_max = 0;
    int status_mask = 0, any = 0, missing = (int)nkeys;
    Py_ssize_t n = PyList_GET_SIZE(spans);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(spans, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "trace_facts: spans must be bytes");
            goto done;
        }
        span_facts o;
        if (scan_span((const uint8_t *)PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item), nkeys,
                      kp, kn, found, have, &missing, &error_key, &o) != SPAN_OK) {
            /* irregular or malformed: the policies read the spans themselves */
            Py_INCREF(Py_None);
            result = Py_None;
            goto done;
        }
        if (!any || o.start < start_min) start_min = o.start;
        if (!any || o.end > end_max) end_max = o.end;
        any = 1;
        int bit = status_bit(o.code);
        status_mask |= 1 << bit;
        if (bit == 2 || o.has_error_key) {
            PyObject *idx = PyLong_FromSsize_t(i);
            if (idx == NULL || PyList_Append(failed, idx) < 0) { Py_XDECREF(idx); goto done; }
            Py_DECREF(idx);
        }
        if (o.is_root) {
            PyObject *t = Py_BuildValue("(nKK)", i, (unsigned long long)o.start,
                                        (unsigned long long)o.end);
            if (t == NULL || PyList_Append(roots, t) < 0) { Py_XDECREF(t); goto done; }
            Py_DECREF(t);
        }
    }
    values = PyTuple_New(nkeys);
    if (values == NULL) goto done;
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        PyObject *v;
        if (!have[k]) {
            v = Py_None;
            Py_INCREF(v);
        } else {
            v = PyBytes_FromStringAndSize((const char *)found[k].p, found[k].n);
            if (v == NULL) goto done;
        }
        PyTuple_SET_ITEM(values, k, v);
    }
    result = Py_BuildValue("(iKKOOO)", status_mask, (unsigned long long)start_min,
                           (unsigned long long)end_max, roots, values, failed);
done:
    Py_XDECREF(roots);
    Py_XDECREF(failed);
    Py_XDECREF(values);
    PyBuffer_Release(&error_key);
    return result;
}

/* -- decide_request --------------------------------------------------------------------------- */

/* Decision codes (plugins.tailsamplingprocessor.scan.CODES); DEFER: the facts do not settle it. */
enum { D_SAMPLED = 0, D_NOT_SAMPLED = 1, D_INVERT_SAMPLED = 2, D_INVERT_NOT_SAMPLED = 3,
       D_DROPPED = 4, D_ERROR = 5, D_DEFER = -1 };
enum { OP_CONST, OP_LATENCY, OP_PROB, OP_STATUS, OP_COUNT, OP_OUTCOME, OP_SLA, OP_USAGE,
       OP_TOOLFAIL, OP_ALL };

typedef struct {
    const uint8_t *tid;             /* 16 bytes in the request */
    Py_ssize_t n;                   /* spans */
    int bad;                        /* a span irregular or malformed: no facts */
    int any, status_mask, missing;
    uint64_t start_min, end_max;
    Py_ssize_t nroots;
    uint64_t root_start, root_end;  /* of the first root */
    int failed, failed_marked;      /* spans that failed; one of them holds a tool marker */
    int tool;                       /* tool_call_failed from the failed marked spans, in order:
                                     * 0 none counted (yet), 1 a counted tool call, -1 unknown */
    PyObject *spans, *groups;       /* collected for the deferred traces */
} trace_acc;

typedef struct {
    trace_acc *t;
    Py_ssize_t n, cap;
    Py_ssize_t *slots;              /* open addressing: index + 1, 0 empty */
    Py_ssize_t nslots;
    slice *found;                   /* n x nkeys */
    uint8_t *have;
    Py_ssize_t nkeys;
} traces;

static uint64_t tid_hash(const uint8_t *tid) {
    uint64_t a, b;
    memcpy(&a, tid, 8);
    memcpy(&b, tid + 8, 8);
    uint64_t h = (a ^ (b * 0x9E3779B97F4A7C15ull)) * 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 31);
}

/* The index of trace ``tid`` (added when new); -1 with MemoryError. */
static Py_ssize_t trace_index(traces *ts, const uint8_t *tid) {
    if (ts->n * 2 >= ts->nslots) {
        Py_ssize_t nslots = ts->nslots ? ts->nslots * 2 : 64;
        Py_ssize_t *slots = PyMem_Calloc((size_t)nslots, sizeof(Py_ssize_t));
        if (slots == NULL) { PyErr_NoMemory(); return -1; }
        for (Py_ssize_t i = 0; i < ts->n; i++) {
            Py_ssize_t j = (Py_ssize_t)(tid_hash(ts->t[i].tid) & (uint64_t)(nslots - 1));
            while (slots[j]) j = (j + 1) & (nslots - 1);
            slots[j] = i + 1;
        }
        PyMem_Free(ts->slots);
        ts->slots = slots;
        ts->nslots = nslots;
    }
    Py_ssize_t j = (Py_ssize_t)(tid_hash(tid) & (uint64_t)(ts->nslots - 1));
    while (ts->slots[j]) {
        Py_ssize_t i = ts->slots[j] - 1;
        if (memcmp(ts->t[i].tid, tid, 16) == 0) return i;
        j = (j + 1) & (ts->nslots - 1);
    }
    if (ts->n == ts->cap) {
        Py_ssize_t cap = ts->cap ? ts->cap * 2 : 32;
        trace_acc *t = PyMem_Realloc(ts->t, (size_t)cap * sizeof(trace_acc));
        if (t == NULL) { PyErr_NoMemory(); return -1; }
        ts->t = t;
        slice *found = PyMem_Realloc(ts->found, (size_t)(cap * (ts->nkeys ? ts->nkeys : 1)) * sizeof(slice));
        if (found == NULL) { PyErr_NoMemory(); return -1; }
        ts->found = found;
        uint8_t *have = PyMem_Realloc(ts->have, (size_t)(cap * (ts->nkeys ? ts->nkeys : 1)));
        if (have == NULL) { PyErr_NoMemory(); return -1; }
        ts->have = have;
        ts->cap = cap;
    }
    Py_ssize_t i = ts->n++;
    trace_acc *t = &ts->t[i];
    memset(t, 0, sizeof(*t));
    t->tid = tid;
    t->missing = (int)ts->nkeys;
    memset(ts->have + i * ts->nkeys, 0, (size_t)ts->nkeys);
    ts->slots[j] = i + 1;
    return i;
}

static int contains(slice hay, const uint8_t *needle, Py_ssize_t n) {
    if (n == 0) return 1;
    if (hay.n < n) return 0;
    return memmem(hay.p, (size_t)hay.n, needle, (size_t)n) != NULL;
}

/* value_str of an encoded AnyValue, when it is exact without decoding: 1 with the string (one
 * string field of ASCII bytes, its length one byte), 0 for "" (absent, empty), -1 otherwise. */
static int simple_str(const slice *v, int have, slice *out) {
    if (!have || v->n == 0) return 0;
    const uint8_t *p = v->p;
    Py_ssize_t n = v->n;
    if (!(p[0] == 0x0A && n >= 2 && p[1] == n - 2 && p[1] < 0x80)) return -1;
    for (Py_ssize_t i = 2; i < n; i++)
        if (p[i] >= 0x80) return -1;
    out->p = p + 2;
    out->n = n - 2;
    return out->n ? 1 : 0;
}

static int bytes_eq(slice s, PyObject *b) {
    return PyBytes_GET_SIZE(b) == s.n && memcmp(PyBytes_AS_STRING(b), s.p, (size_t)s.n) == 0;
}

static PyObject *op_item(PyObject *op, Py_ssize_t i) {
    if (PyTuple_GET_SIZE(op) <= i) {
        PyErr_SetString(PyExc_ValueError, "decide_request: malformed program");
        return NULL;
    }
    return PyTuple_GET_ITEM(op, i);
}

/* One policy's decision from a trace's facts, or D_DEFER; -2 with an error set. */
static int eval_op(PyObject *op, const trace_acc *t, const slice *found, const uint8_t *have,
                   Py_ssize_t nkeys) {
    if (!PyTuple_Check(op) || PyTuple_GET_SIZE(op) < 1) goto malformed;
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(op, 0));
    if (kind == -1 && PyErr_Occurred()) return -2;
#define ITEM(i) op_item(op, (i))
#define KEY(i, var) do { PyObject *o_ = ITEM(i); if (o_ == NULL) return -2; \
        Py_ssize_t k_ = PyLong_AsSsize_t(o_); if (k_ == -1 && PyErr_Occurred()) return -2; \
        if (k_ < 0 || k_ >= nkeys) goto malformed; \
        var = k_; } while (0)
    switch (kind) {
    case OP_CONST: {
        PyObject *o = ITEM(1);
        if (o == NULL) return -2;
        long c = PyLong_AsLong(o);
        if (c == -1 && PyErr_Occurred()) return -2;
        if (c < 0 || c > D_ERROR) goto malformed;
        return (int)c;
    }
    case OP_LATENCY: {
        PyObject *a = ITEM(1), *b = ITEM(2);
        if (a == NULL || b == NULL) return -2;
        unsigned long long lo = PyLong_AsUnsignedLongLong(a), hi = PyLong_AsUnsignedLongLong(b);
        if (PyErr_Occurred()) return -2;
        uint64_t d = t->end_max > t->start_min ? t->end_max - t->start_min : 0;
        int ok = hi == 0 ? d >= lo : (lo <= d && d <= hi);
        return ok ? D_SAMPLED : D_NOT_SAMPLED;
    }
    case OP_PROB: {
        PyObject *a = ITEM(1), *b = ITEM(2);
        if (a == NULL || b == NULL) return -2;
        unsigned long long h = PyLong_AsUnsignedLongLong(a), th = PyLong_AsUnsignedLongLong(b);
        if (PyErr_Occurred()) return -2;
        for (int i = 0; i < 16; i++) h = (h ^ t->tid[i]) * 0x100000001B3ull;
        return (h <= th && th > 0) ? D_SAMPLED : D_NOT_SAMPLED;
    }
    case OP_STATUS: {
        PyObject *a = ITEM(1);
        if (a == NULL) return -2;
        long bits = PyLong_AsLong(a);
        if (bits == -1 && PyErr_Occurred()) return -2;
        return (t->status_mask & bits) ? D_SAMPLED : D_NOT_SAMPLED;
    }
    case OP_COUNT: {
        PyObject *a = ITEM(1), *b = ITEM(2);
        if (a == NULL || b == NULL) return -2;
        long long mn = PyLong_AsLongLong(a), mx = PyLong_AsLongLong(b);
        if (PyErr_Occurred()) return -2;
        return (t->n >= mn && (mx == 0 || t->n <= mx)) ? D_SAMPLED : D_NOT_SAMPLED;
    }
    case OP_OUTCOME: {
        Py_ssize_t k;
        KEY(1, k);
        PyObject *set = ITEM(2);
        if (set == NULL) return -2;
        if (!PyTuple_Check(set)) goto malformed;
        slice v;
        int r = simple_str(&found[k], have[k], &v);
        if (r <= 0) return D_DEFER;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(set); i++) {
            PyObject *b = PyTuple_GET_ITEM(set, i);
            if (!PyBytes_Check(b)) goto malformed;
            if (bytes_eq(v, b)) return D_SAMPLED;
        }
        return D_NOT_SAMPLED;
    }
    case OP_SLA: {
        Py_ssize_t k_id, k_type, k_dur;
        KEY(1, k_id);
        KEY(2, k_type);
        KEY(3, k_dur);
        PyObject *objectives = ITEM(4), *dflt = ITEM(5);
        if (objectives == NULL || dflt == NULL) return -2;
        if (!PyTuple_Check(objectives)) goto malformed;
        slice v;
        if (t->nroots > 1) return D_DEFER;
        if (simple_str(&found[k_id], have[k_id], &v) <= 0) return D_DEFER;
        if (t->nroots == 0) return D_NOT_SAMPLED;
        if (simple_str(&found[k_type], have[k_type], &v) <= 0) return D_DEFER;
        PyObject *objective = dflt;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(objectives); i++) {
            PyObject *pair = PyTuple_GET_ITEM(objectives, i);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
                !PyBytes_Check(PyTuple_GET_ITEM(pair, 0)))
                goto malformed;
            if (bytes_eq(v, PyTuple_GET_ITEM(pair, 0))) {
                objective = PyTuple_GET_ITEM(pair, 1);
                break;
            }
        }
        if (objective == Py_None) return D_NOT_SAMPLED;
        if (!PyFloat_Check(objective)) goto malformed;
        double limit = PyFloat_AS_DOUBLE(objective);
        double duration;
        int have_seconds = 0;
        if (have[k_dur] && found[k_dur].n > 0) {
            /* duration_of: a double or an integer AnyValue alone (anything else: Python) */
            const uint8_t *p = found[k_dur].p;
            Py_ssize_t n = found[k_dur].n;
            double seconds;
            if (p[0] == 0x21 && n == 9) {
                memcpy(&seconds, p + 1, 8);
            } else if (p[0] == 0x18) {
                reader r = {p + 1, p + n};
                uint64_t u;
                if (read_varint(&r, &u) < 0) { PyErr_Clear(); return D_DEFER; }
                if (r.p != r.end) return D_DEFER;
                seconds = (double)(int64_t)u;
            } else {
                return D_DEFER;
            }
            if (isfinite(seconds) && seconds >= 0) { duration = seconds; have_seconds = 1; }
        }
        if (!have_seconds) {
            uint64_t s = t->root_start, e = t->root_end;
            duration = e >= s ? (double)(e - s) / 1e9 : -((double)(s - e)) / 1e9;
        }
        return duration > limit ? D_SAMPLED : D_NOT_SAMPLED;
    }
    case OP_USAGE: {
        PyObject *ks = ITEM(1);
        if (ks == NULL) return -2;
        if (!PyTuple_Check(ks)) goto malformed;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(ks); i++) {
            Py_ssize_t k = PyLong_AsSsize_t(PyTuple_GET_ITEM(ks, i));
            if (k == -1 && PyErr_Occurred()) return -2;
            if (k < 0 || k >= nkeys) goto malformed;
            if (have[k]) return D_DEFER;
        }
        return D_NOT_SAMPLED;
    }
    case OP_TOOLFAIL:
        /* tool_call_failed: no failed span, or none holding a tool marker (the policy reads
         * only those): not sampled; else the first of those that is a tool call (``tool``
         * given) samples; unknown: the policy reads the spans */
        return t->tool < 0 ? D_DEFER : t->tool ? D_SAMPLED : D_NOT_SAMPLED;
    case OP_ALL: {
        PyObject *subs = ITEM(1), *hit = ITEM(2);
        if (subs == NULL || hit == NULL) return -2;
        if (!PyTuple_Check(subs)) goto malformed;
        long h = PyLong_AsLong(hit);
        if (h == -1 && PyErr_Occurred()) return -2;
        if (h < 0 || h > D_ERROR) goto malformed;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(subs); i++) {
            int d = eval_op(PyTuple_GET_ITEM(subs, i), t, found, have, nkeys);
            if (d == -2 || d == D_DEFER) return d;
            if (d != D_SAMPLED && d != D_INVERT_SAMPLED) return D_NOT_SAMPLED;
        }
        return (int)h;
    }
    default:
        goto malformed;
    }
#undef ITEM
#undef KEY
malformed:
    PyErr_SetString(PyExc_ValueError, "decide_request: malformed program");
    return -2;
}

/* 0 when ``op`` is an op as compile_program makes them (kinds, arity, types, key indices);
 * -1 with ValueError else. */
static int check_op(PyObject *op, Py_ssize_t nkeys, int depth) {
    static const Py_ssize_t arity[] = {2, 3, 3, 2, 3, 3, 6, 2, 1, 3};
    if (depth > 16 || !PyTuple_Check(op) || PyTuple_GET_SIZE(op) < 1 ||
        !PyLong_CheckExact(PyTuple_GET_ITEM(op, 0)))
        goto malformed;
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(op, 0));
    if (kind < OP_CONST || kind > OP_ALL || PyTuple_GET_SIZE(op) != arity[kind]) goto malformed;
    for (Py_ssize_t i = 1; i < PyTuple_GET_SIZE(op); i++) {
        PyObject *o = PyTuple_GET_ITEM(op, i);
        int want_int = 1;
        if ((kind == OP_OUTCOME && i == 2) || (kind == OP_SLA && i >= 4) || kind == OP_USAGE ||
            (kind == OP_ALL && i == 1))
            want_int = 0;
        if (want_int) {
            if (!PyLong_CheckExact(o)) goto malformed;
            int overflow = 0;
            long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
            if (overflow < 0 || (!overflow && v < 0)) goto malformed;
            if (overflow > 0 && !(kind == OP_LATENCY || kind == OP_PROB)) goto malformed;
            if (overflow > 0) {
                PyLong_AsUnsignedLongLong(o);
                if (PyErr_Occurred()) { PyErr_Clear(); goto malformed; }
            }
            if ((kind == OP_CONST || (kind == OP_ALL && i == 2)) && v > D_ERROR) goto malformed;
            if ((kind == OP_OUTCOME && i == 1) || kind == OP_SLA) {
                if (v >= nkeys) goto malformed;
            }
            continue;
        }
        if (kind == OP_OUTCOME || kind == OP_USAGE) {
            if (!PyTuple_Check(o)) goto malformed;
            for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(o); j++) {
                PyObject *x = PyTuple_GET_ITEM(o, j);
                if (kind == OP_OUTCOME ? !PyBytes_Check(x) : !PyLong_CheckExact(x)) goto malformed;
                if (kind == OP_USAGE) {
                    Py_ssize_t k = PyLong_AsSsize_t(x);
                    if (k == -1 && PyErr_Occurred()) { PyErr_Clear(); goto malformed; }
                    if (k < 0 || k >= nkeys) goto malformed;
                }
            }
        } else if (kind == OP_SLA && i == 4) {
            if (!PyTuple_Check(o)) goto malformed;
            for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(o); j++) {
                PyObject *pair = PyTuple_GET_ITEM(o, j);
                if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
                    !PyBytes_Check(PyTuple_GET_ITEM(pair, 0)) ||
                    !PyFloat_CheckExact(PyTuple_GET_ITEM(pair, 1)))
                    goto malformed;
            }
        } else if (kind == OP_SLA && i == 5) {
            if (o != Py_None && !PyFloat_CheckExact(o)) goto malformed;
        } else if (kind == OP_ALL) {
            if (!PyTuple_Check(o)) goto malformed;
            for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(o); j++)
                if (check_op(PyTuple_GET_ITEM(o, j), nkeys, depth + 1) < 0) return -1;
        }
    }
    return 0;
malformed:
    if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_OverflowError)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "decide_request: malformed program");
    }
    return -1;
}

/* The request's walk: calls ``visit`` for every span with its (resource/scope) group; 0 done, 1
 * a request this call does not take (framing, a span not starting with its 16-byte trace id). */
typedef int (*span_visit)(void *ctx, slice span, const slice group[4], Py_ssize_t group_no);

static int walk_request(const uint8_t *p, Py_ssize_t n, span_visit visit, void *ctx) {
    reader top = {p, p + n};
    field f;
    int rc;
    Py_ssize_t group_no = 0;
    while ((rc = next_field(&top, &f)) == 0) {
        if (f.number != 1) continue;
        if (f.wire != 2) return 1;
        slice group[4] = {{(const uint8_t *)"", 0}, {(const uint8_t *)"", 0},
                          {(const uint8_t *)"", 0}, {(const uint8_t *)"", 0}};
        /* the resource and its schema url first (they may follow the scope spans) */
        reader rs = {f.data.p, f.data.p + f.data.n};
        field g;
        int rc2;
        while ((rc2 = next_field(&rs, &g)) == 0) {
            if (g.number == 1 || g.number == 3) {
                if (g.wire != 2) return 1;
                group[g.number == 1 ? 0 : 1] = g.data;
            } else if (g.number == 2 && g.wire != 2) {
                return 1;
            }
        }
        if (rc2 < 0) { PyErr_Clear(); return 1; }
        rs.p = f.data.p;
        while (next_field(&rs, &g) == 0) {
            if (g.number != 2) continue;
            reader ss = {g.data.p, g.data.p + g.data.n};
            field h;
            int rc3;
            group[2].p = group[3].p = (const uint8_t *)"";
            group[2].n = group[3].n = 0;
            while ((rc3 = next_field(&ss, &h)) == 0) {
                if (h.number == 1 || h.number == 3) {
                    if (h.wire != 2) return 1;
                    group[h.number == 1 ? 2 : 3] = h.data;
                } else if (h.number == 2 && h.wire != 2) {
                    return 1;
                }
            }
            if (rc3 < 0) { PyErr_Clear(); return 1; }
            ss.p = g.data.p;
            while (next_field(&ss, &h) == 0) {
                if (h.number != 2) continue;
                if (h.data.n < 18 || h.data.p[0] != 0x0A || h.data.p[1] != 0x10) return 1;
                int v = visit(ctx, h.data, group, group_no);
                if (v) return v;
            }
            group_no++;
        }
    }
    if (rc < 0) { PyErr_Clear(); return 1; }
    return 0;
}

typedef struct {
    traces *ts;
    const uint8_t *const *kp;
    const Py_ssize_t *kn;
    const Py_buffer *error_key;
    PyObject *markers;               /* tuple of bytes */
    Py_ssize_t last;                 /* the trace of the previous span (whole traces: runs) */
    PyObject *tool;                  /* None or (op_key, op_value, mcp_key, mcp_value, check) */
    /* collecting */
    const int *codes_deferred;
    PyObject *group_obj;
    Py_ssize_t group_no;
} walk_ctx;

/* AnyValue.string_value of an encoded AnyValue (value.p NULL: a KeyValue without a value):
 * 1 with it in *out ("" when another member of the oneof is set last), -1 when a field of the
 * oneof has another wire type than its own (the policy reads it). */
static int anyvalue_string(slice value, slice *out) {
    static const int wires[8] = {-1, 2, 0, 0, 1, 2, 2, 2};
    out->p = (const uint8_t *)"";
    out->n = 0;
    if (value.p == NULL) return 1;
    reader r = {value.p, value.p + value.n};
    field f;
    int rc;
    uint32_t last = 0;
    slice str = {(const uint8_t *)"", 0};
    while ((rc = next_field(&r, &f)) == 0) {
        if (f.number >= 1 && f.number <= 7) {
            if (f.wire != wires[f.number]) return -1;
            last = f.number;
            if (f.number == 1) str = f.data;
        }
    }
    if (rc < 0) { PyErr_Clear(); return -1; }
    if (last == 1) *out = str;
    return 1;
}

/* is_tool_call of a span (the last value of each key, as AttrView.get): 1, 0, or -1 unknown;
 * -2 with an error set. The span is first checked to decode (``check`` of it wrapped in a
 * request: ValueError, unknown). */
static int span_is_tool_call(slice span, PyObject *tool) {
    PyObject *op_key = PyTuple_GET_ITEM(tool, 0), *op_value = PyTuple_GET_ITEM(tool, 1);
    PyObject *mcp_key = PyTuple_GET_ITEM(tool, 2), *mcp_value = PyTuple_GET_ITEM(tool, 3);
    PyObject *check = PyTuple_GET_ITEM(tool, 4);
    /* ExportTraceServiceRequest{resource_spans{scope_spans{spans}}} around the span */
    uint8_t head[3 * 11];
    Py_ssize_t at = 0;
    /* sizes: l3 = span.n; l2 = 1 + len(varint(l3)) + l3; l1 = 1 + len(varint(l2)) + l2 */
    Py_ssize_t l3 = span.n;
    Py_ssize_t v3 = 1; for (uint64_t x = (uint64_t)l3; x >= 0x80; x >>= 7) v3++;
    Py_ssize_t l2 = 1 + v3 + l3;
    Py_ssize_t v2 = 1; for (uint64_t x = (uint64_t)l2; x >= 0x80; x >>= 7) v2++;
    Py_ssize_t l1 = 1 + v2 + l2;
    Py_ssize_t sizes[3] = {l1, l2, l3};
    const uint8_t tags[3] = {0x0A, 0x12, 0x12};
    for (int level = 0; level < 3; level++) {
        head[at++] = tags[level];
        uint64_t x = (uint64_t)sizes[level];
        while (x >= 0x80) { head[at++] = (uint8_t)(x | 0x80); x >>= 7; }
        head[at++] = (uint8_t)x;
    }
    PyObject *wrapped = PyBytes_FromStringAndSize(NULL, at + span.n);
    if (wrapped == NULL) return -2;
    memcpy(PyBytes_AS_STRING(wrapped), head, (size_t)at);
    memcpy(PyBytes_AS_STRING(wrapped) + at, span.p, (size_t)span.n);
    PyObject *res = PyObject_CallOneArg(check, wrapped);
    Py_DECREF(wrapped);
    if (res == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ValueError)) { PyErr_Clear(); return -1; }
        return -2;
    }
    Py_DECREF(res);
    reader r = {span.p, span.p + span.n};
    field f;
    slice op = {NULL, 0}, mcp = {NULL, 0};
    int has_op = 0, has_mcp = 0;
    while (next_field(&r, &f) == 0) {
        if (f.number != 9 || f.wire != 2) continue;
        slice key, value;
        int has_key = 0;
        scan_state st = {0};
        if (read_kv(f.data, &key, &value, &has_key, &st) < 0) { PyErr_Clear(); return -1; }
        if (st.irregular) return -1;
        if (bytes_eq(key, op_key)) { op = value; has_op = 1; }
        if (bytes_eq(key, mcp_key)) { mcp = value; has_mcp = 1; }
    }
    slice v;
    if (has_op) {
        if (anyvalue_string(op, &v) < 0) return -1;
        if (bytes_eq(v, op_value)) return 1;
    }
    if (has_mcp) {
        if (anyvalue_string(mcp, &v) < 0) return -1;
        if (bytes_eq(v, mcp_value)) return 1;
    }
    return 0;
}

static int visit_scan(void *vctx, slice span, const slice group[4], Py_ssize_t group_no) {
    (void)group; (void)group_no;
    walk_ctx *c = vctx;
    traces *ts = c->ts;
    const uint8_t *tid = span.p + 2;
    Py_ssize_t i = c->last;
    if (i < 0 || memcmp(ts->t[i].tid, tid, 16) != 0) {
        i = trace_index(ts, tid);
        if (i < 0) return -1;
        c->last = i;
    }
    trace_acc *t = &ts->t[i];
    t->n++;
    if (t->bad) return 0;
    span_facts o;
    slice *found = ts->found + i * ts->nkeys;
    uint8_t *have = ts->have + i * ts->nkeys;
    if (scan_span(span.p, span.n, ts->nkeys, c->kp, c->kn, found, have, &t->missing, c->error_key,
                  &o) != SPAN_OK) {
        t->bad = 1;
        return 0;
    }
    if (!t->any || o.start < t->start_min) t->start_min = o.start;
    if (!t->any || o.end > t->end_max) t->end_max = o.end;
    t->any = 1;
    int bit = status_bit(o.code);
    t->status_mask |= 1 << bit;
    if (bit == 2 || o.has_error_key) {
        t->failed++;
        int marked = 0;
        for (Py_ssize_t m = 0; m < PyTuple_GET_SIZE(c->markers); m++) {
            PyObject *mk = PyTuple_GET_ITEM(c->markers, m);
            if (contains(span, (const uint8_t *)PyBytes_AS_STRING(mk), PyBytes_GET_SIZE(mk))) {
                marked = 1;
                break;
            }
        }
        if (marked) {
            t->failed_marked = 1;
            if (t->tool == 0) {
                if (c->tool == Py_None) {
                    t->tool = -1;
                } else {
                    int r = span_is_tool_call(span, c->tool);
                    if (r == -2) return -1;
                    if (r != 0) t->tool = r;
                }
            }
        }
    }
    if (o.is_root) {
        if (t->nroots == 0) { t->root_start = o.start; t->root_end = o.end; }
        t->nroots++;
    }
    return 0;
}

static int visit_collect(void *vctx, slice span, const slice group[4], Py_ssize_t group_no) {
    walk_ctx *c = vctx;
    traces *ts = c->ts;
    const uint8_t *tid = span.p + 2;
    Py_ssize_t i = c->last;
    if (i < 0 || memcmp(ts->t[i].tid, tid, 16) != 0) {
        i = trace_index(ts, tid);  /* found: every trace was seen by the scan */
        if (i < 0) return -1;
        c->last = i;
    }
    trace_acc *t = &ts->t[i];
    if (t->spans == NULL) return 0;
    if (c->group_obj == NULL || c->group_no != group_no) {
        Py_XDECREF(c->group_obj);
        c->group_obj = Py_BuildValue("(y#y#y#y#)", group[0].p, group[0].n, group[1].p, group[1].n,
                                     group[2].p, group[2].n, group[3].p, group[3].n);
        if (c->group_obj == NULL) return -1;
        c->group_no = group_no;
    }
    PyObject *b = PyBytes_FromStringAndSize((const char *)span.p, span.n);
    if (b == NULL) return -1;
    int rc = PyList_Append(t->spans, b);
    Py_DECREF(b);
    if (rc < 0 || PyList_Append(t->groups, c->group_obj) < 0) return -1;
    return 0;
}

static PyObject *decide_request(PyObject *self, PyObject *args) {
    Py_buffer data, error_key;
    PyObject *keys_obj, *markers, *program, *tool;
    int first_match;
    if (!PyArg_ParseTuple(args, "y*O!y*O!O!pO:decide_request", &data, &PyTuple_Type, &keys_obj,
                          &error_key, &PyTuple_Type, &markers, &PyTuple_Type, &program,
                          &first_match, &tool))
        return NULL;
    PyObject *result = NULL, *out = NULL;
    const uint8_t *kp[MAX_KEYS];
    Py_ssize_t kn[MAX_KEYS];
    traces ts = {0};
    PyObject *distinct[16];
    int ndistinct = 0;
    signed char *codes = NULL;
    Py_ssize_t npol = PyTuple_GET_SIZE(program);
    if (read_keys(keys_obj, "decide_request", kp, kn) < 0) goto done;
    for (Py_ssize_t m = 0; m < PyTuple_GET_SIZE(markers); m++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(markers, m))) {
            PyErr_SetString(PyExc_TypeError, "decide_request: markers must be bytes");
            goto done;
        }
    }
    if (tool != Py_None) {
        if (!PyTuple_Check(tool) || PyTuple_GET_SIZE(tool) != 5 ||
            !PyBytes_Check(PyTuple_GET_ITEM(tool, 0)) || !PyBytes_Check(PyTuple_GET_ITEM(tool, 1)) ||
            !PyBytes_Check(PyTuple_GET_ITEM(tool, 2)) || !PyBytes_Check(PyTuple_GET_ITEM(tool, 3)) ||
            !PyCallable_Check(PyTuple_GET_ITEM(tool, 4))) {
            PyErr_SetString(PyExc_TypeError,
                            "decide_request: tool must be None or (bytes, bytes, bytes, bytes, callable)");
            goto done;
        }
    }
    ts.nkeys = PyTuple_GET_SIZE(keys_obj);
    for (Py_ssize_t k = 0; k < npol; k++)
        if (check_op(PyTuple_GET_ITEM(program, k), ts.nkeys, 0) < 0) goto done;
    walk_ctx c = {&ts, kp, kn, &error_key, markers, -1, tool, NULL, NULL, -1};
    int rc = walk_request(data.buf, data.len, visit_scan, &c);
    if (rc < 0) goto done;
    if (rc > 0) { Py_INCREF(Py_None); result = Py_None; goto done; }
    codes = PyMem_Malloc((size_t)(npol ? npol : 1));
    if (codes == NULL) { PyErr_NoMemory(); goto done; }
    out = PyList_New(ts.n);
    if (out == NULL) goto done;
    int deferred = 0;
    for (Py_ssize_t i = 0; i < ts.n; i++) {
        trace_acc *t = &ts.t[i];
        PyObject *code = NULL;
        Py_ssize_t nres = 0;
        if (!t->bad) {
            const slice *found = ts.found + i * ts.nkeys;
            const uint8_t *have = ts.have + i * ts.nkeys;
            for (Py_ssize_t k = 0; k < npol; k++) {
                int d = eval_op(PyTuple_GET_ITEM(program, k), t, found, have, ts.nkeys);
                if (d == -2) goto done;
                if (d == D_DEFER) { nres = -1; break; }
                codes[nres++] = (signed char)d;
                if (first_match && (d == D_SAMPLED || d == D_INVERT_SAMPLED)) break;
            }
        } else {
            nres = -1;
        }
        if (nres >= 0) {
            for (int j = 0; j < ndistinct; j++) {
                if (PyBytes_GET_SIZE(distinct[j]) == nres &&
                    memcmp(PyBytes_AS_STRING(distinct[j]), codes, (size_t)nres) == 0) {
                    code = distinct[j];
                    Py_INCREF(code);
                    break;
                }
            }
            if (code == NULL) {
                code = PyBytes_FromStringAndSize((const char *)codes, nres);
                if (code == NULL) goto done;
                if (ndistinct < 16) { distinct[ndistinct++] = code; Py_INCREF(code); }
            }
        } else {
            deferred = 1;
            t->spans = PyList_New(0);
            t->groups = PyList_New(0);
            if (t->spans == NULL || t->groups == NULL) goto done;
        }
        PyObject *tid = PyBytes_FromStringAndSize((const char *)t->tid, 16);
        if (tid == NULL) { Py_XDECREF(code); goto done; }
        PyObject *entry = PyTuple_New(3);
        if (entry == NULL) { Py_DECREF(tid); Py_XDECREF(code); goto done; }
        PyTuple_SET_ITEM(entry, 0, tid);
        PyTuple_SET_ITEM(entry, 1, PyLong_FromSsize_t(t->n));
        if (PyTuple_GET_ITEM(entry, 1) == NULL) { Py_DECREF(entry); Py_XDECREF(code); goto done; }
        if (code == NULL) { Py_INCREF(Py_None); code = Py_None; }
        PyTuple_SET_ITEM(entry, 2, code);
        PyList_SET_ITEM(out, i, entry);
    }
    PyObject *collected = PyList_New(0);
    if (collected == NULL) goto done;
    if (deferred) {
        c.last = -1;
        rc = walk_request(data.buf, data.len, visit_collect, &c);
        Py_XDECREF(c.group_obj);
        if (rc != 0) {  /* the request was read once already: only an error can stop it */
            Py_DECREF(collected);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "decide_request: walk");
            goto done;
        }
        for (Py_ssize_t i = 0; i < ts.n; i++) {
            trace_acc *t = &ts.t[i];
            if (t->spans == NULL) continue;
            PyObject *e = Py_BuildValue("(nOO)", i, t->spans, t->groups);
            if (e == NULL || PyList_Append(collected, e) < 0) {
                Py_XDECREF(e);
                Py_DECREF(collected);
                goto done;
            }
            Py_DECREF(e);
        }
    }
    result = PyTuple_Pack(2, out, collected);
    Py_DECREF(collected);
done:
    for (int j = 0; j < ndistinct; j++) Py_DECREF(distinct[j]);
    for (Py_ssize_t i = 0; i < ts.n; i++) {
        Py_XDECREF(ts.t[i].spans);
        Py_XDECREF(ts.t[i].groups);
    }
    Py_XDECREF(out);
    PyMem_Free(codes);
    PyMem_Free(ts.t);
    PyMem_Free(ts.slots);
    PyMem_Free(ts.found);
    PyMem_Free(ts.have);
    PyBuffer_Release(&data);
    PyBuffer_Release(&error_key);
    return result;
}

/* -- find_patterns ---------------------------------------------------------------------------- */

#define PAIR_BYTES 8192
#define MAX_PATTERNS 64
#define MAX_SHIFT_WINDOW 32  /* at most this many bytes per window (a shift fits a byte) */
#define SHIFT_MIN_DATA 4096  /* shorter data: the plain scan (filling the table costs ~64 KiB) */
#define SHIFT_BUDGET 8192    /* byte pairs written into the table at most, else the plain scan */

typedef struct {
    int len, flags;
    const uint8_t *classes;  /* len x 32 bytes */
} pattern;

static inline int in_class(const uint8_t *cls, uint8_t b) { return (cls[b >> 3] >> (b & 7)) & 1; }

static int after_event_name_tag(const uint8_t *p, Py_ssize_t i) {
    if (i >= 2 && p[i - 2] == 0x12 && p[i - 1] >= 1 && p[i - 1] <= 0x7f) return 1;
    if (i >= 3 && p[i - 3] == 0x12 && p[i - 2] >= 0x80 && p[i - 1] >= 1 && p[i - 1] <= 0x7f)
        return 1;
    return 0;
}

static inline int match_at(const pattern *pt, const uint8_t *p, Py_ssize_t n, Py_ssize_t i) {
    if (pt->len > n - i) return 0;
    for (int c = 0; c < pt->len; c++)
        if (!in_class(pt->classes + 32 * c, p[i + c])) return 0;
    return !(pt->flags & 1) || after_event_name_tag(p, i);
}

/* The bytes of a class, in increasing order, into out; their number. */
static int class_members(const uint8_t *cls, uint8_t *out) {
    int n = 0;
    for (int k = 0; k < 32; k++) {
        unsigned bits = cls[k];
        while (bits) {
            out[n++] = (uint8_t)(k * 8 + __builtin_ctz(bits));
            bits &= bits - 1;
        }
    }
    return n;
}

/* The skip table of a scan by windows of ``len`` bytes (the shortest pattern's length, 3 to
   MAX_SHIFT_WINDOW): for each pair of bytes (a << 8 | b), the least d = len - 1 - q over the
   patterns and the positions q in 1 .. len-1 such that a is in the pattern's class q-1 and b in
   its class q; len - 1 when there is none. A window whose last two bytes are such a pair can be
   moved by d without passing a match start. 0 when filling it would cost more than it saves
   (classes of many bytes: the plain scan is used). */
static int build_shift(const pattern *pats, int npat, int len, uint8_t *shift) {
    long budget = SHIFT_BUDGET;
    memset(shift, len - 1, 65536);
    for (int j = 0; j < npat; j++) {
        for (int q = 1; q < len; q++) {
            const uint8_t *ca = pats[j].classes + 32 * (q - 1), *cb = pats[j].classes + 32 * q;
            uint8_t d = (uint8_t)(len - 1 - q);
            uint8_t as[256], bs[256];
            int na = class_members(ca, as), nb = class_members(cb, bs);
            budget -= (long)na * nb;
            if (budget < 0) return 0;
            for (int x = 0; x < na; x++) {
                uint8_t *row = shift + ((unsigned)as[x] << 8);
                for (int y = 0; y < nb; y++)
                    if (row[bs[y]] > d) row[bs[y]] = d;
            }
        }
    }
    return 1;
}

static PyObject *find_patterns(PyObject *self, PyObject *args) {
    Py_buffer data, table;
    if (!PyArg_ParseTuple(args, "y*y*:find_patterns", &data, &table)) return NULL;
    PyObject *result = NULL;
    pattern pats[MAX_PATTERNS];
    int npat = 0;
    const uint8_t *t = table.buf;
    Py_ssize_t tn = table.len, off = PAIR_BYTES;
    if (tn < PAIR_BYTES) goto bad_table;
    while (off < tn) {
        if (npat == MAX_PATTERNS || tn - off < 2) goto bad_table;
        int len = t[off], flags = t[off + 1];
        if (len < 1 || (Py_ssize_t)len * 32 > tn - off - 2) goto bad_table;
        pats[npat].len = len;
        pats[npat].flags = flags;
        pats[npat].classes = t + off + 2;
        npat++;
        off += 2 + (Py_ssize_t)len * 32;
    }
    uint64_t all = npat == 64 ? ~(uint64_t)0 : (((uint64_t)1 << npat) - 1), mask = 0;
    const uint8_t *p = data.buf, *pair = t;
    Py_ssize_t n = data.len;
    /* the skip table of the windows (see build_shift), when the data is long enough for it to
       pay and the patterns allow it; else every position is tried */
    int minlen = npat ? MAX_SHIFT_WINDOW : 0;
    for (int j = 0; j < npat; j++)
        if (pats[j].len < minlen) minlen = pats[j].len;
    uint8_t *shift = NULL;
    if (minlen >= 3 && n >= SHIFT_MIN_DATA) {
        shift = PyMem_Malloc(65536);
        if (shift == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        if (!build_shift(pats, npat, minlen, shift)) {
            PyMem_Free(shift);
            shift = NULL;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    /* the patterns each first byte can start */
    uint64_t first[256];
    memset(first, 0, sizeof(first));
    for (int j = 0; j < npat; j++) {
        uint8_t members[256];
        int m = class_members(pats[j].classes, members);
        for (int k = 0; k < m; k++) first[members[k]] |= (uint64_t)1 << j;
    }
    if (shift != NULL) {
        /* Wu-Manber: the window p[i .. i+minlen) is tried at i only when its last two bytes can
           end the first minlen bytes of a pattern there; else it moves by the least distance at
           which they could. No match can start past n - minlen (every pattern is longer). */
        Py_ssize_t i = 0, last = n - minlen;
        while (i <= last && mask != all) {
            unsigned s = shift[((unsigned)p[i + minlen - 2] << 8) | p[i + minlen - 1]];
            if (s) {
                i += s;
                continue;
            }
            unsigned idx = ((unsigned)p[i] << 8) | p[i + 1];
            if ((pair[idx >> 3] >> (idx & 7)) & 1) {
                uint64_t todo = first[p[i]] & ~mask;
                while (todo) {
                    int j = __builtin_ctzll(todo);
                    todo &= todo - 1;
                    if (match_at(&pats[j], p, n, i)) mask |= (uint64_t)1 << j;
                }
            }
            i++;
        }
    } else {
        for (Py_ssize_t i = 0; i < n && mask != all; i++) {
            if (i + 1 < n) {
                unsigned idx = ((unsigned)p[i] << 8) | p[i + 1];
                if (!((pair[idx >> 3] >> (idx & 7)) & 1)) continue;
            }
            uint64_t todo = first[p[i]] & ~mask;
            while (todo) {
                int j = __builtin_ctzll(todo);
                todo &= todo - 1;
                if (match_at(&pats[j], p, n, i)) mask |= (uint64_t)1 << j;
            }
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(shift);
    result = PyLong_FromUnsignedLongLong((unsigned long long)mask);
    goto done;
bad_table:
    PyErr_SetString(PyExc_ValueError, "find_patterns: malformed table");
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&table);
    return result;
}

static PyMethodDef methods[] = {
    {"trace_facts", trace_facts, METH_VARARGS,
     "trace_facts(spans, keys, error_key) -> facts tuple or None (see the module's comment)"},
    {"decide_request", decide_request, METH_VARARGS,
     "decide_request(data, keys, error_key, markers, program, first_match, tool) -> (per trace "
     "(trace_id, spans, codes or None), the deferred traces' (index, spans, groups)) or None"},
    {"find_patterns", find_patterns, METH_VARARGS,
     "find_patterns(data, table) -> the bit mask of the table's patterns found in data"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tailscan",
    "Facts of encoded traces for tail_sampling; the redaction processor's pattern prefilter.",
    -1, methods,
};

PyMODINIT_FUNC PyInit__tailscan(void) { return PyModule_Create(&module); }
