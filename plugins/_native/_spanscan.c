/* The spanmetrics connector's per-span work, in C.
 *
 * Scanner.scan(request) walks an encoded ExportTraceServiceRequest once (the protobuf wire
 * format read by hand, every length checked against its enclosing field) and returns, per
 * ResourceSpans, the series of the request already aggregated: the attribute set each span
 * gets in plugins/spanmetricsconnector/connector.py (service.name, span.name, span.kind,
 * status.code and the configured dimensions), its call count, duration sum, bucket counts and
 * last exemplars. The resource itself is read by the Python side (a callback, once per
 * ResourceSpans): it gives the resource key, service.name and each dimension's fallback (the
 * resource attribute, else the default, else None).
 *
 * Spans are grouped first by their raw parts (name bytes, kind, status code, the encoded values
 * of the dimensions): a hash table of byte keys, so the attribute set (Python objects) is built
 * once per distinct group, not per span. Groups whose attribute sets are equal share one series,
 * so exemplars stay in arrival order.
 *
 * Malformed input raises ValueError (so does input the Python path would refuse, such as an
 * attribute key or status message that is not UTF-8): the caller then runs the Python path.
 * Nothing is read outside the buffer.
 */
#include "pbwire.h"

#define MAX_DIMS 64
#define MAX_EXEMPLARS 1024
#define MAX_DEPTH 64 /* nesting of AnyValue arrays and maps validated here */

/* -- wire reading: pbwire.h ---------------------------------------------------------------- */

/* Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF), as protobuf checks
 * proto3 strings. */
static int utf8_valid(const uint8_t *p, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) { i++; continue; }
        int len;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; }
        else return 0;
        if (n - i < len) return 0;
        for (int k = 1; k < len; k++) {
            uint8_t d = p[i + k];
            if ((d & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (d & 0x3f);
        }
        if (len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) return 0;
        if (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) return 0;
        i += len;
    }
    return 1;
}

static inline int ascii_or_utf8(slice s) {
    for (Py_ssize_t i = 0; i < s.n; i++)
        if (s.p[i] & 0x80) return utf8_valid(s.p + i, s.n - i);
    return 1;
}

/* -- label values ------------------------------------------------------------------------- */

static int validate_any_value(slice raw, int depth);

/* An ArrayValue (1: repeated AnyValue) or a KeyValueList (1: repeated KeyValue) */
static int validate_container(slice raw, int kvlist, int depth) {
    if (depth > MAX_DEPTH) return bad("AnyValue nested too deeply");
    reader r = {raw.p, raw.p + raw.n};
    field f;
    int rc;
    while ((rc = next_field(&r, &f)) == 0) {
        if (f.number != 1 || f.wire != 2) continue;
        if (!kvlist) {
            if (validate_any_value(f.data, depth + 1) < 0) return -1;
            continue;
        }
        reader kr = {f.data.p, f.data.p + f.data.n};
        field kf;
        int krc;
        while ((krc = next_field(&kr, &kf)) == 0) {
            if (kf.number == 1 && kf.wire == 2 && !ascii_or_utf8(kf.data)) return bad("key not UTF-8");
            if (kf.number == 2 && kf.wire == 2 && validate_any_value(kf.data, depth + 1) < 0) return -1;
        }
        if (krc < 0) return -1;
    }
    return rc < 0 ? -1 : 0;
}

static int validate_any_value(slice raw, int depth) {
    if (depth > MAX_DEPTH) return bad("AnyValue nested too deeply");
    reader r = {raw.p, raw.p + raw.n};
    field f;
    int rc;
    while ((rc = next_field(&r, &f)) == 0) {
        if (f.wire != 2) continue;
        if (f.number == 1 && !ascii_or_utf8(f.data)) return bad("string value not UTF-8");
        if ((f.number == 5 || f.number == 6) && validate_container(f.data, f.number == 6, depth + 1) < 0)
            return -1;
    }
    return rc < 0 ? -1 : 0;
}

/* An encoded AnyValue as a label string, as plugins._spanview.value_str: a string field first
 * with a one-byte length is taken as it is (its bytes, decoded with "replace"); otherwise the
 * message is decoded: strings, integers in decimal, booleans true/false, doubles with %g, ""
 * for other kinds. New reference. */
