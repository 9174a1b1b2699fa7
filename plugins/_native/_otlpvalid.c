/* The edge check of OTLP requests: everything a full protobuf parse would refuse, plus the
 * lengths of OTLP ids, in one walk that creates no object (pipeline/_otlpvalid.py explains
 * the rules and holds the pure-Python twin; its tests compare both).
 *
 * validate_traces / validate_metrics / validate_logs (data) walk an encoded
 * Export{Trace,Metrics,Logs}ServiceRequest at every depth with the message tables of
 * _otlpvalid_tables.h (generated from the OTLP descriptors: field number -> wire kind,
 * repeated, nested message, id length), as upb (protobuf's C backend) parses it:
 *
 * - a tag is a varint of at most 5 bytes and 32 bits; field number 0, wire types 6 and 7 and an
 *   end-group tag outside a group are refused;
 * - a varint has at most 10 bytes (the extra bits of the tenth are ignored); a length at most
 *   5 bytes and 2^31 - 1, and must stay inside its message; fixed-width values must be whole;
 * - a known field read with the wire type of its declaration is checked: strings are UTF-8
 *   (no surrogates, no overlong forms, nothing past U+10FFFF), messages are walked (at most 100
 *   levels below the request, as upb's recursion limit), repeated scalars may come packed
 *   (varints inside the packed bytes, fixed-width data a whole number of elements) or not;
 * - any other field is unknown: skipped, groups to their matching end-group tag (which counts
 *   toward the same depth limit); a field number 0 inside a group is refused (newer upb refuses
 *   it, older skips it).
 *
 * Ids: a message's id fields are checked when it ends, on their last occurrence, as a full
 * parse keeps them; the first id of the wrong length is kept and raised only once the whole
 * request parsed (so a parse error, which a full parse reports first, wins). The members of a
 * metric's data oneof that a later member replaces are dropped by a full parse: their items are
 * not counted and an id error inside them is forgotten.
 *
 * The usual shapes of a span and of an attribute (one-byte tags, fields of their declared wire
 * types) are checked in place (fast_span, fast_keyvalue); anything else in them is handed to
 * the generic walk, which decides and reports.
 *
 * Returns the items (spans, data points, log records) as a full parse holds them; raises
 * ValueError naming the field, e.g. "resource_spans[0].resource.attributes[2].value.
 * string_value: invalid UTF-8". Every read is bounds-checked; recursion is bounded by the
 * depth limit (walk_message takes about 300 bytes of C stack per level: 40 KiB at most).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

enum { K_VARINT, K_FIXED64, K_FIXED32, K_STRING, K_BYTES, K_MESSAGE };
#define PF_REPEATED 1
#define PF_COUNTED 2     /* each element is one item of the request */
#define PF_ID_OPTIONAL 4 /* an id that may be empty */
#define PF_ONEOF 8       /* a member of the message's oneof holding items or ids */

typedef struct pbmsg pbmsg;
typedef struct {
    const char *name;
    uint32_t number;
    uint8_t kind, flags, id_len; /* id_len: an OTLP id of this length (0: not an id) */
    int8_t id_slot;
    const pbmsg *sub;
} pbfield;
struct pbmsg {
    const char *name;
    uint32_t top;        /* the highest field number */
    const int8_t *index; /* field number -> index in fields, -1: unknown */
    const pbfield *fields;
    int nfields, nids;
    const int8_t *ids; /* id slot -> index in fields */
};

#include "_otlpvalid_tables.h"

#define MAX_DEPTH 100 /* upb's default recursion limit */
#define MAX_IDS 4

/* A message being walked, and how its parent reached it (for the path in an error). */
typedef struct frame {
    const struct frame *parent;
    const pbfield *field;  /* the parent's field holding this message (NULL: the request) */
    const uint8_t *start;  /* where the parent's bytes begin */
    const uint8_t *tag;    /* where this message's tag stands in the parent */
} frame;

typedef struct {
    PyObject *id_error; /* the first id of the wrong length (its message), or NULL */
} walk;

/* -- errors ---------------------------------------------------------------------------------- */

