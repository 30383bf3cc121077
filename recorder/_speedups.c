/* recorder._speedups: predict.fun order book pushes read a run at a time, in C.
 *
 * predictfun_books(texts) reads each frame of a run as a predict.fun order book push
 *   {"type": "M", "topic": "predictOrderbook/<market>", "data": {"marketId": ..., "updateTimestampMs": ...,
 *    "bids": [[price, size], ...], "asks": [...], "lastOrderSettled": {...}, ...}, ...}
 * and gives, for every push it takes, exactly what the frame-by-frame (checked) path makes of it:
 * the market, the event time in microseconds, the level counts, best prices, the dedupe key (with
 * levels_hash: Python's hash of the tuple of the level values), the settled order's fields, and
 * every level value as float64. It takes only the plain common case and declines anything else
 * (its index goes to `declined`; the Python code decides what it is): a string with an escape in
 * a field it reads, a duplicated key it reads, a level that is not two plain numbers, a number
 * beyond a double or a negative zero, an integer id with a sign or beyond 19 digits, a time out of
 * range, JSON it does not fully validate (NaN, nesting beyond 64), a lone surrogate escape. Every
 * other part of the frame is validated as JSON and skipped. tests/test_speedups.py holds it to
 * the checked path on generated frames.
 *
 * Numbers: a decimal with at most 15 significant digits and a power of ten within 22 is one exact
 * integer times or divided by one exact power of ten (correctly rounded: Clinger's fast path);
 * anything else goes to PyOS_string_to_double (Python's own correctly rounded reader), so every
 * value is the double float() gives for the same text.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 64

typedef struct {
    const char *p;
    const char *end;
    int depth;
} Cur;

static inline void ws(Cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static inline int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Characters a string holds as they are: not the quote, the backslash or a control character. */
static const unsigned char PLAIN[256] = {
#define R16(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
    R16(0), R16(0),                                                 /* 0x00-0x1f: control */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,                 /* 0x20-0x2f: '"' at 0x22 */
    R16(1), R16(1),                                                 /* 0x30-0x4f */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,                 /* 0x50-0x5f: '\\' at 0x5c */
    R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), R16(1), /* 0x60-0xff */
#undef R16
};

/* A JSON string at c->p (at its opening quote). Sets *start, *len to its content (between the
 * quotes) and *escaped if it holds a backslash. 0 if not a valid string, or one with a \u escape
 * of a surrogate (the checked path rejects a lone one; a pair is left to it too). */
static int scan_string(Cur *c, const char **start, Py_ssize_t *len, int *escaped) {
    if (c->p >= c->end || *c->p != '"') return 0;
    const char *p = ++c->p, *end = c->end;
    *escaped = 0;
    *start = p;
    for (;;) {
        while (p < end && PLAIN[(unsigned char)*p]) p++; /* the run of characters needing no check */
        if (p >= end) break;
        unsigned char ch = (unsigned char)*p;
        if (ch == '"') {
            *len = p - *start;
            c->p = p + 1;
            return 1;
        }
        if (ch < 0x20) return 0;
        if (ch == '\\') {
            *escaped = 1;
            if (++p >= end) return 0;
            switch (*p) {
                case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                    p++;
                    break;
                case 'u': {
                    if (end - p < 5) return 0;
                    int v = 0;
                    for (int k = 1; k <= 4; k++) {
                        int h = hexval(p[k]);
                        if (h < 0) return 0;
                        v = v * 16 + h;
                    }
                    if (v >= 0xD800 && v <= 0xDFFF) return 0;
                    p += 5;
                    break;
                }
                default:
                    return 0;
            }
            continue;
        }
        p++;
    }
    return 0;
}

static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                               1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* A JSON number at c->p, validated and read in one pass: its double in *out (as float() reads its
 * text), its text [*start, c->p). 0 if not a JSON number. */
