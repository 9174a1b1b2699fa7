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
 * reset or closed before the answer is simply gone: respond() then does nothing, and a call
 * reset within the feed() that completed it is not returned at all (counted in `cancelled`).
 * Nothing here calls back into Python.
 *
 * Limits enforced here, per connection (the rest is in grpc_native.py): the unfinished request
 * data held (max_buffered, which Python lowers under the process-wide budget; beyond it, new
 * data refuses its call with REFUSED_STREAM), the size of a call's header block
 * (max_header_list_size, advertised in SETTINGS; beyond it the call is reset), the rate of
 * stream resets (sent or received: a token bucket of reset_rate per second and reset_burst; when
 * empty, GOAWAY ENHANCE_YOUR_CALM "too_many_resets"), client pings (the keepalive enforcement
 * policy of grpc-go: more than two pings closer than ping_min_time, or, without a call in
 * progress and without permit_ping_without_stream, closer than two hours, get GOAWAY
 * ENHANCE_YOUR_CALM "too_many_pings"). expire() resets calls whose headers or request did not
 * arrive in time, by the clock Python sets (milliseconds).
 *
 * With headers=True (a receiver with an authenticator), each request's headers are collected
 * (regular ones, at most MAX_HEADERS of at most MAX_HEADER_BYTES in all; a name sent twice
 * keeps its first value) and handed out by take_heads() as (stream_id, {name: value}) as soon
 * as the HEADERS block has arrived, before its body. The call is then held (its body still
 * arriving, bounded as any other) until Python admits it: admit(stream_id, tag) returns the
 * completed call at once when its body had already ended, else feed() returns it when it ends;
 * in this mode a completed call carries tag as a 7th item. Python refuses a call instead by
 * answering it with respond() before (or after) its body ended: the rest of its body is then
 * discarded as it arrives.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <nghttp2/nghttp2.h>
#include <string.h>
#include <time.h>

#define FRAMING (-1)
#define TOO_LARGE (-2)
#define MAX_HEADERS 64          /* headers collected per request in headers mode */
#define MAX_HEADER_BYTES 16384  /* and their names and values together */

/* Added by libnghttp2 1.57.0 (the Rapid Reset fix, CVE-2023-44487) and 1.61.0 (the CONTINUATION
 * flood fix, CVE-2024-28182); distributions that backport the fixes export them too (Debian 12:
 * 1.52.0-1+deb12u1 and +deb12u2). Weak: the module loads with a library that lacks them, and
 * reports it (RESET_RATE_LIMIT, MAX_CONTINUATIONS), so the receiver can refuse to use it. */
void nghttp2_option_set_stream_reset_rate_limit(nghttp2_option *option, uint64_t burst,
                                                uint64_t rate);
void nghttp2_option_set_max_continuations(nghttp2_option *option, size_t val);
#pragma weak nghttp2_option_set_stream_reset_rate_limit
#pragma weak nghttp2_option_set_max_continuations

/* why a session said GOAWAY ENHANCE_YOUR_CALM (SessionObject.terminating) */
#define CALM_RESETS 1
#define CALM_PINGS 2
#define CALM_CLOSE 3 /* close() from Python: a timeout, an eviction */
/* a ping without a call in progress is due at most every two hours (grpc-go's rule) */
#define PING_WITHOUT_STREAM_MIN 7200.0
#define MAX_PING_STRIKES 2

static double
monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct stream {
    int32_t id;
    uint8_t *buf; /* the response's framed message */
    size_t len, cap, received; /* len: the request body held (prefix + message), then buf's */
    uint8_t head[5];           /* the request's gRPC prefix: flag, message length */
    PyObject *msg;  /* the request's message, written in place into the bytes object handed
                     * to Python (sized from the prefix): NULL before the prefix, when it is
                     * not one the call can succeed with, or once more than it said arrived */
    size_t want;    /* the message length the prefix gave (msg != NULL) */
    size_t resp_off;
    int too_large, done, responding;
    int headers_done;    /* the request's header block ended */
    size_t header_bytes; /* names + values + 32 per field, as SETTINGS_MAX_HEADER_LIST_SIZE */
    long long born;      /* the session's clock when the stream began */
    int refused;               /* reset with REFUSED_STREAM (max_buffered, the process budget) */
    int rst_after;             /* answered before its body ended: RST_STREAM once answered */
    int admitted, ended;       /* headers mode: let through by Python; body complete */
    PyObject *headers;         /* headers mode: {name: value} until handed out */
    PyObject *tag;             /* headers mode: what admit() attached (the caller's identity) */
    size_t nheaders, collected_bytes; /* headers mode: what was collected */
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
    PyObject *heads;    /* headers mode: (stream_id, headers) of new requests, take_heads() */
    int collect;        /* headers mode */
    stream *streams;    /* every stream with state here */
    Py_ssize_t nstreams;
    int failed;         /* a callback failed (memory): the connection is unusable */
    /* limits and what they counted */
    size_t max_header_list;
    double reset_rate, reset_burst, reset_tokens, reset_last;
    double ping_min_time, last_ping;
    int permit_ping_without_stream, ping_strikes, ping_outstanding;
    int established;         /* the client's first SETTINGS frame arrived */
    int terminating;         /* CALM_*: GOAWAY sent or queued, nothing more is read */
    long long clock;         /* milliseconds, set by Python */
    Py_ssize_t responding;   /* streams answered whose response is not completely sent */
    Py_ssize_t answered;     /* streams closed after their response was sent */
    Py_ssize_t cancelled;    /* calls completed, then reset before they were handed out */
    Py_ssize_t header_refused; /* calls reset because their header block was too large */
    Py_ssize_t expired;      /* calls reset by expire() (request not received in time) */
    Py_ssize_t unanswered_closed; /* within one feed: completed calls closed before an answer */
    Py_ssize_t notices;      /* grows whenever one of the counts above (or refused) does */
} SessionObject;

/* GOAWAY ENHANCE_YOUR_CALM with a reason (gRPC clients read "too_many_pings"); from then on
 * nothing more is read and want_io() is False once the GOAWAY is written */
