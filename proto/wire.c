/* Wire codec for proto/wire.h. The decoder is the first code that untrusted
 * peer bytes meet, so it reads the buffer only through memcpy (any
 * alignment), never outside [buf, buf + len), never allocates or logs (the
 * caller knows the peer and logs once), and sizes every variable part with
 * overflow-checked 64-bit arithmetic before trusting it. */
#include "proto/wire.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define HDR_SIZE sizeof(lam_wire_hdr_t)

const char *lam_msg_type_name(uint16_t type)
{
    switch (type) {
    case LAM_MSG_HELLO: return "HELLO";
    case LAM_MSG_HELLO_CHALLENGE: return "HELLO_CHALLENGE";
    case LAM_MSG_HELLO_AUTH: return "HELLO_AUTH";
    case LAM_MSG_HELLO_OK: return "HELLO_OK";
    case LAM_MSG_ATTN: return "ATTN";
    case LAM_MSG_ATTN_RESULT: return "ATTN_RESULT";
    case LAM_MSG_SEQ_RELEASE: return "SEQ_RELEASE";
    case LAM_MSG_STATS: return "STATS";
    case LAM_MSG_STATS_REPLY: return "STATS_REPLY";
    case LAM_MSG_ERROR: return "ERROR";
    default: return "unknown";
    }
}

/* ---- layout ---------------------------------------------------------------- */

/* The limits keep every product far below 2^64 today; the checks are there so
 * that raising a limit can never turn into a wrapped size. */
static int mul_u64(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_mul_overflow(a, b, r); }
static int add_u64(uint64_t a, uint64_t b, uint64_t *r) { return !__builtin_add_overflow(a, b, r); }

lam_wire_attn_layout_t lam_wire_attn_layout(const lam_wire_attn_t *h, int result)
{
    lam_wire_attn_layout_t L = {0};
    uint64_t es = lam_dtype_size(h->dtype);
    if (!es || h->n_seq > LAM_WIRE_MAX_SEQ || h->n_tok > LAM_WIRE_MAX_TOK ||
        h->n_q_heads > LAM_WIRE_MAX_HEADS || h->n_kv_heads > LAM_WIRE_MAX_HEADS ||
        h->head_dim > LAM_WIRE_MAX_HEAD_DIM)
        return L;
    uint64_t row_q, row_kv, q_bytes, kv_bytes, seq_bytes;
    if (!mul_u64((uint64_t)h->head_dim, es, &row_q) || !mul_u64(row_q, h->n_q_heads, &row_q) ||
        !mul_u64(row_q, h->n_tok, &q_bytes))
        return L;
    if (!mul_u64((uint64_t)h->head_dim, es, &row_kv) || !mul_u64(row_kv, h->n_kv_heads, &row_kv) ||
        !mul_u64(row_kv, h->n_tok, &kv_bytes))
        return L;
    if (!mul_u64(h->n_seq, sizeof(lam_wire_seq_t), &seq_bytes))
        return L;

    uint64_t seq = HDR_SIZE + sizeof(lam_wire_attn_t), off, q = 0, k = 0, v = 0, o = 0;
    if (!add_u64(seq, seq_bytes, &off))
        return L;
    if (result) {
        o = off;
        if (!add_u64(off, q_bytes, &off))
            return L;
    } else {
        q = off;
        k = q + q_bytes; /* q + q_bytes + 2 * kv_bytes is checked below */
        v = k + kv_bytes;
        if (!add_u64(off, q_bytes, &off) || !add_u64(off, kv_bytes, &off) || !add_u64(off, kv_bytes, &off))
            return L;
    }
    /* The header's len is 32 bits, and size_t may be too. */
    if (off - HDR_SIZE > UINT32_MAX || off > SIZE_MAX)
        return L;
    L.seq = (size_t)seq;
    L.q = (size_t)q;
    L.k = (size_t)k;
    L.v = (size_t)v;
    L.o = (size_t)o;
    L.total = (size_t)off;
    return L;
}

/* ---- decoding -------------------------------------------------------------- */

static lam_status_t fail(char *why, size_t why_len, lam_status_t st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static lam_status_t fail(char *why, size_t why_len, lam_status_t st, const char *fmt, ...)
{
    if (why && why_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, why_len, fmt, ap);
        va_end(ap);
    }
    return st;
}

