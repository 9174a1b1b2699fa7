/* _tracewire: the per-span loops of the workflow processor, on the OTLP wire format.
 *
 * ingest(raw, interned, tool_a, tool_b, agent_marker[, facts, apply, execs])
 * ingest(raw, interned, IngestConfig(tool_a, tool_b, agent_marker, facts, execs), apply[, now])
 *     One pass over an encoded ExportTraceServiceRequest. Returns a list, one entry per trace
 *     in order of first appearance: (trace_id, spans, groups, ids, parents, nbytes, specials)
 *     with spans the encoded spans (bytes), groups the (resource, resource schema_url, scope,
 *     scope schema_url) of each span (interned through the dict `interned`), ids and parents
 *     the span and parent span ids, nbytes the total length of the spans and specials None or
 *     a list of (index, flags) for the spans that are roots (1), contain a tool marker (2) or
 *     the agent marker (4; looked for in non-root spans only: with an IngestConfig, the
 *     marker of the agent's name or of its id).
 *
 * looks_like_run_id(value)
 *     Whether a value (bytes, UTF-8) is shaped like a per-run id, never a label: the test of
 *     plugins._agentdialects.looks_like_run_id, which the agent found in root and special
 *     spans obeys (a gen_ai.agent.id that is a UUID names no agent).
 *
 * assemble(entries, markers, suffix_for)
 *     An encoded ExportTraceServiceRequest from entries (spans, groups, suffix, stamp): groups
 *     a list (one group per span) or one group tuple for all spans. Each span is written with
 *     `suffix` appended; when stamp is not None and the span contains one of `markers`, with
 *     suffix_for(span, stamp) appended instead. One ResourceSpans / ScopeSpans per distinct
 *     group, in order of first appearance; empty fields are left out.
 *
 *     With facts (the keys and values read in special spans), each entry also carries what
 *     the special spans say (tool calls, failed tool calls lacking error.type, root facts,
 *     agent) instead of the flags. With apply (held, released, now, ...), the entries are
 *     applied to the held traces (Trace objects in the OrderedDict held: the spans copied
 *     into them, no Python object per span) and only those C cannot decide are returned;
 *     None when a span belongs to a released trace (late spans: the caller takes the Python
 *     path). With execs (a tuple of byte strings, apply mode only), the result has a fourth
 *     item: (trace_id, index) of the applied spans holding one of them (the spans that may
 *     be an agent run or a workflow, read by the caller with the dialect tables), for the
 *     traces whose root is not a workflow.
 *
 * Trace
 *     The state of one held trace (nbytes, root facts, agent, tool calls, timestamps), as the
 *     Python path's _Trace, and its spans: not Python objects but one chunk per ingest
 *     (records of 32 bytes and the encodings; see below). spans, groups, ids and parents read
 *     them as new lists, add(spans, groups, ids, parents) appends, len() counts them and
 *     __sizeof__ is what it really allocated. Not tracked by the cyclic GC.
 *
 * expire(held, now, wait, max_wait[, max_spans])
 *     The due traces taken out of held, in order, with their reasons (wait, max_wait); traces
 *     that received spans since queued are queued again. With max_spans, in consecutive parts
 *     of about max_spans spans (a part ends with the trace that reaches it).
 *
 * LateMemory(size)
 *     The late-span memory of the C store (trace id -> stamp or None, at most size entries,
 *     the least recently remembered dropped first), written by release, read as a mapping.
 *
 * release(batch, cfg, tails, pending_released, pending_outcomes, lru, lru_size, markers,
 *         suffix_for)
 *     Released traces counted, stamped (workflow.id, type, agent, outcome, complexity tier),
 *     remembered in the late-span LRU, and assembled as by assemble: the span at root_index
 *     followed by the trace's root_extra, each span in its others (the parentless spans that
 *     are not its root, in a workflow with several) by its others_extra.
 *
 * max_depth(ids, parents, cap)
 *     Depth of the span tree, as plugins.workflowprocessor.processor._max_depth.
 *
 * The wire format is parsed by hand with strict bounds checks; malformed input raises
 * ValueError. Unknown fields are skipped by wire type (groups included), a field repeated
 * where one is expected keeps the last value, as protobuf does.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_recency.h"
#include "_runid.h"

#define MAX_GROUP_DEPTH 100

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
} slice;

static int
malformed(const char *what)
{
    PyErr_Format(PyExc_ValueError, "malformed trace request: %s", what);
    return -1;
}

static inline int
read_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *pp;
    if (p < end && *p < 0x80) {
        *out = *p;
        *pp = p + 1;
        return 0;
    }
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (p >= end)
            return malformed("truncated varint");
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = v;
            *pp = p;
            return 0;
        }
    }
    return malformed("varint too long");
}

/* reads a tag: field number (> 0) and wire type */
static inline int
read_tag(const uint8_t **pp, const uint8_t *end, uint32_t *field, int *wt)
{
    uint64_t tag;
    if (read_varint(pp, end, &tag) < 0)
        return -1;
    if (tag > 0xFFFFFFFFu || (tag >> 3) == 0)
        return malformed("bad field tag");
    *field = (uint32_t)(tag >> 3);
    *wt = (int)(tag & 7);
    return 0;
}

static inline int
read_len(const uint8_t **pp, const uint8_t *end, slice *out)
{
    uint64_t n;
    if (read_varint(pp, end, &n) < 0)
        return -1;
    if (n > (uint64_t)(end - *pp))
        return malformed("length beyond the end of the message");
    out->p = *pp;
    out->n = (Py_ssize_t)n;
    *pp += n;
    return 0;
}

/* skips the value of a field (the tag already read) */
static int
skip_value(const uint8_t **pp, const uint8_t *end, uint32_t field, int wt, int depth)
{
    uint64_t v;
    slice s;
    switch (wt) {
    case 0:
        return read_varint(pp, end, &v);
    case 1:
        if (end - *pp < 8)
            return malformed("truncated fixed64");
        *pp += 8;
        return 0;
    case 2:
        return read_len(pp, end, &s);
    case 5:
        if (end - *pp < 4)
            return malformed("truncated fixed32");
        *pp += 4;
        return 0;
    case 3:
        if (depth >= MAX_GROUP_DEPTH)
            return malformed("groups nested too deeply");
        for (;;) {
            uint32_t f;
            int w;
            if (*pp >= end)
                return malformed("unterminated group");
            if (read_tag(pp, end, &f, &w) < 0)
                return -1;
            if (w == 4) {
                if (f != field)
                    return malformed("mismatched end of group");
                return 0;
            }
            if (skip_value(pp, end, f, w, depth + 1) < 0)
                return -1;
        }
    case 4:
        return malformed("unexpected end of group");
    default:
        return malformed("bad wire type");
    }
}

/* skip_value at depth 0, the usual cases inline (a one-byte varint or length, a fixed
 * width): anything else, errors included, is skip_value's */
static inline int
skip_fast(const uint8_t **pp, const uint8_t *end, uint32_t field, int wt)
{
    const uint8_t *p = *pp;
    switch (wt) {
    case 2:
        if (p < end && *p < 0x80 && (Py_ssize_t)*p < end - p) {
            *pp = p + 1 + *p;
            return 0;
        }
        break;
    case 0:
        if (p < end && *p < 0x80) {
            *pp = p + 1;
            return 0;
        }
        break;
    case 1:
        if (end - p >= 8) {
            *pp = p + 8;
            return 0;
        }
        break;
    case 5:
        if (end - p >= 4) {
            *pp = p + 4;
            return 0;
        }
        break;
    }
    return skip_value(pp, end, field, wt, 0);
}

/* the next field of a message at *pp: its number, wire type and, length-delimited, its bytes
 * (*s); any other value skipped. 0, or -1 with the error read_tag, read_len or skip_value
 * gives (a one-byte tag and length read here, anything else by them) */
static inline __attribute__((always_inline)) int
next_field(const uint8_t **pp, const uint8_t *end, uint32_t *field, int *wt, slice *s)
{
    const uint8_t *p = *pp;
    if (end - p >= 2 && p[0] >= 8 && p[0] < 0x80) {
        *field = p[0] >> 3;
        *wt = p[0] & 7;
        if (*wt == 2 && p[1] < 0x80 && (Py_ssize_t)p[1] <= end - p - 2) {
            s->p = p + 2;
            s->n = p[1];
            *pp = p + 2 + p[1];
            return 0;
        }
        *pp = p + 1;
    }
    else if (read_tag(pp, end, field, wt) < 0)
        return -1;
    if (*wt == 2)
        return read_len(pp, end, s);
    return skip_fast(pp, end, *field, *wt);
}

/* the usual field at *pp read quickly: 1 (*pp past it, *tag its one-byte tag, *s its bytes
 * when length-delimited) when it has a one-byte tag and is a length of one or two bytes and
 * its bytes, a one-byte varint or a fixed width (a span's fields but its flags), as
 * next_field reads it;
 * 0 (nothing read) for anything else, errors included: next_field's (~a third of its
 * instructions for such a field) */
static inline __attribute__((always_inline)) int
quick_field(const uint8_t **pp, const uint8_t *end, unsigned *tag, slice *s)
{
    const uint8_t *p = *pp;
    unsigned t = p[0]; /* (p < end) */
    if (end - p < 2 || t - 8u >= 0x78u) /* a field number > 0 in one byte */
        return 0;
    *tag = t;
    switch (t & 7) {
    case 2: {
        unsigned n = p[1];
        const uint8_t *q = p + 2;
        if (n >= 0x80) { /* a length of two bytes (a span in its ScopeSpans, most often) */
            if (end - p < 3 || p[2] >= 0x80)
                return 0;
            n = (n & 0x7F) | (unsigned)p[2] << 7;
            q = p + 3;
        }
        if ((Py_ssize_t)n > end - q)
            return 0;
        s->p = q;
        s->n = (Py_ssize_t)n;
        *pp = q + n;
        return 1;
    }
    case 1:
        if (end - p < 9)
            return 0;
        *pp = p + 9;
        return 1;
    case 0:
        if (p[1] >= 0x80)
            return 0;
        *pp = p + 2;
        return 1;
    case 5:
        if (end - p < 5)
            return 0;
        *pp = p + 5;
        return 1;
    }
    return 0;
}

/* growable array of slices */
/* A growable array's storage with room for more: its capacity doubled (or `first` when it
 * has none); NULL with MemoryError set (the old storage and *cap unchanged) on failure. */
static void *
grow_array(void *items, Py_ssize_t *cap, Py_ssize_t first, size_t size)
{
    Py_ssize_t ncap = *cap ? *cap * 2 : first;
    void *grown = PyMem_Realloc(items, (size_t)ncap * size);
    if (grown == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    *cap = ncap;
    return grown;
}

typedef struct {
    slice *items;
    Py_ssize_t len, cap;
} slices;

static int
slices_push(slices *a, slice s)
{
    if (a->len == a->cap) {
        slice *items = grow_array(a->items, &a->cap, 16, sizeof(slice));
        if (items == NULL)
            return -1;
        a->items = items;
    }
    a->items[a->len++] = s;
    return 0;
}

/* ResourceSpans / ScopeSpans: field 1 (bytes), field 2 (repeated, collected), field 3 (bytes) */
static int
parse_container(slice msg, slice *one, slices *twos, slice *three)
{
    const uint8_t *p = msg.p, *end = msg.p + msg.n;
    one->p = three->p = msg.p;
    one->n = three->n = 0;
    while (p < end) {
        uint32_t f;
        int wt;
        slice s;
        unsigned tag;
        if (quick_field(&p, end, &tag, &s)) {
            f = tag >> 3;
            wt = (int)(tag & 7);
        }
        else if (next_field(&p, end, &f, &wt, &s) < 0)
            return -1;
        if (wt == 2 && f <= 3) {
            if (f == 1)
                *one = s;
            else if (f == 2) {
                if (slices_push(twos, s) < 0)
                    return -1;
            }
            else
                *three = s;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* ingest */

#define F_ROOT 1
#define F_TOOL 2
#define F_AGENT 4

/* one span of a request, before it is added to a held trace */
typedef struct {
    slice span, id, parent; /* in the request */
    Py_ssize_t group;       /* index in the request's groups */
    PyObject *fresh;        /* the span as classified (error.type appended), or NULL */
} pend;

static inline slice
pend_span(const pend *p)
{
    if (p->fresh == NULL)
        return p->span;
    slice s = {(const uint8_t *)PyBytes_AS_STRING(p->fresh), PyBytes_GET_SIZE(p->fresh)};
    return s;
}

typedef struct {
    slice tid;
    PyObject *trace_id, *specials;
    pend *items; /* the trace's spans in the request, in order */
    Py_ssize_t len, cap;
    Py_ssize_t nbytes;
    /* facts mode */
    PyObject *errs;    /* indices of failed tool calls lacking error.type (list) or NULL */
    PyObject *root;    /* facts of the root: the first that is a workflow, else the last */
    PyObject *agent;   /* agent value: set (agent_set) or default */
    Py_ssize_t tools, roots; /* tool calls; parentless spans */
    int fallback, agent_set;
} entry;

typedef struct {
    entry *items;
    Py_ssize_t len, cap;
    Py_ssize_t *table; /* open addressing: entry index + 1, 0 = empty */
    Py_ssize_t tcap;   /* power of two */
    pend *spare;       /* storage for the spans of the next entry created (or NULL) */
    Py_ssize_t spare_cap;
} entries;

static uint64_t
hash_slice(slice s)
{
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < s.n; i++) {
        h ^= s.p[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

/* hash_slice for the entries' table: a 16-byte trace id as two words (a multiply-xor mix),
 * not byte by byte; the table's order is nowhere seen (entries keep their first appearance) */
static inline uint64_t
hash_tid(slice s)
{
    if (s.n != 16)
        return hash_slice(s);
    uint64_t a, b;
    memcpy(&a, s.p, 8);
    memcpy(&b, s.p + 8, 8);
    uint64_t h = (a ^ (b * 0x9E3779B97F4A7C15ULL)) * 0xFF51AFD7ED558CCDULL;
    return h ^ (h >> 32);
}

/* whether two trace ids are equal (16 bytes as two words, without a call of memcmp) */
static inline int
same_tid(slice a, slice b)
{
    if (a.n != b.n)
        return 0;
    if (a.n == 16) {
        uint64_t x0, x1, y0, y1;
        memcpy(&x0, a.p, 8);
        memcpy(&x1, a.p + 8, 8);
        memcpy(&y0, b.p, 8);
        memcpy(&y1, b.p + 8, 8);
        return ((x0 ^ y0) | (x1 ^ y1)) == 0;
    }
    return memcmp(a.p, b.p, (size_t)a.n) == 0;
}

static void
entry_clear(entry *t)
{
    for (Py_ssize_t j = 0; j < t->len; j++)
        Py_XDECREF(t->items[j].fresh);
    PyMem_Free(t->items);
    Py_XDECREF(t->trace_id);
    Py_XDECREF(t->specials);
    Py_XDECREF(t->errs);
    Py_XDECREF(t->root);
    Py_XDECREF(t->agent);
}

static void
entries_clear(entries *e)
{
    for (Py_ssize_t i = 0; i < e->len; i++)
        entry_clear(&e->items[i]);
    PyMem_Free(e->items);
    PyMem_Free(e->table);
    PyMem_Free(e->spare);
}

static int
entry_push(entry *t, slice span, slice id, slice parent, Py_ssize_t group)
{
    if (t->len == t->cap) {
        pend *items = grow_array(t->items, &t->cap, 16, sizeof(pend));
        if (items == NULL)
            return -1;
        t->items = items;
    }
    pend *p = &t->items[t->len++];
    p->span = span;
    p->id = id;
    p->parent = parent;
    p->group = group;
    p->fresh = NULL;
    return 0;
}

static int
table_insert(entries *e, Py_ssize_t index)
{
    Py_ssize_t mask = e->tcap - 1;
    Py_ssize_t i = (Py_ssize_t)(hash_tid(e->items[index].tid) & (uint64_t)mask);
    while (e->table[i])
        i = (i + 1) & mask;
    e->table[i] = index + 1;
    return 0;
}

static int
table_grow(entries *e)
{
    Py_ssize_t cap = e->tcap ? e->tcap * 2 : 64;
    Py_ssize_t *table = PyMem_Calloc((size_t)cap, sizeof(Py_ssize_t));
    if (table == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    PyMem_Free(e->table);
    e->table = table;
    e->tcap = cap;
    for (Py_ssize_t i = 0; i < e->len; i++)
        table_insert(e, i);
    return 0;
}

/* the index of the entry of a trace id, created if new; -1 on error */
static Py_ssize_t
entry_for(entries *e, slice tid)
{
    if (e->tcap) {
        Py_ssize_t mask = e->tcap - 1;
        Py_ssize_t i = (Py_ssize_t)(hash_tid(tid) & (uint64_t)mask);
        Py_ssize_t k;
        while ((k = e->table[i])) {
            entry *t = &e->items[k - 1];
            if (same_tid(t->tid, tid))
                return k - 1;
            i = (i + 1) & mask;
        }
    }
    if (e->len == e->cap) {
        entry *items = grow_array(e->items, &e->cap, 16, sizeof(entry));
        if (items == NULL)
            return -1;
        e->items = items;
    }
    Py_ssize_t at = e->len++;
    entry *t = &e->items[at];
    memset(t, 0, sizeof(entry));
    t->tid = tid;
    if (e->spare != NULL) { /* (kept from the last request: no allocation) */
        t->items = e->spare;
        t->cap = e->spare_cap;
        e->spare = NULL;
        e->spare_cap = 0;
    }
    if (e->len * 2 > e->tcap) {
        if (table_grow(e) < 0) /* inserts every entry, this one included */
            return -1;
    }
    else
        table_insert(e, at);
    t->trace_id = PyBytes_FromStringAndSize((const char *)tid.p, tid.n);
    if (t->trace_id == NULL)
        return -1;
    return at;
}

/* substring test: Horspool, the shift table built once per call of ingest */
typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
    uint8_t shift[256];
} needle;

static void
needle_init(needle *nd, const void *p, Py_ssize_t n)
{
    nd->p = p;
    nd->n = n;
    uint8_t cap = n > 255 ? 255 : (uint8_t)n;
    memset(nd->shift, cap, sizeof(nd->shift));
    for (Py_ssize_t i = 0; i + 1 < n; i++)
        if (n - 1 - i < 255)
            nd->shift[nd->p[i]] = (uint8_t)(n - 1 - i);
}

#if defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__))
#include <emmintrin.h>
#define HAVE_SSE2_SEARCH 1

/* where s (2 <= n <= hay.n) first occurs in hay, or -1: 16 positions at a time (a block's
 * candidates are those whose first, middle and last bytes match: three bytes, not two, since a
 * KeyValue key marker starts with the tag every KeyValue and AnyValue string starts with),
 * the last block ending at the last possible start (overlapping the one before it: a position
 * looked at twice was already found not to match, so the lowest candidate is the first), so
 * every load stays inside hay; fewer than 16 positions one by one */
static Py_ssize_t
find_sse2_at(const uint8_t *s, Py_ssize_t n, slice hay)
{
    const uint8_t *h = hay.p;
    Py_ssize_t limit = hay.n - n; /* the last possible start */
    if (limit < 15) {
        for (Py_ssize_t i = 0; i <= limit; i++)
            if (h[i] == s[0] && h[i + n - 1] == s[n - 1] &&
                memcmp(h + i + 1, s + 1, (size_t)(n - 2)) == 0)
                return i;
        return -1;
    }
    Py_ssize_t mid = n / 2, final = limit - 15;
    const __m128i first = _mm_set1_epi8((char)s[0]), last = _mm_set1_epi8((char)s[n - 1]);
    const __m128i middle = _mm_set1_epi8((char)s[mid]);
    for (Py_ssize_t i = 0;; i += 16) {
        if (i > final)
            i = final;
        const uint8_t *b = h + i;
        unsigned mask = (unsigned)_mm_movemask_epi8(_mm_and_si128(
            _mm_and_si128(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)b), first),
                          _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(b + n - 1)), last)),
            _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(b + mid)), middle)));
        while (mask) {
            int bit = __builtin_ctz(mask);
            if (memcmp(b + bit + 1, s + 1, (size_t)(n - 2)) == 0)
                return i + bit;
            mask &= mask - 1;
        }
        if (i == final)
            return -1;
    }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_AVX2_SEARCH 1
static int have_avx2; /* set once at import (the CPU's AVX2, checked at run time) */

/* the candidates among the 32 positions h[0 .. 31] (those whose first, middle and last bytes
 * match s's; reads up to h[n+30]) */
__attribute__((target("avx2"))) static inline __attribute__((always_inline)) unsigned
mask_avx2(const uint8_t *h, Py_ssize_t n, Py_ssize_t mid, __m256i first, __m256i middle,
          __m256i last)
{
    return (unsigned)_mm256_movemask_epi8(_mm256_and_si256(
        _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)h), first),
                         _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(h + n - 1)), last)),
        _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i *)(h + mid)), middle)));
}

/* the first candidate of mask at h that is s (its offset from h), or -1 */
static inline __attribute__((always_inline)) Py_ssize_t
first_of(unsigned mask, const uint8_t *h, const uint8_t *s, Py_ssize_t n)
{
    while (mask) {
        int bit = __builtin_ctz(mask);
        if (memcmp(h + bit + 1, s + 1, (size_t)(n - 2)) == 0)
            return bit;
        mask &= mask - 1;
    }
    return -1;
}