static PyObject *value_str(slice raw) {
    if (raw.n > 1 && raw.p[0] == 0x0a && raw.p[1] < 0x80) {
        Py_ssize_t n = raw.p[1];
        if (n > raw.n - 2) n = raw.n - 2;
        return PyUnicode_DecodeUTF8((const char *)raw.p + 2, n, "replace");
    }
    if (validate_any_value(raw, 0) < 0) return NULL;
    reader r = {raw.p, raw.p + raw.n};
    field f;
    int rc, which = 0;
    slice text = {NULL, 0};
    uint64_t num = 0;
    /* the last field of the oneof wins; a field with an unexpected wire type is unknown */
    while ((rc = next_field(&r, &f)) == 0) {
        if (f.number == 1 && f.wire == 2) { which = 1; text = f.data; }
        else if (f.number == 2 && f.wire == 0) { which = 2; num = f.value; }
        else if (f.number == 3 && f.wire == 0) { which = 3; num = f.value; }
        else if (f.number == 4 && f.wire == 1) { which = 4; num = f.value; }
        else if (f.number >= 5 && f.number <= 7 && f.wire == 2) { which = 0; }
    }
    if (rc < 0) return NULL;
    switch (which) {
    case 1: return PyUnicode_DecodeUTF8((const char *)text.p, text.n, "strict");
    case 2: return PyUnicode_FromString(num ? "true" : "false");
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
    default: return PyUnicode_FromString("");
    }
}

/* -- the scanner ---------------------------------------------------------------------------- */

typedef struct { uint64_t hash; Py_ssize_t off, n, series; uint32_t gen; } slot;

typedef struct { double value; Py_ssize_t trace_off, trace_n, span_off, span_n; } exemplar;

typedef struct {
    PyObject *attrs; /* owned */
    long long count;
    double sum;
    uint64_t *buckets;   /* nbounds + 1, or NULL without a histogram */
    exemplar *exemplars; /* max_exemplars, or NULL */
    int nex, exnext;
    long long seen; /* measurements with an exemplar (a trace id) */
} series;

typedef struct {
    PyObject_HEAD
    int ndims;
    slice dims[MAX_DIMS];
    PyObject *dim_bytes; /* owned tuple of bytes keeping dims alive */
    PyObject *dim_names; /* owned tuple of str */
    int with_service, with_name, with_kind, with_status;
    PyObject *kind_pairs;   /* 7: SPAN_KIND_* pairs, then the pair for out-of-range kinds */
    PyObject *status_pairs; /* 4: STATUS_CODE_* pairs, then the pair for out-of-range codes */
    PyObject *s_span_name, *s_service_name;
    int histogram;
    double *bounds;
    int nbounds;
    double divisor;
    int max_exemplars;
    PyObject *resolve;
    int busy;
    /* reused between scans */
    slot *slots;
    Py_ssize_t cap, used;
    uint32_t gen;
    uint8_t *arena;
    Py_ssize_t arena_n, arena_cap;
    uint8_t *scratch;
    Py_ssize_t scratch_cap;
} Scanner;

/* the state of one ResourceSpans */
typedef struct {
    const uint8_t *base;
    PyObject *resource_key;           /* owned, or NULL */
    PyObject *service_pair;           /* owned, or NULL */
    PyObject *fallbacks[MAX_DIMS];    /* owned pairs, or NULL (no fallback: omitted) */
    PyObject *index;                  /* dict: attrs -> series position */
    series *items;
    Py_ssize_t n, cap;
} rs_state;

static void rs_clear(rs_state *st) {
    Py_CLEAR(st->resource_key);
    Py_CLEAR(st->service_pair);
    for (int i = 0; i < MAX_DIMS; i++) Py_CLEAR(st->fallbacks[i]);
    Py_CLEAR(st->index);
    for (Py_ssize_t i = 0; i < st->n; i++) {
        Py_CLEAR(st->items[i].attrs);
        PyMem_Free(st->items[i].buckets); /* one block: the buckets, then the exemplars */
    }
    st->n = 0;
}

/* -- group keys ------------------------------------------------------------------------------ */