/* Skips a value already known to be well formed (for counting elements before a tag). */
static const uint8_t *
skip_good(const uint8_t *p, const uint8_t *end, uint32_t tag)
{
    uint64_t n = 0;
    int shift = 0;
    switch (tag & 7) {
    case 0:
        while (p < end && (*p & 0x80))
            p++;
        return p < end ? p + 1 : end;
    case 1:
        return end - p >= 8 ? p + 8 : end;
    case 5:
        return end - p >= 4 ? p + 4 : end;
    case 2:
        while (p < end && shift < 35) {
            uint8_t b = *p++;
            n |= (uint64_t)(b & 0x7f) << shift;
            if (!(b & 0x80))
                return n <= (uint64_t)(end - p) ? p + n : end;
            shift += 7;
        }
        return end;
    case 3: {
        uint32_t end_tag = (tag & ~7u) | 4;
        while (p < end) {
            uint32_t inner = 0;
            shift = 0;
            for (;;) {
                if (p >= end || shift > 28)
                    return end;
                uint8_t b = *p++;
                inner |= (uint32_t)(b & 0x7f) << shift;
                if (!(b & 0x80))
                    break;
                shift += 7;
            }
            if (inner == end_tag)
                return p;
            p = skip_good(p, end, inner);
        }
        return end;
    }
    default:
        return end;
    }
}

/* The elements of field `number` in a message's bytes [start, tag). */
static Py_ssize_t
index_before(const uint8_t *start, const uint8_t *tag, uint32_t number)
{
    Py_ssize_t n = 0;
    const uint8_t *p = start;
    while (p < tag) {
        uint32_t t = 0;
        int shift = 0;
        for (;;) {
            if (p >= tag || shift > 28)
                return n;
            uint8_t b = *p++;
            t |= (uint32_t)(b & 0x7f) << shift;
            if (!(b & 0x80))
                break;
            shift += 7;
        }
        if ((t >> 3) == number && (t & 7) == 2)
            n++;
        p = skip_good(p, tag, t);
    }
    return n;
}

#define MAX_FRAMES (MAX_DEPTH + 4)
#define PATH_BUF 2048

typedef struct { char buf[PATH_BUF]; size_t n; } text;

