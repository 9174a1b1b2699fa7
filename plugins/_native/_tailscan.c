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
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
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
    int have[MAX_KEYS];
    if (nkeys > MAX_KEYS) {
        PyErr_SetString(PyExc_ValueError, "trace_facts: at most 32 keys");
        goto done;
    }
    for (Py_ssize_t k = 0; k < nkeys; k++) {
        PyObject *key = PyTuple_GET_ITEM(keys_obj, k);
        if (!PyBytes_Check(key)) {
            PyErr_SetString(PyExc_TypeError, "trace_facts: keys must be bytes");
            goto done;
        }
        kp[k] = (const uint8_t *)PyBytes_AS_STRING(key);
        kn[k] = PyBytes_GET_SIZE(key);
        have[k] = 0;
    }
    roots = PyList_New(0);
    failed = PyList_New(0);
    if (roots == NULL || failed == NULL) goto done;
    uint64_t start_min = 0, end_max = 0;
    int status_mask = 0, any = 0, missing = (int)nkeys;
    scan_state st = {0};
    Py_ssize_t n = PyList_GET_SIZE(spans);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(spans, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "trace_facts: spans must be bytes");
            goto done;
        }
        const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(item);
        reader r = {p, p + PyBytes_GET_SIZE(item)};
        field f;
        int rc, is_root = 1, has_error_key = 0, statuses = 0;
        uint64_t start = 0, end = 0, code = 0;
        while ((rc = next_field(&r, &f)) == 0) {
            switch (f.number) {
            case 4:
                if (f.wire != 2) { st.irregular = 1; break; }
                is_root = f.data.n == 0;
                break;
            case 7:
                if (f.wire != 1) { st.irregular = 1; break; }
                start = f.value;
                break;
            case 8:
                if (f.wire != 1) { st.irregular = 1; break; }
                end = f.value;
                break;
            case 15:
                if (f.wire != 2 || statuses++) { st.irregular = 1; break; }
                if (read_status(f.data, &code, &st) < 0) goto malformed;
                break;
            case 9: {
                if (f.wire != 2) { st.irregular = 1; break; }
                slice key, value;
                int has_key = 0;
                if (read_kv(f.data, &key, &value, &has_key, &st) < 0) goto malformed;
                if (st.irregular) break;
                if (key.n == error_key.len && memcmp(key.p, error_key.buf, (size_t)key.n) == 0)
                    has_error_key = 1;
                if (missing) {
                    for (Py_ssize_t k = 0; k < nkeys; k++) {
                        if (!have[k] && kn[k] == key.n && memcmp(kp[k], key.p, (size_t)key.n) == 0) {
                            have[k] = 1;
                            missing--;
                            found[k] = value;
                        }
                    }
                }
                break;
            }
            default:
                break;
            }
            if (st.irregular) break;
        }
        if (rc < 0) goto malformed;
        if (st.irregular) {
            Py_INCREF(Py_None);
            result = Py_None;
            goto done;
        }
        if (!any || start < start_min) start_min = start;
        if (!any || end > end_max) end_max = end;
        any = 1;
        int bit = status_bit(code);
        status_mask |= 1 << bit;
        if (bit == 2 || has_error_key) {
            PyObject *idx = PyLong_FromSsize_t(i);
            if (idx == NULL || PyList_Append(failed, idx) < 0) { Py_XDECREF(idx); goto done; }
            Py_DECREF(idx);
        }
        if (is_root) {
            PyObject *t = Py_BuildValue("(nKK)", i, (unsigned long long)start,
                                        (unsigned long long)end);
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
    goto done;
malformed:
    /* malformed framing: the policies read the spans themselves (and say what is wrong) */
    PyErr_Clear();
    Py_INCREF(Py_None);
    result = Py_None;
done:
    Py_XDECREF(roots);
    Py_XDECREF(failed);
    Py_XDECREF(values);
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