static uint64_t hash_key(const uint8_t *p, Py_ssize_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    if (n) memcpy(&w, p, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 29;
    return h;
}

static int reserve(uint8_t **buf, Py_ssize_t *cap, Py_ssize_t need) {
    if (need <= *cap) return 0;
    Py_ssize_t c = *cap ? *cap : 256;
    while (c < need) {
        if (c > PY_SSIZE_T_MAX / 2) { PyErr_NoMemory(); return -1; }
        c *= 2;
    }
    uint8_t *b = PyMem_Realloc(*buf, c);
    if (b == NULL) { PyErr_NoMemory(); return -1; }
    *buf = b;
    *cap = c;
    return 0;
}

/* the slot of a key in the current generation: its series, or -1 when new (then *at is the
 * free slot to fill) */
static Py_ssize_t lookup(Scanner *self, uint64_t h, const uint8_t *key, Py_ssize_t n, Py_ssize_t *at) {
    Py_ssize_t mask = self->cap - 1;
    Py_ssize_t i = (Py_ssize_t)(h & (uint64_t)mask);
    for (;;) {
        slot *s = &self->slots[i];
        if (s->gen != self->gen) { *at = i; return -1; }
        if (s->hash == h && s->n == n && memcmp(self->arena + s->off, key, n) == 0) return s->series;
        i = (i + 1) & mask;
    }
}

static int grow_slots(Scanner *self) {
    Py_ssize_t cap = self->cap ? self->cap * 2 : 256;
    slot *fresh = PyMem_Calloc(cap, sizeof(slot));
    if (fresh == NULL) { PyErr_NoMemory(); return -1; }
    uint32_t gen = 1;
    for (Py_ssize_t i = 0; i < self->cap; i++) {
        slot *s = &self->slots[i];
        if (s->gen != self->gen) continue;
        Py_ssize_t j = (Py_ssize_t)(s->hash & (uint64_t)(cap - 1));
        while (fresh[j].gen == gen) j = (j + 1) & (cap - 1);
        fresh[j] = *s;
        fresh[j].gen = gen;
    }
    PyMem_Free(self->slots);
    self->slots = fresh;
    self->cap = cap;
    self->gen = gen;
    return 0;
}

/* a new generation: the table is empty again (a ResourceSpans starts) */
static void next_generation(Scanner *self) {
    self->used = 0;
    self->arena_n = 0;
    if (++self->gen == 0) { /* wrapped: clear for real */
        memset(self->slots, 0, self->cap * sizeof(slot));
        self->gen = 1;
    }
}

/* -- spans ------------------------------------------------------------------------------------ */

typedef struct {
    slice trace_id, span_id, name, status;
    int32_t kind;
    uint64_t start, end;
    slice dims[MAX_DIMS];
    uint8_t present[MAX_DIMS];
} span_info;

static int parse_span(Scanner *self, slice raw, span_info *s) {
    s->trace_id.n = s->span_id.n = s->name.n = s->status.n = 0;
    s->trace_id.p = s->span_id.p = s->name.p = s->status.p = raw.p;
    s->kind = 0;
    s->start = s->end = 0;
    memset(s->present, 0, self->ndims);
    reader r = {raw.p, raw.p + raw.n};
    field f;
    int rc;
    while ((rc = next_field(&r, &f)) == 0) {
        switch (f.number) {
        case 1: if (f.wire == 2) s->trace_id = f.data; break;
        case 2: if (f.wire == 2) s->span_id = f.data; break;
        case 5: if (f.wire == 2) s->name = f.data; break;
        case 6: if (f.wire == 0) s->kind = (int32_t)f.value; break;
        case 7: if (f.wire == 1) s->start = f.value; break;
        case 8: if (f.wire == 1) s->end = f.value; break;
        case 15: if (f.wire == 2) s->status = f.data; break;
        case 9:
            if (f.wire == 2) {
                /* a map<string, bytes> entry: the last key and value fields */
                reader kr = {f.data.p, f.data.p + f.data.n};
                field kf;
                int krc;
                slice key = {f.data.p, 0}, value = {f.data.p, 0};
                while ((krc = next_field(&kr, &kf)) == 0) {
                    if (kf.wire != 2) continue;
                    if (kf.number == 1) key = kf.data;
                    else if (kf.number == 2) value = kf.data;
                }
                if (krc < 0) return -1;
                if (!ascii_or_utf8(key)) return bad("attribute key not UTF-8");
                for (int d = 0; d < self->ndims; d++) {
                    if (key.n == self->dims[d].n && memcmp(key.p, self->dims[d].p, key.n) == 0) {
                        s->dims[d] = value;
                        s->present[d] = 1;
                        break;
                    }
                }
            }
            break;
        default: break;
        }
    }
    return rc < 0 ? -1 : 0;
}

/* Status.code of an encoded Status (the message must be UTF-8, as protobuf checks) */
static int status_code(slice raw, int32_t *code) {
    reader r = {raw.p, raw.p + raw.n};
    field f;
    int rc;
    *code = 0;
    while ((rc = next_field(&r, &f)) == 0) {
        if (f.number == 3 && f.wire == 0) *code = (int32_t)f.value;
        else if (f.number == 2 && f.wire == 2 && !ascii_or_utf8(f.data)) return bad("status message not UTF-8");
    }
    return rc < 0 ? -1 : 0;
}

static inline int put(Scanner *self, Py_ssize_t *n, const void *p, Py_ssize_t len) {
    if (reserve(&self->scratch, &self->scratch_cap, *n + len) < 0) return -1;
    if (len) memcpy(self->scratch + *n, p, len);
    *n += len;
    return 0;
}

/* The attribute set of a group (as connector._attrs builds it). New reference. */
static PyObject *build_attrs(Scanner *self, rs_state *st, span_info *s, int kc, int sc) {
    PyObject *items[4 + MAX_DIMS];
    int n = 0;
    PyObject *out = NULL;
    if (self->with_service) items[n++] = Py_NewRef(st->service_pair);
    if (self->with_name) {
        PyObject *name = PyUnicode_DecodeUTF8((const char *)s->name.p, s->name.n, "replace");
        if (name == NULL) goto done;
        items[n] = PyTuple_Pack(2, self->s_span_name, name);
        Py_DECREF(name);
        if (items[n] == NULL) goto done;
        n++;
    }
    if (self->with_kind) items[n++] = Py_NewRef(PyTuple_GET_ITEM(self->kind_pairs, kc));
    if (self->with_status) items[n++] = Py_NewRef(PyTuple_GET_ITEM(self->status_pairs, sc));
    for (int d = 0; d < self->ndims; d++) {
        if (s->present[d]) {
            PyObject *v = value_str(s->dims[d]);
            if (v == NULL) goto done;
            items[n] = PyTuple_Pack(2, PyTuple_GET_ITEM(self->dim_names, d), v);
            Py_DECREF(v);
            if (items[n] == NULL) goto done;
            n++;
        } else if (st->fallbacks[d] != NULL) {
            items[n++] = Py_NewRef(st->fallbacks[d]);
        }
    }
    out = PyTuple_New(n);
    if (out == NULL) goto done;
    for (int i = 0; i < n; i++) PyTuple_SET_ITEM(out, i, items[i]);
    return out;
done:
    for (int i = 0; i < n; i++) Py_DECREF(items[i]);
    return NULL;
}

/* the series of an attribute set (created if new); steals nothing */
static Py_ssize_t series_of(Scanner *self, rs_state *st, PyObject *attrs) {
    PyObject *pos = PyDict_GetItemWithError(st->index, attrs);
    if (pos != NULL) return PyLong_AsSsize_t(pos);
    if (PyErr_Occurred()) return -1;
    if (st->n == st->cap) {
        Py_ssize_t cap = st->cap ? st->cap * 2 : 16;
        series *items = PyMem_Realloc(st->items, cap * sizeof(series));
        if (items == NULL) { PyErr_NoMemory(); return -1; }
        st->items = items;
        st->cap = cap;
    }
    series *x = &st->items[st->n];
    memset(x, 0, sizeof(*x));
    if (self->histogram) {
        size_t size = (self->nbounds + 1) * sizeof(uint64_t) + self->max_exemplars * sizeof(exemplar);
        x->buckets = PyMem_Calloc(1, size);
        if (x->buckets == NULL) { PyErr_NoMemory(); return -1; }
        if (self->max_exemplars) x->exemplars = (exemplar *)(x->buckets + self->nbounds + 1);
    }
    x->attrs = Py_NewRef(attrs);
    st->n++; /* counted now: rs_clear frees it even if what follows fails */
    pos = PyLong_FromSsize_t(st->n - 1);
    if (pos == NULL) return -1;
    int rc = PyDict_SetItem(st->index, attrs, pos);
    Py_DECREF(pos);
    return rc < 0 ? -1 : st->n - 1;
}

static int scan_span(Scanner *self, rs_state *st, slice raw, span_info *s) {
    if (parse_span(self, raw, s) < 0) return -1;
    int kc = 0, sc = 0;
    if (self->with_kind) kc = (s->kind >= 0 && s->kind < 6) ? s->kind : 6;
    if (self->with_status) {
        int32_t code;
        if (status_code(s->status, &code) < 0) return -1;
        sc = (code >= 0 && code < 3) ? code : 3;
    }
    /* the group key: kind, status, name, then each dimension's encoded value (or absence) */
    Py_ssize_t n = 0;
    uint8_t head[2] = {(uint8_t)kc, (uint8_t)sc};
    if (put(self, &n, head, 2) < 0) return -1;
    if (self->with_name) {
        if (put(self, &n, &s->name.n, sizeof(Py_ssize_t)) < 0 || put(self, &n, s->name.p, s->name.n) < 0)
            return -1;
    }
    for (int d = 0; d < self->ndims; d++) {
        Py_ssize_t len = s->present[d] ? s->dims[d].n : -1;
        if (put(self, &n, &len, sizeof(len)) < 0) return -1;
        if (len > 0 && put(self, &n, s->dims[d].p, len) < 0) return -1;
    }
    uint64_t h = hash_key(self->scratch, n);
    Py_ssize_t at = 0;
    Py_ssize_t pos = lookup(self, h, self->scratch, n, &at);
    if (pos < 0) {
        PyObject *attrs = build_attrs(self, st, s, kc, sc);
        if (attrs == NULL) return -1;
        pos = series_of(self, st, attrs);
        Py_DECREF(attrs);
        if (pos < 0) return -1;
        if (reserve(&self->arena, &self->arena_cap, self->arena_n + n) < 0) return -1;
        memcpy(self->arena + self->arena_n, self->scratch, n);
        slot *sl = &self->slots[at];
        sl->hash = h;
        sl->off = self->arena_n;
        sl->n = n;
        sl->series = pos;
        sl->gen = self->gen;
        self->arena_n += n;
        if (++self->used * 2 > self->cap && grow_slots(self) < 0) return -1;
    }
    series *x = &st->items[pos];
    x->count++;
    if (!self->histogram) return 0;
    /* (end - start) / divisor, as Python computes it from the integers */
    double value = s->end >= s->start ? (double)(s->end - s->start) : -(double)(s->start - s->end);
    value /= self->divisor;
    x->sum += value;
    int lo = 0, hi = self->nbounds; /* bisect_left */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (self->bounds[mid] < value) lo = mid + 1;
        else hi = mid;
    }
    x->buckets[lo]++;
    if (self->max_exemplars && s->trace_id.n) {
        x->seen++;
        exemplar e = {value, s->trace_id.p - st->base, s->trace_id.n, s->span_id.p - st->base, s->span_id.n};
        if (x->nex < self->max_exemplars) x->exemplars[x->nex++] = e;
        else {
            x->exemplars[x->exnext] = e;
            x->exnext = (x->exnext + 1) % self->max_exemplars;
        }
    }
    return 0;
}

