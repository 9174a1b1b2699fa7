/* _route: an encoded ExportTraceServiceRequest split by the worker that owns each span's trace
 * (pipeline.workers, service.workers). The pure-Python twin is pipeline._route.split_traces_python;
 * both give the same bytes.
 *
 * route_traces(data, workers)
 *     -1 when the request holds no span; the owner (0 <= owner < workers) when every span
 *     belongs to one worker; else a list of (owner, request, spans) in owner order.
 *
 * A span's trace id is the last length-delimited field 1 of the span (as a decoder keeps it; b""
 * without one); its owner is the big-endian value of its last 8 bytes (all of them when
 * shorter) modulo workers. Nothing but the framing and the trace ids is read.
 *
 * The request of one owner holds, for each ResourceSpans with spans of that owner (in order):
 * its fields other than scope_spans (verbatim, in order), then each ScopeSpans with spans of that
 * owner: its fields other than spans (verbatim), then those spans (verbatim). Fields of the
 * request other than resource_spans, and entries of a field 1 / 2 that are not length-delimited
 * where a message is expected, are left out / kept as the "other" fields as the twin does.
 * Unknown fields are kept whatever their wire type, groups included (skipped to their end, nested
 * up to 100 deep, as protobuf). Malformed framing raises ValueError (pbwire.h).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>

#include "pbwire.h"

typedef struct { const uint8_t *p; Py_ssize_t n; } range;

typedef struct {
    range *items;
    Py_ssize_t len, cap;
} ranges;

/* A span: its owner, its bytes, and the bytes of its whole field in the scope (tag, length,
 * span) when they are what build() writes for it (a one-byte tag 0x12 and the length's shortest
 * varint; NULL otherwise): the spans of one owner that follow one another in the scope are then
 * copied with one memcpy, the same bytes. */
typedef struct { uint32_t owner; range raw; const uint8_t *field; } span_rec;

typedef struct {
    Py_ssize_t others_start, others_end; /* into the shared "others" list */
    Py_ssize_t spans_start, spans_end;   /* into the spans list */
} scope_rec;

typedef struct {
    Py_ssize_t others_start, others_end;
    Py_ssize_t scopes_start, scopes_end;
} resource_rec;

typedef struct {
    ranges others;
    span_rec *spans;
    Py_ssize_t n_spans, cap_spans;
    scope_rec *scopes;
    Py_ssize_t n_scopes, cap_scopes;
    resource_rec *resources;
    Py_ssize_t n_resources, cap_resources;
    /* the trace id of the span walked last and its owner (has_last: set): the spans of a
     * trace mostly come one after another, and the next one's owner is then not computed again
     * (for routing by first arrival, not looked up again in the table: the same answer, since
     * the lookup with the same `now` finds what the first one found or claimed, or the same
     * bucket in hash mode; only a sibling claiming the trace in between could have made
     * the second lookup differ, and then the spans of one request stay together) */
    const uint8_t *last_tid;
    Py_ssize_t last_n;
    uint32_t last_owner;
    int has_last;
} walk;

#define MAX_GROUP_DEPTH 100

static int skip_group(reader *r, uint32_t number, int depth);

/* next_field (pbwire.h) that also takes groups, as protobuf does for unknown fields: a group
 * (wire type 3) is skipped to its end (f->wire == 3, no payload); an end of group where none is
 * open is malformed. Returns 0, 1 at the end, -1 on error. */
static int next_any(reader *r, field *f, int depth) {
    if (r->p >= r->end) return 1;
    const uint8_t *start = r->p;
    uint64_t tag;
    if (read_varint(r, &tag) < 0) return -1;
    int wire = (int)(tag & 7);
    if (wire == 3 || wire == 4) {
        if (tag > 0xffffffffu || (tag >> 3) == 0) return bad("field number");
        if (wire == 4) return bad("unexpected end of group");
        f->number = (uint32_t)(tag >> 3);
        f->wire = 3;
        f->data.p = NULL;
        f->data.n = 0;
        return skip_group(r, f->number, depth);
    }
    r->p = start;
    return next_field(r, f);
}