static int
terminate(SessionObject *S, int why, const char *reason)
{
    if (S->terminating)
        return 0;
    S->terminating = why;
    S->notices++;
    int rv = nghttp2_submit_goaway(S->session, NGHTTP2_FLAG_NONE,
                                   nghttp2_session_get_last_proc_stream_id(S->session),
                                   why == CALM_CLOSE ? NGHTTP2_NO_ERROR
                                                     : NGHTTP2_ENHANCE_YOUR_CALM,
                                   (const uint8_t *)reason, strlen(reason));
    if (rv != 0 && rv != NGHTTP2_ERR_INVALID_STATE) {
        S->failed = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

/* one stream reset, sent or received: a token of the bucket */
static int
reset_event(SessionObject *S)
{
    if (S->reset_rate <= 0 || S->terminating)
        return 0;
    double now = monotonic();
    S->reset_tokens += (now - S->reset_last) * S->reset_rate;
    if (S->reset_tokens > S->reset_burst)
        S->reset_tokens = S->reset_burst;
    S->reset_last = now;
    S->reset_tokens -= 1.0;
    if (S->reset_tokens < 0)
        return terminate(S, CALM_RESETS, "too_many_resets");
    return 0;
}

/* a PING from the client: grpc-go's enforcement of keepalive.enforcement_policy */
static int
ping_event(SessionObject *S)
{
    if (S->terminating)
        return 0;
    double now = monotonic();
    double min = S->ping_min_time;
    if (S->nstreams == 0 && !S->permit_ping_without_stream)
        min = PING_WITHOUT_STREAM_MIN;
    if (S->last_ping > 0 && now - S->last_ping < min)
        S->ping_strikes++;
    S->last_ping = now;
    if (S->ping_strikes > MAX_PING_STRIKES)
        return terminate(S, CALM_PINGS, "too_many_pings");
    return 0;
}

/* a request's message is received into a bytes object of the length its gRPC prefix gives,
 * allocated when the prefix arrives: at most PREALLOC plus 4 times the message bytes that came
 * with the prefix at first (a client's first DATA frame is up to 16 KiB: messages up to 128 KiB
 * get their length at once), grown by doubling after that. What a stream holds ahead of its data
 * stays bounded: PREALLOC for a stream that sent only its prefix (250 streams: 16 MiB a
 * connection; the buffer of a stream grown by doubling holds less than twice its data, the rest
 * untouched) */
#define PREALLOC ((size_t)64 * 1024)

static size_t
prefix_length(const uint8_t *head)
{
    return (size_t)((uint32_t)head[1] << 24 | (uint32_t)head[2] << 16 | (uint32_t)head[3] << 8 |
                    (uint32_t)head[4]);
}

static void
stream_drop_body(SessionObject *S, stream *x)
{
    if (!x->responding)
        S->buffered -= x->len;
    PyMem_Free(x->buf);
    x->buf = NULL;
    Py_CLEAR(x->msg);
    x->len = x->cap = x->want = 0;
}

static void
stream_free(SessionObject *S, stream *x)
{
    stream_drop_body(S, x);
    Py_CLEAR(x->headers);
    Py_CLEAR(x->tag);
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
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST ||
        S->terminating)
        return 0;
    stream *x = PyMem_Calloc(1, sizeof *x);
    if (x == NULL) {
        S->failed = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    x->id = frame->hd.stream_id;
    x->admitted = !S->collect;
    if (S->collect && (x->headers = PyDict_New()) == NULL) {
        PyErr_Clear();
        PyMem_Free(x);
        S->failed = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    x->born = S->clock;
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
    SessionObject *S = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    stream *x = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (x == NULL)
        return 0;
    x->header_bytes += namelen + valuelen + 32;
    if (x->header_bytes > S->max_header_list) {
        /* nghttp2 resets the stream (INTERNAL_ERROR) and skips its other fields */
        S->header_refused++;
        S->notices++;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
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
    if (x->headers != NULL && namelen > 0 && name[0] != ':' && x->nheaders < MAX_HEADERS &&
        x->collected_bytes + namelen + valuelen <= MAX_HEADER_BYTES) {
        /* nghttp2 lets through only lower-case names; latin-1 decodes any byte */
        PyObject *k = PyUnicode_DecodeLatin1((const char *)name, (Py_ssize_t)namelen, NULL);
        PyObject *v = k ? PyUnicode_DecodeLatin1((const char *)value, (Py_ssize_t)valuelen, NULL)
                        : NULL;
        PyObject *kept = v ? PyDict_SetDefault(x->headers, k, v) : NULL; /* borrowed */
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (kept == NULL) {
            PyErr_Clear();
            ((SessionObject *)user)->failed = 1;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        x->nheaders++;
        x->collected_bytes += namelen + valuelen;
    }
    return 0;
}

static int
on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
              size_t len, void *user)
{
    SessionObject *S = user;
    stream *x = nghttp2_session_get_stream_user_data(session, stream_id);
    if (x == NULL || x->done || S->terminating)
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
        x->refused = 1;
        S->refused++;
        S->notices++;
        if (nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, stream_id,
                                      NGHTTP2_REFUSED_STREAM) != 0) {
            S->failed = 1;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    }
    S->buffered += len;
    if (x->len < 5) { /* the gRPC prefix */
        size_t k = 5 - x->len < len ? 5 - x->len : len;
        memcpy(x->head + x->len, data, k);
        x->len += k;
        data += k;
        len -= k;
        if (x->len == 5 && x->head[0] <= 1) {
            size_t n = prefix_length(x->head);
            if (n <= S->max_message) { /* else answered FRAMING or TOO_LARGE at its end */
                size_t first = PREALLOC + 4 * len; /* len: the message bytes of this chunk */
                x->msg = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n < first ? n : first));
                if (x->msg == NULL) {
                    PyErr_Clear();
                    S->failed = 1;
                    return NGHTTP2_ERR_CALLBACK_FAILURE;
                }
                x->want = n;
            }
        }
    }
    if (len == 0)
        return 0;
    size_t have = x->len - 5; /* message bytes so far */
    x->len += len;
    if (x->msg == NULL)
        return 0; /* a body that cannot make a call: counted, not kept (FRAMING at its end) */
    if (have + len > x->want) {
        Py_CLEAR(x->msg); /* more than its prefix said: FRAMING at its end */
        return 0;
    }
    size_t cap = (size_t)PyBytes_GET_SIZE(x->msg);
    if (have + len > cap) { /* grown by doubling, up to what the prefix said */
        while (cap < have + len)
            cap *= 2;
        if (cap > x->want)
            cap = x->want;
        if (_PyBytes_Resize(&x->msg, (Py_ssize_t)cap) < 0) { /* x->msg is NULL then */
            PyErr_Clear();
            S->failed = 1;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
    }
    memcpy(PyBytes_AS_STRING(x->msg) + have, data, len);
    return 0;
}

/* the call of a stream whose body ended (its body dropped): a new reference, NULL on error */
static PyObject *
build_item(SessionObject *S, stream *x)
{
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
        size_t n = prefix_length(x->head);
        if (x->head[0] > 1 || n != x->len - 5 || x->msg == NULL ||
            (size_t)PyBytes_GET_SIZE(x->msg) != n) {
            flag = FRAMING;
            payload = Py_NewRef(Py_None);
        }
        else { /* the message as received: no copy */
            flag = x->head[0];
            payload = x->msg;
            x->msg = NULL;
        }
    }
    stream_drop_body(S, x);
    if (payload == NULL)
        return NULL;
    if (S->collect)
        return Py_BuildValue("(is#ssiNO)", x->id, x->path, (Py_ssize_t)x->path_len,
                             x->content_type, x->encoding, flag, payload,
                             x->tag ? x->tag : Py_None);
    return Py_BuildValue("(is#ssiN)", x->id, x->path, (Py_ssize_t)x->path_len, x->content_type,
                         x->encoding, flag, payload);
}

/* a stream whose body ended: its call appended to S->ready, or held until admit() */
static int
complete(SessionObject *S, stream *x)
{
    x->done = 1;
    x->ended = 1;
    if (!x->admitted)
        return 0;
    PyObject *item = build_item(S, x);
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
    switch (frame->hd.type) {
    case NGHTTP2_DATA:
    case NGHTTP2_HEADERS:
        break;
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            S->established = 1;
        return 0;
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
            S->ping_outstanding = 0;
            return 0;
        }
        return ping_event(S);
    case NGHTTP2_RST_STREAM:
        return reset_event(S);
    default:
        return 0;
    }
    if (S->terminating)
        return 0;
    stream *x = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (x != NULL && frame->hd.type == NGHTTP2_HEADERS) {
        x->headers_done = 1;
        if (x->headers != NULL && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            /* headers mode: the request's headers, for Python to authenticate */
            PyObject *item = Py_BuildValue("(iN)", x->id, x->headers); /* steals it */
            x->headers = NULL;
            if (item == NULL || PyList_Append(S->heads, item) < 0) {
                Py_XDECREF(item);
                PyErr_Clear();
                S->failed = 1;
                return NGHTTP2_ERR_CALLBACK_FAILURE;
            }
            Py_DECREF(item);
        }
    }
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
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
        if (x->responding) {
            S->responding--;
            S->answered++;
        }
        else if (x->done)
            S->unanswered_closed++; /* maybe in this feed's ready list: filtered out there */
        nghttp2_session_set_stream_user_data(session, stream_id, NULL);
        stream_free(S, x);
    }
    return 0;
}