static void
put(text *t, const char *fmt, ...)
{
    if (t->n >= PATH_BUF - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(t->buf + t->n, PATH_BUF - t->n, fmt, ap);
    va_end(ap);
    if (k > 0)
        t->n += (size_t)k < PATH_BUF - t->n ? (size_t)k : PATH_BUF - 1 - t->n;
}

static void
put_component(text *t, const pbfield *f, const uint8_t *start, const uint8_t *tag, int first)
{
    put(t, first ? "%s" : ".%s", f->name);
    if ((f->flags & PF_REPEATED) && f->kind >= K_STRING && tag != NULL)
        put(t, "[%zd]", index_before(start, tag, f->number));
}

/* The path of `fr`'s message, then of its field `f` (tag at `tag` in bytes from `start`; NULL:
 * no index; repeated scalars, packed or not, have none), with 6 components, "<n more>" and the last 6 when there are more than 16. */
static void
put_path(text *t, const frame *fr, const pbfield *f, const uint8_t *start, const uint8_t *tag)
{
    const frame *chain[MAX_FRAMES];
    int n = 0;
    for (const frame *x = fr; x != NULL && x->field != NULL && n < MAX_FRAMES; x = x->parent)
        chain[n++] = x;
    int total = n + (f != NULL);
    int k = 0; /* components written */
    for (int i = n - 1; i >= 0; i--, k++) {
        if (total > 16 && k >= 6 && k < total - 6) {
            if (k == 6)
                put(t, ".<%d more>", total - 12);
            continue;
        }
        put_component(t, chain[i]->field, chain[i]->start, chain[i]->tag, k == 0);
    }
    if (f != NULL)
        put_component(t, f, start, tag, k == 0);
}

static PyObject *
message_text(const frame *fr, const pbfield *f, const uint8_t *start, const uint8_t *tag,
             const char *fmt, va_list ap)
{
    text t;
    t.n = 0;
    t.buf[0] = 0;
    put_path(&t, fr, f, start, tag);
    if (t.n)
        put(&t, ": ");
    if (t.n < PATH_BUF - 1) {
        int k = vsnprintf(t.buf + t.n, PATH_BUF - t.n, fmt, ap);
        if (k > 0)
            t.n += (size_t)k < PATH_BUF - t.n ? (size_t)k : PATH_BUF - 1 - t.n;
    }
    return PyUnicode_DecodeUTF8(t.buf, (Py_ssize_t)t.n, "replace");
}

/* Raises ValueError for the message of `fr` (f == NULL) or its field f. Returns -1. */
static int
fail_at(const frame *fr, const pbfield *f, const uint8_t *start, const uint8_t *tag,
        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PyObject *msg = message_text(fr, f, start, tag, fmt, ap);
    va_end(ap);
    if (msg != NULL) {
        PyErr_SetObject(PyExc_ValueError, msg);
        Py_DECREF(msg);
    }
    return -1;
}

#define FAIL(...) fail_at(fr, NULL, NULL, NULL, __VA_ARGS__)
#define FAIL_FIELD(f, ...) fail_at(fr, (f), start, tag_at, __VA_ARGS__)

/* -- reading --------------------------------------------------------------------------------- */

/* UTF-8 as Unicode defines it (and upb checks it): no surrogates, no overlong forms, nothing
 * past U+10FFFF. */
static int
utf8_check(const uint8_t *s, const uint8_t *end)
{
    while (s < end) {
        uint8_t c = *s;
        if (c < 0x80) {
            s++;
            continue;
        }
        if (c < 0xC2)
            return 0;
        if (c < 0xE0) {
            if (end - s < 2 || (s[1] & 0xC0) != 0x80)
                return 0;
            s += 2;
            continue;
        }
        if (c < 0xF0) {
            if (end - s < 3)
                return 0;
            uint8_t c1 = s[1];
            if (c == 0xE0 ? (c1 < 0xA0 || c1 > 0xBF)
                : c == 0xED ? (c1 < 0x80 || c1 > 0x9F)
                : (c1 & 0xC0) != 0x80)
                return 0;
            if ((s[2] & 0xC0) != 0x80)
                return 0;
            s += 3;
            continue;
        }
        if (c < 0xF5) {
            if (end - s < 4)
                return 0;
            uint8_t c1 = s[1];
            if (c == 0xF0 ? (c1 < 0x90 || c1 > 0xBF)
                : c == 0xF4 ? (c1 < 0x80 || c1 > 0x8F)
                : (c1 & 0xC0) != 0x80)
                return 0;
            if ((s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
                return 0;
            s += 4;
            continue;
        }
        return 0;
    }
    return 1;
}

static inline uint64_t load64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t load32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* Valid UTF-8? All-ASCII strings (the usual case) are told by OR-ing their bytes, 8 at a time
 * (overlapping reads cover the tail), without a branch per byte. */
static inline int
utf8_valid(const uint8_t *s, const uint8_t *end)
{
    size_t n = (size_t)(end - s);
    uint64_t acc;
    if (n >= 8) {
        acc = load64(end - 8);
        for (size_t i = 0; i + 8 <= n; i += 8)
            acc |= load64(s + i);
    }
    else if (n >= 4)
        acc = load32(s) | load32(end - 4);
    else if (n)
        acc = s[0] | s[n / 2] | s[n - 1];
    else
        return 1;
    if (!(acc & 0x8080808080808080ULL))
        return 1;
    return utf8_check(s, end);
}

/* A tag: at most 5 bytes and 32 bits. Returns NULL (with *why) when invalid. */
static inline const uint8_t *
read_tag(const uint8_t *p, const uint8_t *end, uint32_t *tag, const char **why)
{
    if (p < end && *p < 0x80) {
        *tag = *p;
        return p + 1;
    }
    uint64_t v = 0;
    for (int i = 0; i < 5; i++) {
        if (p >= end) {
            *why = "truncated tag";
            return NULL;
        }
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (v > 0xffffffffu) {
                *why = "invalid tag";
                return NULL;
            }
            *tag = (uint32_t)v;
            return p;
        }
    }
    *why = "invalid tag";
    return NULL;
}

/* Past a varint of at most 10 bytes; NULL (with *why) when invalid. */
static inline const uint8_t *
skip_varint(const uint8_t *p, const uint8_t *end, const char **why)
{
    for (int i = 0; i < 10; i++) {
        if (p >= end) {
            *why = "truncated varint";
            return NULL;
        }
        if (!(*p++ & 0x80))
            return p;
    }
    *why = "varint longer than 10 bytes";
    return NULL;
}

/* A length: at most 5 bytes and 2^31 - 1, inside [p, end). NULL (with *why) when invalid. */
static inline const uint8_t *
read_length(const uint8_t *p, const uint8_t *end, Py_ssize_t *len, const char **why)
{
    uint64_t v;
    if (p < end && *p < 0x80) {
        v = *p++;
    }
    else {
        v = 0;
        int i = 0;
        for (;; i++) {
            if (i == 5) {
                *why = "invalid length";
                return NULL;
            }
            if (p >= end) {
                *why = "truncated length";
                return NULL;
            }
            uint8_t b = *p++;
            v |= (uint64_t)(b & 0x7f) << (7 * i);
            if (!(b & 0x80))
                break;
        }
        if (v > 0x7fffffffu) {
            *why = "invalid length";
            return NULL;
        }
    }
    if (v > (uint64_t)(end - p)) {
        *why = "length past the end";
        return NULL;
    }
    *len = (Py_ssize_t)v;
    return p;
}

/* The body of an unknown group (after its start tag, `budget` levels left), past its end tag.
 * Errors name the outermost group's field number. */
static const uint8_t *
group_body(const uint8_t *p, const uint8_t *end, uint32_t number, uint32_t outer, int budget,
           const frame *fr)
{
    const uint32_t end_tag = number << 3 | 4;
    const char *why = NULL;
    while (p < end) {
        uint32_t tag;
        p = read_tag(p, end, &tag, &why);
        if (p == NULL) {
            FAIL("%s", why);
            return NULL;
        }
        if (tag == end_tag)
            return p;
        uint32_t n = tag >> 3;
        int wire = (int)(tag & 7);
        if (n == 0) {
            FAIL("field %u: field number 0", outer);
            return NULL;
        }
        switch (wire) {
        case 0:
            p = skip_varint(p, end, &why);
            break;
        case 1:
            if (end - p < 8)
                why = "truncated fixed64", p = NULL;
            else
                p += 8;
            break;
        case 5:
            if (end - p < 4)
                why = "truncated fixed32", p = NULL;
            else
                p += 4;
            break;
        case 2: {
            Py_ssize_t len;
            p = read_length(p, end, &len, &why);
            if (p != NULL)
                p += len;
            break;
        }
        case 3:
            if (budget - 1 < 0) {
                FAIL("field %u: nesting deeper than %d levels", outer, MAX_DEPTH);
                return NULL;
            }
            p = group_body(p, end, n, outer, budget - 1, fr);
            if (p == NULL)
                return NULL; /* raised */
            break;
        case 4:
            why = "mismatched end-group tag", p = NULL;
            break;
        default:
            FAIL("field %u: invalid wire type %d", outer, wire);
            return NULL;
        }
        if (p == NULL) {
            FAIL("field %u: %s", outer, why);
            return NULL;
        }
    }
    FAIL("field %u: group not closed", outer);
    return NULL;
}

/* A KeyValue in its usual shape (a key, then a value holding one string, bool, int or double,
 * every length and tag in one byte), checked in place: 1 when it is valid. Anything else (0) is
 * walked by walk_message, which reports what is wrong. */
static inline __attribute__((always_inline)) int
fast_keyvalue(const uint8_t *p, const uint8_t *end)
{
    /* the usual of all: a string key, a string value, all ASCII: 0a K key 12 V 0a S value with
     * V = S + 2 (the tags and one-byte lengths being ASCII too, one check covers it all) */
    Py_ssize_t n = end - p;
    if (n >= 6 && p[0] == 0x0a && p[1] < 0x80) {
        Py_ssize_t k = p[1];
        if (k + 6 <= n && p[k + 2] == 0x12 && p[k + 3] < 0x80 && p[k + 3] == n - k - 4 &&
            p[k + 4] == 0x0a && p[k + 5] == n - k - 6) {
            uint64_t acc;
            if (n >= 8) {
                acc = load64(end - 8); /* the tail, overlapping */
                for (const uint8_t *q = p; end - q >= 8; q += 8)
                    acc |= load64(q);
            }
            else
                acc = load32(p) | load32(end - 4);
            if (!(acc & 0x8080808080808080ULL))
                return 1;
        }
    }
    if (end - p < 2 || p[0] != 0x0a || p[1] >= 0x80 || p[1] > end - p - 2)
        return 0;
    const uint8_t *key = p + 2;
    p = key + p[1];
    if (!utf8_valid(key, p))
        return 0;
    if (p == end)
        return 1;
    if (end - p < 2 || p[0] != 0x12 || p[1] >= 0x80 || p[1] != end - p - 2)
        return 0;
    p += 2; /* the AnyValue, to the end */
    if (p == end)
        return 1;
    switch (p[0]) {
    case 0x0a: /* string_value */
        if (end - p < 2 || p[1] >= 0x80 || p[1] != end - p - 2)
            return 0;
        return utf8_valid(p + 2, end);
    case 0x10: /* bool_value */
    case 0x18: /* int_value */
        for (const uint8_t *q = p + 1; q < end && q - p <= 10; q++)
            if (!(*q & 0x80))
                return q == end - 1;
        return 0;
    case 0x21: /* double_value */
        return end - p == 9;
    default:
        return 0;
    }
}

/* -- messages -------------------------------------------------------------------------------- */

/* Keeps the message of the id `f` of `fr`'s message, `n` bytes long. */
static int
keep_id_error(walk *w, const frame *fr, const pbfield *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    w->id_error = message_text(fr, f, NULL, NULL, fmt, ap);
    va_end(ap);
    return w->id_error == NULL ? -1 : 0;
}

/* At the end of a message: keeps the first of its ids whose last length (ids[slot]) is wrong. */
static int
check_ids(walk *w, const pbmsg *m, const Py_ssize_t *ids, const frame *fr)
{
    for (int slot = 0; slot < m->nids; slot++) {
        const pbfield *f = &m->fields[m->ids[slot]];
        Py_ssize_t n = ids[slot];
        if (n != f->id_len && !(n == 0 && (f->flags & PF_ID_OPTIONAL))) {
            const char *fmt = f->flags & PF_ID_OPTIONAL ? "%zd bytes, expected %d (or none)"
                                                        : "%zd bytes, expected %d";
            return keep_id_error(w, fr, f, fmt, n, (int)f->id_len);
        }
    }
    return 0;
}

static Py_ssize_t walk_message(walk *w, const pbmsg *m, const uint8_t *start, const uint8_t *end,
                               int budget, const frame *fr);

#define SPAN_FIELD(number) (&F_trace_v1_Span[N_trace_v1_Span[number]])

/* A span in its usual shape (one-byte tags; ids, strings, varints and fixed-width values of
 * the declared wire types; attributes, events, links and status walked as messages), checked
 * without the generic dispatch: its items (0), or -1 with ValueError set (an error inside an
 * attribute, event, link or status, reported as walk_message reports it), or -2 when anything
 * else turns up: the caller then walks the whole span with walk_message, which decides. */
static Py_ssize_t
fast_span(walk *w, const uint8_t *start, const uint8_t *end, int budget, const frame *fr)
{
    Py_ssize_t ids[MAX_IDS] = {0, 0, 0, 0}; /* the slots of M_trace_v1_Span: 1, 2, 4 */
    const uint8_t *p = start;
    const char *why;
    if (budget < 2)
        return -2;
    while (p < end) {
        const uint8_t *tag_at = p;
        uint8_t tag = *p++;
        Py_ssize_t len;
        switch (tag) {
        case 0x0a: /* trace_id */
        case 0x12: /* span_id */
        case 0x22: /* parent_span_id */
            p = read_length(p, end, &len, &why);
            if (p == NULL)
                return -2;
            ids[tag == 0x0a ? 0 : tag == 0x12 ? 1 : 2] = len;
            p += len;
            break;
        case 0x1a: /* trace_state */
        case 0x2a: /* name */
            p = read_length(p, end, &len, &why);
            if (p == NULL || !utf8_valid(p, p + len))
                return -2;
            p += len;
            break;
        case 0x30: /* kind */
        case 0x50: /* dropped_attributes_count */
        case 0x60: /* dropped_events_count */
        case 0x70: /* dropped_links_count */
            p = skip_varint(p, end, &why);
            if (p == NULL)
                return -2;
            break;
        case 0x39: /* start_time_unix_nano */
        case 0x41: /* end_time_unix_nano */
            if (end - p < 8)
                return -2;
            p += 8;
            break;
        case 0x85: /* flags: field 16, fixed32 */
            if (end - p < 5 || *p != 0x01)
                return -2;
            p += 5;
            break;
        case 0x4a: /* attributes */
        case 0x5a: /* events */
        case 0x6a: /* links */
        case 0x7a: { /* status */
            p = read_length(p, end, &len, &why);
            if (p == NULL)
                return -2;
            const uint8_t *value_end = p + len;
            if (tag != 0x4a || !fast_keyvalue(p, value_end)) {
                const pbfield *f = SPAN_FIELD(tag >> 3);
                frame child = {fr, f, start, tag_at};
                if (walk_message(w, f->sub, p, value_end, budget - 1, &child) < 0)
                    return -1;
            }
            p = value_end;
            break;
        }
        default:
            return -2;
        }
    }
    int ids_ok = ids[0] == 16 && ids[1] == 8 && (ids[2] == 0 || ids[2] == 8);
    if (!ids_ok && w->id_error == NULL && check_ids(w, &M_trace_v1_Span, ids, fr) < 0)
        return -1;
    return 0;
}

/* Walks one message's bytes [start, end) with `budget` levels left below it; returns its items,
 * or -1 with ValueError set. */
static Py_ssize_t
walk_message(walk *w, const pbmsg *m, const uint8_t *start, const uint8_t *end, int budget,
             const frame *fr)
{
    Py_ssize_t ids[MAX_IDS] = {0, 0, 0, 0};
    Py_ssize_t items = 0, member_items = 0;
    uint32_t member = 0; /* the oneof member holding items or ids, as last seen */
    int member_mark = 0; /* an id error was kept before it began */
    const uint8_t *p = start;
    const char *why = NULL;
    while (p < end) {
        const uint8_t *tag_at = p;
        uint32_t tag;
        p = read_tag(p, end, &tag, &why);
        if (p == NULL)
            return FAIL("%s", why);
        uint32_t number = tag >> 3;
        int wire = (int)(tag & 7);
        if (number == 0)
            return FAIL("field number 0");
        const pbfield *f = NULL;
        if (number <= m->top) {
            int i = m->index[number];
            if (i >= 0)
                f = &m->fields[i];
        }
        switch (wire) {
        case 0:
            p = skip_varint(p, end, &why);
            if (p == NULL) {
                if (f != NULL && f->kind == K_VARINT)
                    return FAIL_FIELD(f, "%s", why);
                return FAIL("field %u: %s", number, why);
            }
            break;
        case 1:
            if (end - p < 8) {
                if (f != NULL && f->kind == K_FIXED64)
                    return FAIL_FIELD(f, "truncated fixed64");
                return FAIL("field %u: truncated fixed64", number);
            }
            p += 8;
            break;
        case 5:
            if (end - p < 4) {
                if (f != NULL && f->kind == K_FIXED32)
                    return FAIL_FIELD(f, "truncated fixed32");
                return FAIL("field %u: truncated fixed32", number);
            }
            p += 4;
            break;
        case 2: {
            Py_ssize_t len;
            int known = f != NULL && (f->kind >= K_STRING || (f->flags & PF_REPEATED));
            p = read_length(p, end, &len, &why);
            if (p == NULL) {
                if (known)
                    return FAIL_FIELD(f, "%s", why);
                return FAIL("field %u: %s", number, why);
            }
            const uint8_t *value_end = p + len;
            if (!known) {
                p = value_end;
                break;
            }
            switch (f->kind) {
            case K_STRING:
                if (!utf8_valid(p, value_end))
                    return FAIL_FIELD(f, "invalid UTF-8");
                break;
            case K_BYTES:
                if (f->id_slot >= 0)
                    ids[f->id_slot] = len;
                break;
            case K_MESSAGE: {
                if (budget - 1 < 0)
                    return FAIL_FIELD(f, "nesting deeper than %d levels", MAX_DEPTH);
                if ((f->flags & PF_ONEOF) && number != member) {
                    /* another member replaces the current one: a full parse drops what the
                     * replaced one held (its items, its ids) */
                    if (member && !member_mark)
                        Py_CLEAR(w->id_error);
                    member = number;
                    member_items = 0;
                    member_mark = w->id_error != NULL;
                }
                if (f->sub == &M_common_v1_KeyValue && budget >= 2 && fast_keyvalue(p, value_end))
                    break; /* no items, no ids */
                frame child = {fr, f, start, tag_at};
                Py_ssize_t got = -2;
                if (f->sub == &M_trace_v1_Span)
                    got = fast_span(w, p, value_end, budget - 1, &child);
                if (got == -2)
                    got = walk_message(w, f->sub, p, value_end, budget - 1, &child);
                if (got < 0)
                    return -1;
                if (f->flags & PF_COUNTED)
                    got++;
                if (f->flags & PF_ONEOF)
                    member_items += got;
                else
                    items += got;
                break;
            }
            case K_VARINT: { /* packed */
                const uint8_t *q = p;
                while (q < value_end) {
                    q = skip_varint(q, value_end, &why);
                    if (q == NULL)
                        return FAIL_FIELD(f, "%s", why);
                }
                break;
            }
            default: { /* packed fixed-width */
                int size = f->kind == K_FIXED64 ? 8 : 4;
                if (len % size)
                    return FAIL_FIELD(f, "packed length not a multiple of %d", size);
                break;
            }
            }
            p = value_end;
            break;
        }
        case 3:
            if (budget - 1 < 0)
                return FAIL("field %u: nesting deeper than %d levels", number, MAX_DEPTH);
            p = group_body(p, end, number, number, budget - 1, fr);
            if (p == NULL)
                return -1;
            break;
        case 4:
            return FAIL("end-group tag without a group");
        default:
            return FAIL("invalid wire type %d", wire);
        }
    }
    if (m->nids && w->id_error == NULL && check_ids(w, m, ids, fr) < 0)
        return -1;
    return items + member_items;
}

/* -- entry points ---------------------------------------------------------------------------- */

static PyObject *
validate(PyObject *arg, const pbmsg *root)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *p = (const uint8_t *)view.buf;
    walk w = {NULL};
    frame top = {NULL, NULL, p, p};
    Py_ssize_t n = walk_message(&w, root, p, p + view.len, MAX_DEPTH, &top);
    PyBuffer_Release(&view);
    if (n < 0) {
        Py_XDECREF(w.id_error);
        return NULL;
    }
    if (w.id_error != NULL) {
        PyErr_SetObject(PyExc_ValueError, w.id_error);
        Py_DECREF(w.id_error);
        return NULL;
    }
    return PyLong_FromSsize_t(n);
}

static PyObject *
validate_traces(PyObject *module, PyObject *arg)
{
    return validate(arg, ROOT_TRACES);
}

static PyObject *
validate_metrics(PyObject *module, PyObject *arg)
{
    return validate(arg, ROOT_METRICS);
}

static PyObject *
validate_logs(PyObject *module, PyObject *arg)
{
    return validate(arg, ROOT_LOGS);
}

static PyMethodDef methods[] = {
    {"validate_traces", validate_traces, METH_O,
     "validate_traces(data) -> int: the spans of an encoded ExportTraceServiceRequest that a "
     "full parse accepts and whose ids have their lengths; ValueError naming the field else."},
    {"validate_metrics", validate_metrics, METH_O,
     "validate_metrics(data) -> int: the data points of an encoded "
     "ExportMetricsServiceRequest (as validate_traces)."},
    {"validate_logs", validate_logs, METH_O,
     "validate_logs(data) -> int: the log records of an encoded ExportLogsServiceRequest (as "
     "validate_traces)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_otlpvalid",
    "The edge check of OTLP requests in C (see pipeline/_otlpvalid.py).", -1, methods,
};

PyMODINIT_FUNC
PyInit__otlpvalid(void)
{
    /* fast_span knows the span's tags and id slots: refuse to load if the tables moved them */
    const pbmsg *span = &M_trace_v1_Span;
    if (span->nids != 3 || span->fields[span->ids[0]].number != 1 ||
        span->fields[span->ids[1]].number != 2 || span->fields[span->ids[2]].number != 4 ||
        SPAN_FIELD(9)->sub != &M_common_v1_KeyValue || SPAN_FIELD(16)->kind != K_FIXED32) {
        PyErr_SetString(PyExc_ImportError, "_otlpvalid: the Span table does not match fast_span");
        return NULL;
    }
    return PyModule_Create(&module);
}