#define FAIL(...) fail(why, why_len, LAM_ERR_PROTO, __VA_ARGS__)

static int dtype_ok(unsigned dt) { return dt < LAM_DT_END; }

/* Heapsort: O(n log n) in the worst case, in place, no recursion and no
 * allocation — qsort gives none of those guarantees, and a hash table's
 * worst case is quadratic on ids a peer picks to collide. */
static void sift_down(uint64_t *a, size_t i, size_t n)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            return;
        if (c + 1 < n && a[c + 1] > a[c])
            c++;
        if (a[i] >= a[c])
            return;
        uint64_t t = a[i];
        a[i] = a[c];
        a[c] = t;
        i = c;
    }
}

static void sort_u64(uint64_t *a, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        sift_down(a, i, n);
    for (size_t end = n; end-- > 1;) {
        uint64_t t = a[0];
        a[0] = a[end];
        a[end] = t;
        sift_down(a, 0, end);
    }
}

static lam_status_t decode_attn(const uint8_t *p, size_t len, int result, lam_msg_t *out, char *why,
                                size_t why_len)
{
    const char *name = result ? "ATTN_RESULT" : "ATTN";
    lam_wire_attn_t h;
    if (len < HDR_SIZE + sizeof h)
        return FAIL("%s: length %zu is shorter than the %zu-byte header and fixed part", name, len,
                    HDR_SIZE + sizeof h);
    memcpy(&h, p + HDR_SIZE, sizeof h);

    if (!dtype_ok(h.dtype))
        return FAIL("%s: unknown dtype %u", name, (unsigned)h.dtype);
    if (h.n_seq < 1 || h.n_seq > LAM_WIRE_MAX_SEQ)
        return FAIL("%s: n_seq %u outside [1, %u]", name, (unsigned)h.n_seq, LAM_WIRE_MAX_SEQ);
    if (h.n_tok < 1 || h.n_tok > LAM_WIRE_MAX_TOK)
        return FAIL("%s: n_tok %u outside [1, %u]", name, (unsigned)h.n_tok, LAM_WIRE_MAX_TOK);
    if (h.n_q_heads < 1 || h.n_q_heads > LAM_WIRE_MAX_HEADS)
        return FAIL("%s: n_q_heads %u outside [1, %u]", name, (unsigned)h.n_q_heads, LAM_WIRE_MAX_HEADS);
    if (h.n_kv_heads < 1 || h.n_kv_heads > LAM_WIRE_MAX_HEADS)
        return FAIL("%s: n_kv_heads %u outside [1, %u]", name, (unsigned)h.n_kv_heads, LAM_WIRE_MAX_HEADS);
    if (h.n_q_heads % h.n_kv_heads)
        return FAIL("%s: n_q_heads %u is not a multiple of n_kv_heads %u", name, (unsigned)h.n_q_heads,
                    (unsigned)h.n_kv_heads);
    if (h.head_dim < 1 || h.head_dim > LAM_WIRE_MAX_HEAD_DIM)
        return FAIL("%s: head_dim %u outside [1, %u]", name, (unsigned)h.head_dim, LAM_WIRE_MAX_HEAD_DIM);
    if (h.layer >= LAM_WIRE_MAX_LAYERS)
        return FAIL("%s: layer %u not below %u", name, (unsigned)h.layer, LAM_WIRE_MAX_LAYERS);
    if (h.mb > 1)
        return FAIL("%s: micro-batch %u is neither 0 nor 1", name, (unsigned)h.mb);
    if (!result && h.node_ns)
        return FAIL("%s: node_ns is %u in a request, not 0", name, (unsigned)h.node_ns);

    lam_wire_attn_layout_t L = lam_wire_attn_layout(&h, result);
    if (!L.total)
        return FAIL("%s: shape too large for one message", name);
    if (L.total != len)
        return FAIL("length %zu does not match %s layout %zu", len, name, L.total);

    /* Ids are gathered for the duplicate check; n_seq <= LAM_WIRE_MAX_SEQ
     * keeps this at 32 KiB of stack. */
    uint64_t ids[LAM_WIRE_MAX_SEQ];
    uint64_t sum = 0;
    for (size_t i = 0; i < h.n_seq; i++) {
        lam_wire_seq_t s;
        memcpy(&s, p + L.seq + i * sizeof s, sizeof s);
        if (!s.seq_id)
            return FAIL("%s: sequence %zu has id 0", name, i);
        if (s.n_tok < 1)
            return FAIL("%s: sequence %zu has n_tok 0", name, i);
        if ((uint64_t)s.pos + s.n_tok > LAM_WIRE_MAX_POS)
            return FAIL("%s: sequence %zu pos %u + n_tok %u exceeds %u", name, i, (unsigned)s.pos,
                        (unsigned)s.n_tok, LAM_WIRE_MAX_POS);
        if (!result && s.status != 0)
            return FAIL("%s: sequence %zu has status %d in a request", name, i, (int)s.status);
        if (result && (s.status > 0 || s.status < -999))
            return FAIL("%s: sequence %zu has status %d, not 0 or a status code", name, i, (int)s.status);
        sum += s.n_tok;
        ids[i] = s.seq_id;
    }
    if (sum != h.n_tok)
        return FAIL("%s: sequence n_tok values sum to %llu, header n_tok is %u", name, (unsigned long long)sum,
                    (unsigned)h.n_tok);
    sort_u64(ids, h.n_seq);
    for (size_t i = 1; i < h.n_seq; i++)
        if (ids[i] == ids[i - 1])
            return FAIL("%s: sequence id %llu appears more than once", name, (unsigned long long)ids[i]);

    out->u.attn.h = h;
    out->u.attn.seq = (const lam_wire_seq_t *)(const void *)(p + L.seq);
    if (result) {
        out->u.attn.o = p + L.o;
    } else {
        out->u.attn.q = p + L.q;
        out->u.attn.k = p + L.k;
        out->u.attn.v = p + L.v;
    }
    return LAM_OK;
}