/* once the answer to a call refused before its body ended is sent (its HEADERS with
 * END_STREAM: Trailers-Only or a bare status), RST_STREAM NO_ERROR tells the client to stop
 * sending the body (RFC 9113 8.1); submitted earlier, nghttp2 would send it first. Every
 * RST_STREAM sent counts in the reset rate. */
static int
on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    if (frame->hd.type == NGHTTP2_RST_STREAM)
        return reset_event((SessionObject *)user);
    if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    stream *x = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (x != NULL && x->rst_after) {
        x->rst_after = 0;
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, x->id, NGHTTP2_NO_ERROR);
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
                             "connection_window", "max_buffered", "max_header_list_size",
                             "reset_rate", "reset_burst", "ping_min_time",
                             "permit_ping_without_stream", "headers", NULL};
    Py_ssize_t max_message, max_streams, stream_window, conn_window, max_buffered = -1;
    Py_ssize_t max_header_list = 16384;
    double reset_rate = 100.0, reset_burst = 200.0, ping_min_time = 300.0;
    int permit_ping = 0, collect = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nnnn|nndddpp", kwlist, &max_message,
                                     &max_streams, &stream_window, &conn_window, &max_buffered,
                                     &max_header_list, &reset_rate, &reset_burst,
                                     &ping_min_time, &permit_ping, &collect))
        return -1;
    if (max_buffered < 0)
        max_buffered = max_message + 5; /* default: one message as large as allowed */
    if (max_message < 0 || max_buffered < max_message + 5 || max_streams < 1 ||
        stream_window < 65535 ||
        stream_window > 0x7fffffff || conn_window < 65535 || conn_window > 0x7fffffff ||
        max_header_list < 1024 || max_header_list > 0x7fffffff || !(reset_rate >= 0) ||
        !(reset_burst >= 1) || !(ping_min_time >= 0)) {
        PyErr_SetString(PyExc_ValueError, "Session: a limit out of range");
        return -1;
    }
    if (S->session != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Session: already initialized");
        return -1;
    }
    S->max_message = (size_t)max_message;
    S->max_buffered = (size_t)max_buffered;
    S->collect = collect;
    S->max_header_list = (size_t)max_header_list;
    S->reset_rate = reset_rate;
    S->reset_burst = S->reset_tokens = reset_burst;
    S->reset_last = monotonic();
    S->ping_min_time = ping_min_time;
    S->permit_ping_without_stream = permit_ping;
    S->ready = PyList_New(0);
    S->heads = PyList_New(0);
    if (S->ready == NULL || S->heads == NULL)
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
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        PyErr_NoMemory();
        return -1;
    }
    /* closed streams are not kept for the priority tree (memory per connection) */
    nghttp2_option_set_no_closed_streams(opt, 1);
    /* the library's own limits stay as a backstop, looser than ours (ours answer first) */
    if (nghttp2_option_set_stream_reset_rate_limit != NULL && reset_rate > 0)
        nghttp2_option_set_stream_reset_rate_limit(opt, (uint64_t)(reset_burst * 2 + 16),
                                                   (uint64_t)(reset_rate * 2 + 16));
    if (nghttp2_option_set_max_continuations != NULL)
        nghttp2_option_set_max_continuations(opt, 8);
    int rv = nghttp2_session_server_new2(&S->session, cb, S, opt);
    nghttp2_option_del(opt);
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
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, (uint32_t)max_header_list},
    };
    if (nghttp2_submit_settings(S->session, NGHTTP2_FLAG_NONE, settings, 3) != 0 ||
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

/* the list *list (emptied: a fresh one takes its place; an empty one is shared as is) */
static PyObject *
take_list(PyObject **list)
{
    PyObject *full = *list;
    if (PyList_GET_SIZE(full) == 0)
        return Py_NewRef(full);
    *list = PyList_New(0);
    if (*list == NULL) {
        *list = full;
        return NULL;
    }
    return full;
}

/* the bytes of arg to the session; then the entries its callbacks appended to *list. A fatal
 * session error (or a callback out of memory: *failed) raises ValueError (MemoryError). */
static PyObject *
feed_session(nghttp2_session *session, int *failed, PyObject **list, PyObject *arg)
{
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    ssize_t rv = nghttp2_session_mem_recv(session, b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    if (*failed || rv < 0) {
        if (!PyErr_Occurred()) {
            if (*failed)
                PyErr_NoMemory();
            else
                PyErr_Format(PyExc_ValueError, "HTTP/2: %s", nghttp2_strerror((int)rv));
        }
        *failed = 1;
        return NULL;
    }
    return take_list(list);
}

/* False once a session is over (both sides said GOAWAY and no stream is left, or an error) */
static PyObject *
session_want_io(nghttp2_session *session, int failed)
{
    if (failed)
        Py_RETURN_FALSE;
    return PyBool_FromLong(nghttp2_session_want_read(session) ||
                           nghttp2_session_want_write(session));
}

/* feed(data) -> [completed requests]; ValueError on a protocol error (the connection is to be
 * closed once data_to_send() has been written: it may hold a GOAWAY) */
static PyObject *
Session_feed(SessionObject *S, PyObject *arg)
{
    if (check(S) < 0)
        return NULL;
    if (S->terminating) /* GOAWAY ENHANCE_YOUR_CALM said: nothing more is read */
        return take_list(&S->ready);
    S->unanswered_closed = 0;
    PyObject *calls = feed_session(S->session, &S->failed, &S->ready, arg);
    if (calls == NULL || S->unanswered_closed == 0 || PyList_GET_SIZE(calls) == 0)
        return calls;
    /* calls that completed and were reset (or refused) in this same feed: not handed out */
    PyObject *kept = PyList_New(0);
    if (kept == NULL) {
        Py_DECREF(calls);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(calls); i++) {
        PyObject *item = PyList_GET_ITEM(calls, i);
        long id = PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
        if (nghttp2_session_get_stream_user_data(S->session, (int32_t)id) == NULL) {
            S->cancelled++;
            S->notices++;
        }
        else if (PyList_Append(kept, item) < 0) {
            Py_DECREF(kept);
            Py_DECREF(calls);
            return NULL;
        }
    }
    Py_DECREF(calls);
    return kept;
}

/* what nghttp2 has to send, as one bytes object (b"" for nothing); NULL with ValueError on a
 * fatal session error */
static PyObject *
session_output(nghttp2_session *session)
{
    /* written straight into the bytes returned (grown fourfold: a request's DATA frames come
     * 16 KiB at a time, and each growth may copy what was gathered; cut to its length at the
     * end): no copy of the whole output made after it was gathered */
    PyObject *out = NULL;
    Py_ssize_t total = 0, cap = 0;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(session, &data);
        if (n < 0) {
            PyErr_Format(PyExc_ValueError, "HTTP/2: %s", nghttp2_strerror((int)n));
            Py_XDECREF(out);
            return NULL;
        }
        if (n == 0)
            break;
        if (total + n > cap) {
            Py_ssize_t ncap = cap ? cap * 4 : 4096;
            while (ncap < total + n)
                ncap *= 2;
            if (out == NULL)
                out = PyBytes_FromStringAndSize(NULL, ncap);
            else
                _PyBytes_Resize(&out, ncap); /* on failure: out freed, NULL */
            if (out == NULL)
                return NULL;
            cap = ncap;
        }
        memcpy(PyBytes_AS_STRING(out) + total, data, (size_t)n);
        total += n;
    }
    if (out == NULL)
        return PyBytes_FromStringAndSize("", 0);
    if (total != cap)
        _PyBytes_Resize(&out, total);
    return out;
}

/* data_to_send() -> bytes (b"" when there is nothing to write) */
static PyObject *
Session_data_to_send(SessionObject *S, PyObject *unused)
{
    if (check(S) < 0)
        return NULL;
    return session_output(S->session);
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
    if (x == NULL || x->responding || x->refused) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    /* an answer before the body ended (a refusal) ends its reception: what still comes is
     * discarded, and a RST_STREAM (NO_ERROR) after the answer asks the client to stop sending
     * it (RFC 9113 8.1); a body held for admit() is dropped */
    int early = !x->ended;
    x->done = 1;
    stream_drop_body(S, x);
    x->responding = 1; /* from here x->buf holds the response, not counted in S->buffered */
    S->responding++;
    S->ping_strikes = 0; /* as grpc-go: sending resets the count of pings too close */
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
    x->rst_after = early;
    result = Py_NewRef(Py_True);
done:
    if (payload.buf)
        PyBuffer_Release(&payload);
    return result;
}

/* take_heads() -> [(stream_id, {name: value})]: headers mode, the requests whose headers
 * arrived since the last call */
static PyObject *
Session_take_heads(SessionObject *S, PyObject *unused)
{
    if (check(S) < 0)
        return NULL;
    return take_list(&S->heads);
}

/* admit(stream_id, tag) -> the completed call (with tag) when its body already ended, else None
 * (feed() returns it when it ends, or the stream is gone: reset, refused or answered) */
static PyObject *
Session_admit(SessionObject *S, PyObject *args)
{
    int stream_id;
    PyObject *tag;
    if (!PyArg_ParseTuple(args, "iO", &stream_id, &tag))
        return NULL;
    if (check(S) < 0)
        return NULL;
    stream *x = nghttp2_session_get_stream_user_data(S->session, stream_id);
    if (x == NULL || x->admitted || x->responding || x->refused)
        Py_RETURN_NONE;
    x->admitted = 1;
    Py_XSETREF(x->tag, Py_NewRef(tag));
    if (!x->ended)
        Py_RETURN_NONE;
    return build_item(S, x);
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
 * left, a GOAWAY ENHANCE_YOUR_CALM was written, or a fatal error) */
static PyObject *
Session_want_io(SessionObject *S, PyObject *unused)
{
    if (check(S) < 0)
        return NULL;
    if (S->terminating && !S->failed)
        return PyBool_FromLong(nghttp2_session_want_write(S->session));
    return session_want_io(S->session, S->failed);
}

/* terminate(reason): GOAWAY (NO_ERROR) with reason as debug data, then nothing more is read:
 * a connection closed by the server (idle, too old, a timeout, evicted) */
static PyObject *
Session_terminate(SessionObject *S, PyObject *arg)
{
    if (check(S) < 0)
        return NULL;
    const char *reason = PyUnicode_AsUTF8(arg);
    if (reason == NULL)
        return NULL;
    if (terminate(S, CALM_CLOSE, reason) != 0) {
        PyErr_SetString(PyExc_ValueError, "HTTP/2: cannot submit GOAWAY");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* pending(stream_id) -> bool: the call was handed out and is still waiting for its answer
 * (False once the client reset it) */
static PyObject *
Session_pending(SessionObject *S, PyObject *arg)
{
    if (check(S) < 0)
        return NULL;
    long id = PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    if (id <= 0 || id > 0x7fffffff)
        Py_RETURN_FALSE;
    stream *x = nghttp2_session_get_stream_user_data(S->session, (int32_t)id);
    return PyBool_FromLong(x != NULL && x->done && !x->responding && !x->refused);
}

/* refuse_unfinished() -> bytes freed: every call whose request is not complete is refused
 * (REFUSED_STREAM, which gRPC clients retry): the process-wide budget needs the room */
static PyObject *
Session_refuse_unfinished(SessionObject *S, PyObject *unused)
{
    if (check(S) < 0)
        return NULL;
    size_t freed = 0;
    for (stream *x = S->streams; x != NULL; x = x->next) {
        if (x->done || x->len == 0)
            continue;
        freed += x->len;
        stream_drop_body(S, x);
        x->done = 1;
        x->refused = 1;
        S->refused++;
        S->notices++;
        if (nghttp2_submit_rst_stream(S->session, NGHTTP2_FLAG_NONE, x->id,
                                      NGHTTP2_REFUSED_STREAM) != 0) {
            S->failed = 1;
            return PyErr_NoMemory();
        }
    }
    return PyLong_FromSize_t(freed);
}

/* expire(header_cutoff, request_cutoff) -> bool: calls begun at or before request_cutoff (the
 * session clock, ms) whose request has not fully arrived are reset (CANCEL, counted in
 * `expired`); True when a header block begun at or before header_cutoff is still unfinished:
 * the connection is to be closed (no frame but CONTINUATION may follow such a block). A cutoff
 * below 0 checks nothing. */
static PyObject *
Session_expire(SessionObject *S, PyObject *args)
{
    long long header_cutoff, request_cutoff;
    if (!PyArg_ParseTuple(args, "LL", &header_cutoff, &request_cutoff))
        return NULL;
    if (check(S) < 0)
        return NULL;
    int stuck = 0;
    for (stream *x = S->streams; x != NULL; x = x->next) {
        if (x->done)
            continue;
        if (!x->headers_done && header_cutoff >= 0 && x->born <= header_cutoff)
            stuck = 1;
        else if (request_cutoff >= 0 && x->born <= request_cutoff) {
            stream_drop_body(S, x);
            x->done = 1;
            S->expired++;
            S->notices++;
            if (nghttp2_submit_rst_stream(S->session, NGHTTP2_FLAG_NONE, x->id,
                                          NGHTTP2_CANCEL) != 0) {
                S->failed = 1;
                return PyErr_NoMemory();
            }
        }
    }
    return PyBool_FromLong(stuck);
}

/* ping() -> bool: a PING is queued (False when one is still unanswered) */
static PyObject *
Session_ping(SessionObject *S, PyObject *unused)
{
    if (check(S) < 0)
        return NULL;
    if (S->ping_outstanding)
        Py_RETURN_FALSE;
    if (nghttp2_submit_ping(S->session, NGHTTP2_FLAG_NONE, NULL) != 0)
        return PyErr_NoMemory();
    S->ping_outstanding = 1;
    Py_RETURN_TRUE;
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
    Py_XDECREF(S->heads);
    Py_TYPE(S)->tp_free((PyObject *)S);
}

static PyMethodDef Session_methods[] = {
    {"feed", (PyCFunction)Session_feed, METH_O,
     "feed(data) -> [(stream_id, path, content_type, encoding, flag, payload[, tag])]"},
    {"data_to_send", (PyCFunction)Session_data_to_send, METH_NOARGS,
     "data_to_send() -> the bytes to write to the peer (b'' for none)"},
    {"respond", (PyCFunction)(void (*)(void))Session_respond, METH_VARARGS | METH_KEYWORDS,
     "respond(stream_id, status, message=None, payload=None, details=None, http_status=200) "
     "-> False when the stream is gone"},
    {"goaway", (PyCFunction)Session_goaway, METH_NOARGS,
     "the final GOAWAY (last stream id: the last one received)"},
    {"take_heads", (PyCFunction)Session_take_heads, METH_NOARGS,
     "take_heads() -> [(stream_id, {name: value})] (headers mode)"},
    {"admit", (PyCFunction)Session_admit, METH_VARARGS,
     "admit(stream_id, tag) -> the completed call, or None (headers mode)"},
    {"want_io", (PyCFunction)Session_want_io, METH_NOARGS,
     "False once the session is over"},
    {"terminate", (PyCFunction)Session_terminate, METH_O,
     "terminate(reason): GOAWAY with reason, nothing more read; want_io() False once written"},
    {"pending", (PyCFunction)Session_pending, METH_O,
     "pending(stream_id) -> True while a handed-out call waits for its answer"},
    {"refuse_unfinished", (PyCFunction)Session_refuse_unfinished, METH_NOARGS,
     "refuse every call whose request is incomplete (REFUSED_STREAM); -> bytes freed"},
    {"expire", (PyCFunction)Session_expire, METH_VARARGS,
     "expire(header_cutoff, request_cutoff) -> True when a header block is overdue"},
    {"ping", (PyCFunction)Session_ping, METH_NOARGS,
     "queue a PING; False when one is still unanswered"},
    {NULL, NULL, 0, NULL},
};

static PyObject *
Session_get_refused(SessionObject *S, void *closure)
{
    return PyLong_FromSsize_t(S->refused);
}

static PyObject *
Session_get_stats(SessionObject *S, void *closure)
{
    return Py_BuildValue("(nnnni)", S->refused, S->cancelled, S->header_refused, S->expired,
                         S->terminating);
}

static PyObject *
Session_get_notices(SessionObject *S, void *closure)
{
    return PyLong_FromSsize_t(S->notices);
}

static PyObject *
Session_get_established(SessionObject *S, void *closure)
{
    return PyBool_FromLong(S->established);
}

static PyObject *
Session_get_ping_outstanding(SessionObject *S, void *closure)
{
    return PyBool_FromLong(S->ping_outstanding);
}

static PyObject *
Session_get_responding(SessionObject *S, void *closure)
{
    return PyLong_FromSsize_t(S->responding);
}

static PyObject *
Session_get_answered(SessionObject *S, void *closure)
{
    return PyLong_FromSsize_t(S->answered);
}

static PyObject *
Session_get_clock(SessionObject *S, void *closure)
{
    return PyLong_FromLongLong(S->clock);
}

static int
Session_set_clock(SessionObject *S, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "clock cannot be deleted");
        return -1;
    }
    long long v = PyLong_AsLongLong(value);
    if (v == -1 && PyErr_Occurred())
        return -1;
    S->clock = v;
    return 0;
}

static PyObject *
Session_get_max_buffered(SessionObject *S, void *closure)
{
    return PyLong_FromSize_t(S->max_buffered);
}

/* lowered by Python under the process-wide budget (never below what one call needs to be
 * refused cleanly: 0 refuses any new request data) */
static int
Session_set_max_buffered(SessionObject *S, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_TypeError, "max_buffered cannot be deleted");
        return -1;
    }
    Py_ssize_t v = PyLong_AsSsize_t(value);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0) {
        PyErr_SetString(PyExc_ValueError, "max_buffered must not be negative");
        return -1;
    }
    S->max_buffered = (size_t)v;
    return 0;
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
    {"stats", (getter)Session_get_stats, NULL,
     "(refused, cancelled, header_refused, expired, terminating): what the limits counted",
     NULL},
    {"notices", (getter)Session_get_notices, NULL,
     "grows whenever one of the stats does: read stats only when it changed", NULL},
    {"established", (getter)Session_get_established, NULL,
     "the client's connection preface and first SETTINGS arrived", NULL},
    {"ping_outstanding", (getter)Session_get_ping_outstanding, NULL,
     "a PING sent by ping() is not answered yet", NULL},
    {"responding", (getter)Session_get_responding, NULL,
     "calls answered whose response is not completely sent", NULL},
    {"answered", (getter)Session_get_answered, NULL,
     "calls closed after their response was completely sent", NULL},
    {"clock", (getter)Session_get_clock, (setter)Session_set_clock,
     "milliseconds, set by the owner; calls are stamped with it when they begin", NULL},
    {"max_buffered", (getter)Session_get_max_buffered, (setter)Session_set_max_buffered,
     "bound of the request bytes held in unfinished calls", NULL},
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

