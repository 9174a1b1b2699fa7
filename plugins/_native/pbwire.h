/* Reading the protobuf wire format by hand, shared by the scanners in this folder.
 *
 * A reader walks one message's bytes; next_field() gives each field's number, wire type and
 * value (varint / fixed) or payload (length-delimited), checking every length against the
 * enclosing bytes. Anything protobuf would refuse (groups, field number 0 or out of range,
 * overlong varints, lengths past the end) raises ValueError: nothing is read outside the
 * buffer. Fixed-width values are read little-endian (x86_64, aarch64 hosts).
 */
#ifndef PIPELINE_PBWIRE_H
#define PIPELINE_PBWIRE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct { const uint8_t *p; Py_ssize_t n; } slice;

typedef struct { const uint8_t *p, *end; } reader;

/* One field: its number and wire type; for length-delimited fields the payload (else an empty
 * slice), for varints and fixed fields the value. */
typedef struct { uint32_t number; int wire; uint64_t value; slice data; } field;

static int bad(const char *what) {
    PyErr_Format(PyExc_ValueError, "malformed OTLP request: %s", what);
    return -1;
}

static inline __attribute__((always_inline)) int read_varint(reader *r, uint64_t *out) {
    if (r->p < r->end && *r->p < 0x80) { *out = *r->p++; return 0; }
    uint64_t v = 0;
    int shift = 0;
    while (r->p < r->end && shift < 64) {
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) { *out = v; return 0; }
        shift += 7;
    }
    return bad("varint");
}

/* Returns 0 with the next field in *f, 1 at the end of the message, -1 on error. */
static inline __attribute__((always_inline)) int next_field(reader *r, field *f) {
    if (r->p >= r->end) return 1;
    uint64_t tag;
    if (read_varint(r, &tag) < 0) return -1;
    if (tag > 0xffffffffu) return bad("field number");
    f->number = (uint32_t)(tag >> 3);
    f->wire = (int)(tag & 7);
    f->data.p = NULL;
    f->data.n = 0;
    if (f->number == 0) return bad("field number 0");
    switch (f->wire) {
    case 0:
        return read_varint(r, &f->value);
    case 1:
        if (r->end - r->p < 8) return bad("truncated fixed64");
        memcpy(&f->value, r->p, 8);
        r->p += 8;
        return 0;
    case 2: {
        uint64_t n;
        if (read_varint(r, &n) < 0) return -1;
        if (n > (uint64_t)(r->end - r->p)) return bad("length past the end");
        f->data.p = r->p;
        f->data.n = (Py_ssize_t)n;
        r->p += n;
        return 0;
    }
    case 5:
        if (r->end - r->p < 4) return bad("truncated fixed32");
        f->value = 0;
        memcpy(&f->value, r->p, 4);
        r->p += 4;
        return 0;
    default:
        return bad("wire type");
    }
}

#endif