/* find_sse2_at, 64 positions at a time (two blocks of 32, one test for both: a long search
 * costs about half the instructions of 32 at a time), then 32; hay at least n + 31 bytes */
__attribute__((target("avx2"))) static Py_ssize_t
find_avx2_at(const uint8_t *s, Py_ssize_t n, slice hay)
{
    const uint8_t *h = hay.p;
    Py_ssize_t mid = n / 2, final = hay.n - n - 31, i = 0, at;
    const __m256i first = _mm256_set1_epi8((char)s[0]), last = _mm256_set1_epi8((char)s[n - 1]);
    const __m256i middle = _mm256_set1_epi8((char)s[mid]);
    for (; i + 32 <= final; i += 64) {
        unsigned a = mask_avx2(h + i, n, mid, first, middle, last);
        unsigned b = mask_avx2(h + i + 32, n, mid, first, middle, last);
        if ((a | b) == 0)
            continue;
        if ((at = first_of(a, h + i, s, n)) >= 0)
            return i + at;
        if ((at = first_of(b, h + i + 32, s, n)) >= 0)
            return i + 32 + at;
    }
    for (;; i += 32) {
        if (i > final)
            i = final;
        at = first_of(mask_avx2(h + i, n, mid, first, middle, last), h + i, s, n);
        if (at >= 0)
            return i + at;
        if (i == final)
            return -1;
    }
}
#endif

/* where s (2 <= n <= hay.n) first occurs in hay, or -1 */
static inline Py_ssize_t
find_fast_at(const uint8_t *s, Py_ssize_t n, slice hay)
{
#ifdef HAVE_AVX2_SEARCH
    if (have_avx2 && hay.n - n >= 31)
        return find_avx2_at(s, n, hay);
#endif
    return find_sse2_at(s, n, hay);
}
#endif

/* the offset of nd's first occurrence in hay, or -1 (Horspool without SIMD) */
static Py_ssize_t
needle_at(const needle *nd, slice hay)
{
    Py_ssize_t n = nd->n;
    if (n == 0)
        return 0;
    if (n > hay.n)
        return -1;
#ifdef HAVE_SSE2_SEARCH
    if (n >= 2)
        return find_fast_at(nd->p, n, hay);
#endif
    const uint8_t *p = hay.p, *last = hay.p + hay.n - n;
    uint8_t tail = nd->p[n - 1];
    while (p <= last) {
        uint8_t c = p[n - 1];
        if (c == tail && memcmp(p, nd->p, (size_t)(n - 1)) == 0)
            return p - hay.p;
        p += nd->shift[c];
    }
    return -1;
}

static inline int
needle_in(const needle *nd, slice hay)
{
    return needle_at(nd, hay) >= 0;
}

static int
contains(slice hay, const char *s, Py_ssize_t n)
{
    if (n == 0)
        return 1;
    if (n > hay.n)
        return 0;
#ifdef HAVE_SSE2_SEARCH
    if (n >= 2)
        return find_fast_at((const uint8_t *)s, n, hay) >= 0;
#endif
#ifdef _WIN32
    const uint8_t *p = hay.p, *last = hay.p + hay.n - n;
    while (p <= last) {
        p = memchr(p, (unsigned char)s[0], (size_t)(last - p + 1));
        if (p == NULL)
            return 0;
        if (memcmp(p, s, (size_t)n) == 0)
            return 1;
        p++;
    }
    return 0;
#else
    return memmem(hay.p, (size_t)hay.n, s, (size_t)n) != NULL;
#endif
}

static int
append_new(PyObject *list, PyObject *item)
{
    if (item == NULL)
        return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

static PyObject *
bytes_of(slice s)
{
    return PyBytes_FromStringAndSize((const char *)s.p, s.n);
}

/* whether a slice holds the bytes of b */
static inline int
same_bytes(slice s, PyObject *b)
{
    return PyBytes_GET_SIZE(b) == s.n &&
           (s.n == 0 || memcmp(PyBytes_AS_STRING(b), s.p, (size_t)s.n) == 0);
}

/* ---------------------------------------------------------------------------------------- */
/* facts: what the Python path learns from parsing the special spans, decided here when the
 * answer is certain; anything unusual (a value that is not a short string, a non-ASCII key, a
 * malformed attribute or status, events to read) makes the trace's spans of this request
 * fall back to the Python path, which then does exactly what it always did. */

enum {
    K_OP, K_MCP, K_ERR, K_AGENT, K_AGENT_ID, K_WF_NAME, K_WF_ID, K_WF_TYPE, K_WF_OUTCOME,
    K_STAMP0, NKEYS = K_STAMP0 + 5
};
_Static_assert(NKEYS <= 16, "facts_cfg's key masks are 16 bits");

#define SHORT_KEY 64 /* keys shorter than this are found by their length */

typedef struct {
    slice keys[NKEYS];
    slice tool_value, mcp_value, prefix;
    uint16_t by_len[SHORT_KEY]; /* bit k: keys[k] has this length */
    uint16_t long_keys;         /* bit k: keys[k] is SHORT_KEY bytes or longer */
} facts_cfg;

typedef struct {
    slice val[NKEYS];
    uint8_t has[NKEYS]; /* val[k] is only read when has[k] */
    slice name, status;
    Py_ssize_t events;
} span_facts;

static slice
slice_of_bytes(PyObject *b)
{
    slice s = {(const uint8_t *)PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b)};
    return s;
}

static inline int
slice_eq(slice a, slice b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, (size_t)a.n) == 0);
}

/* whether every byte of s is below 0x80 (8 at a time; from 8 bytes on, the last word read
 * where it ends, overlapping the one before it) */
static inline int
is_ascii(slice s)
{
    uint64_t acc = 0, w;
    Py_ssize_t i = 0;
    if (s.n >= 8) {
        for (; i + 8 <= s.n; i += 8) {
            memcpy(&w, s.p + i, 8);
            acc |= w;
        }
        memcpy(&w, s.p + s.n - 8, 8);
        acc |= w;
    }
    else
        for (; i < s.n; i++)
            acc |= s.p[i];
    return (acc & 0x8080808080808080ULL) == 0;
}

/* slice_eq for a key and a configured key of the same length: 8 bytes at a time (from 8
 * bytes on, the last word read where they end), memcmp below */
static inline int
key_eq(slice a, slice b)
{
    Py_ssize_t n = a.n;
    if (n != b.n)
        return 0;
    if (n < 8)
        return n == 0 || memcmp(a.p, b.p, (size_t)n) == 0;
    uint64_t x, y;
    for (Py_ssize_t i = 0; i + 8 <= n; i += 8) {
        memcpy(&x, a.p + i, 8);
        memcpy(&y, b.p + i, 8);
        if (x != y)
            return 0;
    }
    memcpy(&x, a.p + n - 8, 8);
    memcpy(&y, b.p + n - 8, 8);
    return x == y;
}

/* the attributes (last duplicate wins), name, status and event count of a span whose
 * top-level fields were already checked: 0, or 1 when the Python path must decide */
static int
scan_span(slice span, const facts_cfg *cfg, span_facts *sf)
{
    memset(sf->has, 0, sizeof(sf->has));
    sf->name.p = sf->status.p = NULL;
    sf->name.n = sf->status.n = sf->events = 0;
    const uint8_t *p = span.p, *end = span.p + span.n;
    while (p < end) {
        uint32_t f;
        int wt;
        slice s;
        unsigned tag;
        if (quick_field(&p, end, &tag, &s)) {
            if ((tag & 7) != 2)
                continue;
            f = tag >> 3;
        }
        else if (next_field(&p, end, &f, &wt, &s) < 0)
            goto undecided;
        else if (wt != 2)
            continue;
        if (f == 5)
            sf->name = s;
        else if (f == 15)
            sf->status = s;
        else if (f == 11)
            sf->events++;
        else if (f == 9) {
            slice key = {s.p, 0}, value = {s.p, 0};
            const uint8_t *q = s.p, *qend = s.p + s.n;
            /* the usual KeyValue: the key then the value, one-byte tags and lengths, nothing
             * else (what the loop below reads from it too) */
            if (s.n >= 4 && q[0] == 0x0A && q[1] < 0x80 && q[1] <= s.n - 4 &&
                q[2 + q[1]] == 0x12 && q[3 + q[1]] < 0x80 && 4 + q[1] + q[3 + q[1]] == s.n) {
                key.p = q + 2;
                key.n = q[1];
                value.p = q + 4 + q[1];
                value.n = q[3 + q[1]];
                q = qend;
            }
            while (q < qend) {
                uint32_t g;
                int w;
                slice v;
                if (next_field(&q, qend, &g, &w, &v) < 0)
                    goto undecided;
                if (w == 2 && g == 1)
                    key = v;
                else if (w == 2 && g == 2)
                    value = v;
            }
            if (!is_ascii(key))
                return 1; /* the Python path checks UTF-8 */
            unsigned cands = key.n < SHORT_KEY ? cfg->by_len[key.n] : cfg->long_keys;
            while (cands) {
                int k = __builtin_ctz(cands);
                cands &= cands - 1;
                if (key_eq(key, cfg->keys[k])) {
                    sf->val[k] = value;
                    sf->has[k] = 1;
                }
            }
        }
    }
    return 0;
undecided:
    PyErr_Clear();
    return 1;
}

/* plugins._spanview.value_str of an encoded AnyValue, as its UTF-8 bytes (invalid sequences
 * left for the caller to replace): 0, or 1 when it is not a short string */
static inline int
value_bytes(slice v, slice *out)
{
    if (v.n == 0) {
        out->p = v.p;
        out->n = 0;
        return 0;
    }
    if (v.n > 1 && v.p[0] == 0x0A && v.p[1] < 0x80) {
        Py_ssize_t n = v.p[1];
        if (n > v.n - 2)
            n = v.n - 2;
        out->p = v.p + 2;
        out->n = n;
        return 0;
    }
    return 1;
}

/* the value of key k as a str ("" when absent) in *out: 0, 1 (undecided) or -1 (error) */
static int
value_str(const span_facts *sf, int k, PyObject **out)
{
    slice b = {(const uint8_t *)"", 0};
    if (sf->has[k] && value_bytes(sf->val[k], &b))
        return 1;
    *out = PyUnicode_DecodeUTF8((const char *)b.p, b.n, "replace");
    return *out == NULL ? -1 : 0;
}

/* plugins._agentdialects.looks_like_run_id of a value's UTF-8 bytes (_runid.h) */
static inline int
looks_like_run_id(slice s)
{
    return runid_shaped(s.p, s.n);
}

/* the agent a span names (plugins.workflowprocessor.rules.agent_of): the first non-empty
 * value of K_AGENT, K_AGENT_ID not shaped like a per-run id, as a str ("" when none) in
 * *agent, and the first run-id-shaped one in *run (n 0: none): 0, 1 (undecided: a value that
 * is not a short string) or -1 (error) */
#define MEMO_SLOTS 8 /* (apply_memo's, below) */

/* the agents and workflow types interned by apply_memo (MEMO_SLOTS each, or NULL): what a
 * root reads again, from one root and request to the next */
typedef struct {
    PyObject *const *agents, *const *types;
} known_strs;

/* b decoded as UTF-8 ("replace"), or the str of slots (MEMO_SLOTS of them, or NULL) whose
 * ASCII b is: the str decoding gives, without decoding (a new reference) */
static PyObject *
decode_known(PyObject *const *slots, slice b)
{
    if (slots != NULL)
        for (int k = 0; k < MEMO_SLOTS; k++) {
            PyObject *x = slots[k];
            if (x != NULL && PyUnicode_IS_COMPACT_ASCII(x) && PyUnicode_GET_LENGTH(x) == b.n &&
                memcmp(PyUnicode_DATA(x), b.p, (size_t)b.n) == 0)
                return Py_NewRef(x);
        }
    return PyUnicode_DecodeUTF8((const char *)b.p, b.n, "replace");
}

static int
agent_of(const span_facts *sf, PyObject **agent, slice *run, PyObject *const *known)
{
    static const int keys[2] = {K_AGENT, K_AGENT_ID};
    run->p = (const uint8_t *)"";
    run->n = 0;
    slice b = {(const uint8_t *)"", 0};
    for (int i = 0; i < 2; i++) {
        int k = keys[i];
        slice v;
        if (!sf->has[k])
            continue;
        if (value_bytes(sf->val[k], &v))
            return 1;
        if (v.n == 0)
            continue;
        if (looks_like_run_id(v)) {
            if (run->n == 0)
                *run = v;
            continue;
        }
        b = v;
        break;
    }
    *agent = decode_known(known, b);
    return *agent == NULL ? -1 : 0;
}

/* looks_like_run_id(value: bytes) -> bool: the C test, for the twin tests */
static PyObject *
tw_looks_like_run_id(PyObject *self, PyObject *arg)
{
    Py_buffer b;
    if (!PyArg_Parse(arg, "y*:looks_like_run_id", &b))
        return NULL;
    int r = looks_like_run_id((slice){b.buf, b.len});
    PyBuffer_Release(&b);
    return PyBool_FromLong(r);
}

static int
push_index(PyObject **list, Py_ssize_t index)
{
    if (*list == NULL && (*list = PyList_New(0)) == NULL)
        return -1;
    return append_new(*list, PyLong_FromSsize_t(index));
}

/* Whether a span's Status says ERROR (code 2), or cannot be read here: only those tool calls
 * are handed to the Python classifier (which decodes the span and checks the code itself), so
 * the usual OK / UNSET statuses cost no call. */
/* the code and message of an encoded Status (the last of each, as protobuf reads them); -1
 * with the error cleared when it cannot be read */
static int
read_status(slice status, int32_t *code, slice *message)
{
    const uint8_t *p = status.p, *end = p + status.n;
    *code = 0;
    message->p = (const uint8_t *)"";
    message->n = 0;
    while (p < end) {
        uint32_t f;
        int wt;
        if (read_tag(&p, end, &f, &wt) < 0)
            goto unreadable;
        if (f == 2 && wt == 2) {
            if (read_len(&p, end, message) < 0)
                goto unreadable;
        }
        else if (f == 3 && wt == 0) {
            uint64_t v;
            if (read_varint(&p, end, &v) < 0)
                goto unreadable;
            *code = (int32_t)(uint32_t)v;
        }
        else if (skip_fast(&p, end, f, wt) < 0)
            goto unreadable;
    }
    return 0;
unreadable:
    PyErr_Clear();
    return -1;
}

static int
status_may_fail(slice status)
{
    int32_t code;
    slice message;
    return read_status(status, &code, &message) < 0 || code == 2;
}

/* the tuple Py_BuildValue("(nOOOOOOOiOi)", ...) builds from these, without its format */
static PyObject *
facts_tuple(Py_ssize_t index, PyObject *agent, PyObject *workflow, PyObject *wf_id,
            PyObject *wf_type, PyObject *given, PyObject *error, PyObject *exception, int code,
            PyObject *message, int present)
{
    PyObject *items[11] = {PyLong_FromSsize_t(index), Py_NewRef(agent), Py_NewRef(workflow),
                           Py_NewRef(wf_id), Py_NewRef(wf_type), Py_NewRef(given),
                           Py_NewRef(error), Py_NewRef(exception), PyLong_FromLong(code),
                           Py_NewRef(message), PyLong_FromLong(present)};
    PyObject *out = PyTuple_New(11);
    for (int i = 0; i < 11; i++) {
        if (out != NULL && items[i] != NULL)
            PyTuple_SET_ITEM(out, i, items[i]);
        else {
            Py_XDECREF(items[i]);
            Py_CLEAR(out);
        }
    }
    return out;
}

/* a workflow's type (plugins._agentconv.workflow_type_of): the first non-empty
 * value of K_WF_TYPE, K_WF_NAME not shaped like a per-run id, else the span name less the
 * prefix (skip: its length) if that is neither empty nor run-id-shaped, else "unknown"; as a
 * str in *out: 0, 1 (undecided: a value that is not a short string) or -1 (error) */
static int
workflow_type_of(const span_facts *sf, slice name, Py_ssize_t skip, PyObject **out,
                 PyObject *const *known)
{
    static const int keys[2] = {K_WF_TYPE, K_WF_NAME};
    for (int i = 0; i < 2; i++) {
        int k = keys[i];
        slice v;
        if (!sf->has[k])
            continue;
        if (value_bytes(sf->val[k], &v))
            return 1;
        if (v.n == 0 || looks_like_run_id(v))
            continue;
        *out = decode_known(known, v);
        return *out == NULL ? -1 : 0;
    }
    slice rest = {name.p + skip, name.n - skip};
    if (rest.n && !looks_like_run_id(rest))
        *out = decode_known(known, rest);
    else
        *out = PyUnicode_FromString("unknown");
    return *out == NULL ? -1 : 0;
}

/* (index, agent, workflow, wf_id, wf_type, given outcome, error_text, exception, status code,
 * status message, stamp keys present as a bit mask) */
static int
root_facts(entry *t, const span_facts *sf, const facts_cfg *cfg, Py_ssize_t index,
           PyObject **agent_out, PyObject **out, const known_strs *known)
{
    PyObject *agent = NULL, *wf_id = NULL, *wf_type = NULL, *given = NULL, *error = NULL;
    PyObject *message = NULL, *exception = NULL;
    slice run;
    int rc = agent_of(sf, &agent, &run, known->agents);
    if (rc)
        return rc;
    slice name = sf->name;
    int prefixed = name.n >= cfg->prefix.n &&
                   memcmp(name.p, cfg->prefix.p, (size_t)cfg->prefix.n) == 0;
    if (!(prefixed || sf->has[K_WF_NAME] || sf->has[K_WF_ID])) {
        *out = facts_tuple(index, agent, Py_False, Py_None, Py_None, Py_None, Py_None, Py_None,
                           0, Py_None, 0);
        *agent_out = agent;
        return *out == NULL ? -1 : 0;
    }
    int32_t code = 0;
    slice msg = {NULL, 0};
    if (sf->status.n) {
        const uint8_t *p = sf->status.p, *end = p + sf->status.n;
        while (p < end) {
            uint32_t f;
            int wt;
            if (read_tag(&p, end, &f, &wt) < 0)
                goto undecided;
            if (f == 2 && wt == 2) {
                if (read_len(&p, end, &msg) < 0)
                    goto undecided;
            }
            else if (f == 3 && wt == 0) {
                uint64_t v;
                if (read_varint(&p, end, &v) < 0)
                    goto undecided;
                code = (int32_t)(uint32_t)v;
            }
            else if (skip_fast(&p, end, f, wt) < 0)
                goto undecided;
        }
    }
    message = PyUnicode_DecodeUTF8((const char *)msg.p, msg.n, NULL);
    if (message == NULL)
        goto undecided; /* the Python path rejects it */
    if ((rc = value_str(sf, K_ERR, &error)) != 0)
        goto fail;
    if ((code == 2 || PyUnicode_GET_LENGTH(error)) && sf->events) {
        rc = 1; /* the exception events are read by the Python path */
        goto fail;
    }
    if ((rc = value_str(sf, K_WF_OUTCOME, &given)) != 0)
        goto fail;
    if ((rc = workflow_type_of(sf, name, prefixed ? cfg->prefix.n : 0, &wf_type, known->types)) != 0)
        goto fail;
    if ((rc = value_str(sf, K_WF_ID, &wf_id)) != 0)
        goto fail;
    if (PyUnicode_GET_LENGTH(wf_id) == 0 && run.n) {
        Py_CLEAR(wf_id); /* a per-run id where the agent's name was expected (ASCII) */
        if ((wf_id = PyUnicode_DecodeASCII((const char *)run.p, run.n, NULL)) == NULL) {
            rc = -1;
            goto fail;
        }
    }
    if (PyUnicode_GET_LENGTH(wf_id) == 0) {
        Py_CLEAR(wf_id);
        if ((wf_id = PyObject_CallMethod(t->trace_id, "hex", NULL)) == NULL) {
            rc = -1;
            goto fail;
        }
    }
    exception = PyUnicode_FromStringAndSize(NULL, 0);
    int present = 0;
    for (int k = 0; k < 5; k++)
        if (sf->has[K_STAMP0 + k])
            present |= 1 << k;
    *out = exception == NULL ? NULL
                             : facts_tuple(index, agent, Py_True, wf_id, wf_type, given, error,
                                           exception, (int)code, message, present);
    rc = *out == NULL ? -1 : 0;
    if (rc == 0) {
        *agent_out = agent;
        agent = NULL;
    }
    goto fail;
undecided:
    PyErr_Clear();
    rc = 1;
fail:
    Py_XDECREF(agent);
    Py_XDECREF(wf_id);
    Py_XDECREF(wf_type);
    Py_XDECREF(given);
    Py_XDECREF(error);
    Py_XDECREF(message);
    Py_XDECREF(exception);
    return rc;
}

/* what a span naming its agent holds: the markers of the agent's name and id keys (id.n 0:
 * none, the plain modes), and their common part (n 0: none worth a search) */
typedef struct {
    needle name, id, common;
} agent_needles;

static void common_needle(needle *out, slice a, slice b);

static void
agent_needles_init(agent_needles *a, slice name, slice id)
{
    needle_init(&a->name, name.p, name.n);
    needle_init(&a->id, id.p, id.n);
    if (id.n)
        common_needle(&a->common, name, id);
    else
        needle_init(&a->common, id.p, 0);
}

