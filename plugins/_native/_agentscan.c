/* The agentmetrics connector's per-span work, in C.
 *
 * Scanner.scan(request) walks an encoded ExportTraceServiceRequest once (the protobuf wire
 * format read by hand, every length checked against its enclosing field), classifies each span
 * as plugins/agentmetricsconnector/connector.py does, and returns the measurements already
 * aggregated per series for the request: the Python side merges a few dozen series instead of
 * looking at thousands of spans. Spans whose metrics need what only a full decode gives (root
 * spans: the workflow's outcome may come from exception events; non-ASCII status codes), and
 * the spans the Python side joins across spans and requests or classifies with its dialect
 * tables (failed spans, tool calls, spans with one of the "defer" attribute keys, a name or an
 * instrumentation scope name starting with one of the "defer" prefixes) are returned as
 * offsets for the Python path, with the offsets of their resource and scope messages.
 *
 * Malformed input raises ValueError; nothing is read outside the buffer.
 */
#include "pbwire.h"
#include <structmember.h>
#include <math.h>
#include <stddef.h>

#include "_recency.h"
#include "_runid.h"

/* attribute keys, in the order the Python side passes them */
enum {
    K_OP, K_METHOD, K_MCP_SERVER, K_SERVER_ADDRESS, K_TOOL, K_ERROR_TYPE,
    K_A2A_TYPE, K_A2A_RECIPIENT, K_A2A_PRIORITY, K_A2A_SENDER, K_A2A_STATUS,
    K_HTTP_METHOD, K_HTTP_METHOD_OLD, K_HTTP_STATUS, K_HTTP_STATUS_OLD, K_HTTP_ROUTE,
    K_DB_SYSTEM, K_DB_SYSTEM_LEGACY, K_ERROR_SEVERITY, K_ERROR_RECOVERABLE,
    K_WF_NAME, K_WF_ID, K_WF_TYPE, K_WF_OUTCOME, K_WF_TIER, K_WF_AGENT, K_AGENT,
    K_WF_DURATION, K_WF_SECONDARY, K_AGENT_NAME,
    NKEYS
};

/* metrics, in the order the Python side expects them */
enum {
    M_TOOL_CALLS, M_TOOL_DURATION, M_A2A_SENT, M_A2A_RECEIVED, M_HTTP_DURATION, M_ERRORS,
    M_WF_EXECUTIONS, M_WF_DURATION, M_A2A_LATENCY, M_FN_CALLS, M_FN_DURATION, NMETRICS
};
/* histogram bounds sets */
enum { B_TOOL, B_HTTP, B_WORKFLOW, B_A2A, NBOUNDS };

#define KIND_SERVER 2
#define KIND_PRODUCER 4
#define KIND_CONSUMER 5
#define STATUS_ERROR 2
#define MAX_BUCKETS 32
#define MAX_EXEMPLARS 16
#define CACHE_SLOTS 8192 /* power of two */
#define MAX_DEFER_KEYS 64
#define MAX_SHAPE_KEYS 1024
#define WF_ROOT_MEMO 32

/* -- Memory: the joiner's bounded memories (calls.py _Memory.items) --------------------------
 *
 * The recency memory of _recency.h (shared with _tracewire's LateMemory) as a Python type
 * with the OrderedDict operations the joiner uses on its memories of settled layers, settled
 * keys and failed parents (calls.py: [] =, get, in, [], len, move_to_end, popitem(last=False),
 * items and keys oldest first, del, clear) and prune(now); putting a key makes it the newest
 * and drops the oldest beyond `size`, which leaves what the joiner's trimmed OrderedDict
 * holds, in the same order. The C settle paths (memory_put, memory_trim) write it directly.
 * Its keys are plain: bytes, str, int or None, or tuples of them; another key raises
 * TypeError.
 *
 * Each key is held packed, as one bytes object of its encoding (mem_encode: a tag per item,
 * its length, its data; self-delimiting, so two keys are equal exactly when their encodings
 * are): a (trace, span) key is one 64-byte object instead of a tuple and a bytes object per
 * entry (and no reference to the trace id), a ("call", trace, id) key one object instead of a
 * tuple and a str. The table hashes the key's Python hash; a key is looked up by its encoding
 * written into one scratch bytes object of the module (mem_probe: no allocation), compared by
 * length and memcmp (no Python code runs while the memory is searched). items, keys, iteration
 * and popitem give the keys back decoded (equal to those put). The C join's own keys are
 * encoded and hashed from the data they are made of, without making them (see mem_leaf). */

typedef struct {
    PyObject_HEAD
    rc_memory mem;
    /* the trace filter (NULL: off; on from the first lookup by leaves, memory_contains_leaves):
     * a bit per trace word (tf_word) of every key put since the last rebuild, so that a lookup
     * of a key whose trace was never put answers "not there" without hashing the key (the
     * join's late check of every layer). A superset: bits are not cleared when keys go; the
     * filter is built again from the keys held once TF_REBUILD more were put (tf_note). */
    uint64_t *tf;
    Py_ssize_t tf_puts; /* keys put since it was built */
    int tf_none;        /* a key without a trace word was put (such lookups are not filtered) */
} MemoryObject;

static PyTypeObject MemoryType;

enum { MK_BYTES = 'b', MK_STR = 's', MK_INT = 'i', MK_NONE = 'n', MK_TUPLE = 't' };

/* n as a LEB128 length at out (when it fits before end): the bytes it takes */
static inline Py_ssize_t mem_put_len(char *out, const char *end, size_t n) {
    Py_ssize_t k = 0;
    do {
        unsigned char b = (unsigned char)(n & 0x7f);
        n >>= 7;
        if (n) b |= 0x80;
        if (out + k < end) out[k] = (char)b;
        k++;
    } while (n);
    return k;
}

/* one item of a key (bytes, str, int, None) encoded at out (as far as it fits before end):
 * the bytes it takes, 0 not such an item, -1 on error */
static Py_ssize_t mem_encode_leaf(PyObject *o, char *out, const char *end) {
    PyTypeObject *t = Py_TYPE(o);
    const char *data;
    size_t n;
    char tag;
    int kind = 0;
    if (t == &PyBytes_Type) {
        tag = MK_BYTES;
        data = PyBytes_AS_STRING(o);
        n = (size_t)PyBytes_GET_SIZE(o);
    } else if (t == &PyUnicode_Type) {
        if (PyUnicode_READY(o) < 0) return -1;
        tag = MK_STR;
        kind = PyUnicode_KIND(o); /* (a ready str's kind is the least that holds it) */
        data = (const char *)PyUnicode_DATA(o);
        n = (size_t)PyUnicode_GET_LENGTH(o) * (size_t)kind;
    } else if (o == Py_None) {
        if (out < end) out[0] = MK_NONE;
        return 1;
    } else if (t == &PyLong_Type) {
        size_t bits = _PyLong_NumBits(o);
        if (bits == (size_t)-1 && PyErr_Occurred()) return -1;
        n = bits / 8 + 1; /* (the least two's complement bytes, little-endian) */
        Py_ssize_t k = 1 + mem_put_len(out + 1, end, n);
        if (out + k + (Py_ssize_t)n <= end) {
            out[0] = MK_INT;
            if (_PyLong_AsByteArray((PyLongObject *)o, (unsigned char *)out + k, n, 1, 1) < 0) return -1;
        }
        return k + (Py_ssize_t)n;
    } else {
        return 0;
    }
    Py_ssize_t k = 1;
    if (kind) {
        if (out + 1 < end) out[1] = (char)kind;
        k = 2;
    }
    if (out < end) out[0] = tag;
    k += mem_put_len(out + k, end, n);
    if (out + k + (Py_ssize_t)n <= end) memcpy(out + k, data, n);
    return k + (Py_ssize_t)n;
}

/* key's encoding written at out (when it fits in cap bytes): its length (more than cap: call
 * again with that room), -1 with TypeError for a key that is not plain (or another error) */
static Py_ssize_t mem_encode(PyObject *key, char *out, Py_ssize_t cap) {
    const char *end = out + cap;
    Py_ssize_t k;
    /* the joiner's keys first, the encoding below written without its checks: a tuple of
     * bytes and 1-byte-kind str of fewer than 128 bytes each that fits */
    if (PyTuple_CheckExact(key) && PyTuple_GET_SIZE(key) < 128 && cap >= 2) {
        Py_ssize_t n = PyTuple_GET_SIZE(key), i = 0;
        out[0] = MK_TUPLE;
        out[1] = (char)n;
        for (k = 2; i < n; i++) {
            PyObject *o = PyTuple_GET_ITEM(key, i);
            Py_ssize_t len;
            if (Py_IS_TYPE(o, &PyBytes_Type)) {
                len = PyBytes_GET_SIZE(o);
                if (len >= 128 || k + 2 + len > cap) break;
                out[k] = MK_BYTES;
                out[k + 1] = (char)len;
                memcpy(out + k + 2, PyBytes_AS_STRING(o), (size_t)len);
                k += 2 + len;
            } else if (Py_IS_TYPE(o, &PyUnicode_Type) && PyUnicode_IS_READY(o) &&
                       PyUnicode_KIND(o) == PyUnicode_1BYTE_KIND) {
                len = PyUnicode_GET_LENGTH(o);
                if (len >= 128 || k + 3 + len > cap) break;
                out[k] = MK_STR;
                out[k + 1] = 1;
                out[k + 2] = (char)len;
                memcpy(out + k + 3, PyUnicode_DATA(o), (size_t)len);
                k += 3 + len;
            } else {
                break;
            }
        }
        if (i == n) return k;
    }
    if (!PyTuple_CheckExact(key)) {
        k = mem_encode_leaf(key, out, end);
        if (k == 0) goto bad;
        return k;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(key);
    if (out < end) out[0] = MK_TUPLE;
    k = 1 + mem_put_len(out + 1, end, (size_t)n);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t at = k < cap ? k : cap;
        Py_ssize_t one = mem_encode_leaf(PyTuple_GET_ITEM(key, i), out + at, end);
        if (one == 0) goto bad;
        if (one < 0) return -1;
        k += one;
    }
    return k;
bad:
    if (!PyErr_Occurred())
        PyErr_Format(PyExc_TypeError, "a memory's key is bytes, str, int, None or a tuple of them, not %.100s",
                     Py_TYPE(key)->tp_name);
    return -1;
}

/* the LEB128 length at *at (before end): 0, or -1 malformed */
static int mem_get_len(const unsigned char **at, const unsigned char *end, size_t *n) {
    size_t v = 0;
    for (int shift = 0; *at < end && shift < 64; shift += 7) {
        unsigned char b = *(*at)++;
        v |= (size_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *n = v;
            return 0;
        }
    }
    return -1;
}

static PyObject *mem_decode_leaf(const unsigned char **at, const unsigned char *end) {
    if (*at >= end) goto bad;
    unsigned char tag = *(*at)++;
    if (tag == MK_NONE) Py_RETURN_NONE;
    int kind = 0;
    if (tag == MK_STR) {
        if (*at >= end) goto bad;
        kind = *(*at)++;
    }
    size_t n;
    if (mem_get_len(at, end, &n) < 0 || n > (size_t)(end - *at)) goto bad;
    const unsigned char *data = *at;
    *at += n;
    if (tag == MK_BYTES) return PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)n);
    if (tag == MK_STR && (kind == 1 || kind == 2 || kind == 4) && n % (size_t)kind == 0)
        return PyUnicode_FromKindAndData(kind, data, (Py_ssize_t)(n / (size_t)kind));
    if (tag == MK_INT) return _PyLong_FromByteArray(data, n, 1, 1);
bad:
    PyErr_SetString(PyExc_SystemError, "a memory's key encoding is malformed");
    return NULL;
}

/* the key a blob (mem_encode's bytes) encodes: a new reference, NULL on error */
static PyObject *mem_decode(PyObject *blob) {
    const unsigned char *at = (const unsigned char *)PyBytes_AS_STRING(blob);
    const unsigned char *end = at + PyBytes_GET_SIZE(blob);
    if (at < end && *at == MK_TUPLE) {
        at++;
        size_t n;
        if (mem_get_len(&at, end, &n) < 0 || n > (size_t)(end - at) + 1) {
            PyErr_SetString(PyExc_SystemError, "a memory's key encoding is malformed");
            return NULL;
        }
        PyObject *out = PyTuple_New((Py_ssize_t)n);
        if (out == NULL) return NULL;
        for (size_t i = 0; i < n; i++) {
            PyObject *item = mem_decode_leaf(&at, end);
            if (item == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            PyTuple_SET_ITEM(out, (Py_ssize_t)i, item);
        }
        return out;
    }
    return mem_decode_leaf(&at, end);
}

/* The trace filter (see MemoryObject). A key's trace word: the two halves of its first bytes
 * item of 16 bytes (a trace id: (trace, parent), ("call", trace, id)) xor'ed, the same function
 * of the key whether read from its encoding (a put) or from the leaves of a lookup, so that a
 * key put always has its bit set. Trace ids are random (or 64-bit ids in the low half): their
 * words spread over the bits; ids made to collide only make lookups take the full path. */
static inline uint64_t tf_word(const unsigned char *id) {
    uint64_t a, b;
    memcpy(&a, id, 8);
    memcpy(&b, id + 8, 8);
    return a ^ b;
}

#define TF_SHIFT 20 /* 2**20 bits (128 KiB) */
#define TF_REBUILD(m) (2 * (m)->mem.len + 4096)

static inline size_t tf_index(uint64_t w) { return (size_t)((w * 0x9E3779B97F4A7C15ULL) >> (64 - TF_SHIFT)); }

/* the trace word of an encoded key in *w: 1, or 0 when it has none */
static int tf_word_of_blob(PyObject *blob, uint64_t *w) {
    const unsigned char *at = (const unsigned char *)PyBytes_AS_STRING(blob);
    const unsigned char *end = at + PyBytes_GET_SIZE(blob);
    size_t items = 1;
    if (at < end && *at == MK_TUPLE) {
        at++;
        if (mem_get_len(&at, end, &items) < 0) return 0;
    }
    for (size_t i = 0; i < items && at < end; i++) {
        unsigned char tag = *at++;
        if (tag == MK_NONE) continue;
        if (tag == MK_STR) {
            if (at >= end) return 0;
            at++; /* (its kind) */
        }
        size_t n;
        if (mem_get_len(&at, end, &n) < 0 || n > (size_t)(end - at)) return 0;
        if (tag == MK_BYTES && n == 16) {
            *w = tf_word(at);
            return 1;
        }
        at += n;
    }
    return 0;
}

static inline void tf_set(MemoryObject *m, PyObject *blob) {
    uint64_t w;
    if (tf_word_of_blob(blob, &w)) {
        size_t i = tf_index(w);
        m->tf[i >> 6] |= 1ull << (i & 63);
    } else {
        m->tf_none = 1;
    }
}

/* the filter (made if need be) built again from the keys held: 0, or -1 (MemoryError) */
static int tf_build(MemoryObject *m) {
    if (m->tf == NULL && (m->tf = PyMem_Calloc((size_t)1 << (TF_SHIFT - 6), sizeof(uint64_t))) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (m->tf_puts || m->tf_none) memset(m->tf, 0, ((size_t)1 << (TF_SHIFT - 6)) * sizeof(uint64_t));
    m->tf_puts = 0;
    m->tf_none = 0;
    for (Py_ssize_t x = m->mem.head; x >= 0; x = m->mem.nodes[x].next) tf_set(m, m->mem.nodes[x].key);
    return 0;
}

/* a new key (its blob) put into m: its bit set (the filter built again when due) */
static inline void tf_note(MemoryObject *m, PyObject *blob) {
    if (m->tf == NULL) return;
    tf_set(m, blob);
    if (++m->tf_puts > TF_REBUILD(m)) (void)tf_build(m); /* (the filter made already: cannot fail) */
}

static int mem_eq(PyObject *a, PyObject *b);

/* rc_put on a Memory, its trace filter told of a new key */
static int mem_rc_put(MemoryObject *m, PyObject *blob, Py_hash_t hash, PyObject *value) {
    int done = rc_put(&m->mem, blob, hash, value, mem_eq);
    if (done == 0) tf_note(m, blob);
    return done;
}

/* two blobs equal (the hashes already equal): their lengths and bytes */
static int mem_eq(PyObject *a, PyObject *b) {
    return a == b || (PyBytes_GET_SIZE(a) == PyBytes_GET_SIZE(b) &&
                      memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(a)) == 0);
}

#define MEM_PROBE_CAP 256
static PyObject *mem_probe; /* the scratch blob of lookups (the module's, never handed out) */

/* key's blob to look it up with (borrowed: the scratch blob, or a new blob in *made when the
 * key is longer than the scratch's room) and its hash in *hash; NULL on error (TypeError for a
 * key that is not plain) */
static PyObject *mem_blob(PyObject *key, Py_hash_t *hash, PyObject **made) {
    *made = NULL;
    if (mem_probe == NULL && (mem_probe = PyBytes_FromStringAndSize(NULL, MEM_PROBE_CAP)) == NULL)
        return NULL;
    Py_ssize_t n = mem_encode(key, PyBytes_AS_STRING(mem_probe), MEM_PROBE_CAP);
    if (n < 0) return NULL;
    PyObject *blob = mem_probe;
    if (n > MEM_PROBE_CAP) {
        if ((blob = *made = PyBytes_FromStringAndSize(NULL, n)) == NULL) return NULL;
        mem_encode(key, PyBytes_AS_STRING(blob), n);
    } else {
        Py_SET_SIZE(mem_probe, n); /* (its room stays MEM_PROBE_CAP + 1) */
    }
    *hash = PyObject_Hash(key);
    if (*hash == -1) {
        Py_CLEAR(*made);
        return NULL;
    }
    return blob;
}

/* the node of key, -1 not there, -2 on error */
static Py_ssize_t mem_node(MemoryObject *m, PyObject *key) {
    Py_hash_t hash;
    PyObject *made, *blob = mem_blob(key, &hash, &made);
    if (blob == NULL) return -2;
    Py_ssize_t x = rc_node_of(&m->mem, blob, hash, mem_eq);
    Py_XDECREF(made);
    return x;
}

/* m[key] = value as the newest entry (the oldest dropped beyond size): 0, or -1 */
static int mem_put(MemoryObject *m, PyObject *key, PyObject *value) {
    Py_hash_t hash;
    PyObject *made, *blob = mem_blob(key, &hash, &made);
    if (blob == NULL) return -1;
    Py_ssize_t at = rc_find(&m->mem, blob, hash, mem_eq);
    if (at >= 0) { /* (there: no new blob) */
        Py_XDECREF(made);
        Py_ssize_t x = m->mem.table[at].index - 1;
        rc_move_to_end(&m->mem, x);
        Py_SETREF(m->mem.nodes[x].value, Py_NewRef(value));
        return 0;
    }
    if (made == NULL &&
        (made = PyBytes_FromStringAndSize(PyBytes_AS_STRING(blob), PyBytes_GET_SIZE(blob))) == NULL)
        return -1;
    int done = mem_rc_put(m, made, hash, value);
    Py_DECREF(made);
    return done;
}

/* the entries, oldest first, as a new list of (key, value) (items) or of keys */
static PyObject *mem_list(MemoryObject *m, int items) {
    rc_memory *mem = &m->mem;
    PyObject *out = PyList_New(mem->len);
    if (out == NULL) return NULL;
    Py_ssize_t i = 0;
    for (Py_ssize_t x = mem->head; x >= 0; x = mem->nodes[x].next, i++) {
        PyObject *key = mem_decode(mem->nodes[x].key), *item = key;
        if (key != NULL && items) {
            item = PyTuple_Pack(2, key, mem->nodes[x].value);
            Py_DECREF(key);
        }
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

static PyObject *mem_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"size", NULL};
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "n:Memory", kw, &size)) return NULL;
    MemoryObject *m = (MemoryObject *)type->tp_alloc(type, 0);
    if (m == NULL) return NULL;
    if (rc_init(&m->mem, size) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return (PyObject *)m;
}

static int mem_traverse(MemoryObject *m, visitproc visit, void *arg) {
    for (Py_ssize_t x = m->mem.head; x >= 0; x = m->mem.nodes[x].next) {
        Py_VISIT(m->mem.nodes[x].key);
        Py_VISIT(m->mem.nodes[x].value);
    }
    return 0;
}

static int mem_clear_refs(MemoryObject *m) {
    rc_clear(&m->mem);
    return 0;
}

static void mem_dealloc(MemoryObject *m) {
    PyObject_GC_UnTrack(m);
    rc_free(&m->mem);
    PyMem_Free(m->tf);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static Py_ssize_t mem_len(MemoryObject *m) { return m->mem.len; }

static int mem_contains(MemoryObject *m, PyObject *key) {
    Py_ssize_t x = mem_node(m, key);
    return x == -2 ? -1 : x >= 0;
}

static PyObject *mem_getitem(MemoryObject *m, PyObject *key) {
    Py_ssize_t x = mem_node(m, key);
    if (x == -2) return NULL;
    if (x < 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return Py_NewRef(m->mem.nodes[x].value);
}

/* m[key] = value: the newest (the oldest dropped beyond size); del m[key] */
static int mem_setitem(MemoryObject *m, PyObject *key, PyObject *value) {
    if (value != NULL) return mem_put(m, key, value);
    Py_hash_t hash;
    PyObject *made, *blob = mem_blob(key, &hash, &made);
    if (blob == NULL) return -1;
    Py_ssize_t at = rc_find(&m->mem, blob, hash, mem_eq);
    Py_XDECREF(made);
    if (at < 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return -1;
    }
    rc_delete(&m->mem, at);
    return 0;
}

static PyObject *mem_get(MemoryObject *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(key, default=None)");
        return NULL;
    }
    Py_ssize_t x = mem_node(m, args[0]);
    if (x == -2) return NULL;
    if (x < 0) return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    return Py_NewRef(m->mem.nodes[x].value);
}

static PyObject *mem_move_to_end(MemoryObject *m, PyObject *key) {
    Py_ssize_t x = mem_node(m, key);
    if (x == -2) return NULL;
    if (x < 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    rc_move_to_end(&m->mem, x);
    Py_RETURN_NONE;
}

/* popitem(last=True): the newest (key, value) taken out, with last=False the oldest */
static PyObject *mem_popitem(MemoryObject *m, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"last", NULL};
    int last = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|p:popitem", kw, &last)) return NULL;
    rc_memory *mem = &m->mem;
    if (mem->len == 0) {
        PyErr_SetString(PyExc_KeyError, "the memory is empty");
        return NULL;
    }
    rc_node *nd = &mem->nodes[last ? mem->tail : mem->head];
    PyObject *key, *value;
    PyObject *decoded = mem_decode(nd->key); /* (before it is taken: nothing changed on error) */
    if (decoded == NULL) return NULL;
    rc_take(mem, rc_find(mem, nd->key, nd->hash, mem_eq), &key, &value);
    PyObject *out = PyTuple_Pack(2, decoded, value);
    Py_DECREF(decoded);
    Py_DECREF(key);
    Py_DECREF(value);
    return out;
}

/* prune(now): the oldest entries whose expiry (their value's first item, a float) is not
 * after now dropped, up to the first that is (calls.py _Memory.prune) */
static PyObject *mem_prune(MemoryObject *m, PyObject *arg) {
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred()) return NULL;
    rc_memory *mem = &m->mem;
    while (mem->len) {
        PyObject *value = mem->nodes[mem->head].value, *expiry;
        if (!PyTuple_Check(value) || PyTuple_GET_SIZE(value) < 1 ||
            !(PyFloat_CheckExact(expiry = PyTuple_GET_ITEM(value, 0)) || PyLong_CheckExact(expiry))) {
            PyErr_SetString(PyExc_TypeError, "prune: the values are (expiry, ...), expiry a float");
            return NULL;
        }
        double e = PyFloat_CheckExact(expiry) ? PyFloat_AS_DOUBLE(expiry) : PyLong_AsDouble(expiry);
        if (e == -1.0 && PyErr_Occurred()) return NULL;
        if (e > now) break;
        rc_drop_oldest(mem, mem_eq);
    }
    Py_RETURN_NONE;
}

static PyObject *mem_clear_method(MemoryObject *m, PyObject *unused) {
    rc_clear(&m->mem);
    Py_RETURN_NONE;
}

/* the entries, oldest first, as a list of (key, value) */
static PyObject *mem_items(MemoryObject *m, PyObject *unused) { return mem_list(m, 1); }

/* the keys, oldest first, as a list */
static PyObject *mem_keys(MemoryObject *m, PyObject *unused) { return mem_list(m, 0); }

/* an iterator over the keys, oldest first (of a list made now: the memory may change while it
 * is iterated) */
static PyObject *mem_iter(MemoryObject *m) {
    PyObject *keys = mem_list(m, 0);
    if (keys == NULL) return NULL;
    PyObject *it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

static PyObject *mem_sizeof(MemoryObject *m, PyObject *unused) {
    return PyLong_FromSize_t((size_t)Py_TYPE(m)->tp_basicsize + rc_allocated(&m->mem) +
                             (m->tf ? ((size_t)1 << (TF_SHIFT - 3)) : 0));
}

static PyObject *mem_get_size(MemoryObject *m, void *closure) { return PyLong_FromSsize_t(m->mem.size); }

/* size = n: the oldest dropped beyond it */
static int mem_set_size(MemoryObject *m, PyObject *value, void *closure) {
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "size cannot be deleted");
        return -1;
    }
    Py_ssize_t size = PyLong_AsSsize_t(value);
    if (size == -1 && PyErr_Occurred()) return -1;
    m->mem.size = size < 0 ? 0 : size;
    while (m->mem.len > m->mem.size) rc_drop_oldest(&m->mem, mem_eq);
    return 0;
}

static PyMethodDef mem_methods[] = {
    {"get", (PyCFunction)(void (*)(void))mem_get, METH_FASTCALL, "get(key, default=None)"},
    {"move_to_end", (PyCFunction)mem_move_to_end, METH_O, "move_to_end(key): key becomes the newest"},
    {"popitem", (PyCFunction)(void (*)(void))mem_popitem, METH_VARARGS | METH_KEYWORDS,
     "popitem(last=True): the newest (key, value) taken out; last=False: the oldest"},
    {"prune", (PyCFunction)mem_prune, METH_O, "prune(now): the oldest expired entries dropped"},
    {"clear", (PyCFunction)mem_clear_method, METH_NOARGS, "every entry dropped"},
    {"items", (PyCFunction)mem_items, METH_NOARGS, "the (key, value) pairs, oldest first"},
    {"keys", (PyCFunction)mem_keys, METH_NOARGS, "the keys, oldest first"},
    {"__sizeof__", (PyCFunction)mem_sizeof, METH_NOARGS, "bytes allocated"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef mem_getset[] = {
    {"size", (getter)mem_get_size, (setter)mem_set_size, "the most entries kept", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods mem_as_sequence = {.sq_contains = (objobjproc)mem_contains};

static PyMappingMethods mem_as_mapping = {
    .mp_length = (lenfunc)mem_len,
    .mp_subscript = (binaryfunc)mem_getitem,
    .mp_ass_subscript = (objobjargproc)mem_setitem,
};

static PyTypeObject MemoryType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "plugins._native._agentscan.Memory",
    .tp_basicsize = sizeof(MemoryObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Memory(size): a joiner's bounded memory (key -> value, at most size entries, the "
              "least recently put dropped first), as its trimmed OrderedDict.",
    .tp_new = mem_new,
    .tp_dealloc = (destructor)mem_dealloc,
    .tp_traverse = (traverseproc)mem_traverse,
    .tp_clear = (inquiry)mem_clear_refs,
    .tp_methods = mem_methods,
    .tp_getset = mem_getset,
    .tp_as_sequence = &mem_as_sequence,
    .tp_as_mapping = &mem_as_mapping,
    .tp_iter = (getiterfunc)mem_iter,
};

/* the C settle paths on a memory (a Memory, or the Python twin's OrderedDict) */
static int memory_contains(PyObject *items, PyObject *key) {
    if (Py_IS_TYPE(items, &MemoryType)) return mem_contains((MemoryObject *)items, key);
    return PyDict_Contains(items, key);
}

/* the value of key (borrowed; NULL: not there or an error, PyErr_Occurred tells) */
static PyObject *memory_get(PyObject *items, PyObject *key) {
    if (Py_IS_TYPE(items, &MemoryType)) {
        Py_ssize_t x = mem_node((MemoryObject *)items, key);
        return x >= 0 ? ((MemoryObject *)items)->mem.nodes[x].value : NULL;
    }
    return PyDict_GetItemWithError(items, key);
}

static int memory_check(PyObject *items) {
    return Py_IS_TYPE(items, &MemoryType) || PyDict_Check(items);
}

typedef struct {
    Py_hash_t hash;
    uint8_t *raw;
    Py_ssize_t n;
    PyObject *text; /* owned */
} cache_slot;

/* a shape the Python side learned (join_shapes): its key (resource, scope, shape) and series */
typedef struct learned_slot {
    uint64_t hash;
    PyObject *key; /* owned tuple of three bytes; NULL: a free slot */
    long series;
} learned_slot;
#define LEARNED_SLOTS 4096 /* power of two */
#define FAILED_MISSES 1024 /* power of two */

/* What the settle paths (settle_simple, settle_layers, settle_packed, settle_due) read on every
 * call, given once by configure_settle (calls.py CallJoiner.configure_native) and again when
 * the joiner's memories change: the bounds of join_settled, join_keys and `marked` (the
 * joiner's memory of failed parents), the memories' time to live (a settled layer's or key's
 * value is (now + ttl, None), a mark's expiry now + marked_ttl), the error classifier and its
 * tables (owned references; marked NULL: not configured). `now` and the values made of it
 * are kept while the calls give the same `now` (one settle of the joiner). */
typedef struct {
    PyObject *marked, *classify, *timeouts, *recoverable;
    Py_ssize_t size, keys_size, marked_size;
    double ttl, marked_ttl;
    double now;
    PyObject *value, *expiry; /* (now + ttl, None), now + marked_ttl; NULL: not made yet */
    int settling;             /* a settle call under way (configure_settle refused) */
} settle_config;

typedef struct {
    PyObject_HEAD
    slice keys[NKEYS];
    PyObject *key_bytes; /* owned tuple keeping the key buffers alive */
    PyObject *tool_op;   /* bytes: encoded AnyValue */
    PyObject *tool_method;
    PyObject *producers;   /* OrderedDict or Memory span id -> start (ns): the A2A producer cache */
    Py_ssize_t cache_size; /* its bound (0: no cache) */
    double bounds[NBOUNDS][MAX_BUCKETS];
    int nbounds[NBOUNDS];
    PyObject *wf_prefix; /* bytes */
    PyObject *outcomes;  /* tuple of str: the valid workflow outcomes */
    int max_exemplars;
    PyObject *recoverable; /* frozenset of str */
    PyObject *llm_ops;     /* frozenset of str */
    PyObject *s_unknown, *s_none, *s_error, *s_success, *s_other, *s_true, *s_false, *s_failed,
        *s_processed, *s_mcp, *s_a2a, *s_http, *s_database, *s_llm, *s_agent, *s_empty;
    PyObject *s_class[10]; /* "0xx" .. "9xx" */
    PyObject *s_success_outcome, *s_failed_outcome, *s_timeout, *s_cancelled, *s_critical, *s_workflow;
    cache_slot *cache;
    Py_ssize_t cache_used;
    /* per scan key, the last value cached_value gave for it (see key_value): its encoding (the
     * cache slot's copy) and text (borrowed from the slot); forgotten with the cache */
    struct { const uint8_t *raw; Py_ssize_t n; PyObject *text; } value_memo[NKEYS];
    PyObject *spill; /* list: decoded values that did not fit in the cache this scan */
    /* spans left to Python: attribute keys, span-name and scope-name prefixes (bytes) */
    slice defer_keys[MAX_DEFER_KEYS];
    int ndefer_keys;
    PyObject *defer_keys_obj, *defer_names, *defer_scopes; /* owned tuples of bytes */
    /* the attribute keys a deferred span's shape holds (see span_shape); none configured: no
     * shapes (the fallback items have their short form) */
    slice shape_keys[MAX_SHAPE_KEYS];
    int nshape_keys;
    /* 1: only the key's presence is part of the shape, not its value (a per-run id the
     * memoized readings do not depend on: its value would make every run's spans a new shape) */
    uint8_t shape_presence[MAX_SHAPE_KEYS];
    PyObject *shape_keys_obj; /* owned tuple of bytes */
    /* every distinct configured key (keys, defer keys, shape keys) by content, for parse_span
     * and the shapes: one lookup per attribute key (see keytab_find); NULL until initialised */
    struct keyent *keytab;
    int16_t *keyslot; /* keytab's hash table, KEYSLOTS (see keytab_probe): keytab index, -1: none */
    uint8_t *scratch;         /* the shape being built */
    /* the tool-call join's common case (see "the join's common case" below): the Python side's
     * learned shapes, its series table and its memory of settled layers (all Python-owned, read
     * here; the memory is written by settle_simple as the Python side would) */
    PyObject *join_shapes;  /* dict (resource, scope, shape) -> int, or NULL: no packing */
    PyObject *join_series;  /* list: series id -> (mcp, label a, label b, status) */
    PyObject *join_settled; /* the joiner's Memory (the twin's OrderedDict) (trace, span) -> (expiry, None) */
    /* the id-keyed join (see "the join's common case"): the learned readings by series
     * (side, tool, tool type, mcp, server, retry, agent, call id key, JSON-RPC id key), the
     * joiner's memory of settled call and JSON-RPC keys, the id attributes' keys; NULL: off */
    PyObject *join_learned; /* list, parallel to join_series */
    PyObject *join_keys;    /* Memory / OrderedDict ("call", trace, id) / ("rpc", trace hex, id, tool) -> (expiry, None) */
    PyObject *join_id_keys; /* tuple of bytes */
    PyObject *s_call, *s_rpc, *s_retry, *s_function;
    Py_ssize_t join_late;   /* layers the last scan found late (take_late) */
    /* the shapes learned() found in join_shapes, by content (see learned): forgotten by
     * forget_shapes(), which the Python side calls when one leaves join_shapes or maps to another
     * series (one added changes nothing found) */
    struct learned_slot *learned_cache;
    Py_ssize_t learned_used;
    /* failed_learned's misses (the hashes of its keys not in join_shapes) while join_shapes has
     * the size failed_miss_size (a shape added makes it grow; one removed, forget_shapes) */
    uint64_t failed_miss[FAILED_MISSES];
    Py_ssize_t failed_miss_size;
    /* learned's misses (the hashes, | 1, of shapes not in join_shapes, looked up there) while
     * join_shapes has the size learned_miss_size, as failed_miss (a failed span's plain shape is
     * looked up at every scan: its exception type makes the key learned) */
    uint64_t learned_miss[FAILED_MISSES];
    Py_ssize_t learned_miss_size;
    PyObject *failures;     /* dict or NULL: the last scan's failed spans' facts (take_failures) */
    PyObject *roots;        /* dict or NULL: the last scan's failed workflow roots' facts (take_roots) */
    /* the calls settle_simple counted since the last take_calls() (an aggs, see below) */
    PyObject *calls_index;
    void *calls_entries;
    Py_ssize_t calls_n, calls_cap;
    void *calls_memo; /* memo_slot[MEMO_SLOTS]: get_entry's direct-mapped memo of calls_index */
    Py_ssize_t scratch_cap;
    /* a scan's work buffers, kept from one scan to the next (taken by a scan, given back at its
     * end; see scan_buffers_take): its held items, A2A producers and consumers, the join's
     * groups (finish_join) and get_entry's memo (emptied) */
    void *keep_held, *keep_a2a[2], *keep_groups, *keep_memo;
    Py_ssize_t keep_held_cap, keep_a2a_cap[2], keep_groups_cap;
    /* bit b set: a defer_names prefix starts with byte b (all set: an empty prefix) */
    uint8_t defer_first[32];
    /* the settle paths' configuration (configure_settle): read once, kept until given again */
    settle_config settle;
    /* the workflow roots the last scan counted, for put_roots: their trace ids (end to end in
     * wf_root_ids) and (workflow type, agent id) tuples (owned); wf_root_last the last such
     * tuple made (owned), shared by the next root of the same type and agent */
    struct wf_root *wf_roots;
    Py_ssize_t nwf_roots, capwf_roots;
    uint8_t *wf_root_ids;
    Py_ssize_t nwf_root_ids, capwf_root_ids;
    PyObject *wf_root_last;
    PyObject *wf_root_memo[WF_ROOT_MEMO]; /* owned (NULL: not made yet); see remember_root */
    int wf_root_memo_next;
} Scanner;

/* -- wire reading: pbwire.h -------------------------------------------------------------- */

/* A configured key is found by its words (see keyent): those of its head in an attribute entry
 * of the usual encoding, H = 0x0a, n (a one-byte length, or 0x80 | n & 0x7f for a key too long
 * for one: never in such an entry), the key: H's first 8 bytes (zero-padded) and its last 8 (0
 * when it has fewer): read from the entry as it is (the usual encoding, a key of 6 bytes or
 * more: two loads), so that a key is told by one slot of a table and two comparisons (its length
 * is in the first word); made from the key alone for the keys found otherwise (key_words). */
#define KEYSLOTS 4096 /* keyslot's size: a power of two, at least 2 x (NKEYS + MAX_DEFER_KEYS + MAX_SHAPE_KEYS) */
#define KEYSLOT_SHIFT 52 /* 64 - log2(KEYSLOTS) */

static inline __attribute__((always_inline)) size_t key_hash(uint64_t w0, uint64_t w1) {
    return (size_t)(((w0 ^ (w1 << 23 | w1 >> 41)) * 0x9E3779B97F4A7C15ULL) >> KEYSLOT_SHIFT);
}

/* the words of key k (as an entry of the usual encoding would give them, see above) */
static void key_words(slice k, uint64_t *w0, uint64_t *w1) {
    uint8_t h[16] = {0x0a, (uint8_t)(k.n < 0x80 ? k.n : 0x80 | (k.n & 0x7f))};
    if (k.n >= 8) {
        uint64_t a;
        memcpy(&a, k.p, 8);
        *w0 = (uint64_t)h[0] | (uint64_t)h[1] << 8 | a << 16;
        memcpy(w1, k.p + k.n - 8, 8);
        return;
    }
    if (k.n) memcpy(h + 2, k.p, (size_t)k.n); /* (H whole: at most 9 bytes) */
    memcpy(w0, h, 8);
    if (k.n >= 6) memcpy(w1, h + k.n + 2 - 8, 8);
    else *w1 = 0;
}

/* (inline, a word at a time: attribute keys are short, a call to memcmp costs more; the
 * bytes after the last whole word are compared as the last word, overlapping the one before) */
static inline int slice_eq(slice a, slice b) {
    if (a.n != b.n) return 0;
    Py_ssize_t n = a.n;
    if (n >= 8) {
        uint64_t x, y;
        for (Py_ssize_t i = 0; i + 8 <= n; i += 8) {
            memcpy(&x, a.p + i, 8);
            memcpy(&y, b.p + i, 8);
            if (x != y) return 0;
        }
        memcpy(&x, a.p + n - 8, 8);
        memcpy(&y, b.p + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        uint32_t x, y, u, v;
        memcpy(&x, a.p, 4);
        memcpy(&y, b.p, 4);
        memcpy(&u, a.p + n - 4, 4);
        memcpy(&v, b.p + n - 4, 4);
        return x == y && u == v;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (a.p[i] != b.p[i]) return 0;
    return 1;
}

/* -- the configured keys by content ------------------------------------------------------- */

/* A distinct configured attribute key: the scan keys equal to it, whether it is a defer key, and
 * what it is to a shape (is_shape_key's answer), so that an attribute key is looked up once
 * (keytab_probe, keytab_find) instead of compared with every key in each table. */
typedef struct keyent {
    uint64_t w0, w1; /* its words (see key_words) */
    slice key;       /* (into key_bytes, defer_keys_obj or shape_keys_obj) */
    uint32_t kmask;  /* bit k: keys[k] equals it */
    uint32_t kmore;  /* kmask but k0 */
    int8_t k0;       /* the first k of kmask, NKEYS: none (see span_info) */
    uint16_t voff, poff; /* the offsets of values[k0] and present[k0] in a span_info */
    uint64_t wm;     /* a key of 15 bytes or more: its bytes 6 to 14 */
    uint8_t defer;   /* a defer key */
    uint8_t shape;   /* 0: no shape key, 1: its entry is part of the shape, 2: its presence */
    uint8_t ascii;   /* the key is ASCII */
} keyent;

/* the configured key at the head of the attribute entry d (of the usual encoding: tag 0x0a, the
 * key's one-byte length klen, at least 6, and the key), whose words w0 and w1 are d's first 8
 * bytes and the 8 ending with the key, from slot i (key_hash(w0, w1)) on; NULL: none. (parse_span
 * looks at slot i itself: most keys of none end there, the table being mostly empty, and a
 * configured key up to 14 bytes long is equal when its words are; a longer one also compared
 * between them here.) */
static __attribute__((noinline)) const keyent *keytab_probe(const Scanner *self, const uint8_t *d, Py_ssize_t klen,
                                                             uint64_t w0, uint64_t w1, size_t i) {
    for (;; i = (i + 1) & (KEYSLOTS - 1)) {
        int x = self->keyslot[i];
        if (x < 0) return NULL;
        const keyent *e = &self->keytab[x];
        if (e->w0 == w0 && e->w1 == w1) {
            Py_ssize_t j = 8;
            for (; j < klen - 6; j += 8) { /* (H's bytes between the words) */
                uint64_t a, b;
                memcpy(&a, d + j, 8);
                memcpy(&b, e->key.p + j - 2, 8);
                if (a != b) break;
            }
            if (j >= klen - 6) return e;
        }
    }
}

/* the configured key equal to k, or NULL */
static const keyent *keytab_find(const Scanner *self, slice k) {
    uint64_t w0, w1;
    key_words(k, &w0, &w1);
    for (size_t i = key_hash(w0, w1);; i = (i + 1) & (KEYSLOTS - 1)) {
        int x = self->keyslot[i];
        if (x < 0) return NULL;
        const keyent *e = &self->keytab[x];
        if (e->w0 == w0 && e->w1 == w1 && slice_eq(e->key, k)) return e;
    }
}

/* -- decoded label values ----------------------------------------------------------------- */

/* An encoded AnyValue as a label string (as plugins._spanview.value_str): strings as they are,
 * integers in decimal, booleans true/false, doubles with %g, "" otherwise. New reference. */
static PyObject *decode_value(Scanner *self, slice raw) {
    reader r = {raw.p, raw.p + raw.n};
    field f;
    int rc;
    /* the last value field wins (a oneof) */
    int which = 0;
    slice text = {NULL, 0};
    uint64_t num = 0;
    while ((rc = next_field(&r, &f)) == 0) {
        if (f.number == 1 && f.wire == 2) { which = 1; text = f.data; }
        else if (f.number == 2 && f.wire == 0) { which = 2; num = f.value; }
        else if (f.number == 3 && f.wire == 0) { which = 3; num = f.value; }
        else if (f.number == 4 && f.wire == 1) { which = 4; num = f.value; }
        else if (f.number >= 1 && f.number <= 7) { which = 0; }
    }
    if (rc < 0) return NULL;
    switch (which) {
    case 1: return PyUnicode_DecodeUTF8((const char *)text.p, text.n, "replace");
    case 2: return Py_NewRef(num ? self->s_true : self->s_false);
    case 3: return PyUnicode_FromFormat("%lld", (long long)(int64_t)num);
    case 4: {
        double d;
        memcpy(&d, &num, 8);
        char *s = PyOS_double_to_string(d, 'g', 6, 0, NULL);
        if (s == NULL) return NULL;
        PyObject *o = PyUnicode_FromString(s);
        PyMem_Free(s);
        return o;
    }
    default: return Py_NewRef(self->s_empty);
    }
}

static uint64_t hash_mem(const uint8_t *p, Py_ssize_t n, uint64_t h);

static Py_hash_t hash_bytes(slice s) { return (Py_hash_t)(hash_mem(s.p, s.n, 0) & 0x7fffffffffffffffLL); }

static void cache_clear(Scanner *self) {
    if (self->cache == NULL) return;
    for (Py_ssize_t i = 0; i < CACHE_SLOTS; i++) {
        cache_slot *c = &self->cache[i];
        if (c->raw != NULL) { PyMem_Free(c->raw); c->raw = NULL; Py_CLEAR(c->text); }
    }
    self->cache_used = 0;
    memset(self->value_memo, 0, sizeof(self->value_memo));
}

/* decode_value, remembered per distinct encoding. Borrowed reference, valid until the end of
 * the scan: the table is only cleared between scans (scan_begin); when it is too full to take
 * more during a scan, the value is kept alive in self->spill, emptied by scan_begin. *slot:
 * the cache slot holding it (NULL: spilled, or an error). */
static PyObject *cached_value(Scanner *self, slice raw, cache_slot **slot);

/* cached_value of scan key k's value: the same text, without hashing the encoding when it is
 * the one the key had last (the values of a key repeat from span to span) */
static __attribute__((noinline)) PyObject *key_value_cached(Scanner *self, int k, slice raw);

static inline __attribute__((always_inline)) PyObject *key_value(Scanner *self, int k, slice raw) {
    if (self->value_memo[k].text != NULL && slice_eq((slice){self->value_memo[k].raw, self->value_memo[k].n}, raw))
        return self->value_memo[k].text;
    return key_value_cached(self, k, raw);
}

/* key_value past its memo */
static __attribute__((noinline)) PyObject *key_value_cached(Scanner *self, int k, slice raw) {
    cache_slot *slot;
    PyObject *text = cached_value(self, raw, &slot);
    if (slot != NULL) {
        self->value_memo[k].raw = slot->raw;
        self->value_memo[k].n = slot->n;
        self->value_memo[k].text = slot->text;
    }
    return text;
}

static PyObject *cached_value(Scanner *self, slice raw, cache_slot **slot) {
    Py_hash_t h = hash_bytes(raw);
    Py_ssize_t i = h & (CACHE_SLOTS - 1);
    *slot = NULL;
    for (;;) {
        cache_slot *c = &self->cache[i];
        if (c->raw == NULL) break;
        if (c->hash == h && c->n == raw.n && memcmp(c->raw, raw.p, raw.n) == 0) {
            *slot = c;
            return c->text;
        }
        i = (i + 1) & (CACHE_SLOTS - 1);
    }
    PyObject *text = decode_value(self, raw);
    if (text == NULL) return NULL;
    if (self->cache_used >= CACHE_SLOTS * 3 / 4) {
        int rc = PyList_Append(self->spill, text);
        Py_DECREF(text);
        return rc < 0 ? NULL : text;
    }
    cache_slot *c = &self->cache[i];
    c->raw = PyMem_Malloc(raw.n ? raw.n : 1);
    if (c->raw == NULL) { Py_DECREF(text); PyErr_NoMemory(); return NULL; }
    if (raw.n) memcpy(c->raw, raw.p, raw.n);
    c->n = raw.n;
    c->hash = h;
    c->text = text;
    self->cache_used++;
    *slot = c;
    return text;
}

static int scan_begin(Scanner *self) {
    if (self->cache_used >= CACHE_SLOTS / 2) cache_clear(self);
    return PyList_SetSlice(self->spill, 0, PY_SSIZE_T_MAX, NULL);
}

/* -- per-request aggregation -------------------------------------------------------------- */

/* an exemplar's ids: offsets into the request (scan), or held inline (settle_simple: the
 * packed layers are gone by the time the series are built) */
typedef struct {
    double value;
    Py_ssize_t trace_off, trace_n, span_off, span_n;
    int inl;
    uint8_t ids[24]; /* inline: trace id (16) then span id (at most 8) */
    /* the scan's: where its span is in the request (its trace id's offset), so that the Python
     * side can put it in span order among the exemplars of the spans it reads; -1: none */
    Py_ssize_t pos;
} exemplar;

typedef struct {
    int metric;
    long long count;
    double sum;
    uint32_t buckets[MAX_BUCKETS + 1];
    int nex, exnext;
    exemplar ex[MAX_EXEMPLARS];
} entry;

/* get_entry's memo of the label objects it was given (by identity: the decoded-value cache and
 * the interned labels hand the same object for the same value again): a key it holds the
 * objects of (so that their addresses are not reused while it is kept) -> entry index. A miss
 * (another object of an equal value) goes to the dict, which finds the same entry. */
#define MEMO_SLOTS 256 /* power of two */
typedef struct {
    PyObject *v[4]; /* owned (NULL: no label there); v[0] NULL: a free slot */
    int metric;
    Py_ssize_t idx;
} memo_slot;

typedef struct {
    PyObject *index; /* dict: key tuple -> entry index */
    entry *entries;
    Py_ssize_t n, cap;
    memo_slot *memo; /* NULL: no memo (see aggs_memo_clear) */
    Py_ssize_t memo_used;
    int direct; /* the memo is direct-mapped: a miss replaces its slot (the settles' calls) */
} aggs;

static void aggs_memo_clear(aggs *a) {
    if (a->memo == NULL) return;
    for (Py_ssize_t i = 0; i < MEMO_SLOTS; i++)
        for (int k = 0; k < 4; k++) Py_CLEAR(a->memo[i].v[k]);
    PyMem_Free(a->memo);
    a->memo = NULL;
    a->memo_used = 0;
}

/* empties a memo's slots (kept allocated): its entry indexes are of an index that is gone */
static void memo_reset(memo_slot *memo) {
    if (memo == NULL) return;
    for (Py_ssize_t i = 0; i < MEMO_SLOTS; i++)
        for (int k = 0; k < 4; k++) Py_CLEAR(memo[i].v[k]);
}

static inline size_t memo_hash(int metric, PyObject *v0, PyObject *v1, PyObject *v2, PyObject *v3) {
    uint64_t h = (uint64_t)metric * 0x9E3779B97F4A7C15ULL;
    h = (h ^ ((uintptr_t)v0 >> 4)) * 0x9E3779B97F4A7C15ULL;
    h = (h ^ ((uintptr_t)v1 >> 4)) * 0x9E3779B97F4A7C15ULL;
    h = (h ^ ((uintptr_t)v2 >> 4)) * 0x9E3779B97F4A7C15ULL;
    h = (h ^ ((uintptr_t)v3 >> 4)) * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 32);
}

static entry *get_entry_dict(aggs *a, int metric, PyObject *v0, PyObject *v1, PyObject *v2, PyObject *v3);

/* The entry of (metric, v0..v3); steals nothing, the values are borrowed (v0 is never NULL). */
static entry *get_entry(aggs *a, int metric, PyObject *v0, PyObject *v1, PyObject *v2, PyObject *v3) {
    if (a->memo == NULL) return get_entry_dict(a, metric, v0, v1, v2, v3);
    size_t i = memo_hash(metric, v0, v1, v2, v3) & (MEMO_SLOTS - 1);
    if (a->direct) { /* one slot per hash: a miss takes it over (label objects that are not
                      * kept, such as a Layer's strings, do not fill the memo for good) */
        memo_slot *m = &a->memo[i];
        if (m->v[0] != NULL && m->metric == metric && m->v[0] == v0 && m->v[1] == v1 && m->v[2] == v2 &&
            m->v[3] == v3)
            return &a->entries[m->idx];
        entry *e = get_entry_dict(a, metric, v0, v1, v2, v3);
        if (e != NULL) {
            PyObject *old[4] = {m->v[0], m->v[1], m->v[2], m->v[3]};
            m->metric = metric;
            m->v[0] = Py_NewRef(v0);
            m->v[1] = Py_XNewRef(v1);
            m->v[2] = Py_XNewRef(v2);
            m->v[3] = Py_XNewRef(v3);
            m->idx = e - a->entries;
            for (int k = 0; k < 4; k++) Py_XDECREF(old[k]);
        }
        return e;
    }
    for (;;) {
        memo_slot *m = &a->memo[i];
        if (m->v[0] == NULL) break;
        if (m->metric == metric && m->v[0] == v0 && m->v[1] == v1 && m->v[2] == v2 && m->v[3] == v3)
            return &a->entries[m->idx];
        i = (i + 1) & (MEMO_SLOTS - 1);
    }
    entry *e = get_entry_dict(a, metric, v0, v1, v2, v3);
    if (e != NULL && a->memo_used < MEMO_SLOTS * 3 / 4) {
        memo_slot *m = &a->memo[i];
        m->metric = metric;
        m->v[0] = Py_NewRef(v0);
        m->v[1] = Py_XNewRef(v1);
        m->v[2] = Py_XNewRef(v2);
        m->v[3] = Py_XNewRef(v3);
        m->idx = e - a->entries;
        a->memo_used++;
    }
    return e;
}

static entry *get_entry_dict(aggs *a, int metric, PyObject *v0, PyObject *v1, PyObject *v2, PyObject *v3) {
    PyObject *m = PyLong_FromLong(metric); /* a small int: cached by CPython */
    if (m == NULL) return NULL;
    PyObject *key;
    if (v3 != NULL) key = PyTuple_Pack(5, m, v0, v1, v2, v3);
    else if (v2 != NULL) key = PyTuple_Pack(4, m, v0, v1, v2);
    else if (v1 != NULL) key = PyTuple_Pack(3, m, v0, v1);
    else key = PyTuple_Pack(2, m, v0);
    Py_DECREF(m);
    if (key == NULL) return NULL;
    PyObject *idx = PyDict_GetItemWithError(a->index, key);
    if (idx != NULL) {
        Py_DECREF(key);
        return &a->entries[PyLong_AsSsize_t(idx)];
    }
    if (PyErr_Occurred()) { Py_DECREF(key); return NULL; }
    if (a->n == a->cap) {
        Py_ssize_t cap = a->cap ? a->cap * 2 : 32;
        entry *e = PyMem_Realloc(a->entries, cap * sizeof(entry));
        if (e == NULL) { Py_DECREF(key); PyErr_NoMemory(); return NULL; }
        a->entries = e;
        a->cap = cap;
    }
    PyObject *pos = PyLong_FromSsize_t(a->n);
    if (pos == NULL || PyDict_SetItem(a->index, key, pos) < 0) {
        Py_XDECREF(pos);
        Py_DECREF(key);
        return NULL;
    }
    Py_DECREF(pos);
    Py_DECREF(key);
    entry *e = &a->entries[a->n++];
    memset(e, 0, sizeof(entry));
    e->metric = metric;
    return e;
}

static void observe(Scanner *self, entry *e, int which, double value, slice trace_id, slice span_id,
                    const uint8_t *base) {
    e->count++;
    e->sum += value;
    int nb = self->nbounds[which];
    const double *b = self->bounds[which];
    int i = 0;
    while (i < nb && b[i] < value) i++; /* bisect_left */
    e->buckets[i]++;
    if (self->max_exemplars && trace_id.n) {
        /* (written in its slot: the next free one, else the oldest; ids read only inline and
         * only as far as trace_n and span_n) */
        exemplar *x;
        if (e->nex < self->max_exemplars) x = &e->ex[e->nex++];
        else { x = &e->ex[e->exnext]; e->exnext = (e->exnext + 1) % self->max_exemplars; }
        x->value = value;
        x->trace_n = trace_id.n;
        x->span_n = span_id.n;
        x->pos = -1;
        /* an absent span id has no place in the buffer (its pointer is NULL): offset 0 */
        if (base != NULL) {
            x->inl = 0;
            x->trace_off = trace_id.p - base;
            x->span_off = span_id.n ? span_id.p - base : 0;
        } else { /* inline (settle_simple): trace id 16 bytes, span id at most 8 */
            x->inl = 1;
            x->trace_off = 0;
            x->span_off = 16;
            memcpy(x->ids, trace_id.p, trace_id.n);
            if (span_id.n) memcpy(x->ids + 16, span_id.p, span_id.n);
        }
    }
}

/* observe() for the scan: the exemplar's ids held inline when they fit (the usual 16 and 8 bytes,
 * as settle_simple keeps them), else as their offsets in the request (trace_off, span_off: the
 * parts of a merged payload joined), which build_result reads from the request's parts */
static void observe_scan(Scanner *self, entry *e, int which, double value, slice trace_id, slice span_id,
                         Py_ssize_t trace_off, Py_ssize_t span_off) {
    /* (the slot observe writes: the next free one, else the oldest) */
    exemplar *x = e->nex < self->max_exemplars ? &e->ex[e->nex] : &e->ex[e->exnext];
    int inl = trace_id.n <= 16 && span_id.n <= 8;
    observe(self, e, which, value, trace_id, span_id, inl ? NULL : trace_id.p);
    if (self->max_exemplars && trace_id.n) {
        x->pos = trace_off;
        if (!inl) {
            x->trace_off = trace_off;
            x->span_off = span_id.n ? span_off : 0;
        }
    }
}

/* -- the scan ------------------------------------------------------------------------------ */

/* an attribute entry of a span as parse_span read it, for its shape (span_shape_of): the entry;
 * with `head`, its key as the usual encoding starts with it (tag 0x0a, a one-byte length), with
 * `looked` too that key's configured key in e (NULL: none), with `usual` the entry is only that
 * key and nothing or one value (see entry_usual) */
#define REC_HEAD 1
#define REC_LOOKED 2
#define REC_USUAL 4
typedef struct {
    slice entry;
    const keyent *e;
    unsigned flags; /* REC_HEAD, REC_LOOKED, REC_USUAL: head, looked, usual */
} attr_rec;
#define MAX_ATTR_RECS 64 /* more attributes: the shape walks the span again */

typedef struct {
    slice trace_id, span_id, parent, name;
    int64_t kind;
    uint64_t start, end;
    int64_t status_code;
    slice status_message;
    slice status; /* the last Status message (the shape's) */
    slice values[NKEYS + 1]; /* (values[NKEYS], present[NKEYS]: what keys of no scan key write) */
    uint8_t present[NKEYS + 1];
    slice raw; /* the whole span */
    int defer; /* has one of the defer keys */
    int nattrs; /* attribute entries in attrs (more than MAX_ATTR_RECS: MAX_ATTR_RECS + 1) */
    attr_rec attrs[MAX_ATTR_RECS + 1]; /* (the last: the entries beyond, not kept) */
} span_info;

/* after the key of an entry of the usual encoding (tag 0x0a and a one-byte length: the key's
 * bytes end at v, the entry at end): 1 when only nothing or the value (tag 0x12, a length of one
 * or two bytes) follows, filling the entry exactly, with the value in *value (when there is one) */
static inline __attribute__((always_inline)) int entry_usual(const uint8_t *v, const uint8_t *end, slice *value) {
    Py_ssize_t m = end - v;
    if (m == 0) return 1;
    if (m >= 2 && v[0] == 0x12) {
        if (v[1] < 0x80) {
            if (m == 2 + (Py_ssize_t)v[1]) { value->p = v + 2; value->n = v[1]; return 1; }
        } else if (m >= 3 && v[2] < 0x80) {
            Py_ssize_t len = (Py_ssize_t)(v[1] & 0x7f) | ((Py_ssize_t)v[2] << 7);
            if (m == 3 + len) { value->p = v + 3; value->n = len; return 1; }
        }
    }
    return 0;
}

/* what a span's attribute entry of configured key e and value `value` says (e NULL: nothing) */
static inline __attribute__((always_inline)) void attr_take(span_info *s, const keyent *e, slice value) {
    if (e == NULL) return;
    s->defer |= e->defer;
    memcpy((char *)s + e->voff, &value, sizeof value); /* (values[k0], present[k0]) */
    ((uint8_t *)s)[e->poff] = 1;
    for (uint32_t mask = e->kmore; __builtin_expect(mask != 0, 0); mask &= mask - 1) {
        int k = __builtin_ctz(mask);
        s->values[k] = value;
        s->present[k] = 1;
    }
}

/* one attribute entry (KeyValue) of a span, for parse_span, in rec: the usual encoding (the key,
 * tag 0x0a and a one-byte length, then nothing or only the value: entry_usual) taken as it is
 * (the walk would find the same), anything else walked. (parse_span takes the usual entries of
 * keys of 6 bytes or more itself: see there.) */
static __attribute__((noinline)) int parse_attr(Scanner *self, span_info *s, slice data, attr_rec *rec) {
    const uint8_t *d = data.p;
    Py_ssize_t n = data.n;
    slice key = {NULL, 0}, value = {(const uint8_t *)"", 0};
    rec->entry = data;
    if (n >= 2 && d[0] == 0x0a && d[1] < 0x80 && d[1] + 2 <= n && entry_usual(d + 2 + d[1], d + n, &value)) {
        const keyent *e = keytab_find(self, (slice){d + 2, d[1]});
        rec->e = e;
        rec->flags = REC_HEAD | REC_LOOKED | REC_USUAL;
        attr_take(s, e, value);
        return 0;
    }
    rec->flags = 0;
    reader kr = {d, d + n};
    field kf;
    int krc;
    while ((krc = next_field(&kr, &kf)) == 0) {
        if (kf.number == 1 && kf.wire == 2) key = kf.data;
        else if (kf.number == 2 && kf.wire == 2) value = kf.data;
    }
    if (krc < 0) return -1;
    if (key.p != NULL) attr_take(s, keytab_find(self, key), value);
    return 0;
}

/* a span's Status message (field 15), for parse_span */
static __attribute__((noinline)) int parse_status(span_info *s, slice data) {
    s->status = data;
    reader sr = {data.p, data.p + data.n};
    field sf;
    int src;
    while ((src = next_field(&sr, &sf)) == 0) {
        if (sf.number == 3 && sf.wire == 0) s->status_code = (int64_t)sf.value;
        else if (sf.number == 2 && sf.wire == 2) s->status_message = sf.data;
    }
    return src < 0 ? -1 : 0;
}

/* a span field of a one-byte tag and a one-byte length: its data in *out, the reader past it */
#define SPAN_BYTES(out)                                                    \
    if (len < 0x80 && len <= left - 2) {                                   \
        (out) = (slice){p + 2, len};                                       \
        p += 2 + len;                                                      \
        continue;                                                          \
    }                                                                      \
    break

static int parse_span(Scanner *self, slice raw, span_info *s) {
    /* (values[k] is read only where present[k]: not cleared) */
    s->trace_id = s->span_id = s->parent = s->name = s->status_message = s->status = (slice){NULL, 0};
    s->kind = s->status_code = 0;
    s->start = s->end = 0;
    memset(s->present, 0, sizeof(s->present));
    s->defer = 0;
    s->raw = raw;
    const uint8_t *p = raw.p, *end = raw.p + raw.n;
    /* the next attribute entry's record; those beyond MAX_ATTR_RECS all in the spare last one
     * (over set) */
    attr_rec *next = s->attrs;
    int over = 0;
    const int16_t *slots = self->keyslot;
    const keyent *keytab = self->keytab;
    /* the fields before the attributes in the order an encoder writes them (trace id, span id,
     * parent, name, kind, start, end: the trace state is the loop's), each taken here when it
     * has a one-byte tag and length (or varint), as the loop below would take it */
#define SPAN_HEAD(tag, out)                                                          \
    if (end - p >= 2 && p[0] == (tag) && p[1] < 0x80 && p[1] <= end - p - 2) {     \
        (out) = (slice){p + 2, p[1]};                                                \
        p += 2 + p[1];                                                               \
    }
    SPAN_HEAD(0x0a, s->trace_id)
    SPAN_HEAD(0x12, s->span_id)
    SPAN_HEAD(0x22, s->parent)
    SPAN_HEAD(0x2a, s->name)
#undef SPAN_HEAD
    if (end - p >= 2 && p[0] == 0x30 && p[1] < 0x80) {
        s->kind = p[1];
        p += 2;
    }
    if (end - p >= 9 && p[0] == 0x39) {
        memcpy(&s->start, p + 1, 8);
        p += 9;
    }
    if (end - p >= 9 && p[0] == 0x41) {
        memcpy(&s->end, p + 1, 8);
        p += 9;
    }
    for (;;) {
        /* the usual fields (a one-byte tag, then a one-byte length, a one-byte varint or 8 bytes;
         * an attribute entry's length of two bytes) taken without next_field, which finds the
         * same (anything else, or a length past the end, goes there) */
        Py_ssize_t left = end - p;
        slice entry;
        attr_rec *rec;
        if (__builtin_expect(left < 2, 0)) goto field;
        Py_ssize_t len = p[1];
        if (p[0] == 0x4a) { /* an attribute entry (9): a length of one or two bytes */
            const uint8_t *d = p + 2;
            if (__builtin_expect(len >= 0x80, 0)) {
                if (left < 3 || p[2] >= 0x80) goto field;
                len = (len & 0x7f) | (Py_ssize_t)p[2] << 7;
                d++;
            }
            if (len > end - d) goto field;
            p = d + len;
            rec = next;
            if (__builtin_expect(rec != &s->attrs[MAX_ATTR_RECS], 1)) next = rec + 1;
            else over = 1;
            rec->entry = (slice){d, len};
            /* the usual encoding (the key, tag 0x0a and a one-byte length, then nothing or only
             * the value: entry_usual), a key of 6 bytes or more: its words read from the entry
             * and looked up (see keytab_probe: the first slot here, and a key up to 22 bytes
             * compared), the value as entry_usual finds it; anything else: parse_attr */
            uint64_t w0, w1;
            if (len < 8) goto attr;
            memcpy(&w0, d, 8);
            if ((w0 & 0x80ff) != 0x0a) goto attr;
            Py_ssize_t klen = (uint8_t)(w0 >> 8);
            if (klen < 6 || klen + 2 > len) goto attr;
            slice value = {(const uint8_t *)"", 0};
            if (!entry_usual(d + 2 + klen, d + len, &value)) goto attr;
            memcpy(&w1, d + klen - 6, 8);
            rec->flags = REC_HEAD | REC_LOOKED | REC_USUAL;
            size_t i = key_hash(w0, w1);
            int x = slots[i];
            if (x < 0) { /* (a key of none, mostly) */
                rec->e = NULL;
                continue;
            }
            const keyent *e = &keytab[x];
            if (e->w0 == w0 && e->w1 == w1 && klen <= 22) {
                if (klen > 14) { /* (H's bytes 8 to 16, the key's 6 to 14) */
                    uint64_t m0;
                    memcpy(&m0, d + 8, 8);
                    if (m0 != e->wm) e = keytab_probe(self, d, klen, w0, w1, i);
                }
            } else {
                e = keytab_probe(self, d, klen, w0, w1, i);
            }
            rec->e = e;
            attr_take(s, e, value);
            continue;
        attr:
            entry = (slice){d, len};
            goto take;
        }
        switch (p[0]) {
        case 0x0a: SPAN_BYTES(s->trace_id); /* (1) */
        case 0x12: SPAN_BYTES(s->span_id);  /* (2) */
        case 0x22: SPAN_BYTES(s->parent);   /* (4) */
        case 0x2a: SPAN_BYTES(s->name);     /* (5) */
        case 0x30:                          /* kind (6) */
            if (len < 0x80) {
                s->kind = len;
                p += 2;
                continue;
            }
            break;
        case 0x39: /* start (7) */
            if (left >= 9) {
                memcpy(&s->start, p + 1, 8);
                p += 9;
                continue;
            }
            break;
        case 0x41: /* end (8) */
            if (left >= 9) {
                memcpy(&s->end, p + 1, 8);
                p += 9;
                continue;
            }
            break;
        default: break;
        }
    field:;
        reader r = {p, end};
        field f;
        int rc = next_field(&r, &f);
        if (rc != 0) {
            s->nattrs = over ? MAX_ATTR_RECS + 1 : (int)(next - s->attrs);
            return rc < 0 ? -1 : 0;
        }
        p = r.p;
        switch (f.number) {
        case 1: if (f.wire == 2) s->trace_id = f.data; break;
        case 2: if (f.wire == 2) s->span_id = f.data; break;
        case 4: if (f.wire == 2) s->parent = f.data; break;
        case 5: if (f.wire == 2) s->name = f.data; break;
        case 6: if (f.wire == 0) s->kind = (int64_t)f.value; break;
        case 7: if (f.wire == 1) s->start = f.value; break;
        case 8: if (f.wire == 1) s->end = f.value; break;
        case 9: /* an attribute entry of another encoding */
            if (f.wire == 2) {
                entry = f.data;
                rec = next;
                if (__builtin_expect(rec != &s->attrs[MAX_ATTR_RECS], 1)) next = rec + 1;
                else over = 1;
            take:
                if (parse_attr(self, s, entry, rec) < 0) return -1;
            }
            break;
        case 15:
            if (f.wire == 2 && parse_status(s, f.data) < 0) return -1;
            break;
        default: break;
        }
    }
}
#undef SPAN_BYTES

/* get(): the decoded value, or NULL when absent (borrowed; NULL with an error set on failure) */
#define GET(k) (s->present[k] ? key_value(self, k, s->values[k]) : NULL)

/* get() as a truthiness test: value or "" when absent */
static inline int truthy(PyObject *o) { return o != NULL && PyUnicode_GET_LENGTH(o) > 0; }
/* a value shaped like a per-run id (an agent id, a workflow type) is no label
 * (plugins._agentdialects.classify.looks_like_run_id; only ASCII text can be one) */
static inline int run_id_text(PyObject *o) {
    return PyUnicode_IS_ASCII(o) && runid_shaped(PyUnicode_1BYTE_DATA(o), PyUnicode_GET_LENGTH(o));
}

/* The agent a workflow root is counted for (connector.py _workflow, plugins._agentconv.
 * agent_label): the workflow processor's workflow.agent.id stamp, else as that processor reads a
 * span's agent, gen_ai.agent.name, else gen_ai.agent.id, the first non-empty one not shaped like a
 * per-run id, else "unknown". Borrowed; NULL with an error set on failure. */
static PyObject *workflow_agent(Scanner *self, span_info *s) {
    PyObject *agent = GET(K_WF_AGENT);
    if (agent == NULL && PyErr_Occurred()) return NULL;
    if (truthy(agent)) return agent;
    static const int named[] = {K_AGENT_NAME, K_AGENT};
    for (int i = 0; i < 2; i++) {
        agent = GET(named[i]);
        if (agent == NULL && PyErr_Occurred()) return NULL;
        if (truthy(agent) && !run_id_text(agent)) return agent;
    }
    return self->s_unknown;
}

/* The type a workflow root is counted for (connector.py _workflow, plugins._agentconv.
 * workflow_type_of; workflow_type_of in _tracewire.c): workflow.type, else workflow.name, the
 * first non-empty one not shaped like a per-run id, else the span name less the workflow prefix
 * if that is neither empty nor run-id shaped (only ASCII bytes can be: a name decoded with
 * "replace" is one only if its bytes are), else "unknown": a UUID-named workflow makes no label
 * per run. Borrowed, or a new reference also left in *owned (NULL otherwise); NULL with an error
 * set on failure. */
static PyObject *workflow_type(Scanner *self, span_info *s, PyObject **owned) {
    *owned = NULL;
    static const int keys[] = {K_WF_TYPE, K_WF_NAME};
    for (int i = 0; i < 2; i++) {
        PyObject *v = GET(keys[i]);
        if (v == NULL && PyErr_Occurred()) return NULL;
        if (truthy(v) && !run_id_text(v)) return v;
    }
    Py_ssize_t pn = PyBytes_GET_SIZE(self->wf_prefix);
    Py_ssize_t skip = (s->name.n >= pn && memcmp(s->name.p, PyBytes_AS_STRING(self->wf_prefix), pn) == 0) ? pn : 0;
    const uint8_t *rest = s->name.p + skip;
    Py_ssize_t n = s->name.n - skip;
    if (n == 0 || runid_shaped(rest, n)) return self->s_unknown;
    *owned = PyUnicode_DecodeUTF8((const char *)rest, n, "replace");
    return *owned;
}

/* an A2A producer or consumer span seen in the scan (slices into the request) */
typedef struct {
    slice span_id, trace_id, parent, raw;
    Py_ssize_t trace_off, span_off; /* (consumers) the ids' offsets in the request, for an exemplar */
    uint64_t start;
    PyObject *message_type; /* borrowed (the value cache) */
} a2a_span;

typedef struct { a2a_span *items; Py_ssize_t n, cap; } a2a_list;

/* A scan's work buffers are kept by the scanner from one scan to the next (no allocation and
 * growth per request): a scan takes one (the scanner's slot left empty: a scan within a scan, if
 * any, allocates its own) and gives it back at its end, freed instead when the slot was filled
 * meanwhile or it is larger than KEEP_MAX_BYTES. */
#define KEEP_MAX_BYTES ((size_t)4 << 20)
static void *take_buffer(void **keep, Py_ssize_t *keep_cap, Py_ssize_t *cap) {
    void *buf = *keep;
    *cap = buf != NULL ? *keep_cap : 0;
    *keep = NULL;
    *keep_cap = 0;
    return buf;
}

static void keep_buffer(void **keep, Py_ssize_t *keep_cap, void *buf, Py_ssize_t cap, size_t item) {
    if (buf == NULL) return;
    if (*keep == NULL && (size_t)cap * item <= KEEP_MAX_BYTES) {
        *keep = buf;
        *keep_cap = cap;
    } else {
        PyMem_Free(buf);
    }
}

static a2a_span *a2a_push(a2a_list *l) {
    if (l->n == l->cap) {
        Py_ssize_t cap = l->cap ? l->cap * 2 : 64;
        a2a_span *items = PyMem_Realloc(l->items, cap * sizeof(a2a_span));
        if (items == NULL) { PyErr_NoMemory(); return NULL; }
        l->items = items;
        l->cap = cap;
    }
    /* (not cleared: a producer's span id and start are set, read and nothing else; a consumer's
     * every field is set) */
    return &l->items[l->n++];
}

/* A map of byte strings (slices into the request) to indexes >= 0: the traces of the join's
 * common case (finish_join), kept in C instead of bytes objects in a set or a dict. */
typedef struct { const uint8_t *p; Py_ssize_t n; Py_ssize_t val; uint64_t hash; } smap_slot;
typedef struct { smap_slot *slots; Py_ssize_t cap, used; } smap;

static uint64_t hash_mem(const uint8_t *p, Py_ssize_t n, uint64_t h);

/* (a trace id, 16 bytes, mixed inline: hash_mem's loop and call cost more than the rest) */
static inline uint64_t smap_hash(slice key) {
    /* (8 to 24 bytes: a trace id, and a span id after it (link_only_clashes): the first two
     * words and the last, overlapping, with the length) */
    if (key.n < 8 || key.n > 24) return hash_mem(key.p, key.n, 7);
    uint64_t a, b = 0, c;
    memcpy(&a, key.p, 8);
    if (key.n >= 16) memcpy(&b, key.p + 8, 8);
    memcpy(&c, key.p + key.n - 8, 8);
    uint64_t h = (a ^ 0x9E3779B97F4A7C15ULL ^ (uint64_t)key.n) * 0xBF58476D1CE4E5B9ULL;
    h = (h ^ (h >> 31) ^ b) * 0x94D049BB133111EBULL;
    h = (h ^ (h >> 29) ^ c) * 0xBF58476D1CE4E5B9ULL;
    return h ^ (h >> 32);
}

static Py_ssize_t smap_find(const smap *m, slice key) {
    if (m->used == 0) return -1;
    uint64_t h = smap_hash(key);
    for (Py_ssize_t i = (Py_ssize_t)(h & (uint64_t)(m->cap - 1));; i = (i + 1) & (m->cap - 1)) {
        const smap_slot *x = &m->slots[i];
        if (x->val < 0) return -1;
        if (x->hash == h && x->n == key.n && (key.n == 0 || memcmp(x->p, key.p, key.n) == 0)) return x->val;
    }
}

/* puts key -> val (val >= 0) unless the key is there; -1 on error (memory) */
static int smap_put(smap *m, slice key, Py_ssize_t val) {
    if ((m->used + 1) * 2 > m->cap) {
        Py_ssize_t cap = m->cap ? m->cap * 2 : 256;
        smap_slot *slots = PyMem_Malloc(cap * sizeof(smap_slot));
        if (slots == NULL) { PyErr_NoMemory(); return -1; }
        for (Py_ssize_t i = 0; i < cap; i++) slots[i].val = -1;
        for (Py_ssize_t j = 0; j < m->cap; j++) {
            smap_slot *x = &m->slots[j];
            if (x->val < 0) continue;
            Py_ssize_t i = (Py_ssize_t)(x->hash & (uint64_t)(cap - 1));
            while (slots[i].val >= 0) i = (i + 1) & (cap - 1);
            slots[i] = *x;
        }
        PyMem_Free(m->slots);
        m->slots = slots;
        m->cap = cap;
    }
    uint64_t h = smap_hash(key);
    Py_ssize_t i = (Py_ssize_t)(h & (uint64_t)(m->cap - 1));
    for (;; i = (i + 1) & (m->cap - 1)) {
        smap_slot *x = &m->slots[i];
        if (x->val < 0) break;
        if (x->hash == h && x->n == key.n && (key.n == 0 || memcmp(x->p, key.p, key.n) == 0)) return 0;
    }
    m->slots[i] = (smap_slot){key.p, key.n, val, h};
    m->used++;
    return 0;
}

/* an empty map with room for n keys without growing (small maps stay small: no 256 slots) */
static int smap_reserve(smap *m, Py_ssize_t n) {
    Py_ssize_t cap = 8;
    while (cap < 2 * (n + 1)) cap *= 2;
    m->slots = PyMem_Malloc(cap * sizeof(smap_slot));
    if (m->slots == NULL) { PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < cap; i++) m->slots[i].val = -1;
    m->cap = cap;
    m->used = 0;
    return 0;
}

static void smap_free(smap *m) {
    PyMem_Free(m->slots);
    m->slots = NULL;
    m->cap = m->used = 0;
}

/* a span left to Python, in request order, when the join's common case is on: a fallback
 * tuple, or a candidate for packing (a span whose shape the Python side learned) */
typedef struct {
    PyObject *item; /* owned: the fallback tuple; NULL: a candidate */
    slice trace, span, parent;
    uint64_t start, end;
    long series; /* >= 0: a tool-call layer's series; -1: a link */
    Py_ssize_t off_start, off_end, rs_start, rs_end, sc_start, sc_end;
    const uint8_t *at; /* the span's bytes (request offset off_start, in its part) */
    PyObject *shape; /* owned (candidates) */
    Py_ssize_t group; /* after finish_join's first pass: the trace's group, -1 to Python, -2 late */
    slice ids[3];     /* a layer's call id and JSON-RPC id (the id-keyed join), when flags has them,
                       * and a failed layer's message */
    uint8_t flags;    /* bit 0: a call id, bit 1: a JSON-RPC id, bit 2: a failed layer (its message) */
    uint8_t link_only; /* a fallback item of a link-only shape (-2): its trace is not touched */
} held_item;

#define WF_MEMO 16
#define VALID_OUTCOMES 4
typedef struct {
    PyObject *fallback, *consumers; /* lists */
    int join;                       /* the join's common case is on */
    held_item *held;                /* the spans left to Python, in order (join only) */
    Py_ssize_t nheld, capheld;
    smap touched;                   /* traces with a span read in Python (join only) */
    slice last_touched;             /* the last trace scan_spans put there (n -1: none) */
    Py_ssize_t nlink_only;          /* held fallback items of link-only shapes */
    PyObject *res_obj, *scope_obj;  /* the current resource and scope messages as bytes */
    /* (learned) objects found equal to the current resource and scope messages (owned) */
    PyObject *same_res, *same_scope;
    Py_ssize_t rs_start, rs_end, sc_start, sc_end; /* the current resource and scope messages */
    uint64_t ctx_hash; /* of the current resource and scope (0: not computed yet) */
    int scope_deferred; /* the current scope's name starts with a defer prefix */
    a2a_list producers, pending;    /* this request's producers and consumers */
    PyObject *workflows;                        /* dict: (type, outcome) -> [durations] */
    /* count_execution's memo of workflows by identity: (type, outcome) (owned: their addresses
     * are not reused while held) -> their list of durations (borrowed: the dict holds it) */
    struct { PyObject *type, *outcome, *list; } wf_memo[WF_MEMO];
    int nwf_memo;
    PyObject *valid_outcomes[VALID_OUTCOMES]; /* (handle_span) outcome objects found valid: owned */
    int nvalid_outcomes;
    aggs a;
    /* the request is scanned part by part (scan() given the encodings of a merged payload: their
     * concatenation is the request); every offset handed out is one into that concatenation */
    const uint8_t *part;  /* the part being scanned */
    Py_ssize_t part_off;  /* its offset in the request */
} scan_state;

static void wf_memo_clear(scan_state *st) {
    for (int i = 0; i < st->nwf_memo; i++) {
        Py_CLEAR(st->wf_memo[i].type);
        Py_CLEAR(st->wf_memo[i].outcome);
    }
    st->nwf_memo = 0;
    for (int i = 0; i < st->nvalid_outcomes; i++) Py_CLEAR(st->valid_outcomes[i]);
    st->nvalid_outcomes = 0;
}

/* the offset in the request of a pointer into the part being scanned */
static inline Py_ssize_t st_off(const scan_state *st, const uint8_t *p) { return st->part_off + (p - st->part); }
#define ST_OFF(st, sl) ((sl).n ? st_off((st), (sl).p) : 0) /* (of a slice: 0 when empty) */

static PyObject *bytes_of(slice s) { return PyBytes_FromStringAndSize((const char *)s.p, s.n); }

/* as Py_BuildValue's y#: None for an absent field (a NULL pointer) */
static PyObject *bytes_or_none(slice s) { return s.p ? bytes_of(s) : Py_NewRef(Py_None); }

/* The span ids of a span's links (Span.links = 13, Link.span_id = 2), as a list of bytes. */
static PyObject *link_span_ids(slice raw) {
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    reader r = {raw.p, raw.p + raw.n};
    field f;
    int rc;
    while ((rc = next_field(&r, &f)) == 0) {
        if (f.number != 13 || f.wire != 2) continue;
        reader lr = {f.data.p, f.data.p + f.data.n};
        field lf;
        int lrc;
        slice id = {(const uint8_t *)"", 0};
        while ((lrc = next_field(&lr, &lf)) == 0)
            if (lf.number == 2 && lf.wire == 2) id = lf.data;
        if (lrc < 0) goto error;
        PyObject *b = bytes_of(id);
        if (b == NULL || PyList_Append(out, b) < 0) { Py_XDECREF(b); goto error; }
        Py_DECREF(b);
    }
    if (rc == 0 || rc == 1) return out;
error:
    Py_DECREF(out);
    return NULL;
}

/* exception.type of the span's first exception event that has one (Span.events = 11, Event.name
 * = 2, Event.attributes = 3), as plugins._agentconv.exception_type: the AnyValue's string, ""
 * for another kind. found = 0 when no exception event names one. */
static int exception_attr_walk(slice raw, const char *KEY, Py_ssize_t keylen, slice *out, int *found);

/* exception_attr_of's answers for the span last asked about, per key (a failed span is asked
 * about its exception type and message by several readers: failed_learned, failure_facts,
 * root_facts), while exc_memo_on (a scan: the request's bytes do not move or change) */
static struct {
    const uint8_t *p;
    Py_ssize_t n, keylen;
    int rc, found;
    slice out;
} exc_memo[2];
static int exc_memo_on;

static void exc_memo_set(int on) {
    exc_memo_on = on;
    exc_memo[0].p = exc_memo[1].p = NULL;
}

static int exception_attr_of(slice raw, const char *KEY, Py_ssize_t keylen, slice *out, int *found) {
    if (!exc_memo_on) return exception_attr_walk(raw, KEY, keylen, out, found);
    int k = keylen == 14 ? 0 : 1; /* (exception.type, exception.message: a slot each) */
    if (exc_memo[k].p == raw.p && exc_memo[k].p != NULL && exc_memo[k].n == raw.n && exc_memo[k].keylen == keylen) {
        *found = exc_memo[k].found;
        if (exc_memo[k].found) *out = exc_memo[k].out;
        return exc_memo[k].rc;
    }
    int rc = exception_attr_walk(raw, KEY, keylen, out, found);
    if (rc < 0) { /* (not kept: the error is raised again by the walk) */
        exc_memo[k].p = NULL;
        return rc;
    }
    exc_memo[k].p = raw.p;
    exc_memo[k].n = raw.n;
    exc_memo[k].keylen = keylen;
    exc_memo[k].rc = rc;
    exc_memo[k].found = *found;
    if (*found) exc_memo[k].out = *out;
    return rc;
}

static int exception_attr_walk(slice raw, const char *KEY, Py_ssize_t keylen, slice *out, int *found) {
    static const char EXC[] = "exception";
    *found = 0;
    reader r = {raw.p, raw.p + raw.n};
    field f;
    int rc;
    while ((rc = next_field(&r, &f)) == 0) {
        if (f.number != 11 || f.wire != 2) continue;
        reader er = {f.data.p, f.data.p + f.data.n};
        field ef;
        int erc;
        slice name = {NULL, 0}, value = {NULL, 0};
        int has = 0;
        while ((erc = next_field(&er, &ef)) == 0) {
            if (ef.number == 2 && ef.wire == 2) name = ef.data;
            else if (ef.number == 3 && ef.wire == 2 && !has) {
                reader kr = {ef.data.p, ef.data.p + ef.data.n};
                field kf;
                int krc;
                slice key = {NULL, 0}, v = {(const uint8_t *)"", 0};
                while ((krc = next_field(&kr, &kf)) == 0) {
                    if (kf.number == 1 && kf.wire == 2) key = kf.data;
                    else if (kf.number == 2 && kf.wire == 2) v = kf.data;
                }
                if (krc < 0) return -1;
                if (key.n == keylen && memcmp(key.p, KEY, key.n) == 0) { has = 1; value = v; }
            }
        }
        if (erc < 0) return -1;
        if (!(has && name.n == sizeof(EXC) - 1 && memcmp(name.p, EXC, name.n) == 0)) continue;
        /* the AnyValue's string_value: the last oneof field wins */
        reader vr = {value.p, value.p + value.n};
        field vf;
        int vrc;
        slice text = {(const uint8_t *)"", 0};
        while ((vrc = next_field(&vr, &vf)) == 0) {
            if (vf.number == 1 && vf.wire == 2) text = vf.data;
            else if (vf.number >= 2 && vf.number <= 7) text.n = 0;
        }
        if (vrc < 0) return -1;
        *out = text;
        *found = 1;
        return 0;
    }
    return rc < 0 ? -1 : 0;
}

static int exception_type_of(slice raw, slice *out, int *found) {
    return exception_attr_of(raw, "exception.type", 14, out, found);
}

static inline int is_ascii(slice s) {
    Py_ssize_t i = 0;
    uint64_t any = 0;
    for (; i + 8 <= s.n; i += 8) {
        uint64_t w;
        memcpy(&w, s.p + i, 8);
        any |= w;
    }
    if (i < s.n && s.n >= 8) { /* (the rest as the last word, overlapping the one before) */
        uint64_t w;
        memcpy(&w, s.p + s.n - 8, 8);
        any |= w;
    } else {
        for (; i < s.n; i++) any |= s.p[i];
    }
    return (any & 0x8080808080808080ULL) == 0;
}

/* What the Python side reads of a failed span it is left (plugins/agentmetricsconnector/
 * connector.py, _SpanView): (status message, exception.type, exception.message) of
 * Span.status and its first exception events naming them, as its full decode gives them; so
 * that it does not decode the span in full for them. None when the span did not fail or any of
 * them is not ASCII (then the full decode, which also refuses what is not UTF-8); NULL on a
 * malformed event (an error set). Kept by the span's start offset in the request (the fallback
 * tuple's first item) for take_failures. */
static PyObject *tuple_steal(Py_ssize_t n, PyObject **items);

static PyObject *failure_facts(span_info *s) {
    slice exc = {(const uint8_t *)"", 0}, msg = {(const uint8_t *)"", 0};
    int found;
    if (exception_attr_of(s->raw, "exception.type", 14, &exc, &found) < 0 ||
        exception_attr_of(s->raw, "exception.message", 17, &msg, &found) < 0) {
        PyErr_SetString(PyExc_ValueError, "malformed span event");
        return NULL;
    }
    slice status = s->status_message.p ? s->status_message : (slice){(const uint8_t *)"", 0};
    if (!is_ascii(status) || !is_ascii(exc) || !is_ascii(msg)) Py_RETURN_NONE;
    /* (ASCII, checked above: as Py_BuildValue's s#, without parsing a format per span) */
    PyObject *items[3] = {PyUnicode_DecodeASCII((const char *)status.p, status.n, "strict"),
                          PyUnicode_DecodeASCII((const char *)exc.p, exc.n, "strict"),
                          PyUnicode_DecodeASCII((const char *)msg.p, msg.n, "strict")};
    return tuple_steal(3, items);
}

static PyObject *root_facts(Scanner *self, span_info *s);

static int keep_failure(Scanner *self, span_info *s, Py_ssize_t start) {
    PyObject *facts = failure_facts(s);
    if (facts == NULL) return -1;
    int rc = 0;
    PyObject *key = NULL, *root = NULL;
    if (facts != Py_None) {
        if (self->failures == NULL && (self->failures = PyDict_New()) == NULL) rc = -1;
        key = rc < 0 ? NULL : PyLong_FromSsize_t(start);
        rc = key == NULL ? -1 : PyDict_SetItem(self->failures, key, facts);
        /* a failed workflow root: what its execution and errors_total labels say (take_roots) */
        if (rc == 0 && s->parent.n == 0 && (root = root_facts(self, s)) == NULL) rc = -1;
        if (rc == 0 && root != NULL && root != Py_None) {
            if (self->roots == NULL && (self->roots = PyDict_New()) == NULL) rc = -1;
            else rc = PyDict_SetItem(self->roots, key, root);
        }
    }
    Py_XDECREF(root);
    Py_XDECREF(key);
    Py_DECREF(facts);
    return rc;
}

static int contains_ci(const char *hay, Py_ssize_t n, const char *needle) {
    Py_ssize_t m = (Py_ssize_t)strlen(needle);
    for (Py_ssize_t i = 0; i + m <= n; i++) {
        Py_ssize_t j = 0;
        while (j < m) {
            char c = hay[i + j];
            if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
            if (c != needle[j]) break;
            j++;
        }
        if (j == m) return 1;
    }
    return 0;
}

/* The outcome of a failed workflow without a valid workflow.outcome (as
 * plugins._agentconv.outcome_from): borrowed, or NULL with no error set when the evidence is not
 * ASCII (the Python path decides: its regular expressions fold Unicode case). */
static PyObject *failed_outcome(Scanner *self, span_info *s, PyObject *error_text, int *fallback) {
    slice exc = {(const uint8_t *)"", 0};
    int found;
    *fallback = 0;
    if (exception_type_of(s->raw, &exc, &found) < 0) return NULL;
    Py_ssize_t en = 0;
    const char *e = "";
    if (error_text != NULL) {
        e = PyUnicode_AsUTF8AndSize(error_text, &en);
        if (e == NULL) return NULL;
    }
    slice es = {(const uint8_t *)e, en};
    if (!is_ascii(es) || !is_ascii(exc) || !is_ascii(s->status_message)) { *fallback = 1; return NULL; }
    Py_ssize_t n = en + 1 + exc.n + 1 + s->status_message.n;
    char *buf = PyMem_Malloc(n + 1);
    if (buf == NULL) { PyErr_NoMemory(); return NULL; }
    char *w = buf;
    memcpy(w, e, en); w += en; *w++ = ' ';
    if (exc.n) memcpy(w, exc.p, exc.n);
    w += exc.n; *w++ = ' ';
    if (s->status_message.n) memcpy(w, s->status_message.p, s->status_message.n);
    PyObject *outcome = self->s_failed_outcome;
    if (contains_ci(buf, n, "timeout") || contains_ci(buf, n, "timed out") || contains_ci(buf, n, "deadline"))
        outcome = self->s_timeout;
    else if (contains_ci(buf, n, "cancel"))
        outcome = self->s_cancelled;
    PyMem_Free(buf);
    return outcome;
}

/* What the Python side's reading of a failed workflow root (connector.py: _workflow, and
 * _error_labels with the component "workflow") takes from the span beyond its shape and its
 * failure_facts: (workflow type, agent id, outcome, complexity tier, duration, error type,
 * severity, recoverable), as that reading gives them. None (a new reference) when the span is
 * no workflow root, is of a kind that the reading counts more of (server, producer, consumer),
 * or when only a full decode decides (non-ASCII evidence of the outcome, an exception type
 * that is not UTF-8, a workflow.duration that is no double); NULL on error. */
static PyObject *root_facts(Scanner *self, span_info *s) {
    int kind = (int)s->kind;
    Py_ssize_t pn = PyBytes_GET_SIZE(self->wf_prefix);
    if (s->parent.n || kind == KIND_SERVER || kind == KIND_PRODUCER || kind == KIND_CONSUMER ||
        s->present[K_WF_SECONDARY] ||
        !((s->name.n >= pn && memcmp(s->name.p, PyBytes_AS_STRING(self->wf_prefix), pn) == 0) ||
          s->present[K_WF_NAME] || s->present[K_WF_ID] || s->present[K_WF_TYPE]))
        Py_RETURN_NONE;
    PyObject *owned_error = NULL, *owned_type = NULL, *out = NULL;
    /* the error type: error.type, else the first exception event's exception.type, else _OTHER */
    PyObject *error_value = GET(K_ERROR_TYPE);
    if (error_value == NULL && PyErr_Occurred()) return NULL;
    PyObject *error_label = error_value;
    if (!truthy(error_value)) {
        slice exc;
        int found;
        if (exception_type_of(s->raw, &exc, &found) < 0) {
            PyErr_SetString(PyExc_ValueError, "malformed span event");
            return NULL;
        }
        if (found && exc.n) {
            owned_error = PyUnicode_DecodeUTF8((const char *)exc.p, exc.n, "strict");
            if (owned_error == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return NULL;
                PyErr_Clear();
                Py_RETURN_NONE; /* the full decode refuses the span */
            }
            error_label = owned_error;
        } else {
            error_label = self->s_other;
        }
    }
    PyObject *outcome = GET(K_WF_OUTCOME);
    if (outcome == NULL && PyErr_Occurred()) goto done;
    int valid = 0;
    if (outcome != NULL && (valid = PySequence_Contains(self->outcomes, outcome)) < 0) goto done;
    if (!valid) {
        int fallback;
        outcome = failed_outcome(self, s, error_value, &fallback);
        if (fallback) { out = Py_NewRef(Py_None); goto done; }
        if (outcome == NULL) goto done;
    }
    double duration =
        (s->end >= s->start ? (double)(s->end - s->start) : -(double)(s->start - s->end)) / 1e9;
    if (s->present[K_WF_DURATION]) {
        slice v = s->values[K_WF_DURATION];
        if (v.n != 9 || v.p[0] != 0x21) { out = Py_NewRef(Py_None); goto done; }
        uint64_t bits = 0;
        for (int i = 8; i >= 1; i--) bits = bits << 8 | v.p[i];
        double given;
        memcpy(&given, &bits, sizeof given);
        if (isfinite(given) && given >= 0) duration = given;
    }
    PyObject *wf_type = workflow_type(self, s, &owned_type);
    if (wf_type == NULL) goto done;
    PyObject *tier = GET(K_WF_TIER);
    if (tier == NULL && PyErr_Occurred()) goto done;
    if (!truthy(tier)) tier = self->s_unknown;
    PyObject *agent = workflow_agent(self, s);
    if (agent == NULL) goto done;
    PyObject *severity = GET(K_ERROR_SEVERITY);
    if (severity == NULL && PyErr_Occurred()) goto done;
    if (severity == NULL) severity = self->s_critical;
    PyObject *recoverable = GET(K_ERROR_RECOVERABLE);
    if (recoverable == NULL && PyErr_Occurred()) goto done;
    if (recoverable == NULL) {
        int rec = PySet_Contains(self->recoverable, error_label);
        if (rec < 0) goto done;
        if (!rec) {
            /* http.response.status_code, else http.status_code: "5..." or "429" */
            PyObject *code = GET(K_HTTP_STATUS);
            if (code == NULL && PyErr_Occurred()) goto done;
            if (!truthy(code)) {
                code = GET(K_HTTP_STATUS_OLD);
                if (code == NULL && PyErr_Occurred()) goto done;
            }
            if (code != NULL) {
                Py_ssize_t cn;
                const char *c = PyUnicode_AsUTF8AndSize(code, &cn);
                if (c == NULL) goto done;
                rec = (cn >= 1 && c[0] == '5') || (cn == 3 && memcmp(c, "429", 3) == 0);
            }
        }
        recoverable = rec ? self->s_true : self->s_false;
    }
    /* (as Py_BuildValue("(OOOOdOOO)") makes it) */
    PyObject *items[8] = {Py_NewRef(wf_type), Py_NewRef(agent), Py_NewRef(outcome), Py_NewRef(tier),
                          PyFloat_FromDouble(duration), Py_NewRef(error_label), Py_NewRef(severity),
                          Py_NewRef(recoverable)};
    out = tuple_steal(8, items);
done:
    Py_XDECREF(owned_error);
    Py_XDECREF(owned_type);
    return out;
}

/* Returns 1 when the span must go to the Python path, 0 when handled, -1 on error. */
/* the slice starts with one of the tuple's bytes (a tuple of bytes checked at init) */
static int has_prefix(slice text, PyObject *prefixes) {
    if (prefixes == NULL) return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(prefixes); i++) {
        PyObject *b = PyTuple_GET_ITEM(prefixes, i);
        Py_ssize_t n = PyBytes_GET_SIZE(b);
        if (text.n >= n && memcmp(text.p, PyBytes_AS_STRING(b), n) == 0) return 1;
    }
    return 0;
}

/* has_prefix(name, self->defer_names), a name whose first byte starts no prefix answered
 * without comparing (defer_first) */
static inline int defer_name(Scanner *self, slice name) {
    if (name.n && !(self->defer_first[name.p[0] >> 3] & (1u << (name.p[0] & 7)))) return 0;
    return has_prefix(name, self->defer_names);
}

/* -- the workflow roots a scan counted (put_roots) ----------------------------------------------
 *
 * The connector labels an inference span's tokens (agent_workflow_tokens, agent_workflow_cost_usd)
 * with its trace's workflow type and agent: the workflow processor's stamp on the span, else those
 * its trace's root was counted with (connector.py _count_tokens). The roots this scan counted are
 * kept here, their trace ids copied (the request is not needed after the scan), and put into the
 * connector's memory of roots (a RootMemory: trace id -> (type, agent)) by put_roots once the
 * request was read whole (consume is atomic: a request refused leaves no root behind). */

struct wf_root { Py_ssize_t off, n, at; PyObject *value; }; /* (at: the span's offset in the request) */

static void wf_roots_clear(Scanner *self) {
    for (Py_ssize_t i = 0; i < self->nwf_roots; i++) Py_CLEAR(self->wf_roots[i].value);
    self->nwf_roots = 0;
    self->nwf_root_ids = 0;
}

/* keeps the root of trace counted with (wf_type, agent): 0, or -1 on error */
static int remember_root(Scanner *self, slice trace, Py_ssize_t at, PyObject *wf_type, PyObject *agent) {
    PyObject *value = self->wf_root_last;
    /* (the last tuple holds its items: an object at the same address is the same object; so do
     * the tuples of wf_root_memo, the last WF_ROOT_MEMO made, shared by every root of their
     * type and agent objects) */
    if (value == NULL || PyTuple_GET_ITEM(value, 0) != wf_type || PyTuple_GET_ITEM(value, 1) != agent) {
        value = NULL;
        for (int i = 0; i < WF_ROOT_MEMO && self->wf_root_memo[i] != NULL; i++) {
            PyObject *t = self->wf_root_memo[i];
            if (PyTuple_GET_ITEM(t, 0) == wf_type && PyTuple_GET_ITEM(t, 1) == agent) {
                value = t;
                break;
            }
        }
        if (value == NULL) {
            if ((value = PyTuple_Pack(2, wf_type, agent)) == NULL) return -1;
            int at = self->wf_root_memo_next;
            self->wf_root_memo_next = (at + 1) % WF_ROOT_MEMO;
            Py_XSETREF(self->wf_root_memo[at], value); /* (the memo's reference) */
        }
        Py_XSETREF(self->wf_root_last, Py_NewRef(value));
    }
    if (self->nwf_roots == self->capwf_roots) {
        Py_ssize_t cap = self->capwf_roots ? self->capwf_roots * 2 : 16;
        struct wf_root *items = PyMem_Realloc(self->wf_roots, cap * sizeof(struct wf_root));
        if (items == NULL) { PyErr_NoMemory(); return -1; }
        self->wf_roots = items;
        self->capwf_roots = cap;
    }
    if (self->nwf_root_ids + trace.n > self->capwf_root_ids) {
        Py_ssize_t cap = self->capwf_root_ids ? self->capwf_root_ids : 256;
        while (cap < self->nwf_root_ids + trace.n) cap *= 2;
        uint8_t *ids = PyMem_Realloc(self->wf_root_ids, (size_t)cap);
        if (ids == NULL) { PyErr_NoMemory(); return -1; }
        self->wf_root_ids = ids;
        self->capwf_root_ids = cap;
    }
    struct wf_root *x = &self->wf_roots[self->nwf_roots++];
    x->off = self->nwf_root_ids;
    x->n = trace.n;
    x->at = at;
    x->value = Py_NewRef(value);
    if (trace.n) memcpy(self->wf_root_ids + x->off, trace.p, (size_t)trace.n);
    self->nwf_root_ids += trace.n;
    return 0;
}

/* Counts a workflow execution of the root s (connector.py _execution): agent_workflow_executions,
 * the duration (its exemplar the span's, in span order) and (type, outcome) -> durations for the
 * failure/SLA windows. 0, or -1 on error. */
static int count_execution(Scanner *self, scan_state *st, span_info *s, PyObject *wf_type, PyObject *agent,
                           PyObject *outcome, PyObject *tier, double duration) {
    entry *e = get_entry(&st->a, M_WF_EXECUTIONS, wf_type, agent, outcome, tier);
    if (e == NULL) return -1;
    e->count++;
    if (remember_root(self, s->trace_id, ST_OFF(st, s->raw), wf_type, agent) < 0) return -1;
    e = get_entry(&st->a, M_WF_DURATION, wf_type, tier, NULL, NULL);
    if (e == NULL) return -1;
    observe_scan(self, e, B_WORKFLOW, duration, s->trace_id, s->span_id, ST_OFF(st, s->trace_id), ST_OFF(st, s->span_id));
    PyObject *durations = NULL;
    for (int i = 0; i < st->nwf_memo; i++)
        if (st->wf_memo[i].type == wf_type && st->wf_memo[i].outcome == outcome) {
            durations = st->wf_memo[i].list;
            break;
        }
    if (durations == NULL) {
        PyObject *key = PyTuple_Pack(2, wf_type, outcome);
        if (key == NULL) return -1;
        durations = PyDict_GetItemWithError(st->workflows, key);
        if (durations == NULL) {
            if (PyErr_Occurred() || (durations = PyList_New(0)) == NULL ||
                PyDict_SetItem(st->workflows, key, durations) < 0) {
                Py_XDECREF(durations);
                Py_DECREF(key);
                return -1;
            }
            Py_DECREF(durations); /* the dict holds it */
        }
        Py_DECREF(key);
        if (st->nwf_memo < WF_MEMO) { /* (the first WF_MEMO pairs of the request) */
            st->wf_memo[st->nwf_memo].type = Py_NewRef(wf_type);
            st->wf_memo[st->nwf_memo].outcome = Py_NewRef(outcome);
            st->wf_memo[st->nwf_memo++].list = durations;
        }
    }
    PyObject *d = PyFloat_FromDouble(duration);
    if (d == NULL || PyList_Append(durations, d) < 0) { Py_XDECREF(d); return -1; }
    Py_DECREF(d);
    return 0;
}

static int handle_span(Scanner *self, span_info *s, scan_state *st) {
    int failed = s->status_code == STATUS_ERROR;
    int tool = (s->present[K_OP] && s->values[K_OP].n == PyBytes_GET_SIZE(self->tool_op) &&
                memcmp(s->values[K_OP].p, PyBytes_AS_STRING(self->tool_op), s->values[K_OP].n) == 0) ||
               (s->present[K_METHOD] && s->values[K_METHOD].n == PyBytes_GET_SIZE(self->tool_method) &&
                memcmp(s->values[K_METHOD].p, PyBytes_AS_STRING(self->tool_method), s->values[K_METHOD].n) == 0);
    int root = s->parent.n == 0;
    int kind = (int)s->kind;
    /* joined across spans and requests, or classified by the dialect tables: Python's */
    if (failed || tool || s->defer || st->scope_deferred || defer_name(self, s->name)) return 1;
    if (!(root || kind == KIND_SERVER || kind == KIND_PRODUCER || kind == KIND_CONSUMER))
        return 0;
    PyObject *error_value = GET(K_ERROR_TYPE);
    if (error_value == NULL && PyErr_Occurred()) return -1;
    /* an error type that only a full decode (exception events) can give */
    /* error.type, else the first exception event's exception.type, else _OTHER */
    PyObject *error_label = error_value;
    if ((failed || (tool && error_value != NULL)) && !truthy(error_value)) {
        slice exc;
        int found;
        if (exception_type_of(s->raw, &exc, &found) < 0) return -1;
        if (found && exc.n) {
            PyObject *text = PyUnicode_DecodeUTF8((const char *)exc.p, exc.n, "strict");
            if (text == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return -1;
                PyErr_Clear();
                return 1; /* invalid UTF-8: the Python path's full decode refuses the span */
            }
            int rc = PyList_Append(self->spill, text); /* alive until the next scan */
            Py_DECREF(text);
            if (rc < 0) return -1;
            error_label = text;
        } else {
            error_label = self->s_other;
        }
    }
    int workflow = 0;
    PyObject *outcome = NULL;
    if (root) {
        Py_ssize_t pn = PyBytes_GET_SIZE(self->wf_prefix);
        /* (not a parentless span the workflow processor marked: its trace's root is another) */
        workflow = !s->present[K_WF_SECONDARY] &&
                   ((s->name.n >= pn && memcmp(s->name.p, PyBytes_AS_STRING(self->wf_prefix), pn) == 0) ||
                    s->present[K_WF_NAME] || s->present[K_WF_ID] || s->present[K_WF_TYPE]);
    }
    if (workflow) {
        outcome = GET(K_WF_OUTCOME);
        if (outcome == NULL && PyErr_Occurred()) return -1;
        int valid = 0;
        if (outcome != NULL) {
            /* (an outcome object found valid before in this scan: held in st, valid again) */
            for (int i = 0; i < st->nvalid_outcomes && !valid; i++) valid = st->valid_outcomes[i] == outcome;
            if (!valid) {
                valid = PySequence_Contains(self->outcomes, outcome);
                if (valid < 0) return -1;
                if (valid && st->nvalid_outcomes < VALID_OUTCOMES)
                    st->valid_outcomes[st->nvalid_outcomes++] = Py_NewRef(outcome);
            }
        }
        if (!valid) {
            if (!(failed || truthy(error_value))) outcome = self->s_success_outcome;
            else {
                int fallback;
                outcome = failed_outcome(self, s, error_value, &fallback);
                if (fallback) return 1;
                if (outcome == NULL) return -1;
            }
        }
    }
    if (kind == KIND_SERVER) {
        /* str.isdigit() accepts non-ASCII digits: such a status code goes to Python */
        PyObject *sc = GET(K_HTTP_STATUS);
        if (sc == NULL && PyErr_Occurred()) return -1;
        if (!truthy(sc)) {
            sc = GET(K_HTTP_STATUS_OLD);
            if (sc == NULL && PyErr_Occurred()) return -1;
        }
        if (sc != NULL && PyUnicode_GET_LENGTH(sc) == 3 && !PyUnicode_IS_ASCII(sc)) return 1;
    }
    /* (end - start) / 1e9 as Python computes it from the integers: the difference of two
     * uint64 times need not fit an int64 (an end 300 years before the start) */
    double duration =
        (s->end >= s->start ? (double)(s->end - s->start) : -(double)(s->start - s->end)) / 1e9;
    const char *component = NULL;
    PyObject *comp_obj = NULL;

    if (workflow) {
        /* the execution's duration when the workflow processor wrote it on the root (the
         * execution is below it): a double (AnyValue field 4); another encoding: Python's */
        double wf_duration = duration;
        if (s->present[K_WF_DURATION]) {
            slice v = s->values[K_WF_DURATION];
            if (v.n != 9 || v.p[0] != 0x21) return 1;
            uint64_t bits = 0;
            for (int i = 8; i >= 1; i--) bits = bits << 8 | v.p[i];
            double given;
            memcpy(&given, &bits, sizeof given);
            if (isfinite(given) && given >= 0) wf_duration = given;
        }
        PyObject *owned;
        PyObject *wf_type = workflow_type(self, s, &owned);
        if (wf_type == NULL) return -1;
        PyObject *tier = GET(K_WF_TIER);
        if (tier == NULL && PyErr_Occurred()) goto wf_error;
        if (!truthy(tier)) tier = self->s_unknown;
        PyObject *agent = workflow_agent(self, s);
        if (agent == NULL) goto wf_error;
        if (count_execution(self, st, s, wf_type, agent, outcome, tier, wf_duration) < 0) goto wf_error;
        Py_XDECREF(owned);
        component = "workflow";
        comp_obj = self->s_workflow;
        goto wf_done;
    wf_error:
        Py_XDECREF(owned);
        return -1;
    }
wf_done:

    if (tool) {
        PyObject *server = GET(K_MCP_SERVER);
        if (server == NULL && PyErr_Occurred()) return -1;
        if (!truthy(server)) {
            server = GET(K_SERVER_ADDRESS);
            if (server == NULL && PyErr_Occurred()) return -1;
        }
        if (!truthy(server)) server = self->s_unknown;
        PyObject *tool_name = GET(K_TOOL);
        if (tool_name == NULL && PyErr_Occurred()) return -1;
        PyObject *owned = NULL;
        if (!truthy(tool_name)) {
            Py_ssize_t i = s->name.n;
            while (i > 0 && s->name.p[i - 1] != ' ') i--;
            owned = PyUnicode_DecodeUTF8((const char *)s->name.p + i, s->name.n - i, "replace");
            if (owned == NULL) return -1;
            tool_name = PyUnicode_GET_LENGTH(owned) ? owned : self->s_unknown;
        }
        int tool_failed = failed || error_value != NULL;
        PyObject *status = tool_failed ? self->s_error : self->s_success;
        PyObject *etype = tool_failed ? error_label : self->s_none;
        entry *e = get_entry(&st->a, M_TOOL_CALLS, server, tool_name, status, etype);
        if (e == NULL) { Py_XDECREF(owned); return -1; }
        e->count++;
        e = get_entry(&st->a, M_TOOL_DURATION, server, tool_name, NULL, NULL);
        Py_XDECREF(owned);
        if (e == NULL) return -1;
        observe_scan(self, e, B_TOOL, duration, s->trace_id, s->span_id, ST_OFF(st, s->trace_id), ST_OFF(st, s->span_id));
        if (component == NULL) { component = "mcp"; comp_obj = self->s_mcp; }
    }
    if (kind == KIND_PRODUCER || kind == KIND_CONSUMER) {
        PyObject *mtype = GET(K_A2A_TYPE);
        if (mtype == NULL && PyErr_Occurred()) return -1;
        if (mtype != NULL) {
            if (!truthy(mtype)) mtype = self->s_unknown;
            if (kind == KIND_PRODUCER) {
                PyObject *rec = GET(K_A2A_RECIPIENT);
                if (rec == NULL && PyErr_Occurred()) return -1;
                if (!truthy(rec)) rec = self->s_unknown;
                PyObject *prio = GET(K_A2A_PRIORITY);
                if (prio == NULL && PyErr_Occurred()) return -1;
                if (!truthy(prio)) prio = self->s_unknown;
                entry *e = get_entry(&st->a, M_A2A_SENT, mtype, rec, prio, NULL);
                if (e == NULL) return -1;
                e->count++;
                if (self->cache_size) {
                    a2a_span *x = a2a_push(&st->producers);
                    if (x == NULL) return -1;
                    x->span_id = s->span_id;
                    x->start = s->start;
                }
            } else {
                PyObject *sender = GET(K_A2A_SENDER);
                if (sender == NULL && PyErr_Occurred()) return -1;
                if (!truthy(sender)) sender = self->s_unknown;
                PyObject *processing = GET(K_A2A_STATUS);
                if (processing == NULL && PyErr_Occurred()) return -1;
                if (processing == NULL) processing = failed ? self->s_failed : self->s_processed;
                entry *e = get_entry(&st->a, M_A2A_RECEIVED, mtype, sender, processing, NULL);
                if (e == NULL) return -1;
                e->count++;
                a2a_span *x = a2a_push(&st->pending);
                if (x == NULL) return -1;
                x->span_id = s->span_id;
                x->trace_id = s->trace_id;
                x->parent = s->parent;
                x->raw = s->raw;
                x->trace_off = s->trace_id.n ? st_off(st, s->trace_id.p) : 0;
                x->span_off = s->span_id.n ? st_off(st, s->span_id.p) : 0;
                x->start = s->start;
                x->message_type = mtype;
            }
            if (component == NULL) { component = "a2a"; comp_obj = self->s_a2a; }
        }
    }
    if (kind == KIND_SERVER) {
        PyObject *method = GET(K_HTTP_METHOD);
        if (method == NULL && PyErr_Occurred()) return -1;
        if (!truthy(method)) {
            method = GET(K_HTTP_METHOD_OLD);
            if (method == NULL && PyErr_Occurred()) return -1;
        }
        if (method != NULL) {
            PyObject *code = GET(K_HTTP_STATUS);
            if (code == NULL && PyErr_Occurred()) return -1;
            if (!truthy(code)) {
                code = GET(K_HTTP_STATUS_OLD);
                if (code == NULL && PyErr_Occurred()) return -1;
            }
            PyObject *cls = self->s_unknown;
            if (code != NULL && PyUnicode_GET_LENGTH(code) == 3) {
                const char *c = PyUnicode_AsUTF8(code);
                if (c == NULL) return -1;
                if (c[0] >= '0' && c[0] <= '9' && c[1] >= '0' && c[1] <= '9' && c[2] >= '0' && c[2] <= '9')
                    cls = self->s_class[c[0] - '0'];
            }
            PyObject *route = GET(K_HTTP_ROUTE);
            if (route == NULL && PyErr_Occurred()) return -1;
            if (!truthy(route)) route = self->s_unknown;
            entry *e = get_entry(&st->a, M_HTTP_DURATION, truthy(method) ? method : self->s_unknown,
                                 route, cls, NULL);
            if (e == NULL) return -1;
            observe_scan(self, e, B_HTTP, duration, s->trace_id, s->span_id, ST_OFF(st, s->trace_id), ST_OFF(st, s->span_id));
            if (component == NULL) { component = "http"; comp_obj = self->s_http; }
        }
    }
    if (failed) {
        PyObject *error_type = error_label;
        if (component == NULL) {
            if (s->present[K_DB_SYSTEM] || s->present[K_DB_SYSTEM_LEGACY]) comp_obj = self->s_database;
            else {
                PyObject *op = GET(K_OP);
                if (op == NULL && PyErr_Occurred()) return -1;
                int llm = 0;
                if (op != NULL) {
                    llm = PySet_Contains(self->llm_ops, op);
                    if (llm < 0) return -1;
                }
                if (llm) comp_obj = self->s_llm;
                else if (s->present[K_HTTP_METHOD] || s->present[K_HTTP_METHOD_OLD]) comp_obj = self->s_http;
                else comp_obj = self->s_agent;
            }
        }
        PyObject *severity = GET(K_ERROR_SEVERITY);
        if (severity == NULL && PyErr_Occurred()) return -1;
        if (severity == NULL) severity = comp_obj == self->s_workflow ? self->s_critical : self->s_error;
        PyObject *recoverable = GET(K_ERROR_RECOVERABLE);
        if (recoverable == NULL && PyErr_Occurred()) return -1;
        if (recoverable == NULL) {
            PyObject *code = GET(K_HTTP_STATUS);
            if (code == NULL && PyErr_Occurred()) return -1;
            if (!truthy(code)) {
                code = GET(K_HTTP_STATUS_OLD);
                if (code == NULL && PyErr_Occurred()) return -1;
            }
            int rec = PySet_Contains(self->recoverable, error_type);
            if (rec < 0) return -1;
            if (!rec && code != NULL) {
                const char *c = PyUnicode_AsUTF8(code);
                if (c == NULL) return -1;
                rec = c[0] == '5' || strcmp(c, "429") == 0;
            }
            recoverable = rec ? self->s_true : self->s_false;
        }
        entry *e = get_entry(&st->a, M_ERRORS, error_type, comp_obj, severity, recoverable);
        if (e == NULL) return -1;
        e->count++;
    }
    return 0;
}

/* -- shapes: what the Python side's memo of a deferred span is keyed by ---------------------- */

/* 0: not a shape key; 1: its entry (key and value) is part of the shape; 2: its presence */
static int is_shape_key(Scanner *self, slice key) {
    const keyent *e = keytab_find(self, key);
    return e != NULL ? e->shape : 0;
}

static __attribute__((noinline)) int scratch_grow(Scanner *self, Py_ssize_t need) {
    Py_ssize_t cap = self->scratch_cap ? self->scratch_cap : 512;
    while (cap < need) cap *= 2;
    uint8_t *b = PyMem_Realloc(self->scratch, cap);
    if (b == NULL) { PyErr_NoMemory(); return -1; }
    self->scratch = b;
    self->scratch_cap = cap;
    return 0;
}

static inline int scratch_put(Scanner *self, Py_ssize_t *used, uint8_t tag, const uint8_t *p, Py_ssize_t n) {
    Py_ssize_t need = *used + 1 + 10 + n;
    if (need > self->scratch_cap && scratch_grow(self, need) < 0) return -1;
    uint8_t *o = self->scratch + *used;
    *o++ = tag;
    uint64_t v = (uint64_t)n;
    do { uint8_t b = v & 0x7f; v >>= 7; *o++ = b | (v ? 0x80 : 0); } while (v);
    if (n) memcpy(o, p, n);
    *used = (o - self->scratch) + n;
    return 0;
}

/* The shape of a span left to Python: everything the Python side's reading of it depends on
 * apart from its ids and times and its resource and scope (which Python adds): the name, the
 * kind, whether it has a parent, the status message (as SpanView keeps it: the last one, raw)
 * and the attribute entries (raw, in order) whose key is a shape key. Two spans with equal
 * shapes (in one scope and resource) are read alike, so Python reads the first in full and
 * remembers the outcome when it is a plain tool-call layer or a link (connector.py,
 * ``_read_span``). Py_None when the span is not one SpanView surely parses as this walk reads
 * it: an attribute entry that is not well-formed or a non-ASCII attribute key (the Python path
 * then reads the span itself). New reference; NULL on error. */
static int span_shape_raw(Scanner *self, slice raw, Py_ssize_t *out);

static PyObject *span_shape(Scanner *self, slice raw) {
    Py_ssize_t used = 0;
    int rc = span_shape_raw(self, raw, &used);
    if (rc <= 0) return rc < 0 ? NULL : Py_NewRef(Py_None);
    return PyBytes_FromStringAndSize((const char *)self->scratch, used);
}

/* An attribute entry's part of the shape, put in self->scratch: 1, 0 when the span has no
 * shape (see span_shape), -1 on error. rec: what parse_span found of it (NULL: nothing). */
static inline __attribute__((always_inline)) int shape_entry(Scanner *self, slice entry, const attr_rec *rec,
                                                             Py_ssize_t *used) {
    slice key = {NULL, 0};
    const uint8_t *d = entry.p;
    Py_ssize_t n = entry.n;
    int which;
    /* the usual entry, read without the walk: the key (tag 0x0a, a one-byte length), then
     * nothing or only the value (entry_usual); anything else is walked */
    slice value;
    if (rec != NULL && (rec->flags & REC_HEAD) &&
        ((rec->flags & REC_USUAL) || entry_usual(d + 2 + d[1], d + n, &value))) {
        key.p = d + 2;
        key.n = d[1];
        const keyent *e = (rec->flags & REC_LOOKED) ? rec->e : keytab_find(self, key); /* (parse_span's) */
        if (e != NULL) {
            if (!e->ascii) return 0;
            which = e->shape;
        } else {
            if (!is_ascii(key)) return 0;
            which = 0;
        }
    } else {
        int usual = 0;
        if (n >= 2 && d[0] == 0x0a && d[1] < 0x80 && 2 + (Py_ssize_t)d[1] <= n &&
            entry_usual(d + 2 + d[1], d + n, &value)) {
            usual = 1;
            key.p = d + 2;
            key.n = d[1];
            if (!is_ascii(key)) return 0;
        }
        if (!usual) {
            reader er = {d, d + n};
            field ef;
            int erc;
            while ((erc = next_field(&er, &ef)) == 0) {
                if (ef.number == 1 && ef.wire == 2) {
                    if (!is_ascii(ef.data)) return 0;
                    key = ef.data;
                }
            }
            if (erc < 0) { PyErr_Clear(); return 0; }
        }
        which = key.p != NULL ? is_shape_key(self, key) : 0;
    }
    if ((which == 1 && scratch_put(self, used, 'a', entry.p, entry.n) < 0) ||
        (which == 2 && scratch_put(self, used, 'p', key.p, key.n) < 0))
        return -1;
    return 1;
}

/* the fixed part of a shape, after its attribute entries */
static int shape_tail(Scanner *self, Py_ssize_t *used, uint64_t kind, slice parent, slice name, slice status) {
    uint8_t head[9];
    memcpy(head, &kind, 8);
    head[8] = parent.n == 0;
    if (scratch_put(self, used, 'k', head, 9) < 0 || scratch_put(self, used, 'n', name.p, name.n) < 0 ||
        scratch_put(self, used, 's', status.p, status.n) < 0)
        return -1;
    return 0;
}

/* span_shape's work: 1 with the shape in self->scratch[0..*out), 0 when it has none (None), -1
 * on error */
static int span_shape_raw(Scanner *self, slice raw, Py_ssize_t *out) {
    slice name = {NULL, 0}, parent = {NULL, 0}, status = {NULL, 0};
    uint64_t kind = 0;
    reader r = {raw.p, raw.p + raw.n};
    field f;
    int rc;
    Py_ssize_t used = 0;
    /* the attribute entries first (in order), then the fixed part */
    while ((rc = next_field(&r, &f)) == 0) {
        switch (f.number) {
        case 4: if (f.wire == 2) parent = f.data; break;
        case 5: if (f.wire == 2) name = f.data; break;
        case 6: if (f.wire == 0) kind = f.value; break;
        case 15: if (f.wire == 2) status = f.data; break;
        case 9:
            if (f.wire == 2) {
                int has = shape_entry(self, f.data, NULL, &used);
                if (has <= 0) return has;
            }
            break;
        default: break;
        }
    }
    if (rc < 0) { PyErr_Clear(); return 0; }
    if (shape_tail(self, &used, kind, parent, name, status) < 0) return -1;
    *out = used;
    return 1;
}

/* span_shape_raw of a span parse_span read (s): from what it found, without walking the span
 * again (unless it has more attributes than it keeps) */
static int span_shape_of(Scanner *self, const span_info *s, Py_ssize_t *out) {
    if (s->nattrs > MAX_ATTR_RECS) return span_shape_raw(self, s->raw, out);
    Py_ssize_t used = 0;
    for (int i = 0; i < s->nattrs; i++) {
        int has = shape_entry(self, s->attrs[i].entry, &s->attrs[i], &used);
        if (has <= 0) return has;
    }
    if (shape_tail(self, &used, (uint64_t)s->kind, s->parent, s->name, s->status) < 0) return -1;
    *out = used;
    return 1;
}

/* the last field `number` (length-delimited) of a message, or an empty slice; -1 if malformed */
static int find_message(slice msg, int number, slice *out) {
    reader r = {msg.p, msg.p + msg.n};
    field f;
    int rc;
    out->p = NULL;
    out->n = 0;
    for (;;) {
        /* a length-delimited field of a one-byte tag and a length of one or two bytes (the spans
         * of a scope, mostly) skipped at once, as next_field reads it; anything else (and what
         * runs past the end: its error) read by next_field */
        const uint8_t *p = r.p;
        Py_ssize_t left = r.end - p;
        if (left >= 3 && p[0] >= 8 && p[0] < 0x80 && (p[0] & 7) == 2) {
            Py_ssize_t n = -1, h = 0;
            if (p[1] < 0x80) { n = p[1]; h = 2; }
            else if (p[2] < 0x80) { n = (Py_ssize_t)(p[1] & 0x7f) | ((Py_ssize_t)p[2] << 7); h = 3; }
            if (n >= 0 && n <= left - h) {
                if ((p[0] >> 3) == number) { out->p = p + h; out->n = n; }
                r.p = p + h + n;
                continue;
            }
        }
        if ((rc = next_field(&r, &f)) != 0) break;
        if (f.number == (uint32_t)number && f.wire == 2) *out = f.data;
    }
    return rc < 0 ? -1 : 0;
}

/* A tuple of the n objects given, stealing them (NULL items: NULL returned once all are
 * released, the error already set). Cheaper than Py_BuildValue's format string per span. */
static PyObject *tuple_steal(Py_ssize_t n, PyObject **items) {
    PyObject *t = NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (items[i] == NULL) goto error;
    if ((t = PyTuple_New(n)) == NULL) goto error;
    for (Py_ssize_t i = 0; i < n; i++) PyTuple_SET_ITEM(t, i, items[i]);
    return t;
error:
    for (Py_ssize_t i = 0; i < n; i++) Py_XDECREF(items[i]);
    return NULL;
}

/* A fallback item (see scan's docstring): the offsets, and with a shape (borrowed; Py_None
 * for none) the long form with the ids (a missing id as b"") and times. */
static PyObject *fallback_item(Py_ssize_t start, Py_ssize_t end, Py_ssize_t rs_start, Py_ssize_t rs_end,
                               Py_ssize_t sc_start, Py_ssize_t sc_end, PyObject *shape, slice trace,
                               slice span, slice parent, uint64_t t0, uint64_t t1) {
    PyObject *items[12] = {
        PyLong_FromSsize_t(start), PyLong_FromSsize_t(end), PyLong_FromSsize_t(rs_start),
        PyLong_FromSsize_t(rs_end), PyLong_FromSsize_t(sc_start), PyLong_FromSsize_t(sc_end),
    };
    if (shape == NULL) return tuple_steal(6, items);
    items[6] = Py_NewRef(shape);
    items[7] = PyBytes_FromStringAndSize((const char *)trace.p, trace.n);
    items[8] = PyBytes_FromStringAndSize((const char *)span.p, span.n);
    items[9] = PyBytes_FromStringAndSize((const char *)parent.p, parent.n);
    items[10] = PyLong_FromUnsignedLongLong(t0);
    items[11] = PyLong_FromUnsignedLongLong(t1);
    return tuple_steal(12, items);
}

/* -- the join's common case ------------------------------------------------------------------
 *
 * The tool-call join (plugins/agentmetricsconnector/calls.py) holds every tool-call layer and
 * failure of a trace for its join window. Most traces have neither failures nor join keys: each
 * of their layers is a call of its own, and most of their layers (and the agent runs a failure
 * could climb through: links) have a shape the Python side read before (see span_shape). Such
 * spans are not handed over one by one: when the Python side learned their shape (join_shapes:
 * (resource, scope, shape) -> series id, -1 for a link) and no other span of their trace is read
 * in Python in this request, the trace's spans of this request are packed into one record string
 * (RECORD bytes each) given in the fallback list as (trace_id, records, layers) at the place of
 * the trace's first layer (of its first link when it has none): the joiner holds it as it is,
 * and when the trace's window ends without anything else arriving for it, settle_simple counts
 * its calls here. Anything else arriving for the trace unpacks it in Python (calls.py), which
 * then goes on as it would have. Layers already counted (their parent is a settled layer:
 * join_settled) are dropped here as the joiner drops them (counted: take_late).
 *
 * The id-keyed join: a learned layer may carry a call id and a JSON-RPC id (join_learned: the
 * attribute each is read from, join_id_keys); the scanner reads them from the span (join_ids:
 * a plain non-empty UTF-8 string, the attribute once, else the span goes to Python) into the
 * ids string of the trace's packed item, drops the layers whose call or JSON-RPC key was
 * settled already (join_keys, as the joiner's _is_late), and settle_simple joins the layers as
 * calls.py _group does (settle_joined). A span of a link-only shape (join_shapes -2: read in
 * Python for metrics of its own, a parent link at most to the join: inference spans, agent
 * runs) is handed over without touching its trace (see link_only_clashes).
 *
 * Failed spans: a failed span whose shape was not learned is looked up again with its exception
 * type (failed_learned: the Python side's memo of failed spans is keyed by (shape, exception
 * type)). A failed tool-call layer learned so is packed as the others, flag 4 in its record and
 * its message (the status message, else the exception event's) after its ids; settle_simple
 * leaves its trace to the joiner (unpacked into Layer objects: settle_layers or the Python
 * settle). A failed span learned so as one that gives the join no layer (-3: a failure and its
 * parent link, read in Python) is handed over as a link-only span: its trace's layers may be
 * packed beside it (the joiner keeps a trace's Packed links when a failure of the same request
 * makes its entry). A failed workflow root learned so (-4, -5, -6) is counted here: see
 * failed_root. */

#define RECORD 40 /* kind, span id length, span id[8], parent length, parent[8], id flags, start, end, series */

/* 1 when s is valid UTF-8 as Python's strict decoder takes it (no overlong form, no surrogate,
 * nothing above U+10FFFF) */
static int utf8_valid(slice s) {
    const uint8_t *p = s.p, *end = s.p + s.n;
    for (uint64_t w; end - p >= 8; p += 8) { /* (ASCII a word at a time) */
        memcpy(&w, p, 8);
        if (w & 0x8080808080808080ULL) break;
    }
    while (p < end) {
        uint8_t c = *p;
        if (c < 0x80) { p++; continue; }
        int n;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) { n = 1; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { n = 2; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { n = 3; cp = c & 0x07; }
        else return 0;
        if (end - p <= n) return 0;
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        p += n + 1;
    }
    return 1;
}

#define JOIN_ID_MAX 65535 /* bytes of one id at most (its length is 2 bytes in the ids string) */

/* An attribute entry as join_id_of reads it: 1 with its key and value (*nval values: 0 or 1),
 * 0 when it is not surely read as here (the span is then read in Python) */
static inline int join_id_entry(slice entry, slice *k, slice *v, int *nval) {
    const uint8_t *d = entry.p;
    Py_ssize_t n = entry.n;
    *v = (slice){NULL, 0};
    /* the usual encoding (as parse_span's): the key (tag 0x0a, a one-byte length), then
     * nothing or the value (entry_usual): one key and at most one value, as the walk below
     * would find them */
    if (n >= 2 && d[0] == 0x0a && d[1] < 0x80 && d[1] + 2 <= n && entry_usual(d + 2 + d[1], d + n, v)) {
        *k = (slice){d + 2, d[1]};
        *nval = v->p != NULL;
        return 1;
    }
    int nkey = 0, other = 0;
    *k = (slice){NULL, 0};
    *nval = 0;
    reader kr = {d, d + n};
    field kf;
    int krc;
    while ((krc = next_field(&kr, &kf)) == 0) {
        if (kf.number == 1 && kf.wire == 2) { *k = kf.data; nkey++; }
        else if (kf.number == 2 && kf.wire == 2) { *v = kf.data; (*nval)++; }
        else other++;
    }
    if (krc < 0) { PyErr_Clear(); return 0; }
    return nkey == 1 && *nval <= 1 && !other;
}

/* join_id_of's reading of an entry of the key wanted (value v, nval values): 1 with the id in
 * *out (*found set), 0 when the span is not packed */
static int join_id_take(slice v, int nval, int *found, slice *out) {
    if (*found || nval != 1) return 0;
    reader vr = {v.p, v.p + v.n};
    field vf;
    if (next_field(&vr, &vf) != 0 || vf.number != 1 || vf.wire != 2 || vr.p != vr.end) {
        PyErr_Clear();
        return 0;
    }
    if (vf.data.n == 0 || vf.data.n > JOIN_ID_MAX || !utf8_valid(vf.data)) return 0;
    *out = vf.data;
    *found = 1;
    return 1;
}

/* A join id of a span (the id-keyed join): 1 and *out when the span has the attribute `key`
 * exactly once, as a KeyValue of that key and a value only, the value an AnyValue of one
 * string_value field only, non-empty, valid UTF-8 and at most JOIN_ID_MAX bytes: the string
 * the Python side reads (see _id_keys in connector.py); 0 for anything else, the span then
 * read in Python (never an error: a malformed span is the Python path's to report). */
static int join_id_of(slice raw, PyObject *key, slice *out) {
    slice want = {(const uint8_t *)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key)};
    reader r = {raw.p, raw.p + raw.n};
    field f;
    int rc, found = 0;
    for (;;) {
        /* a length-delimited field of a one-byte tag and a one-byte length (an attribute entry
         * mostly) taken at once, as next_field would; anything else read by next_field */
        const uint8_t *p = r.p;
        if (r.end - p >= 2 && p[0] >= 8 && p[0] < 0x80 && (p[0] & 7) == 2 && p[1] < 0x80 &&
            p[1] <= r.end - p - 2) {
            f.number = p[0] >> 3;
            f.wire = 2;
            f.data.p = p + 2;
            f.data.n = p[1];
            r.p = p + 2 + p[1];
        } else if ((rc = next_field(&r, &f)) != 0) {
            break;
        }
        if (f.number != 9 || f.wire != 2) continue;
        slice k, v;
        int nval;
        if (!join_id_entry(f.data, &k, &v, &nval)) return 0; /* (an entry not surely read as here) */
        if (slice_eq(k, want) && !join_id_take(v, nval, &found, out)) return 0;
    }
    if (rc < 0) { PyErr_Clear(); return 0; }
    return found;
}

/* join_id_of of a span parse_span read (s): from the attribute entries it found, without walking
 * the span again (unless it has more than it keeps) */
static int join_id_of_span(const span_info *s, PyObject *key, slice *out) {
    if (s->nattrs > MAX_ATTR_RECS) return join_id_of(s->raw, key, out);
    slice want = {(const uint8_t *)PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key)};
    int found = 0;
    for (int i = 0; i < s->nattrs; i++) {
        const attr_rec *rec = &s->attrs[i];
        slice k, v = {NULL, 0};
        int nval;
        if (rec->flags & REC_USUAL) { /* (one key, at most one value: read as join_id_entry would) */
            const uint8_t *d = rec->entry.p;
            k = (slice){d + 2, d[1]};
            if (!slice_eq(k, want)) continue;
            entry_usual(d + 2 + d[1], d + rec->entry.n, &v);
            nval = v.p != NULL;
        } else if ((rec->flags & REC_HEAD) && entry_usual(rec->entry.p + 2 + rec->entry.p[1],
                                                           rec->entry.p + rec->entry.n, &v)) {
            /* (the usual encoding, as join_id_entry's first case reads it, without the call) */
            const uint8_t *d = rec->entry.p;
            k = (slice){d + 2, d[1]};
            if (!slice_eq(k, want)) continue;
            nval = v.p != NULL;
        } else {
            if (!join_id_entry(rec->entry, &k, &v, &nval)) return 0;
            if (!slice_eq(k, want)) continue;
        }
        if (!join_id_take(v, nval, &found, out)) return 0;
    }
    return found;
}

/* The ids of a candidate layer of series `series` (see join_id_of), the span s: 1 with x->ids
 * and x->flags set (none: flags 0), 0 when the span is not packed (read in Python), -1 on error. */
static int join_ids(Scanner *self, long series, const span_info *s, held_item *x) {
    x->flags = 0;
    if (self->join_learned == NULL) return 1;
    if (series >= PyList_GET_SIZE(self->join_learned)) return 0; /* (not learned as such) */
    PyObject *reading = PyList_GET_ITEM(self->join_learned, series);
    if (!PyTuple_Check(reading) || (PyTuple_GET_SIZE(reading) != 9 && PyTuple_GET_SIZE(reading) != 12)) {
        PyErr_SetString(PyExc_TypeError, "join_learned: 9-tuples (12: a failed layer) expected");
        return -1;
    }
    for (int k = 0; k < 2; k++) {
        long at = PyLong_AsLong(PyTuple_GET_ITEM(reading, 7 + k));
        if (at == -1 && PyErr_Occurred()) return -1;
        if (at < 0) continue;
        if (at >= PyTuple_GET_SIZE(self->join_id_keys)) {
            PyErr_SetString(PyExc_ValueError, "join_learned: an id key out of join_id_keys");
            return -1;
        }
        if (!join_id_of_span(s, PyTuple_GET_ITEM(self->join_id_keys, at), &x->ids[k])) return 0;
        x->flags |= (uint8_t)(1 << k);
    }
    return 1;
}

/* the trace id as bytes.hex() gives it */
static PyObject *hex_of(PyObject *trace) {
    static const char digits[] = "0123456789abcdef";
    Py_ssize_t n = PyBytes_GET_SIZE(trace);
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(trace);
    PyObject *out = PyUnicode_New(2 * n, 127);
    if (out == NULL) return NULL;
    Py_UCS1 *o = PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        o[2 * i] = (Py_UCS1)digits[p[i] >> 4];
        o[2 * i + 1] = (Py_UCS1)digits[p[i] & 15];
    }
    return out;
}

/* A layer's keys in the joiner's memory of settled keys (calls.py, _remember_keys): the call
 * key ("call", trace, call id), and on a side other than the framework's (side != 0) the
 * JSON-RPC key ("rpc", trace hex, rpc id, tool) (its scope is the trace: a layer with a session
 * id is never packed). *hex: the trace in hex, made when first needed (owned by the caller).
 * New references in keys[0..1] (NULL: none); -1 on error (none made). */
static int join_keys_of(Scanner *self, PyObject *trace, PyObject **hex, const slice ids[2], uint8_t flags,
                        PyObject *reading, PyObject *keys[2]) {
    keys[0] = keys[1] = NULL;
    if (flags & 1) {
        PyObject *text = PyUnicode_DecodeUTF8((const char *)ids[0].p, ids[0].n, "strict");
        if (text == NULL) return -1;
        keys[0] = PyTuple_Pack(3, self->s_call, trace, text);
        Py_DECREF(text);
        if (keys[0] == NULL) return -1;
    }
    if (flags & 2) {
        long side = PyLong_AsLong(PyTuple_GET_ITEM(reading, 0));
        if (side == -1 && PyErr_Occurred()) goto fail;
        if (side != 0) {
            if (*hex == NULL && (*hex = hex_of(trace)) == NULL) goto fail;
            PyObject *text = PyUnicode_DecodeUTF8((const char *)ids[1].p, ids[1].n, "strict");
            if (text == NULL) goto fail;
            keys[1] = PyTuple_Pack(4, self->s_rpc, *hex, text, PyTuple_GET_ITEM(reading, 1));
            Py_DECREF(text);
            if (keys[1] == NULL) goto fail;
        }
    }
    return 0;
fail:
    Py_CLEAR(keys[0]);
    return -1;
}

static held_item *held_push(scan_state *st) {
    if (st->nheld == st->capheld) {
        Py_ssize_t cap = st->capheld ? st->capheld * 2 : 256;
        held_item *h = PyMem_Realloc(st->held, cap * sizeof(held_item));
        if (h == NULL) { PyErr_NoMemory(); return NULL; }
        st->held = h;
        st->capheld = cap;
    }
    held_item *x = &st->held[st->nheld++];
    memset(x, 0, sizeof(*x));
    return x;
}

static void held_clear(Scanner *self, scan_state *st) {
    for (Py_ssize_t i = 0; i < st->nheld; i++) {
        Py_CLEAR(st->held[i].item);
        Py_CLEAR(st->held[i].shape);
    }
    keep_buffer(&self->keep_held, &self->keep_held_cap, st->held, st->capheld, sizeof(held_item));
    st->held = NULL;
    st->nheld = st->capheld = 0;
}

static uint64_t hash_mem(const uint8_t *p, Py_ssize_t n, uint64_t h) {
    h ^= (uint64_t)n * 0x9E3779B97F4A7C15ULL;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
        h ^= h >> 29;
    }
    uint64_t w = 0;
    if (i < n) memcpy(&w, p + i, n - i);
    h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
    return h ^ (h >> 32);
}

/* The hash of a shape (learned, failed_learned): two words at a time in two lanes, mixed at the
 * end (hash_mem's mixing per word costs more on shapes of a few hundred bytes). Its values are
 * only compared with each other (learned_cache, failed_miss): a collision costs a comparison,
 * or leaves a failed span to Python (failed_learned). */
static uint64_t shape_hash(const uint8_t *p, Py_ssize_t n, uint64_t h) {
    uint64_t a = h ^ ((uint64_t)n * 0x9E3779B97F4A7C15ULL), b = 0xC2B2AE3D27D4EB4FULL ^ (h >> 7);
    Py_ssize_t i = 0;
    for (; i + 16 <= n; i += 16) {
        uint64_t w0, w1;
        memcpy(&w0, p + i, 8);
        memcpy(&w1, p + i + 8, 8);
        a = (a ^ w0) * 0x9E3779B97F4A7C15ULL;
        b = (b ^ w1) * 0xBF58476D1CE4E5B9ULL;
        a ^= b >> 32;
    }
    if (i + 8 <= n) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        a = (a ^ w) * 0x9E3779B97F4A7C15ULL;
        i += 8;
    }
    uint64_t w = 0;
    if (i < n) memcpy(&w, p + i, (size_t)(n - i));
    b = (b ^ w) * 0xBF58476D1CE4E5B9ULL;
    uint64_t x = a ^ ((b << 31) | (b >> 33));
    x ^= x >> 29;
    x *= 0x94D049BB133111EBULL;
    return x ^ (x >> 32);
}

static void learned_forget(Scanner *self) {
    self->failed_miss_size = -1; /* (failed_learned's misses forgotten too) */
    self->learned_miss_size = -1;
    if (self->learned_cache == NULL || self->learned_used == 0) return;
    for (Py_ssize_t i = 0; i < LEARNED_SLOTS; i++) Py_CLEAR(self->learned_cache[i].key);
    self->learned_used = 0;
}

static inline int bytes_is(PyObject *b, const uint8_t *p, Py_ssize_t n) {
    return PyBytes_GET_SIZE(b) == n && (n == 0 || memcmp(PyBytes_AS_STRING(b), p, n) == 0);
}

/* 1 and *series when the Python side learned the shape in self->scratch[0..used) in the current
 * resource and scope, 0 when not, -1 on error. *shape: NULL, or that shape as bytes (a new
 * reference: made for the dict lookup, when the answer is 0 but for a miss remembered, see
 * learned_miss). What the dict gave is
 * remembered by content (learned_cache): a shape learned is looked up in C the next times,
 * until the Python side removes or changes shapes (and calls forget_shapes). What is not there
 * is not remembered (the Python side may add it). */
static int learned(Scanner *self, scan_state *st, Py_ssize_t used, long *series, PyObject **shape,
                   uint64_t *hash) {
    /* (the current resource and scope: in the part being scanned, absent ones (0, 0) empty) */
    Py_ssize_t nres = st->rs_end - st->rs_start, nscope = st->sc_end - st->sc_start;
    const uint8_t *res = nres ? st->part + (st->rs_start - st->part_off) : st->part;
    const uint8_t *scope = nscope ? st->part + (st->sc_start - st->part_off) : st->part;
    *shape = NULL;
    if (st->ctx_hash == 0) st->ctx_hash = hash_mem(scope, nscope, hash_mem(res, nres, 1)) | 1;
    /* (*hash given: the hash of a key made of the one before it and more, see failed_learned) */
    int plain = *hash == 0;
    uint64_t h = plain ? shape_hash(self->scratch, used, st->ctx_hash) : *hash;
    *hash = h;
    learned_slot *cache = self->learned_cache;
    size_t i = (size_t)h & (LEARNED_SLOTS - 1);
    for (;;) {
        learned_slot *x = &cache[i];
        if (x->key == NULL) break;
        if (x->hash == h && bytes_is(PyTuple_GET_ITEM(x->key, 2), self->scratch, used)) {
            /* (the resource and scope objects found equal before in this scope are held in st:
             * the same object again is equal without comparing) */
            PyObject *kres = PyTuple_GET_ITEM(x->key, 0), *kscope = PyTuple_GET_ITEM(x->key, 1);
            int same = (kres == st->same_res || bytes_is(kres, res, nres)) &&
                       (kscope == st->same_scope || bytes_is(kscope, scope, nscope));
            if (same && x->series < PyList_GET_SIZE(self->join_series)) {
                if (kres != st->same_res) Py_XSETREF(st->same_res, Py_NewRef(kres));
                if (kscope != st->same_scope) Py_XSETREF(st->same_scope, Py_NewRef(kscope));
                *series = x->series;
                return 1;
            }
        }
        i = (i + 1) & (LEARNED_SLOTS - 1);
    }
    /* a plain shape missed before, join_shapes unchanged since: missed again without making
     * the key (a failed span's: see learned_miss) */
    Py_ssize_t size = PyDict_GET_SIZE(self->join_shapes);
    if (self->learned_miss_size != size) {
        memset(self->learned_miss, 0, sizeof(self->learned_miss));
        self->learned_miss_size = size;
    }
    uint64_t *miss = &self->learned_miss[h & (FAILED_MISSES - 1)];
    if (plain && *miss == (h | 1)) return 0;
    if (st->res_obj == NULL) {
        st->res_obj = PyBytes_FromStringAndSize((const char *)res, nres);
        if (st->res_obj == NULL) return -1;
    }
    if (st->scope_obj == NULL) {
        st->scope_obj = PyBytes_FromStringAndSize((const char *)scope, nscope);
        if (st->scope_obj == NULL) return -1;
    }
    *shape = PyBytes_FromStringAndSize((const char *)self->scratch, used);
    if (*shape == NULL) return -1;
    PyObject *key = PyTuple_Pack(3, st->res_obj, st->scope_obj, *shape);
    if (key == NULL) return -1;
    PyObject *v = PyDict_GetItemWithError(self->join_shapes, key); /* borrowed */
    if (v == NULL) {
        Py_DECREF(key);
        if (PyErr_Occurred()) return -1;
        if (plain && size == PyDict_GET_SIZE(self->join_shapes)) *miss = h | 1;
        return 0;
    }
    long n = PyLong_Check(v) ? PyLong_AsLong(v) : -2;
    if (!PyLong_Check(v)) PyErr_SetString(PyExc_TypeError, "join shapes map to int");
    else if (!(n == -1 && PyErr_Occurred()) && (n < -6 || n >= PyList_GET_SIZE(self->join_series)))
        PyErr_SetString(PyExc_ValueError, "join shape maps to no series");
    if (PyErr_Occurred()) { Py_DECREF(key); return -1; }
    if (self->learned_used >= LEARNED_SLOTS * 3 / 4) { /* full: started again */
        learned_forget(self);
        i = (size_t)h & (LEARNED_SLOTS - 1);
    }
    cache[i].hash = h;
    cache[i].key = key; /* owned */
    cache[i].series = n;
    self->learned_used++;
    *series = n;
    return 1;
}

static inline void put_u64(uint8_t *o, uint64_t v) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(o, &v, 8); /* (the bytes below, least significant first) */
#else
    for (int i = 0; i < 8; i++) o[i] = (uint8_t)(v >> (8 * i));
#endif
}
static uint64_t get_u64(const uint8_t *o) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | o[i];
    return v;
}

static void write_record(uint8_t *o, held_item *x) {
    memset(o, 0, RECORD);
    o[0] = x->series >= 0;
    o[1] = (uint8_t)x->span.n;
    memcpy(o + 2, x->span.p, x->span.n);
    o[10] = (uint8_t)x->parent.n;
    if (x->parent.n) memcpy(o + 11, x->parent.p, x->parent.n);
    o[19] = x->series >= 0 ? x->flags : 0;
    put_u64(o + 20, x->start);
    put_u64(o + 28, x->end);
    uint32_t series = x->series >= 0 ? (uint32_t)x->series : 0;
    for (int i = 0; i < 4; i++) o[36 + i] = (uint8_t)(series >> (8 * i));
}

typedef struct {
    PyObject *trace, *records; /* owned: the trace id, its record string (made once its size known) */
    PyObject *ids, *hex;       /* owned: its ids string (see Packed in calls.py), the trace in hex */
    long layers;
    Py_ssize_t first, first_link, count, filled; /* count: its records */
    Py_ssize_t id_bytes, id_filled;
} join_group;

/* A link-only span (read in Python, see held_item) gives the joiner its parent link after the
 * links of the trace's packed records (calls.py add), where the Python path has the links in
 * request order: the same parents unless a span id comes twice. A trace where a link-only span
 * has the span id of another span left to Python (packed or link-only) is touched: all of it
 * goes to Python. */
static int link_only_clashes(scan_state *st) {
    /* (a trace is touched when a link-only span's (trace, span) is another's of the spans left to
     * Python, packed or link-only: the link-only spans' keys first, then the others' looked up
     * among them) */
    smap seen = {NULL, 0, 0};
    uint8_t *keys = PyMem_Malloc(st->nlink_only * 24 + 24);
    int rc = -1;
    if (keys == NULL) { PyErr_NoMemory(); return -1; }
    if (smap_reserve(&seen, st->nlink_only) < 0) goto done;
    Py_ssize_t nkeys = 0;
    for (Py_ssize_t i = 0; i < st->nheld; i++) {
        held_item *x = &st->held[i];
        if (!x->link_only) continue;
        if (x->trace.n != 16 || x->span.n > 8) { /* (not packed: see scan_spans) */
            if (smap_put(&st->touched, x->trace, 0) < 0) goto done;
            continue;
        }
        if (nkeys >= st->nlink_only) break; /* (cannot be: nlink_only counts them) */
        uint8_t *k = keys + nkeys++ * 24;
        memcpy(k, x->trace.p, 16);
        memcpy(k + 16, x->span.p, x->span.n);
        slice key = {k, 16 + x->span.n};
        if (smap_find(&seen, key) < 0) {
            if (smap_put(&seen, key, i) < 0) goto done;
        } else if (smap_put(&st->touched, x->trace, 0) < 0) {
            goto done;
        }
    }
    uint8_t *k = keys + st->nlink_only * 24; /* (the lookups' key) */
    for (Py_ssize_t i = 0; seen.used && i < st->nheld; i++) {
        held_item *x = &st->held[i];
        if (x->item != NULL || x->trace.n != 16 || x->span.n > 8) continue;
        memcpy(k, x->trace.p, 16);
        memcpy(k + 16, x->span.p, x->span.n);
        slice key = {k, 16 + x->span.n};
        if (smap_find(&seen, key) >= 0 && smap_put(&st->touched, x->trace, 0) < 0) goto done;
    }
    rc = 0;
done:
    smap_free(&seen);
    PyMem_Free(keys);
    return rc;
}

/* -- the join's memory keys from raw data (finish_join, settle_simple, settle_joined) ----------
 *
 * The join looks up and puts keys made of a trace id, a span id and ids read from the wire:
 * (trace, span) and ("call", trace, call id). Made as Python objects, each costs a bytes or
 * str per leaf and a tuple, and the Memory then encodes the tuple (mem_encode) and hashes it.
 * A key given by its leaves (mem_leaf: its data, bytes or str) is encoded and hashed here
 * directly when the memory is a Memory and every leaf is bytes or ASCII text of fewer than 128
 * bytes (the encoding of mem_encode's fast path; the hash CPython's hash() of the tuple: each
 * leaf's hash is that of its bytes, as bytes and 1-byte str hash, combined as tuplehash does),
 * so the memory finds the same entries as with the key made; any other key or memory (an
 * OrderedDict) gets the key made (mem_leaves_key) and the object paths. */

static int memory_put(PyObject *items, PyObject *key, PyObject *value);

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
    int str; /* text (UTF-8): a str leaf */
    /* (optional) an exact bytes or str object of this data (a str: ASCII), whose hash (cached
     * in it once computed) is the leaf's: a trace id or "call" hashed once, not per key */
    PyObject *obj;
} mem_leaf;

#define MEM_RAW_LEAVES 4
#define MEM_RAW_CAP (MEM_RAW_LEAVES * 130 + 2)
#if MEM_RAW_CAP < MEM_PROBE_CAP
#error "a raw key's room holds the longest key mem_probe takes"
#endif

static inline Py_hash_t mem_hash_bytes(const uint8_t *p, Py_ssize_t n) {
#if PY_VERSION_HEX >= 0x030E0000
    return Py_HashBuffer(p, n);
#else
    return _Py_HashBytes(p, n);
#endif
}

/* the key's encoding written at out (MEM_RAW_CAP bytes) and its hash in *hash: the encoding's
 * length, or 0 when the key is not raw (a leaf of 128 bytes or more, non-ASCII text) */
static Py_ssize_t mem_raw_key(const mem_leaf *lv, int n, char *out, Py_hash_t *hash) {
    /* (the encoding at most MEM_PROBE_CAP bytes: looked up in mem_probe) */
#if PY_VERSION_HEX >= 0x030F0000
    return 0; /* (tuplehash as of 3.8 to 3.14: later versions take the object path) */
#else
    /* tuplehash (Objects/tupleobject.c) on 64-bit or 32-bit Py_uhash_t */
#if SIZEOF_PY_UHASH_T > 4
    const Py_uhash_t p1 = 11400714785074694791ULL, p2 = 14029467366897019727ULL, p5 = 2870177450012600261ULL;
#define MEM_ROTATE(x) (((x) << 31) | ((x) >> 33))
#else
    const Py_uhash_t p1 = 2654435761UL, p2 = 2246822519UL, p5 = 374761393UL;
#define MEM_ROTATE(x) (((x) << 13) | ((x) >> 19))
#endif
    if (n < 1 || n > MEM_RAW_LEAVES) return 0;
    Py_uhash_t acc = p5;
    Py_ssize_t k = 2;
    out[0] = MK_TUPLE;
    out[1] = (char)n;
    for (int i = 0; i < n; i++) {
        const mem_leaf *x = &lv[i];
        if (x->n >= 128) return 0;
        if (x->str) {
            /* (ASCII only: 8 bytes at a time, then the rest) */
            uint64_t high = 0, w;
            Py_ssize_t j = 0;
            for (; j + 8 <= x->n; j += 8) {
                memcpy(&w, x->p + j, 8);
                high |= w;
            }
            for (; j < x->n; j++) high |= x->p[j];
            if (high & 0x8080808080808080ULL) return 0;
            out[k++] = MK_STR;
            out[k++] = 1;
        } else {
            out[k++] = MK_BYTES;
        }
        out[k++] = (char)x->n;
        if (x->n) memcpy(out + k, x->p, (size_t)x->n);
        k += x->n;
        if (k > MEM_PROBE_CAP) return 0;
        /* (exact bytes and str only: a subclass may hash otherwise; they never fail) */
        Py_hash_t h = x->obj != NULL && (PyBytes_CheckExact(x->obj) || PyUnicode_CheckExact(x->obj))
                          ? PyObject_Hash(x->obj) : -1;
        if (h == -1) h = mem_hash_bytes(x->p, x->n);
        assert(x->obj == NULL || h == mem_hash_bytes(x->p, x->n));
        Py_uhash_t lane = (Py_uhash_t)h;
        if (lane == (Py_uhash_t)-1) lane = (Py_uhash_t)-2; /* (as bytes and str hash it) */
        acc += lane * p2;
        acc = MEM_ROTATE(acc);
        acc *= p1;
    }
#undef MEM_ROTATE
    acc += (Py_uhash_t)n ^ (p5 ^ 3527539UL);
    *hash = acc == (Py_uhash_t)-1 ? 1546275796 : (Py_hash_t)acc;
    return k;
#endif
}

/* the key of the leaves as a tuple of bytes and str (a new reference), NULL on error */
static PyObject *mem_leaves_key(const mem_leaf *lv, int n) {
    PyObject *key = PyTuple_New(n);
    if (key == NULL) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *o = lv[i].str ? PyUnicode_DecodeUTF8((const char *)lv[i].p, lv[i].n, "strict")
                                : PyBytes_FromStringAndSize((const char *)lv[i].p, lv[i].n);
        if (o == NULL) {
            Py_DECREF(key);
            return NULL;
        }
        PyTuple_SET_ITEM(key, i, o);
    }
    return key;
}

/* memory_contains of the key of the leaves: 1, 0, or -1 on error */
static int memory_contains_leaves(PyObject *items, const mem_leaf *lv, int n) {
    char raw[MEM_RAW_CAP];
    Py_hash_t hash;
    Py_ssize_t k;
    if (Py_IS_TYPE(items, &MemoryType)) { /* (its trace filter first: see MemoryObject) */
        MemoryObject *m = (MemoryObject *)items;
        if (m->tf == NULL && tf_build(m) < 0) return -1;
        int i = 0;
        while (i < n && (lv[i].str || lv[i].n != 16)) i++;
        if (i == n) {
            if (!m->tf_none) return 0;
        } else {
            size_t b = tf_index(tf_word(lv[i].p));
            if (!(m->tf[b >> 6] & (1ull << (b & 63)))) return 0;
        }
    }
    if (Py_IS_TYPE(items, &MemoryType) && (k = mem_raw_key(lv, n, raw, &hash)) > 0) {
        if (mem_probe == NULL && (mem_probe = PyBytes_FromStringAndSize(NULL, MEM_PROBE_CAP)) == NULL)
            return -1;
        memcpy(PyBytes_AS_STRING(mem_probe), raw, (size_t)k); /* (k <= MEM_PROBE_CAP: mem_raw_key) */
        Py_SET_SIZE(mem_probe, k);
        return rc_find(&((MemoryObject *)items)->mem, mem_probe, hash, mem_eq) >= 0;
    }
    PyObject *key = mem_leaves_key(lv, n);
    if (key == NULL) return -1;
    int found = memory_contains(items, key);
    Py_DECREF(key);
    return found;
}

/* memory_put of the key of the leaves: 0, or -1 on error */
static int memory_put_leaves(PyObject *items, const mem_leaf *lv, int n, PyObject *value) {
    char raw[MEM_RAW_CAP];
    Py_hash_t hash;
    Py_ssize_t k;
    if (Py_IS_TYPE(items, &MemoryType) && (k = mem_raw_key(lv, n, raw, &hash)) > 0) {
        rc_memory *mem = &((MemoryObject *)items)->mem;
        if (mem_probe == NULL && (mem_probe = PyBytes_FromStringAndSize(NULL, MEM_PROBE_CAP)) == NULL)
            return -1;
        memcpy(PyBytes_AS_STRING(mem_probe), raw, (size_t)k);
        Py_SET_SIZE(mem_probe, k);
        Py_ssize_t at = rc_find(mem, mem_probe, hash, mem_eq);
        if (at >= 0) { /* (there: moved to the end, its value replaced, as mem_put does) */
            Py_ssize_t x = mem->table[at].index - 1;
            rc_move_to_end(mem, x);
            Py_SETREF(mem->nodes[x].value, Py_NewRef(value));
            return 0;
        }
        PyObject *blob = PyBytes_FromStringAndSize(raw, k);
        if (blob == NULL) return -1;
        int done = mem_rc_put((MemoryObject *)items, blob, hash, value);
        Py_DECREF(blob);
        return done;
    }
    PyObject *key = mem_leaves_key(lv, n);
    if (key == NULL) return -1;
    int done = memory_put(items, key, value);
    Py_DECREF(key);
    return done;
}

/* The fallback list in request order, the packed traces in it (see above). */
static int finish_join(Scanner *self, scan_state *st) {
    smap index = {NULL, 0, 0}; /* trace -> its group */
    join_group *groups = NULL;
    PyObject *pending_hex = NULL; /* the hex of a trace whose group is not made yet */
    Py_ssize_t ngroups = 0;
    int rc = -1;
    /* (the kept buffer, see take_buffer: a group zeroed when made) */
    Py_ssize_t groups_cap;
    groups = take_buffer(&self->keep_groups, &self->keep_groups_cap, &groups_cap);
    if (groups_cap < st->nheld) {
        PyMem_Free(groups);
        groups_cap = st->nheld;
        groups = st->nheld ? PyMem_Malloc(st->nheld * sizeof(join_group)) : NULL;
        if (st->nheld && groups == NULL) { PyErr_NoMemory(); goto done; }
    }
    if (st->nlink_only && link_only_clashes(st) < 0) goto done;
    /* (the spans of a trace come one after the other, mostly: the last trace's lookups kept) */
    slice last = {NULL, -1};
    int last_touched = 0;
    Py_ssize_t last_k = -1;
    for (Py_ssize_t i = 0; i < st->nheld; i++) {
        held_item *x = &st->held[i];
        if (x->item != NULL) continue;
        if (!slice_eq(last, x->trace)) {
            last = x->trace;
            last_touched = smap_find(&st->touched, x->trace) >= 0;
            last_k = smap_find(&index, x->trace);
        }
        if (last_touched) {
            x->group = -1;
            continue;
        }
        Py_ssize_t k = last_k;
        PyObject *trace = k >= 0 ? Py_NewRef(groups[k].trace) : bytes_of(x->trace);
        if (trace == NULL) goto done;
        if (x->series >= 0) {
            /* (the keys (trace, parent) and ("call", trace, call id) looked up by their data: see
             * mem_leaf) */
            mem_leaf pk[2] = {{x->trace.p, x->trace.n, 0, trace}, {x->parent.p, x->parent.n, 0, NULL}};
            int late = memory_contains_leaves(self->join_settled, pk, 2);
            if (!late && (x->flags & 3)) { /* a call or JSON-RPC key already settled (_is_late) */
                PyObject *reading = PyList_GET_ITEM(self->join_learned, x->series);
                PyObject **hex = k >= 0 ? &groups[k].hex : &pending_hex;
                if (x->flags & 1) { /* ("call", trace, call id), as join_keys_of makes it */
                    mem_leaf ck[3] = {{(const uint8_t *)"call", 4, 1, self->s_call},
                                      {x->trace.p, x->trace.n, 0, trace}, {x->ids[0].p, x->ids[0].n, 1, NULL}};
                    late = memory_contains_leaves(self->join_keys, ck, 3);
                }
                /* (the JSON-RPC key as join_keys_of makes it: a new tuple, owned) */
                PyObject *rk[2];
                if (!late && (x->flags & 2)) {
                    if (join_keys_of(self, trace, hex, x->ids, 2, reading, rk) < 0) {
                        late = -1;
                    } else if (rk[1] != NULL) {
                        late = memory_contains(self->join_keys, rk[1]);
                        Py_DECREF(rk[1]);
                    }
                }
            }
            if (late) {
                Py_DECREF(trace);
                Py_CLEAR(pending_hex);
                if (late < 0) goto done;
                x->group = -2;
                self->join_late++;
                continue;
            }
        }
        if (k < 0) {
            k = ngroups++;
            memset(&groups[k], 0, sizeof(join_group));
            groups[k].trace = trace; /* owned */
            groups[k].hex = pending_hex; /* owned (or NULL) */
            pending_hex = NULL;
            groups[k].first = groups[k].first_link = -1;
            if (smap_put(&index, x->trace, k) < 0) goto done;
            last_k = k;
        } else {
            Py_DECREF(trace);
        }
        join_group *jg = &groups[k];
        jg->count++;
        if (x->series >= 0) {
            if (jg->first < 0) jg->first = i;
            jg->layers++;
            for (int j = 0; j < 3; j++)
                if (x->flags & (1 << j)) jg->id_bytes += 2 + x->ids[j].n;
        } else if (jg->first_link < 0) {
            jg->first_link = i;
        }
        x->group = k;
    }
    /* the record strings, in request order */
    for (Py_ssize_t i = 0; i < st->nheld; i++) {
        held_item *x = &st->held[i];
        if (x->item != NULL || x->group < 0) continue;
        join_group *jg = &groups[x->group];
        if (jg->records == NULL && (jg->records = PyBytes_FromStringAndSize(NULL, jg->count * RECORD)) == NULL)
            goto done;
        if (jg->ids == NULL && (jg->ids = PyBytes_FromStringAndSize(NULL, jg->id_bytes)) == NULL)
            goto done;
        write_record((uint8_t *)PyBytes_AS_STRING(jg->records) + jg->filled++ * RECORD, x);
        for (int j = 0; j < 3; j++) {
            if (!(x->flags & (1 << j))) continue;
            uint8_t *o = (uint8_t *)PyBytes_AS_STRING(jg->ids) + jg->id_filled;
            o[0] = (uint8_t)(x->ids[j].n & 0xff);
            o[1] = (uint8_t)(x->ids[j].n >> 8);
            memcpy(o + 2, x->ids[j].p, x->ids[j].n);
            jg->id_filled += 2 + x->ids[j].n;
        }
    }
    for (Py_ssize_t i = 0; i < st->nheld; i++) {
        held_item *x = &st->held[i];
        PyObject *item = NULL;
        if (x->item != NULL) {
            item = Py_NewRef(x->item);
        } else if (x->group == -1) {
            slice raw = {x->at, x->off_end - x->off_start};
            if (x->shape == NULL) { /* (not made when found in learned_cache) */
                if ((x->shape = span_shape(self, raw)) == NULL) goto done;
            }
            if (x->flags & 4) { /* a failed layer not packed after all: its facts, as scan_spans keeps them */
                span_info s;
                if (parse_span(self, raw, &s) < 0 || keep_failure(self, &s, x->off_start) < 0) goto done;
            }
            item = fallback_item(x->off_start, x->off_end, x->rs_start, x->rs_end, x->sc_start,
                                 x->sc_end, x->shape, x->trace, x->span, x->parent, x->start, x->end);
        } else if (x->group >= 0) {
            join_group *jg = &groups[x->group];
            if (i == (jg->layers ? jg->first : jg->first_link)) {
                PyObject *items[4] = {Py_NewRef(jg->trace), Py_NewRef(jg->records),
                                      PyLong_FromLong(jg->layers), Py_NewRef(jg->ids)};
                item = tuple_steal(4, items);
            } else {
                continue;
            }
        } else {
            continue; /* late */
        }
        if (item == NULL) goto done;
        if (PyList_Append(st->fallback, item) < 0) { Py_DECREF(item); goto done; }
        Py_DECREF(item);
    }
    rc = 0;
done:
    for (Py_ssize_t k = 0; k < ngroups; k++) {
        Py_XDECREF(groups[k].trace);
        Py_XDECREF(groups[k].records);
        Py_XDECREF(groups[k].ids);
        Py_XDECREF(groups[k].hex);
    }
    Py_XDECREF(pending_hex);
    keep_buffer(&self->keep_groups, &self->keep_groups_cap, groups, groups_cap, sizeof(join_group));
    smap_free(&index);
    return rc;
}

/* A failed span whose shape the Python side did not learn: its shape with its exception type
 * (the Python side's memo of failed spans is keyed by (shape, exception type): connector.py,
 * _read_span) looked up in join_shapes, as a 'x' entry after the shape. 1 with *series (a failed
 * tool-call layer's series, or -3: a failed span that gives the join no layer, read in Python
 * without touching its trace, as a link-only span) and *msg (the layer's message: the status
 * message, else the exception event's message, as the Python side's failure facts give them)
 * when learned; 0 when not, or when those facts are not all ASCII (take_failures has none: the
 * Python side reads the span in full); -1 on error. Writes self->scratch beyond `used` only. */
static int failed_learned(Scanner *self, scan_state *st, span_info *s, Py_ssize_t used, uint64_t plain,
                          long *series, slice *msg) {
    slice exc = {(const uint8_t *)"", 0}, emsg = {(const uint8_t *)"", 0};
    int found;
    if (exception_attr_of(s->raw, "exception.type", 14, &exc, &found) < 0 ||
        exception_attr_of(s->raw, "exception.message", 17, &emsg, &found) < 0) {
        PyErr_SetString(PyExc_ValueError, "malformed span event");
        return -1;
    }
    slice status = s->status_message.p ? s->status_message : (slice){(const uint8_t *)"", 0};
    if (!is_ascii(status) || !is_ascii(exc) || !is_ascii(emsg)) return 0;
    Py_ssize_t ext = used;
    if (scratch_put(self, &ext, 'x', exc.p, exc.n) < 0) return -1;
    /* its hash: the x entry's chained to the shape's (`plain`, learned's: not the whole key
     * hashed again); a key missed before, join_shapes unchanged since: missed again without the
     * dict lookup (its shape and key objects made); a hash that is another key's only leaves the
     * span to Python */
    uint64_t h = shape_hash(self->scratch + used, ext - used, plain) | 2;
    Py_ssize_t size = PyDict_GET_SIZE(self->join_shapes);
    if (self->failed_miss_size != size) {
        memset(self->failed_miss, 0, sizeof(self->failed_miss));
        self->failed_miss_size = size;
    }
    uint64_t *miss = &self->failed_miss[h & (FAILED_MISSES - 1)];
    if (*miss == h) return 0;
    PyObject *shape = NULL;
    int known = learned(self, st, ext, series, &shape, &h);
    Py_XDECREF(shape);
    if (known == 0 && size == PyDict_GET_SIZE(self->join_shapes)) *miss = h;
    if (known <= 0) return known;
    if (*series == -1 || *series == -2) return 0; /* (never learned so) */
    *msg = status.n ? status : emsg;
    return 1;
}

/* -- failed workflow roots ------------------------------------------------------------------
 *
 * A failed workflow root whose shape and exception type the Python side read before (its memo's
 * (shape, exception type, True): connector.py _read_span) is learned in join_shapes as -4 (its
 * failure goes to the joiner), -5 (so, a failure the peer answered with: Failure.peer) or -6
 * (the dialect's status report: no failure for the joiner). Such a root is counted here: its
 * execution (count_execution, from root_facts) and, for -4 and -5, its failure handed over as
 * the fallback list's Failure arguments (trace id, span id, parent, errors_total labels,
 * exception type, start, end, status message, peer), a link-only item (its trace's layers may
 * be packed beside it). One that only Python can read (no workflow root, facts root_facts leaves
 * to the full decode) is handed over as -3 (learned so: the Python side learns -3 for every
 * failed span it would learn -4 to -6 for). */
static PyObject *fr_names[4]; /* the errors_total label names, interned once, kept for the process */

/* 1 when the failed root s of the learned series (-4, -5, -6) was counted (*item: its failure,
 * or NULL for -6), 0 when it is to be read in Python (no workflow root, or only a full decode
 * decides: root_facts gives None), -1 on error. */
static int failed_root(Scanner *self, scan_state *st, span_info *s, long series, PyObject **item) {
    *item = NULL;
    if (fr_names[0] == NULL) {
        static const char *const text[4] = {"error_type", "component", "severity", "recoverable"};
        for (int i = 0; i < 4; i++)
            if ((fr_names[i] = PyUnicode_InternFromString(text[i])) == NULL) return -1;
    }
    PyObject *root = root_facts(self, s);
    if (root == NULL) return -1;
    if (root == Py_None) { Py_DECREF(root); return 0; }
    PyObject *facts = series == -6 ? Py_NewRef(Py_None) : failure_facts(s);
    if (facts == NULL) { Py_DECREF(root); return -1; }
    if (series != -6 && facts == Py_None) { Py_DECREF(facts); Py_DECREF(root); return 0; } /* (not ASCII) */
    /* (wf_type, agent, outcome, tier, duration, error type, severity, recoverable) */
#define R(i) PyTuple_GET_ITEM(root, i)
    int rc = count_execution(self, st, s, R(0), R(1), R(2), R(3), PyFloat_AS_DOUBLE(R(4)));
    if (rc == 0 && series != -6) {
        PyObject *pairs[4] = {PyTuple_Pack(2, fr_names[0], R(5)), PyTuple_Pack(2, fr_names[1], self->s_workflow),
                              PyTuple_Pack(2, fr_names[2], R(6)), PyTuple_Pack(2, fr_names[3], R(7))};
        PyObject *items[9] = {
            bytes_of(s->trace_id), bytes_of(s->span_id), bytes_of(s->parent), tuple_steal(4, pairs),
            Py_NewRef(PyTuple_GET_ITEM(facts, 1)), PyLong_FromUnsignedLongLong(s->start),
            PyLong_FromUnsignedLongLong(s->end), Py_NewRef(PyTuple_GET_ITEM(facts, 0)),
            Py_NewRef(series == -5 ? Py_True : Py_False)};
        *item = tuple_steal(9, items);
        if (*item == NULL) rc = -1;
    }
#undef R
    Py_DECREF(facts);
    Py_DECREF(root);
    return rc < 0 ? -1 : 1;
}

static int scan_spans(Scanner *self, slice scope_spans, scan_state *st) {
    slice scope, scope_name = {NULL, 0};
    if (find_message(scope_spans, 1, &scope) < 0) return -1;
    st->sc_start = scope.p ? st_off(st, scope.p) : 0;
    st->sc_end = scope.p ? st_off(st, scope.p) + scope.n : 0;
    if (scope.p && find_message(scope, 1, &scope_name) < 0) return -1;
    st->scope_deferred = scope_name.p != NULL && has_prefix(scope_name, self->defer_scopes);
    Py_CLEAR(st->res_obj); /* (made when needed: see learned) */
    Py_CLEAR(st->scope_obj);
    Py_CLEAR(st->same_res);
    Py_CLEAR(st->same_scope);
    st->ctx_hash = 0;
    reader r = {scope_spans.p, scope_spans.p + scope_spans.n};
    field f;
    int rc;
    span_info s;
    while ((rc = next_field(&r, &f)) == 0) {
        if (f.number != 2 || f.wire != 2) continue;
        if (parse_span(self, f.data, &s) < 0) return -1;
        int h = handle_span(self, &s, st);
        if (h < 0) return -1;
        if (h == 1) {
            PyObject *item;
            int link_only = 0;
            Py_ssize_t start = st_off(st, f.data.p), end = start + f.data.n;
            if (self->nshape_keys) {
                Py_ssize_t used = 0;
                int has = span_shape_of(self, &s, &used);
                if (has < 0) return -1;
                PyObject *shape = NULL;
                if (st->join && has && s.trace_id.n == 16 && s.span_id.n >= 1 && s.span_id.n <= 8 &&
                    s.parent.n <= 8) {
                    long series;
                    uint64_t hash = 0; /* (learned's) */
                    int known = learned(self, st, used, &series, &shape, &hash);
                    if (known < 0) { Py_XDECREF(shape); return -1; }
                    slice msg = {NULL, 0};
                    int failed_layer = 0;
                    if (!known && s.status_code == STATUS_ERROR && self->join_learned != NULL) {
                        /* a failed layer or a failed span giving the join no layer, learned
                         * with its exception type */
                        known = failed_learned(self, st, &s, used, hash, &series, &msg);
                        if (known < 0) { Py_XDECREF(shape); return -1; }
                        if (known && series >= 0) {
                            if (msg.n > 0xffff) known = 0; /* (its length in two bytes) */
                            else failed_layer = 1;
                        }
                    }
                    if (known && series <= -4 && s.parent.n == 0) { /* a failed workflow root */
                        PyObject *fitem;
                        int done = failed_root(self, st, &s, series, &fitem);
                        if (done < 0) { Py_XDECREF(shape); return -1; }
                        if (done == 0) {
                            /* read in Python as a failed span that gives the join no layer (-3:
                             * what the Python side learns of the shape besides, see _learn) */
                            series = -3;
                        } else {
                            Py_XDECREF(shape);
                            if (fitem == NULL) continue; /* (a status report: nothing to join) */
                            held_item *x = held_push(st);
                            if (x == NULL) { Py_DECREF(fitem); return -1; }
                            x->item = fitem; /* owned */
                            x->link_only = 1;
                            x->trace = s.trace_id;
                            x->span = s.span_id;
                            st->nlink_only++;
                            continue;
                        }
                    } else if (known && series <= -4) {
                        series = -3; /* (no root: cannot be, its shape has a parent) */
                    }
                    held_item probe;
                    int ok = 1;
                    if (known && series >= 0) {
                        ok = join_ids(self, series, &s, &probe);
                        if (ok < 0) { Py_XDECREF(shape); return -1; }
                    }
                    link_only = known && (series == -2 || series == -3);
                    if (known && ok && !link_only) {
                        held_item *x = held_push(st);
                        if (x == NULL) { Py_XDECREF(shape); return -1; }
                        if (series >= 0) {
                            x->ids[0] = probe.ids[0];
                            x->ids[1] = probe.ids[1];
                            x->flags = probe.flags;
                            if (failed_layer) {
                                x->ids[2] = msg;
                                x->flags |= 4;
                            }
                        }
                        x->trace = s.trace_id;
                        x->span = s.span_id;
                        x->parent = s.parent;
                        x->start = s.start;
                        x->end = s.end;
                        x->series = series;
                        x->off_start = start;
                        x->off_end = end;
                        x->at = f.data.p;
                        x->rs_start = st->rs_start;
                        x->rs_end = st->rs_end;
                        x->sc_start = st->sc_start;
                        x->sc_end = st->sc_end;
                        x->shape = shape; /* owned, or NULL (made again if needed: finish_join) */
                        continue;
                    }
                }
                if (shape == NULL)
                    shape = has ? PyBytes_FromStringAndSize((const char *)self->scratch, used) : Py_NewRef(Py_None);
                if (shape == NULL) return -1;
                if (s.status_code == STATUS_ERROR && keep_failure(self, &s, start) < 0) {
                    Py_DECREF(shape);
                    return -1;
                }
                item = fallback_item(start, end, st->rs_start, st->rs_end, st->sc_start, st->sc_end,
                                     shape, s.trace_id, s.span_id, s.parent, s.start, s.end);
                Py_DECREF(shape);
            } else {
                item = fallback_item(start, end, st->rs_start, st->rs_end, st->sc_start, st->sc_end,
                                     NULL, s.trace_id, s.span_id, s.parent, s.start, s.end);
            }
            if (item == NULL) return -1;
            if (st->join) {
                /* held in order; its trace is read in Python in this request */
                held_item *x = held_push(st);
                if (x == NULL) { Py_DECREF(item); return -1; }
                x->item = item; /* owned */
                if (link_only) { /* read in Python, its trace's layers may be packed all the same */
                    x->link_only = 1;
                    x->trace = s.trace_id;
                    x->span = s.span_id;
                    st->nlink_only++;
                    continue;
                }
                if (!slice_eq(st->last_touched, s.trace_id)) { /* (put already: the span before's trace) */
                    if (smap_put(&st->touched, s.trace_id, 0) < 0) return -1;
                    st->last_touched = s.trace_id;
                }
                continue;
            }
            if (PyList_Append(st->fallback, item) < 0) { Py_DECREF(item); return -1; }
            Py_DECREF(item);
        }
    }
    return rc < 0 ? -1 : 0;
}

/* The A2A producer cache (span id -> start, the connector's _producers): the Python twin's
 * OrderedDict, put into as _remember_producers puts (a span id already there keeps its place,
 * its start replaced; the oldest dropped beyond cache_size), or a Memory (the connector's with
 * this scanner, of cache_size entries), written the same way in place: the id's key encoded
 * into the module's scratch blob and hashed from the id's bytes (as hash(bytes) hashes it), so
 * that a lookup makes no object and a put makes only the kept key and start. */

/* the table slot of span id p[:n] in the Memory m (-1: not there), its hash in *hash and its
 * encoding in mem_probe; -2 on error, -3 an id too long for the scratch blob (the caller takes
 * the object path) */
static Py_ssize_t producer_slot(MemoryObject *m, const uint8_t *p, Py_ssize_t n, Py_hash_t *hash) {
    if (n > MEM_PROBE_CAP - 8) return -3;
    if (mem_probe == NULL && (mem_probe = PyBytes_FromStringAndSize(NULL, MEM_PROBE_CAP)) == NULL) return -2;
    char *out = PyBytes_AS_STRING(mem_probe);
    out[0] = MK_BYTES; /* (mem_encode_leaf's encoding of a bytes key) */
    Py_ssize_t k = 1 + mem_put_len(out + 1, out + MEM_PROBE_CAP, (size_t)n);
    if (n) memcpy(out + k, p, (size_t)n);
    Py_SET_SIZE(mem_probe, k + n);
    *hash = mem_hash_bytes(p, n);
    return rc_find(&m->mem, mem_probe, *hash, mem_eq);
}

/* the start of the producer of span id p[:n] (borrowed), NULL when not there or on error
 * (PyErr_Occurred tells) */
static PyObject *producer_get(PyObject *cache, const uint8_t *p, Py_ssize_t n) {
    if (Py_IS_TYPE(cache, &MemoryType)) {
        MemoryObject *m = (MemoryObject *)cache;
        Py_hash_t hash;
        Py_ssize_t at = producer_slot(m, p, n, &hash);
        if (at >= 0) return m->mem.nodes[m->mem.table[at].index - 1].value;
        if (at != -3) return NULL;
    }
    PyObject *key = PyBytes_FromStringAndSize((const char *)p, n);
    if (key == NULL) return NULL;
    PyObject *sent = memory_get(cache, key); /* borrowed */
    Py_DECREF(key);
    return sent;
}

/* cache[span id p[:n]] = start as the twin puts it (see above): 0, or -1 */
static int producer_put(PyObject *cache, Py_ssize_t cache_size, const uint8_t *p, Py_ssize_t n, PyObject *start) {
    if (Py_IS_TYPE(cache, &MemoryType)) {
        MemoryObject *m = (MemoryObject *)cache;
        Py_hash_t hash;
        Py_ssize_t at = producer_slot(m, p, n, &hash);
        if (at == -2) return -1;
        if (at >= 0) { /* (its place kept, as an OrderedDict's) */
            Py_SETREF(m->mem.nodes[m->mem.table[at].index - 1].value, Py_NewRef(start));
            return 0;
        }
        PyObject *key = at == -1 ? PyBytes_FromStringAndSize(PyBytes_AS_STRING(mem_probe), PyBytes_GET_SIZE(mem_probe))
                                 : PyBytes_FromStringAndSize((const char *)p, n);
        if (key == NULL) return -1;
        int done;
        if (at == -1) {
            done = mem_rc_put(m, key, hash, start);
        } else { /* (a long id: the object path, its place kept all the same) */
            Py_ssize_t x = mem_node(m, key);
            if (x >= 0) Py_SETREF(m->mem.nodes[x].value, Py_NewRef(start));
            done = x == -2 ? -1 : x >= 0 ? 0 : mem_put(m, key, start);
        }
        Py_DECREF(key);
        return done;
    }
    PyObject *key = PyBytes_FromStringAndSize((const char *)p, n);
    int rc = key ? PyObject_SetItem(cache, key, start) : -1;
    Py_XDECREF(key);
    if (rc < 0) return -1;
    if (PyDict_GET_SIZE(cache) > cache_size) {
        static PyObject *popitem; /* (interned once, kept for the process) */
        if (popitem == NULL && (popitem = PyUnicode_InternFromString("popitem")) == NULL) return -1;
        PyObject *r = PyObject_CallMethodOneArg(cache, popitem, Py_False);
        if (r == NULL) return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* The request's producers go into the producer cache (above), then each consumer is matched
 * with its producer (by parent, else by link) and its latency observed; consumers without a
 * producer yet are handed to Python (spans the Python path counts may still add theirs). */
static int finish_a2a(Scanner *self, scan_state *st) {
    if (!self->cache_size) return 0;
    PyObject *cache = self->producers;
    for (Py_ssize_t i = 0; i < st->producers.n; i++) {
        a2a_span *x = &st->producers.items[i];
        PyObject *start = PyLong_FromUnsignedLongLong(x->start);
        int rc = start ? producer_put(cache, self->cache_size, x->span_id.p, x->span_id.n, start) : -1;
        Py_XDECREF(start);
        if (rc < 0) return -1;
    }
    for (Py_ssize_t i = 0; i < st->pending.n; i++) {
        a2a_span *x = &st->pending.items[i];
        PyObject *sent = producer_get(cache, x->parent.p, x->parent.n); /* borrowed */
        if (sent == NULL && PyErr_Occurred()) return -1;
        PyObject *links = NULL;
        if (sent == NULL && (links = link_span_ids(x->raw)) == NULL) return -1;
        /* with spans left to Python, its parent may be one of them: the parent comes before the
         * links, so the match is then left to Python too */
        if (sent == NULL && PyList_GET_SIZE(st->fallback) == 0) {
            for (Py_ssize_t j = 0; sent == NULL && j < PyList_GET_SIZE(links); j++) {
                sent = memory_get(cache, PyList_GET_ITEM(links, j));
                if (sent == NULL && PyErr_Occurred()) { Py_DECREF(links); return -1; }
            }
        }
        if (sent == NULL) {
            PyObject *items[6] = {bytes_or_none(x->parent), links, PyLong_FromUnsignedLongLong(x->start),
                                  bytes_or_none(x->trace_id), bytes_or_none(x->span_id),
                                  Py_NewRef(x->message_type)};
            PyObject *item = tuple_steal(6, items);
            if (item == NULL || PyList_Append(st->consumers, item) < 0) { Py_XDECREF(item); return -1; }
            Py_DECREF(item);
            continue;
        }
        Py_XDECREF(links);
        double latency = 0.0;
        /* max(start - sent, 0) / 1e9, with Python's integers; in C when the producer's start
         * is an int of 0 .. 2**63-1 (as the scan and the Python path put there): the same
         * difference, converted to a double with the same rounding */
        if (PyLong_CheckExact(sent)) {
            int overflow;
            long long sent_ll = PyLong_AsLongLongAndOverflow(sent, &overflow);
            if (sent_ll == -1 && PyErr_Occurred()) return -1;
            if (!overflow && sent_ll >= 0) {
                uint64_t sent_u = (uint64_t)sent_ll;
                if (x->start > sent_u) latency = (double)(x->start - sent_u) / 1e9;
                goto observed;
            }
        }
        PyObject *start = PyLong_FromUnsignedLongLong(x->start);
        PyObject *diff = start ? PyNumber_Subtract(start, sent) : NULL;
        Py_XDECREF(start);
        if (diff == NULL) return -1;
        PyObject *zero = PyLong_FromLong(0);
        int positive = zero ? PyObject_RichCompareBool(diff, zero, Py_GT) : -1;
        Py_XDECREF(zero);
        if (positive < 0) { Py_DECREF(diff); return -1; }
        if (positive) {
            latency = PyLong_AsDouble(diff) / 1e9;
            if (latency == -1.0 / 1e9 && PyErr_Occurred()) { Py_DECREF(diff); return -1; }
        }
        Py_DECREF(diff);
    observed:;
        entry *e = get_entry(&st->a, M_A2A_LATENCY, x->message_type, NULL, NULL, NULL);
        if (e == NULL) return -1;
        observe_scan(self, e, B_A2A, latency, x->trace_id, x->span_id, x->trace_off, x->span_off);
    }
    return 0;
}

/* The byte at offset off of a request given as bytes or as a tuple of parts (bytes: the request is
 * their concatenation); off at most the request's size (an empty read may point at its end). */
static const char *request_at(PyObject *request, Py_ssize_t off) {
    if (PyBytes_Check(request)) return PyBytes_AS_STRING(request) + off;
    Py_ssize_t n = PyTuple_GET_SIZE(request);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *part = PyTuple_GET_ITEM(request, i);
        Py_ssize_t size = PyBytes_GET_SIZE(part);
        if (off < size || i == n - 1) return PyBytes_AS_STRING(part) + off;
        off -= size;
    }
    return ""; /* (no parts: nothing to read) */
}

/* buffer: the request (bytes or a tuple of parts) the exemplars not held inline point into */
static PyObject *build_result(Scanner *self, aggs *a, PyObject *buffer) {
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(a->index, &pos, &key, &value)) {
        entry *e = &a->entries[PyLong_AsSsize_t(value)];
        Py_ssize_t nkey = PyTuple_GET_SIZE(key);
        PyObject *labels = PyTuple_GetSlice(key, 1, nkey);
        if (labels == NULL) goto error;
        PyObject *buckets = Py_NewRef(Py_None), *exemplars = Py_NewRef(Py_None);
        int which = e->metric == M_TOOL_DURATION   ? B_TOOL
                    : e->metric == M_HTTP_DURATION ? B_HTTP
                    : e->metric == M_WF_DURATION   ? B_WORKFLOW
                    : e->metric == M_A2A_LATENCY   ? B_A2A
                    : e->metric == M_FN_DURATION   ? B_TOOL
                                                   : -1;
        if (which >= 0) {
            Py_DECREF(buckets);
            Py_DECREF(exemplars);
            buckets = PyList_New(self->nbounds[which] + 1);
            exemplars = PyList_New(0);
            if (buckets == NULL || exemplars == NULL) {
                Py_XDECREF(buckets); Py_XDECREF(exemplars); Py_DECREF(labels);
                goto error;
            }
            for (int i = 0; i <= self->nbounds[which]; i++)
                PyList_SET_ITEM(buckets, i, PyLong_FromUnsignedLong(e->buckets[i]));
            /* oldest first, as observe() would have kept them */
            for (int k = 0; k < e->nex; k++) {
                exemplar *x = &e->ex[(e->nex < self->max_exemplars ? k : (e->exnext + k) % e->nex)];
                const char *tp = x->inl ? (const char *)x->ids + x->trace_off : request_at(buffer, x->trace_off);
                const char *sp = x->inl ? (const char *)x->ids + x->span_off : request_at(buffer, x->span_off);
                /* (value, trace id, span id, position), as Py_BuildValue("(dy#y#n)") makes it */
                PyObject *parts[4] = {PyFloat_FromDouble(x->value), PyBytes_FromStringAndSize(tp, x->trace_n),
                                      PyBytes_FromStringAndSize(sp, x->span_n), PyLong_FromSsize_t(x->pos)};
                PyObject *t = tuple_steal(4, parts);
                if (t == NULL || PyList_Append(exemplars, t) < 0) {
                    Py_XDECREF(t); Py_DECREF(buckets); Py_DECREF(exemplars); Py_DECREF(labels);
                    goto error;
                }
                Py_DECREF(t);
            }
        }
        /* the exemplar writes, as Metric.merge's exemplars_seen (so that the series' ring of
         * exemplars ends where as many observe() calls leave it, not only with the same ones):
         * with the ring full, its count modulo the ring's size is what matters (exnext) */
        int seen = e->nex < self->max_exemplars ? e->nex : self->max_exemplars + e->exnext;
        /* (as Py_BuildValue("(iNLdNNi)") makes it: labels, buckets and exemplars stolen) */
        PyObject *parts[7] = {PyLong_FromLong(e->metric), labels, PyLong_FromLongLong(e->count),
                              PyFloat_FromDouble(e->sum), buckets, exemplars, PyLong_FromLong(seen)};
        PyObject *item = tuple_steal(7, parts);
        if (item == NULL || PyList_Append(out, item) < 0) { Py_XDECREF(item); goto error; }
        Py_DECREF(item);
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

/* one part of the request: resource_spans messages (field 1) */
static int scan_part(Scanner *self, scan_state *st, const uint8_t *base, Py_ssize_t size) {
    reader r = {base, base + size};
    field f;
    int rc;
    while ((rc = next_field(&r, &f)) == 0) {
        if (f.number != 1 || f.wire != 2) continue;
        slice resource;
        if (find_message(f.data, 1, &resource) < 0) return -1;
        st->rs_start = resource.p ? st_off(st, resource.p) : 0;
        st->rs_end = resource.p ? st_off(st, resource.p) + resource.n : 0;
        reader rr = {f.data.p, f.data.p + f.data.n};
        field rf;
        int rrc;
        while ((rrc = next_field(&rr, &rf)) == 0) {
            if (rf.number != 2 || rf.wire != 2) continue;
            if (scan_spans(self, rf.data, st) < 0) return -1;
        }
        if (rrc < 0) return -1;
    }
    return rc < 0 ? -1 : 0;
}

PyDoc_STRVAR(scan_doc,
"scan(request: bytes | tuple[bytes, ...]) -> (series, fallback, consumers, workflows)\n\n"
"request: the encoded request, or its parts (a merged payload's encoded_parts: encoded requests\n"
"whose concatenation is the request), read where they are: every offset below is one into\n"
"their concatenation, and the result is the scan of the joined bytes. A part is read as a\n"
"request of its own: one whose last field runs past its end is malformed.\n"
"series: [(metric, labels, count, sum, buckets | None, exemplars | None, exemplars_seen)]\n"
"aggregated over the request (exemplars: [(value, trace_id, span_id, position)] oldest first,\n"
"position the offset of the span's trace id, -1 for calls settled; exemplars_seen: as\n"
"Metric.merge takes it); fallback: [(start, end, resource_start, resource_end, scope_start, scope_end)]\n"
"offsets of spans for the Python path, of their Resource and InstrumentationScope messages\n"
"((0, 0) when absent), with shape_keys configured followed by (shape | None, trace_id,\n"
"span_id, parent_span_id, start_ns, end_ns) (see span_shape in the source), with the join on\n"
"also a trace's Packed item and a failed workflow root's failure (see failed_root in the\n"
"source: a 9-tuple, the Failure's arguments); the request's A2A\n"
"producers go into the producer cache and its consumers are matched with them; consumers:\n"
"those without a producer yet, [(parent_span_id, link_span_ids, start_ns, trace_id,\n"
"span_id, message_type)]; workflows: {(type, outcome): [durations]}. Raises ValueError on\n"
"malformed input.");

static PyObject *Scanner_scan(Scanner *self, PyObject *arg) {
    if (PyTuple_Check(arg)) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(arg); i++)
            if (!PyBytes_Check(PyTuple_GET_ITEM(arg, i))) {
                PyErr_SetString(PyExc_TypeError, "scan() expects bytes or a tuple of bytes");
                return NULL;
            }
    } else if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "scan() expects bytes or a tuple of bytes");
        return NULL;
    }
    if (self->cache == NULL || self->spill == NULL || self->keytab == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Scanner not initialised");
        return NULL;
    }
    if (scan_begin(self) < 0) return NULL;
    exc_memo_set(1);
    self->join_late = 0; /* (take_late: this scan's) */
    Py_CLEAR(self->failures); /* (take_failures: this scan's) */
    Py_CLEAR(self->roots);    /* (take_roots: this scan's) */
    wf_roots_clear(self);     /* (put_roots: this scan's) */
    scan_state st;
    memset(&st, 0, sizeof(st));
    st.fallback = PyList_New(0);
    st.consumers = PyList_New(0);
    st.workflows = PyDict_New();
    st.a.index = PyDict_New();
    /* (the kept buffers: see take_buffer; the memo kept empty) */
    st.a.memo = self->keep_memo;
    self->keep_memo = NULL;
    if (st.a.memo == NULL) st.a.memo = PyMem_Calloc(MEMO_SLOTS, sizeof(memo_slot));
    st.held = take_buffer(&self->keep_held, &self->keep_held_cap, &st.capheld);
    st.producers.items = take_buffer(&self->keep_a2a[0], &self->keep_a2a_cap[0], &st.producers.cap);
    st.pending.items = take_buffer(&self->keep_a2a[1], &self->keep_a2a_cap[1], &st.pending.cap);
    st.join = self->join_shapes != NULL && self->nshape_keys;
    st.last_touched.n = -1;
    PyObject *result = NULL;
    if (st.fallback == NULL || st.consumers == NULL || st.workflows == NULL || st.a.index == NULL ||
        st.a.memo == NULL) {
        if (st.a.memo == NULL) PyErr_NoMemory();
        goto done;
    }
    int one = PyBytes_Check(arg);
    Py_ssize_t nparts = one ? 1 : PyTuple_GET_SIZE(arg);
    for (Py_ssize_t i = 0; i < nparts; i++) {
        PyObject *part = one ? arg : PyTuple_GET_ITEM(arg, i);
        const uint8_t *base = (const uint8_t *)PyBytes_AS_STRING(part);
        Py_ssize_t size = PyBytes_GET_SIZE(part);
        st.part = base;
        if (scan_part(self, &st, base, size) < 0) goto done;
        st.part_off += size;
    }
    if (st.join && finish_join(self, &st) < 0) goto done;
    if (finish_a2a(self, &st) < 0) goto done;
    PyObject *series = build_result(self, &st.a, arg);
    if (series == NULL) goto done;
    result = Py_BuildValue("(NOOO)", series, st.fallback, st.consumers, st.workflows);
done:
    exc_memo_set(0);
    held_clear(self, &st);
    smap_free(&st.touched);
    Py_XDECREF(st.res_obj);
    Py_XDECREF(st.scope_obj);
    Py_XDECREF(st.same_res);
    Py_XDECREF(st.same_scope);
    wf_memo_clear(&st);
    Py_XDECREF(st.workflows);
    Py_XDECREF(st.fallback);
    keep_buffer(&self->keep_a2a[0], &self->keep_a2a_cap[0], st.producers.items, st.producers.cap, sizeof(a2a_span));
    keep_buffer(&self->keep_a2a[1], &self->keep_a2a_cap[1], st.pending.items, st.pending.cap, sizeof(a2a_span));
    Py_XDECREF(st.consumers);
    Py_XDECREF(st.a.index);
    if (st.a.memo != NULL && self->keep_memo == NULL) {
        memo_reset(st.a.memo);
        self->keep_memo = st.a.memo;
        st.a.memo = NULL;
    }
    aggs_memo_clear(&st.a);
    PyMem_Free(st.a.entries);
    return result;
}

/* -- settling the join's common case ------------------------------------------------------ */

typedef struct { const uint8_t *rec; slice ids[2]; } layer_rec;

static int rec_cmp_span(const void *a, const void *b) {
    const uint8_t *x = ((const layer_rec *)a)->rec, *y = ((const layer_rec *)b)->rec;
    if (x[1] != y[1]) return x[1] < y[1] ? -1 : 1;
    return memcmp(x + 2, y + 2, x[1]);
}

static int has_span(layer_rec *sorted, Py_ssize_t n, const uint8_t *id, uint8_t len) {
    Py_ssize_t lo = 0, hi = n;
    uint8_t key[RECORD];
    key[1] = len;
    memcpy(key + 2, id, len);
    layer_rec probe = {key, {{NULL, 0}, {NULL, 0}}};
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        int c = rec_cmp_span(&sorted[mid], &probe);
        if (c == 0) return 1;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}

static int settle_joined(Scanner *self, PyObject *trace, layer_rec *layers, Py_ssize_t nl, aggs *a,
                         Py_ssize_t *calls);
static int memory_trim(PyObject *items, Py_ssize_t size);
static int memory_put(PyObject *items, PyObject *key, PyObject *value);
static int sl_names_ready(void);

/* -- the settle paths' configuration (configure_settle) and their calls ---------------------- */

PyDoc_STRVAR(configure_settle_doc,
"configure_settle(*, size: int, keys_size: int, ttl: float, marked: Memory | OrderedDict,\n"
"                 marked_size: int, marked_ttl: float, classify: Callable[[str], str],\n"
"                 timeouts: frozenset[str], recoverable: frozenset[str]) -> None\n\n"
"What the settle paths read on every call, given once (and again when the joiner's memories\n"
"change): join_settled's bound (size), join_keys' (keys_size), their entries' time to live\n"
"(a settled layer's or key's value is (now + ttl, None)), the joiner's memory of failed\n"
"parents (marked: its bound, its marks' time to live), the error classifier and the error\n"
"types that are timeouts and recoverable. Every setting by keyword.");

static PyObject *Scanner_configure_settle(Scanner *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"size", "keys_size", "ttl", "marked", "marked_size", "marked_ttl",
                         "classify", "timeouts", "recoverable", NULL};
    settle_config c = {0};
    if (PyTuple_GET_SIZE(args) != 0 || kwargs == NULL || PyDict_GET_SIZE(kwargs) != 9) {
        PyErr_SetString(PyExc_TypeError, "configure_settle takes its 9 settings by keyword");
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$nndOndOOO:configure_settle", kw, &c.size, &c.keys_size,
                                     &c.ttl, &c.marked, &c.marked_size, &c.marked_ttl, &c.classify,
                                     &c.timeouts, &c.recoverable))
        return NULL;
    if (!memory_check(c.marked) || !PyCallable_Check(c.classify)) {
        PyErr_SetString(PyExc_TypeError, "configure_settle: marked a Memory or an OrderedDict, classify callable");
        return NULL;
    }
    if (self->settle.settling) {
        PyErr_SetString(PyExc_RuntimeError, "configure_settle while settling");
        return NULL;
    }
    settle_config *s = &self->settle;
    Py_XSETREF(s->marked, Py_NewRef(c.marked));
    Py_XSETREF(s->classify, Py_NewRef(c.classify));
    Py_XSETREF(s->timeouts, Py_NewRef(c.timeouts));
    Py_XSETREF(s->recoverable, Py_NewRef(c.recoverable));
    s->size = c.size;
    s->keys_size = c.keys_size;
    s->marked_size = c.marked_size;
    s->ttl = c.ttl;
    s->marked_ttl = c.marked_ttl;
    Py_CLEAR(s->value); /* (made again from the new ttls) */
    Py_CLEAR(s->expiry);
    Py_RETURN_NONE;
}

/* The start of a settle call at `now` (a float, or an int): the settle paths configured, and
 * settle.value and settle.expiry made for `now` unless they are (the same `now` as the last
 * call's). 0, -1 on error (RuntimeError: not configured, or configure_settle settling). */
static int settle_begin(Scanner *self, PyObject *now_obj) {
    settle_config *c = &self->settle;
    if (c->marked == NULL || c->settling) {
        PyErr_SetString(PyExc_RuntimeError, c->marked == NULL ? "the settle paths are not configured (configure_settle)"
                                                              : "a settle call while settling");
        return -1;
    }
    double now = PyFloat_AsDouble(now_obj);
    if (now == -1.0 && PyErr_Occurred()) return -1;
    if (c->value == NULL || now != c->now) {
        PyObject *expiry = PyFloat_FromDouble(now + c->ttl);
        PyObject *value = expiry ? PyTuple_Pack(2, expiry, Py_None) : NULL;
        Py_XDECREF(expiry);
        PyObject *marked = value ? PyFloat_FromDouble(now + c->marked_ttl) : NULL;
        if (marked == NULL) {
            Py_XDECREF(value);
            return -1;
        }
        Py_XSETREF(c->value, value);
        Py_XSETREF(c->expiry, marked);
        c->now = now;
    }
    c->settling = 1; /* (settle_end: configure_settle refused until then) */
    return 0;
}

static PyObject *settle_end(Scanner *self, PyObject *result) {
    self->settle.settling = 0;
    return result;
}

/* The packed items of one held trace (calls.py Packed: (trace id, records, layers, ids) tuples
 * of one 16-byte trace id, whole records): their trace (borrowed; NULL: no item) and their
 * records counted in *records (unless NULL). 0, or -1 (ValueError) for anything else. */
static int check_packed(PyObject *packed, PyObject **trace, Py_ssize_t *records) {
    Py_ssize_t np = PyList_GET_SIZE(packed), n = 0;
    *trace = NULL;
    for (Py_ssize_t i = 0; i < np; i++) {
        PyObject *t = PyList_GET_ITEM(packed, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 4 || !PyBytes_Check(PyTuple_GET_ITEM(t, 0)) ||
            PyBytes_GET_SIZE(PyTuple_GET_ITEM(t, 0)) != 16 || !PyBytes_Check(PyTuple_GET_ITEM(t, 1)) ||
            PyBytes_GET_SIZE(PyTuple_GET_ITEM(t, 1)) % RECORD || !PyBytes_Check(PyTuple_GET_ITEM(t, 3))) {
            PyErr_SetString(PyExc_ValueError, "packed: (trace id, records, layers, ids) tuples expected");
            return -1;
        }
        if (*trace == NULL) *trace = PyTuple_GET_ITEM(t, 0);
        else if (PyObject_RichCompareBool(*trace, PyTuple_GET_ITEM(t, 0), Py_EQ) != 1) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "packed: one trace expected");
            return -1;
        }
        n += PyBytes_GET_SIZE(PyTuple_GET_ITEM(t, 1)) / RECORD;
    }
    if (records != NULL) *records = n;
    return 0;
}

PyDoc_STRVAR(settle_simple_doc,
"settle_simple(packed: list[tuple[bytes, bytes, int, bytes]], now: float, /) -> int\n\n"
"Settles a held trace made of packed records only (see finish_join in the source) as the\n"
"joiner's _settle would (it never failed): its layers joined into calls (parent links, call\n"
"ids, JSON-RPC ids within the trace), each call counted in its series (take_calls); puts\n"
"(trace, span) -> (now + ttl, None) into join_settled (moved to the end when there), trims it\n"
"to size (oldest first out), puts the call and JSON-RPC keys of the layers that have ids into\n"
"join_keys (each trimmed to keys_size) and returns the number of calls; -1 (nothing done)\n"
"when the trace has ids and the id-keyed join is off (the settings: configure_settle).");

/* settle_simple on the values of settle_begin */
static PyObject *do_settle_simple(Scanner *self, PyObject *packed) {
    if (self->join_shapes == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the join's common case is off");
        return NULL;
    }
    PyObject *value = self->settle.value;
    Py_ssize_t size = self->settle.size, np = PyList_GET_SIZE(packed), n;
    PyObject *trace;
    if (check_packed(packed, &trace, &n) < 0) return NULL;
    if (trace == NULL) return PyLong_FromLong(-1);
    layer_rec layers_small[2][16]; /* (a few records: the common trace) */
    int small = n <= 16;
    layer_rec *layers = small ? layers_small[0] : PyMem_Malloc(n * sizeof(layer_rec));
    layer_rec *sorted = small ? layers_small[1] : PyMem_Malloc(n * sizeof(layer_rec));
    if (layers == NULL || sorted == NULL) {
        if (!small) {
            PyMem_Free(layers);
            PyMem_Free(sorted);
        }
        return PyErr_NoMemory();
    }
    Py_ssize_t nl = 0;
    int with_ids = 0, with_failed = 0;
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < np; i++) {
        PyObject *records = PyTuple_GET_ITEM(PyList_GET_ITEM(packed, i), 1);
        PyObject *ids = PyTuple_GET_ITEM(PyList_GET_ITEM(packed, i), 3);
        const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(records);
        const uint8_t *q = (const uint8_t *)PyBytes_AS_STRING(ids), *qend = q + PyBytes_GET_SIZE(ids);
        for (Py_ssize_t k = 0; k < PyBytes_GET_SIZE(records); k += RECORD) {
            if (p[k] != 1) continue;
            layer_rec *x = &layers[nl++];
            x->rec = p + k;
            if (p[k + 19] & ~7) goto malformed;
            for (int j = 0; j < 3; j++) {
                if (j < 2) {
                    x->ids[j].p = NULL;
                    x->ids[j].n = 0;
                }
                if (!(p[k + 19] & (1 << j))) continue;
                if (qend - q < 2) goto malformed;
                Py_ssize_t len = (Py_ssize_t)q[0] | (Py_ssize_t)q[1] << 8;
                if ((len == 0 && j < 2) || qend - q - 2 < len) goto malformed;
                if (j < 2) {
                    x->ids[j].p = q + 2;
                    x->ids[j].n = len;
                    with_ids = 1;
                } else {
                    with_failed = 1; /* (its message) */
                }
                q += 2 + len;
            }
        }
        if (q != qend) goto malformed;
    }
    int simple = nl > 0;
    for (Py_ssize_t i = 0; i < nl; i++) {
        const uint8_t *r = layers[i].rec;
        if (r[1] < 1 || r[1] > 8 || r[10] > 8) goto malformed;
    }
    if (with_failed) { /* a failed layer: the joiner unpacks the trace (settle_layers, _settle) */
        result = PyLong_FromLong(-1);
        goto done;
    }
    if (with_ids) {
        if (self->join_learned == NULL) {
            result = PyLong_FromLong(-1);
            goto done;
        }
        simple = 0;
    }
    if (simple && nl > 1) { /* no span id twice, no layer the parent of another */
        memcpy(sorted, layers, nl * sizeof(layer_rec));
        qsort(sorted, nl, sizeof(layer_rec), rec_cmp_span);
        for (Py_ssize_t i = 1; simple && i < nl; i++)
            if (rec_cmp_span(&sorted[i - 1], &sorted[i]) == 0) simple = 0;
        for (Py_ssize_t i = 0; simple && i < nl; i++)
            if (has_span(sorted, nl, layers[i].rec + 11, layers[i].rec[10])) simple = 0;
    }
    aggs a = {self->calls_index, self->calls_entries, self->calls_n, self->calls_cap, self->calls_memo, 0, 1};
    if (!simple) { /* the general join (calls.py _group and _call) */
        if (nl == 0) {
            result = PyLong_FromLong(-1);
            goto done;
        }
        if (self->join_learned == NULL) {
            result = PyLong_FromLong(-1);
            goto done;
        }
        Py_ssize_t calls = 0;
        if (settle_joined(self, trace, layers, nl, &a, &calls) == 0 &&
            memory_trim(self->join_settled, size) == 0)
            result = PyLong_FromSsize_t(calls);
        goto counted;
    }
    slice trace_id = {(const uint8_t *)PyBytes_AS_STRING(trace), 16};
    for (Py_ssize_t i = 0; i < nl; i++) {
        const uint8_t *r = layers[i].rec;
        uint32_t id = (uint32_t)r[36] | (uint32_t)r[37] << 8 | (uint32_t)r[38] << 16 | (uint32_t)r[39] << 24;
        if ((Py_ssize_t)id >= PyList_GET_SIZE(self->join_series)) {
            PyErr_SetString(PyExc_ValueError, "packed: unknown series");
            goto counted;
        }
        PyObject *series = PyList_GET_ITEM(self->join_series, id);
        if (!PyTuple_Check(series) || PyTuple_GET_SIZE(series) != 4) {
            PyErr_SetString(PyExc_TypeError, "join series: (mcp, a, b, status) tuples expected");
            goto counted;
        }
        int mcp = PyObject_IsTrue(PyTuple_GET_ITEM(series, 0));
        if (mcp < 0) goto counted;
        PyObject *la = PyTuple_GET_ITEM(series, 1), *lb = PyTuple_GET_ITEM(series, 2);
        entry *e = get_entry(&a, mcp ? M_TOOL_CALLS : M_FN_CALLS, la, lb, PyTuple_GET_ITEM(series, 3), self->s_none);
        if (e == NULL) goto counted;
        e->count++;
        e = get_entry(&a, mcp ? M_TOOL_DURATION : M_FN_DURATION, la, lb, NULL, NULL);
        if (e == NULL) goto counted;
        uint64_t start = get_u64(r + 20), end = get_u64(r + 28);
        double duration = (end >= start ? (double)(end - start) : -(double)(start - end)) / 1e9;
        slice span_id = {r + 2, r[1]};
        observe(self, e, B_TOOL, duration, trace_id, span_id, NULL);
        /* the memory of settled layers, as the joiner's _settle_simple keeps it ((trace, span)
         * put by its data: see mem_leaf) */
        mem_leaf key[2] = {{trace_id.p, 16, 0, trace}, {r + 2, r[1], 0, NULL}};
        if (memory_put_leaves(self->join_settled, key, 2, value) < 0) goto counted;
    }
    if (memory_trim(self->join_settled, size) < 0) goto counted;
    result = PyLong_FromSsize_t(nl);
counted:
    self->calls_entries = a.entries;
    self->calls_n = a.n;
    self->calls_cap = a.cap;
    goto done;
malformed:
    PyErr_SetString(PyExc_ValueError, "packed: malformed record");
done:
    if (!small) {
        PyMem_Free(layers);
        PyMem_Free(sorted);
    }
    return result;
}

static PyObject *Scanner_settle_simple(Scanner *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "settle_simple(packed: list, now: float)");
        return NULL;
    }
    if (sl_names_ready() < 0 || settle_begin(self, args[1]) < 0) return NULL;
    return settle_end(self, do_settle_simple(self, args[0]));
}


/* -- settling a held trace read in Python: layers that are calls of their own, and failures --
 *
 * The joiner's general settle (calls.py, CallJoiner._settle) for its next most common case: a
 * held trace of Layer and Failure objects (a trace with a failure read in Python: its packed
 * layers unpacked by the joiner) whose layers are each a call of their own (no session, no call id or JSON-RPC key
 * twice, no span id twice, no layer the parent of another), failed or not: the benchmark's failed trace
 * (a failed tool call, an agent run above it, a failed workflow root). As _settle does: each
 * layer's call (_call of a one-layer group) counted per series in C (as settle_simple's), the
 * memory of settled layers, the failure marks' walk up the trace's parent links into the
 * joiner's memory of failed parents (_Marks.above), and the errors_total label sets of the
 * failures that arose here, appended to `errors` (the failed calls' first, then the failures
 * neither propagated, nor the peer's, nor inside a failed call that says the same, nor holding
 * another one of the same error type in their time). */

#define SETTLE_MAX_LAYERS 64  /* more: the Python settle (its span set) */
#define SETTLE_MAX_DEPTH 512  /* calls.py MAX_DEPTH */
#define SETTLE_MAX_ORIGINS 64 /* calls.py MAX_ORIGINS */

enum {
    A_TRACE, A_SPAN, A_PARENT, A_SIDE, A_TOOL, A_TOOL_TYPE, A_MCP, A_CALL_ID, A_RPC_ID, A_SESSION,
    A_SERVER, A_START, A_END, A_FAILED, A_RETRY, A_ERROR_TYPE, A_EXCEPTION, A_MESSAGE, A_LABELS,
    A_PEER, A_LAYERS, A_FAILURES, A_PARENTS, A_PACKED, A_DEADLINE, K_COMPONENT, K_SEVERITY, K_RECOVERABLE, K_RETRY, K_FUNCTION, K_MOVE_TO_END, K_POPITEM,
    NJN
};
static const char *const sl_names_text[NJN] = {
    "trace_id", "span_id", "parent_id", "side", "tool", "tool_type", "mcp", "call_id", "rpc_id",
    "session", "server", "start", "end", "failed", "retry", "error_type", "exception", "message",
    "labels", "peer", "layers", "failures", "parents", "packed", "deadline", "component", "severity", "recoverable", "retry", "function", "move_to_end",
    "popitem"};
static PyObject *sl_names[NJN]; /* interned once, kept for the process */

static int sl_names_ready(void) {
    if (sl_names[NJN - 1] != NULL) return 0;
    for (int i = 0; i < NJN; i++)
        if (sl_names[i] == NULL && (sl_names[i] = PyUnicode_InternFromString(sl_names_text[i])) == NULL) return -1;
    return 0;
}

/* one layer as _settle reads it (owned references), and its call */
typedef struct {
    PyObject *trace, *span, *parent, *tool, *tool_type, *server, *error_type, *exception, *message;
    PyObject *call_id, *rpc_id; /* (str, "" when none: read when the id-keyed join is on) */
    long side;
    int mcp, failed, retry;
    uint64_t start, end;
    PyObject *status, *call_error; /* owned */
    PyObject *labels;              /* owned: the errors_total labels of a failed call, or NULL */
} sl_layer;

/* one failure as _settle reads it (owned references) */
typedef struct {
    PyObject *trace, *span, *parent, *labels, *exception, *message;
    PyObject *label0, *type; /* borrowed from labels: labels[0], labels[0][1] */
    int peer;
    uint64_t start, end;
} sl_failure;

static void sl_layer_clear(sl_layer *x) {
    Py_CLEAR(x->trace); Py_CLEAR(x->span); Py_CLEAR(x->parent); Py_CLEAR(x->tool);
    Py_CLEAR(x->tool_type); Py_CLEAR(x->server); Py_CLEAR(x->error_type); Py_CLEAR(x->exception);
    Py_CLEAR(x->message); Py_CLEAR(x->status); Py_CLEAR(x->call_error); Py_CLEAR(x->labels);
    Py_CLEAR(x->call_id); Py_CLEAR(x->rpc_id);
}

static void sl_failure_clear(sl_failure *f) {
    Py_CLEAR(f->trace); Py_CLEAR(f->span); Py_CLEAR(f->parent); Py_CLEAR(f->labels);
    Py_CLEAR(f->exception); Py_CLEAR(f->message);
}

/* The member slots of the classes settle_layers reads (calls.py Layer and Failure:
 * dataclasses with __slots__): their attributes read at their offsets instead of through the
 * type's attribute lookup, as PyObject_GenericGetAttr would find them (a member descriptor of
 * an object without a __dict__). Kept per type (a reference held: its address is not reused)
 * while its version tag is the one seen (a class changed since is looked up again). */
#define SLOT_TYPES 6
typedef struct {
    PyTypeObject *type;
    unsigned int version;
    Py_ssize_t off[A_DEADLINE + 1]; /* -1: read through PyObject_GetAttr */
} slot_types;
static slot_types slot_cache[SLOT_TYPES];

static const Py_ssize_t *slot_offsets(PyTypeObject *tp) {
    if (tp->tp_getattro != PyObject_GenericGetAttr || tp->tp_dictoffset != 0 ||
        !(tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG))
        return NULL;
    slot_types *free_slot = NULL;
    for (int i = 0; i < SLOT_TYPES; i++) {
        if (slot_cache[i].type == tp) {
            if (slot_cache[i].version == tp->tp_version_tag) return slot_cache[i].off;
            free_slot = &slot_cache[i]; /* (looked up again) */
            break;
        }
        if (slot_cache[i].type == NULL && free_slot == NULL) free_slot = &slot_cache[i];
    }
    if (free_slot == NULL) return NULL;
    int found = 0;
    for (int name = 0; name <= A_DEADLINE; name++) {
        PyObject *d = _PyType_Lookup(tp, sl_names[name]); /* borrowed */
        free_slot->off[name] = -1;
        if (d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
            if (m->type == T_OBJECT_EX && (m->flags & ~READONLY) == 0 && m->offset > 0) {
                free_slot->off[name] = m->offset;
                found = 1;
            }
        }
    }
    if (!found) { /* (a type of no such slot is not kept: the cache is for the join's classes) */
        if (free_slot->type == tp) {
            free_slot->type = NULL;
            Py_DECREF(tp);
        }
        return NULL;
    }
    if (free_slot->type != tp) {
        Py_INCREF(tp);
        free_slot->type = tp;
    }
    free_slot->version = tp->tp_version_tag;
    return free_slot->off;
}

/* an attribute of a Layer, Failure or the joiner's _Entry (a new reference; NULL with an error
 * set); the last type's offsets are kept at hand (one object's attributes are read in a row) */
static PyObject *attr_get(PyObject *o, int name) {
    static PyTypeObject *last_type;
    static unsigned int last_version;
    static const Py_ssize_t *last_off;
    PyTypeObject *tp = Py_TYPE(o);
    const Py_ssize_t *off;
    if (tp == last_type && tp->tp_version_tag == last_version && (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)) {
        off = last_off;
    } else {
        off = slot_offsets(tp);
        last_type = off != NULL ? tp : NULL; /* (a type in the cache: referenced there) */
        last_version = tp->tp_version_tag;
        last_off = off;
    }
    if (off != NULL && off[name] > 0) {
        PyObject *v = *(PyObject **)((char *)o + off[name]);
        if (v != NULL) return Py_NewRef(v);
    }
    return PyObject_GetAttr(o, sl_names[name]);
}

/* an attribute's truth value: 1, 0, -1 on error */
static int attr_true(PyObject *o, int name) {
    PyObject *v = attr_get(o, name);
    if (v == NULL) return -1;
    int t = PyObject_IsTrue(v);
    Py_DECREF(v);
    return t;
}

/* an attribute as a uint64 (a time in ns): 1, 0 when it is none (nothing raised), -1 on error */
static int attr_u64(PyObject *o, int name, uint64_t *out) {
    PyObject *v = attr_get(o, name);
    if (v == NULL) return -1;
    if (!PyLong_Check(v)) { Py_DECREF(v); return 0; }
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    Py_DECREF(v);
    if (x == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear();
        return 0;
    }
    *out = x;
    return 1;
}

/* Reads a Layer: 1, 0 when it is not this case (a join key, ids the exemplars do not hold, a
 * time that is no uint64), -1 on error. */
static int sl_read_layer(PyObject *o, sl_layer *x, int ids) {
    int t;
    for (int name = ids ? A_SESSION : A_CALL_ID; name <= A_SESSION; name++) {
        if ((t = attr_true(o, name)) != 0) return t < 0 ? -1 : 0;
    }
    if (ids) { /* call and JSON-RPC ids (a session id: the Python join) */
        if ((x->call_id = attr_get(o, A_CALL_ID)) == NULL || (x->rpc_id = attr_get(o, A_RPC_ID)) == NULL)
            return -1;
        if (!PyUnicode_CheckExact(x->call_id) || !PyUnicode_CheckExact(x->rpc_id)) return 0;
    }
    PyObject **fields[] = {&x->trace, &x->span, &x->parent, &x->tool, &x->tool_type, &x->server,
                           &x->error_type, &x->exception, &x->message};
    const int names[] = {A_TRACE, A_SPAN, A_PARENT, A_TOOL, A_TOOL_TYPE, A_SERVER, A_ERROR_TYPE,
                         A_EXCEPTION, A_MESSAGE};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*fields[i] = attr_get(o, names[i])) == NULL) return -1;
    if (!PyBytes_Check(x->trace) || PyBytes_GET_SIZE(x->trace) != 16 || !PyBytes_Check(x->span) ||
        PyBytes_GET_SIZE(x->span) < 1 || PyBytes_GET_SIZE(x->span) > 8 || !PyBytes_Check(x->parent))
        return 0;
    PyObject *side = attr_get(o, A_SIDE);
    if (side == NULL) return -1;
    if (!PyLong_Check(side)) { Py_DECREF(side); return 0; }
    x->side = PyLong_AsLong(side);
    Py_DECREF(side);
    if (x->side == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return -1;
        PyErr_Clear();
        return 0;
    }
    if ((x->mcp = attr_true(o, A_MCP)) < 0 || (x->failed = attr_true(o, A_FAILED)) < 0 ||
        (x->retry = attr_true(o, A_RETRY)) < 0)
        return -1;
    if ((t = attr_u64(o, A_START, &x->start)) <= 0) return t;
    return attr_u64(o, A_END, &x->end);
}

/* Reads a Failure: 1, 0 when it is not this case, -1 on error. */
static int sl_read_failure(PyObject *o, sl_failure *f) {
    PyObject **fields[] = {&f->trace, &f->span, &f->parent, &f->labels, &f->exception, &f->message};
    const int names[] = {A_TRACE, A_SPAN, A_PARENT, A_LABELS, A_EXCEPTION, A_MESSAGE};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*fields[i] = attr_get(o, names[i])) == NULL) return -1;
    if (!PyTuple_Check(f->labels) || PyTuple_GET_SIZE(f->labels) < 1) return 0;
    f->label0 = PyTuple_GET_ITEM(f->labels, 0);
    if (!PyTuple_Check(f->label0) || PyTuple_GET_SIZE(f->label0) < 2) return 0;
    f->type = PyTuple_GET_ITEM(f->label0, 1);
    if ((f->peer = attr_true(o, A_PEER)) < 0) return -1;
    int t = attr_u64(o, A_START, &f->start);
    if (t <= 0) return t;
    return attr_u64(o, A_END, &f->end);
}

static int eq(PyObject *a, PyObject *b) { return PyObject_RichCompareBool(a, b, Py_EQ); }

/* key -> value into a memory, moved to the end (Memory.add; memory_trim trims): a Memory
 * (which drops its oldest beyond its size), or the Python twin's OrderedDict */
static int memory_put(PyObject *items, PyObject *key, PyObject *value) {
    if (Py_IS_TYPE(items, &MemoryType)) {
        return mem_put((MemoryObject *)items, key, value);
    }
    if (!PyDict_Check(items)) {
        PyErr_SetString(PyExc_TypeError, "a memory (Memory or OrderedDict) expected");
        return -1;
    }
    /* a key already there keeps its place and the size (one lookup less than asking first) */
    Py_ssize_t before = PyDict_GET_SIZE(items);
    if (PyObject_SetItem(items, key, value) < 0) return -1;
    if (PyDict_GET_SIZE(items) == before) {
        PyObject *moved = PyObject_CallMethodOneArg(items, sl_names[K_MOVE_TO_END], key);
        if (moved == NULL) return -1;
        Py_DECREF(moved);
    }
    return 0;
}

static int memory_trim(PyObject *items, Py_ssize_t size) {
    if (Py_IS_TYPE(items, &MemoryType)) {
        rc_memory *mem = &((MemoryObject *)items)->mem;
        while (mem->len > size && mem->len > 0) rc_drop_oldest(mem, mem_eq);
        return 0;
    }
    for (;;) {
        Py_ssize_t n = PyObject_Length(items);
        if (n < 0) return -1;
        if (n <= size) return 0;
        PyObject *r = PyObject_CallMethodOneArg(items, sl_names[K_POPITEM], Py_False);
        if (r == NULL) return -1;
        Py_DECREF(r);
    }
}


/* -- the id-keyed join of a packed trace (settle_simple's general case) ------------------------
 *
 * calls.py _group and _call for a held trace of packed layers (none failed: a failed span is
 * never packed): layers joined (union-find, the smallest index the root) when one is the
 * parent of another (the first layer with that span id), when they share a call id, or a
 * JSON-RPC id and tool on a side other than the framework's (within the trace: a layer with a
 * session id is never packed); the calls in the order of their first layers, each counted in
 * its series (the caller: an outermost layer, the least (side, start), the first such; the
 * labels as _call picks them), then the memories in that order: each layer's (trace, span),
 * and the call and JSON-RPC keys of the layers with ids (each trimmed as _Memory.add does). */

typedef struct {
    long side;
    int mcp, retry;
    uint64_t start, end;
    PyObject *tool, *tool_type, *server, *reading; /* borrowed (join_learned) */
} jl_layer;

static Py_ssize_t uf_find(Py_ssize_t *parent, Py_ssize_t i) {
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

static void uf_union(Py_ssize_t *parent, Py_ssize_t a, Py_ssize_t b) {
    Py_ssize_t ra = uf_find(parent, a), rb = uf_find(parent, b);
    if (ra != rb) parent[ra > rb ? ra : rb] = ra < rb ? ra : rb;
}

/* x precedes y in (side, start) order (ties: the earlier layer, as a stable sort keeps them) */
static inline int jl_before(const jl_layer *x, const jl_layer *y) {
    return x->side < y->side || (x->side == y->side && x->start < y->start);
}

/* settle_joined's maps of span ids and join keys (the first index of each): a list searched in
 * order while the trace has few layers (no allocation, no hashing), an smap beyond */
#define JOIN_SMALL 16
typedef struct {
    smap m;
    int big;
    Py_ssize_t n;
    slice k[2 * JOIN_SMALL];
    Py_ssize_t v[2 * JOIN_SMALL];
} kmap;

static int kmap_init(kmap *m, Py_ssize_t n) {
    m->m = (smap){NULL, 0, 0};
    m->n = 0;
    m->big = n > 2 * JOIN_SMALL;
    return m->big ? smap_reserve(&m->m, n) : 0;
}

static Py_ssize_t kmap_find(const kmap *m, slice key) {
    if (m->big) return smap_find(&m->m, key);
    for (Py_ssize_t i = 0; i < m->n; i++)
        if (m->k[i].n == key.n && (key.n == 0 || memcmp(m->k[i].p, key.p, key.n) == 0)) return m->v[i];
    return -1;
}

/* puts key -> val unless the key is there (at most the n given to kmap_init); -1 on error */
static int kmap_put(kmap *m, slice key, Py_ssize_t val) {
    if (m->big) return smap_put(&m->m, key, val);
    if (kmap_find(m, key) >= 0) return 0;
    if (m->n == 2 * JOIN_SMALL) {
        PyErr_SetString(PyExc_RuntimeError, "join map full");
        return -1;
    }
    m->k[m->n] = key;
    m->v[m->n++] = val;
    return 0;
}

static int settle_joined(Scanner *self, PyObject *trace, layer_rec *layers, Py_ssize_t nl, aggs *a,
                         Py_ssize_t *calls) {
    PyObject *value = self->settle.value;
    Py_ssize_t keys_size = self->settle.keys_size;
    int rc = -1;
    /* a few layers (the common trace): everything on the stack */
    jl_layer ls_small[JOIN_SMALL];
    Py_ssize_t idx_small[3 * JOIN_SMALL];
    uint8_t keys_small[512];
    int small = nl <= JOIN_SMALL;
    jl_layer *ls = small ? ls_small : PyMem_Malloc(nl * sizeof(jl_layer));
    Py_ssize_t *parent = small ? idx_small : PyMem_Malloc(nl * sizeof(Py_ssize_t));
    Py_ssize_t *next = small ? idx_small + JOIN_SMALL : PyMem_Malloc(nl * sizeof(Py_ssize_t));
    Py_ssize_t *tail = small ? idx_small + 2 * JOIN_SMALL : PyMem_Malloc(nl * sizeof(Py_ssize_t));
    uint8_t *keybuf = NULL;
    kmap spans, keys;
    spans.m = keys.m = (smap){NULL, 0, 0};
    PyObject *hex = NULL;
    if (ls == NULL || parent == NULL || next == NULL || tail == NULL) { PyErr_NoMemory(); goto done; }
    memset(ls, 0, nl * sizeof(jl_layer));
    if (sl_names_ready() < 0 || kmap_init(&spans, nl) < 0 || kmap_init(&keys, 2 * nl) < 0) goto done;
    Py_ssize_t keybytes = 0;
    for (Py_ssize_t i = 0; i < nl; i++) {
        const uint8_t *r = layers[i].rec;
        uint32_t id = (uint32_t)r[36] | (uint32_t)r[37] << 8 | (uint32_t)r[38] << 16 | (uint32_t)r[39] << 24;
        if ((Py_ssize_t)id >= PyList_GET_SIZE(self->join_learned)) {
            PyErr_SetString(PyExc_ValueError, "packed: unknown series");
            goto done;
        }
        PyObject *rd = PyList_GET_ITEM(self->join_learned, id);
        if (!PyTuple_Check(rd) || (PyTuple_GET_SIZE(rd) != 9 && PyTuple_GET_SIZE(rd) != 12) || !PyUnicode_Check(PyTuple_GET_ITEM(rd, 1)) ||
            !PyUnicode_Check(PyTuple_GET_ITEM(rd, 2)) || !PyUnicode_Check(PyTuple_GET_ITEM(rd, 4))) {
            PyErr_SetString(PyExc_TypeError, "join_learned: (side, tool, tool type, mcp, server, retry, agent, "
                                             "call key, rpc key) expected");
            goto done;
        }
        jl_layer *x = &ls[i];
        x->reading = rd;
        x->side = PyLong_AsLong(PyTuple_GET_ITEM(rd, 0));
        if (x->side == -1 && PyErr_Occurred()) goto done;
        x->tool = PyTuple_GET_ITEM(rd, 1);
        x->tool_type = PyTuple_GET_ITEM(rd, 2);
        x->server = PyTuple_GET_ITEM(rd, 4);
        if ((x->mcp = PyObject_IsTrue(PyTuple_GET_ITEM(rd, 3))) < 0) goto done;
        if ((x->retry = PyObject_IsTrue(PyTuple_GET_ITEM(rd, 5))) < 0) goto done;
        x->start = get_u64(r + 20);
        x->end = get_u64(r + 28);
        parent[i] = i;
        next[i] = -1;
        Py_ssize_t tool_n = 0;
        if (PyUnicode_AsUTF8AndSize(x->tool, &tool_n) == NULL) goto done;
        if (layers[i].ids[0].p) keybytes += 1 + layers[i].ids[0].n;
        if (layers[i].ids[1].p && x->side != 0) keybytes += 3 + layers[i].ids[1].n + tool_n;
        slice span = {r + 2, r[1]};
        if (kmap_put(&spans, span, i) < 0) goto done; /* (the first layer of a span id) */
    }
    /* the join keys, each in keybuf: 'c' call id; 'r', the id's length (2 bytes), id, tool */
    keybuf = keybytes <= (Py_ssize_t)sizeof(keys_small) ? keys_small : PyMem_Malloc(keybytes);
    if (keybuf == NULL) { PyErr_NoMemory(); goto done; }
    Py_ssize_t used = 0;
    for (Py_ssize_t i = 0; i < nl; i++) {
        const uint8_t *r = layers[i].rec;
        slice up = {r + 11, r[10]};
        Py_ssize_t j = up.n ? kmap_find(&spans, up) : -1;
        if (j >= 0) uf_union(parent, i, j);
        for (int k = 0; k < 2; k++) {
            slice id = layers[i].ids[k];
            if (id.p == NULL || (k == 1 && ls[i].side == 0)) continue;
            uint8_t *o = keybuf + used;
            slice key = {o, 0};
            if (k == 0) {
                o[0] = 'c';
                memcpy(o + 1, id.p, id.n);
                key.n = 1 + id.n;
            } else {
                Py_ssize_t tool_n;
                const char *tool = PyUnicode_AsUTF8AndSize(ls[i].tool, &tool_n);
                if (tool == NULL) goto done;
                o[0] = 'r';
                o[1] = (uint8_t)(id.n & 0xff);
                o[2] = (uint8_t)(id.n >> 8);
                memcpy(o + 3, id.p, id.n);
                memcpy(o + 3 + id.n, tool, tool_n);
                key.n = 3 + id.n + tool_n;
            }
            used += key.n;
            Py_ssize_t first = kmap_find(&keys, key);
            if (first >= 0) uf_union(parent, i, first);
            else if (kmap_put(&keys, key, i) < 0) goto done;
        }
    }
    /* the groups: the layers of each root, in order */
    for (Py_ssize_t i = 0; i < nl; i++) {
        Py_ssize_t root = uf_find(parent, i);
        if (root != i) {
            next[tail[root]] = i;
            tail[root] = i;
        } else {
            tail[i] = i;
        }
    }
    slice trace_id = {(const uint8_t *)PyBytes_AS_STRING(trace), 16};
    Py_ssize_t ncalls = 0;
    for (Py_ssize_t g = 0; g < nl; g++) {
        if (parent[g] != g) continue; /* (uf_find above left every root its own parent) */
        ncalls++;
        /* the caller: an outermost layer (its parent is no layer of the call: a parent that is
         * a layer's span id is in its call) of the least (side, start), the first such */
        Py_ssize_t caller = -1, any = g, with_tool = -1, client_server = -1, with_server = -1;
        int mcp = 0, retry = 0;
        for (Py_ssize_t i = g; i >= 0; i = next[i]) {
            const uint8_t *r = layers[i].rec;
            slice up = {r + 11, r[10]};
            jl_layer *x = &ls[i];
            if (!(up.n && kmap_find(&spans, up) >= 0) && (caller < 0 || jl_before(x, &ls[caller]))) caller = i;
            if (jl_before(x, &ls[any])) any = i;
            if (PyUnicode_GET_LENGTH(x->tool) && (with_tool < 0 || jl_before(x, &ls[with_tool]))) with_tool = i;
            if (PyUnicode_GET_LENGTH(x->server)) {
                if (x->side != 2 && (client_server < 0 || jl_before(x, &ls[client_server]))) client_server = i;
                if (with_server < 0 || jl_before(x, &ls[with_server])) with_server = i;
            }
            mcp |= x->mcp || x->side != 0;
            retry |= x->retry;
        }
        if (caller < 0) caller = any;
        jl_layer *c = &ls[caller];
        PyObject *tool = PyUnicode_GET_LENGTH(c->tool) ? c->tool : with_tool >= 0 ? ls[with_tool].tool : self->s_unknown;
        PyObject *status = retry ? self->s_retry : self->s_success;
        PyObject *la, *lb;
        if (mcp) {
            la = client_server >= 0 ? ls[client_server].server : with_server >= 0 ? ls[with_server].server : self->s_unknown;
            lb = tool;
        } else {
            la = tool;
            lb = PyUnicode_GET_LENGTH(c->tool_type) ? c->tool_type : self->s_function;
        }
        entry *e = get_entry(a, mcp ? M_TOOL_CALLS : M_FN_CALLS, la, lb, status, self->s_none);
        if (e == NULL) goto done;
        e->count++;
        e = get_entry(a, mcp ? M_TOOL_DURATION : M_FN_DURATION, la, lb, NULL, NULL);
        if (e == NULL) goto done;
        double duration = (c->end >= c->start ? (double)(c->end - c->start) : -(double)(c->start - c->end)) / 1e9;
        slice span_id = {layers[caller].rec + 2, layers[caller].rec[1]};
        observe(self, e, B_TOOL, duration, trace_id, span_id, NULL);
        /* the memories (the layers of settled calls, their keys) */
        for (Py_ssize_t i = g; i >= 0; i = next[i]) {
            const uint8_t *r = layers[i].rec;
            /* ((trace, span) and ("call", trace, call id) put by their data: see mem_leaf) */
            mem_leaf key[2] = {{trace_id.p, 16, 0, trace}, {r + 2, r[1], 0, NULL}};
            if (memory_put_leaves(self->join_settled, key, 2, value) < 0) goto done;
            if (!r[19]) continue;
            if (r[19] & 1) {
                mem_leaf ck[3] = {{(const uint8_t *)"call", 4, 1, self->s_call}, {trace_id.p, 16, 0, trace},
                                  {layers[i].ids[0].p, layers[i].ids[0].n, 1, NULL}};
                if (memory_put_leaves(self->join_keys, ck, 3, value) < 0 ||
                    memory_trim(self->join_keys, keys_size) < 0)
                    goto done;
            }
            PyObject *ks[2];
            if (join_keys_of(self, trace, &hex, layers[i].ids, r[19] & 2, ls[i].reading, ks) < 0) goto done;
            for (int k = 0; k < 2; k++) {
                if (ks[k] == NULL) continue;
                int ok = memory_put(self->join_keys, ks[k], value) == 0 && memory_trim(self->join_keys, keys_size) == 0;
                if (!ok) {
                    Py_XDECREF(ks[0]);
                    Py_XDECREF(ks[1]);
                    goto done;
                }
            }
            Py_XDECREF(ks[0]);
            Py_XDECREF(ks[1]);
        }
    }
    *calls = ncalls;
    rc = 0;
done:
    if (!small) {
        PyMem_Free(ls);
        PyMem_Free(parent);
        PyMem_Free(next);
        PyMem_Free(tail);
    }
    if (keybuf != keys_small) PyMem_Free(keybuf);
    smap_free(&spans.m);
    smap_free(&keys.m);
    Py_XDECREF(hex);
    return rc;
}

/* the failure marks of one settle (calls.py _Marks) */
typedef struct {
    PyObject *marks;   /* dict: this settle's marks (trace, span) -> (frozenset, bool) */
    PyObject *items;   /* the joiner's memory of failed parents (Memory / OrderedDict): key -> (expiry, mark) */
    Py_ssize_t size;   /* its bound */
    PyObject *expiry;  /* now + its ttl */
    PyObject *parents; /* dict span -> parent: the entry's links */
    PyObject *failed;  /* set: span ids of the entry's failed spans */
} sl_marks;

/* The mark of a key: this settle's, else the memory's (borrowed; NULL when none), -1 on error */
static int mark_of(sl_marks *m, PyObject *key, PyObject **known) {
    *known = PyDict_GetItemWithError(m->marks, key);
    if (*known != NULL) return 0;
    if (PyErr_Occurred()) return -1;
    PyObject *found = memory_get(m->items, key);
    if (found == NULL) return PyErr_Occurred() ? -1 : 0;
    if (!PyTuple_Check(found) || PyTuple_GET_SIZE(found) != 2 || !PyTuple_Check(PyTuple_GET_ITEM(found, 1)) ||
        PyTuple_GET_SIZE(PyTuple_GET_ITEM(found, 1)) != 2) {
        PyErr_SetString(PyExc_TypeError, "failed parents: (expiry, (types, direct)) expected");
        return -1;
    }
    *known = PyTuple_GET_ITEM(found, 1);
    return 0;
}

/* The marks put into the memory of failed parents shared: equal marks (the error types below
 * a span, reached through failed spans only) are one tuple (and one frozenset), and the values
 * (expiry, mark) of one expiry one tuple, instead of a frozenset and two tuples per marked span
 * (~280 bytes, with the memory full at 100,000 spans/s ~10 MB). Values are compared, never
 * identities, so sharing them changes nothing the joiner sees. Both caches are bounded: emptied
 * when they reach MARK_CACHE_MAX entries (only sharing is lost). */
#define MARK_CACHE_MAX 1024
static PyObject *mark_cache;  /* dict: mark -> the same mark */
static PyObject *value_cache; /* dict: mark -> (expiry, mark), their expiry value_expiry */
static double value_expiry;

/* the mark (below, direct) shared: a new reference, NULL on error */
static PyObject *mark_shared(PyObject *below, int direct) {
    PyObject *mark = PyTuple_Pack(2, below, direct ? Py_True : Py_False);
    if (mark == NULL) return NULL;
    if (mark_cache == NULL && (mark_cache = PyDict_New()) == NULL) { Py_DECREF(mark); return NULL; }
    if (PyDict_GET_SIZE(mark_cache) >= MARK_CACHE_MAX) PyDict_Clear(mark_cache);
    PyObject *found = PyDict_SetDefault(mark_cache, mark, mark); /* borrowed */
    Py_XINCREF(found);
    Py_DECREF(mark);
    return found;
}

/* the value (expiry, mark) shared (an expiry that is not a float: a tuple of its own): a new
 * reference, NULL on error */
static PyObject *mark_value(PyObject *expiry, PyObject *mark) {
    if (!PyFloat_CheckExact(expiry)) return PyTuple_Pack(2, expiry, mark);
    double e = PyFloat_AS_DOUBLE(expiry);
    if (value_cache == NULL && (value_cache = PyDict_New()) == NULL) return NULL;
    if (e != value_expiry || PyDict_GET_SIZE(value_cache) >= MARK_CACHE_MAX) {
        PyDict_Clear(value_cache);
        value_expiry = e;
    }
    PyObject *found = PyDict_GetItemWithError(value_cache, mark); /* borrowed */
    if (found != NULL) return Py_NewRef(found);
    if (PyErr_Occurred()) return NULL;
    PyObject *value = PyTuple_Pack(2, expiry, mark);
    if (value == NULL || e != e) return value; /* (NaN: never found again) */
    if (PyDict_SetItem(value_cache, mark, value) < 0) Py_CLEAR(value);
    return value;
}

/* _Marks.above: marks `parent` and the spans above it with the error types `types` (a
 * frozenset). 0, -1 on error. */
static int mark_above(sl_marks *m, PyObject *trace, PyObject *parent, PyObject *types) {
    int direct = 1, rc = -1;
    Py_INCREF(parent);
    for (int step = 0; step < SETTLE_MAX_DEPTH; step++) {
        int t = PyObject_IsTrue(parent);
        if (t <= 0) { rc = t; break; }
        PyObject *key = PyTuple_Pack(2, trace, parent), *known = NULL;
        if (key == NULL || mark_of(m, key, &known) < 0) { Py_XDECREF(key); break; }
        PyObject *below;
        int kdirect = 0;
        if (known != NULL) {
            kdirect = PyObject_IsTrue(PyTuple_GET_ITEM(known, 1));
            int sup = kdirect < 0 ? -1 : PyObject_RichCompareBool(PyTuple_GET_ITEM(known, 0), types, Py_GE);
            if (sup < 0) { Py_DECREF(key); break; }
            if (sup && (kdirect || !direct)) { Py_DECREF(key); rc = 0; break; }
            below = PyNumber_Or(PyTuple_GET_ITEM(known, 0), types);
        } else {
            below = Py_NewRef(types);
        }
        PyObject *mark = below ? mark_shared(below, direct || kdirect) : NULL;
        Py_XDECREF(below);
        PyObject *value = mark ? mark_value(m->expiry, mark) : NULL;
        int ok = value != NULL && PyDict_SetItem(m->marks, key, mark) == 0 &&
                 memory_put(m->items, key, value) == 0 && memory_trim(m->items, m->size) == 0;
        Py_XDECREF(mark);
        Py_XDECREF(value);
        Py_DECREF(key);
        if (!ok) break;
        if (direct && (direct = PySet_Contains(m->failed, parent)) < 0) break;
        PyObject *next = PyDict_GetItemWithError(m->parents, parent);
        if (next == NULL && PyErr_Occurred()) break;
        Py_SETREF(parent, next != NULL ? Py_NewRef(next) : PyBytes_FromStringAndSize(NULL, 0));
        if (parent == NULL) return -1;
        if (step == SETTLE_MAX_DEPTH - 1) rc = 0;
    }
    Py_DECREF(parent);
    return rc;
}

/* _Marks.propagated: a failure below it, and no exception of its own (a type none below has,
 * reached through a span that did not fail). 1, 0, -1 on error. */
static int propagated(sl_marks *m, sl_failure *f) {
    PyObject *key = PyTuple_Pack(2, f->trace, f->span), *known = NULL;
    if (key == NULL) return -1;
    int rc = mark_of(m, key, &known);
    Py_DECREF(key);
    if (rc < 0) return -1;
    if (known == NULL) return 0;
    int own = PyObject_IsTrue(f->exception);
    if (own <= 0) return own < 0 ? -1 : 1;
    int in = PySequence_Contains(PyTuple_GET_ITEM(known, 0), f->exception);
    if (in != 0) return in < 0 ? -1 : 1;
    int direct = PyObject_IsTrue(PyTuple_GET_ITEM(known, 1));
    return direct < 0 ? -1 : direct;
}

/* _inside_failed_call: within the time of a failed call of the trace that says the same (its
 * status message or error type). 1, 0, -1 on error. */
static int inside_failed_call(Scanner *self, sl_failure *f, sl_layer *layers, Py_ssize_t n) {
    PyObject *said[2] = {f->message, f->type};
    for (Py_ssize_t i = 0; i < n; i++) {
        sl_layer *x = &layers[i];
        if (x->labels == NULL || !(x->start <= f->start && f->end <= x->end)) continue;
        for (int k = 0; k < 2; k++) {
            int skip = eq(said[k], self->s_empty);
            if (!skip) skip = eq(said[k], self->s_other);
            if (skip) { if (skip < 0) return -1; continue; }
            int t = PyObject_IsTrue(x->message);
            if (t > 0) t = eq(said[k], x->message);
            if (t == 0) t = eq(said[k], x->call_error);
            if (t != 0) return t;
        }
    }
    return 0;
}

/* _call of a one-layer group: its status and error type, and the errors_total labels of a
 * failed call. 0, -1 on error. */
static int layer_call(Scanner *self, sl_layer *x, PyObject *classify, PyObject *timeouts,
                      PyObject *recoverable) {
    if (!x->failed) {
        x->status = Py_NewRef(x->retry ? sl_names[K_RETRY] : self->s_success);
        x->call_error = Py_NewRef(self->s_none);
        return 0;
    }
    PyObject *classified = NULL; /* classify(message), called once */
    int failing = 1;
    if (x->retry) {
        classified = PyObject_CallOneArg(classify, x->message);
        if (classified == NULL) return -1;
        failing = PySequence_Contains(timeouts, classified);
        if (failing < 0) { Py_DECREF(classified); return -1; }
    }
    if (!failing) { /* a retry the model was asked for: not a failure */
        Py_DECREF(classified);
        x->status = Py_NewRef(sl_names[K_RETRY]);
        x->call_error = Py_NewRef(self->s_none);
        return 0;
    }
    PyObject *error = NULL;
    PyObject *tries[2] = {x->retry ? NULL : x->error_type, x->retry ? NULL : x->exception};
    for (int k = 0; k < 2 && error == NULL; k++) {
        if (tries[k] == NULL) continue;
        int t = PyObject_IsTrue(tries[k]);
        if (t < 0) { Py_XDECREF(classified); return -1; }
        if (t) error = Py_NewRef(tries[k]);
    }
    if (error == NULL) {
        if (classified == NULL && (classified = PyObject_CallOneArg(classify, x->message)) == NULL) return -1;
        int t = PyObject_IsTrue(classified);
        if (t < 0) { Py_DECREF(classified); return -1; }
        error = Py_NewRef(t ? classified : self->s_other);
    }
    Py_XDECREF(classified);
    int rec = PySequence_Contains(recoverable, error);
    int mcp = x->mcp || x->side != 0;
    x->labels = NULL;
    if (rec >= 0) {
        PyObject *pairs[4] = {PyTuple_Pack(2, sl_names[A_ERROR_TYPE], error),
                              PyTuple_Pack(2, sl_names[K_COMPONENT], mcp ? self->s_mcp : sl_names[A_TOOL]),
                              PyTuple_Pack(2, sl_names[K_SEVERITY], self->s_error),
                              PyTuple_Pack(2, sl_names[K_RECOVERABLE], rec ? self->s_true : self->s_false)};
        x->labels = tuple_steal(4, pairs);
    }
    if (x->labels == NULL) { Py_DECREF(error); return -1; }
    x->status = Py_NewRef(self->s_error);
    x->call_error = error;
    return 0;
}

/* a frozenset of one or two error types (the second when truthy) */
static PyObject *types_of(PyObject *first, PyObject *second) {
    PyObject *set = PyFrozenSet_New(NULL);
    if (set == NULL || PySet_Add(set, first) < 0) { Py_XDECREF(set); return NULL; }
    int t = PyObject_IsTrue(second);
    if (t < 0 || (t && PySet_Add(set, second) < 0)) { Py_DECREF(set); return NULL; }
    return set;
}

PyDoc_STRVAR(settle_layers_doc,
"settle_layers(layers, failures, parents, now, errors, /) -> int\n\n"
"Settles a held trace of Layer and Failure objects (calls.py) as the joiner's _settle would\n"
"when each layer is a call of its own (no call id, JSON-RPC id or session, no span id twice,\n"
"no layer the parent of another; 16-byte trace ids, span ids of 1 to 8 bytes): counts the calls\n"
"per series (take_calls), puts (trace, span) -> (now + ttl, None) into join_settled (trimmed\n"
"to size), walks the failure marks up `parents` into `marked` (the memory of failed parents,\n"
"trimmed to marked_size, its values (now + marked_ttl, (types, direct))), appends the\n"
"errors_total label sets to the list `errors` and returns the number of calls; -1 (nothing\n"
"done) for any other trace (the settings: configure_settle).");

static PyObject *settle_core(Scanner *self, sl_layer *layers, Py_ssize_t nl, PyObject *failure_list,
                             PyObject *parents, PyObject *errors);

/* settle_layers on the values of settle_begin (layers and failures lists, parents a dict) */
static PyObject *do_settle_layers(Scanner *self, PyObject *layer_list, PyObject *failure_list,
                                  PyObject *parents, PyObject *errors) {
    if (self->join_shapes == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the join's common case is off");
        return NULL;
    }
    Py_ssize_t nl = PyList_GET_SIZE(layer_list);
    if (nl > SETTLE_MAX_LAYERS) return PyLong_FromLong(-1);
    sl_layer *layers = PyMem_Calloc(nl ? nl : 1, sizeof(sl_layer));
    if (layers == NULL) return PyErr_NoMemory();
    /* read everything first: nothing is done for a trace that is not this case */
    int ok = 1;
    for (Py_ssize_t i = 0; ok == 1 && i < nl; i++) {
        ok = sl_read_layer(PyList_GET_ITEM(layer_list, i), &layers[i], self->join_keys != NULL);
        if (ok == 1 && i > 0) ok = eq(layers[i].trace, layers[0].trace);
    }
    PyObject *result = ok < 0 ? NULL : ok == 0 ? PyLong_FromLong(-1)
                                               : settle_core(self, layers, nl, failure_list, parents, errors);
    for (Py_ssize_t i = 0; i < nl; i++) sl_layer_clear(&layers[i]);
    PyMem_Free(layers);
    return result;
}

static PyObject *Scanner_settle_layers(Scanner *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyList_Check(args[0]) || !PyList_Check(args[1]) || !PyDict_Check(args[2]) ||
        !PyList_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "settle_layers(layers: list, failures: list, parents: dict, now: float, errors: list)");
        return NULL;
    }
    if (sl_names_ready() < 0 || settle_begin(self, args[3]) < 0) return NULL;
    return settle_end(self, do_settle_layers(self, args[0], args[1], args[2], args[4]));
}

/* settle_layers' work on its layers read (of one trace; cleared by the caller), the failures
 * of `failure_list` and the parent links `parents`, the errors_total label sets appended to
 * `errors` (the settings and the values of settle_begin). -1 (nothing done) for another
 * trace. */
static PyObject *settle_core(Scanner *self, sl_layer *layers, Py_ssize_t nl, PyObject *failure_list,
                             PyObject *parents, PyObject *errors) {
    const settle_config *c = &self->settle;
    Py_ssize_t size = c->size, keys_size = c->keys_size;
    PyObject *hex = NULL; /* the trace in hex (JSON-RPC keys), made when first needed */
    Py_ssize_t nf = PyList_GET_SIZE(failure_list);
    sl_failure *failures = PyMem_Calloc(nf ? nf : 1, sizeof(sl_failure));
    char *origin = PyMem_Calloc(nf ? nf : 1, 1);
    sl_marks m = {PyDict_New(), c->marked, c->marked_size, c->expiry, parents, PySet_New(NULL)};
    PyObject *result = NULL;
    if (failures == NULL || origin == NULL) { PyErr_NoMemory(); goto done; }
    if (m.marks == NULL || m.failed == NULL) goto done;
    int ok = 1;
    for (Py_ssize_t i = 1; ok == 1 && i < nl; i++)
        for (Py_ssize_t j = 0; ok == 1 && j < i; j++) { /* no span id twice */
            int same = eq(layers[i].span, layers[j].span);
            ok = same < 0 ? -1 : !same;
        }
    for (Py_ssize_t i = 0; ok == 1 && i < nl; i++) /* no layer the parent of another */
        for (Py_ssize_t j = 0; ok == 1 && j < nl; j++) {
            int below = eq(layers[i].parent, layers[j].span);
            ok = below < 0 ? -1 : !below;
        }
    for (Py_ssize_t i = 0; ok == 1 && i < nl; i++) /* no call id, no JSON-RPC key twice (_group) */
        for (Py_ssize_t j = 0; ok == 1 && j < i && layers[i].call_id != NULL; j++) {
            sl_layer *x = &layers[i], *y = &layers[j];
            int same = PyUnicode_GET_LENGTH(x->call_id) ? eq(x->call_id, y->call_id) : 0;
            if (same == 0 && PyUnicode_GET_LENGTH(x->rpc_id) && x->side != 0 && y->side != 0) {
                same = eq(x->rpc_id, y->rpc_id);
                if (same == 1) same = eq(x->tool, y->tool);
            }
            ok = same < 0 ? -1 : !same;
        }
    for (Py_ssize_t i = 0; ok == 1 && i < nf; i++)
        ok = sl_read_failure(PyList_GET_ITEM(failure_list, i), &failures[i]);
    if (ok < 0) goto done;
    if (ok == 0) { result = PyLong_FromLong(-1); goto done; }
    /* the calls (classify may be called here: still nothing done) */
    for (Py_ssize_t i = 0; i < nl; i++)
        if (layer_call(self, &layers[i], c->classify, c->timeouts, c->recoverable) < 0) goto done;
    /* the entry's failed spans: failed layers that are no retry, failures */
    for (Py_ssize_t i = 0; i < nl; i++)
        if (layers[i].failed && !layers[i].retry && PySet_Add(m.failed, layers[i].span) < 0) goto done;
    for (Py_ssize_t i = 0; i < nf; i++)
        if (PySet_Add(m.failed, failures[i].span) < 0) goto done;
    /* each call counted, its layer remembered as settled, a failed one's marks and errors */
    aggs a = {self->calls_index, self->calls_entries, self->calls_n, self->calls_cap, self->calls_memo, 0, 1};
    for (Py_ssize_t i = 0; i < nl; i++) {
        sl_layer *x = &layers[i];
        int mcp = x->mcp || x->side != 0;
        PyObject *tool = x->tool;
        int t = PyObject_IsTrue(tool);
        if (t < 0) goto counted;
        if (!t) tool = self->s_unknown;
        PyObject *la, *lb;
        if (mcp) {
            if ((t = PyObject_IsTrue(x->server)) < 0) goto counted;
            la = t ? x->server : self->s_unknown;
            lb = tool;
        } else {
            if ((t = PyObject_IsTrue(x->tool_type)) < 0) goto counted;
            la = tool;
            lb = t ? x->tool_type : sl_names[K_FUNCTION];
        }
        entry *e = get_entry(&a, mcp ? M_TOOL_CALLS : M_FN_CALLS, la, lb, x->status, x->call_error);
        if (e == NULL) goto counted;
        e->count++;
        e = get_entry(&a, mcp ? M_TOOL_DURATION : M_FN_DURATION, la, lb, NULL, NULL);
        if (e == NULL) goto counted;
        double duration = (x->end >= x->start ? (double)(x->end - x->start) : -(double)(x->start - x->end)) / 1e9;
        slice trace_id = {(const uint8_t *)PyBytes_AS_STRING(x->trace), 16};
        slice span_id = {(const uint8_t *)PyBytes_AS_STRING(x->span), PyBytes_GET_SIZE(x->span)};
        observe(self, e, B_TOOL, duration, trace_id, span_id, NULL);
        PyObject *key = PyTuple_Pack(2, x->trace, x->span);
        int put = key ? memory_put(self->join_settled, key, c->value) : -1;
        Py_XDECREF(key);
        if (put < 0) goto counted;
        /* its call and JSON-RPC keys (_remember_keys; the memory trimmed at the end) */
        if (x->call_id != NULL && PyUnicode_GET_LENGTH(x->call_id)) {
            key = PyTuple_Pack(3, self->s_call, x->trace, x->call_id);
            put = key ? memory_put(self->join_keys, key, c->value) : -1;
            Py_XDECREF(key);
            if (put < 0) goto counted;
        }
        if (x->rpc_id != NULL && PyUnicode_GET_LENGTH(x->rpc_id) && x->side != 0) {
            if (hex == NULL && (hex = hex_of(x->trace)) == NULL) goto counted;
            key = PyTuple_Pack(4, self->s_rpc, hex, x->rpc_id, x->tool);
            put = key ? memory_put(self->join_keys, key, c->value) : -1;
            Py_XDECREF(key);
            if (put < 0) goto counted;
        }
        if (x->labels != NULL) {
            PyObject *types = types_of(x->call_error, x->exception);
            int marked = types ? mark_above(&m, x->trace, x->parent, types) : -1;
            Py_XDECREF(types);
            if (marked < 0 || PyList_Append(errors, x->labels) < 0) goto counted;
        }
    }
    if (memory_trim(self->join_settled, size) < 0) goto counted;
    if (self->join_keys != NULL && memory_trim(self->join_keys, keys_size) < 0) goto counted;
    /* failures: every span above a failed one marked first, then each counted where it arose */
    for (Py_ssize_t i = 0; i < nf; i++) {
        sl_failure *f = &failures[i];
        PyObject *types = types_of(f->type, f->exception);
        int marked = types ? mark_above(&m, f->trace, f->parent, types) : -1;
        Py_XDECREF(types);
        if (marked < 0) goto counted;
    }
    Py_ssize_t norigins = 0;
    for (Py_ssize_t i = 0; i < nf; i++) {
        sl_failure *f = &failures[i];
        int t = f->peer ? 1 : propagated(&m, f);
        if (t == 0) t = inside_failed_call(self, f, layers, nl);
        if (t < 0) goto counted;
        origin[i] = !t;
        norigins += !t;
    }
    for (Py_ssize_t i = 0; i < nf; i++) {
        if (!origin[i]) continue;
        sl_failure *f = &failures[i];
        int inner = 0; /* the same error recorded by a span whose time holds another's */
        for (Py_ssize_t j = 0; norigins <= SETTLE_MAX_ORIGINS && !inner && j < nf; j++) {
            sl_failure *o = &failures[j];
            if (j == i || !origin[j] || !(f->start <= o->start && o->end <= f->end) ||
                (o->start == f->start && o->end == f->end))
                continue;
            if ((inner = eq(o->label0, f->label0)) < 0) goto counted;
        }
        if (!inner && PyList_Append(errors, f->labels) < 0) goto counted;
    }
    result = PyLong_FromSsize_t(nl);
counted:
    self->calls_entries = a.entries;
    self->calls_n = a.n;
    self->calls_cap = a.cap;
done:
    for (Py_ssize_t i = 0; failures != NULL && i < nf; i++) sl_failure_clear(&failures[i]);
    PyMem_Free(failures);
    PyMem_Free(origin);
    Py_XDECREF(m.marks);
    Py_XDECREF(m.failed);
    Py_XDECREF(hex);
    return result;
}

PyDoc_STRVAR(settle_packed_doc,
"settle_packed(packed, failures, now, errors, /) -> int\n\n"
"Settles a held trace of packed records (the joiner's Packed items, failed layers and the\n"
"parent links of its failures among them: record kind 2) and the Failure objects of its\n"
"failures as settle_layers settles the Layer objects and parent links the joiner would unpack\n"
"them into (calls.py _unpack_into); -1 (nothing done) for another trace.");

/* an ids string's next text (2-byte length, UTF-8): a new str, or NULL (malformed: ValueError) */
static PyObject *ids_text(const uint8_t **q, const uint8_t *qend) {
    if (qend - *q < 2) goto malformed;
    Py_ssize_t len = (Py_ssize_t)(*q)[0] | (Py_ssize_t)(*q)[1] << 8;
    if (qend - *q - 2 < len) goto malformed;
    PyObject *text = PyUnicode_DecodeUTF8((const char *)*q + 2, len, "strict");
    *q += 2 + len;
    return text;
malformed:
    PyErr_SetString(PyExc_ValueError, "packed: malformed record");
    return NULL;
}

/* One layer record as _unpack_into makes its Layer (owned references in x): 1, -1 on error. */
static int sl_layer_of_record(Scanner *self, PyObject *trace, const uint8_t *r, const uint8_t **q,
                              const uint8_t *qend, sl_layer *x) {
    uint32_t id = (uint32_t)r[36] | (uint32_t)r[37] << 8 | (uint32_t)r[38] << 16 | (uint32_t)r[39] << 24;
    uint8_t flags = r[19];
    if ((Py_ssize_t)id >= PyList_GET_SIZE(self->join_learned)) {
        PyErr_SetString(PyExc_ValueError, "packed: unknown series");
        return -1;
    }
    PyObject *rd = PyList_GET_ITEM(self->join_learned, id);
    Py_ssize_t n = PyTuple_Check(rd) ? PyTuple_GET_SIZE(rd) : 0;
    if ((n != 9 && n != 12) || ((flags & 4) && n != 12) || !PyLong_Check(PyTuple_GET_ITEM(rd, 0))) {
        PyErr_SetString(PyExc_TypeError, "join_learned: 9-tuples, 12 for a failed layer, expected");
        return -1;
    }
    x->side = PyLong_AsLong(PyTuple_GET_ITEM(rd, 0));
    if (x->side == -1 && PyErr_Occurred()) return -1;
    x->trace = Py_NewRef(trace);
    x->span = PyBytes_FromStringAndSize((const char *)r + 2, r[1]);
    x->parent = PyBytes_FromStringAndSize((const char *)r + 11, r[10]);
    x->tool = Py_NewRef(PyTuple_GET_ITEM(rd, 1));
    x->tool_type = Py_NewRef(PyTuple_GET_ITEM(rd, 2));
    x->server = Py_NewRef(PyTuple_GET_ITEM(rd, 4));
    if (x->span == NULL || x->parent == NULL) return -1;
    if ((x->mcp = PyObject_IsTrue(PyTuple_GET_ITEM(rd, 3))) < 0 ||
        (x->retry = PyObject_IsTrue(PyTuple_GET_ITEM(rd, 5))) < 0)
        return -1;
    x->call_id = (flags & 1) ? ids_text(q, qend) : Py_NewRef(self->s_empty);
    if (x->call_id == NULL) return -1;
    x->rpc_id = (flags & 2) ? ids_text(q, qend) : Py_NewRef(self->s_empty);
    if (x->rpc_id == NULL) return -1;
    PyObject *message = NULL;
    if (flags & 4) {
        if ((message = ids_text(q, qend)) == NULL) return -1;
        if ((x->failed = PyObject_IsTrue(PyTuple_GET_ITEM(rd, 9))) < 0) { Py_DECREF(message); return -1; }
        x->error_type = Py_NewRef(PyTuple_GET_ITEM(rd, 10));
        x->exception = Py_NewRef(PyTuple_GET_ITEM(rd, 11));
        x->message = x->failed ? message : Py_NewRef(self->s_empty);
        if (!x->failed) Py_DECREF(message);
    } else {
        x->failed = 0;
        x->error_type = Py_NewRef(self->s_empty);
        x->exception = Py_NewRef(self->s_empty);
        x->message = Py_NewRef(self->s_empty);
    }
    x->start = get_u64(r + 20);
    x->end = get_u64(r + 28);
    return 1;
}

/* settle_packed on the values of settle_begin (packed and failures lists) */
static PyObject *do_settle_packed(Scanner *self, PyObject *packed, PyObject *failure_list, PyObject *errors) {
    if (self->join_learned == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the id-keyed join is off");
        return NULL;
    }
    Py_ssize_t np = PyList_GET_SIZE(packed), nl = 0;
    PyObject *trace;
    if (check_packed(packed, &trace, NULL) < 0) return NULL;
    for (Py_ssize_t i = 0; i < np; i++) {
        PyObject *t = PyList_GET_ITEM(packed, i);
        const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(PyTuple_GET_ITEM(t, 1));
        for (Py_ssize_t k = 0; k < PyBytes_GET_SIZE(PyTuple_GET_ITEM(t, 1)); k += RECORD) {
            if (p[k] > 2 || p[k + 1] > 8 || p[k + 10] > 8 || (p[k] == 1 && (p[k + 1] < 1 || (p[k + 19] & ~7)))) {
                PyErr_SetString(PyExc_ValueError, "packed: malformed record");
                return NULL;
            }
            nl += p[k] == 1;
        }
    }
    if (trace == NULL || nl > SETTLE_MAX_LAYERS) return PyLong_FromLong(-1);
    sl_layer *layers = PyMem_Calloc(nl ? nl : 1, sizeof(sl_layer));
    PyObject *parents = PyDict_New();
    PyObject *result = NULL;
    Py_ssize_t n = 0;
    if (layers == NULL || parents == NULL) { if (layers == NULL) PyErr_NoMemory(); goto done; }
    /* the layers, and the parent links as _unpack_into gives them: per item, its layers' (in
     * order), then its links' (not empty); a failure's (kind 2, an item of its own) as it is */
    for (Py_ssize_t i = 0; i < np; i++) {
        PyObject *t = PyList_GET_ITEM(packed, i), *records = PyTuple_GET_ITEM(t, 1), *ids = PyTuple_GET_ITEM(t, 3);
        const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(records);
        const uint8_t *q = (const uint8_t *)PyBytes_AS_STRING(ids), *qend = q + PyBytes_GET_SIZE(ids);
        Py_ssize_t size = PyBytes_GET_SIZE(records);
        for (int pass = 0; pass < 2; pass++) {
            for (Py_ssize_t k = 0; k < size; k += RECORD) {
                const uint8_t *r = p + k;
                if (pass == 0 && r[0] == 0) continue;
                if (pass == 1 && (r[0] != 0 || r[10] == 0)) continue;
                PyObject *span = NULL, *parent = NULL;
                if (r[0] == 1) {
                    sl_layer *x = &layers[n++];
                    if (sl_layer_of_record(self, trace, r, &q, qend, x) < 0) goto done;
                    span = Py_NewRef(x->span);
                    parent = Py_NewRef(x->parent);
                } else {
                    span = PyBytes_FromStringAndSize((const char *)r + 2, r[1]);
                    parent = PyBytes_FromStringAndSize((const char *)r + 11, r[10]);
                }
                int rc = span && parent ? PyDict_SetItem(parents, span, parent) : -1;
                Py_XDECREF(span);
                Py_XDECREF(parent);
                if (rc < 0) goto done;
            }
        }
        if (q != qend) {
            PyErr_SetString(PyExc_ValueError, "packed: malformed record");
            goto done;
        }
    }
    result = settle_core(self, layers, nl, failure_list, parents, errors);
done:
    for (Py_ssize_t i = 0; layers != NULL && i < nl; i++) sl_layer_clear(&layers[i]);
    PyMem_Free(layers);
    Py_XDECREF(parents);
    return result;
}

static PyObject *Scanner_settle_packed(Scanner *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_Check(args[0]) || !PyList_Check(args[1]) || !PyList_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "settle_packed(packed: list, failures: list, now: float, errors: list)");
        return NULL;
    }
    if (sl_names_ready() < 0 || settle_begin(self, args[2]) < 0) return NULL;
    return settle_end(self, do_settle_packed(self, args[0], args[1], args[3]));
}

PyDoc_STRVAR(settle_due_doc,
"settle_due(due, pending, start, now, errors, /) -> tuple[int, int]\n\n"
"The joiner's loop over the entries due (calls.py CallJoiner.settle): from due[start] on, each\n"
"(trace, entry) taken out of `pending` (del pending[trace]) and settled as the joiner would\n"
"settle it first: by settle_simple when the entry is packed (settle_packed when it has failures),\n"
"else by settle_layers (the other\n"
"arguments are theirs). Stops at the first entry neither settles (nothing done for it but its\n"
"removal from pending: the joiner settles it) or at the end; returns (its index or len(due),\n"
"the calls counted).");

/* an entry's attribute of the type the settle paths take (a new reference), else NULL
 * (TypeError set) */
static PyObject *entry_list(PyObject *held, int name, PyTypeObject *type) {
    PyObject *o = attr_get(held, name);
    if (o != NULL && !PyObject_TypeCheck(o, type)) {
        PyErr_Format(PyExc_TypeError, "an entry's %U: %s expected", sl_names[name], type->tp_name);
        Py_CLEAR(o);
    }
    return o;
}

/* One entry taken out of pending settled as settle_due settles it (settle_simple when packed,
 * settle_packed with failures, else settle_layers): the calls counted (an int; -1: not the
 * common case, nothing done), or NULL on error. */
static PyObject *settle_entry(Scanner *self, PyObject *entry, PyObject *errors) {
    PyObject *result = NULL, *layers = NULL, *failures = NULL, *parents = NULL;
    int packed = attr_true(entry, A_PACKED);
    if (packed >= 0) {
        layers = entry_list(entry, A_LAYERS, &PyList_Type);
        failures = layers ? attr_get(entry, A_FAILURES) : NULL;
        /* (a packed entry's failures: a list, or the empty tuple until it has some) */
        if (failures != NULL && !PyList_Check(failures) &&
            !(packed == 1 && PyTuple_CheckExact(failures) && PyTuple_GET_SIZE(failures) == 0)) {
            PyErr_Format(PyExc_TypeError, "an entry's %U: list expected", sl_names[A_FAILURES]);
            Py_CLEAR(failures);
        }
    }
    if (packed == 1 && failures != NULL) { /* settle_packed with failures, else settle_simple */
        int failed = PyList_Check(failures) && PyList_GET_SIZE(failures) > 0;
        result = failed ? do_settle_packed(self, layers, failures, errors) : do_settle_simple(self, layers);
    } else if (packed == 0 && failures != NULL) {
        parents = entry_list(entry, A_PARENTS, &PyDict_Type);
        if (parents != NULL) result = do_settle_layers(self, layers, failures, parents, errors);
    }
    Py_XDECREF(layers);
    Py_XDECREF(failures);
    Py_XDECREF(parents);
    return result;
}

static PyObject *Scanner_settle_due(Scanner *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyList_Check(args[0]) || !PyDict_Check(args[1]) || !PyList_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "settle_due(due: list, pending: OrderedDict, start: int, now: float, errors: list)");
        return NULL;
    }
    PyObject *due = args[0], *pending = args[1], *errors = args[4];
    Py_ssize_t at = PyLong_AsSsize_t(args[2]);
    if (at == -1 && PyErr_Occurred()) return NULL;
    if (at < 0) at = 0;
    if (sl_names_ready() < 0 || settle_begin(self, args[3]) < 0) return NULL;
    Py_ssize_t calls = 0;
    for (; at < PyList_GET_SIZE(due); at++) {
        PyObject *item = PyList_GET_ITEM(due, at);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_SetString(PyExc_TypeError, "due: (trace, entry) pairs expected");
            return settle_end(self, NULL);
        }
        Py_INCREF(item); /* (kept while its entry is settled, whatever due becomes) */
        PyObject *result = NULL;
        if (PyObject_DelItem(pending, PyTuple_GET_ITEM(item, 0)) == 0)
            result = settle_entry(self, PyTuple_GET_ITEM(item, 1), errors);
        Py_DECREF(item);
        if (result == NULL) return settle_end(self, NULL);
        Py_ssize_t done = PyLong_AsSsize_t(result);
        Py_DECREF(result);
        if (done == -1 && PyErr_Occurred()) return settle_end(self, NULL);
        if (done < 0) break; /* not the common case: the joiner's */
        calls += done;
    }
    return settle_end(self, Py_BuildValue("(nn)", at, calls));
}

PyDoc_STRVAR(settle_front_doc,
"settle_front(pending, max_traces, now, everything, errors, /) -> tuple[entry | None, int, int]\n\n"
"The joiner's whole settle loop (calls.py CallJoiner.settle with the C scanner; settle_front is\n"
"its twin): while `pending` holds an entry due at its front (every one with `everything`; else\n"
"the front one while more than `max_traces` are held, or while its deadline is not after\n"
"`now`), its trace is taken out of `pending` and the entry settled as settle_due settles it.\n"
"Returns (the first entry neither settles, taken out of pending, for the joiner to settle, or\n"
"None when none is due any more; the calls counted; the entries settled before their deadline\n"
"because more than max_traces were held: early, not counted with `everything`).");

/* the first key of `pending` (a new reference), NULL with nothing raised when it is empty */
static PyObject *front_key(PyObject *pending) {
    if (PyDict_CheckExact(pending)) { /* (a dict's first key: its insertion order) */
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        return PyDict_Next(pending, &pos, &key, &value) ? Py_NewRef(key) : NULL;
    }
    PyObject *it = PyObject_GetIter(pending);
    if (it == NULL) return NULL;
    PyObject *key = PyIter_Next(it);
    Py_DECREF(it);
    return key;
}

static PyObject *Scanner_settle_front(Scanner *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyDict_Check(args[0]) || !PyList_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "settle_front(pending: OrderedDict, max_traces: int, now: float, everything: bool, "
                        "errors: list)");
        return NULL;
    }
    PyObject *pending = args[0], *now = args[2], *errors = args[4];
    Py_ssize_t max_traces = PyLong_AsSsize_t(args[1]);
    if (max_traces == -1 && PyErr_Occurred()) return NULL;
    int everything = PyObject_IsTrue(args[3]);
    if (everything < 0) return NULL;
    if (sl_names_ready() < 0 || settle_begin(self, now) < 0) return NULL;
    Py_ssize_t calls = 0, early = 0;
    PyObject *left = NULL; /* the entry left to the joiner */
    for (;;) {
        if (PyDict_GET_SIZE(pending) == 0) break;
        PyObject *key = front_key(pending);
        if (key == NULL) {
            if (PyErr_Occurred()) return settle_end(self, NULL);
            break;
        }
        PyObject *entry = PyDict_GetItemWithError(pending, key); /* borrowed */
        if (entry == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, key);
            Py_DECREF(key);
            return settle_end(self, NULL);
        }
        Py_INCREF(entry);
        int over = PyDict_GET_SIZE(pending) > max_traces, expired = 1;
        if (!everything) {
            PyObject *deadline = attr_get(entry, A_DEADLINE);
            expired = deadline == NULL ? -1 : PyObject_RichCompareBool(deadline, now, Py_LE);
            Py_XDECREF(deadline);
            if (expired < 0) {
                Py_DECREF(key);
                Py_DECREF(entry);
                return settle_end(self, NULL);
            }
        }
        if (!(everything || over || expired)) { /* (the first not due: none after it) */
            Py_DECREF(key);
            Py_DECREF(entry);
            break;
        }
        if (!everything && over && !expired) early++;
        int rc = PyObject_DelItem(pending, key);
        Py_DECREF(key);
        PyObject *result = rc == 0 ? settle_entry(self, entry, errors) : NULL;
        Py_ssize_t done = result == NULL ? -1 : PyLong_AsSsize_t(result);
        Py_XDECREF(result);
        if (result == NULL || (done == -1 && PyErr_Occurred())) {
            Py_DECREF(entry);
            return settle_end(self, NULL);
        }
        if (done < 0) { /* not the common case: the joiner's */
            left = entry;
            break;
        }
        Py_DECREF(entry);
        calls += done;
    }
    PyObject *out = Py_BuildValue("(Onn)", left != NULL ? left : Py_None, calls, early);
    Py_XDECREF(left);
    return settle_end(self, out);
}

PyDoc_STRVAR(take_calls_doc,
"take_calls() -> series\n\n"
"The calls settle_simple and settle_layers counted since the last call, aggregated per series\n"
"as scan's series (mcp_tool_calls / mcp_tool_call_duration, agent_tool_calls /\n"
"agent_tool_call_duration).");

static PyObject *Scanner_take_calls(Scanner *self, PyObject *Py_UNUSED(ignored)) {
    if (self->calls_index == NULL) return PyList_New(0);
    aggs a = {self->calls_index, self->calls_entries, self->calls_n, self->calls_cap, self->calls_memo, 0, 1};
    PyObject *out = build_result(self, &a, NULL);
    if (out == NULL) return NULL;
    PyObject *index = PyDict_New();
    if (index == NULL) { Py_DECREF(out); return NULL; }
    Py_SETREF(self->calls_index, index);
    self->calls_n = 0;
    memo_reset(self->calls_memo);
    return out;
}

/* -- RootMemory: the connector's memory of workflow roots (put_roots) ---------------------------
 *
 * trace id -> (workflow type, agent id) of the workflow roots counted, for the tokens of their
 * traces' inference spans (connector.py _count_tokens): at most `size` entries, the least
 * recently put dropped first, as the twin (connector.py RootMemory, an OrderedDict whose put
 * moves the key to the end and which is trimmed from the front to `size`) holds them, in the
 * same order. Keyed by the raw trace id: a 16-byte id (the edge admits no other) is held in its
 * node, no Python object made for it; an id of another length (fed to the connector directly)
 * is held as a bytes object of it. A table of node indexes and their hashes (linear probing,
 * deletion by backward shift) over nodes in a doubly linked recency list (oldest first), as
 * _recency.h's memory; each node knows its slot (kept as entries shift back), so that the
 * oldest is dropped without a search. The hash is keyed, so that chosen ids do not collide
 * (a client picks its trace ids): a 16-byte id's two halves, each xored with a key, multiplied
 * into 128 bits whose halves are folded (wyhash's mix), the keys drawn from CPython's hash of
 * two constants (its secret: random per process unless PYTHONHASHSEED is set); an id of another
 * length is hashed as bytes are (SipHash). Lookups and puts run no Python code. */

typedef struct {
    uint8_t id[16];     /* the trace id when it is 16 bytes */
    PyObject *other;    /* the trace id (bytes) when it is not 16 bytes, else NULL */
    PyObject *value;    /* NULL: a free node */
    Py_hash_t hash;
    Py_ssize_t slot;       /* its table slot */
    Py_ssize_t prev, next; /* -1: none */
} root_node;

typedef struct {
    PyObject_HEAD
    root_node *nodes;
    Py_ssize_t nodes_cap, used; /* nodes allocated; nodes ever used (free ones reused) */
    rc_slot *table;             /* (index 0: an empty slot) */
    Py_ssize_t tmask;
    Py_ssize_t len, size, head, tail, free;
    uint64_t k0, k1; /* the hash's keys */
} RootMemoryObject;

static PyTypeObject RootMemoryType;

static inline Py_hash_t root_hash(const RootMemoryObject *m, const uint8_t *p, Py_ssize_t n) {
#ifdef __SIZEOF_INT128__
    if (n == 16) {
        uint64_t a, b;
        memcpy(&a, p, 8);
        memcpy(&b, p + 8, 8);
        a ^= m->k0;
        b ^= m->k1;
        /* (a zero factor would make every id of that half collide: SipHash for those ids) */
        if (a == 0 || b == 0) return mem_hash_bytes(p, n);
        __uint128_t r = (__uint128_t)a * (__uint128_t)b;
        uint64_t h = (uint64_t)r ^ (uint64_t)(r >> 64);
        h ^= h >> 32; /* (the table's index is the low bits: the high ones folded in) */
        return (Py_hash_t)h;
    }
#endif
    return mem_hash_bytes(p, n);
}

static inline int root_eq(const root_node *nd, const uint8_t *p, Py_ssize_t n) {
    if (n == 16) return nd->other == NULL && memcmp(nd->id, p, 16) == 0;
    return nd->other != NULL && PyBytes_GET_SIZE(nd->other) == n &&
           (n == 0 || memcmp(PyBytes_AS_STRING(nd->other), p, (size_t)n) == 0);
}

/* the table slot of the id (with this hash), or -1 */
static Py_ssize_t root_find(const RootMemoryObject *m, const uint8_t *p, Py_ssize_t n, Py_hash_t hash) {
    Py_ssize_t i = (Py_ssize_t)((size_t)hash & (size_t)m->tmask), k;
    while ((k = m->table[i].index)) {
        if (m->table[i].hash == hash && root_eq(&m->nodes[k - 1], p, n)) return i;
        i = (i + 1) & m->tmask;
    }
    return -1;
}

static void root_table_put(rc_slot *table, Py_ssize_t tmask, root_node *nodes, Py_ssize_t index) {
    Py_hash_t hash = nodes[index].hash;
    Py_ssize_t i = (Py_ssize_t)((size_t)hash & (size_t)tmask);
    while (table[i].index) i = (i + 1) & tmask;
    table[i].index = index + 1;
    table[i].hash = hash;
    nodes[index].slot = i;
}

/* slot i emptied, the entries after it shifted back so that each stays reachable */
static void root_table_remove(RootMemoryObject *m, Py_ssize_t i) {
    Py_ssize_t j = i;
    for (;;) {
        j = (j + 1) & m->tmask;
        if (!m->table[j].index) break;
        Py_ssize_t ideal = (Py_ssize_t)((size_t)m->table[j].hash & (size_t)m->tmask);
        int stays = i <= j ? (ideal > i && ideal <= j) : (ideal > i || ideal <= j);
        if (!stays) {
            m->table[i] = m->table[j];
            m->nodes[m->table[i].index - 1].slot = i;
            i = j;
        }
    }
    m->table[i].index = 0;
}

static void root_unlink(RootMemoryObject *m, Py_ssize_t x) {
    root_node *nd = &m->nodes[x];
    if (nd->prev >= 0) m->nodes[nd->prev].next = nd->next;
    else m->head = nd->next;
    if (nd->next >= 0) m->nodes[nd->next].prev = nd->prev;
    else m->tail = nd->prev;
}

static void root_link_last(RootMemoryObject *m, Py_ssize_t x) {
    root_node *nd = &m->nodes[x];
    nd->prev = m->tail;
    nd->next = -1;
    if (m->tail >= 0) m->nodes[m->tail].next = x;
    else m->head = x;
    m->tail = x;
}

/* the oldest entry dropped (the memory not empty); its references released last */
static void root_drop_oldest(RootMemoryObject *m) {
    Py_ssize_t x = m->head;
    root_node *nd = &m->nodes[x];
    root_table_remove(m, nd->slot);
    root_unlink(m, x);
    PyObject *other = nd->other, *value = nd->value;
    nd->other = nd->value = NULL;
    nd->next = m->free;
    m->free = x;
    m->len--;
    Py_XDECREF(other);
    Py_DECREF(value);
}

/* memory[id] = value as the newest entry, the oldest dropped beyond size (with size 0 nothing
 * is kept); obj: a bytes object of the id or NULL (made when one is needed: not 16 bytes).
 * 0, or -1 (MemoryError set) */
static int root_put(RootMemoryObject *m, const uint8_t *p, Py_ssize_t n, PyObject *obj, PyObject *value) {
    Py_hash_t hash = root_hash(m, p, n);
    Py_ssize_t at = root_find(m, p, n, hash);
    if (at >= 0) {
        Py_ssize_t x = m->table[at].index - 1;
        if (m->tail != x) {
            root_unlink(m, x);
            root_link_last(m, x);
        }
        Py_SETREF(m->nodes[x].value, Py_NewRef(value));
        return 0;
    }
    if (m->size <= 0) return 0;
    if (m->len >= m->size) root_drop_oldest(m);
    PyObject *other = NULL;
    if (n != 16) {
        other = obj != NULL && PyBytes_CheckExact(obj) ? Py_NewRef(obj)
                                                        : PyBytes_FromStringAndSize((const char *)p, n);
        if (other == NULL) return -1;
    }
    if ((m->len + 1) * 2 > m->tmask + 1) { /* (the table doubled, the entries put again) */
        Py_ssize_t tsize = (m->tmask + 1) * 2;
        rc_slot *table = PyMem_Calloc((size_t)tsize, sizeof(rc_slot));
        if (table == NULL) {
            Py_XDECREF(other);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t x = m->head; x >= 0; x = m->nodes[x].next) root_table_put(table, tsize - 1, m->nodes, x);
        PyMem_Free(m->table);
        m->table = table;
        m->tmask = tsize - 1;
    }
    Py_ssize_t x;
    if (m->free >= 0) {
        x = m->free;
        m->free = m->nodes[x].next;
    } else {
        if (m->used == m->nodes_cap) {
            Py_ssize_t ncap = m->nodes_cap ? m->nodes_cap * 2 : 64;
            if (ncap > m->size) ncap = m->size;
            root_node *nodes = PyMem_Realloc(m->nodes, (size_t)ncap * sizeof(root_node));
            if (nodes == NULL) {
                Py_XDECREF(other);
                PyErr_NoMemory();
                return -1;
            }
            m->nodes = nodes;
            m->nodes_cap = ncap;
        }
        x = m->used++;
    }
    root_node *nd = &m->nodes[x];
    if (n == 16) memcpy(nd->id, p, 16);
    nd->other = other;
    nd->value = Py_NewRef(value);
    nd->hash = hash;
    root_link_last(m, x);
    root_table_put(m->table, m->tmask, m->nodes, x);
    m->len++;
    return 0;
}

/* every entry dropped (the memory stays usable); the references released last */
static void root_clear(RootMemoryObject *m) {
    Py_ssize_t x = m->head;
    root_node *nodes = m->nodes;
    m->head = m->tail = m->free = -1;
    m->len = 0;
    m->used = 0;
    if (m->table != NULL) memset(m->table, 0, (size_t)(m->tmask + 1) * sizeof(rc_slot));
    while (x >= 0) {
        Py_ssize_t next = nodes[x].next;
        PyObject *other = nodes[x].other, *value = nodes[x].value;
        nodes[x].other = nodes[x].value = NULL;
        Py_XDECREF(other);
        Py_XDECREF(value);
        x = next;
    }
}

/* a trace id given from Python: its data (a bytes object), else TypeError */
static int root_id(PyObject *key, const uint8_t **p, Py_ssize_t *n) {
    if (!PyBytes_Check(key)) {
        PyErr_Format(PyExc_TypeError, "a root memory's key is a trace id (bytes), not %.100s",
                     Py_TYPE(key)->tp_name);
        return -1;
    }
    *p = (const uint8_t *)PyBytes_AS_STRING(key);
    *n = PyBytes_GET_SIZE(key);
    return 0;
}

/* the node of key, -1 not there, -2 on error */
static Py_ssize_t root_node_of(RootMemoryObject *m, PyObject *key) {
    const uint8_t *p;
    Py_ssize_t n;
    if (root_id(key, &p, &n) < 0) return -2;
    Py_ssize_t at = root_find(m, p, n, root_hash(m, p, n));
    return at < 0 ? -1 : m->table[at].index - 1;
}

/* the node's trace id as a new bytes object */
static PyObject *root_key(const root_node *nd) {
    if (nd->other != NULL) return Py_NewRef(nd->other);
    return PyBytes_FromStringAndSize((const char *)nd->id, 16);
}

static PyObject *roots_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"size", NULL};
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "n:RootMemory", kw, &size)) return NULL;
    RootMemoryObject *m = (RootMemoryObject *)type->tp_alloc(type, 0);
    if (m == NULL) return NULL;
    m->size = size < 0 ? 0 : size;
    m->head = m->tail = m->free = -1;
    m->tmask = 15;
    m->k0 = (uint64_t)mem_hash_bytes((const uint8_t *)"RootMemory.k0", 13);
    m->k1 = (uint64_t)mem_hash_bytes((const uint8_t *)"RootMemory.k1", 13);
    if ((m->table = PyMem_Calloc(16, sizeof(rc_slot))) == NULL) {
        Py_DECREF(m);
        return PyErr_NoMemory();
    }
    return (PyObject *)m;
}

static int roots_traverse(RootMemoryObject *m, visitproc visit, void *arg) {
    for (Py_ssize_t x = m->head; x >= 0; x = m->nodes[x].next) Py_VISIT(m->nodes[x].value);
    return 0;
}

static int roots_clear_refs(RootMemoryObject *m) {
    root_clear(m);
    return 0;
}

static void roots_dealloc(RootMemoryObject *m) {
    PyObject_GC_UnTrack(m);
    root_clear(m);
    PyMem_Free(m->nodes);
    PyMem_Free(m->table);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static Py_ssize_t roots_len(RootMemoryObject *m) { return m->len; }

static int roots_contains(RootMemoryObject *m, PyObject *key) {
    Py_ssize_t x = root_node_of(m, key);
    return x == -2 ? -1 : x >= 0;
}

static PyObject *roots_get(RootMemoryObject *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(trace_id, default=None)");
        return NULL;
    }
    Py_ssize_t x = root_node_of(m, args[0]);
    if (x == -2) return NULL;
    if (x < 0) return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    return Py_NewRef(m->nodes[x].value);
}

static PyObject *roots_put_method(RootMemoryObject *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "put(trace_id, value)");
        return NULL;
    }
    const uint8_t *p;
    Py_ssize_t n;
    if (root_id(args[0], &p, &n) < 0 || root_put(m, p, n, args[0], args[1]) < 0) return NULL;
    Py_RETURN_NONE;
}

/* the entries, oldest first, as a new list of (trace id, value) (items) or of trace ids */
static PyObject *roots_list(RootMemoryObject *m, int items) {
    PyObject *out = PyList_New(m->len);
    if (out == NULL) return NULL;
    Py_ssize_t i = 0;
    for (Py_ssize_t x = m->head; x >= 0; x = m->nodes[x].next, i++) {
        PyObject *key = root_key(&m->nodes[x]), *item = key;
        if (key != NULL && items) {
            item = PyTuple_Pack(2, key, m->nodes[x].value);
            Py_DECREF(key);
        }
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

static PyObject *roots_items(RootMemoryObject *m, PyObject *unused) { return roots_list(m, 1); }
static PyObject *roots_keys(RootMemoryObject *m, PyObject *unused) { return roots_list(m, 0); }

static PyObject *roots_clear_method(RootMemoryObject *m, PyObject *unused) {
    root_clear(m);
    Py_RETURN_NONE;
}

static PyObject *roots_sizeof(RootMemoryObject *m, PyObject *unused) {
    return PyLong_FromSize_t((size_t)Py_TYPE(m)->tp_basicsize + (size_t)m->nodes_cap * sizeof(root_node) +
                             (size_t)(m->tmask + 1) * sizeof(rc_slot));
}

static PyObject *roots_get_size(RootMemoryObject *m, void *closure) { return PyLong_FromSsize_t(m->size); }

/* size = n: the oldest dropped beyond it */
static int roots_set_size(RootMemoryObject *m, PyObject *value, void *closure) {
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "size cannot be deleted");
        return -1;
    }
    Py_ssize_t size = PyLong_AsSsize_t(value);
    if (size == -1 && PyErr_Occurred()) return -1;
    m->size = size < 0 ? 0 : size;
    while (m->len > m->size) root_drop_oldest(m);
    return 0;
}

static PyMethodDef roots_methods[] = {
    {"get", (PyCFunction)(void (*)(void))roots_get, METH_FASTCALL, "get(trace_id, default=None)"},
    {"put", (PyCFunction)(void (*)(void))roots_put_method, METH_FASTCALL,
     "put(trace_id, value): the newest entry (the oldest dropped beyond size)"},
    {"clear", (PyCFunction)roots_clear_method, METH_NOARGS, "every entry dropped"},
    {"items", (PyCFunction)roots_items, METH_NOARGS, "the (trace id, value) pairs, oldest first"},
    {"keys", (PyCFunction)roots_keys, METH_NOARGS, "the trace ids, oldest first"},
    {"__sizeof__", (PyCFunction)roots_sizeof, METH_NOARGS, "bytes allocated"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef roots_getset[] = {
    {"size", (getter)roots_get_size, (setter)roots_set_size, "the most entries kept", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods roots_as_sequence = {
    .sq_length = (lenfunc)roots_len,
    .sq_contains = (objobjproc)roots_contains,
};

static PyTypeObject RootMemoryType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "plugins._native._agentscan.RootMemory",
    .tp_basicsize = sizeof(RootMemoryObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "RootMemory(size): the connector's memory of workflow roots (trace id -> value, at "
              "most size entries, the least recently put dropped first), keyed by the raw id.",
    .tp_new = roots_new,
    .tp_dealloc = (destructor)roots_dealloc,
    .tp_traverse = (traverseproc)roots_traverse,
    .tp_clear = (inquiry)roots_clear_refs,
    .tp_methods = roots_methods,
    .tp_getset = roots_getset,
    .tp_as_sequence = &roots_as_sequence,
};

PyDoc_STRVAR(put_roots_doc,
"put_roots(memory, others=None)\n--\n\n"
"Puts the workflow roots the last scan counted into memory (a RootMemory): trace id -> "
"(workflow type, agent id), as they were counted, in span order with others (the roots the "
"Python side read in that request: a list of (offset of the span in the request, trace id, "
"value), by offset), each put after the roots before it; then forgets the scan's (a second "
"call puts only others).");

static PyObject *Scanner_put_roots(Scanner *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "put_roots(memory, others=None)");
        return NULL;
    }
    PyObject *memory = args[0], *others = nargs > 1 ? args[1] : Py_None;
    if (!Py_IS_TYPE(memory, &RootMemoryType)) {
        PyErr_SetString(PyExc_TypeError, "put_roots() expects a RootMemory");
        return NULL;
    }
    if (others != Py_None && !PyList_Check(others)) {
        PyErr_SetString(PyExc_TypeError, "put_roots(): others must be a list or None");
        return NULL;
    }
    Py_ssize_t n = others == Py_None ? 0 : PyList_GET_SIZE(others);
    for (Py_ssize_t j = 0; j < n; j++) { /* (checked whole first: nothing put on a bad item) */
        PyObject *o = PyList_GET_ITEM(others, j);
        if (!PyTuple_Check(o) || PyTuple_GET_SIZE(o) != 3 || !PyLong_Check(PyTuple_GET_ITEM(o, 0)) ||
            !PyBytes_Check(PyTuple_GET_ITEM(o, 1))) {
            PyErr_SetString(PyExc_TypeError, "put_roots(): others' items are (offset, trace id, value)");
            return NULL;
        }
    }
    RootMemoryObject *m = (RootMemoryObject *)memory;
    Py_ssize_t i = 0, j = 0;
    int rc = 0;
    while (rc == 0 && (i < self->nwf_roots || j < n)) {
        Py_ssize_t other_at = PY_SSIZE_T_MAX;
        if (j < n) {
            other_at = PyLong_AsSsize_t(PyTuple_GET_ITEM(PyList_GET_ITEM(others, j), 0));
            if (other_at == -1 && PyErr_Occurred()) { rc = -1; break; }
        }
        if (i < self->nwf_roots && self->wf_roots[i].at < other_at) {
            struct wf_root *x = &self->wf_roots[i++];
            rc = root_put(m, self->wf_root_ids + x->off, x->n, NULL, x->value);
        } else {
            PyObject *o = PyList_GET_ITEM(others, j++);
            PyObject *trace = PyTuple_GET_ITEM(o, 1);
            rc = root_put(m, (const uint8_t *)PyBytes_AS_STRING(trace), PyBytes_GET_SIZE(trace), trace,
                          PyTuple_GET_ITEM(o, 2));
        }
    }
    wf_roots_clear(self);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(put_producers_doc,
"put_producers(items, /) -> None\n\nPuts the A2A producers the Python path read (a list of (span id, start) tuples of\n"
"bytes and int) into the producer cache as the scan puts its own (an id already there keeps its place,\n"
"its start replaced; the oldest dropped beyond cache_size): the connector's _remember_producers when\n"
"its cache is a Memory. TypeError for another item (those before it put).");

static PyObject *Scanner_put_producers(Scanner *self, PyObject *items) {
    if (!PyList_Check(items)) {
        PyErr_SetString(PyExc_TypeError, "put_producers takes a list");
        return NULL;
    }
    if (self->producers == NULL || !self->cache_size) Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(item, 0)) ||
            !PyLong_Check(PyTuple_GET_ITEM(item, 1))) {
            PyErr_SetString(PyExc_TypeError, "a producer is a (bytes, int) tuple");
            return NULL;
        }
        PyObject *id = PyTuple_GET_ITEM(item, 0);
        Py_INCREF(item); /* (the list may change under a put: none runs Python code, but be safe) */
        int rc = producer_put(self->producers, self->cache_size, (const uint8_t *)PyBytes_AS_STRING(id),
                              PyBytes_GET_SIZE(id), PyTuple_GET_ITEM(item, 1));
        Py_DECREF(item);
        if (rc < 0) return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(take_late_doc,
"take_late() -> int\n\nThe layers the last scan dropped as late (their parent a settled layer).");

static PyObject *Scanner_take_late(Scanner *self, PyObject *Py_UNUSED(ignored)) {
    Py_ssize_t n = self->join_late;
    self->join_late = 0;
    return PyLong_FromSsize_t(n);
}

PyDoc_STRVAR(take_failures_doc,
"take_failures() -> dict[int, tuple[str, str, str]] | None\n\n"
"The failed spans the last scan left to Python (with shape_keys configured) whose status\n"
"message, exception.type and exception.message (of the first exception events naming them) are\n"
"ASCII: by the span's start offset in the request (the fallback tuple's first item), those\n"
"three as a full decode gives them; None when there is none.");

PyDoc_STRVAR(forget_shapes_doc,
"forget_shapes() -> None\n\n"
"To be called whenever a shape leaves join_shapes or maps to another series: the scanner\n"
"remembers the shapes it found there (by their content) and forgets them then.");

static PyObject *Scanner_forget_shapes(Scanner *self, PyObject *Py_UNUSED(ignored)) {
    learned_forget(self);
    Py_RETURN_NONE;
}

static PyObject *Scanner_take_failures(Scanner *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = self->failures;
    self->failures = NULL;
    if (out == NULL) Py_RETURN_NONE;
    return out;
}

PyDoc_STRVAR(take_roots_doc,
"take_roots() -> dict[int, tuple[str, str, str, str, float, str, str, str]] | None\n\n"
"The failed workflow roots of the last scan among take_failures' spans whose reading the\n"
"scanner could make (see root_facts in the C source): by the span's start offset, (workflow\n"
"type, agent id, outcome, complexity tier, duration, error type, severity, recoverable) as the\n"
"Python reading gives them; None when there is none.");

static PyObject *Scanner_take_roots(Scanner *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = self->roots;
    self->roots = NULL;
    if (out == NULL) Py_RETURN_NONE;
    return out;
}

PyDoc_STRVAR(span_attrs_doc,
"span_attrs(request: bytes, start: int, end: int, first: bytes | None, second: bytes | None, /)\n"
"    -> tuple[bytes | None, bytes | None]\n\n"
"The encoded AnyValue of the attributes `first` and `second` (None: not asked) of the span\n"
"request[start:end], as plugins._spanview.SpanView reads them (a map: the last entry with the\n"
"key wins; an entry without a value gives b\"\", an entry with another field is not in the map),\n"
"or None when the span has no such attribute.\n"
"Reads nothing else of the span. Raises ValueError on a malformed span.");

static PyObject *Scanner_span_attrs(Scanner *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 5 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "span_attrs(request: bytes, start, end, first, second)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t end = PyLong_AsSsize_t(args[2]);
    if (end == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    if (start < 0 || end < start || end > size) {
        PyErr_SetString(PyExc_ValueError, "span_attrs: span offsets out of range");
        return NULL;
    }
    slice wanted[2] = {{NULL, 0}, {NULL, 0}};
    for (int j = 0; j < 2; j++) {
        PyObject *k = args[3 + j];
        if (k == Py_None) continue;
        if (!PyBytes_Check(k)) {
            PyErr_SetString(PyExc_TypeError, "span_attrs: keys are bytes or None");
            return NULL;
        }
        wanted[j].p = (const uint8_t *)PyBytes_AS_STRING(k);
        wanted[j].n = PyBytes_GET_SIZE(k);
    }
    const uint8_t *base = (const uint8_t *)PyBytes_AS_STRING(args[0]);
    slice found[2] = {{NULL, 0}, {NULL, 0}};
    reader r = {base + start, base + end};
    field f;
    int rc;
    while ((rc = next_field(&r, &f)) == 0) {
        if (f.number != 9 || f.wire != 2) continue;
        reader er = {f.data.p, f.data.p + f.data.n};
        field ef;
        int erc;
        slice key = {(const uint8_t *)"", 0}, value = {(const uint8_t *)"", 0};
        int other = 0;
        while ((erc = next_field(&er, &ef)) == 0) {
            if (ef.number == 1 && ef.wire == 2) key = ef.data;
            else if (ef.number == 2 && ef.wire == 2) value = ef.data;
            else other = 1;
        }
        if (erc < 0) return NULL;
        if (other) continue; /* (protobuf keeps such an entry out of the map: an unknown field) */
        for (int j = 0; j < 2; j++)
            if (wanted[j].p != NULL && slice_eq(key, wanted[j])) found[j] = value;
    }
    if (rc < 0) return NULL;
    PyObject *out[2];
    for (int j = 0; j < 2; j++) {
        out[j] = found[j].p != NULL ? bytes_of(found[j]) : Py_NewRef(Py_None);
        if (out[j] == NULL) {
            if (j) Py_DECREF(out[0]);
            return NULL;
        }
    }
    return tuple_steal(2, out);
}

/* -- the type ------------------------------------------------------------------------------- */

static int load_bounds(Scanner *self, int which, PyObject *seq) {
    PyObject *fast = PySequence_Fast(seq, "bounds must be a sequence of floats");
    if (fast == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    if (n > MAX_BUCKETS) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "too many histogram bounds");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        double d = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
        if (d == -1.0 && PyErr_Occurred()) { Py_DECREF(fast); return -1; }
        self->bounds[which][i] = d;
    }
    self->nbounds[which] = (int)n;
    Py_DECREF(fast);
    return 0;
}

static PyObject *intern(const char *s) { return PyUnicode_InternFromString(s); }

static void keytab_free(Scanner *self) {
    PyMem_Free(self->keytab);
    PyMem_Free(self->keyslot);
    self->keytab = NULL;
    self->keyslot = NULL;
}

/* keytab_find's table of the keys, defer keys and shape keys set (see keyent) */
static int keytab_make(Scanner *self) {
    int most = NKEYS + self->ndefer_keys + self->nshape_keys;
    keytab_free(self);
    self->keytab = PyMem_Calloc(most, sizeof(keyent));
    self->keyslot = PyMem_Malloc(KEYSLOTS * sizeof(int16_t));
    if (self->keytab == NULL || self->keyslot == NULL) { keytab_free(self); PyErr_NoMemory(); return -1; }
    memset(self->keyslot, 0xff, KEYSLOTS * sizeof(int16_t)); /* -1: none */
    int n = 0;
    for (int t = 0; t < 3; t++) {
        int count = t == 0 ? NKEYS : t == 1 ? self->ndefer_keys : self->nshape_keys;
        for (int k = 0; k < count; k++) {
            slice key = t == 0 ? self->keys[k] : t == 1 ? self->defer_keys[k] : self->shape_keys[k];
            keyent *e = (keyent *)keytab_find(self, key);
            if (e == NULL) {
                e = &self->keytab[n];
                e->key = key;
                e->k0 = NKEYS;
                if (key.n > 14) memcpy(&e->wm, key.p + 6, 8);
                key_words(key, &e->w0, &e->w1);
                e->ascii = (uint8_t)is_ascii(key);
                size_t i = key_hash(e->w0, e->w1);
                while (self->keyslot[i] >= 0) i = (i + 1) & (KEYSLOTS - 1);
                self->keyslot[i] = (int16_t)n++;
            }
            if (t == 0) {
                e->kmask |= 1u << k;
                if (e->k0 == NKEYS) e->k0 = (int8_t)k;
                else e->kmore |= 1u << k;
            } else if (t == 1) e->defer = 1;
            else if (e->shape == 0) e->shape = (uint8_t)(1 + self->shape_presence[k]);
            e->voff = (uint16_t)(offsetof(span_info, values) + (size_t)e->k0 * sizeof(slice));
            e->poff = (uint16_t)(offsetof(span_info, present) + (size_t)e->k0);
        }
    }
    return 0;
}

static int Scanner_init(Scanner *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"keys", "tool_operation", "tool_method", "workflow_prefix", "tool_bounds",
                             "http_bounds", "workflow_bounds", "a2a_bounds", "max_exemplars",
                             "recoverable", "llm_operations", "outcomes", "producers", "cache_size",
                             "defer_keys", "defer_names", "defer_scopes", "shape_keys", "join_shapes",
                             "join_series", "join_settled", "presence_keys", "join_learned",
                             "join_keys", "join_id_keys", NULL};
    PyObject *keys, *tool_op, *tool_method, *wf_prefix, *tool_bounds, *http_bounds, *wf_bounds, *a2a_bounds,
        *recoverable, *llm, *outcomes, *producers;
    PyObject *defer_keys = NULL, *defer_names = NULL, *defer_scopes = NULL, *shape_keys = NULL;
    PyObject *join_shapes = NULL, *join_series = NULL, *join_settled = NULL, *presence_keys = NULL;
    PyObject *join_learned = NULL, *join_keys = NULL, *join_id_keys = NULL;
    int max_exemplars;
    Py_ssize_t cache_size;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!SSSOOOOiOOO!On|O!O!O!O!O!O!OO!O!OO!", kwlist, &PyTuple_Type, &keys,
                                     &tool_op, &tool_method, &wf_prefix, &tool_bounds, &http_bounds,
                                     &wf_bounds, &a2a_bounds, &max_exemplars, &recoverable, &llm,
                                     &PyTuple_Type, &outcomes, &producers, &cache_size,
                                     &PyTuple_Type, &defer_keys, &PyTuple_Type, &defer_names,
                                     &PyTuple_Type, &defer_scopes, &PyTuple_Type, &shape_keys,
                                     &PyDict_Type, &join_shapes, &PyList_Type, &join_series,
                                     &join_settled, &PyTuple_Type, &presence_keys,
                                     &PyList_Type, &join_learned, &join_keys,
                                     &PyTuple_Type, &join_id_keys))
        return -1;
    keytab_free(self); /* (made again below, of the keys given now) */
    if ((join_learned != NULL) != (join_keys != NULL) || (join_learned != NULL) != (join_id_keys != NULL) ||
        (join_learned != NULL && join_shapes == NULL)) {
        PyErr_SetString(PyExc_TypeError, "join_learned, join_keys and join_id_keys go together, with join_shapes");
        return -1;
    }
    for (Py_ssize_t i = 0; join_id_keys != NULL && i < PyTuple_GET_SIZE(join_id_keys); i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(join_id_keys, i))) {
            PyErr_SetString(PyExc_TypeError, "join_id_keys: bytes expected");
            return -1;
        }
    if ((join_settled != NULL && !memory_check(join_settled)) || (join_keys != NULL && !memory_check(join_keys))) {
        PyErr_SetString(PyExc_TypeError, "join_settled, join_keys: a Memory or an OrderedDict");
        return -1;
    }
    if ((join_shapes != NULL) != (join_series != NULL) || (join_shapes != NULL) != (join_settled != NULL)) {
        PyErr_SetString(PyExc_TypeError, "join_shapes, join_series and join_settled go together");
        return -1;
    }
    Py_XSETREF(self->join_shapes, Py_XNewRef(join_shapes));
    Py_XSETREF(self->join_series, Py_XNewRef(join_series));
    Py_XSETREF(self->join_settled, Py_XNewRef(join_settled));
    Py_XSETREF(self->join_learned, Py_XNewRef(join_learned));
    Py_XSETREF(self->join_keys, Py_XNewRef(join_keys));
    Py_XSETREF(self->join_id_keys, Py_XNewRef(join_id_keys));
    if (self->s_call == NULL && ((self->s_call = PyUnicode_InternFromString("call")) == NULL ||
                                 (self->s_rpc = PyUnicode_InternFromString("rpc")) == NULL ||
                                 (self->s_retry = PyUnicode_InternFromString("retry")) == NULL ||
                                 (self->s_function = PyUnicode_InternFromString("function")) == NULL))
        return -1;
    learned_forget(self); /* (what it remembers is of the join_shapes given before) */
    if (join_shapes != NULL && self->learned_cache == NULL) {
        self->learned_cache = PyMem_Calloc(LEARNED_SLOTS, sizeof(learned_slot));
        if (self->learned_cache == NULL) { PyErr_NoMemory(); return -1; }
    }
    if (self->calls_index == NULL && (self->calls_index = PyDict_New()) == NULL) return -1;
    if (self->calls_memo == NULL && (self->calls_memo = PyMem_Calloc(MEMO_SLOTS, sizeof(memo_slot))) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (shape_keys != NULL) {
        Py_ssize_t n = PyTuple_GET_SIZE(shape_keys);
        if (n > MAX_SHAPE_KEYS) {
            PyErr_Format(PyExc_ValueError, "at most %d shape keys", MAX_SHAPE_KEYS);
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++)
            if (!PyBytes_Check(PyTuple_GET_ITEM(shape_keys, i))) {
                PyErr_SetString(PyExc_TypeError, "shape keys must be bytes");
                return -1;
            }
    }
    self->nshape_keys = shape_keys ? (int)PyTuple_GET_SIZE(shape_keys) : 0;
    for (int k = 0; k < self->nshape_keys; k++) {
        PyObject *b = PyTuple_GET_ITEM(shape_keys, k);
        self->shape_keys[k].p = (const uint8_t *)PyBytes_AS_STRING(b);
        self->shape_keys[k].n = PyBytes_GET_SIZE(b);
        self->shape_presence[k] = 0;
        for (Py_ssize_t i = 0; presence_keys != NULL && i < PyTuple_GET_SIZE(presence_keys); i++)
            if (PyObject_RichCompareBool(b, PyTuple_GET_ITEM(presence_keys, i), Py_EQ) == 1)
                self->shape_presence[k] = 1;
    }
    Py_XSETREF(self->shape_keys_obj, shape_keys ? Py_NewRef(shape_keys) : NULL);
    PyObject *empty = PyTuple_New(0);
    if (empty == NULL) return -1;
    PyObject *tuples[3] = {defer_keys ? defer_keys : empty, defer_names ? defer_names : empty,
                           defer_scopes ? defer_scopes : empty};
    for (int t = 0; t < 3; t++)
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuples[t]); i++)
            if (!PyBytes_Check(PyTuple_GET_ITEM(tuples[t], i))) {
                Py_DECREF(empty);
                PyErr_SetString(PyExc_TypeError, "defer keys and prefixes must be bytes");
                return -1;
            }
    if (PyTuple_GET_SIZE(tuples[0]) > MAX_DEFER_KEYS) {
        Py_DECREF(empty);
        PyErr_Format(PyExc_ValueError, "at most %d defer keys", MAX_DEFER_KEYS);
        return -1;
    }
    self->ndefer_keys = (int)PyTuple_GET_SIZE(tuples[0]);
    for (int k = 0; k < self->ndefer_keys; k++) {
        PyObject *b = PyTuple_GET_ITEM(tuples[0], k);
        self->defer_keys[k].p = (const uint8_t *)PyBytes_AS_STRING(b);
        self->defer_keys[k].n = PyBytes_GET_SIZE(b);
    }
    Py_XSETREF(self->defer_keys_obj, Py_NewRef(tuples[0]));
    Py_XSETREF(self->defer_names, Py_NewRef(tuples[1]));
    memset(self->defer_first, 0, sizeof(self->defer_first));
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(tuples[1]); k++) {
        PyObject *b = PyTuple_GET_ITEM(tuples[1], k);
        if (PyBytes_GET_SIZE(b) == 0) memset(self->defer_first, 0xff, sizeof(self->defer_first));
        else self->defer_first[(uint8_t)PyBytes_AS_STRING(b)[0] >> 3] |= (uint8_t)(1u << ((uint8_t)PyBytes_AS_STRING(b)[0] & 7));
    }
    Py_XSETREF(self->defer_scopes, Py_NewRef(tuples[2]));
    Py_DECREF(empty);
    if (cache_size < 0) {
        PyErr_SetString(PyExc_ValueError, "cache_size must be >= 0");
        return -1;
    }
    if (!memory_check(producers)) { /* (a dict, an OrderedDict or a Memory) */
        PyErr_SetString(PyExc_TypeError, "producers must be a dict or a Memory");
        return -1;
    }
    Py_XSETREF(self->producers, Py_NewRef(producers));
    self->cache_size = cache_size;
    if (PyTuple_GET_SIZE(keys) != NKEYS) {
        PyErr_Format(PyExc_ValueError, "expected %d attribute keys", NKEYS);
        return -1;
    }
    if (max_exemplars < 0 || max_exemplars > MAX_EXEMPLARS) {
        PyErr_Format(PyExc_ValueError, "max_exemplars must be between 0 and %d", MAX_EXEMPLARS);
        return -1;
    }
    for (int k = 0; k < NKEYS; k++) {
        PyObject *b = PyTuple_GET_ITEM(keys, k);
        if (!PyBytes_Check(b)) {
            PyErr_SetString(PyExc_TypeError, "attribute keys must be bytes");
            return -1;
        }
        self->keys[k].p = (const uint8_t *)PyBytes_AS_STRING(b);
        self->keys[k].n = PyBytes_GET_SIZE(b);
    }
    Py_XSETREF(self->key_bytes, Py_NewRef(keys));
    Py_XSETREF(self->tool_op, Py_NewRef(tool_op));
    Py_XSETREF(self->tool_method, Py_NewRef(tool_method));
    Py_XSETREF(self->wf_prefix, Py_NewRef(wf_prefix));
    Py_XSETREF(self->outcomes, Py_NewRef(outcomes));
    if (load_bounds(self, B_TOOL, tool_bounds) < 0 || load_bounds(self, B_HTTP, http_bounds) < 0 ||
        load_bounds(self, B_WORKFLOW, wf_bounds) < 0 || load_bounds(self, B_A2A, a2a_bounds) < 0)
        return -1;
    self->max_exemplars = max_exemplars;
    Py_XSETREF(self->recoverable, PyFrozenSet_New(recoverable));
    Py_XSETREF(self->llm_ops, PyFrozenSet_New(llm));
    if (self->recoverable == NULL || self->llm_ops == NULL) return -1;
#define S(field, text) Py_XSETREF(self->field, intern(text)); if (self->field == NULL) return -1;
    S(s_unknown, "unknown") S(s_none, "none") S(s_error, "error") S(s_success, "success")
    S(s_other, "_OTHER") S(s_true, "true") S(s_false, "false") S(s_failed, "failed")
    S(s_processed, "processed") S(s_mcp, "mcp") S(s_a2a, "a2a") S(s_http, "http")
    S(s_database, "database") S(s_llm, "llm") S(s_agent, "agent") S(s_empty, "")
    S(s_success_outcome, "success") S(s_failed_outcome, "failed") S(s_timeout, "timeout")
    S(s_cancelled, "cancelled") S(s_critical, "critical") S(s_workflow, "workflow")
#undef S
    for (int i = 0; i < 10; i++) {
        char c[4] = {(char)('0' + i), 'x', 'x', 0};
        Py_XSETREF(self->s_class[i], intern(c));
        if (self->s_class[i] == NULL) return -1;
    }
    if (self->spill == NULL && (self->spill = PyList_New(0)) == NULL) return -1;
    if (self->cache == NULL) {
        self->cache = PyMem_Calloc(CACHE_SLOTS, sizeof(cache_slot));
        if (self->cache == NULL) { PyErr_NoMemory(); return -1; }
    }
    return keytab_make(self);
}

/* the settle configuration's objects: a classifier may be any callable (a cycle it makes
 * through the scanner is the collector's) */
static int Scanner_traverse(Scanner *self, visitproc visit, void *arg) {
    Py_VISIT(self->settle.marked);
    Py_VISIT(self->settle.classify);
    Py_VISIT(self->settle.timeouts);
    Py_VISIT(self->settle.recoverable);
    return 0;
}

static int Scanner_clear(Scanner *self) {
    Py_CLEAR(self->settle.marked); /* (not configured any more) */
    Py_CLEAR(self->settle.classify);
    Py_CLEAR(self->settle.timeouts);
    Py_CLEAR(self->settle.recoverable);
    return 0;
}

static void Scanner_dealloc(Scanner *self) {
    PyObject_GC_UnTrack(self);
    keytab_free(self);
    cache_clear(self);
    PyMem_Free(self->cache);
    Py_XDECREF(self->key_bytes);
    Py_XDECREF(self->tool_op);
    Py_XDECREF(self->tool_method);
    Py_XDECREF(self->recoverable);
    Py_XDECREF(self->llm_ops);
    Py_XDECREF(self->spill);
    Py_XDECREF(self->failures);
    Py_XDECREF(self->roots);
    Py_XDECREF(self->wf_prefix);
    Py_XDECREF(self->outcomes);
    Py_XDECREF(self->producers);
    Py_XDECREF(self->defer_keys_obj);
    Py_XDECREF(self->defer_names);
    Py_XDECREF(self->defer_scopes);
    Py_XDECREF(self->shape_keys_obj);
    Py_XDECREF(self->join_shapes);
    Py_XDECREF(self->join_series);
    Py_XDECREF(self->join_settled);
    Py_XDECREF(self->join_learned);
    Py_XDECREF(self->join_keys);
    Py_XDECREF(self->join_id_keys);
    Py_XDECREF(self->s_call);
    Py_XDECREF(self->s_rpc);
    Py_XDECREF(self->s_retry);
    Py_XDECREF(self->s_function);
    Scanner_clear(self);
    Py_XDECREF(self->settle.value);
    Py_XDECREF(self->settle.expiry);
    learned_forget(self);
    PyMem_Free(self->learned_cache);
    Py_XDECREF(self->calls_index);
    PyMem_Free(self->calls_entries);
    memo_reset(self->calls_memo);
    PyMem_Free(self->calls_memo);
    PyMem_Free(self->scratch);
    PyMem_Free(self->keep_held);
    PyMem_Free(self->keep_a2a[0]);
    PyMem_Free(self->keep_a2a[1]);
    PyMem_Free(self->keep_groups);
    PyMem_Free(self->keep_memo); /* (kept empty) */
    wf_roots_clear(self);
    PyMem_Free(self->wf_roots);
    PyMem_Free(self->wf_root_ids);
    Py_XDECREF(self->wf_root_last);
    for (int i = 0; i < WF_ROOT_MEMO; i++) Py_XDECREF(self->wf_root_memo[i]);
    PyObject **strs[] = {&self->s_success_outcome, &self->s_failed_outcome, &self->s_timeout,
                         &self->s_cancelled, &self->s_critical, &self->s_workflow,&self->s_unknown, &self->s_none, &self->s_error, &self->s_success,
                         &self->s_other, &self->s_true, &self->s_false, &self->s_failed,
                         &self->s_processed, &self->s_mcp, &self->s_a2a, &self->s_http,
                         &self->s_database, &self->s_llm, &self->s_agent, &self->s_empty};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) Py_CLEAR(*strs[i]);
    for (int i = 0; i < 10; i++) Py_CLEAR(self->s_class[i]);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Scanner_methods[] = {
    {"scan", (PyCFunction)Scanner_scan, METH_O, scan_doc},
    {"configure_settle", (PyCFunction)(void (*)(void))Scanner_configure_settle, METH_VARARGS | METH_KEYWORDS,
     configure_settle_doc},
    {"settle_simple", (PyCFunction)(void (*)(void))Scanner_settle_simple, METH_FASTCALL, settle_simple_doc},
    {"settle_layers", (PyCFunction)(void (*)(void))Scanner_settle_layers, METH_FASTCALL, settle_layers_doc},
    {"settle_due", (PyCFunction)(void (*)(void))Scanner_settle_due, METH_FASTCALL, settle_due_doc},
    {"settle_front", (PyCFunction)(void (*)(void))Scanner_settle_front, METH_FASTCALL, settle_front_doc},
    {"settle_packed", (PyCFunction)(void (*)(void))Scanner_settle_packed, METH_FASTCALL, settle_packed_doc},
    {"take_calls", (PyCFunction)Scanner_take_calls, METH_NOARGS, take_calls_doc},
    {"take_late", (PyCFunction)Scanner_take_late, METH_NOARGS, take_late_doc},
    {"put_roots", (PyCFunction)(void (*)(void))Scanner_put_roots, METH_FASTCALL, put_roots_doc},
    {"take_failures", (PyCFunction)Scanner_take_failures, METH_NOARGS, take_failures_doc},
    {"take_roots", (PyCFunction)Scanner_take_roots, METH_NOARGS, take_roots_doc},
    {"forget_shapes", (PyCFunction)Scanner_forget_shapes, METH_NOARGS, forget_shapes_doc},
    {"span_attrs", (PyCFunction)(void (*)(void))Scanner_span_attrs, METH_FASTCALL, span_attrs_doc},
    {"put_producers", (PyCFunction)Scanner_put_producers, METH_O, put_producers_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "plugins._native._agentscan.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The agentmetrics connector's span scanner (see the module source).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_traverse = (traverseproc)Scanner_traverse,
    .tp_clear = (inquiry)Scanner_clear,
    .tp_methods = Scanner_methods,
};

/* ---- the joiner's holding of packed traces (calls.py hold_packed, CallJoiner.add) ----
 * A request's Packed items (trace, records, layers, ids) held as CallJoiner.add holds them: a
 * trace not held gets an entry (the joiner's _Entry: deadline, [item], NONE_YET, NONE_YET,
 * packed, layers - 1; NONE_YET the empty tuple: no list and dict of its own until it has
 * failures, or is unpacked) at the end of `pending`, a packed entry grows by the item. The entry class's slots are
 * written at their offsets (a slots class whose instances are made by object.__new__: what its
 * dataclass __init__ would set), kept per class while its version tag is the one seen. */
enum { H_DEADLINE, H_LAYERS, H_FAILURES, H_PARENTS, H_PACKED, H_EXTRA, NH };
static const char *const hold_names_text[NH] = {"deadline", "layers", "failures", "parents",
                                                "packed", "extra"};
static PyObject *hold_names[NH];        /* interned once, kept for the process */
static PyTypeObject *hold_type;         /* the entry class last seen (a reference held) */
static unsigned int hold_version;
static Py_ssize_t hold_off[NH];

/* the entry class's slot offsets, or NULL with TypeError set (not such a class) */
static const Py_ssize_t *hold_offsets(PyObject *cls) {
    if (!PyType_Check(cls)) goto bad;
    PyTypeObject *tp = (PyTypeObject *)cls;
    if (tp == hold_type && tp->tp_version_tag == hold_version &&
        (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG))
        return hold_off;
    for (int i = 0; i < NH; i++)
        if (hold_names[i] == NULL && (hold_names[i] = PyUnicode_InternFromString(hold_names_text[i])) == NULL)
            return NULL;
    /* instances made as object() makes them, no __dict__, no __init__ of a base to run */
    if (!(tp->tp_flags & Py_TPFLAGS_HEAPTYPE) || tp->tp_new != PyBaseObject_Type.tp_new ||
        tp->tp_alloc != PyType_GenericAlloc || tp->tp_dictoffset != 0 || tp->tp_itemsize != 0 ||
        tp->tp_base != &PyBaseObject_Type)
        goto bad;
    Py_ssize_t off[NH];
    for (int i = 0; i < NH; i++) {
        PyObject *d = _PyType_Lookup(tp, hold_names[i]); /* borrowed */
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)) goto bad;
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || (m->flags & READONLY) || m->offset <= 0 ||
            (size_t)m->offset + sizeof(PyObject *) > (size_t)tp->tp_basicsize)
            goto bad;
        off[i] = m->offset;
    }
    memcpy(hold_off, off, sizeof(off));
    if (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) { /* (else looked up again next time) */
        Py_INCREF(tp);
        Py_XSETREF(hold_type, tp);
        hold_version = tp->tp_version_tag;
    } else {
        Py_CLEAR(hold_type);
    }
    return hold_off;
bad:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "entry: a slots class of deadline, layers, failures, "
                                         "parents, packed, extra expected");
    return NULL;
}

#define HOLD_SLOT(o, i) (*(PyObject **)((char *)(o) + off[i]))

PyDoc_STRVAR(hold_packed_doc,
"hold_packed(items, start, pending, deadline, grown, links_only, entry, max_items, /) -> int\n\n"
"Holds the Packed items (trace, records, layers, ids) of `items` from `start` on as the joiner\n"
"holds them (calls.py hold_packed, its twin): a trace not in `pending` gets an `entry` (deadline,\n"
"[item], (), (), True, layers - 1) put at its end, its trace appended to `grown` when layers >\n"
"max_items; an item of no layer of a trace not held is appended to `links_only` (None: dropped);\n"
"a packed entry takes the item (its trace appended to `grown`, its extra += layers - 1).\n"
"Stops at the first item it leaves to the joiner (not a Packed item of an int count and a bytes\n"
"trace, an entry not packed or not an `entry`): returns its index, or len(items).");

/* one Packed item held (hold_packed's loop; `item` referenced by the caller): 1 held, 0 left
 * to the joiner, -1 on error */
static int hold_one(PyObject *item, PyObject *pending, PyObject *deadline, PyObject *grown,
                    PyObject *links_only, PyTypeObject *tp, const Py_ssize_t *off,
                    long long max_items) {
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 4) return 0;
    PyObject *trace = PyTuple_GET_ITEM(item, 0), *count_obj = PyTuple_GET_ITEM(item, 2);
    if (!PyBytes_CheckExact(trace) || !PyLong_CheckExact(count_obj)) return 0;
    int overflow = 0;
    long long count = PyLong_AsLongLongAndOverflow(count_obj, &overflow);
    if (overflow || count < -(1LL << 60) || count > (1LL << 60)) return 0; /* (the twin's) */
    PyObject *held = PyDict_GetItemWithError(pending, trace); /* borrowed */
    if (held == NULL && PyErr_Occurred()) return -1;
    if (held == NULL || held == Py_None) {
        if (count == 0) return links_only != NULL && PyList_Append(links_only, item) < 0 ? -1 : 1;
        PyObject *entry = tp->tp_alloc(tp, 0);
        if (entry == NULL) return -1;
        PyObject *layers = PyList_New(1), *failures = PyTuple_New(0), *parents = PyTuple_New(0);
        PyObject *extra = PyLong_FromLongLong(count - 1);
        if (layers != NULL) PyList_SET_ITEM(layers, 0, Py_NewRef(item));
        /* (set even when one failed: the entry's dealloc clears what is there) */
        HOLD_SLOT(entry, H_DEADLINE) = Py_NewRef(deadline);
        HOLD_SLOT(entry, H_LAYERS) = layers;
        HOLD_SLOT(entry, H_FAILURES) = failures;
        HOLD_SLOT(entry, H_PARENTS) = parents;
        HOLD_SLOT(entry, H_PACKED) = Py_NewRef(Py_True);
        HOLD_SLOT(entry, H_EXTRA) = extra;
        int err = layers == NULL || failures == NULL || parents == NULL || extra == NULL ||
                  PyObject_SetItem(pending, trace, entry) < 0;
        Py_DECREF(entry);
        if (err) return -1;
        return count > max_items && PyList_Append(grown, trace) < 0 ? -1 : 1;
    }
    if (Py_TYPE(held) != tp || HOLD_SLOT(held, H_PACKED) != Py_True) return 0;
    PyObject *layers = HOLD_SLOT(held, H_LAYERS), *extra = HOLD_SLOT(held, H_EXTRA);
    if (layers == NULL || !PyList_CheckExact(layers) || extra == NULL || !PyLong_CheckExact(extra))
        return 0;
    long long was = PyLong_AsLongLongAndOverflow(extra, &overflow);
    if (overflow || was < -(1LL << 60) || was > (1LL << 60)) return 0;
    Py_INCREF(held); /* (held while it grows: nothing below runs Python code, but a reference
                      * costs nothing) */
    PyObject *now = PyLong_FromLongLong(was + count - 1);
    int err = now == NULL || PyList_Append(grown, trace) < 0 || PyList_Append(layers, item) < 0;
    if (!err) Py_SETREF(HOLD_SLOT(held, H_EXTRA), now);
    else Py_XDECREF(now);
    Py_DECREF(held);
    return err ? -1 : 1;
}

static PyObject *hold_packed(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8 || !PyList_Check(args[0]) || !PyList_Check(args[4]) ||
        (args[5] != Py_None && !PyList_Check(args[5]))) {
        PyErr_SetString(PyExc_TypeError,
                        "hold_packed(items: list, start: int, pending: OrderedDict, deadline, "
                        "grown: list, links_only: list | None, entry: type, max_items: int)");
        return NULL;
    }
    PyObject *items = args[0], *pending = args[2], *deadline = args[3], *grown = args[4];
    PyObject *links_only = args[5] == Py_None ? NULL : args[5];
    Py_ssize_t at = PyLong_AsSsize_t(args[1]);
    if (at == -1 && PyErr_Occurred()) return NULL;
    long long max_items = PyLong_AsLongLong(args[7]);
    if (max_items == -1 && PyErr_Occurred()) return NULL;
    const Py_ssize_t *off = hold_offsets(args[6]);
    if (off == NULL) return NULL;
    PyTypeObject *tp = (PyTypeObject *)args[6];
    if (at < 0) at = 0;
    /* a dict of plain lookups (an OrderedDict keeps its order in PyObject_SetItem): another
     * mapping is left to the twin */
    if (!PyDict_CheckExact(pending) && !PyODict_CheckExact(pending)) return PyLong_FromSsize_t(at);
    /* the items as the twin's range sees them (up to the length they had); then, as the twin,
     * the length they have (grown when `grown`, `links_only` or an entry's layers are them) */
    Py_ssize_t end = PyList_GET_SIZE(items);
    for (; at < end; at++) {
        if (at >= PyList_GET_SIZE(items)) return PyLong_FromSsize_t(at); /* (shrunk: the twin's) */
        PyObject *item = Py_NewRef(PyList_GET_ITEM(items, at)); /* (a collection may run code) */
        int done = hold_one(item, pending, deadline, grown, links_only, tp, off, max_items);
        Py_DECREF(item);
        if (done < 0) return NULL;
        if (done == 0) break;
    }
    return PyLong_FromSsize_t(at < end ? at : PyList_GET_SIZE(items));
}

static PyMethodDef module_methods[] = {
    {"hold_packed", (PyCFunction)(void (*)(void))hold_packed, METH_FASTCALL, hold_packed_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_agentscan", "The agentmetrics connector's per-span work, in C.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__agentscan(void) {
    if (PyType_Ready(&ScannerType) < 0 || PyType_Ready(&MemoryType) < 0 || PyType_Ready(&RootMemoryType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Scanner", (PyObject *)&ScannerType) < 0 ||
        PyModule_AddObjectRef(m, "Memory", (PyObject *)&MemoryType) < 0 ||
        PyModule_AddObjectRef(m, "RootMemory", (PyObject *)&RootMemoryType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "NKEYS", NKEYS);
    return m;
}