static int skip_group(reader *r, uint32_t number, int depth) {
    if (depth >= MAX_GROUP_DEPTH) return bad("groups nested too deeply");
    for (;;) {
        if (r->p >= r->end) return bad("unterminated group");
        const uint8_t *start = r->p;
        uint64_t tag;
        if (read_varint(r, &tag) < 0) return -1;
        if (tag > 0xffffffffu || (tag >> 3) == 0) return bad("field number");
        if ((tag & 7) == 4) {
            if ((uint32_t)(tag >> 3) != number) return bad("mismatched end of group");
            return 0;
        }
        r->p = start;
        field f;
        int rc = next_any(r, &f, depth + 1);
        if (rc != 0) return rc < 0 ? -1 : bad("unterminated group");
    }
}

static int grow(void **buf, Py_ssize_t *cap, Py_ssize_t need, size_t size) {
    if (need <= *cap) return 0;
    Py_ssize_t n = *cap ? *cap * 2 : 16;
    while (n < need) n *= 2;
    void *p = PyMem_Realloc(*buf, (size_t)n * size);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *buf = p;
    *cap = n;
    return 0;
}

static int add_other(walk *w, const uint8_t *start, const uint8_t *end) {
    if (grow((void **)&w->others.items, &w->others.cap, w->others.len + 1, sizeof(range)) < 0)
        return -1;
    w->others.items[w->others.len].p = start;
    w->others.items[w->others.len].n = end - start;
    w->others.len++;
    return 0;
}

/* -- routing by first arrival: the ownership table shared by the workers ------------------------
 * (service.worker_routing: first_arrival; the twin is pipeline._route.OwnerTable)
 *
 * Layout (native byte order), B buckets = len / 136: B * 8 slots of two uint64 (key: a 64-bit
 * mix of the trace's 8 routing bytes with the low byte replaced by the owner, 0 = empty; seen:
 * the time of the trace's last span, in seconds), then B uint32 overflow stamps (when the bucket
 * last had no slot for a new trace, or routed one by hash), then B uint32 insertion locks (0 =
 * free, else the time it was taken). A known trace is looked up without the lock; a new one is
 * claimed under it (the bucket re-scanned first), in the first slot empty or not seen for more
 * than ttl seconds; while a bucket's stamp is at most ttl seconds old its new traces go to
 * their hash owner (and renew the stamp), so that a trace routed by hash is never claimed while
 * its spans come at most ttl seconds apart. A lock held longer than TABLE_LOCK_STALE seconds (its
 * holder was killed) is taken over.
 *
 * Dead owners (the optional `dead` argument: one byte a worker, nonzero = the worker is dead and
 * its traces are taken over; the twin's `dead`): a known trace whose owner is dead is adopted by
 * `index`, under the bucket's lock (the bucket re-scanned: a sibling may have adopted it first,
 * then that sibling is its owner), its slot's owner byte rewritten, so that every later span of
 * it goes to the adopter, the dead worker back or not. A trace routed by hash (no table, or a
 * bucket in hash mode) whose hash owner is dead goes to a live sibling chosen by its routing
 * value (hash_fallback): the same in every worker that sees the same dead workers. The caller
 * never passes a dead `index`. */
#define TABLE_WAYS 8
#define TABLE_BUCKET_BYTES (TABLE_WAYS * 16 + 8)
#define TABLE_LOCK_STALE 2u

typedef struct {
    uint32_t workers;
    uint64_t *slots; /* NULL: routing by hash */
    uint32_t *stamps, *locks;
    uint64_t buckets;
    uint32_t index, now, ttl;
    const uint8_t *dead; /* NULL, or `workers` bytes: nonzero = dead, its traces adopted */
} route_ctx;