/* -- requests --------------------------------------------------------------------------------- */

/* resolve(resource) -> (resource key, service.name, fallbacks) into the state */
static int resolve(Scanner *self, rs_state *st, slice resource) {
    PyObject *r = PyObject_CallFunction(self->resolve, "y#", (const char *)resource.p, resource.n);
    if (r == NULL) return -1;
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 3 || !PyBytes_Check(PyTuple_GET_ITEM(r, 0)) ||
        !PyUnicode_Check(PyTuple_GET_ITEM(r, 1)) || !PyTuple_Check(PyTuple_GET_ITEM(r, 2)) ||
        PyTuple_GET_SIZE(PyTuple_GET_ITEM(r, 2)) != self->ndims) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_TypeError, "resolve() must return (bytes, str, tuple of ndims)");
        return -1;
    }
    st->service_pair = PyTuple_Pack(2, self->s_service_name, PyTuple_GET_ITEM(r, 1));
    if (st->service_pair == NULL) { Py_DECREF(r); return -1; }
    PyObject *fallbacks = PyTuple_GET_ITEM(r, 2);
    for (int d = 0; d < self->ndims; d++) {
        PyObject *v = PyTuple_GET_ITEM(fallbacks, d);
        if (v == Py_None) continue;
        if (!PyUnicode_Check(v)) {
            Py_DECREF(r);
            PyErr_SetString(PyExc_TypeError, "resolve(): fallbacks must be str or None");
            return -1;
        }
        st->fallbacks[d] = PyTuple_Pack(2, PyTuple_GET_ITEM(self->dim_names, d), v);
        if (st->fallbacks[d] == NULL) { Py_DECREF(r); return -1; }
    }
    st->resource_key = Py_NewRef(PyTuple_GET_ITEM(r, 0));
    Py_DECREF(r);
    st->index = PyDict_New();
    return st->index == NULL ? -1 : 0;
}