static int scan_number(Cur *c, const char **start, double *out) {
    const char *p = c->p, *end = c->end;
    *start = p;
    int neg = 0, digits = 0, scale = 0, exact = 1;
    uint64_t mant = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end) return 0;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') {
            if (++digits > 15) exact = 0;
            mant = mant * 10 + (uint64_t)(*p - '0');
            p++;
        }
    } else {
        return 0;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') return 0;
        while (p < end && *p >= '0' && *p <= '9') {
            if (mant || *p != '0') digits++;
            if (digits > 15) exact = 0;
            mant = mant * 10 + (uint64_t)(*p - '0');
            if (scale > -100000) scale--;
            else exact = 0;
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        int eneg = 0, ex = 0;
        if (p < end && (*p == '+' || *p == '-')) eneg = *p++ == '-';
        if (p >= end || *p < '0' || *p > '9') return 0;
        while (p < end && *p >= '0' && *p <= '9') {
            if (ex < 100000) {
                ex = ex * 10 + (*p - '0');
            } else {
                exact = 0; /* an exponent beyond any double's: float() reads it (inf or 0) */
            }
            p++;
        }
        scale += eneg ? -ex : ex;
    }
    c->p = p;
    if (exact && mant == 0) {
        *out = neg ? -0.0 : 0.0;
        return 1;
    }
    if (exact && scale >= -22 && scale <= 22) {
        /* mant < 10**15 < 2**53 and 10**|scale| are exact doubles: one correctly rounded operation */
        double v = scale < 0 ? (double)mant / POW10[-scale] : (double)mant * POW10[scale];
        *out = neg ? -v : v;
        return 1;
    }
    char buf[512];
    Py_ssize_t n = p - *start;
    if (n >= (Py_ssize_t)sizeof(buf)) {
        *out = NAN; /* declined by the callers (not finite) */
        return 1;
    }
    memcpy(buf, *start, n);
    buf[n] = 0;
    double v = PyOS_string_to_double(buf, NULL, NULL); /* +-inf on overflow */
    if (v == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        v = NAN;
    }
    *out = v;
    return 1;
}

/* A JSON number at c->p, skipped (validated only). */
static int skip_number(Cur *c) {
    const char *p = c->p, *end = c->end;
    if (p < end && *p == '-') p++;
    if (p >= end) return 0;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') p++;
    } else {
        return 0;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9') return 0;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return 0;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    c->p = p;
    return 1;
}

/* After a member or an element: 1 at a ',' (taken, with the spaces after it), 2 at `close`
 * (taken), 0 at anything else. */
static inline int next_or_close(Cur *c, char close) {
    ws(c);
    if (c->p >= c->end) return 0;
    if (*c->p == ',') {
        c->p++;
        ws(c);
        return 1;
    }
    if (*c->p == close) {
        c->p++;
        return 2;
    }
    return 0;
}

static int skip_value(Cur *c);

static int skip_container(Cur *c, char close, int object) {
    if (++c->depth > MAX_DEPTH) return 0;
    c->p++;
    ws(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
        c->depth--;
        return 1;
    }
    for (;;) {
        if (object) {
            const char *s;
            Py_ssize_t n;
            int esc;
            if (!scan_string(c, &s, &n, &esc)) return 0;
            ws(c);
            if (c->p >= c->end || *c->p != ':') return 0;
            c->p++;
            ws(c);
        }
        if (!skip_value(c)) return 0;
        int next = next_or_close(c, close);
        if (next == 1) continue;
        if (next == 2) c->depth--;
        return next == 2;
    }
}

/* Any JSON value at c->p, validated and skipped. */
static int skip_value(Cur *c) {
    if (c->p >= c->end) return 0;
    switch (*c->p) {
        case '"': {
            const char *s;
            Py_ssize_t n;
            int esc;
            return scan_string(c, &s, &n, &esc);
        }
        case '{':
            return skip_container(c, '}', 1);
        case '[':
            return skip_container(c, ']', 0);
        case 't':
            if (c->end - c->p >= 4 && memcmp(c->p, "true", 4) == 0) {
                c->p += 4;
                return 1;
            }
            return 0;
        case 'f':
            if (c->end - c->p >= 5 && memcmp(c->p, "false", 5) == 0) {
                c->p += 5;
                return 1;
            }
            return 0;
        case 'n':
            if (c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0) {
                c->p += 4;
                return 1;
            }
            return 0;
        default:
            return skip_number(c);
    }
}

/* A value's span: where it starts, after it is skipped. */
typedef struct {
    const char *start;
    const char *end;
} Span;

static inline int is_null_at(Cur *c) { return c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0; }

/* The members of the object at c->p, one pass: for a key of `keys` (not escaped), member(ctx,
 * index, c) is called with c at its value, and must read it whole (1), decline the frame (0) or
 * fail (-1, an exception set); any other member is validated and skipped. 0 if not an object, not
 * valid JSON, a key of `keys` twice, or an escaped key (it might spell one of `keys`). */
typedef int (*member_fn)(void *ctx, int which, Cur *c);

static int each_member(Cur *c, const char *const *keys, const Py_ssize_t *lens, int n, member_fn member,
                       void *ctx) {
    unsigned seen = 0;
    if (c->p >= c->end || *c->p != '{') return 0;
    if (++c->depth > MAX_DEPTH) return 0;
    c->p++;
    ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
        c->depth--;
        return 1;
    }
    for (;;) {
        const char *s;
        Py_ssize_t len;
        int esc;
        if (!scan_string(c, &s, &len, &esc) || esc) return 0;
        int which = -1;
        for (int k = 0; k < n; k++) {
            if (lens[k] == len && memcmp(keys[k], s, len) == 0) {
                which = k;
                break;
            }
        }
        ws(c);
        if (c->p >= c->end || *c->p != ':') return 0;
        c->p++;
        ws(c);
        if (which >= 0) {
            if (seen & (1u << which)) return 0; /* twice */
            seen |= 1u << which;
            int r = member(ctx, which, c);
            if (r <= 0) return r;
        } else if (!skip_value(c)) {
            return 0;
        }
        int next = next_or_close(c, '}');
        if (next == 1) continue;
        if (next == 2) c->depth--;
        return next == 2;
    }
}