static lam_status_t decode_hello(const lam_wire_hello_t *b, char *why, size_t why_len)
{
    if (b->shard_count < 1 || b->shard_index >= b->shard_count)
        return FAIL("HELLO: shard %u of %u", (unsigned)b->shard_index, (unsigned)b->shard_count);
    if (!dtype_ok(b->kv_dtype))
        return FAIL("HELLO: unknown kv_dtype %u", (unsigned)b->kv_dtype);
    if (!dtype_ok(b->act_dtype))
        return FAIL("HELLO: unknown act_dtype %u", (unsigned)b->act_dtype);
    if (b->reserved)
        return FAIL("HELLO: reserved field is 0x%04x, not 0", (unsigned)b->reserved);
    return LAM_OK;
}

static lam_status_t decode_challenge(const lam_wire_challenge_t *b, char *why, size_t why_len)
{
    if (b->shard_count < 1 || b->shard_index >= b->shard_count)
        return FAIL("HELLO_CHALLENGE: shard %u of %u", (unsigned)b->shard_index, (unsigned)b->shard_count);
    if (b->n_kv_heads < 1 || b->n_kv_heads > LAM_WIRE_MAX_HEADS)
        return FAIL("HELLO_CHALLENGE: n_kv_heads %u outside [1, %u]", (unsigned)b->n_kv_heads,
                    LAM_WIRE_MAX_HEADS);
    if (b->n_heads < 1 || b->n_heads > LAM_WIRE_MAX_HEADS || b->n_heads % b->n_kv_heads)
        return FAIL("HELLO_CHALLENGE: n_heads %u is not a multiple of n_kv_heads %u within %u",
                    (unsigned)b->n_heads, (unsigned)b->n_kv_heads, LAM_WIRE_MAX_HEADS);
    if (b->kv_head_begin >= b->kv_head_end || b->kv_head_end > b->n_kv_heads)
        return FAIL("HELLO_CHALLENGE: KV heads [%u, %u) not a non-empty range within %u",
                    (unsigned)b->kv_head_begin, (unsigned)b->kv_head_end, (unsigned)b->n_kv_heads);
    if (b->head_dim < 1 || b->head_dim > LAM_WIRE_MAX_HEAD_DIM)
        return FAIL("HELLO_CHALLENGE: head_dim %u outside [1, %u]", (unsigned)b->head_dim,
                    LAM_WIRE_MAX_HEAD_DIM);
    if (b->n_layers < 1 || b->n_layers > LAM_WIRE_MAX_LAYERS)
        return FAIL("HELLO_CHALLENGE: n_layers %u outside [1, %u]", (unsigned)b->n_layers,
                    LAM_WIRE_MAX_LAYERS);
    if (b->page_tokens < 1)
        return FAIL("HELLO_CHALLENGE: page_tokens is 0");
    if (!dtype_ok(b->kv_dtype))
        return FAIL("HELLO_CHALLENGE: unknown kv_dtype %u", (unsigned)b->kv_dtype);
    for (size_t i = 0; i < sizeof b->reserved; i++)
        if (b->reserved[i])
            return FAIL("HELLO_CHALLENGE: reserved byte %zu is 0x%02x, not 0", i, (unsigned)b->reserved[i]);
    return LAM_OK;
}