/* whether span holds the marker of the agent's name or id: a span without their common part
 * holds neither (one search for most spans, as with the name alone) */
static inline int
has_agent_marker(slice span, const agent_needles *a)
{
    if (a->id.n == 0)
        return needle_in(&a->name, span);
    if (a->common.n && !needle_in(&a->common, span))
        return 0;
    return needle_in(&a->name, span) || needle_in(&a->id, span);
}

/* the facts of one special span of entry t: 0, 1 (the entry falls back) or -1 (error) */
static int
span_facts_of(entry *t, slice span, int flags, Py_ssize_t index, const facts_cfg *cfg,
              const agent_needles *agent_marker, const known_strs *known)
{
    int agent_open = !t->agent_set && (t->agent == NULL || PyUnicode_GET_LENGTH(t->agent) == 0);
    if (!(flags & (F_TOOL | F_ROOT)) && !agent_open)
        return 0; /* the agent is known: the Python path would not look at this span */
    span_facts sf;
    if (scan_span(span, cfg, &sf))
        return 1;
    if (flags & F_TOOL) {
        slice b;
        int tool = 0;
        if (sf.has[K_OP]) {
            if (value_bytes(sf.val[K_OP], &b))
                return 1;
            tool = slice_eq(b, cfg->tool_value);
        }
        if (!tool && sf.has[K_MCP]) {
            if (value_bytes(sf.val[K_MCP], &b))
                return 1;
            tool = slice_eq(b, cfg->mcp_value);
        }
        if (tool) {
            t->tools++;
            if (!sf.has[K_ERR] && sf.status.n && status_may_fail(sf.status)) {
                if (flags & F_ROOT)
                    return 1; /* its error.type would change the root's facts */
                if (push_index(&t->errs, index) < 0)
                    return -1;
            }
        }
    }
    if (flags & F_ROOT) {
        PyObject *facts = NULL, *agent = NULL;
        int rc = root_facts(t, &sf, cfg, index, &agent, &facts, known);
        if (rc)
            return rc;
        /* a root that is a workflow stays the trace's root: another parentless span of the
         * trace (a process that did not propagate the context) does not replace it */
        if (t->root == NULL || PyTuple_GET_ITEM(t->root, 2) != Py_True)
            Py_XSETREF(t->root, facts);
        else
            Py_DECREF(facts);
        if (PyUnicode_GET_LENGTH(agent)) {
            Py_XSETREF(t->agent, agent);
            t->agent_set = 1;
        }
        else
            Py_DECREF(agent);
    }
    else if (agent_open && (sf.has[K_AGENT] || sf.has[K_AGENT_ID]) &&
             ((flags & F_AGENT) || ((flags & F_TOOL) && has_agent_marker(span, agent_marker)))) {
        PyObject *agent;
        slice run;
        int rc = agent_of(&sf, &agent, &run, known->agents);
        if (rc)
            return rc;
        Py_XSETREF(t->agent, agent);
    }
    return 0;
}

/* the longest run of bytes that both a and b contain (the first found), as a needle over
 * a's bytes; n 0 when it is shorter than 4 bytes (not worth a search) */
static void
common_needle(needle *out, slice a, slice b)
{
    Py_ssize_t best = 0, at = 0;
    for (Py_ssize_t i = 0; i < a.n; i++)
        for (Py_ssize_t j = 0; j < b.n; j++) {
            Py_ssize_t k = 0;
            while (i + k < a.n && j + k < b.n && a.p[i + k] == b.p[j + k])
                k++;
            if (k > best) {
                best = k;
                at = i;
            }
        }
    if (best < 4)
        best = 0;
    needle_init(out, a.p + at, best);
}

/* The common part of the tool markers looked for once along a ScopeSpans' spans, not once in
 * each span: at is the first occurrence at or after the last span asked about (NULL: not
 * looked for yet; end: none), end the end of the spans' bytes. The spans asked about are
 * slices of [.., end) in increasing order: the first occurrence at or after a span's start
 * is in the span when it ends inside it (any other starts later, so ends later). */
typedef struct {
    const uint8_t *at, *end;
} marker_cursor;

static inline int
cursor_in(marker_cursor *c, const needle *nd, slice span)
{
    if (c->at == NULL || c->at < span.p) {
        Py_ssize_t off = needle_at(nd, (slice){span.p, c->end - span.p});
        c->at = off < 0 ? c->end : span.p + off;
    }
    return c->at != c->end && c->at + nd->n <= span.p + span.n;
}

/* whether span contains tool_a or tool_b: a span without their common part (tools, n > 0)
 * contains neither (one search instead of two for most spans) */
static inline int
has_tool_marker(slice span, const needle *tool_a, const needle *tool_b, const needle *tools,
                marker_cursor *cursor)
{
    if (tools != NULL && tools->n && !cursor_in(cursor, tools, span))
        return 0;
    return needle_in(tool_a, span) || needle_in(tool_b, span);
}

/* the trace, span and parent span ids of a span (the last of each wins) as its top-level
 * fields are walked: 0, or -1 when malformed */
static inline int
span_ids(slice span, slice *tid, slice *sid, slice *parent)
{
    const uint8_t *p = span.p, *end = span.p + span.n;
    while (p < end) {
        unsigned tag;
        uint32_t f;
        int w;
        slice s;
        if (quick_field(&p, end, &tag, &s)) {
            if (tag > 0x22) /* past the ids (4: parent_span_id, length-delimited) */
                continue;
            f = tag >> 3;
            w = (int)(tag & 7);
        }
        else if (next_field(&p, end, &f, &w, &s) < 0)
            return -1;
        if (w == 2) {
            if (f == 1)
                *tid = s;
            else if (f == 2)
                *sid = s;
            else if (f == 4)
                *parent = s;
        }
    }
    return 0;
}

static int
ingest_span(entries *e, Py_ssize_t *last, slice span, Py_ssize_t group, const needle *tool_a,
            const needle *tool_b, const agent_needles *agent, const facts_cfg *cfg,
            const needle *tools, marker_cursor *cursor, const known_strs *known)
{
    slice tid = {span.p, 0}, sid = {span.p, 0}, parent = {span.p, 0};
    if (span_ids(span, &tid, &sid, &parent) < 0)
        return -1;
    entry *t = *last >= 0 ? &e->items[*last] : NULL;
    if (t == NULL || !same_tid(t->tid, tid)) {
        Py_ssize_t at = entry_for(e, tid);
        if (at < 0)
            return -1;
        *last = at;
        t = &e->items[at];
    }
    int flags = 0;
    if (parent.n == 0) {
        flags |= F_ROOT;
        t->roots++;
    }
    /* with facts, the flags only pick the spans span_facts_of reads: no search for what it
     * would not look at (an entry falling back, the agent once the entry knows it) */
    int want = cfg == NULL || !t->fallback;
    if (want && has_tool_marker(span, tool_a, tool_b, tools, cursor))
        flags |= F_TOOL;
    if (cfg != NULL)
        want = want && !t->agent_set &&
               (t->agent == NULL || PyUnicode_GET_LENGTH(t->agent) == 0);
    /* with facts, a tool call's agent marker is looked for by span_facts_of, and only when
     * the span has the agent key (F_AGENT matters nowhere else) */
    if (want && !(flags & F_ROOT) && (cfg == NULL || !(flags & F_TOOL)) &&
        has_agent_marker(span, agent))
        flags |= F_AGENT;
    if (cfg != NULL) {
        if (flags && !t->fallback) {
            int rc = span_facts_of(t, span, flags, t->len, cfg, agent, known);
            if (rc < 0)
                return -1;
            if (rc)
                t->fallback = 1;
        }
    }
    else if (flags) {
        if (t->specials == NULL && (t->specials = PyList_New(0)) == NULL)
            return -1;
        if (append_new(t->specials, Py_BuildValue("(ni)", t->len, flags)) < 0)
            return -1;
    }
    if (entry_push(t, span, sid, parent, group) < 0)
        return -1;
    t->nbytes += span.n;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* LateMemory: the late-span memory of the C store (trace id -> stamp or None, at most `size`
 * entries, the least recently remembered dropped first), as the Python store's OrderedDict
 * trimmed after each release: the recency memory of _recency.h (a hash table over a recency
 * list, shared with _agentscan) in a Python type. release writes
 * it directly; Python reads it as a mapping (in, [], get, items in order, len) and moves a
 * late span's trace to the end (move_to_end). Keys are bytes; values are not cyclic (stamps,
 * None): not tracked by the cyclic GC. */

typedef struct {
    PyObject_HEAD
    rc_memory mem; /* (_recency.h) */
} LateMemoryObject;

static PyTypeObject LateMemoryType;

/* the key equality of the memory: exact bytes (the hashes already equal) */
static int
late_eq(PyObject *a, PyObject *b)
{
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    return PyBytes_GET_SIZE(a) == n &&
           memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), (size_t)n) == 0;
}

/* m[key] = value (key exact bytes), as the newest entry; the oldest dropped beyond size:
 * 0 or -1 */
static int
late_set(LateMemoryObject *m, PyObject *key, PyObject *value)
{
    Py_hash_t hash = PyObject_Hash(key);
    if (hash == -1)
        return -1;
    return rc_put(&m->mem, key, hash, value, late_eq);
}

/* the node of key, or -1 (not there, not bytes, or an error: -2) */
static Py_ssize_t
late_node_of(LateMemoryObject *m, PyObject *key)
{
    if (!PyBytes_Check(key))
        return -1;
    Py_hash_t hash = PyObject_Hash(key);
    if (hash == -1)
        return -2;
    return rc_node_of(&m->mem, key, hash, late_eq);
}

static PyObject *
late_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"size", NULL};
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "n:LateMemory", kw, &size))
        return NULL;
    LateMemoryObject *m = (LateMemoryObject *)type->tp_alloc(type, 0);
    if (m == NULL)
        return NULL;
    if (rc_init(&m->mem, size) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return (PyObject *)m;
}