static PyObject *rs_result(Scanner *self, rs_state *st) {
    PyObject *list = PyList_New(st->n);
    if (list == NULL) return NULL;
    const char *b = (const char *)st->base;
    for (Py_ssize_t i = 0; i < st->n; i++) {
        series *x = &st->items[i];
        PyObject *buckets = Py_NewRef(Py_None), *exemplars = NULL;
        if (self->histogram) {
            Py_DECREF(buckets);
            buckets = PyList_New(self->nbounds + 1);
            if (buckets == NULL) goto error;
            for (int k = 0; k <= self->nbounds; k++) {
                PyObject *c = PyLong_FromUnsignedLongLong(x->buckets[k]);
                if (c == NULL) { Py_DECREF(buckets); goto error; }
                PyList_SET_ITEM(buckets, k, c);
            }
        }
        exemplars = PyList_New(x->nex);
        if (exemplars == NULL) { Py_DECREF(buckets); goto error; }
        for (int k = 0; k < x->nex; k++) { /* oldest first */
            exemplar *e = &x->exemplars[(x->exnext + k) % x->nex];
            PyObject *t = Py_BuildValue("(dy#y#)", e->value, b + e->trace_off, e->trace_n,
                                        b + e->span_off, e->span_n);
            if (t == NULL) { Py_DECREF(buckets); Py_DECREF(exemplars); goto error; }
            PyList_SET_ITEM(exemplars, k, t);
        }
        PyObject *item = Py_BuildValue("(OLdNNL)", x->attrs, x->count, x->sum, buckets, exemplars, x->seen);
        if (item == NULL) goto error;
        PyList_SET_ITEM(list, i, item);
    }
    return Py_BuildValue("(ON)", st->resource_key, list);
error:
    Py_DECREF(list);
    return NULL;
}