/* ---------------------------------------------------------------------------------------- */
/* Client sessions: the OTLP exporter's unary gRPC calls.
 *
 * request() queues a call (headers and its framed body); feed() returns the calls that ended:
 *
 *     (stream_id, http_status, grpc_status, grpc_message, details, body, reset_code)
 *
 * http_status 0 when no response headers came; grpc_status -1 when none came (from the
 * trailers, or the headers of a Trailers-Only answer); grpc_message and details (the raw
 * grpc-status-details-bin text) as bytes, details None when absent; body the response DATA;
 * reset_code the RST_STREAM error code (0: none). */

typedef struct ccall {
    int32_t id;
    /* the request: the 5-byte gRPC message prefix, then the message itself, read where the
     * caller's bytes are (a buffer held until sent, not copied) */
    uint8_t prefix[5];
    Py_buffer msg;
    int has_msg;
    size_t req_len, req_off;
    uint8_t *body;
    size_t body_len, body_cap;
    int http_status, grpc_status;
    char *message, *details;
    size_t message_len, details_len;
    struct ccall *prev, *next;
} ccall;

typedef struct {
    PyObject_HEAD
    nghttp2_session *session;
    ccall *calls;
    Py_ssize_t ncalls;
    PyObject *done;
    int failed, goaway;
} ClientObject;