static void
late_dealloc(LateMemoryObject *m)
{
    rc_free(&m->mem);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static Py_ssize_t
late_len(LateMemoryObject *m)
{
    return m->mem.len;
}

static int
late_contains(LateMemoryObject *m, PyObject *key)
{
    Py_ssize_t x = late_node_of(m, key);
    return x == -2 ? -1 : x >= 0;
}

static PyObject *
late_getitem(LateMemoryObject *m, PyObject *key)
{
    Py_ssize_t x = late_node_of(m, key);
    if (x == -2)
        return NULL;
    if (x < 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return Py_NewRef(m->mem.nodes[x].value);
}

static PyObject *
late_get(LateMemoryObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(key, default=None)");
        return NULL;
    }
    Py_ssize_t x = late_node_of(m, args[0]);
    if (x == -2)
        return NULL;
    if (x < 0)
        return Py_NewRef(nargs == 2 ? args[1] : Py_None);
    return Py_NewRef(m->mem.nodes[x].value);
}

static PyObject *
late_move_to_end(LateMemoryObject *m, PyObject *key)
{
    Py_ssize_t x = late_node_of(m, key);
    if (x == -2)
        return NULL;
    if (x < 0) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    rc_move_to_end(&m->mem, x);
    Py_RETURN_NONE;
}

/* the entries, oldest first, as a list of (key, value) */
static PyObject *
late_items(LateMemoryObject *m, PyObject *unused)
{
    return rc_items(&m->mem);
}

static PyObject *
late_iter(LateMemoryObject *m)
{
    return rc_iter(&m->mem);
}

static PyObject *
late_sizeof(LateMemoryObject *m, PyObject *unused)
{
    size_t size = (size_t)Py_TYPE(m)->tp_basicsize + rc_allocated(&m->mem);
    return PyLong_FromSize_t(size);
}

static PyMethodDef late_methods[] = {
    {"get", (PyCFunction)(void (*)(void))late_get, METH_FASTCALL,
     "get(key, default=None): the value remembered for key"},
    {"move_to_end", (PyCFunction)late_move_to_end, METH_O,
     "move_to_end(key): key becomes the most recently remembered (KeyError if absent)"},
    {"items", (PyCFunction)late_items, METH_NOARGS, "the (key, value) pairs, oldest first"},
    {"__sizeof__", (PyCFunction)late_sizeof, METH_NOARGS, "bytes allocated"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef late_members[] = {
    {"size", T_PYSSIZET, offsetof(LateMemoryObject, mem.size), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods late_as_sequence = {
    .sq_contains = (objobjproc)late_contains,
};

static PyMappingMethods late_as_mapping = {
    .mp_length = (lenfunc)late_len,
    .mp_subscript = (binaryfunc)late_getitem,
};

static PyTypeObject LateMemoryType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "plugins._native._tracewire.LateMemory",
    .tp_basicsize = sizeof(LateMemoryObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "LateMemory(size): the late-span memory (trace id -> stamp or None), at most "
              "size entries, the least recently remembered dropped first.",
    .tp_new = late_new,
    .tp_dealloc = (destructor)late_dealloc,
    .tp_methods = late_methods,
    .tp_members = late_members,
    .tp_as_sequence = &late_as_sequence,
    .tp_as_mapping = &late_as_mapping,
    .tp_iter = (getiterfunc)late_iter,
};

/* ---------------------------------------------------------------------------------------- */
/* Trace: the state of one held trace (the attributes of the Python path's _Trace, as plain
 * members), filled by ingest in apply mode and read by release without attribute lookups.
 *
 * Its spans are not Python objects: what one ingest adds to a trace is one chunk, a single
 * allocation of the exact size holding a record per span and then the spans' encodings back
 * to back. A record holds where its span is in the chunk, its group (an index in the trace's
 * table of distinct groups) and its span and parent ids (up to 8 bytes in the record itself;
 * a longer one is where it is in the span's encoding, or copied after the span). A chunk is
 * neither moved nor freed while its trace lives: release can point at the spans while Python
 * callbacks run. */

#define LONG_ID 0xFFFF
#define GROUP_SCAN 32 /* distinct groups looked through before a group is added again */

typedef struct {
    uint32_t off, len;           /* the span: data[off, off + len) of its chunk */
    uint64_t id, parent;         /* up to 8 bytes in place; longer: offset | length << 32 */
    uint32_t group;              /* index in the trace's groups */
    uint16_t id_len, parent_len; /* 0 to 8, or LONG_ID */
} rec;

typedef struct {
    Py_ssize_t n, size; /* records; bytes allocated for the chunk */
    rec recs[];         /* then the data */
} chunk;

static inline const uint8_t *
chunk_data(const chunk *c)
{
    return (const uint8_t *)(c->recs + c->n);
}

static inline slice
rec_span(const chunk *c, const rec *r)
{
    slice s = {chunk_data(c) + r->off, (Py_ssize_t)r->len};
    return s;
}

static inline slice
rec_id(const chunk *c, const uint64_t *v, uint16_t len)
{
    slice s;
    if (len == LONG_ID) {
        s.p = chunk_data(c) + (uint32_t)*v;
        s.n = (Py_ssize_t)(*v >> 32);
    }
    else {
        s.p = (const uint8_t *)v;
        s.n = len;
    }
    return s;
}

typedef struct {
    PyObject_HEAD
    double last_seen, queued_at, queued_first;
    chunk **chunks;               /* the spans (chunks[0] is chunk0 until a second one) */
    Py_ssize_t nchunks, chunks_cap, count;
    PyObject **groups;            /* distinct groups, references (group0 until a second) */
    Py_ssize_t ngroups, groups_cap;
    chunk *chunk0;
    PyObject *group0;
    PyObject *root_present;       /* tuple of the stamp keys the root has */
    PyObject *root;     /* None or (workflow, workflow_id, workflow_type, outcome, present) */
    PyObject *agent_id; /* str */
    PyObject *root_extra; /* bytes appended to the span at root_index after its stamp (the
                           * execution's workflow.duration when it is below the root) */
    Py_ssize_t nbytes, root_index, tool_calls;
    Py_ssize_t roots;       /* parentless spans */
    PyObject *others;       /* tuple of int, ascending: the parentless spans that are not the
                             * trace's root (set at release, in a workflow with several) */
    PyObject *others_extra; /* bytes appended to each of them after its stamp */
} TraceObject;

static PyTypeObject TraceType;

/* room for one more pointer in an array whose first one is kept in the object (*inline) */
static int
grow_slots(void **arr, Py_ssize_t *cap, Py_ssize_t len, void *inline_slot)
{
    if (len < *cap)
        return 0;
    Py_ssize_t ncap = *cap < 4 ? 4 : *cap * 2;
    void *fresh;
    if (*arr == inline_slot) {
        fresh = PyMem_Malloc((size_t)ncap * sizeof(void *));
        if (fresh != NULL)
            memcpy(fresh, inline_slot, (size_t)len * sizeof(void *));
    }
    else
        fresh = PyMem_Realloc(*arr, (size_t)ncap * sizeof(void *));
    if (fresh == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *arr = fresh;
    *cap = ncap;
    return 0;
}

/* the index of group g in the trace's groups (looked for among the last GROUP_SCAN, by
 * identity: groups are interned; an equal group found twice only costs a table slot, as
 * assembly merges equal groups); -1 on error */
static Py_ssize_t
trace_group(TraceObject *t, PyObject *g)
{
    Py_ssize_t stop = t->ngroups > GROUP_SCAN ? t->ngroups - GROUP_SCAN : 0;
    for (Py_ssize_t i = t->ngroups - 1; i >= stop; i--)
        if (t->groups[i] == g)
            return i;
    if (t->ngroups >= (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "too many groups in one trace");
        return -1;
    }
    void *arr = t->groups;
    if (grow_slots(&arr, &t->groups_cap, t->ngroups, &t->group0) < 0)
        return -1;
    t->groups = arr;
    t->groups[t->ngroups] = Py_NewRef(g);
    return t->ngroups++;
}

/* where an id longer than 8 bytes is in the bytes s of its span p (p's encoding or, classified,
 * its new bytes): its offset, or -1 (then it is copied into the chunk). Ingested ids are read
 * from their span's encoding; those given to add() are looked for. */
static Py_ssize_t
long_id_at(slice id, const pend *p, slice s)
{
    Py_ssize_t off;
    if (id.p >= p->span.p && id.p + id.n <= p->span.p + p->span.n)
        off = id.p - p->span.p;
    else {
        if (s.n < id.n)
            return -1;
        const uint8_t *q = s.p, *last = s.p + (s.n - id.n);
        for (;;) {
            q = memchr(q, id.p[0], (size_t)(last - q + 1));
            if (q == NULL)
                return -1;
            if (memcmp(q, id.p, (size_t)id.n) == 0)
                break;
            if (q++ == last)
                return -1;
        }
        off = q - s.p;
    }
    if (off + id.n > s.n || memcmp(s.p + off, id.p, (size_t)id.n) != 0)
        return -1;
    return off;
}

/* an id into a record: up to 8 bytes in place, else where it is in the chunk (in its span at
 * span_off, or copied to data + *off) */
static inline void
put_id(uint64_t *v, uint16_t *len, slice id, Py_ssize_t in_span, uint32_t span_off,
       uint8_t *data, uint32_t *off)
{
    if (id.n <= 8) {
        *v = 0;
        if (id.n == 8) /* (the usual span id: one load, not a call of memcpy) */
            memcpy(v, id.p, 8);
        else if (id.n)
            memcpy(v, id.p, (size_t)id.n);
        *len = (uint16_t)id.n;
        return;
    }
    uint32_t at;
    if (in_span >= 0)
        at = span_off + (uint32_t)in_span;
    else {
        memcpy(data + *off, id.p, (size_t)id.n);
        at = *off;
        *off += (uint32_t)id.n;
    }
    *v = at | (uint64_t)id.n << 32;
    *len = LONG_ID;
}

/* items[0..n) added to the trace as one chunk; groups: the list their group indices refer to
 * (its items are 4-tuples of bytes) */
static int
trace_add(TraceObject *t, const pend *items, Py_ssize_t n, PyObject *groups)
{
    if (n == 0)
        return 0;
    uint64_t data = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        slice s = pend_span(&items[i]);
        data += (uint64_t)s.n;
        if (items[i].id.n > 8 && long_id_at(items[i].id, &items[i], s) < 0)
            data += (uint64_t)items[i].id.n;
        if (items[i].parent.n > 8 && long_id_at(items[i].parent, &items[i], s) < 0)
            data += (uint64_t)items[i].parent.n;
    }
    if (data > UINT32_MAX || (uint64_t)n > (uint64_t)(PY_SSIZE_T_MAX / 2) / sizeof(rec)) {
        PyErr_SetString(PyExc_OverflowError, "the spans of a trace in one request exceed 4 GiB");
        return -1;
    }
    void *arr = t->chunks;
    if (grow_slots(&arr, &t->chunks_cap, t->nchunks, &t->chunk0) < 0)
        return -1;
    t->chunks = arr;
    size_t size = sizeof(chunk) + (size_t)n * sizeof(rec) + (size_t)data;
    chunk *c = PyMem_Malloc(size);
    if (c == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    c->n = n;
    c->size = (Py_ssize_t)size;
    uint8_t *d = (uint8_t *)(c->recs + n);
    uint32_t off = 0;
    PyObject *last_group = NULL;
    Py_ssize_t last_at = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        rec *r = &c->recs[i];
        slice s = pend_span(&items[i]);
        slice id = items[i].id, parent = items[i].parent;
        Py_ssize_t id_at = id.n > 8 ? long_id_at(id, &items[i], s) : -1;
        Py_ssize_t parent_at = parent.n > 8 ? long_id_at(parent, &items[i], s) : -1;
        uint32_t span_off = off;
        r->off = off;
        r->len = (uint32_t)s.n;
        if (s.n)
            memcpy(d + off, s.p, (size_t)s.n);
        off += (uint32_t)s.n;
        put_id(&r->id, &r->id_len, id, id_at, span_off, d, &off);
        put_id(&r->parent, &r->parent_len, parent, parent_at, span_off, d, &off);
        PyObject *g = PyList_GET_ITEM(groups, items[i].group);
        if (g != last_group) {
            if ((last_at = trace_group(t, g)) < 0) {
                PyMem_Free(c);
                return -1;
            }
            last_group = g;
        }
        r->group = (uint32_t)last_at;
    }
    t->chunks[t->nchunks++] = c;
    t->count += n;
    return 0;
}

static PyObject *
trace_create(PyTypeObject *type, double now, double queued_at, double queued_first,
             Py_ssize_t nbytes)
{
    TraceObject *t = (TraceObject *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->last_seen = now;
    t->queued_at = queued_at;
    t->queued_first = queued_first;
    t->nbytes = nbytes;
    t->root_index = -1;
    t->chunks = &t->chunk0;
    t->chunks_cap = 1;
    t->groups = &t->group0;
    t->groups_cap = 1;
    t->root_present = PyTuple_New(0);
    t->agent_id = PyUnicode_FromStringAndSize(NULL, 0);
    t->root = Py_NewRef(Py_None);
    t->root_extra = PyBytes_FromStringAndSize(NULL, 0);
    t->others = PyTuple_New(0);
    t->others_extra = PyBytes_FromStringAndSize(NULL, 0);
    if (!t->root_present || !t->agent_id || !t->root_extra || !t->others || !t->others_extra) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static PyObject *
trace_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"last_seen", "queued_at", "queued_first", "nbytes", NULL};
    double a, b, c;
    Py_ssize_t nbytes = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ddd|n", kw, &a, &b, &c, &nbytes))
        return NULL;
    return trace_create(type, a, b, c, nbytes);
}

static void
trace_dealloc(TraceObject *t)
{
    if (t->chunks != NULL) {
        for (Py_ssize_t i = 0; i < t->nchunks; i++)
            PyMem_Free(t->chunks[i]);
        if (t->chunks != &t->chunk0)
            PyMem_Free(t->chunks);
    }
    if (t->groups != NULL) {
        for (Py_ssize_t i = 0; i < t->ngroups; i++)
            Py_DECREF(t->groups[i]);
        if (t->groups != &t->group0)
            PyMem_Free(t->groups);
    }
    Py_CLEAR(t->root_present);
    Py_CLEAR(t->root);
    Py_CLEAR(t->agent_id);
    Py_CLEAR(t->root_extra);
    Py_CLEAR(t->others);
    Py_CLEAR(t->others_extra);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static int
check_group(PyObject *g)
{
    if (!PyTuple_CheckExact(g) || PyTuple_GET_SIZE(g) != 4)
        goto bad;
    for (int i = 0; i < 4; i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(g, i)))
            goto bad;
    return 0;
bad:
    PyErr_SetString(PyExc_TypeError, "a group is a tuple of 4 bytes");
    return -1;
}

/* add(spans, groups, ids, parents): spans appended (lists of the same length: bytes, groups
 * (4-tuples of bytes), bytes, bytes); nbytes is left to the caller */
static PyObject *
trace_add_py(TraceObject *t, PyObject *args)
{
    PyObject *spans, *groups, *ids, *parents;
    if (!PyArg_ParseTuple(args, "O!O!O!O!:add", &PyList_Type, &spans, &PyList_Type, &groups,
                          &PyList_Type, &ids, &PyList_Type, &parents))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(spans);
    if (PyList_GET_SIZE(groups) != n || PyList_GET_SIZE(ids) != n ||
        PyList_GET_SIZE(parents) != n) {
        PyErr_SetString(PyExc_ValueError, "add: the lists differ in length");
        return NULL;
    }
    if (n == 0)
        Py_RETURN_NONE;
    pend *items = PyMem_Malloc((size_t)n * sizeof(pend));
    if (items == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyList_GET_ITEM(spans, i), *id = PyList_GET_ITEM(ids, i);
        PyObject *parent = PyList_GET_ITEM(parents, i);
        if (!PyBytes_Check(s) || !PyBytes_Check(id) || !PyBytes_Check(parent)) {
            PyErr_SetString(PyExc_TypeError, "add: spans and ids are bytes");
            PyMem_Free(items);
            return NULL;
        }
        if (check_group(PyList_GET_ITEM(groups, i)) < 0) {
            PyMem_Free(items);
            return NULL;
        }
        items[i].span = slice_of_bytes(s);
        items[i].id = slice_of_bytes(id);
        items[i].parent = slice_of_bytes(parent);
        items[i].group = i;
        items[i].fresh = NULL;
    }
    int rc = trace_add(t, items, n, groups);
    PyMem_Free(items);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

enum { L_SPANS, L_GROUPS, L_IDS, L_PARENTS };

/* the spans, groups, ids or parents as a new list */
static PyObject *
trace_list(TraceObject *t, void *which)
{
    int w = (int)(intptr_t)which;
    PyObject *out = PyList_New(t->count);
    if (out == NULL)
        return NULL;
    Py_ssize_t k = 0;
    for (Py_ssize_t c = 0; c < t->nchunks; c++) {
        const chunk *ch = t->chunks[c];
        for (Py_ssize_t j = 0; j < ch->n; j++) {
            const rec *r = &ch->recs[j];
            PyObject *o;
            if (w == L_SPANS)
                o = bytes_of(rec_span(ch, r));
            else if (w == L_GROUPS)
                o = Py_NewRef(t->groups[r->group]);
            else if (w == L_IDS)
                o = bytes_of(rec_id(ch, &r->id, r->id_len));
            else
                o = bytes_of(rec_id(ch, &r->parent, r->parent_len));
            if (o == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            PyList_SET_ITEM(out, k++, o);
        }
    }
    return out;
}

static Py_ssize_t
trace_len(TraceObject *t)
{
    return t->count;
}

/* the bytes this trace really allocated (the object, its chunks and tables) */
static PyObject *
trace_sizeof(TraceObject *t, PyObject *unused)
{
    size_t size = (size_t)Py_TYPE(t)->tp_basicsize;
    for (Py_ssize_t c = 0; c < t->nchunks; c++)
        size += (size_t)t->chunks[c]->size;
    if (t->chunks != &t->chunk0)
        size += (size_t)t->chunks_cap * sizeof(chunk *);
    if (t->groups != &t->group0)
        size += (size_t)t->groups_cap * sizeof(PyObject *);
    return PyLong_FromSize_t(size);
}

static PyMemberDef trace_members[] = {
    {"last_seen", T_DOUBLE, offsetof(TraceObject, last_seen), 0, NULL},
    {"queued_at", T_DOUBLE, offsetof(TraceObject, queued_at), 0, NULL},
    {"queued_first", T_DOUBLE, offsetof(TraceObject, queued_first), 0, NULL},
    {"root_present", T_OBJECT_EX, offsetof(TraceObject, root_present), 0, NULL},
    {"root", T_OBJECT, offsetof(TraceObject, root), 0, NULL},
    {"agent_id", T_OBJECT_EX, offsetof(TraceObject, agent_id), 0, NULL},
    {"root_extra", T_OBJECT_EX, offsetof(TraceObject, root_extra), 0, NULL},
    {"nbytes", T_PYSSIZET, offsetof(TraceObject, nbytes), 0, NULL},
    {"root_index", T_PYSSIZET, offsetof(TraceObject, root_index), 0, NULL},
    {"tool_calls", T_PYSSIZET, offsetof(TraceObject, tool_calls), 0, NULL},
    {"roots", T_PYSSIZET, offsetof(TraceObject, roots), 0, NULL},
    {"others", T_OBJECT_EX, offsetof(TraceObject, others), 0, NULL},
    {"others_extra", T_OBJECT_EX, offsetof(TraceObject, others_extra), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef trace_getset[] = {
    {"spans", (getter)trace_list, NULL, "the encoded spans (a new list)", (void *)L_SPANS},
    {"groups", (getter)trace_list, NULL, "the group of each span (a new list)",
     (void *)L_GROUPS},
    {"ids", (getter)trace_list, NULL, "the span ids (a new list)", (void *)L_IDS},
    {"parents", (getter)trace_list, NULL, "the parent span ids (a new list)",
     (void *)L_PARENTS},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef trace_methods[] = {
    {"add", (PyCFunction)trace_add_py, METH_VARARGS,
     "add(spans, groups, ids, parents): spans appended (nbytes is the caller's)"},
    {"__sizeof__", (PyCFunction)trace_sizeof, METH_NOARGS,
     "bytes allocated: the object, its spans and tables"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods trace_as_sequence = {
    .sq_length = (lenfunc)trace_len,
};

static PyTypeObject TraceType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "plugins._native._tracewire.Trace",
    .tp_basicsize = sizeof(TraceObject),
    /* not tracked by the cyclic GC: it refers to bytes, str and tuples of them only (the
     * groups, root facts and agent), none of which can refer back to it; tracked, every held
     * trace would be traversed by each collection its allocations trigger */
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Trace(last_seen, queued_at, queued_first, nbytes=0): one held trace; len() is "
              "its span count.",
    .tp_new = trace_new,
    .tp_dealloc = (destructor)trace_dealloc,
    .tp_members = trace_members,
    .tp_getset = trace_getset,
    .tp_methods = trace_methods,
    .tp_as_sequence = &trace_as_sequence,
};

/* a Trace whose members have the types the C code relies on (Python code may assign any) */
static TraceObject *
trace_checked(PyObject *o)
{
    if (!PyObject_TypeCheck(o, &TraceType)) {
        PyErr_SetString(PyExc_TypeError, "a held trace is a Trace");
        return NULL;
    }
    TraceObject *t = (TraceObject *)o;
    if (!t->root_present || !PyTuple_Check(t->root_present) || !t->agent_id ||
        !PyUnicode_Check(t->agent_id) || !t->root_extra || !PyBytes_Check(t->root_extra) ||
        !t->others || !PyTuple_Check(t->others) || !t->others_extra ||
        !PyBytes_Check(t->others_extra) ||
        !(t->root == NULL || t->root == Py_None ||
          (PyTuple_Check(t->root) && PyTuple_GET_SIZE(t->root) == 5))) {
        PyErr_SetString(PyExc_TypeError, "a Trace member has the wrong type");
        return NULL;
    }
    return t;
}

/* an entry's spans, groups, ids and parents as new lists (out[0..4)): 0 or -1 */
static int
entry_lists(const entry *t, PyObject *groups, PyObject **out)
{
    for (int w = 0; w < 4; w++)
        if ((out[w] = PyList_New(t->len)) == NULL)
            goto fail;
    for (Py_ssize_t j = 0; j < t->len; j++) {
        const pend *p = &t->items[j];
        PyObject *span = p->fresh ? Py_NewRef(p->fresh) : bytes_of(p->span);
        PyObject *id = bytes_of(p->id), *parent = bytes_of(p->parent);
        PyList_SET_ITEM(out[L_GROUPS], j, Py_NewRef(PyList_GET_ITEM(groups, p->group)));
        if (span)
            PyList_SET_ITEM(out[L_SPANS], j, span);
        if (id)
            PyList_SET_ITEM(out[L_IDS], j, id);
        if (parent)
            PyList_SET_ITEM(out[L_PARENTS], j, parent);
        if (!span || !id || !parent)
            goto fail;
    }
    return 0;
fail:
    for (int w = 0; w < 4; w++)
        Py_CLEAR(out[w]);
    return -1;
}

/* the entry as the plain facts mode returns it (facts: the entry's own, or none) */
static PyObject *
entry_tuple(const entry *t, PyObject *groups, int facts)
{
    PyObject *l[4] = {NULL, NULL, NULL, NULL};
    if (entry_lists(t, groups, l) < 0)
        return NULL;
    if (!facts)
        return Py_BuildValue("(ONNNNnOnOOO)", t->trace_id, l[0], l[1], l[2], l[3], t->nbytes,
                             Py_None, (Py_ssize_t)-1, Py_None, Py_None, Py_None);
    return Py_BuildValue("(ONNNNnOnOOO)", t->trace_id, l[0], l[1], l[2], l[3], t->nbytes,
                         t->errs ? t->errs : Py_None, t->tools, t->root ? t->root : Py_None,
                         t->agent_set && t->agent ? t->agent : Py_None,
                         !t->agent_set && t->agent ? t->agent : Py_None);
}

/* the status message of span s when its error.type can only come from it: a span without
 * events whose one status has code ERROR; None otherwise (or when anything is unusual: the
 * Python classifier then reads the whole span) */
static PyObject *
plain_status_message(slice s)
{
    const uint8_t *p = s.p, *end = s.p + s.n;
    slice status = {NULL, 0}, message;
    int statuses = 0;
    int32_t code;
    while (p < end) {
        uint32_t f;
        int wt;
        if (read_tag(&p, end, &f, &wt) < 0)
            goto none;
        if (f == 11)
            goto none; /* events: an exception event may name the error */
        if (f == 15 && wt == 2) {
            if (read_len(&p, end, &status) < 0)
                goto none;
            statuses++;
        }
        else if (skip_fast(&p, end, f, wt) < 0)
            goto none;
    }
    if (statuses != 1 || read_status(status, &code, &message) < 0 || code != 2)
        goto none;
    return PyBytes_FromStringAndSize((const char *)message.p, message.n);
none:
    PyErr_Clear();
    Py_RETURN_NONE;
}

/* the failed tool calls lacking error.type of entry t given one by classify(span, message)
 * -> span, message the span's status message when nothing else can decide its error.type
 * (see plain_status_message; else None)
 * (returned as is when it did not fail): 0, 1 (the appended error.type names the agent: the
 * entry's special spans are left to the caller) or -1 (error) */
static int
classify_errs(entry *t, PyObject *classify, const agent_needles *agent)
{
    int rc = 0;
    Py_ssize_t n = PyList_GET_SIZE(t->errs);
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t i = PyLong_AsSsize_t(PyList_GET_ITEM(t->errs, k));
        if (i < 0 || i >= t->len) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_SystemError, "ingest: a bad error index");
            return -1;
        }
        pend *p = &t->items[i];
        PyObject *span = p->fresh ? Py_NewRef(p->fresh) : bytes_of(p->span);
        if (span == NULL)
            return -1;
        PyObject *message = plain_status_message(slice_of_bytes(span));
        if (message == NULL) {
            Py_DECREF(span);
            return -1;
        }
        PyObject *fresh = PyObject_CallFunctionObjArgs(classify, span, message, NULL);
        Py_DECREF(message);
        if (fresh == NULL || !PyBytes_Check(fresh)) {
            if (fresh != NULL)
                PyErr_SetString(PyExc_TypeError, "classify must return bytes");
            Py_XDECREF(fresh);
            Py_DECREF(span);
            return -1;
        }
        if (fresh != span) {
            t->nbytes += PyBytes_GET_SIZE(fresh) - PyBytes_GET_SIZE(span);
            if (has_agent_marker(slice_of_bytes(fresh), agent) &&
                !has_agent_marker(slice_of_bytes(span), agent))
                rc = 1; /* contrived */
            Py_XSETREF(p->fresh, fresh);
        }
        else
            Py_DECREF(fresh);
        Py_DECREF(span);
    }
    return rc;
}

/* ingest's apply mode: the entries applied to the held traces.
 * apply = (held, released, now, outcome, masks, not_workflow, span_overhead, chunk_overhead,
 *          trace_overhead, classify): a trace is counted trace_overhead, and what a request
 * adds to it the spans' lengths, span_overhead per span and chunk_overhead.
 * Returns None (a trace of the request was released: the caller takes the Python path, nothing
 * was changed) or (leftovers, added_bytes, added_spans): leftovers the entries (in the format
 * of the plain facts mode, their failed tool calls already classified: errs None, tools -1)
 * whose special spans the caller reads, their traces already created / touched (last_seen)
 * but their spans not added. */
#define MAX_EXEC_MARKERS 32

/* the execution markers of ingest (spans that may be an agent run or a workflow) */
typedef struct {
    needle items[MAX_EXEC_MARKERS];
    Py_ssize_t n;
} exec_markers;

static inline int
is_workflow_facts(PyObject *facts)
{
    return facts != NULL && PyTuple_Check(facts) && PyTuple_GET_SIZE(facts) == 5 &&
           PyTuple_GET_ITEM(facts, 0) == Py_True;
}

/* the spans of an applied entry holding an execution marker, appended to cands as
 * (trace_id, index in the trace): only while the trace's root is not a workflow (a root
 * workflow is the outermost execution: nothing below it is looked at) */
static int
entry_execs(entry *t, TraceObject *tr, const exec_markers *ex, PyObject *cands)
{
    if (ex == NULL || ex->n == 0 || is_workflow_facts(tr->root))
        return 0;
    for (Py_ssize_t k = 0; k < t->len; k++) {
        slice span = pend_span(&t->items[k]);
        for (Py_ssize_t m = 0; m < ex->n; m++) {
            if (needle_in(&ex->items[m], span)) {
                if (append_new(cands, Py_BuildValue("(On)", t->trace_id, tr->count + k)) < 0)
                    return -1;
                break;
            }
        }
    }
    return 0;
}

/* What apply_entries remembers from one root to the next (and, kept by an IngestConfig,
 * from one request to the next), a few of each, replaced in turn: calls of `outcome` (a pure
 * function: the same arguments give an equal result, so equal arguments reuse it) and the
 * workflow types interned (an equal str interns to that same object while it is held here). */

typedef struct {
    PyObject *fn, *args[5], *result;
} outcome_call;

/* The storage of a request's entries kept for the next request (a 1-span request allocated
 * and freed three arrays: ~1,000 instructions of its ~6,000 in ingest), at most SPARE_MAX
 * items each: taken by ingest_run when it starts (NULL meanwhile: a nested call allocates its
 * own) and given back when it ends (the table zeroed). */
#define SPARE_MAX 64

typedef struct {
    outcome_call calls[MEMO_SLOTS];
    PyObject *types[MEMO_SLOTS];
    PyObject *agents[MEMO_SLOTS]; /* the agents interned, as the types */
    int next_call, next_type, next_agent;
    entry *spare_items;
    Py_ssize_t spare_cap;
    Py_ssize_t *spare_table;
    Py_ssize_t spare_tcap;
    pend *spare_pend;
    Py_ssize_t spare_pcap;
} apply_memo;

/* e's storage from m's spares (what m has) */
static void
entries_from_spares(entries *e, apply_memo *m)
{
    e->items = m->spare_items;
    e->cap = m->spare_cap;
    e->table = m->spare_table;
    e->tcap = m->spare_tcap;
    e->spare = m->spare_pend;
    e->spare_cap = m->spare_pcap;
    m->spare_items = NULL;
    m->spare_table = NULL;
    m->spare_pend = NULL;
    m->spare_cap = m->spare_tcap = m->spare_pcap = 0;
}

/* entries_clear, keeping small arrays in m's empty spares */
static void
entries_release(entries *e, apply_memo *m)
{
    if (m == NULL) {
        entries_clear(e);
        return;
    }
    for (Py_ssize_t i = 0; i < e->len; i++) {
        entry *t = &e->items[i];
        if (e->spare == NULL && t->items != NULL && t->cap <= SPARE_MAX) {
            for (Py_ssize_t j = 0; j < t->len; j++)
                Py_CLEAR(t->items[j].fresh);
            e->spare = t->items;
            e->spare_cap = t->cap;
            t->items = NULL;
            t->len = t->cap = 0;
        }
        entry_clear(t);
    }
    e->len = 0;
    if (m->spare_pend == NULL && e->spare != NULL) {
        m->spare_pend = e->spare;
        m->spare_pcap = e->spare_cap;
        e->spare = NULL;
    }
    if (m->spare_table == NULL && e->table != NULL && e->tcap <= 4 * SPARE_MAX) {
        memset(e->table, 0, (size_t)e->tcap * sizeof(Py_ssize_t));
        m->spare_table = e->table;
        m->spare_tcap = e->tcap;
        e->table = NULL;
    }
    if (m->spare_items == NULL && e->items != NULL && e->cap <= SPARE_MAX) {
        m->spare_items = e->items;
        m->spare_cap = e->cap;
        e->items = NULL;
    }
    entries_clear(e); /* what was not kept */
}

static void
apply_memo_clear(apply_memo *m)
{
    PyMem_Free(m->spare_items);
    PyMem_Free(m->spare_table);
    PyMem_Free(m->spare_pend);
    m->spare_items = NULL;
    m->spare_table = NULL;
    m->spare_pend = NULL;
    m->spare_cap = m->spare_tcap = m->spare_pcap = 0;
    for (int k = 0; k < MEMO_SLOTS; k++) {
        outcome_call *c = &m->calls[k];
        Py_CLEAR(c->fn);
        for (int i = 0; i < 5; i++)
            Py_CLEAR(c->args[i]);
        Py_CLEAR(c->result);
        Py_CLEAR(m->types[k]);
        Py_CLEAR(m->agents[k]);
    }
}

/* a and b are equal exact str or int (no error possible) */
static inline int
same_value(PyObject *a, PyObject *b)
{
    if (a == b)
        return 1;
    if (PyUnicode_CheckExact(a) && PyUnicode_CheckExact(b))
        return PyUnicode_GET_LENGTH(a) == PyUnicode_GET_LENGTH(b) &&
               PyUnicode_KIND(a) == PyUnicode_KIND(b) &&
               memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b),
                      (size_t)(PyUnicode_GET_LENGTH(a) * PyUnicode_KIND(a))) == 0;
    if (PyLong_CheckExact(a) && PyLong_CheckExact(b))
        return PyObject_RichCompareBool(a, b, Py_EQ) == 1;
    return 0;
}

/* fn(*args) (args: 5 items), or a remembered call's result when fn and args are the same;
 * a new reference */
static PyObject *
memo_outcome(apply_memo *m, PyObject *fn, PyObject *const *args)
{
    for (int k = 0; k < MEMO_SLOTS; k++) {
        outcome_call *c = &m->calls[k];
        if (c->result == NULL || c->fn != fn)
            continue;
        int same = 1;
        for (int i = 0; i < 5 && same; i++)
            same = same_value(c->args[i], args[i]);
        if (same)
            return Py_NewRef(c->result);
    }
    PyObject *result = PyObject_CallFunctionObjArgs(fn, args[0], args[1], args[2], args[3],
                                                    args[4], NULL);
    if (result == NULL)
        return NULL;
    outcome_call *c = &m->calls[m->next_call];
    m->next_call = (m->next_call + 1) % MEMO_SLOTS;
    Py_XSETREF(c->fn, Py_NewRef(fn));
    for (int i = 0; i < 5; i++)
        Py_XSETREF(c->args[i], Py_NewRef(args[i]));
    Py_XSETREF(c->result, Py_NewRef(result));
    return result;
}

/* the exact str s interned (a new reference), through the strings interned in slots (a
 * memo's, MEMO_SLOTS of them, *next the one replaced next): one found equal is the object
 * PyUnicode_InternInPlace would give, without hashing s and looking it up */
static PyObject *
memo_intern_in(PyObject **slots, int *next, PyObject *s)
{
    for (int k = 0; k < MEMO_SLOTS; k++)
        if (slots[k] != NULL && same_value(slots[k], s))
            return Py_NewRef(slots[k]);
    Py_INCREF(s);
    PyUnicode_InternInPlace(&s);
    Py_XSETREF(slots[*next], Py_NewRef(s));
    *next = (*next + 1) % MEMO_SLOTS;
    return s;
}

static PyObject *
memo_intern(apply_memo *m, PyObject *s)
{
    return memo_intern_in(m->types, &m->next_type, s);
}

/* (leftovers, added_bytes, added_spans[, cands]) without Py_BuildValue's format; steals
 * leftovers and cands (NULL: the 3-tuple) */
static PyObject *
apply_result(PyObject *leftovers, Py_ssize_t added_bytes, Py_ssize_t added_spans,
             PyObject *cands)
{
    PyObject *out = PyTuple_New(cands != NULL ? 4 : 3);
    PyObject *b = PyLong_FromSsize_t(added_bytes), *n = PyLong_FromSsize_t(added_spans);
    if (out == NULL || b == NULL || n == NULL) {
        Py_XDECREF(out);
        Py_XDECREF(b);
        Py_XDECREF(n);
        Py_DECREF(leftovers);
        Py_XDECREF(cands);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 0, leftovers);
    PyTuple_SET_ITEM(out, 1, b);
    PyTuple_SET_ITEM(out, 2, n);
    if (cands != NULL)
        PyTuple_SET_ITEM(out, 3, cands);
    return out;
}

/* apply's items read without PyArg_ParseTuple's format (its checks, in the common case of
 * exact types); anything else goes through PyArg_ParseTuple, for its conversions and errors */
static int
read_apply(PyObject *apply, PyObject **held, PyObject **released, double *now,
           PyObject **outcome_fn, PyObject **masks, PyObject **not_workflow, Py_ssize_t *span_oh,
           Py_ssize_t *chunk_oh, Py_ssize_t *trace_oh, PyObject **classify)
{
    if (!PyTuple_Check(apply)) {
        PyErr_SetString(PyExc_TypeError, "apply: a tuple");
        return -1;
    }
    PyObject *const *it = &PyTuple_GET_ITEM(apply, 0);
    if (PyTuple_GET_SIZE(apply) == 10 && PyDict_Check(it[0]) && PyFloat_CheckExact(it[2]) &&
        PyList_Check(it[4]) && PyLong_CheckExact(it[6]) && PyLong_CheckExact(it[7]) &&
        PyLong_CheckExact(it[8])) {
        *span_oh = PyLong_AsSsize_t(it[6]);
        *chunk_oh = PyLong_AsSsize_t(it[7]);
        *trace_oh = PyLong_AsSsize_t(it[8]);
        if (!PyErr_Occurred()) {
            *held = it[0];
            *released = it[1];
            *now = PyFloat_AS_DOUBLE(it[2]);
            *outcome_fn = it[3];
            *masks = it[4];
            *not_workflow = it[5];
            *classify = it[9];
            return 0;
        }
        PyErr_Clear(); /* (an overflow: PyArg_ParseTuple's error) */
    }
    return PyArg_ParseTuple(apply, "O!OdOO!OnnnO;apply: (held, released, now, outcome, masks, "
                            "not_workflow, span_overhead, chunk_overhead, trace_overhead, "
                            "classify)",
                            &PyDict_Type, held, released, now, outcome_fn, &PyList_Type, masks,
                            not_workflow, span_oh, chunk_oh, trace_oh, classify)
               ? 0
               : -1;
}

static PyObject *
apply_entries(entries *e, PyObject *groups, PyObject *apply, const agent_needles *agent,
              const exec_markers *ex, apply_memo *memo, PyObject *now_given)
{
    PyObject *held, *released, *outcome_fn, *masks, *not_workflow, *classify;
    double now;
    Py_ssize_t span_oh, chunk_oh, trace_oh;
    if (read_apply(apply, &held, &released, &now, &outcome_fn, &masks, &not_workflow, &span_oh,
                   &chunk_oh, &trace_oh, &classify) < 0)
        return NULL;
    if (now_given != NULL) /* (a float, checked by the caller) */
        now = PyFloat_AS_DOUBLE(now_given);
    int late_memory = Py_IS_TYPE(released, &LateMemoryType);
    if (!late_memory && !PyDict_Check(released)) {
        PyErr_SetString(PyExc_TypeError, "apply: released is a dict or a LateMemory");
        return NULL;
    }
    if (late_memory ? ((LateMemoryObject *)released)->mem.len : PyDict_GET_SIZE(released)) {
        for (Py_ssize_t i = 0; i < e->len; i++) {
            PyObject *tid = e->items[i].trace_id;
            int in_held = PyDict_Contains(held, tid);
            if (in_held < 0)
                return NULL;
            if (!in_held) {
                int late = late_memory ? late_contains((LateMemoryObject *)released, tid)
                                       : PyDict_Contains(released, tid);
                if (late < 0)
                    return NULL;
                if (late)
                    Py_RETURN_NONE;
            }
        }
    }
    PyObject *leftovers = PyList_New(0);
    if (leftovers == NULL)
        return NULL;
    PyObject *cands = NULL;
    if (ex != NULL && (cands = PyList_New(0)) == NULL) {
        Py_DECREF(leftovers);
        return NULL;
    }
    Py_ssize_t added_bytes = 0, added_spans = 0;
    for (Py_ssize_t i = 0; i < e->len; i++) {
        entry *t = &e->items[i];
        PyObject *obj = PyDict_GetItemWithError(held, t->trace_id);
        int fresh = 0;
        if (obj == NULL) {
            if (PyErr_Occurred())
                goto fail;
            obj = trace_create(&TraceType, now, now, now, trace_oh);
            if (obj == NULL)
                goto fail;
            if (PyObject_SetItem(held, t->trace_id, obj) < 0) {
                Py_DECREF(obj);
                goto fail;
            }
            fresh = 1;
            added_bytes += trace_oh;
        }
        else
            Py_INCREF(obj);
        TraceObject *tr = trace_checked(obj);
        if (tr == NULL) {
            Py_DECREF(obj);
            goto fail;
        }
        if (!fresh)
            tr->last_seen = now;
        if (t->errs && !t->fallback) {
            int rc = classify_errs(t, classify, agent);
            if (rc < 0) {
                Py_DECREF(obj);
                goto fail;
            }
            t->fallback = rc;
        }
        if (t->fallback) {
            PyObject *item = entry_tuple(t, groups, 0);
            Py_DECREF(obj);
            if (append_new(leftovers, item) < 0)
                goto fail;
            continue;
        }
        tr->tool_calls += t->tools;
        tr->roots += t->roots;
        /* a root that is a workflow stays the trace's root (as within the entry) */
        if (t->root && !is_workflow_facts(tr->root)) {
            /* (index, agent, workflow, wf_id, wf_type, given, error, exc, code, msg, mask) */
            PyObject *r = t->root, *facts;
            Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GET_ITEM(r, 0));
            tr->root_index = tr->count + index;
            if (PyTuple_GET_ITEM(r, 2) == Py_True) {
                Py_ssize_t mask = PyLong_AsSsize_t(PyTuple_GET_ITEM(r, 10));
                if (mask < 0 || mask >= PyList_GET_SIZE(masks)) {
                    if (!PyErr_Occurred())
                        PyErr_SetString(PyExc_ValueError, "apply: masks too short");
                    Py_DECREF(obj);
                    goto fail;
                }
                PyObject *outcome = memo_outcome(memo, outcome_fn, PySequence_Fast_ITEMS(r) + 5);
                if (outcome == NULL) {
                    Py_DECREF(obj);
                    goto fail;
                }
                /* the type repeats across traces: one str for all (interned strings are freed
                 * when no longer used) */
                PyObject *wf_type = PyTuple_GET_ITEM(r, 4);
                wf_type = PyUnicode_CheckExact(wf_type) ? memo_intern(memo, wf_type)
                                                        : Py_NewRef(wf_type);
                facts = PyTuple_Pack(5, Py_True, PyTuple_GET_ITEM(r, 3), wf_type, outcome,
                                     PyList_GET_ITEM(masks, mask));
                Py_DECREF(wf_type);
                Py_DECREF(outcome);
                if (facts == NULL) {
                    Py_DECREF(obj);
                    goto fail;
                }
                if (PyUnicode_CheckExact(PyTuple_GET_ITEM(facts, 3)))
                    PyObject_GC_UnTrack(facts); /* str and a tuple of str */
            }
            else
                facts = Py_NewRef(not_workflow);
            Py_XSETREF(tr->root, facts);
            PyObject *present = PyTuple_Check(facts) && PyTuple_GET_SIZE(facts) == 5
                                    ? PyTuple_GET_ITEM(facts, 4)
                                    : NULL;
            if (present == NULL || !PyTuple_Check(present)) {
                PyErr_SetString(PyExc_TypeError, "apply: root facts are a 5-tuple");
                Py_DECREF(obj);
                goto fail;
            }
            Py_SETREF(tr->root_present, Py_NewRef(present));
        }
        if (t->agent && (t->agent_set || (PyUnicode_GET_LENGTH(t->agent) &&
                                          PyUnicode_GET_LENGTH(tr->agent_id) == 0))) {
            /* repeats: interned, as the type */
            PyObject *agent_id = PyUnicode_CheckExact(t->agent)
                                     ? memo_intern_in(memo->agents, &memo->next_agent, t->agent)
                                     : Py_NewRef(t->agent);
            Py_SETREF(tr->agent_id, agent_id);
        }
        if (entry_execs(t, tr, ex, cands) < 0) {
            Py_DECREF(obj);
            goto fail;
        }
        Py_ssize_t n = t->len;
        if (trace_add(tr, t->items, n, groups) < 0) {
            Py_DECREF(obj);
            goto fail;
        }
        Py_ssize_t size = t->nbytes + span_oh * n + chunk_oh;
        tr->nbytes += size;
        added_bytes += size;
        added_spans += n;
        Py_DECREF(obj);
    }
    return apply_result(leftovers, added_bytes, added_spans, cands);
fail:
    Py_DECREF(leftovers);
    Py_XDECREF(cands);
    return NULL;
}

/* one pass of ingest over raw (see the module docstring); apply NULL: the plain modes */
static PyObject *
ingest_run(const uint8_t *raw, Py_ssize_t raw_len, PyObject *interned, const needle *nd_tool_a,
           const needle *nd_tool_b, const agent_needles *nd_agent, const facts_cfg *cfg,
           PyObject *apply, const exec_markers *ex, apply_memo *memo, const needle *nd_tools,
           PyObject **last_group, PyObject *now)
{
    PyObject *result = NULL, *groups = NULL;
    entries e = {0};
    if (memo != NULL)
        entries_from_spares(&e, memo);
    slices scopes = {0}, spans = {0};
    known_strs known = {NULL, NULL};
    if (memo != NULL) {
        known.agents = memo->agents;
        known.types = memo->types;
    }
    /* the group of every ScopeSpans (interned), referred to by index */
    if ((groups = PyList_New(0)) == NULL)
        goto done;
    Py_ssize_t last = -1;
    const uint8_t *p = raw, *end = p + raw_len;
    while (p < end) {
        uint32_t f;
        int wt;
        if (read_tag(&p, end, &f, &wt) < 0)
            goto done;
        if (!(f == 1 && wt == 2)) {
            if (skip_fast(&p, end, f, wt) < 0)
                goto done;
            continue;
        }
        slice rs, resource, resource_url;
        if (read_len(&p, end, &rs) < 0)
            goto done;
        scopes.len = 0;
        if (parse_container(rs, &resource, &scopes, &resource_url) < 0)
            goto done;
        PyObject *res_b = NULL, *res_url_b = NULL; /* (made when a group is) */
        for (Py_ssize_t i = 0; i < scopes.len; i++) {
            slice scope, scope_url;
            spans.len = 0;
            if (parse_container(scopes.items[i], &scope, &spans, &scope_url) < 0)
                goto scope_fail;
            if (spans.len == 0)
                continue;
            /* the group of the last request again (a client's requests repeat it): the
             * interned one without its bytes made, hashed and compared, if `interned` still
             * holds it (the same object PyDict_SetDefault would return) */
            PyObject *g = last_group != NULL ? *last_group : NULL;
            if (g != NULL) {
                PyObject *const *gi = &PyTuple_GET_ITEM(g, 0);
                if (same_bytes(resource, gi[0]) && same_bytes(resource_url, gi[1]) &&
                    same_bytes(scope, gi[2]) && same_bytes(scope_url, gi[3])) {
                    PyObject *known = PyDict_GetItemWithError(interned, g); /* borrowed */
                    if (known == NULL && PyErr_Occurred())
                        goto scope_fail;
                    if (known != g)
                        g = NULL;
                }
                else
                    g = NULL;
            }
            if (g == NULL) {
                if (res_b == NULL) {
                    res_b = bytes_of(resource);
                    res_url_b = bytes_of(resource_url);
                    if (!res_b || !res_url_b)
                        goto scope_fail;
                }
                PyObject *group = PyTuple_New(4), *scope_b = bytes_of(scope),
                         *scope_url_b = bytes_of(scope_url);
                if (group == NULL || scope_b == NULL || scope_url_b == NULL) {
                    Py_XDECREF(group);
                    Py_XDECREF(scope_b);
                    Py_XDECREF(scope_url_b);
                    goto scope_fail;
                }
                PyTuple_SET_ITEM(group, 0, Py_NewRef(res_b));
                PyTuple_SET_ITEM(group, 1, Py_NewRef(res_url_b));
                PyTuple_SET_ITEM(group, 2, scope_b);
                PyTuple_SET_ITEM(group, 3, scope_url_b);
                g = PyDict_SetDefault(interned, group, group); /* borrowed */
                Py_DECREF(group);
                if (g == NULL)
                    goto scope_fail;
                if (last_group != NULL && PyTuple_CheckExact(g) && PyTuple_GET_SIZE(g) == 4 &&
                    PyBytes_CheckExact(PyTuple_GET_ITEM(g, 0)) &&
                    PyBytes_CheckExact(PyTuple_GET_ITEM(g, 1)) &&
                    PyBytes_CheckExact(PyTuple_GET_ITEM(g, 2)) &&
                    PyBytes_CheckExact(PyTuple_GET_ITEM(g, 3)))
                    Py_XSETREF(*last_group, Py_NewRef(g));
            }
            if (PyList_Append(groups, g) < 0)
                goto scope_fail;
            Py_ssize_t gi = PyList_GET_SIZE(groups) - 1;
            marker_cursor cursor = {NULL, scopes.items[i].p + scopes.items[i].n};
            for (Py_ssize_t j = 0; j < spans.len; j++) {
                if (ingest_span(&e, &last, spans.items[j], gi, nd_tool_a, nd_tool_b, nd_agent,
                                cfg, nd_tools, &cursor, &known) < 0)
                    goto scope_fail;
            }
        }
        Py_XDECREF(res_b);
        Py_XDECREF(res_url_b);
        continue;
    scope_fail:
        Py_XDECREF(res_b);
        Py_XDECREF(res_url_b);
        goto done;
    }
    if (apply != NULL) {
        result = apply_entries(&e, groups, apply, nd_agent, ex, memo, now);
        goto done;
    }
    result = PyList_New(e.len);
    if (result == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < e.len; i++) {
        entry *t = &e.items[i];
        PyObject *item, *l[4] = {NULL, NULL, NULL, NULL};
        if (cfg == NULL)
            item = entry_lists(t, groups, l) < 0
                       ? NULL
                       : Py_BuildValue("(ONNNNnO)", t->trace_id, l[0], l[1], l[2], l[3],
                                       t->nbytes, t->specials ? t->specials : Py_None);
        else
            item = entry_tuple(t, groups, !t->fallback);
        if (item == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, item);
    }
done:
    entries_release(&e, memo);
    Py_XDECREF(groups);
    PyMem_Free(scopes.items);
    PyMem_Free(spans.items);
    return result;
}

/* the facts tuple (17 bytes) read into cfg */
static int
read_facts(PyObject *cfg_tuple, facts_cfg *cfg)
{
    if (!PyTuple_Check(cfg_tuple) || PyTuple_GET_SIZE(cfg_tuple) != NKEYS + 3) {
        PyErr_SetString(PyExc_TypeError, "facts: a tuple of 17 bytes");
        return -1;
    }
    for (Py_ssize_t i = 0; i < NKEYS + 3; i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(cfg_tuple, i))) {
            PyErr_SetString(PyExc_TypeError, "facts: a tuple of 17 bytes");
            return -1;
        }
    memset(cfg->by_len, 0, sizeof(cfg->by_len));
    cfg->long_keys = 0;
    for (int k = 0; k < NKEYS; k++) {
        cfg->keys[k] = slice_of_bytes(PyTuple_GET_ITEM(cfg_tuple, k));
        if (cfg->keys[k].n < SHORT_KEY)
            cfg->by_len[cfg->keys[k].n] |= (uint16_t)(1u << k);
        else
            cfg->long_keys |= (uint16_t)(1u << k);
    }
    cfg->tool_value = slice_of_bytes(PyTuple_GET_ITEM(cfg_tuple, NKEYS));
    cfg->mcp_value = slice_of_bytes(PyTuple_GET_ITEM(cfg_tuple, NKEYS + 1));
    cfg->prefix = slice_of_bytes(PyTuple_GET_ITEM(cfg_tuple, NKEYS + 2));
    return 0;
}

/* the execution markers (a tuple of at most MAX_EXEC_MARKERS bytes) read into ex */
static int
read_execs(PyObject *exec_tuple, exec_markers *ex)
{
    if (!PyTuple_Check(exec_tuple) || PyTuple_GET_SIZE(exec_tuple) > MAX_EXEC_MARKERS) {
        PyErr_SetString(PyExc_TypeError, "execution markers: a tuple of at most 32 bytes");
        return -1;
    }
    ex->n = PyTuple_GET_SIZE(exec_tuple);
    for (Py_ssize_t i = 0; i < ex->n; i++) {
        PyObject *m = PyTuple_GET_ITEM(exec_tuple, i);
        if (!PyBytes_Check(m)) { /* (an empty one: every span) */
            PyErr_SetString(PyExc_TypeError, "execution markers: a tuple of at most 32 bytes");
            return -1;
        }
        needle_init(&ex->items[i], PyBytes_AS_STRING(m), PyBytes_GET_SIZE(m));
    }
    return 0;
}

/* IngestConfig: what ingest reads in the special spans, read once (the markers' search
 * tables built, the facts' keys and values as slices of the bytes it keeps) */
typedef struct {
    PyObject_HEAD
    /* (tool_a, tool_b, agent_marker, facts, execs, agent_id_marker): what the slices point in */
    PyObject *keep;
    needle tool_a, tool_b;
    agent_needles agent;
    needle tools; /* the common part of tool_a and tool_b (see has_tool_marker) */
    facts_cfg facts;
    exec_markers execs;
    int has_execs;
    apply_memo memo; /* kept from one request to the next */
    PyObject *last_group; /* the group interned last (a 4-tuple of bytes), or NULL */
} IngestConfigObject;

static void
ingest_config_dealloc(IngestConfigObject *self)
{
    apply_memo_clear(&self->memo);
    Py_XDECREF(self->last_group);
    Py_XDECREF(self->keep);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
ingest_config_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kw[] = {"tool_a",         "tool_b", "agent_marker", "facts", "execs",
                         "agent_id_marker", NULL};
    PyObject *tool_a, *tool_b, *agent, *facts, *execs = Py_None, *agent_id = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!O!O!O|OO!:IngestConfig", kw, &PyBytes_Type,
                                     &tool_a, &PyBytes_Type, &tool_b, &PyBytes_Type, &agent,
                                     &facts, &execs, &PyBytes_Type, &agent_id))
        return NULL;
    IngestConfigObject *self = (IngestConfigObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (agent_id == NULL)
        agent_id = PyBytes_FromStringAndSize(NULL, 0); /* none: the name's marker alone */
    else
        Py_INCREF(agent_id);
    self->keep = agent_id ? PyTuple_Pack(6, tool_a, tool_b, agent, facts, execs, agent_id) : NULL;
    Py_XDECREF(agent_id); /* (kept by keep) */
    if (self->keep == NULL || read_facts(facts, &self->facts) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    if (execs != Py_None) {
        if (read_execs(execs, &self->execs) < 0) {
            Py_DECREF(self);
            return NULL;
        }
        self->has_execs = 1;
    }
    needle_init(&self->tool_a, PyBytes_AS_STRING(tool_a), PyBytes_GET_SIZE(tool_a));
    needle_init(&self->tool_b, PyBytes_AS_STRING(tool_b), PyBytes_GET_SIZE(tool_b));
    agent_needles_init(&self->agent, slice_of_bytes(agent),
                       slice_of_bytes(PyTuple_GET_ITEM(self->keep, 5)));
    common_needle(&self->tools, slice_of_bytes(tool_a), slice_of_bytes(tool_b));
    return (PyObject *)self;
}

static PyTypeObject IngestConfigType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_tracewire.IngestConfig",
    .tp_basicsize = sizeof(IngestConfigObject),
    .tp_dealloc = (destructor)ingest_config_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "IngestConfig(tool_a, tool_b, agent_marker, facts, execs=None, "
              "agent_id_marker=b''): ingest's configuration, read once",
    .tp_new = ingest_config_new,
};

static PyObject *tw_ingest_args(PyObject *args);

/* ingest (METH_FASTCALL): the form with an IngestConfig, bytes and a dict read without
 * PyArg_ParseTuple (once a request; with `now` apart, apply can be built once and its now
 * ignored); any other call through it, as before */
static PyObject *
tw_ingest(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if ((nargs == 4 || (nargs == 5 && PyFloat_CheckExact(args[4]))) &&
        PyBytes_CheckExact(args[0]) && PyDict_Check(args[1]) &&
        Py_IS_TYPE(args[2], &IngestConfigType) && PyTuple_Check(args[3])) {
        IngestConfigObject *ic = (IngestConfigObject *)args[2];
        return ingest_run((const uint8_t *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]),
                          args[1], &ic->tool_a, &ic->tool_b, &ic->agent, &ic->facts, args[3],
                          ic->has_execs ? &ic->execs : NULL, &ic->memo, &ic->tools,
                          &ic->last_group, nargs == 5 ? args[4] : NULL);
    }
    PyObject *tuple = PyTuple_New(nargs);
    if (tuple == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < nargs; i++)
        PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    PyObject *result = tw_ingest_args(tuple);
    Py_DECREF(tuple);
    return result;
}

static PyObject *
tw_ingest_args(PyObject *args)
{
    if (PyTuple_GET_SIZE(args) >= 3 &&
        Py_IS_TYPE(PyTuple_GET_ITEM(args, 2), &IngestConfigType)) {
        /* ingest(raw, interned, config, apply[, now]) */
        Py_buffer raw;
        PyObject *interned, *config, *apply, *now = NULL;
        if (!PyArg_ParseTuple(args, "y*O!O!O!|O!:ingest", &raw, &PyDict_Type, &interned,
                              &IngestConfigType, &config, &PyTuple_Type, &apply, &PyFloat_Type,
                              &now))
            return NULL;
        IngestConfigObject *ic = (IngestConfigObject *)config;
        PyObject *result = ingest_run(raw.buf, raw.len, interned, &ic->tool_a, &ic->tool_b,
                                      &ic->agent, &ic->facts, apply,
                                      ic->has_execs ? &ic->execs : NULL, &ic->memo,
                                      &ic->tools, &ic->last_group, now);
        PyBuffer_Release(&raw);
        return result;
    }
    Py_buffer raw, tool_a, tool_b, agent;
    PyObject *interned, *cfg_tuple = Py_None, *apply = Py_None, *result = NULL;
    PyObject *exec_tuple = Py_None;
    if (!PyArg_ParseTuple(args, "y*O!y*y*y*|OOO", &raw, &PyDict_Type, &interned, &tool_a, &tool_b,
                          &agent, &cfg_tuple, &apply, &exec_tuple))
        return NULL;
    if (apply != Py_None && cfg_tuple == Py_None) {
        PyErr_SetString(PyExc_TypeError, "apply needs facts");
        goto release;
    }
    exec_markers ex_store, *ex = NULL;
    if (exec_tuple != Py_None) {
        if (apply == Py_None) {
            PyErr_SetString(PyExc_TypeError, "execution markers need apply");
            goto release;
        }
        if (read_execs(exec_tuple, &ex_store) < 0)
            goto release;
        ex = &ex_store;
    }
    facts_cfg cfg_store, *cfg = NULL;
    if (cfg_tuple != Py_None) {
        if (read_facts(cfg_tuple, &cfg_store) < 0)
            goto release;
        cfg = &cfg_store;
    }
    needle nd_tool_a, nd_tool_b;
    agent_needles nd_agent; /* (the name's marker alone: no agent_id_marker in this form) */
    needle_init(&nd_tool_a, tool_a.buf, tool_a.len);
    needle_init(&nd_tool_b, tool_b.buf, tool_b.len);
    agent_needles_init(&nd_agent, (slice){agent.buf, agent.len}, (slice){agent.buf, 0});
    needle nd_tools;
    common_needle(&nd_tools, (slice){tool_a.buf, tool_a.len}, (slice){tool_b.buf, tool_b.len});
    apply_memo memo = {0};
    result = ingest_run(raw.buf, raw.len, interned, &nd_tool_a, &nd_tool_b, &nd_agent, cfg,
                        apply == Py_None ? NULL : apply, ex, &memo, &nd_tools, NULL, NULL);
    apply_memo_clear(&memo);
release:
    PyBuffer_Release(&raw);
    PyBuffer_Release(&tool_a);
    PyBuffer_Release(&tool_b);
    PyBuffer_Release(&agent);
    return result;
}

/* ---------------------------------------------------------------------------------------- */
/* assemble */

typedef struct {
    const uint8_t *p; /* the span: in `owner`, or in a chunk of a trace the caller keeps */
    Py_ssize_t n;
    PyObject *owner;  /* a reference, or NULL */
    PyObject *suffix; /* borrowed (kept alive by the entries or `keep`) */
} piece;

typedef struct {
    PyObject *key; /* a reference: a 4-tuple of bytes */
    piece *items;
    Py_ssize_t len, cap;
    Py_ssize_t ss_len, rs_len;
} bucket;

static Py_ssize_t
varint_len(uint64_t n)
{
    Py_ssize_t k = 1;
    while (n >= 0x80) {
        n >>= 7;
        k++;
    }
    return k;
}

static uint8_t *
put_varint(uint8_t *o, uint64_t n)
{
    while (n >= 0x80) {
        *o++ = (uint8_t)(n | 0x80);
        n >>= 7;
    }
    *o++ = (uint8_t)n;
    return o;
}

static Py_ssize_t
field_len(Py_ssize_t n)
{
    return 1 + varint_len((uint64_t)n) + n;
}

static uint8_t *
put_field(uint8_t *o, uint8_t tag, PyObject *b)
{
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    *o++ = tag;
    o = put_varint(o, (uint64_t)n);
    memcpy(o, PyBytes_AS_STRING(b), (size_t)n);
    return o + n;
}

typedef struct {
    bucket *items;
    Py_ssize_t len, cap;
    PyObject *index; /* group -> bucket number */
    PyObject *last_key;
    Py_ssize_t last;
} buckets;

static bucket *
bucket_for(buckets *b, PyObject *key)
{
    if (key == b->last_key)
        return &b->items[b->last];
    PyObject *k = PyDict_GetItemWithError(b->index, key);
    Py_ssize_t at;
    if (k != NULL)
        at = PyLong_AsSsize_t(k);
    else {
        if (PyErr_Occurred() || check_group(key) < 0)
            return NULL;
        if (b->len == b->cap) {
            bucket *items = grow_array(b->items, &b->cap, 8, sizeof(bucket));
            if (items == NULL)
                return NULL;
            b->items = items;
        }
        at = b->len;
        PyObject *num = PyLong_FromSsize_t(at);
        if (num == NULL)
            return NULL;
        int rc = PyDict_SetItem(b->index, key, num);
        Py_DECREF(num);
        if (rc < 0)
            return NULL;
        memset(&b->items[at], 0, sizeof(bucket));
        b->items[at].key = Py_NewRef(key);
        b->len++;
    }
    b->last_key = key;
    b->last = at;
    return &b->items[at];
}

static int
bucket_push(bucket *g, slice span, PyObject *owner, PyObject *suffix)
{
    if (g->len == g->cap) {
        piece *items = grow_array(g->items, &g->cap, 64, sizeof(piece));
        if (items == NULL)
            return -1;
        g->items = items;
    }
    g->items[g->len].p = span.p;
    g->items[g->len].n = span.n;
    g->items[g->len].owner = Py_XNewRef(owner);
    g->items[g->len].suffix = suffix;
    g->len++;
    return 0;
}

/* The longest common run of the markers after their first two bytes (a KeyValue key's tag and
 * one-byte length): "workflow." for the default stamp keys. A span without it has none of the
 * markers, so one search rules most spans out instead of one per marker. */
typedef struct { const char *p; Py_ssize_t n; } common_part;

static common_part
markers_common(PyObject *markers)
{
    common_part c = {NULL, 0};
    Py_ssize_t n = PyTuple_GET_SIZE(markers);
    if (n < 2)
        return c;
    PyObject *first = PyTuple_GET_ITEM(markers, 0);
    if (PyBytes_GET_SIZE(first) < 3)
        return c;
    const char *p = PyBytes_AS_STRING(first) + 2;
    Py_ssize_t len = PyBytes_GET_SIZE(first) - 2;
    for (Py_ssize_t i = 1; i < n; i++) {
        PyObject *m = PyTuple_GET_ITEM(markers, i);
        Py_ssize_t ml = PyBytes_GET_SIZE(m) - 2;
        const char *mp = PyBytes_AS_STRING(m) + 2;
        Py_ssize_t k = 0;
        while (k < len && k < ml && p[k] == mp[k])
            k++;
        len = k;
    }
    if (len >= 4) {
        c.p = p;
        c.n = len;
    }
    return c;
}

static int
has_marker_filtered(slice s, PyObject *markers, common_part common)
{
    if (common.n && !contains(s, common.p, common.n))
        return 0;
    Py_ssize_t n = PyTuple_GET_SIZE(markers);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *m = PyTuple_GET_ITEM(markers, i);
        if (contains(s, PyBytes_AS_STRING(m), PyBytes_GET_SIZE(m)))
            return 1;
    }
    return 0;
}

/* one entry's spans into the buckets: each with `suffix` appended, or the root's (root_index)
 * with root_suffix, or (stamp not None) a span containing a marker with suffix_for(span,
 * stamp). The buckets hold references to the spans and groups (suffix_for could change the
 * lists: their lengths are checked as they are read). */
static int
add_item(buckets *b, PyObject *keep, PyObject *spans, PyObject *groups, PyObject *suffix,
         PyObject *stamp, Py_ssize_t root_index, PyObject *root_suffix, PyObject *markers,
         common_part common, PyObject *suffix_for)
{
    if (!PyList_Check(spans) || !PyBytes_Check(suffix) ||
        !(PyList_Check(groups) || PyTuple_Check(groups))) {
        PyErr_SetString(PyExc_TypeError, "an entry is (spans, groups, suffix, stamp)");
        return -1;
    }
    int per_span = PyList_Check(groups);
    int search = stamp != Py_None && PyTuple_GET_SIZE(markers) > 0;
    bucket *g = NULL;
    Py_INCREF(spans);
    Py_INCREF(groups);
    int rc = -1;
    for (Py_ssize_t j = 0; j < PyList_GET_SIZE(spans); j++) {
        if (per_span && PyList_GET_SIZE(groups) != PyList_GET_SIZE(spans)) {
            PyErr_SetString(PyExc_ValueError, "spans and groups differ in length");
            goto done;
        }
        PyObject *span = PyList_GET_ITEM(spans, j);
        if (!PyBytes_Check(span)) {
            PyErr_SetString(PyExc_TypeError, "a span is bytes");
            goto done;
        }
        Py_INCREF(span);
        if (g == NULL || per_span) {
            g = bucket_for(b, per_span ? PyList_GET_ITEM(groups, j) : groups);
            if (g == NULL) {
                Py_DECREF(span);
                goto done;
            }
        }
        PyObject *sfx = suffix;
        if (j == root_index && root_suffix != NULL && stamp != Py_None) {
            sfx = root_suffix;
        }
        else if (search && has_marker_filtered(slice_of_bytes(span), markers, common)) {
            sfx = PyObject_CallFunctionObjArgs(suffix_for, span, stamp, NULL);
            int bad = sfx == NULL || append_new(keep, sfx) < 0;
            if (!bad && !PyBytes_Check(sfx)) {
                PyErr_SetString(PyExc_TypeError, "suffix_for must return bytes");
                bad = 1;
            }
            if (bad) {
                Py_DECREF(span);
                goto done;
            }
        }
        int pushed = bucket_push(g, slice_of_bytes(span), span, sfx);
        Py_DECREF(span);
        if (pushed < 0)
            goto done;
    }
    if (per_span && PyList_GET_SIZE(groups) != PyList_GET_SIZE(spans)) {
        PyErr_SetString(PyExc_ValueError, "spans and groups differ in length");
        goto done;
    }
    rc = 0;
done:
    Py_DECREF(spans);
    Py_DECREF(groups);
    return rc;
}

/* a new suffix: sfx then extra (held in keep), or NULL */
static PyObject *
joined_suffix(PyObject *keep, PyObject *sfx, PyObject *extra)
{
    Py_ssize_t a = PyBytes_GET_SIZE(sfx), e = PyBytes_GET_SIZE(extra);
    PyObject *joined = PyBytes_FromStringAndSize(NULL, a + e);
    if (joined == NULL || append_new(keep, joined) < 0)
        return NULL;
    memcpy(PyBytes_AS_STRING(joined), PyBytes_AS_STRING(sfx), (size_t)a);
    memcpy(PyBytes_AS_STRING(joined) + a, PyBytes_AS_STRING(extra), (size_t)e);
    return joined;
}

/* the next of a trace's `others` (an int in a tuple), -1 past the end; -2 on error */
static Py_ssize_t
next_other(PyObject *others, Py_ssize_t k)
{
    if (k >= PyTuple_GET_SIZE(others))
        return -1;
    Py_ssize_t v = PyLong_AsSsize_t(PyTuple_GET_ITEM(others, k));
    if (v == -1 && PyErr_Occurred())
        return -2;
    return v < 0 ? -1 : v;
}

/* Whether a chunk's spans may hold one of the markers: the common part searched once through
 * the bytes the chunk's spans span (not span by span), without the span at skip_index (the root
 * given its own suffix, never searched; its bytes often hold a stamp key). Spans are disjoint
 * ranges of the chunk's data: a span holding the common part has it inside the range searched.
 * 0: none of the chunk's searched spans can hold a marker; 1: some may (searched span by span). */
static int
chunk_may_hold_marker(const chunk *ch, Py_ssize_t first_index, Py_ssize_t skip_index,
                      common_part common)
{
    Py_ssize_t lo = PY_SSIZE_T_MAX, hi = 0, skip_lo = -1, skip_hi = -1;
    for (Py_ssize_t j = 0; j < ch->n; j++) {
        const rec *r = &ch->recs[j];
        Py_ssize_t a = (Py_ssize_t)r->off, e = a + (Py_ssize_t)r->len;
        if (first_index + j == skip_index) {
            skip_lo = a;
            skip_hi = e;
            continue;
        }
        if (a < lo)
            lo = a;
        if (e > hi)
            hi = e;
    }
    if (hi <= lo)
        return 0;
    const uint8_t *d = chunk_data(ch);
    if (skip_lo >= lo && skip_hi <= hi) { /* the skipped span in between: its two sides */
        slice before = {d + lo, skip_lo - lo}, after = {d + skip_hi, hi - skip_hi};
        return contains(before, common.p, common.n) || contains(after, common.p, common.n);
    }
    slice all = {d + lo, hi - lo};
    return contains(all, common.p, common.n);
}

/* a held trace's spans into the buckets, as add_item, the span at root_index followed by
 * root_extra too when it is not NULL, and (a stamp given) each span in the trace's others
 * followed by its others_extra (the trace is kept alive by the caller; its chunks stay where
 * they are even if suffix_for adds spans to it) */
static int
add_trace(buckets *b, PyObject *keep, TraceObject *t, PyObject *suffix, PyObject *stamp,
          Py_ssize_t root_index, PyObject *root_suffix, PyObject *root_extra, PyObject *markers,
          common_part common, PyObject *suffix_for)
{
    int search = stamp != Py_None && PyTuple_GET_SIZE(markers) > 0;
    Py_ssize_t nchunks = t->nchunks, index = 0;
    bucket *g = NULL;
    uint32_t group = 0;
    /* held in keep: suffix_for could assign the members */
    PyObject *others = t->others, *others_extra = t->others_extra;
    Py_ssize_t k = 0, other = -1;
    if (stamp != Py_None && PyTuple_GET_SIZE(others)) {
        if (PyList_Append(keep, others) < 0 || PyList_Append(keep, others_extra) < 0)
            return -1;
        if ((other = next_other(others, 0)) == -2)
            return -1;
    }
    /* the root given its own suffix is not searched */
    Py_ssize_t skip_index = root_suffix != NULL && stamp != Py_None ? root_index : -1;
    for (Py_ssize_t c = 0; c < nchunks; c++) {
        const chunk *ch = t->chunks[c];
        /* a chunk of several spans searched once first: most hold no marker */
        int chunk_search = search && common.n && ch->n > 1
                               ? chunk_may_hold_marker(ch, index, skip_index, common)
                               : search;
        for (Py_ssize_t j = 0; j < ch->n; j++, index++) {
            const rec *r = &ch->recs[j];
            slice span = rec_span(ch, r);
            if (g == NULL || r->group != group) {
                /* t->groups read again: suffix_for may have grown the table */
                if ((g = bucket_for(b, t->groups[r->group])) == NULL)
                    return -1;
                group = r->group;
            }
            PyObject *sfx = suffix;
            if (index == root_index && root_suffix != NULL && stamp != Py_None)
                sfx = root_suffix;
            else if (chunk_search && has_marker_filtered(span, markers, common)) {
                PyObject *arg = bytes_of(span);
                if (arg == NULL)
                    return -1;
                sfx = PyObject_CallFunctionObjArgs(suffix_for, arg, stamp, NULL);
                Py_DECREF(arg);
                if (sfx == NULL || append_new(keep, sfx) < 0)
                    return -1;
                if (!PyBytes_Check(sfx)) {
                    PyErr_SetString(PyExc_TypeError, "suffix_for must return bytes");
                    return -1;
                }
            }
            if (index == root_index && root_extra != NULL && stamp != Py_None) {
                /* the root's stamp, then what the root carries of its execution */
                if ((sfx = joined_suffix(keep, sfx, root_extra)) == NULL)
                    return -1;
            }
            if (index == other) {
                /* another parentless span of the workflow: its stamp, then the mark */
                if ((sfx = joined_suffix(keep, sfx, others_extra)) == NULL)
                    return -1;
                if ((other = next_other(others, ++k)) == -2)
                    return -1;
            }
            if (bucket_push(g, span, NULL, sfx) < 0)
                return -1;
        }
    }
    return 0;
}

/* the request written from the buckets */
static PyObject *
write_buckets(buckets *b)
{
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < b->len; i++) {
        bucket *g = &b->items[i];
        PyObject *res = PyTuple_GET_ITEM(g->key, 0), *res_url = PyTuple_GET_ITEM(g->key, 1);
        PyObject *scope = PyTuple_GET_ITEM(g->key, 2), *scope_url = PyTuple_GET_ITEM(g->key, 3);
        Py_ssize_t ss = 0;
        if (PyBytes_GET_SIZE(scope))
            ss += field_len(PyBytes_GET_SIZE(scope));
        for (Py_ssize_t j = 0; j < g->len; j++)
            ss += field_len(g->items[j].n + PyBytes_GET_SIZE(g->items[j].suffix));
        if (PyBytes_GET_SIZE(scope_url))
            ss += field_len(PyBytes_GET_SIZE(scope_url));
        Py_ssize_t rs = field_len(ss);
        if (PyBytes_GET_SIZE(res))
            rs += field_len(PyBytes_GET_SIZE(res));
        if (PyBytes_GET_SIZE(res_url))
            rs += field_len(PyBytes_GET_SIZE(res_url));
        g->ss_len = ss;
        g->rs_len = rs;
        total += field_len(rs);
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL)
        return NULL;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < b->len; i++) {
        bucket *g = &b->items[i];
        PyObject *res = PyTuple_GET_ITEM(g->key, 0), *res_url = PyTuple_GET_ITEM(g->key, 1);
        PyObject *scope = PyTuple_GET_ITEM(g->key, 2), *scope_url = PyTuple_GET_ITEM(g->key, 3);
        *o++ = 0x0A;
        o = put_varint(o, (uint64_t)g->rs_len);
        if (PyBytes_GET_SIZE(res))
            o = put_field(o, 0x0A, res);
        *o++ = 0x12;
        o = put_varint(o, (uint64_t)g->ss_len);
        if (PyBytes_GET_SIZE(scope))
            o = put_field(o, 0x0A, scope);
        for (Py_ssize_t j = 0; j < g->len; j++) {
            Py_ssize_t a = g->items[j].n;
            Py_ssize_t s = PyBytes_GET_SIZE(g->items[j].suffix);
            *o++ = 0x12;
            o = put_varint(o, (uint64_t)(a + s));
            if (a)
                memcpy(o, g->items[j].p, (size_t)a);
            o += a;
            memcpy(o, PyBytes_AS_STRING(g->items[j].suffix), (size_t)s);
            o += s;
        }
        if (PyBytes_GET_SIZE(scope_url))
            o = put_field(o, 0x1A, scope_url);
        if (PyBytes_GET_SIZE(res_url))
            o = put_field(o, 0x1A, res_url);
    }
    if (o != (uint8_t *)PyBytes_AS_STRING(result) + total) {
        Py_CLEAR(result);
        PyErr_SetString(PyExc_SystemError, "assemble: size mismatch");
    }
    return result;
}