static lam_status_t decode_release(const uint8_t *p, size_t len, lam_msg_t *out, char *why, size_t why_len)
{
    lam_wire_release_t r;
    size_t body = len - HDR_SIZE;
    if (body < sizeof r)
        return FAIL("SEQ_RELEASE: body of %zu bytes is shorter than the %zu-byte fixed part", body, sizeof r);
    memcpy(&r, p + HDR_SIZE, sizeof r);
    if (r.n_seq < 1 || r.n_seq > LAM_WIRE_MAX_RELEASE)
        return FAIL("SEQ_RELEASE: n_seq %u outside [1, %u]", (unsigned)r.n_seq, LAM_WIRE_MAX_RELEASE);
    if (r.reserved)
        return FAIL("SEQ_RELEASE: reserved field is 0x%08x, not 0", (unsigned)r.reserved);
    if ((uint64_t)body != sizeof r + 8 * (uint64_t)r.n_seq)
        return FAIL("SEQ_RELEASE: body of %zu bytes does not match %u ids (%llu bytes)", body,
                    (unsigned)r.n_seq, (unsigned long long)(sizeof r + 8 * (uint64_t)r.n_seq));
    const uint8_t *ids = p + HDR_SIZE + sizeof r;
    for (uint32_t i = 0; i < r.n_seq; i++) {
        uint64_t id;
        memcpy(&id, ids + 8 * (size_t)i, 8);
        if (!id)
            return FAIL("SEQ_RELEASE: id %u is 0", (unsigned)i);
    }
    out->u.release.n_seq = r.n_seq;
    out->u.release.ids = ids;
    return LAM_OK;
}

static lam_status_t decode_error(const uint8_t *p, size_t len, lam_msg_t *out, char *why, size_t why_len)
{
    lam_wire_error_t e;
    size_t body = len - HDR_SIZE;
    if (body < sizeof e)
        return FAIL("ERROR: body of %zu bytes is shorter than the %zu-byte fixed part", body, sizeof e);
    memcpy(&e, p + HDR_SIZE, sizeof e);
    if (e.msg_len > LAM_WIRE_MAX_ERROR_TEXT)
        return FAIL("ERROR: msg_len %u exceeds %u", (unsigned)e.msg_len, LAM_WIRE_MAX_ERROR_TEXT);
    if (body != sizeof e + e.msg_len)
        return FAIL("ERROR: body of %zu bytes does not match msg_len %u", body, (unsigned)e.msg_len);
    out->u.error.code = e.code;
    out->u.error.msg_len = e.msg_len;
    out->u.error.msg = (const char *)(p + HDR_SIZE + sizeof e);
    return LAM_OK;
}

/* Fixed-size bodies: exact size, then a copy into the message. */
static lam_status_t fixed_body(const uint8_t *p, size_t len, uint16_t type, void *dst, size_t size, char *why,
                               size_t why_len)
{
    if (len - HDR_SIZE != size)
        return FAIL("%s: body of %zu bytes, expected %zu", lam_msg_type_name(type), len - HDR_SIZE, size);
    if (size)
        memcpy(dst, p + HDR_SIZE, size);
    return LAM_OK;
}