static void
ccall_free(ClientObject *C, ccall *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        C->calls = x->next;
    if (x->next)
        x->next->prev = x->prev;
    C->ncalls--;
    if (x->has_msg)
        PyBuffer_Release(&x->msg);
    PyMem_Free(x->body);
    PyMem_Free(x->message);
    PyMem_Free(x->details);
    PyMem_Free(x);
}

static int
copy_value(char **dst, size_t *len, const uint8_t *v, size_t vl)
{
    char *fresh = PyMem_Malloc(vl ? vl : 1);
    if (fresh == NULL)
        return -1;
    memcpy(fresh, v, vl);
    PyMem_Free(*dst);
    *dst = fresh;
    *len = vl;
    return 0;
}

static int
c_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
            size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    ClientObject *C = user;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    ccall *x = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (x == NULL)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int st = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            st = st * 10 + (value[i] >= '0' && value[i] <= '9' ? value[i] - '0' : 0);
        x->http_status = st;
    }
    else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        int st = 0, ok = valuelen > 0 && valuelen < 10;
        for (size_t i = 0; ok && i < valuelen; i++) {
            if (value[i] < '0' || value[i] > '9')
                ok = 0;
            else
                st = st * 10 + (value[i] - '0');
        }
        x->grpc_status = ok ? st : 2; /* UNKNOWN for an unreadable status */
    }
    else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        if (copy_value(&x->message, &x->message_len, value, valuelen) < 0)
            goto nomem;
    }
    else if (namelen == 23 && memcmp(name, "grpc-status-details-bin", 23) == 0) {
        if (copy_value(&x->details, &x->details_len, value, valuelen) < 0)
            goto nomem;
    }
    return 0;