static void
buckets_free(buckets *b)
{
    for (Py_ssize_t i = 0; i < b->len; i++) {
        for (Py_ssize_t j = 0; j < b->items[i].len; j++)
            Py_XDECREF(b->items[i].items[j].owner);
        Py_DECREF(b->items[i].key);
        PyMem_Free(b->items[i].items);
    }
    PyMem_Free(b->items);
    Py_XDECREF(b->index);
}

static int
check_markers(PyObject *markers)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(markers); i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(markers, i))) {
            PyErr_SetString(PyExc_TypeError, "markers must be bytes");
            return -1;
        }
    return 0;
}

static PyObject *
tw_assemble(PyObject *self, PyObject *args)
{
    PyObject *items, *markers, *suffix_for;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyList_Type, &items, &PyTuple_Type, &markers,
                          &suffix_for))
        return NULL;
    if (check_markers(markers) < 0)
        return NULL;
    common_part common = markers_common(markers);
    buckets b = {0};
    PyObject *keep = PyList_New(0), *result = NULL;
    b.index = PyDict_New();
    if (keep == NULL || b.index == NULL)
        goto done;
    Py_ssize_t n_items = PyList_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < n_items; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyTuple_Check(item) || (PyTuple_GET_SIZE(item) != 4 && PyTuple_GET_SIZE(item) != 6)) {
            PyErr_SetString(PyExc_TypeError,
                            "an entry is (spans, groups, suffix, stamp[, root_index, root_suffix])");
            goto done;
        }
        /* optionally, the root's own suffix (known from ingest): no marker test, no callback */
        Py_ssize_t root_index = -1;
        PyObject *root_suffix = NULL;
        if (PyTuple_GET_SIZE(item) == 6) {
            root_index = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 4));
            if (root_index == -1 && PyErr_Occurred())
                goto done;
            root_suffix = PyTuple_GET_ITEM(item, 5);
            if (!PyBytes_Check(root_suffix)) {
                PyErr_SetString(PyExc_TypeError, "root_suffix must be bytes");
                goto done;
            }
        }
        /* held in `keep`: item may be dropped from the list by suffix_for */
        if (PyList_Append(keep, item) < 0)
            goto done;
        if (add_item(&b, keep, PyTuple_GET_ITEM(item, 0), PyTuple_GET_ITEM(item, 1),
                     PyTuple_GET_ITEM(item, 2), PyTuple_GET_ITEM(item, 3), root_index,
                     root_suffix, markers, common, suffix_for) < 0)
            goto done;
    }
    result = write_buckets(&b);