lam_status_t lam_wire_decode(const void *buf, size_t len, lam_msg_t *out, char *why, size_t why_len)
{
    const uint8_t *p = buf;
    lam_wire_hdr_t hdr;
    if (why && why_len)
        why[0] = '\0';
    if (!buf || len < HDR_SIZE)
        return FAIL("message of %zu bytes is shorter than the %zu-byte header", buf ? len : 0, HDR_SIZE);
    memcpy(&hdr, p, sizeof hdr);
    if (hdr.magic != LAM_WIRE_MAGIC)
        return fail(why, why_len, LAM_ERR_PROTO_VERSION, "bad magic 0x%08x, expected 0x%08x",
                    (unsigned)hdr.magic, LAM_WIRE_MAGIC);
    if (hdr.version != LAM_WIRE_VERSION)
        return fail(why, why_len, LAM_ERR_PROTO_VERSION, "wire version %u, expected %u", (unsigned)hdr.version,
                    LAM_WIRE_VERSION);
    if (hdr.type < LAM_MSG_HELLO || hdr.type >= LAM_MSG_TYPE_END)
        return FAIL("unknown message type %u", (unsigned)hdr.type);
    if ((uint64_t)hdr.len != (uint64_t)(len - HDR_SIZE))
        return FAIL("%s: header len %u but %zu body bytes received", lam_msg_type_name(hdr.type),
                    (unsigned)hdr.len, len - HDR_SIZE);

    memset(out, 0, sizeof *out);
    out->type = hdr.type;
    out->tag = hdr.tag;
    lam_status_t st;
    switch ((lam_msg_type_t)hdr.type) {
    case LAM_MSG_HELLO: {
        lam_wire_hello_t b;
        st = fixed_body(p, len, hdr.type, &b, sizeof b, why, why_len);
        if (st == LAM_OK && (st = decode_hello(&b, why, why_len)) == LAM_OK)
            out->u.hello = b;
        return st;
    }
    case LAM_MSG_HELLO_CHALLENGE: {
        lam_wire_challenge_t b;
        st = fixed_body(p, len, hdr.type, &b, sizeof b, why, why_len);
        if (st == LAM_OK && (st = decode_challenge(&b, why, why_len)) == LAM_OK)
            out->u.challenge = b;
        return st;
    }
    case LAM_MSG_HELLO_AUTH:
        return fixed_body(p, len, hdr.type, &out->u.auth, sizeof out->u.auth, why, why_len);
    case LAM_MSG_HELLO_OK:
    case LAM_MSG_STATS:
        return fixed_body(p, len, hdr.type, NULL, 0, why, why_len);
    case LAM_MSG_STATS_REPLY:
        return fixed_body(p, len, hdr.type, &out->u.stats, sizeof out->u.stats, why, why_len);
    case LAM_MSG_ATTN:
        return decode_attn(p, len, 0, out, why, why_len);
    case LAM_MSG_ATTN_RESULT:
        return decode_attn(p, len, 1, out, why, why_len);
    case LAM_MSG_SEQ_RELEASE:
        return decode_release(p, len, out, why, why_len);
    case LAM_MSG_ERROR:
        return decode_error(p, len, out, why, why_len);
    case LAM_MSG_TYPE_END:
        break;
    }
    return FAIL("unknown message type %u", (unsigned)hdr.type);
}

/* ---- encoding -------------------------------------------------------------- */

/* Returns the whole message length (header + body_len), like every writer. */
size_t lam_wire_put_hdr(void *buf, uint16_t type, uint32_t body_len, uint32_t tag)
{
    lam_wire_hdr_t h = {
        .magic = LAM_WIRE_MAGIC, .version = LAM_WIRE_VERSION, .type = type, .len = body_len, .tag = tag,
    };
    memcpy(buf, &h, sizeof h);
    return HDR_SIZE + (size_t)body_len;
}

static size_t put_fixed(void *buf, uint16_t type, uint32_t tag, const void *body, uint32_t size)
{
    size_t n = lam_wire_put_hdr(buf, type, size, tag);
    if (size)
        memcpy((uint8_t *)buf + HDR_SIZE, body, size);
    return n;
}

size_t lam_wire_put_hello(void *buf, uint32_t tag, const lam_wire_hello_t *b)
{
    return put_fixed(buf, LAM_MSG_HELLO, tag, b, sizeof *b);
}