/* A value at c->p, skipped; its span in *v. */
static int span_at(Cur *c, Span *v) {
    v->start = c->p;
    if (!skip_value(c)) return 0;
    v->end = c->p;
    return 1;
}

static inline int span_is_null(Span v) { return v.end - v.start == 4 && memcmp(v.start, "null", 4) == 0; }

/* A string value without escapes: its content. */
static int plain_string(Span v, const char **s, Py_ssize_t *n) {
    if (v.start == NULL || *v.start != '"') return 0;
    Cur c = {v.start, v.end, 0};
    int esc;
    if (!scan_string(&c, s, n, &esc) || esc) return 0;
    return 1;
}

/* Strings made before, by their UTF-8 bytes (markets, ids, outcomes, sides and prices repeat from
 * push to push): one lookup instead of a new string. A slot keeps its latest string. */
#define CACHE_SLOTS 4096
static struct {
    PyObject *str;
    uint64_t hash;
    Py_ssize_t len;
} cache[CACHE_SLOTS];

static PyObject *cached_string(const char *s, Py_ssize_t n, int intern) {
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t k = 0; k < n; k++) h = (h ^ (unsigned char)s[k]) * 1099511628211ULL;
    size_t slot = (size_t)(h ^ (h >> 29)) & (CACHE_SLOTS - 1);
    PyObject *o = cache[slot].str;
    if (o != NULL && cache[slot].hash == h && cache[slot].len == n) {
        Py_ssize_t size;
        const char *u = PyUnicode_AsUTF8AndSize(o, &size);
        if (u != NULL && size == n && memcmp(u, s, n) == 0) {
            Py_INCREF(o);
            return o;
        }
        PyErr_Clear();
    }
    o = PyUnicode_DecodeUTF8(s, n, NULL);
    if (o == NULL) return NULL;
    if (intern) PyUnicode_InternInPlace(&o); /* markets only, as the checked path does (sys.intern) */
    Py_XDECREF(cache[slot].str);
    Py_INCREF(o);
    cache[slot].str = o;
    cache[slot].hash = h;
    cache[slot].len = n;
    return o;
}

/* An id as the checked path records it (base.text): a string without escapes as it is, a
 * non-negative integer of at most 19 digits as its text (below 2**64). NULL (no exception) if
 * declined. */
static PyObject *read_id(Span v, int intern) {
    const char *s;
    Py_ssize_t n;
    if (*v.start == '"') {
        if (!plain_string(v, &s, &n)) return NULL;
        return cached_string(s, n, intern);
    }
    Py_ssize_t len = v.end - v.start;
    if (len < 1 || len > 19) return NULL;
    for (Py_ssize_t k = 0; k < len; k++)
        if (v.start[k] < '0' || v.start[k] > '9') return NULL;
    return cached_string(v.start, len, intern);
}

/* A number value (not a string, bool or null): its double; 0 if not a number. */
static int read_number(Span v, double *out) {
    Cur c = {v.start, v.end, 0};
    const char *s;
    return scan_number(&c, &s, out) && c.p == v.end;
}

/* Growable float64 buffer. */
typedef struct {
    double *v;
    Py_ssize_t n, cap;
} Vec;