static int scan_resource_spans(Scanner *self, rs_state *st, slice raw, span_info *s, PyObject *out) {
    /* the resource first (it may come after the spans): the last field 1 */
    reader r = {raw.p, raw.p + raw.n};
    field f;
    int rc;
    slice resource = {raw.p, 0};
    while ((rc = next_field(&r, &f)) == 0)
        if (f.number == 1 && f.wire == 2) resource = f.data;
    if (rc < 0) return -1;
    if (resolve(self, st, resource) < 0) return -1;
    next_generation(self);
    r.p = raw.p;
    while ((rc = next_field(&r, &f)) == 0) {
        if (f.number != 2 || f.wire != 2) continue;
        reader sr = {f.data.p, f.data.p + f.data.n};
        field sf;
        int src;
        while ((src = next_field(&sr, &sf)) == 0) {
            if (sf.number != 2 || sf.wire != 2) continue;
            if (scan_span(self, st, sf.data, s) < 0) return -1;
        }
        if (src < 0) return -1;
    }
    if (rc < 0) return -1;
    if (st->n == 0) return 0;
    PyObject *item = rs_result(self, st);
    if (item == NULL) return -1;
    rc = PyList_Append(out, item);
    Py_DECREF(item);
    return rc;
}

PyDoc_STRVAR(scan_doc,
"scan(request: bytes) -> [(resource_key, [(attrs, count, sum, buckets | None, exemplars, seen)])]\n\n"
"Per ResourceSpans with spans (in order), the series of the request in order of first arrival:\n"
"the attribute set, the number of spans, the sum of their durations, the bucket counts (None\n"
"without a histogram), the last exemplars as (value, trace_id, span_id), oldest first, and\n"
"how many spans had one (a trace id).\n"
"Calls resolve(resource_bytes) once per ResourceSpans. Raises ValueError on malformed input.");