static uint64_t routing_value(slice tid) {
    uint64_t v = 0;
    if (tid.n >= 8) { /* the last 8 bytes, big-endian: one load */
        memcpy(&v, tid.p + tid.n - 8, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        v = __builtin_bswap64(v);
#endif
        return v;
    }
    Py_ssize_t start = 0;
    for (Py_ssize_t i = start; i < tid.n; i++) v = (v << 8) | tid.p[i];
    return v;
}

static uint64_t mix64(uint64_t h) {
    h += 0x9E3779B97F4A7C15ull;
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
    return h ^ (h >> 31);
}

static void table_lock(uint32_t *lock, uint32_t now) {
    for (;;) {
        uint32_t held = __atomic_load_n(lock, __ATOMIC_ACQUIRE);
        uint32_t stamp = now ? now : 1;
        if (held == 0 || (int64_t)now - (int64_t)held > (int64_t)TABLE_LOCK_STALE) {
            if (__atomic_compare_exchange_n(lock, &held, stamp, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE))
                return;
        }
        sched_yield();
    }
}

/* Seconds from then to now (negative when another worker's clock was a second ahead). */
static int64_t age(uint32_t now, uint32_t then) { return (int64_t)now - (int64_t)then; }

/* Whether bucket b routes its new traces by hash: it overflowed, or routed a new trace by hash,
 * at most ttl seconds ago (then again now: a trace routed by hash stays so while its spans come
 * at most ttl seconds apart). */
static int hash_mode(const route_ctx *c, uint64_t b) {
    uint32_t stamp = __atomic_load_n(&c->stamps[b], __ATOMIC_RELAXED);
    int64_t a = age(c->now, stamp);
    if (a > (int64_t)c->ttl) return 0;
    if (a > 0) __atomic_store_n(&c->stamps[b], c->now, __ATOMIC_RELAXED);
    return 1;
}

static inline int is_dead(const route_ctx *c, uint32_t owner) {
    return c->dead != NULL && owner < c->workers && c->dead[owner];
}

/* The owner of a trace routed by hash: its hash owner, or when that one is dead a live worker
 * among the others, spread by the routing value (the hash owner when every other is dead).
 * Out of line (only with dead workers), behind `fallback`'s test. */
__attribute__((noinline)) static uint32_t hash_fallback(const route_ctx *c, uint64_t v,
                                                        uint32_t hashed) {
    uint32_t n = c->workers;
    if (!is_dead(c, hashed) || n < 2) return hashed;
    uint64_t spread = v / n;
    for (uint32_t j = 0; j < n - 1; j++) {
        uint32_t w = (uint32_t)((hashed + 1 + (spread + j) % (n - 1)) % n);
        if (!c->dead[w]) return w;
    }
    return hashed;
}

static inline uint32_t fallback(const route_ctx *c, uint64_t v, uint32_t hashed) {
    return c->dead == NULL ? hashed : hash_fallback(c, v, hashed);
}

__attribute__((noinline)) static uint32_t table_owner(const route_ctx *c, uint64_t v) {
    uint32_t hashed = (uint32_t)(v % c->workers);
    uint64_t h = mix64(v);
    uint64_t key = h & ~(uint64_t)0xFF;
    if (key == 0) key = 0x100;
    uint64_t b = (h >> 8) % c->buckets;
    uint64_t *s = c->slots + b * TABLE_WAYS * 2;
    uint32_t now = c->now;
    for (int i = 0; i < TABLE_WAYS; i++) {
        uint64_t k = __atomic_load_n(&s[2 * i], __ATOMIC_ACQUIRE);
        if ((k & ~(uint64_t)0xFF) == key) {
            __atomic_store_n(&s[2 * i + 1], (uint64_t)now, __ATOMIC_RELAXED);
            if (!is_dead(c, (uint32_t)(k & 0xFF))) return (uint32_t)(k & 0xFF);
            goto locked; /* its owner is dead: adopted under the lock */
        }
    }
    if (hash_mode(c, b)) return fallback(c, v, hashed);
locked:
    table_lock(&c->locks[b], now);
    uint32_t owner = fallback(c, v, hashed);
    int done = 0;
    for (int i = 0; i < TABLE_WAYS && !done; i++) { /* claimed (or adopted) meanwhile? */
        uint64_t k = __atomic_load_n(&s[2 * i], __ATOMIC_ACQUIRE);
        if ((k & ~(uint64_t)0xFF) == key) {
            __atomic_store_n(&s[2 * i + 1], (uint64_t)now, __ATOMIC_RELAXED);
            owner = (uint32_t)(k & 0xFF);
            if (is_dead(c, owner)) {
                __atomic_store_n(&s[2 * i], key | c->index, __ATOMIC_RELEASE);
                owner = c->index;
            }
            done = 1;
        }
    }
    if (!done && hash_mode(c, b)) done = 1;
    for (int i = 0; i < TABLE_WAYS && !done; i++) {
        uint64_t k = __atomic_load_n(&s[2 * i], __ATOMIC_ACQUIRE);
        uint32_t seen = (uint32_t)__atomic_load_n(&s[2 * i + 1], __ATOMIC_RELAXED);
        if (k == 0 || age(now, seen) > (int64_t)c->ttl) {
            __atomic_store_n(&s[2 * i + 1], (uint64_t)now, __ATOMIC_RELAXED);
            __atomic_store_n(&s[2 * i], key | c->index, __ATOMIC_RELEASE);
            owner = c->index;
            done = 1;
        }
    }
    if (!done) __atomic_store_n(&c->stamps[b], now, __ATOMIC_RELAXED);
    __atomic_store_n(&c->locks[b], 0, __ATOMIC_RELEASE);
    return owner;
}

static inline uint32_t owner_of(slice tid, const route_ctx *c) {
    uint64_t v = routing_value(tid);
    if (c->slots == NULL) return fallback(c, v, (uint32_t)(v % c->workers));
    return table_owner(c, v);
}

/* What span_owner's small-field loop does with a field by its first byte (SMALL, filled as the
 * module is made): a one-byte tag (a field number 1-15) of a length-delimited field (its own
 * class for field 1, the trace id), a varint, a fixed64 or a fixed32; anything else (a longer
 * tag, field number 0, a group, wire types 6 and 7) goes to the general reader. */
enum { SMALL_GENERAL, SMALL_LEN, SMALL_TRACE_ID, SMALL_VARINT, SMALL_FIXED64, SMALL_FIXED32 };
static uint8_t SMALL[256];

static void fill_small(void) {
    for (int tag = 8; tag < 0x80; tag++) {
        switch (tag & 7) {
        case 2: SMALL[tag] = tag == 0x0a ? SMALL_TRACE_ID : SMALL_LEN; break;
        case 0: SMALL[tag] = SMALL_VARINT; break;
        case 1: SMALL[tag] = SMALL_FIXED64; break;
        case 5: SMALL[tag] = SMALL_FIXED32; break;
        default: SMALL[tag] = SMALL_GENERAL;
        }
    }
}

/* Whether two trace ids of n bytes are equal (a W3C id, 16 bytes: two loads each). */
static inline int same_id(const uint8_t *a, const uint8_t *b, Py_ssize_t n) {
    if (n == 16) {
        uint64_t a0, a1, b0, b1;
        memcpy(&a0, a, 8);
        memcpy(&a1, a + 8, 8);
        memcpy(&b0, b, 8);
        memcpy(&b1, b + 8, 8);
        return ((a0 ^ b0) | (a1 ^ b1)) == 0;
    }
    return n == 0 || memcmp(a, b, (size_t)n) == 0;
}

/* A span's fields are walked for its last field 1 (the trace id); most of a span is small
 * fields with a one-byte tag, so those are skipped here without the general walk: a
 * length-delimited field whose length is one byte, a one-byte varint, a fixed64 or fixed32 (the
 * span's times) that fits. Anything else (a longer tag or length, a group, field number 0, a
 * field past the end) goes through next_any, which reads it (or refuses it) as before: the same
 * fields, the same errors. */
static int span_owner(slice span, const route_ctx *workers, uint32_t *owner, walk *w) {
    const uint8_t *p = span.p, *end = span.p + span.n;
    slice tid = {NULL, 0};
    for (;;) {
        /* the small fields, with the position in a register (not in the reader next_any
         * takes by address): ~2x fewer instructions a field */
        while (end - p >= 2) {
            uint8_t tag = p[0], b = p[1];
            switch (SMALL[tag]) {
            case SMALL_LEN:
                if (b >= 0x80 || b > end - p - 2) goto general;
                p += 2 + b;
                continue;
            case SMALL_TRACE_ID: /* field 1, length-delimited: the trace id (so far) */
                if (b >= 0x80 || b > end - p - 2) goto general;
                tid.p = p + 2;
                tid.n = b;
                p += 2 + b;
                continue;
            case SMALL_VARINT:
                if (b >= 0x80) goto general;
                p += 2;
                continue;
            case SMALL_FIXED64:
                if (end - p < 9) goto general;
                p += 9;
                continue;
            case SMALL_FIXED32:
                if (end - p < 5) goto general;
                p += 5;
                continue;
            default:
                goto general;
            }
        }
    general:
        if (p >= end) break;
        reader r = {p, end};
        field f;
        int rc = next_any(&r, &f, 0);
        if (rc < 0) return -1;
        if (rc != 0) break;
        if (f.number == 1 && f.wire == 2) tid = f.data;
        p = r.p;
    }
    if (w->has_last && tid.n == w->last_n && same_id(tid.p, w->last_tid, tid.n)) {
        *owner = w->last_owner;
        return 0;
    }
    *owner = owner_of(tid, workers);
    w->last_tid = tid.p;
    w->last_n = tid.n;
    w->last_owner = *owner;
    w->has_last = 1;
    return 0;
}

static Py_ssize_t varint_size(uint64_t v);

static int walk_scope(walk *w, slice ss, const route_ctx *workers) {
    if (grow((void **)&w->scopes, &w->cap_scopes, w->n_scopes + 1, sizeof(scope_rec)) < 0)
        return -1;
    scope_rec rec;
    rec.others_start = w->others.len;
    rec.spans_start = w->n_spans;
    reader r = {ss.p, ss.p + ss.n};
    field f;
    int rc;
    const uint8_t *start = r.p;
    for (;;) {
        /* a span's field with a one-byte tag and a one- or two-byte length (the usual one,
         * written as build() writes it) is read here; anything else by next_any */
        const uint8_t *p = r.p;
        if (r.end - p >= 3 && p[0] == 0x12) {
            Py_ssize_t n = -1, head = 0;
            if (p[1] < 0x80) {
                n = p[1];
                head = 2;
            } else if (p[2] != 0 && p[2] < 0x80) {
                n = (Py_ssize_t)(p[1] & 0x7f) | ((Py_ssize_t)p[2] << 7);
                head = 3;
            }
            if (n >= 0 && n <= r.end - p - head) {
                f.number = 2;
                f.wire = 2;
                f.data.p = p + head;
                f.data.n = n;
                r.p = p + head + n;
                rc = 0;
                goto span;
            }
        }
        if ((rc = next_any(&r, &f, 0)) != 0) break;
        if (f.number == 2 && f.wire == 2) {
        span:
            if (grow((void **)&w->spans, &w->cap_spans, w->n_spans + 1, sizeof(span_rec)) < 0)
                return -1;
            span_rec *s = &w->spans[w->n_spans];
            s->raw.p = f.data.p;
            s->raw.n = f.data.n;
            s->field = (start[0] == 0x12 &&
                        f.data.p - start == 1 + varint_size((uint64_t)f.data.n))
                           ? start
                           : NULL;
            if (span_owner(f.data, workers, &s->owner, w) < 0) return -1;
            w->n_spans++;
        } else if (add_other(w, start, r.p) < 0) {
            return -1;
        }
        start = r.p;
    }
    if (rc < 0) return -1;
    rec.others_end = w->others.len;
    rec.spans_end = w->n_spans;
    w->scopes[w->n_scopes++] = rec;
    return 0;
}

static int walk_resource(walk *w, slice rs, const route_ctx *workers) {
    resource_rec rec;
    rec.scopes_start = w->n_scopes;
    /* the "other" fields first, then the scopes: collected in two passes so that the others
     * of this resource are contiguous in the shared list */
    reader r = {rs.p, rs.p + rs.n};
    field f;
    int rc;
    const uint8_t *start = r.p;
    rec.others_start = w->others.len;
    while ((rc = next_any(&r, &f, 0)) == 0) {
        if (!(f.number == 2 && f.wire == 2) && add_other(w, start, r.p) < 0) return -1;
        start = r.p;
    }
    if (rc < 0) return -1;
    rec.others_end = w->others.len;
    r.p = rs.p;
    while ((rc = next_any(&r, &f, 0)) == 0) {
        if (f.number == 2 && f.wire == 2 && walk_scope(w, f.data, workers) < 0) return -1;
    }
    if (rc < 0) return -1;
    rec.scopes_end = w->n_scopes;
    if (grow((void **)&w->resources, &w->cap_resources, w->n_resources + 1,
             sizeof(resource_rec)) < 0)
        return -1;
    w->resources[w->n_resources++] = rec;
    return 0;
}

static Py_ssize_t varint_size(uint64_t v) {
    Py_ssize_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *out, uint64_t v) {
    while (v >= 0x80) {
        *out++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *out++ = (uint8_t)v;
    return out;
}

static Py_ssize_t others_len(walk *w, Py_ssize_t a, Py_ssize_t b) {
    Py_ssize_t n = 0;
    for (Py_ssize_t i = a; i < b; i++) n += w->others.items[i].n;
    return n;
}

static uint8_t *put_others(walk *w, Py_ssize_t a, Py_ssize_t b, uint8_t *out) {
    for (Py_ssize_t i = a; i < b; i++) {
        memcpy(out, w->others.items[i].p, (size_t)w->others.items[i].n);
        out += w->others.items[i].n;
    }
    return out;
}

/* The length of one scope's body for owner k (-1 when it holds no span of k). */
static Py_ssize_t scope_len(walk *w, scope_rec *sc, uint32_t k, Py_ssize_t *count) {
    Py_ssize_t n = 0, c = 0;
    for (Py_ssize_t i = sc->spans_start; i < sc->spans_end; i++) {
        const span_rec *s = &w->spans[i];
        if (s->owner != k) continue;
        n += 1 + varint_size((uint64_t)s->raw.n) + s->raw.n;
        c++;
    }
    if (c == 0) return -1;
    *count += c;
    return n + others_len(w, sc->others_start, sc->others_end);
}

/* The request of owner k: each scope's and resource's length for k found once (in `lens`:
 * n_scopes + n_resources entries, -1 = nothing of k), then the bytes written; the spans of k
 * that follow one another in a scope, each field as build() would write it, copied in one
 * memcpy. */
static PyObject *build(walk *w, uint32_t k, Py_ssize_t *lens) {
    Py_ssize_t total = 0, count = 0;
    Py_ssize_t *slen = lens, *rlen = lens + w->n_scopes;
    for (Py_ssize_t i = 0; i < w->n_resources; i++) {
        resource_rec *rr = &w->resources[i];
        Py_ssize_t n = 0;
        int any = 0;
        for (Py_ssize_t j = rr->scopes_start; j < rr->scopes_end; j++) {
            Py_ssize_t sl = slen[j] = scope_len(w, &w->scopes[j], k, &count);
            if (sl < 0) continue;
            n += 1 + varint_size((uint64_t)sl) + sl;
            any = 1;
        }
        rlen[i] = any ? n + others_len(w, rr->others_start, rr->others_end) : -1;
        if (rlen[i] >= 0) total += 1 + varint_size((uint64_t)rlen[i]) + rlen[i];
    }
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, total);
    if (bytes == NULL) return NULL;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(bytes);
    for (Py_ssize_t i = 0; i < w->n_resources; i++) {
        resource_rec *rr = &w->resources[i];
        Py_ssize_t r = rlen[i];
        if (r < 0) continue;
        *out++ = 0x0a;
        out = put_varint(out, (uint64_t)r);
        out = put_others(w, rr->others_start, rr->others_end, out);
        for (Py_ssize_t j = rr->scopes_start; j < rr->scopes_end; j++) {
            scope_rec *sc = &w->scopes[j];
            Py_ssize_t s = slen[j];
            if (s < 0) continue;
            *out++ = 0x12;
            out = put_varint(out, (uint64_t)s);
            out = put_others(w, sc->others_start, sc->others_end, out);
            for (Py_ssize_t x = sc->spans_start; x < sc->spans_end; x++) {
                const span_rec *sp = &w->spans[x];
                if (sp->owner != k) continue;
                if (sp->field != NULL) { /* with the spans of k right behind it, as they are */
                    const uint8_t *from = sp->field, *to = sp->raw.p + sp->raw.n;
                    while (x + 1 < sc->spans_end && w->spans[x + 1].owner == k &&
                           w->spans[x + 1].field == to) {
                        x++;
                        to = w->spans[x].raw.p + w->spans[x].raw.n;
                    }
                    memcpy(out, from, (size_t)(to - from));
                    out += to - from;
                    continue;
                }
                *out++ = 0x12;
                out = put_varint(out, (uint64_t)sp->raw.n);
                memcpy(out, sp->raw.p, (size_t)sp->raw.n);
                out += sp->raw.n;
            }
        }
    }
    PyObject *result = Py_BuildValue("(INn)", (unsigned int)k, bytes, count);
    return result;
}

static void release(walk *w) {
    PyMem_Free(w->others.items);
    PyMem_Free(w->spans);
    PyMem_Free(w->scopes);
    PyMem_Free(w->resources);
}

/* The table's buffer into c (its view in *tv, to release); -1 with an exception set. */
static int open_table(route_ctx *c, PyObject *table, Py_buffer *tv, long index, long now,
                      long ttl) {
    if (c->workers > 256) {
        PyErr_SetString(PyExc_ValueError, "routing by first arrival takes at most 256 workers");
        return -1;
    }
    if (index < 0 || index >= (long)c->workers || now < 0 || now > 0xFFFFFFFFL || ttl < 0 ||
        ttl > 0xFFFFFFFFL) {
        PyErr_SetString(PyExc_ValueError, "index, now or ttl out of range");
        return -1;
    }
    if (PyObject_GetBuffer(table, tv, PyBUF_WRITABLE) < 0) return -1;
    c->buckets = (uint64_t)tv->len / TABLE_BUCKET_BYTES;
    if (c->buckets == 0 || ((uintptr_t)tv->buf & 7) != 0) {
        PyBuffer_Release(tv);
        PyErr_SetString(PyExc_ValueError, "the table is too small or not aligned");
        return -1;
    }
    c->slots = (uint64_t *)tv->buf;
    c->stamps = (uint32_t *)((uint8_t *)tv->buf + c->buckets * TABLE_WAYS * 16);
    c->locks = c->stamps + c->buckets;
    c->index = (uint32_t)index;
    c->now = (uint32_t)now;
    c->ttl = (uint32_t)ttl;
    return 0;
}

/* The dead workers' bytes into c (its view in *dv, to release; nothing for None); -1 with an
 * exception set. */
static int open_dead(route_ctx *c, PyObject *dead, Py_buffer *dv) {
    if (dead == Py_None) return 0;
    if (PyObject_GetBuffer(dead, dv, PyBUF_SIMPLE) < 0) return -1;
    if (dv->len < (Py_ssize_t)c->workers) {
        PyBuffer_Release(dv);
        PyErr_SetString(PyExc_ValueError, "dead must hold a byte for every worker");
        return -1;
    }
    c->dead = (const uint8_t *)dv->buf;
    return 0;
}

static PyObject *route_traces(PyObject *module, PyObject *args) {
    Py_buffer view, tview, dview;
    long workers_arg, index = 0, now = 0, ttl = 0;
    PyObject *table = Py_None, *dead = Py_None;
    if (!PyArg_ParseTuple(args, "y*l|OlllO", &view, &workers_arg, &table, &index, &now, &ttl,
                          &dead))
        return NULL;
    if (workers_arg < 1 || workers_arg > 65536) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "workers must be between 1 and 65536");
        return NULL;
    }
    route_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.workers = (uint32_t)workers_arg;
    if (table != Py_None && open_table(&ctx, table, &tview, index, now, ttl) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (open_dead(&ctx, dead, &dview) < 0) {
        if (ctx.slots != NULL) PyBuffer_Release(&tview);
        PyBuffer_Release(&view);
        return NULL;
    }
    const route_ctx *workers_ctx = &ctx;
    uint32_t workers = ctx.workers;
    walk w;
    memset(&w, 0, sizeof(w));
    PyObject *result = NULL;
    reader r = {(const uint8_t *)view.buf, (const uint8_t *)view.buf + view.len};
    field f;
    int rc;
    while ((rc = next_any(&r, &f, 0)) == 0) {
        if (f.number == 1 && f.wire == 2 && walk_resource(&w, f.data, workers_ctx) < 0)
            goto done;
    }
    if (rc < 0) goto done;
    if (w.n_spans == 0) {
        result = PyLong_FromLong(-1);
        goto done;
    }
    /* which owners, in order */
    uint8_t *present = PyMem_Calloc(workers, 1);
    if (present == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t distinct = 0;
    uint32_t first = w.spans[0].owner;
    for (Py_ssize_t i = 0; i < w.n_spans; i++) {
        if (!present[w.spans[i].owner]) {
            present[w.spans[i].owner] = 1;
            distinct++;
        }
    }
    if (distinct == 1) {
        PyMem_Free(present);
        result = PyLong_FromUnsignedLong(first);
        goto done;
    }
    Py_ssize_t *lens = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(w.n_scopes + w.n_resources + 1));
    result = lens == NULL ? PyErr_NoMemory() : PyList_New(0);
    if (result == NULL) {
        PyMem_Free(lens);
        PyMem_Free(present);
        goto done;
    }
    for (uint32_t k = 0; k < workers; k++) {
        if (!present[k]) continue;
        PyObject *part = build(&w, k, lens);
        if (part == NULL || PyList_Append(result, part) < 0) {
            Py_XDECREF(part);
            Py_CLEAR(result);
            break;
        }
        Py_DECREF(part);
    }
    PyMem_Free(lens);
    PyMem_Free(present);
done:
    release(&w);
    PyBuffer_Release(&view);
    if (ctx.slots != NULL) PyBuffer_Release(&tview);
    if (ctx.dead != NULL) PyBuffer_Release(&dview);
    return result;
}