nomem:
    C->failed = 1;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int
c_on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data,
                size_t len, void *user)
{
    ClientObject *C = user;
    ccall *x = nghttp2_session_get_stream_user_data(session, stream_id);
    if (x == NULL)
        return 0;
    if (x->body_len + len > x->body_cap) {
        size_t cap = x->body_cap ? x->body_cap : 256;
        while (cap < x->body_len + len)
            cap *= 2;
        uint8_t *fresh = PyMem_Realloc(x->body, cap);
        if (fresh == NULL) {
            C->failed = 1;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        x->body = fresh;
        x->body_cap = cap;
    }
    memcpy(x->body + x->body_len, data, len);
    x->body_len += len;
    return 0;
}

static int
c_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user)
{
    if (frame->hd.type == NGHTTP2_GOAWAY)
        ((ClientObject *)user)->goaway = 1;
    return 0;
}

static int
c_on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user)
{
    ClientObject *C = user;
    ccall *x = nghttp2_session_get_stream_user_data(session, stream_id);
    if (x == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    PyObject *item = Py_BuildValue(
        "(iiiy#Oy#I)", x->id, x->http_status, x->grpc_status, x->message ? x->message : "",
        (Py_ssize_t)x->message_len, Py_None, x->body ? (const char *)x->body : "",
        (Py_ssize_t)x->body_len, (unsigned int)error_code);
    if (item != NULL && x->details != NULL) {
        PyObject *d = PyBytes_FromStringAndSize(x->details, (Py_ssize_t)x->details_len);
        if (d == NULL)
            Py_CLEAR(item);
        else
            Py_SETREF(PyTuple_GET_ITEM(item, 4), d); /* replaces the None */
    }
    ccall_free(C, x);
    if (item == NULL || PyList_Append(C->done, item) < 0) {
        Py_XDECREF(item);
        C->failed = 1;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    Py_DECREF(item);
    return 0;
}

static ssize_t
c_read_request(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
               uint32_t *data_flags, nghttp2_data_source *source, void *user)
{
    ccall *x = source->ptr;
    size_t n = x->req_len - x->req_off, done = 0;
    if (n > length)
        n = length;
    if (x->req_off < 5 && n > 0) { /* the prefix first */
        done = 5 - x->req_off;
        if (done > n)
            done = n;
        memcpy(buf, x->prefix + x->req_off, done);
        x->req_off += done;
    }
    if (done < n) {
        memcpy(buf + done, (const uint8_t *)x->msg.buf + (x->req_off - 5), n - done);
        x->req_off += n - done;
    }
    if (x->req_off == x->req_len) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (x->has_msg) { /* sent: not needed any more */
            PyBuffer_Release(&x->msg);
            x->has_msg = 0;
        }
        x->req_len = x->req_off = 0;
    }
    return (ssize_t)n;
}

static int
Client_init(ClientObject *C, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stream_window", "connection_window", NULL};
    Py_ssize_t stream_window, conn_window;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nn", kwlist, &stream_window, &conn_window))
        return -1;
    if (stream_window < 65535 || stream_window > 0x7fffffff || conn_window < 65535 ||
        conn_window > 0x7fffffff) {
        PyErr_SetString(PyExc_ValueError, "ClientSession: a window out of range");
        return -1;
    }
    if (C->session != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ClientSession: already initialized");
        return -1;
    }
    C->done = PyList_New(0);
    if (C->done == NULL)
        return -1;
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0) {
        PyErr_NoMemory();
        return -1;
    }
    nghttp2_session_callbacks_set_on_header_callback(cb, c_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_on_stream_close);
    int rv = nghttp2_session_client_new(&C->session, cb, C);
    nghttp2_session_callbacks_del(cb);
    if (rv != 0) {
        C->session = NULL;
        PyErr_NoMemory();
        return -1;
    }
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)stream_window},
    };
    if (nghttp2_submit_settings(C->session, NGHTTP2_FLAG_NONE, settings, 2) != 0 ||
        nghttp2_session_set_local_window_size(C->session, NGHTTP2_FLAG_NONE, 0,
                                              (int32_t)conn_window) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "ClientSession: cannot submit the settings");
        return -1;
    }
    return 0;
}