done:
    buckets_free(&b);
    Py_XDECREF(keep);
    return result;
}

/* ---------------------------------------------------------------------------------------- */
/* max_depth */

/* depth of the span tree over ids[0..n) and parents[0..n), at most cap levels walked (cap 0:
 * no bound); -1 on error. A span's slot is the index of the first span with its id. */
static Py_ssize_t
depth_slices(const slice *ids, const slice *parents, Py_ssize_t n, Py_ssize_t cap)
{
    Py_ssize_t result = -1;
    Py_ssize_t *table = NULL, tcap = 0;
    Py_ssize_t *slot_of = PyMem_Malloc((size_t)(n + 1) * sizeof(Py_ssize_t));
    Py_ssize_t *head = PyMem_Malloc((size_t)(n + 1) * sizeof(Py_ssize_t));
    Py_ssize_t *tail = PyMem_Malloc((size_t)(n + 1) * sizeof(Py_ssize_t));
    Py_ssize_t *next = PyMem_Malloc((size_t)(n + 1) * sizeof(Py_ssize_t));
    Py_ssize_t *level = NULL, *nxt = NULL;
    Py_ssize_t level_len = 0, level_cap = n + 1, nxt_cap = n + 1;
    level = PyMem_Malloc((size_t)level_cap * sizeof(Py_ssize_t));
    nxt = PyMem_Malloc((size_t)nxt_cap * sizeof(Py_ssize_t));
    if (!slot_of || !head || !tail || !next || !level || !nxt) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t j = 0; j < n; j++)
        head[j] = tail[j] = -1;
    if (n <= 64) {
        /* a few spans: ids compared directly */
        for (Py_ssize_t j = 0; j < n; j++) {
            Py_ssize_t i = 0;
            while (i < j && !slice_eq(ids[i], ids[j]))
                i++;
            slot_of[j] = i;
        }
        for (Py_ssize_t j = 0; j < n; j++) {
            Py_ssize_t i = 0;
            while (i < n && !slice_eq(ids[i], parents[j]))
                i++;
            next[j] = -1;
            if (i == n)
                level[level_len++] = j;
            else {
                Py_ssize_t s = slot_of[i];
                if (tail[s] < 0)
                    head[s] = j;
                else
                    next[tail[s]] = j;
                tail[s] = j;
            }
        }
    }
    else {
        /* open addressing: the first span of each distinct id, + 1 (0: empty) */
        tcap = 128;
        while (tcap < 2 * n)
            tcap *= 2;
        Py_ssize_t mask = tcap - 1;
        if ((table = PyMem_Calloc((size_t)tcap, sizeof(Py_ssize_t))) == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t j = 0; j < n; j++) {
            Py_ssize_t i = (Py_ssize_t)(hash_slice(ids[j]) & (uint64_t)mask), k;
            while ((k = table[i]) && !slice_eq(ids[k - 1], ids[j]))
                i = (i + 1) & mask;
            if (!k)
                table[i] = k = j + 1;
            slot_of[j] = k - 1;
        }
        for (Py_ssize_t j = 0; j < n; j++) {
            Py_ssize_t i = (Py_ssize_t)(hash_slice(parents[j]) & (uint64_t)mask), k;
            while ((k = table[i]) && !slice_eq(ids[k - 1], parents[j]))
                i = (i + 1) & mask;
            next[j] = -1;
            if (!k)
                level[level_len++] = j;
            else {
                Py_ssize_t s = k - 1;
                if (tail[s] < 0)
                    head[s] = j;
                else
                    next[tail[s]] = j;
                tail[s] = j;
            }
        }
    }
    Py_ssize_t depth = 0, seen = 0;
    while (level_len && seen < n && (!cap || depth < cap)) {
        depth++;
        seen += level_len;
        if (seen >= n || (cap && depth >= cap))
            break; /* the walk ends here whatever the next level holds */
        Py_ssize_t nxt_len = 0;
        for (Py_ssize_t i = 0; i < level_len; i++) {
            for (Py_ssize_t c = head[slot_of[level[i]]]; c >= 0; c = next[c]) {
                if (nxt_len == nxt_cap) {
                    Py_ssize_t ncap = nxt_cap * 2;
                    Py_ssize_t *grown = PyMem_Realloc(nxt, (size_t)ncap * sizeof(Py_ssize_t));
                    if (grown == NULL) {
                        PyErr_NoMemory();
                        goto done;
                    }
                    nxt = grown;
                    nxt_cap = ncap;
                }
                nxt[nxt_len++] = c;
            }
        }
        Py_ssize_t *t = level;
        level = nxt;
        nxt = t;
        Py_ssize_t tc = level_cap;
        level_cap = nxt_cap;
        nxt_cap = tc;
        level_len = nxt_len;
    }
    result = depth;