static PyObject *Scanner_scan(Scanner *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "scan() expects bytes");
        return NULL;
    }
    if (self->resolve == NULL || self->slots == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Scanner not initialised");
        return NULL;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Scanner.scan() is not reentrant");
        return NULL;
    }
    span_info *s = PyMem_Malloc(sizeof(span_info));
    PyObject *out = PyList_New(0);
    if (s == NULL || out == NULL) {
        PyMem_Free(s);
        Py_XDECREF(out);
        return s == NULL ? PyErr_NoMemory() : NULL;
    }
    self->busy = 1;
    Py_INCREF(arg); /* the buffer stays alive even if resolve() drops the caller's reference */
    rs_state st;
    memset(&st, 0, sizeof(st));
    st.base = (const uint8_t *)PyBytes_AS_STRING(arg);
    reader r = {st.base, st.base + PyBytes_GET_SIZE(arg)};
    field f;
    int rc;
    while ((rc = next_field(&r, &f)) == 0) {
        if (f.number != 1 || f.wire != 2) continue;
        int ok = scan_resource_spans(self, &st, f.data, s, out);
        rs_clear(&st);
        if (ok < 0) { rc = -1; break; }
    }
    rs_clear(&st);
    PyMem_Free(st.items);
    PyMem_Free(s);
    Py_DECREF(arg);
    self->busy = 0;
    if (rc < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* -- the type ------------------------------------------------------------------------------- */

static int Scanner_init(Scanner *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"dimensions", "included", "kind_pairs", "status_pairs", "bounds",
                             "divisor", "max_exemplars", "resolve", NULL};
    PyObject *dims, *included, *kind_pairs, *status_pairs, *bounds, *resolve_fn;
    double divisor;
    int max_exemplars;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!O!OdiO", kwlist, &PyTuple_Type, &dims,
                                     &PyTuple_Type, &included, &PyTuple_Type, &kind_pairs,
                                     &PyTuple_Type, &status_pairs, &bounds, &divisor,
                                     &max_exemplars, &resolve_fn))
        return -1;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Scanner is scanning");
        return -1;
    }
    Py_ssize_t ndims = PyTuple_GET_SIZE(dims);
    if (ndims > MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "at most %d dimensions", MAX_DIMS);
        return -1;
    }
    if (PyTuple_GET_SIZE(included) != 4 || PyTuple_GET_SIZE(kind_pairs) != 7 ||
        PyTuple_GET_SIZE(status_pairs) != 4) {
        PyErr_SetString(PyExc_ValueError, "included: 4 flags; kind_pairs: 7; status_pairs: 4");
        return -1;
    }
    if (!PyCallable_Check(resolve_fn)) {
        PyErr_SetString(PyExc_TypeError, "resolve must be callable");
        return -1;
    }
    if (max_exemplars < 0 || max_exemplars > MAX_EXEMPLARS) {
        PyErr_Format(PyExc_ValueError, "max_exemplars must be between 0 and %d", MAX_EXEMPLARS);
        return -1;
    }
    if (!(divisor > 0)) {
        PyErr_SetString(PyExc_ValueError, "divisor must be > 0");
        return -1;
    }
    PyObject *encoded = PyTuple_New(ndims);
    if (encoded == NULL) return -1;
    for (Py_ssize_t d = 0; d < ndims; d++) {
        PyObject *name = PyTuple_GET_ITEM(dims, d);
        if (!PyUnicode_Check(name)) {
            Py_DECREF(encoded);
            PyErr_SetString(PyExc_TypeError, "dimensions must be str");
            return -1;
        }
        PyObject *b = PyUnicode_AsUTF8String(name);
        if (b == NULL) { Py_DECREF(encoded); return -1; }
        PyTuple_SET_ITEM(encoded, d, b);
        self->dims[d].p = (const uint8_t *)PyBytes_AS_STRING(b);
        self->dims[d].n = PyBytes_GET_SIZE(b);
    }
    Py_XSETREF(self->dim_bytes, encoded);
    Py_XSETREF(self->dim_names, Py_NewRef(dims));
    self->ndims = (int)ndims;
    int flags[4];
    for (int i = 0; i < 4; i++) {
        flags[i] = PyObject_IsTrue(PyTuple_GET_ITEM(included, i));
        if (flags[i] < 0) return -1;
    }
    self->with_service = flags[0];
    self->with_name = flags[1];
    self->with_kind = flags[2];
    self->with_status = flags[3];
    Py_XSETREF(self->kind_pairs, Py_NewRef(kind_pairs));
    Py_XSETREF(self->status_pairs, Py_NewRef(status_pairs));
    Py_XSETREF(self->resolve, Py_NewRef(resolve_fn));
    Py_XSETREF(self->s_span_name, PyUnicode_InternFromString("span.name"));
    Py_XSETREF(self->s_service_name, PyUnicode_InternFromString("service.name"));
    if (self->s_span_name == NULL || self->s_service_name == NULL) return -1;
    self->divisor = divisor;
    PyMem_Free(self->bounds);
    self->bounds = NULL;
    self->nbounds = 0;
    self->histogram = bounds != Py_None;
    self->max_exemplars = self->histogram ? max_exemplars : 0;
    if (self->histogram) {
        PyObject *fast = PySequence_Fast(bounds, "bounds must be a sequence of floats or None");
        if (fast == NULL) return -1;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
        if (n > 1 << 20) {
            Py_DECREF(fast);
            PyErr_SetString(PyExc_ValueError, "too many bounds");
            return -1;
        }
        self->bounds = PyMem_Malloc((n ? n : 1) * sizeof(double));
        if (self->bounds == NULL) { Py_DECREF(fast); PyErr_NoMemory(); return -1; }
        for (Py_ssize_t i = 0; i < n; i++) {
            double v = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
            if (v == -1.0 && PyErr_Occurred()) { Py_DECREF(fast); return -1; }
            self->bounds[i] = v;
        }
        self->nbounds = (int)n;
        Py_DECREF(fast);
    }
    if (self->slots == NULL) {
        self->slots = PyMem_Calloc(256, sizeof(slot));
        if (self->slots == NULL) { PyErr_NoMemory(); return -1; }
        self->cap = 256;
        self->gen = 0;
    }
    return 0;
}