size_t lam_wire_put_challenge(void *buf, uint32_t tag, const lam_wire_challenge_t *b)
{
    return put_fixed(buf, LAM_MSG_HELLO_CHALLENGE, tag, b, sizeof *b);
}

size_t lam_wire_put_auth(void *buf, uint32_t tag, const lam_wire_auth_t *b)
{
    return put_fixed(buf, LAM_MSG_HELLO_AUTH, tag, b, sizeof *b);
}

size_t lam_wire_put_ok(void *buf, uint32_t tag) { return put_fixed(buf, LAM_MSG_HELLO_OK, tag, NULL, 0); }

size_t lam_wire_put_stats_req(void *buf, uint32_t tag) { return put_fixed(buf, LAM_MSG_STATS, tag, NULL, 0); }

size_t lam_wire_put_stats(void *buf, uint32_t tag, const lam_wire_stats_t *b)
{
    return put_fixed(buf, LAM_MSG_STATS_REPLY, tag, b, sizeof *b);
}

size_t lam_wire_error_size(size_t msg_len)
{
    if (msg_len > LAM_WIRE_MAX_ERROR_TEXT)
        msg_len = LAM_WIRE_MAX_ERROR_TEXT;
    return HDR_SIZE + sizeof(lam_wire_error_t) + msg_len;
}

void lam_wire_error_text(const lam_msg_t *m, char out[LAM_WIRE_MAX_ERROR_TEXT + 1])
{
    uint32_t n = m->u.error.msg_len < LAM_WIRE_MAX_ERROR_TEXT ? m->u.error.msg_len : LAM_WIRE_MAX_ERROR_TEXT;
    for (uint32_t i = 0; i < n; i++) {
        char ch = m->u.error.msg[i];
        out[i] = ch >= 0x20 && ch < 0x7f ? ch : '?';
    }
    out[n] = '\0';
}

size_t lam_wire_put_error(void *buf, uint32_t tag, int32_t code, const char *msg)
{
    /* strnlen: the text may be longer than what goes on the wire, or not
     * worth reading past the cut. */
    size_t n = msg ? strnlen(msg, LAM_WIRE_MAX_ERROR_TEXT) : 0;
    lam_wire_error_t e = {.code = code, .msg_len = (uint32_t)n};
    uint8_t *p = buf;
    lam_wire_put_hdr(p, LAM_MSG_ERROR, (uint32_t)(sizeof e + n), tag);
    memcpy(p + HDR_SIZE, &e, sizeof e);
    if (n)
        memcpy(p + HDR_SIZE + sizeof e, msg, n);
    return lam_wire_error_size(n);
}

size_t lam_wire_release_size(uint32_t n_seq)
{
    if (n_seq < 1 || n_seq > LAM_WIRE_MAX_RELEASE)
        return 0;
    return HDR_SIZE + sizeof(lam_wire_release_t) + 8 * (size_t)n_seq;
}

size_t lam_wire_put_release(void *buf, uint32_t tag, const uint64_t *ids, uint32_t n_seq)
{
    size_t n = lam_wire_release_size(n_seq);
    if (!n)
        return 0;
    lam_wire_release_t r = {.n_seq = n_seq, .reserved = 0};
    uint8_t *p = buf;
    lam_wire_put_hdr(p, LAM_MSG_SEQ_RELEASE, (uint32_t)(n - HDR_SIZE), tag);
    memcpy(p + HDR_SIZE, &r, sizeof r);
    memcpy(p + HDR_SIZE + sizeof r, ids, 8 * (size_t)n_seq); /* host is little-endian (wire.h) */
    return n;
}

size_t lam_wire_put_attn(void *buf, uint32_t tag, int result, const lam_wire_attn_t *h, const lam_wire_seq_t *seq)
{
    lam_wire_attn_layout_t L = lam_wire_attn_layout(h, result);
    if (!L.total)
        return 0;
    uint8_t *p = buf;
    lam_wire_put_hdr(p, result ? LAM_MSG_ATTN_RESULT : LAM_MSG_ATTN, (uint32_t)(L.total - HDR_SIZE), tag);
    memcpy(p + HDR_SIZE, h, sizeof *h);
    if (h->n_seq)
        memcpy(p + L.seq, seq, h->n_seq * sizeof *seq);
    return L.total;
}