done:
    PyMem_Free(table);
    PyMem_Free(slot_of);
    PyMem_Free(head);
    PyMem_Free(tail);
    PyMem_Free(next);
    PyMem_Free(level);
    PyMem_Free(nxt);
    return result;
}

/* a span or parent id of at most 8 bytes, as a record holds it (zero-padded): two are equal
 * when both their values and lengths are */
typedef struct {
    uint64_t v;
    uint16_t len;
} short_id;

#define SMALL_TRACE 64

static inline int
short_id_eq(short_id a, short_id b)
{
    return a.v == b.v && a.len == b.len;
}

/* depth_slices for at most SMALL_TRACE spans whose ids are all short: the same walk, its
 * tables on the stack and ids compared as integers; -2 when a level outgrows its table (ids
 * repeated: depth_slices then takes over) */
static Py_ssize_t
depth_short(const short_id *ids, const short_id *parents, Py_ssize_t n, Py_ssize_t cap)
{
    Py_ssize_t slot_of[SMALL_TRACE], head[SMALL_TRACE], tail[SMALL_TRACE], next[SMALL_TRACE];
    Py_ssize_t bufs[2][SMALL_TRACE];
    Py_ssize_t *level = bufs[0], *nxt = bufs[1], level_len = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        Py_ssize_t i = 0;
        while (i < j && !short_id_eq(ids[i], ids[j]))
            i++;
        slot_of[j] = i;
        head[j] = tail[j] = -1;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        Py_ssize_t i = 0;
        while (i < n && !short_id_eq(ids[i], parents[j]))
            i++;
        next[j] = -1;
        if (i == n)
            level[level_len++] = j;
        else {
            Py_ssize_t s = slot_of[i];
            if (tail[s] < 0)
                head[s] = j;
            else
                next[tail[s]] = j;
            tail[s] = j;
        }
    }
    Py_ssize_t depth = 0, seen = 0;
    while (level_len && seen < n && (!cap || depth < cap)) {
        depth++;
        seen += level_len;
        if (seen >= n || (cap && depth >= cap))
            break; /* the walk ends here whatever the next level holds */
        Py_ssize_t nxt_len = 0;
        for (Py_ssize_t i = 0; i < level_len; i++) {
            for (Py_ssize_t c = head[slot_of[level[i]]]; c >= 0; c = next[c]) {
                if (nxt_len == SMALL_TRACE)
                    return -2;
                nxt[nxt_len++] = c;
            }
        }
        Py_ssize_t *tmp = level;
        level = nxt;
        nxt = tmp;
        level_len = nxt_len;
    }
    return depth;
}

/* depth of a held trace's span tree, as depth_slices */
static Py_ssize_t
trace_depth(TraceObject *t, Py_ssize_t cap)
{
    Py_ssize_t n = t->count, k = 0;
    if (n <= SMALL_TRACE) {
        short_id ids[SMALL_TRACE], parents[SMALL_TRACE];
        for (Py_ssize_t c = 0; c < t->nchunks; c++) {
            const chunk *ch = t->chunks[c];
            for (Py_ssize_t j = 0; j < ch->n; j++, k++) {
                const rec *r = &ch->recs[j];
                if (r->id_len == LONG_ID || r->parent_len == LONG_ID)
                    goto general;
                ids[k].v = r->id;
                ids[k].len = r->id_len;
                parents[k].v = r->parent;
                parents[k].len = r->parent_len;
            }
        }
        Py_ssize_t depth = depth_short(ids, parents, n, cap);
        if (depth != -2)
            return depth;
    }
general:
    k = 0;
    slice *ids = PyMem_Malloc((size_t)(2 * n + 1) * sizeof(slice));
    if (ids == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    slice *parents = ids + n;
    for (Py_ssize_t c = 0; c < t->nchunks; c++) {
        const chunk *ch = t->chunks[c];
        for (Py_ssize_t j = 0; j < ch->n; j++, k++) {
            ids[k] = rec_id(ch, &ch->recs[j].id, ch->recs[j].id_len);
            parents[k] = rec_id(ch, &ch->recs[j].parent, ch->recs[j].parent_len);
        }
    }
    Py_ssize_t depth = depth_slices(ids, parents, n, cap);
    PyMem_Free(ids);
    return depth;
}

static PyObject *
tw_max_depth(PyObject *self, PyObject *args)
{
    PyObject *ids, *parents;
    Py_ssize_t cap;
    if (!PyArg_ParseTuple(args, "O!O!n", &PyList_Type, &ids, &PyList_Type, &parents, &cap))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(ids);
    if (PyList_GET_SIZE(parents) != n) {
        PyErr_SetString(PyExc_ValueError, "ids and parents differ in length");
        return NULL;
    }
    slice *s = PyMem_Malloc((size_t)(2 * n + 1) * sizeof(slice));
    if (s == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *id = PyList_GET_ITEM(ids, j), *parent = PyList_GET_ITEM(parents, j);
        if (!PyBytes_Check(id) || !PyBytes_Check(parent)) {
            PyErr_SetString(PyExc_TypeError, "ids are bytes");
            PyMem_Free(s);
            return NULL;
        }
        s[j] = slice_of_bytes(id);
        s[n + j] = slice_of_bytes(parent);
    }
    Py_ssize_t depth = depth_slices(s, s + n, n, cap);
    PyMem_Free(s);
    return depth < 0 ? NULL : PyLong_FromSsize_t(depth);
}

/* ---------------------------------------------------------------------------------------- */
/* release */

/* Span.attributes entry (field 9): KeyValue{key, AnyValue{string_value}} */
static Py_ssize_t
attr_len(Py_ssize_t kn, Py_ssize_t vn)
{
    Py_ssize_t any = field_len(vn);
    Py_ssize_t kv = field_len(kn) + field_len(any);
    return field_len(kv);
}

static uint8_t *
put_attr(uint8_t *o, const char *k, Py_ssize_t kn, const char *v, Py_ssize_t vn)
{
    Py_ssize_t any = field_len(vn);
    Py_ssize_t kv = field_len(kn) + field_len(any);
    *o++ = 0x4A;
    o = put_varint(o, (uint64_t)kv);
    *o++ = 0x0A;
    o = put_varint(o, (uint64_t)kn);
    memcpy(o, k, (size_t)kn);
    o += kn;
    *o++ = 0x12;
    o = put_varint(o, (uint64_t)any);
    *o++ = 0x0A;
    o = put_varint(o, (uint64_t)vn);
    memcpy(o, v, (size_t)vn);
    return o + vn;
}

/* the encoded attributes (keys[i], values[i]) for the i in [from, 5) whose bit is not in skip,
 * then the bytes `tail` (when not NULL) */
static PyObject *
encode_stamp_tail(PyObject *keys, PyObject *const *values, int from, int skip, PyObject *tail)
{
    const char *vs[5];
    Py_ssize_t vn[5], total = 0;
    for (int i = from; i < 5; i++) {
        if (skip >> i & 1)
            continue;
        if (!PyUnicode_Check(values[i])) {
            PyErr_SetString(PyExc_TypeError, "a stamp value is a str");
            return NULL;
        }
        vs[i] = PyUnicode_AsUTF8AndSize(values[i], &vn[i]);
        if (vs[i] == NULL)
            return NULL;
        total += attr_len(PyBytes_GET_SIZE(PyTuple_GET_ITEM(keys, i)), vn[i]);
    }
    Py_ssize_t tail_n = tail != NULL ? PyBytes_GET_SIZE(tail) : 0;
    PyObject *out = PyBytes_FromStringAndSize(NULL, total + tail_n);
    if (out == NULL)
        return NULL;
    uint8_t *o = (uint8_t *)PyBytes_AS_STRING(out);
    for (int i = from; i < 5; i++) {
        if (skip >> i & 1)
            continue;
        PyObject *k = PyTuple_GET_ITEM(keys, i);
        o = put_attr(o, PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k), vs[i], vn[i]);
    }
    if (tail_n)
        memcpy(o, PyBytes_AS_STRING(tail), (size_t)tail_n);
    return out;
}

static PyObject *
encode_stamp(PyObject *keys, PyObject *const *values, int from, int skip)
{
    return encode_stamp_tail(keys, values, from, skip, NULL);
}

#define TIERS_READ 16 /* the bounds of this many tiers kept as C integers once read */

typedef struct {
    PyObject *keys;      /* the five stamp keys, encoded */
    PyObject *key_strs;  /* the same, as str (matched against root_present) */
    PyObject *tiers;     /* tuple of (name, max_spans, max_tool_calls, max_depth) */
    Py_ssize_t depth_cap;
    PyObject *top_tier, *unknown;
    Py_ssize_t bounds[TIERS_READ][3]; /* the first tiers' bounds, once read (in one call) */
    Py_ssize_t nbounds;
} stamp_cfg;

static PyObject *
tier_of(TraceObject *t, stamp_cfg *cfg)
{
    Py_ssize_t spans = t->count, depth = -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(cfg->tiers); i++) {
        PyObject *tier = PyTuple_GET_ITEM(cfg->tiers, i);
        Py_ssize_t max_spans, max_tools, max_depth;
        if (i < cfg->nbounds) {
            max_spans = cfg->bounds[i][0];
            max_tools = cfg->bounds[i][1];
            max_depth = cfg->bounds[i][2];
        }
        else {
            max_spans = PyLong_AsSsize_t(PyTuple_GET_ITEM(tier, 1));
            max_tools = PyLong_AsSsize_t(PyTuple_GET_ITEM(tier, 2));
            max_depth = PyLong_AsSsize_t(PyTuple_GET_ITEM(tier, 3));
            if (PyErr_Occurred())
                return NULL;
            if (i == cfg->nbounds && i < TIERS_READ) {
                cfg->bounds[i][0] = max_spans;
                cfg->bounds[i][1] = max_tools;
                cfg->bounds[i][2] = max_depth;
                cfg->nbounds++;
            }
        }
        if (spans <= max_spans && t->tool_calls <= max_tools) {
            if (depth < 0 && (depth = trace_depth(t, cfg->depth_cap)) < 0)
                return NULL;
            if (depth <= max_depth)
                return PyTuple_GET_ITEM(tier, 0);
        }
    }
    return cfg->top_tier;
}

static int
count_add(PyObject *dict, PyObject *key, Py_ssize_t add)
{
    PyObject *v = PyDict_GetItemWithError(dict, key);
    Py_ssize_t now = 0;
    if (v == NULL) {
        if (PyErr_Occurred())
            return -1;
    }
    else if ((now = PyLong_AsSsize_t(v)) == -1 && PyErr_Occurred())
        return -1;
    PyObject *n = PyLong_FromSsize_t(now + add);
    if (n == NULL)
        return -1;
    int rc = PyDict_SetItem(dict, key, n);
    Py_DECREF(n);
    return rc;
}

/* What one release call counts and looks up again and again, kept in C until its end: the
 * release counts by reason and the outcome counts (added to the dicts in order of first
 * appearance, as one addition per trace would leave them), and the stamp tails last found
 * by the identity of their four values (each looked up in `tails` once per call). */
#define TALLY_SLOTS 8

typedef struct {
    PyObject *key; /* a reference (released by tally_flush) */
    Py_ssize_t a, b;
} tally_slot;

typedef struct {
    tally_slot items[TALLY_SLOTS];
    int n;
} tally;

typedef struct {
    PyObject *values[4]; /* borrowed (held by `keep`) */
    PyObject *tail;      /* borrowed (held by `keep`) */
} tail_slot;

typedef struct {
    tally pending, outcomes;
    tail_slot tails[TALLY_SLOTS];
    int ntails, next_tail;
    PyObject *keep;
} release_memo;

/* pending[reason] = [traces, spans] += [1, n] */
static int
pending_add(PyObject *pending, PyObject *reason, Py_ssize_t traces, Py_ssize_t n)
{
    PyObject *p = PyDict_GetItemWithError(pending, reason);
    if (p == NULL) {
        if (PyErr_Occurred())
            return -1;
        p = Py_BuildValue("[ii]", 0, 0);
        if (p == NULL)
            return -1;
        int rc = PyDict_SetItem(pending, reason, p);
        Py_DECREF(p);
        if (rc < 0)
            return -1;
    }
    if (!PyList_Check(p) || PyList_GET_SIZE(p) != 2) {
        PyErr_SetString(PyExc_TypeError, "pending counts are [traces, spans]");
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        Py_ssize_t v = PyLong_AsSsize_t(PyList_GET_ITEM(p, i));
        if (v == -1 && PyErr_Occurred())
            return -1;
        PyObject *nv = PyLong_FromSsize_t(v + (i ? n : traces));
        if (nv == NULL)
            return -1;
        PyList_SetItem(p, i, nv);
    }
    return 0;
}