static int vec_push(Vec *b, double x) {
    if (b->n == b->cap) {
        Py_ssize_t cap = b->cap ? 2 * b->cap : 1024;
        double *v = PyMem_Realloc(b->v, cap * sizeof(double));
        if (v == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = x;
    return 0;
}

/* Python's tuple hash (Objects/tupleobject.c, 3.8 and later), fed one item hash at a time. */
#if SIZEOF_PY_UHASH_T > 4
#define XXPRIME_1 ((Py_uhash_t)11400714785074694791ULL)
#define XXPRIME_2 ((Py_uhash_t)14029467366897019727ULL)
#define XXPRIME_5 ((Py_uhash_t)2870177450012600261ULL)
#define XXROTATE(x) ((x << 31) | (x >> 33))
#else
#define XXPRIME_1 ((Py_uhash_t)2654435761UL)
#define XXPRIME_2 ((Py_uhash_t)2246822519UL)
#define XXPRIME_5 ((Py_uhash_t)374761393UL)
#define XXROTATE(x) ((x << 13) | (x >> 19))
#endif

#if defined(PyHASH_BITS)
#define HASH_BITS PyHASH_BITS /* Python 3.13 and later */
#elif defined(_PyHASH_BITS)
#define HASH_BITS _PyHASH_BITS /* 3.12 and earlier: the same constant, private name */
#endif
#if SIZEOF_PY_UHASH_T > 4 && defined(HASH_BITS) && HASH_BITS == 61
/* Python's hash of a finite float (Python/pyhash.c: the value modulo 2**61 - 1), from its bits:
 * v = mant * 2**e exactly, and 2**61 = 1 modulo 2**61 - 1, so multiplying by 2**e is a rotation
 * of the 61-bit residue. The decoder checks it against Python's own before it uses the reader. */
static inline Py_uhash_t float_hash(double v) {
    const uint64_t P = ((uint64_t)1 << 61) - 1;
    uint64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    uint64_t mant = bits & (((uint64_t)1 << 52) - 1);
    int bexp = (int)((bits >> 52) & 0x7FF), e;
    if (bexp == 0) {
        if (mant == 0) return 0; /* +-0.0 */
        e = -1074;
    } else {
        mant |= (uint64_t)1 << 52;
        e = bexp - 1075;
    }
    int r = e % 61;
    if (r < 0) r += 61;
    uint64_t x = r ? (((mant << r) & P) | (mant >> (61 - r))) : mant;
    if (bits >> 63) x = (uint64_t)0 - x;
    if (x == (uint64_t)-1) x = (uint64_t)-2;
    return (Py_uhash_t)x;
}
#define FLOAT_HASH(v) float_hash(v)
#elif PY_VERSION_HEX >= 0x030A0000 && PY_VERSION_HEX < 0x030D0000
#define FLOAT_HASH(v) ((Py_uhash_t)_Py_HashDouble(NULL, (v))) /* finite: the object is never read */
#endif

static inline int hash_values(const double *v, Py_ssize_t n, Py_uhash_t *acc) {
    for (Py_ssize_t k = 0; k < n; k++) {
#ifdef FLOAT_HASH
        Py_uhash_t lane = FLOAT_HASH(v[k]);
#else
        PyObject *f = PyFloat_FromDouble(v[k]);
        if (f == NULL) return -1;
        Py_uhash_t lane = (Py_uhash_t)PyObject_Hash(f);
        Py_DECREF(f);
#endif
        *acc += lane * XXPRIME_2;
        *acc = XXROTATE(*acc);
        *acc *= XXPRIME_1;
    }
    return 0;
}

static inline Py_hash_t hash_finish(Py_uhash_t acc, Py_ssize_t n) {
    acc += (Py_uhash_t)n ^ (XXPRIME_5 ^ 3527539UL);
    if (acc == (Py_uhash_t)-1) return 1546275796;
    return (Py_hash_t)acc;
}

/* A side at c->p ("[[p, s], ...]" or null), read into `out`: 1 and its level count in *count,
 * 0 if declined, -1 on error. */
static int read_side(Cur *c, Vec *out, Py_ssize_t *count) {
    *count = 0;
    if (is_null_at(c)) {
        c->p += 4;
        return 1;
    }
    if (c->p >= c->end || *c->p != '[') return 0;
    c->p++;
    ws(c);
    if (c->p < c->end && *c->p == ']') {
        c->p++;
        return 1;
    }
    for (;;) {
        if (c->p >= c->end || *c->p != '[') return 0;
        c->p++;
        for (int k = 0; k < 2; k++) {
            ws(c);
            const char *s;
            double x;
            if (!scan_number(c, &s, &x)) return 0;
            if (!isfinite(x) || (x == 0.0 && signbit(x))) return 0;
            if (vec_push(out, x) < 0) return -1;
            ws(c);
            if (k == 0) {
                if (c->p >= c->end || *c->p != ',') return 0;
                c->p++;
            }
        }
        if (c->p >= c->end || *c->p != ']') return 0;
        c->p++;
        (*count)++;
        int next = next_or_close(c, ']');
        if (next == 1) continue;
        return next == 2;
    }
}

static const char *const TOP_KEYS[] = {"type", "topic", "data"};
static const Py_ssize_t TOP_LENS[] = {4, 5, 4};
static const char *const DATA_KEYS[] = {"marketId", "updateTimestampMs", "bids", "asks", "lastOrderSettled"};
static const Py_ssize_t DATA_LENS[] = {8, 17, 4, 4, 16};
static const char *const SETTLED_KEYS[] = {"id", "marketId", "outcome", "side", "price"};
static const Py_ssize_t SETTLED_LENS[] = {2, 8, 7, 4, 5};
#define TOPIC "predictOrderbook"
#define TOPIC_LEN 16

typedef struct {
    PyObject *items, *declined, *keys, *markets, *stamps, *settles, *sids, *trade_markets, *nb, *na, *best_bid,
        *best_ask, *depth;
    Vec bid_values, ask_values;
    PyObject *book; /* "book", interned */
} Out;

/* One push as it is read. */
typedef struct {
    Out *o;
    Span type, topic, market, stamp;
    Span settled[5];
    int has_data, has_settled;
    Py_ssize_t nb, na;
} Push;

static int settled_member(void *ctx, int which, Cur *c) { return span_at(c, &((Push *)ctx)->settled[which]); }

static int data_member(void *ctx, int which, Cur *c) {
    Push *b = (Push *)ctx;
    switch (which) {
        case 0:
            return span_at(c, &b->market);
        case 1:
            return span_at(c, &b->stamp);
        case 2:
            return read_side(c, &b->o->bid_values, &b->nb);
        case 3:
            return read_side(c, &b->o->ask_values, &b->na);
        default:
            if (is_null_at(c)) {
                c->p += 4;
                return 1;
            }
            b->has_settled = 1;
            return each_member(c, SETTLED_KEYS, SETTLED_LENS, 5, settled_member, b);
    }
}

static int is_book_topic(Span topic) {
    const char *s;
    Py_ssize_t n;
    return plain_string(topic, &s, &n) && n >= TOPIC_LEN && memcmp(s, TOPIC, TOPIC_LEN) == 0 &&
           (n == TOPIC_LEN || s[TOPIC_LEN] == '/');
}

static int top_member(void *ctx, int which, Cur *c) {
    Push *b = (Push *)ctx;
    if (which == 0) return span_at(c, &b->type);
    if (which == 1) return span_at(c, &b->topic);
    if (b->topic.start != NULL && !is_book_topic(b->topic)) return 0; /* not a book: declined unread */
    b->has_data = 1;
    return each_member(c, DATA_KEYS, DATA_LENS, 5, data_member, b);
}

static int append_steal(PyObject *list, PyObject *item) {
    if (item == NULL) return -1;
    int r = PyList_Append(list, item);
    Py_DECREF(item);
    return r;
}

/* An optional string field of the settled order (outcome, side): absent or null -> None, a string
 * without escapes -> itself; NULL (no exception) if declined. */
static PyObject *opt_string(Span v) {
    if (v.start == NULL || span_is_null(v)) Py_RETURN_NONE;
    const char *s;
    Py_ssize_t n;
    if (!plain_string(v, &s, &n)) return NULL;
    return cached_string(s, n, 0);
}

/* One frame: 1 taken (appended to the outputs), 0 declined, -1 error (exception set). */
static int one_book(Out *o, const char *text, Py_ssize_t size) {
    Cur c = {text, text + size, 0};
    Push b;
    memset(&b, 0, sizeof(b));
    b.o = o;
    Py_ssize_t bid_mark = o->bid_values.n, ask_mark = o->ask_values.n;
    PyObject *stamp = NULL, *market = NULL, *sid = NULL, *tmarket = NULL, *settle = NULL;
    ws(&c);
    int r = each_member(&c, TOP_KEYS, TOP_LENS, 3, top_member, &b);
    if (r < 0) goto error;
    if (r == 0) goto declined;
    ws(&c);
    if (c.p != c.end || !b.has_data) goto declined;
    const char *s;
    Py_ssize_t n;
    if (b.type.start == NULL || !plain_string(b.type, &s, &n) || n != 1 || s[0] != 'M') goto declined;
    if (b.topic.start == NULL || !is_book_topic(b.topic) || !plain_string(b.topic, &s, &n)) goto declined;
    const char *param = n > TOPIC_LEN ? s + TOPIC_LEN + 1 : s + n;
    Py_ssize_t param_len = n > TOPIC_LEN ? n - TOPIC_LEN - 1 : 0;
    if (b.has_settled && b.settled[0].start == NULL) goto declined; /* no id: the checked path's message */
    /* the event time: ms * 1000, rounded half to even, within timestamp[us] */
    if (b.stamp.start == NULL || span_is_null(b.stamp)) {
        stamp = Py_None;
        Py_INCREF(stamp);
    } else {
        double ms;
        if (!read_number(b.stamp, &ms)) goto declined;
        double us = ms * 1000;
        if (!(us > -9223372036854775808.0 && us < 9223372036854775808.0)) goto declined;
        stamp = PyLong_FromLongLong((long long)nearbyint(us));
        if (stamp == NULL) goto error;
    }
    /* the market and the settled order */
    market = b.market.start != NULL ? read_id(b.market, 1) : cached_string(param, param_len, 1);
    if (market == NULL) goto declined;
    if (b.has_settled) {
        sid = read_id(b.settled[0], 0);
        if (sid == NULL) goto declined;
        if (b.settled[1].start != NULL) {
            tmarket = read_id(b.settled[1], 0);
            if (tmarket == NULL) goto declined;
        } else {
            tmarket = market;
            Py_INCREF(tmarket);
        }
        PyObject *outcome = NULL, *side = NULL, *price = NULL;
        Span pv = b.settled[4];
        outcome = opt_string(b.settled[2]);
        if (outcome != NULL) side = opt_string(b.settled[3]);
        if (side != NULL) {
            if (pv.start == NULL || span_is_null(pv)) {
                price = Py_None;
                Py_INCREF(price);
            } else if (*pv.start == '"') {
                price = opt_string(pv);
            } else {
                double x;
                /* -0: +0.0 to the checked path's parser, an integer ("-0.0" is -0.0): left to it */
                price = read_number(pv, &x) && !(x == 0.0 && signbit(x)) ? PyFloat_FromDouble(x) : NULL;
            }
        }
        if (price != NULL) {
            settle = PyTuple_Pack(3, outcome, side, price);
            if (settle != NULL) PyObject_GC_UnTrack(settle);
        }
        Py_XDECREF(outcome);
        Py_XDECREF(side);
        Py_XDECREF(price);
        if (settle == NULL) goto declined;
    } else {
        sid = Py_None;
        tmarket = Py_None;
        settle = Py_None;
        Py_INCREF(sid);
        Py_INCREF(tmarket);
        Py_INCREF(settle);
    }
    {
        /* the content hash: Python's hash of the tuple of every level value, bids first */
        Py_ssize_t kb = o->bid_values.n - bid_mark, ka = o->ask_values.n - ask_mark;
        Py_uhash_t acc = XXPRIME_5;
        if (hash_values(o->bid_values.v + bid_mark, kb, &acc) < 0 ||
            hash_values(o->ask_values.v + ask_mark, ka, &acc) < 0)
            goto error;
        Py_ssize_t j = PyList_GET_SIZE(o->markets);
        PyObject *key = PyTuple_New(5);
        if (key == NULL) goto error;
        PyObject *count = PyLong_FromSsize_t(b.nb);
        PyObject *hash = count != NULL ? PyLong_FromSsize_t(hash_finish(acc, kb + ka)) : NULL;
        if (hash == NULL) {
            Py_XDECREF(count);
            Py_DECREF(key);
            goto error;
        }
        PyTuple_SET_ITEM(key, 0, Py_NewRef(o->book));
        PyTuple_SET_ITEM(key, 1, Py_NewRef(market));
        PyTuple_SET_ITEM(key, 2, Py_NewRef(stamp));
        PyTuple_SET_ITEM(key, 3, count);
        PyTuple_SET_ITEM(key, 4, hash);
        PyObject_GC_UnTrack(key); /* strings and numbers only: never in a cycle, never worth a GC pass */
        if (append_steal(o->keys, key) < 0 ||
            append_steal(o->best_bid, b.nb ? PyFloat_FromDouble(o->bid_values.v[bid_mark]) : Py_NewRef(Py_None)) < 0 ||
            append_steal(o->best_ask, b.na ? PyFloat_FromDouble(o->ask_values.v[ask_mark]) : Py_NewRef(Py_None)) < 0 ||
            PyList_Append(o->markets, market) < 0 ||
            PyList_Append(o->stamps, stamp) < 0 || PyList_Append(o->settles, settle) < 0 ||
            PyList_Append(o->sids, sid) < 0 || PyList_Append(o->trade_markets, tmarket) < 0 ||
            append_steal(o->nb, PyLong_FromSsize_t(b.nb)) < 0 || append_steal(o->na, PyLong_FromSsize_t(b.na)) < 0 ||
            append_steal(o->depth, PyLong_FromSsize_t(b.nb + b.na)) < 0 ||
            append_steal(o->items, PyLong_FromSsize_t(j)) < 0)
            goto error;
    }
    Py_DECREF(market);
    Py_DECREF(stamp);
    Py_DECREF(sid);
    Py_DECREF(tmarket);
    Py_DECREF(settle);
    return 1;
declined:
    if (PyErr_Occurred()) { /* a string that is not UTF-8 is declined; running out of memory is an error */
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) goto error;
        PyErr_Clear();
    }
    Py_XDECREF(market);
    Py_XDECREF(sid);
    Py_XDECREF(tmarket);
    Py_XDECREF(settle);
    Py_XDECREF(stamp);
    o->bid_values.n = bid_mark;
    o->ask_values.n = ask_mark;
    return 0;
error:
    Py_XDECREF(market);
    Py_XDECREF(sid);
    Py_XDECREF(tmarket);
    Py_XDECREF(settle);
    Py_XDECREF(stamp);
    return -1;
}

static PyObject *vec_bytes(Vec *b) { return PyBytes_FromStringAndSize((const char *)b->v, b->n * sizeof(double)); }

static PyObject *predictfun_books(PyObject *self, PyObject *texts) {
    if (!PyList_Check(texts)) {
        PyErr_SetString(PyExc_TypeError, "predictfun_books takes a list of str");
        return NULL;
    }
    Out o;
    memset(&o, 0, sizeof(o));
    PyObject *result = NULL;
    PyObject **lists[] = {&o.items, &o.declined, &o.keys, &o.markets, &o.stamps, &o.settles, &o.sids,
                          &o.trade_markets, &o.nb, &o.na, &o.best_bid, &o.best_ask, &o.depth};
    const int nlists = sizeof(lists) / sizeof(lists[0]);
    for (int k = 0; k < nlists; k++) {
        *lists[k] = PyList_New(0);
        if (*lists[k] == NULL) goto done;
    }
    o.book = PyUnicode_InternFromString("book");
    if (o.book == NULL) goto done;
    Py_ssize_t n = PyList_GET_SIZE(texts);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(texts, i);
        int r = 0;
        if (PyUnicode_Check(t)) {
            Py_ssize_t size;
            const char *text = PyUnicode_AsUTF8AndSize(t, &size);
            if (text == NULL) {
                PyErr_Clear(); /* a lone surrogate: no UTF-8 */
            } else {
                r = one_book(&o, text, size);
                if (r < 0) goto done;
            }
        }
        if (r == 0) {
            if (append_steal(o.declined, PyLong_FromSsize_t(i)) < 0) goto done;
            if (PyList_Append(o.items, Py_None) < 0) goto done;
        }
    }
    {
        PyObject *bids = vec_bytes(&o.bid_values), *asks = vec_bytes(&o.ask_values);
        if (bids == NULL || asks == NULL) {
            Py_XDECREF(bids);
            Py_XDECREF(asks);
            goto done;
        }
        result = Py_BuildValue("(OOOOOOOOOOOOONN)", o.items, o.declined, o.keys, o.markets, o.stamps, o.settles,
                               o.sids, o.trade_markets, o.nb, o.na, o.best_bid, o.best_ask, o.depth, bids, asks);
    }
done:
    for (int k = 0; k < nlists; k++) Py_XDECREF(*lists[k]);
    Py_XDECREF(o.book);
    PyMem_Free(o.bid_values.v);
    PyMem_Free(o.ask_values.v);
    return result;
}