static int
client_check(ClientObject *C)
{
    if (C->session == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "ClientSession: not initialized");
        return -1;
    }
    return 0;
}

/* request(headers, message, compressed) -> stream_id: headers a sequence of (name, value) bytes
 * pairs, pseudo-headers first; the message framed here (flag byte, 4-byte length) */
static PyObject *
Client_request(ClientObject *C, PyObject *args)
{
    PyObject *headers;
    Py_buffer message;
    int compressed;
    if (!PyArg_ParseTuple(args, "Oy*p", &headers, &message, &compressed))
        return NULL;
    PyObject *result = NULL, *seq = NULL;
    nghttp2_nv *nv = NULL;
    ccall *x = NULL;
    if (client_check(C) < 0)
        goto done;
    if ((size_t)message.len > 0xffffffffu) {
        PyErr_SetString(PyExc_ValueError, "request: message too large");
        goto done;
    }
    seq = PySequence_Fast(headers, "request: headers must be a sequence");
    if (seq == NULL)
        goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    nv = PyMem_Calloc((size_t)(n ? n : 1), sizeof *nv);
    x = PyMem_Calloc(1, sizeof *x);
    if (nv == NULL || x == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(seq, i);
        char *k, *v;
        Py_ssize_t kl, vl;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            PyBytes_AsStringAndSize(PyTuple_GET_ITEM(pair, 0), &k, &kl) < 0 ||
            PyBytes_AsStringAndSize(PyTuple_GET_ITEM(pair, 1), &v, &vl) < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "request: a header is a (bytes, bytes) pair");
            goto done;
        }
        nv[i].name = (uint8_t *)k;
        nv[i].namelen = (size_t)kl;
        nv[i].value = (uint8_t *)v;
        nv[i].valuelen = (size_t)vl;
        nv[i].flags = NGHTTP2_NV_FLAG_NONE;
    }
    x->grpc_status = -1;
    x->req_len = (size_t)message.len + 5;
    x->prefix[0] = compressed ? 1 : 0;
    x->prefix[1] = (uint8_t)((size_t)message.len >> 24);
    x->prefix[2] = (uint8_t)((size_t)message.len >> 16);
    x->prefix[3] = (uint8_t)((size_t)message.len >> 8);
    x->prefix[4] = (uint8_t)message.len;
    /* the message's buffer held by the call (read as it is sent, not copied) */
    x->msg = message;
    x->has_msg = 1;
    message.obj = NULL;
    nghttp2_data_provider provider;
    provider.source.ptr = x;
    provider.read_callback = c_read_request;
    int32_t id = nghttp2_submit_request(C->session, NULL, nv, (size_t)n, &provider, x);
    if (id < 0) {
        PyErr_Format(PyExc_ValueError, "HTTP/2: %s", nghttp2_strerror(id));
        goto done;
    }
    x->id = id;
    x->next = C->calls;
    if (C->calls)
        C->calls->prev = x;
    C->calls = x;
    C->ncalls++;
    x = NULL; /* owned by the session now */
    result = PyLong_FromLong(id);