static PyObject *trace_owner(PyObject *module, PyObject *args) {
    Py_buffer tid, tview, dview;
    long workers_arg, index, now, ttl;
    PyObject *table, *dead = Py_None;
    if (!PyArg_ParseTuple(args, "y*lOlll|O", &tid, &workers_arg, &table, &index, &now, &ttl,
                          &dead))
        return NULL;
    route_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    if (workers_arg < 1 || workers_arg > 65536) {
        PyBuffer_Release(&tid);
        PyErr_SetString(PyExc_ValueError, "workers must be between 1 and 65536");
        return NULL;
    }
    ctx.workers = (uint32_t)workers_arg;
    if (open_table(&ctx, table, &tview, index, now, ttl) < 0) {
        PyBuffer_Release(&tid);
        return NULL;
    }
    if (open_dead(&ctx, dead, &dview) < 0) {
        PyBuffer_Release(&tview);
        PyBuffer_Release(&tid);
        return NULL;
    }
    slice s = {(const uint8_t *)tid.buf, tid.len};
    uint32_t owner = owner_of(s, &ctx);
    if (ctx.dead != NULL) PyBuffer_Release(&dview);
    PyBuffer_Release(&tview);
    PyBuffer_Release(&tid);
    return PyLong_FromUnsignedLong(owner);
}

static PyMethodDef methods[] = {
    {"route_traces", route_traces, METH_VARARGS,
     "route_traces(data, workers[, table, index, now, ttl, dead]) -> -1 | owner | "
     "[(owner, request, spans), ...]"},
    {"trace_owner", trace_owner, METH_VARARGS,
     "trace_owner(trace_id, workers, table, index, now, ttl[, dead]) -> owner (claimed when "
     "new, adopted when its owner is dead)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_route", "Splits OTLP traces requests by owning worker.", -1, methods,
};

PyMODINIT_FUNC PyInit__route(void) {
    fill_small();
    return PyModule_Create(&module);
}