static PyObject *levels_hash(PyObject *self, PyObject *values) {
    /* The tuple hash of a sequence of floats, computed as predictfun_books does (for a self-check
     * against Python's own at import). */
    PyObject *seq = PySequence_Fast(values, "levels_hash takes a sequence of floats");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    double *v = PyMem_Malloc((n + 1) * sizeof(double));
    if (v == NULL) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        v[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (v[i] == -1.0 && PyErr_Occurred()) {
            PyMem_Free(v);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    Py_uhash_t acc = XXPRIME_5;
    int r = hash_values(v, n, &acc);
    PyMem_Free(v);
    if (r < 0) return NULL;
    return PyLong_FromSsize_t(hash_finish(acc, n));
}

/* base.Bounded.add_many's loop: add_new() of each key in order over the two generations (dicts);
 * returns (what each add_new returned, previous, current) with the generations it ends with. */
static PyObject *bounded_add_many(PyObject *self, PyObject *args) {
    PyObject *previous, *current, *keys;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "O!O!nO!", &PyDict_Type, &previous, &PyDict_Type, &current, &size, &PyList_Type, &keys))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    Py_INCREF(previous);
    Py_INCREF(current);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
#if PY_VERSION_HEX < 0x030D0000
        Py_hash_t h = PyObject_Hash(key); /* once for both dicts (a tuple does not keep its hash) */
        if (h == -1) goto error;
        int r = _PyDict_Contains_KnownHash(previous, key, h);
#else
        int r = PyDict_Contains(previous, key);
#endif
        if (r < 0) goto error;
        PyObject *added = Py_False;
        if (!r) {
            Py_ssize_t before = PyDict_GET_SIZE(current);
#if PY_VERSION_HEX < 0x030D0000
            if (_PyDict_SetItem_KnownHash(current, key, Py_None, h) < 0) goto error;
#else
            if (PyDict_SetDefault(current, key, Py_None) == NULL) goto error;
#endif
            /* setdefault: an existing key keeps its value; the size tells whether it was new */
            if (PyDict_GET_SIZE(current) != before) {
                added = Py_True;
                if (before + 1 >= size) {
                    Py_DECREF(previous);
                    previous = current;
                    current = PyDict_New();
                    if (current == NULL) {
                        current = previous;
                        Py_INCREF(current);
                        goto error;
                    }
                }
            }
        }
        Py_INCREF(added);
        PyList_SET_ITEM(out, i, added);
    }
    return Py_BuildValue("(NNN)", out, previous, current);