/* resolve() is usually a bound method of the connector holding the scanner: a cycle the
 * garbage collector must see */
static int Scanner_traverse(Scanner *self, visitproc visit, void *arg) {
    Py_VISIT(self->resolve);
    Py_VISIT(self->kind_pairs);
    Py_VISIT(self->status_pairs);
    Py_VISIT(self->dim_names);
    return 0;
}

static int Scanner_clear(Scanner *self) {
    Py_CLEAR(self->resolve);
    Py_CLEAR(self->kind_pairs);
    Py_CLEAR(self->status_pairs);
    Py_CLEAR(self->dim_names);
    return 0;
}

static void Scanner_dealloc(Scanner *self) {
    PyObject_GC_UnTrack(self);
    Scanner_clear(self);
    Py_XDECREF(self->dim_bytes);
    Py_XDECREF(self->s_span_name);
    Py_XDECREF(self->s_service_name);
    PyMem_Free(self->bounds);
    PyMem_Free(self->slots);
    PyMem_Free(self->arena);
    PyMem_Free(self->scratch);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Scanner_methods[] = {
    {"scan", (PyCFunction)Scanner_scan, METH_O, scan_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "plugins._native._spanscan.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Scanner_traverse,
    .tp_clear = (inquiry)Scanner_clear,
    .tp_doc = "Scanner(dimensions, included, kind_pairs, status_pairs, bounds, divisor, "
              "max_exemplars, resolve): the spanmetrics connector's span scanner (see the "
              "module source).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_spanscan", "The spanmetrics connector's per-span work, in C.", -1, NULL,
};

PyMODINIT_FUNC PyInit__spanscan(void) {
    if (PyType_Ready(&ScannerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "MAX_DIMS", MAX_DIMS);
    PyModule_AddIntConstant(m, "MAX_EXEMPLARS", MAX_EXEMPLARS);
    return m;
}