done:
    if (x != NULL) {
        if (x->has_msg)
            PyBuffer_Release(&x->msg);
        PyMem_Free(x);
    }
    PyMem_Free(nv);
    Py_XDECREF(seq);
    PyBuffer_Release(&message);
    return result;
}

/* feed(data) -> [ended calls]; ValueError on a protocol error */
static PyObject *
Client_feed(ClientObject *C, PyObject *arg)
{
    if (client_check(C) < 0)
        return NULL;
    return feed_session(C->session, &C->failed, &C->done, arg);
}

static PyObject *
Client_data_to_send(ClientObject *C, PyObject *unused)
{
    if (client_check(C) < 0)
        return NULL;
    /* calls closed while sending (a stream refused locally) are handed over by take_done() */
    PyObject *out = session_output(C->session);
    if (out == NULL)
        C->failed = 1;
    return out;
}

/* take_done() -> the calls that ended outside feed() (while sending) */
static PyObject *
Client_take_done(ClientObject *C, PyObject *unused)
{
    if (client_check(C) < 0)
        return NULL;
    return take_list(&C->done);
}

/* cancel(stream_id): RST_STREAM CANCEL (the call ends with reset_code 8) */
static PyObject *
Client_cancel(ClientObject *C, PyObject *arg)
{
    if (client_check(C) < 0)
        return NULL;
    int id = (int)PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    if (nghttp2_session_get_stream_user_data(C->session, id) != NULL)
        nghttp2_submit_rst_stream(C->session, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    Py_RETURN_NONE;
}

static PyObject *
Client_usable(ClientObject *C, PyObject *unused)
{
    if (client_check(C) < 0)
        return NULL;
    if (C->goaway)
        Py_RETURN_FALSE;
    return session_want_io(C->session, C->failed);
}

static PyObject *
Client_want_io(ClientObject *C, PyObject *unused)
{
    if (client_check(C) < 0)
        return NULL;
    return session_want_io(C->session, C->failed);
}

static PyObject *
Client_get_open_calls(ClientObject *C, void *closure)
{
    return PyLong_FromSsize_t(C->ncalls);
}

static void
Client_dealloc(ClientObject *C)
{
    while (C->calls != NULL) {
        if (C->session != NULL)
            nghttp2_session_set_stream_user_data(C->session, C->calls->id, NULL);
        ccall_free(C, C->calls);
    }
    if (C->session != NULL)
        nghttp2_session_del(C->session);
    Py_XDECREF(C->done);
    Py_TYPE(C)->tp_free((PyObject *)C);
}

static PyMethodDef Client_methods[] = {
    {"request", (PyCFunction)Client_request, METH_VARARGS,
     "request(headers, message, compressed) -> stream_id"},
    {"feed", (PyCFunction)Client_feed, METH_O,
     "feed(data) -> [(stream_id, http_status, grpc_status, grpc_message, details, body, "
     "reset_code)]"},
    {"data_to_send", (PyCFunction)Client_data_to_send, METH_NOARGS,
     "data_to_send() -> the bytes to write to the server (b'' for none)"},
    {"take_done", (PyCFunction)Client_take_done, METH_NOARGS,
     "take_done() -> the calls that ended while sending"},
    {"cancel", (PyCFunction)Client_cancel, METH_O, "cancel(stream_id): RST_STREAM CANCEL"},
    {"want_io", (PyCFunction)Client_want_io, METH_NOARGS,
     "False once the session is over (both sides done, or a fatal error)"},
    {"usable", (PyCFunction)Client_usable, METH_NOARGS,
     "False once the connection takes no new call (GOAWAY received, or an error)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Client_getset[] = {
    {"open_calls", (getter)Client_get_open_calls, NULL, "calls not yet ended", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ClientType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "plugins._native._h2server.ClientSession",
    .tp_doc = "One client connection's HTTP/2 state (nghttp2) for unary gRPC calls.",
    .tp_basicsize = sizeof(ClientObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Client_init,
    .tp_dealloc = (destructor)Client_dealloc,
    .tp_methods = Client_methods,
    .tp_getset = Client_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_h2server",
    "HTTP/2 server sessions (libnghttp2) for the OTLP receiver's native gRPC server.", -1,
    NULL,
};

PyMODINIT_FUNC
PyInit__h2server(void)
{
    if (PyType_Ready(&SessionType) < 0 || PyType_Ready(&ClientType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Session", (PyObject *)&SessionType) < 0 ||
        PyModule_AddObjectRef(m, "ClientSession", (PyObject *)&ClientType) < 0 ||
        PyModule_AddIntConstant(m, "FRAMING", FRAMING) < 0 ||
        PyModule_AddIntConstant(m, "TOO_LARGE", TOO_LARGE) < 0 ||
        PyModule_AddStringConstant(m, "NGHTTP2_VERSION", NGHTTP2_VERSION) < 0 ||
        PyModule_AddStringConstant(m, "RUNTIME_VERSION", nghttp2_version(0)->version_str) < 0 ||
        PyModule_AddIntConstant(m, "RUNTIME_VERSION_NUM", nghttp2_version(0)->version_num) < 0 ||
        PyModule_AddObjectRef(m, "RESET_RATE_LIMIT",
                              nghttp2_option_set_stream_reset_rate_limit != NULL ? Py_True
                                                                                 : Py_False) <
            0 ||
        PyModule_AddObjectRef(m, "MAX_CONTINUATIONS",
                              nghttp2_option_set_max_continuations != NULL ? Py_True
                                                                           : Py_False) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