error:
    Py_DECREF(out);
    Py_DECREF(previous);
    Py_DECREF(current);
    return NULL;
}

/* cut_text_frames(buf, start, max_size) -> (next, messages): the transport's reader
 * (transport/sansio.py _receive) for the plain case. From buf[start], every whole WebSocket frame
 * that is final, text, without reserved bits or a mask, of at most max_size bytes and valid UTF-8
 * (strictly, as bytes.decode()), decoded into `messages`, in order; it stops at the first frame
 * that is anything else or not whole and returns its index, where the Python reader takes over
 * (it hands such a frame to the websockets protocol, or waits for the rest). */
static PyObject *cut_text_frames(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t i, max_size;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &i, &max_size)) return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)view.buf;
    Py_ssize_t end = view.len;
    if (i < 0 || i > end) i = end;
    while (end - i >= 2) {
        unsigned char b0 = b[i], b1 = b[i + 1];
        if (b0 != 0x81 || (b1 & 0x80)) break; /* not FIN + text, or reserved bits, or masked */
        uint64_t n = b1 & 0x7F;
        Py_ssize_t h = 2;
        if (n >= 126) {
            h = n == 126 ? 4 : 10;
            if (end - i < h) break;
            n = 0;
            for (Py_ssize_t k = 2; k < h; k++) n = (n << 8) | b[i + k];
        }
        if (max_size < 0 || n > (uint64_t)max_size) break; /* oversized: refused by the Python side */
        if ((uint64_t)(end - i - h) < n) break;            /* not whole yet */
        PyObject *text = PyUnicode_DecodeUTF8((const char *)b + i + h, (Py_ssize_t)n, NULL);
        if (text == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) goto error;
            PyErr_Clear(); /* the protocol fails the connection (1007) */
            break;
        }
        if (append_steal(out, text) < 0) goto error;
        i += h + (Py_ssize_t)n;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(nN)", i, out);