/* the tally's counts added to the dict (pending 1: pending_add; 0: count_add of a; 2: not
 * added, dropped): 0 or -1; the tally emptied */
static int
tally_flush(tally *t, PyObject *dict, int pending)
{
    int rc = 0;
    for (int i = 0; i < t->n; i++) {
        if (rc == 0 && pending == 2)
            rc = -1; /* dropped */
        else if (rc == 0)
            rc = pending ? pending_add(dict, t->items[i].key, t->items[i].a, t->items[i].b)
                         : count_add(dict, t->items[i].key, t->items[i].a);
        Py_DECREF(t->items[i].key);
    }
    t->n = 0;
    return rc;
}

/* [a, b] += [a, b] for key (by identity, or an equal str), flushed into dict first when the
 * tally is full: 0 or -1 */
static int
tally_add(tally *t, PyObject *key, Py_ssize_t a, Py_ssize_t b, PyObject *dict, int pending)
{
    for (int i = 0; i < t->n; i++)
        if (t->items[i].key == key ||
            (PyUnicode_CheckExact(key) && PyUnicode_CheckExact(t->items[i].key) &&
             same_value(key, t->items[i].key))) {
            t->items[i].a += a;
            t->items[i].b += b;
            return 0;
        }
    if (t->n == TALLY_SLOTS && tally_flush(t, dict, pending) < 0)
        return -1;
    t->items[t->n].key = Py_NewRef(key);
    t->items[t->n].a = a;
    t->items[t->n].b = b;
    t->n++;
    return 0;
}

/* the stamp of a released workflow trace: ((values...), suffix); a new reference */
static PyObject *
stamp_of(TraceObject *t, stamp_cfg *cfg, PyObject *tails, PyObject *outcomes, release_memo *m)
{
    PyObject *root = t->root;
    PyObject *values[5];
    values[0] = PyTuple_GET_ITEM(root, 1);
    values[1] = PyTuple_GET_ITEM(root, 2);
    values[2] = PyUnicode_GET_LENGTH(t->agent_id) ? t->agent_id : cfg->unknown;
    values[3] = PyTuple_GET_ITEM(root, 3);
    values[4] = tier_of(t, cfg);
    if (values[4] == NULL)
        return NULL;
    if (tally_add(&m->outcomes, values[3], 1, 0, outcomes, 0) < 0)
        return NULL;
    /* the workflow id is unique: encoded each time; the other four repeat: encoded once */
    PyObject *tail = NULL, *vt = NULL, *head = NULL, *stamp = NULL;
    for (int k = 0; k < m->ntails && tail == NULL; k++) {
        tail_slot *ts = &m->tails[k];
        if (ts->values[0] == values[1] && ts->values[1] == values[2] &&
            ts->values[2] == values[3] && ts->values[3] == values[4])
            tail = ts->tail;
    }
    if (tail == NULL) {
        PyObject *tail_key = PyTuple_Pack(4, values[1], values[2], values[3], values[4]);
        if (tail_key == NULL)
            return NULL;
        tail = PyDict_GetItemWithError(tails, tail_key); /* borrowed */
        if (tail == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(tail_key);
                return NULL;
            }
            if (PyDict_GET_SIZE(tails) >= 4096)
                PyDict_Clear(tails);
            PyObject *fresh = encode_stamp(cfg->keys, values, 1, 0);
            int rc = fresh == NULL ? -1 : PyDict_SetItem(tails, tail_key, fresh);
            Py_XDECREF(fresh);
            if (rc < 0) {
                Py_DECREF(tail_key);
                return NULL;
            }
            tail = fresh; /* held by tails */
        }
        if (!PyBytes_Check(tail)) {
            PyErr_SetString(PyExc_TypeError, "a stamp tail is bytes");
            Py_DECREF(tail_key);
            return NULL;
        }
        /* remembered for this call: the key (its values) and the tail held by keep */
        int rc = PyList_Append(m->keep, tail_key) < 0 || PyList_Append(m->keep, tail) < 0;
        Py_DECREF(tail_key);
        if (rc)
            return NULL;
        tail_slot *ts = &m->tails[m->next_tail];
        m->next_tail = (m->next_tail + 1) % TALLY_SLOTS;
        if (m->ntails < TALLY_SLOTS)
            m->ntails++;
        for (int k = 0; k < 4; k++)
            ts->values[k] = values[k + 1];
        ts->tail = tail;
    }
    Py_INCREF(tail);
    vt = PyTuple_Pack(5, values[0], values[1], values[2], values[3], values[4]);
    head = vt == NULL ? NULL : encode_stamp_tail(cfg->keys, values, 0, ~1, tail);
    if (head != NULL && (stamp = PyTuple_Pack(2, vt, head)) != NULL) {
        PyObject_GC_UnTrack(vt); /* str */
        PyObject_GC_UnTrack(stamp);
    }
    Py_DECREF(tail);
    Py_XDECREF(head);
    Py_XDECREF(vt);
    return stamp;
}

/* the OrderedDict lru cut to its newest `size` entries, as popitem(last=False) until it holds
 * `size` would do: the oldest keys read with one iterator, then deleted; 0 or -1 */
static int
lru_trim(PyObject *lru, Py_ssize_t size)
{
    Py_ssize_t excess = PyObject_Size(lru);
    if (excess < 0)
        return -1;
    excess -= size;
    if (excess <= 0)
        return 0;
    PyObject *old = PyList_New(0), *it = old ? PyObject_GetIter(lru) : NULL, *key;
    if (it == NULL) {
        Py_XDECREF(old);
        return -1;
    }
    while (PyList_GET_SIZE(old) < excess && (key = PyIter_Next(it)) != NULL)
        if (append_new(old, key) < 0)
            break;
    Py_DECREF(it);
    int rc = PyErr_Occurred() ? -1 : 0;
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(old); i++)
        rc = PyObject_DelItem(lru, PyList_GET_ITEM(old, i));
    Py_DECREF(old);
    return rc;
}

/* release(batch, cfg, tails, pending_released, pending_outcomes, lru, lru_size, markers,
 *         suffix_for) -> (encoded request, spans, nbytes)
 * batch: list of (trace_id, Trace, reason), taken out of the held traces. For each: its
 * release counted in pending_released[reason] ([traces, spans]); if its root says it is a
 * workflow, its stamp ((workflow.id, type, agent or "unknown", outcome, tier), suffix) computed
 * (tails caches the encoded last four attributes; the outcome counted in pending_outcomes);
 * if it has a root, the stamp (or None) remembered in lru: a LateMemory of lru_size entries
 * (the C store's), or an OrderedDict trimmed to lru_size after the batch (lru_size 0: nothing
 * remembered). Then its spans assembled as by assemble, the root
 * with the stamp attributes it lacks. cfg = (keys (5 bytes), key_strs (5 str), tiers
 * ((name, max_spans, max_tool_calls, max_depth), ...), depth_cap, top_tier, unknown). */
static PyObject *
tw_release(PyObject *self, PyObject *args)
{
    PyObject *batch, *cfg_tuple, *tails, *pending, *outcomes, *lru, *markers, *suffix_for;
    Py_ssize_t lru_size;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!OnO!O", &PyList_Type, &batch, &PyTuple_Type,
                          &cfg_tuple, &PyDict_Type, &tails, &PyDict_Type, &pending,
                          &PyDict_Type, &outcomes, &lru, &lru_size, &PyTuple_Type,
                          &markers, &suffix_for))
        return NULL;
    /* the late-span memory: a LateMemory of lru_size entries, or a dict (an OrderedDict)
     * trimmed to lru_size after the batch */
    LateMemoryObject *late = Py_IS_TYPE(lru, &LateMemoryType) ? (LateMemoryObject *)lru : NULL;
    if (late == NULL && !PyDict_Check(lru)) {
        PyErr_SetString(PyExc_TypeError, "release: lru is a dict or a LateMemory");
        return NULL;
    }
    if (late != NULL && lru_size != late->mem.size) {
        PyErr_SetString(PyExc_ValueError, "release: lru_size differs from the LateMemory's size");
        return NULL;
    }
    stamp_cfg cfg;
    cfg.nbounds = 0;
    if (!PyArg_ParseTuple(cfg_tuple, "O!O!O!nUU;cfg: (keys, key_strs, tiers, depth_cap, top, "
                          "unknown)",
                          &PyTuple_Type, &cfg.keys, &PyTuple_Type, &cfg.key_strs, &PyTuple_Type,
                          &cfg.tiers, &cfg.depth_cap, &cfg.top_tier, &cfg.unknown))
        return NULL;
    if (PyTuple_GET_SIZE(cfg.keys) != 5 || PyTuple_GET_SIZE(cfg.key_strs) != 5) {
        PyErr_SetString(PyExc_TypeError, "cfg: five stamp keys");
        return NULL;
    }
    for (int i = 0; i < 5; i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(cfg.keys, i))) {
            PyErr_SetString(PyExc_TypeError, "cfg: the stamp keys are bytes");
            return NULL;
        }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(cfg.tiers); i++) {
        PyObject *tier = PyTuple_GET_ITEM(cfg.tiers, i);
        if (!PyTuple_Check(tier) || PyTuple_GET_SIZE(tier) != 4 ||
            !PyUnicode_Check(PyTuple_GET_ITEM(tier, 0))) {
            PyErr_SetString(PyExc_TypeError, "cfg: a tier is (name, max_spans, "
                                             "max_tool_calls, max_depth)");
            return NULL;
        }
    }
    if (check_markers(markers) < 0)
        return NULL;
    common_part common = markers_common(markers);
    buckets b = {0};
    PyObject *keep = PyList_New(0), *result = NULL, *empty = PyBytes_FromStringAndSize(NULL, 0);
    PyObject *last_present = NULL; /* the root_present tuple last read, and its skip mask */
    int last_skip = 0;
    release_memo memo;
    memo.pending.n = memo.outcomes.n = memo.ntails = memo.next_tail = 0;
    memo.keep = keep;
    b.index = PyDict_New();
    if (keep == NULL || b.index == NULL || empty == NULL)
        goto done;
    /* copied: suffix_for could change the list */
    PyObject *items = PyList_GetSlice(batch, 0, PyList_GET_SIZE(batch));
    if (items == NULL || append_new(keep, items) < 0)
        goto done;
    Py_ssize_t n_items = PyList_GET_SIZE(items), count = 0, nbytes = 0;
    /* first every release counted and remembered (as the Python path's _forget), then the
     * spans assembled */
    PyObject *stamps = PyList_New(n_items);
    if (stamps == NULL || append_new(keep, stamps) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < n_items; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3 ||
            !PyBytes_Check(PyTuple_GET_ITEM(item, 0))) {
            PyErr_SetString(PyExc_TypeError, "a released trace is (trace_id, Trace, reason)");
            goto done;
        }
        PyObject *tid = PyTuple_GET_ITEM(item, 0);
        TraceObject *t = trace_checked(PyTuple_GET_ITEM(item, 1));
        if (t == NULL)
            goto done;
        Py_ssize_t n = t->count;
        count += n;
        nbytes += t->nbytes;
        if (tally_add(&memo.pending, PyTuple_GET_ITEM(item, 2), 1, n, pending, 1) < 0)
            goto done;
        PyObject *root = t->root == NULL ? Py_None : t->root;
        PyObject *stamp = Py_None;
        if (root != Py_None) {
            int wf = PyObject_IsTrue(PyTuple_GET_ITEM(root, 0));
            if (wf < 0)
                goto done;
            if (wf && (stamp = stamp_of(t, &cfg, tails, outcomes, &memo)) == NULL)
                goto done;
            if (!wf)
                Py_INCREF(stamp);
        }
        else
            Py_INCREF(stamp);
        PyList_SET_ITEM(stamps, i, stamp);
        if (lru_size && root != Py_None && late != NULL) {
            if (late_set(late, tid, stamp) < 0)
                goto done;
        }
        else if (lru_size && root != Py_None) {
            int known = PyDict_Contains(lru, tid);
            if (known < 0 || PyObject_SetItem(lru, tid, stamp) < 0)
                goto done;
            if (known) {
                PyObject *r = PyObject_CallMethod(lru, "move_to_end", "O", tid);
                if (r == NULL)
                    goto done;
                Py_DECREF(r);
            }
        }
    }
    if (tally_flush(&memo.pending, pending, 1) < 0 || tally_flush(&memo.outcomes, outcomes, 0) < 0)
        goto done;
    if (lru_size && late == NULL && lru_trim(lru, lru_size) < 0)
        goto done;
    for (Py_ssize_t i = 0; i < n_items; i++) {
        TraceObject *t = (TraceObject *)PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 1);
        if (trace_checked((PyObject *)t) == NULL)
            goto done; /* changed by suffix_for */
        PyObject *stamp = PyList_GET_ITEM(stamps, i);
        if (stamp == Py_None) {
            if (add_trace(&b, keep, t, empty, stamp, -1, NULL, NULL, markers, common,
                          suffix_for) < 0)
                goto done;
            continue;
        }
        PyObject *suffix = PyTuple_GET_ITEM(stamp, 1), *root_suffix = NULL;
        Py_ssize_t np = PyTuple_GET_SIZE(t->root_present);
        if (np) {
            /* the root's stamp attributes are known from ingest: its suffix without them (the
             * tuples repeat: the last one's answer kept, with a reference) */
            int skip = 0;
            if (t->root_present == last_present)
                skip = last_skip;
            else {
                for (int k = 0; k < 5; k++) {
                    PyObject *key = PyTuple_GET_ITEM(cfg.key_strs, k);
                    int has = PySequence_Contains(t->root_present, key);
                    if (has < 0)
                        goto done;
                    if (has)
                        skip |= 1 << k;
                }
                Py_XSETREF(last_present, Py_NewRef(t->root_present));
                last_skip = skip;
            }
            PyObject *values[5];
            PyObject *vt = PyTuple_GET_ITEM(stamp, 0);
            for (int k = 0; k < 5; k++)
                values[k] = PyTuple_GET_ITEM(vt, k);
            root_suffix = encode_stamp(cfg.keys, values, 0, skip);
            if (root_suffix == NULL || append_new(keep, root_suffix) < 0)
                goto done;
        }
        /* held in `keep`: suffix_for could assign the member */
        PyObject *extra = PyBytes_GET_SIZE(t->root_extra) ? t->root_extra : NULL;
        if (extra != NULL && PyList_Append(keep, extra) < 0)
            goto done;
        if (add_trace(&b, keep, t, suffix, stamp, (root_suffix || extra) ? t->root_index : -1,
                      root_suffix, extra, markers, common, suffix_for) < 0)
            goto done;
    }
    PyObject *encoded = write_buckets(&b);
    if (encoded != NULL)
        result = Py_BuildValue("(Nnn)", encoded, count, nbytes);
done:
    if (keep != NULL) {
        /* after an error: the counts gathered are dropped (with their references) */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        tally_flush(&memo.pending, NULL, 2);
        tally_flush(&memo.outcomes, NULL, 2);
        PyErr_Restore(type, value, tb);
    }
    buckets_free(&b);
    Py_XDECREF(keep);
    Py_XDECREF(empty);
    Py_XDECREF(last_present);
    return result;
}

/* expire(held, now, wait, max_wait) -> [(trace_id, Trace, reason), ...]
 * The traces due in the OrderedDict held, from its front, taken out of it: a trace is due
 * ("wait") when wait has passed since its last span, or ("max_wait", max_wait not 0) when
 * max_wait has passed since it was first queued. A trace not due that received spans since
 * it was queued is queued again (moved to the end, queued_at = last_seen); the first trace
 * not due otherwise ends the walk. */
static PyObject *
tw_expire(PyObject *self, PyObject *args)
{
    PyObject *held;
    double now, wait, max_wait;
    Py_ssize_t max_spans = -1;
    if (!PyArg_ParseTuple(args, "O!ddd|n", &PyDict_Type, &held, &now, &wait, &max_wait,
                          &max_spans))
        return NULL;
    PyObject *out = PyList_New(0);
    PyObject *r_wait = PyUnicode_InternFromString("wait");
    PyObject *r_max = PyUnicode_InternFromString("max_wait");
    if (out == NULL || r_wait == NULL || r_max == NULL)
        goto fail;
    for (;;) {
        Py_ssize_t start = PyList_GET_SIZE(out);
        PyObject *it = PyObject_GetIter(held), *key, *requeue = NULL;
        if (it == NULL)
            goto fail;
        while ((key = PyIter_Next(it)) != NULL) {
            PyObject *obj = PyDict_GetItemWithError(held, key);
            if (obj == NULL || !PyObject_TypeCheck(obj, &TraceType)) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_TypeError, "a held trace is a Trace");
                Py_DECREF(key);
                break;
            }
            TraceObject *t = (TraceObject *)obj;
            PyObject *reason = r_wait;
            if (t->last_seen + wait > now) {
                if (max_wait != 0 && now - t->queued_first >= max_wait)
                    reason = r_max; /* still receiving spans, but held long enough */
                else if (t->last_seen > t->queued_at) {
                    requeue = key; /* spans arrived since it was queued */
                    break;
                }
                else {
                    Py_DECREF(key);
                    break;
                }
            }
            int rc = append_new(out, PyTuple_Pack(3, key, obj, reason));
            Py_DECREF(key);
            if (rc < 0)
                break;
        }
        Py_DECREF(it);
        if (PyErr_Occurred()) {
            Py_XDECREF(requeue);
            goto fail;
        }
        for (Py_ssize_t i = start; i < PyList_GET_SIZE(out); i++)
            if (PyObject_DelItem(held, PyTuple_GET_ITEM(PyList_GET_ITEM(out, i), 0)) < 0) {
                Py_XDECREF(requeue);
                goto fail;
            }
        if (requeue == NULL)
            break;
        /* queued again, behind the others */
        PyObject *obj = PyDict_GetItemWithError(held, requeue);
        PyObject *r = obj ? PyObject_CallMethod(held, "move_to_end", "O", requeue) : NULL;
        Py_DECREF(requeue);
        if (r == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_KeyError, "a held trace vanished");
            goto fail;
        }
        Py_DECREF(r);
        ((TraceObject *)obj)->queued_at = ((TraceObject *)obj)->last_seen;
    }
    Py_DECREF(r_wait);
    Py_DECREF(r_max);
    if (max_spans >= 0) {
        /* in consecutive parts of about max_spans spans, as rules.parts cuts them */
        PyObject *parts = PyList_New(0);
        Py_ssize_t start = 0, spans = 0, n = PyList_GET_SIZE(out);
        for (Py_ssize_t i = 0; parts != NULL && i < n; i++) {
            TraceObject *t = (TraceObject *)PyTuple_GET_ITEM(PyList_GET_ITEM(out, i), 1);
            spans += t->count;
            if (spans >= max_spans || i == n - 1) {
                if (append_new(parts, PyList_GetSlice(out, start, i + 1)) < 0)
                    Py_CLEAR(parts);
                start = i + 1;
                spans = 0;
            }
        }
        Py_DECREF(out);
        return parts;
    }
    return out;
fail:
    Py_XDECREF(out);
    Py_XDECREF(r_wait);
    Py_XDECREF(r_max);
    return NULL;
}

static PyMethodDef methods[] = {
    {"looks_like_run_id", tw_looks_like_run_id, METH_O,
     "looks_like_run_id(value: bytes) -> bool: plugins._agentdialects.looks_like_run_id"},
    {"ingest", (PyCFunction)(void (*)(void))tw_ingest, METH_FASTCALL,
     "ingest(raw, interned, tool_a, tool_b, agent_marker[, facts[, apply]]) -> per-trace "
     "entries, or with apply (leftovers, added_bytes, added_spans) or None"},
    {"assemble", tw_assemble, METH_VARARGS,
     "assemble(entries, markers, suffix_for) -> encoded ExportTraceServiceRequest"},
    {"release", tw_release, METH_VARARGS,
     "release(batch, cfg, tails, pending_released, pending_outcomes, lru, lru_size, markers, "
     "suffix_for) -> (encoded ExportTraceServiceRequest, spans, nbytes)"},
    {"expire", tw_expire, METH_VARARGS,
     "expire(held, now, wait, max_wait[, max_spans]) -> the due traces, taken out of held "
     "(with max_spans: in parts)"},
    {"max_depth", tw_max_depth, METH_VARARGS, "max_depth(ids, parents, cap) -> int"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tracewire",
    "The workflow processor's per-span loops on the OTLP wire format.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__tracewire(void)
{
#ifdef HAVE_AVX2_SEARCH
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2");
#endif
    if (PyType_Ready(&TraceType) < 0 || PyType_Ready(&IngestConfigType) < 0 ||
        PyType_Ready(&LateMemoryType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Trace", (PyObject *)&TraceType) < 0 ||
        PyModule_AddObjectRef(m, "IngestConfig", (PyObject *)&IngestConfigType) < 0 ||
        PyModule_AddObjectRef(m, "LateMemory", (PyObject *)&LateMemoryType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