error:
    PyBuffer_Release(&view);
    Py_DECREF(out);
    return NULL;
}

/* ascii_frames(texts) -> (blob, lengths) or None: the journal's FRAMES entry tail (journal.py) in one
 * pass: every text's characters one after another (their UTF-8, as they are ASCII) and their
 * lengths as packed little-endian u32; None if any item of the list is not an ASCII str (the
 * journal then encodes each as UTF-8) or longer than a u32. texts must be a list (TypeError). */
static PyObject *ascii_frames(PyObject *self, PyObject *texts) {
    if (!PyList_Check(texts)) {
        PyErr_SetString(PyExc_TypeError, "ascii_frames takes a list of str");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(texts), total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(texts, i);
#if PY_VERSION_HEX < 0x030C0000
        if (PyUnicode_Check(t) && PyUnicode_READY(t) < 0) return NULL; /* out of memory */
#endif
        if (!PyUnicode_Check(t) || !PyUnicode_IS_ASCII(t)) Py_RETURN_NONE;
        Py_ssize_t len = PyUnicode_GET_LENGTH(t);
        if (len > 0xFFFFFFFFLL || total > PY_SSIZE_T_MAX - len) Py_RETURN_NONE;
        total += len;
    }
    PyObject *blob = PyBytes_FromStringAndSize(NULL, total);
    if (blob == NULL) return NULL;
    PyObject *lengths = PyBytes_FromStringAndSize(NULL, n * 4);
    if (lengths == NULL) {
        Py_DECREF(blob);
        return NULL;
    }
    char *out = PyBytes_AS_STRING(blob);
    unsigned char *lens = (unsigned char *)PyBytes_AS_STRING(lengths);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(texts, i);
        Py_ssize_t len = PyUnicode_GET_LENGTH(t);
        memcpy(out, PyUnicode_DATA(t), (size_t)len);
        out += len;
        uint32_t v = (uint32_t)len;
        lens[4 * i] = (unsigned char)v;
        lens[4 * i + 1] = (unsigned char)(v >> 8);
        lens[4 * i + 2] = (unsigned char)(v >> 16);
        lens[4 * i + 3] = (unsigned char)(v >> 24);
    }
    return Py_BuildValue("(NN)", blob, lengths);
}

static PyMethodDef methods[] = {
    {"predictfun_books", predictfun_books, METH_O,
     "predictfun_books(texts) -> (items, declined, keys, markets, stamps, settles, sids, trade_markets, "
     "bid_counts, ask_counts, best_bids, best_asks, depths, bid_values, ask_values)"},
    {"levels_hash", levels_hash, METH_O, "levels_hash(values) -> Python's hash of tuple(values)"},
    {"bounded_add_many", bounded_add_many, METH_VARARGS,
     "bounded_add_many(previous, current, size, keys) -> (added flags, previous, current)"},
    {"ascii_frames", ascii_frames, METH_O,
     "ascii_frames(texts) -> (blob, packed u32 lengths), or None if a text is not ASCII"},
    {"cut_text_frames", cut_text_frames, METH_VARARGS,
     "cut_text_frames(buf, start, max_size) -> (next index, messages): plain text frames from buf[start:]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "recorder._speedups",
                                    "The recorder's compiled hot paths (predict.fun order books, the transport's text frames, the journal's runs).", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
