/* Pre-tokenizers of byte-level BPE: hand-written matchers equivalent to the
 * regexes below (no regex engine), on utf8proc general categories.
 *
 *   gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   smollm: every \p{N} character alone, then gpt2 on the text between
 *   llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *           ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * \s is the Unicode White_Space property. Letters and numbers follow
 * Unicode 15.1 as llama.cpp's tables do: utf8proc 2.8 has 15.0, so CJK
 * Extension I is patched in (comparing the class of every code point found
 * no other difference).
 *
 * Text is decoded leniently, the way llama.cpp does it (structure only); a
 * byte that starts no valid sequence counts as one U+FFFD character, so
 * words are byte ranges of the input and every input byte lands in exactly
 * one word.
 */
#include <stdlib.h>
#include <utf8proc.h>

#include "common/tok_internal.h"

enum {
    CPF_L = 1,     /* \p{L} */
    CPF_N = 2,     /* \p{N} */
    CPF_WS = 4,    /* \s */
    CPF_VALID = 8, /* every character in range has it; 0 means "past the end" */
};

static bool is_white_space(uint32_t c) {
    if (c < 0x80) return (c >= 0x09 && c <= 0x0d) || c == 0x20;
    return c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 ||
           c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

static uint8_t cp_flags(uint32_t c) {
    uint8_t f = CPF_VALID;
    if (c < 0x80) {
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return f | CPF_L;
        if (c >= '0' && c <= '9') return f | CPF_N;
        return is_white_space(c) ? (uint8_t)(f | CPF_WS) : f;
    }
    if (c > 0x10ffff) return f;
    if (c >= 0x2ebf0 && c <= 0x2ee5d) return f | CPF_L; /* CJK Ext. I (Unicode 15.1, Lo):
                                                            newer than utf8proc 2.8's data */
    if (is_white_space(c)) f |= CPF_WS;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        f |= CPF_L;
        break;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        f |= CPF_N;
        break;
    default:
        break;
    }
    return f;
}

size_t lam_tok_utf8_len(unsigned char b) {
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[b >> 4];
}

/* Lenient decode: lead byte and continuation bytes checked, values not
 * (overlong forms and surrogates pass, as in llama.cpp). 0 if malformed. */
static size_t utf8_decode_lenient(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned b = s[0];
    size_t len;
    uint32_t c;
    if (b < 0x80) { *cp = b; return 1; }
    if ((b & 0xe0) == 0xc0) { len = 2; c = b & 0x1f; }
    else if ((b & 0xf0) == 0xe0) { len = 3; c = b & 0x0f; }
    else if ((b & 0xf8) == 0xf0) { len = 4; c = b & 0x07; }
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    *cp = c;
    return len;
}

void lam_tok_pretok_scratch_free(lam_tok_pretok_scratch_t *s) {
    free(s->cp);
    free(s->fl);
    free(s->off);
    s->cp = NULL;
    s->fl = NULL;
    s->off = NULL;
    s->cap = 0;
}

static lam_status_t scratch_reserve(lam_tok_pretok_scratch_t *s, size_t n) {
    if (n <= s->cap) return LAM_OK;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    uint32_t *cp = realloc(s->cp, cap * sizeof(*cp));
    if (cp) s->cp = cp;
    uint8_t *fl = realloc(s->fl, cap);
    if (fl) s->fl = fl;
    size_t *off = realloc(s->off, (cap + 1) * sizeof(*off));
    if (off) s->off = off;
    if (!cp || !fl || !off) return LAM_ERR_NO_MEMORY;
    s->cap = cap;
    return LAM_OK;
}

/* The characters of one fragment and where words go. */
typedef struct ctx {
    const uint32_t *cp;
    const uint8_t *fl;
    const size_t *off;
    lam_tok_spans_t *out;
    bool oom;
} ctx_t;

static void emit(ctx_t *c, size_t from, size_t to) {
    if (to <= from) return;
    lam_tok_spans_t *o = c->out;
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        lam_tok_span_t *v = realloc(o->v, cap * sizeof(*v));
        if (!v) {
            c->oom = true;
            return;
        }
        o->v = v;
        o->cap = cap;
    }
    o->v[o->n++] = (lam_tok_span_t){c->off[from], c->off[to] - c->off[from]};
}

static uint32_t lower_ascii(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* Length of a contraction ('s 't 're 've 'm 'll 'd) at pos, or 0. */
static size_t contraction(const ctx_t *c, size_t pos, size_t end, bool any_case) {
    if (c->cp[pos] != '\'' || pos + 1 >= end) return 0;
    uint32_t a = c->cp[pos + 1];
    if (any_case) a = lower_ascii(a);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= end) return 0;
    uint32_t b = c->cp[pos + 2];
    if (any_case) b = lower_ascii(b);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

#define FL(p) ((p) < end ? c->fl[p] : 0)
#define PUNCT(f) (((f) & CPF_VALID) && !((f) & (CPF_WS | CPF_L | CPF_N)))

/* Whitespace at pos: \s+(?!\S) leaves the last space of a run to the word
 * that follows; a run at the end of the range is taken whole (\s+). */
static size_t ws_run_end(const ctx_t *c, size_t pos, size_t end) {
    size_t k = 0;
    while (FL(pos + k) & CPF_WS) k++;
    if (k > 1 && pos + k < end) return pos + k - 1;
    return pos + (k ? k : 1);
}

static void split_gpt2(ctx_t *c, size_t pos, size_t end) {
    while (pos < end) {
        size_t start = pos, k = contraction(c, pos, end, false);
        if (k) {
            emit(c, pos, pos + k);
            pos += k;
            continue;
        }
        /* " ?X+" for X in letters, numbers, other: an optional space joins
         * the run that follows it */
        size_t p = pos + (c->cp[pos] == ' ');
        uint8_t f = c->cp[pos] == ' ' ? FL(pos + 1) : c->fl[pos];
        if (f & CPF_L) {
            while (FL(p) & CPF_L) p++;
        } else if (f & CPF_N) {
            while (FL(p) & CPF_N) p++;
        } else if (PUNCT(f)) {
            while (PUNCT(FL(p))) p++;
        } else {
            p = ws_run_end(c, pos, end);
        }
        emit(c, start, p);
        pos = p;
    }
}

static void split_llama3(ctx_t *c, size_t pos, size_t end) {
    while (pos < end) {
        size_t start = pos, k = contraction(c, pos, end, true);
        uint32_t ch = c->cp[pos];
        uint8_t f = c->fl[pos];
        if (k) {
            emit(c, pos, pos + k);
            pos += k;
            continue;
        }
        /* [^\r\n\p{L}\p{N}]?\p{L}+ */
        if (ch != '\r' && ch != '\n' && !(f & CPF_N) && ((f & CPF_L) || (FL(pos + 1) & CPF_L))) {
            pos++;
            while (FL(pos) & CPF_L) pos++;
            emit(c, start, pos);
            continue;
        }
        /* \p{N}{1,3} */
        if (f & CPF_N) {
            while ((FL(pos) & CPF_N) && pos - start < 3) pos++;
            emit(c, start, pos);
            continue;
        }
        /* ' ?[^\s\p{L}\p{N}]+[\r\n]*'; a lone trailing space also lands
         * here, as in llama.cpp (same result as \s+) */
        uint8_t f2 = ch == ' ' ? FL(pos + 1) : f;
        if (!(f2 & (CPF_WS | CPF_L | CPF_N))) {
            pos += ch == ' ';
            while (PUNCT(FL(pos))) pos++;
            while (pos < end && (c->cp[pos] == '\r' || c->cp[pos] == '\n')) pos++;
            emit(c, start, pos);
            continue;
        }
        /* \s*[\r\n]+ : up to the last newline of the whitespace run */
        size_t last_nl = 0;
        for (size_t q = pos; FL(q) & CPF_WS; q++)
            if (c->cp[q] == '\r' || c->cp[q] == '\n') last_nl = q + 1;
        pos = last_nl ? last_nl : ws_run_end(c, pos, end);
        emit(c, start, pos);
    }
}

lam_status_t lam_tok_pretokenize(lam_tok_pre_t pre, const char *text, size_t len,
                                 lam_tok_pretok_scratch_t *s, lam_tok_spans_t *out) {
    if (len == 0) return LAM_OK;
    if (scratch_reserve(s, len) != LAM_OK) return LAM_ERR_NO_MEMORY;
    const unsigned char *u = (const unsigned char *)text;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t l = utf8_decode_lenient(u + i, len - i, &cp);
        if (l == 0) {
            cp = 0xfffd;
            l = 1;
        }
        s->cp[n] = cp;
        s->fl[n] = cp_flags(cp);
        s->off[n] = i;
        n++;
        i += l;
    }
    s->off[n] = len;
    ctx_t c = {s->cp, s->fl, s->off, out, false};
    switch (pre) {
    case LAM_TOK_PRE_SMOLLM: {
        size_t run = 0;
        for (size_t i = 0; i < n; i++) {
            if (s->fl[i] & CPF_N) {
                split_gpt2(&c, run, i);
                emit(&c, i, i + 1);
                run = i + 1;
            }
        }
        split_gpt2(&c, run, n);
        break;
    }
    case LAM_TOK_PRE_LLAMA3:
        split_llama3(&c, 0, n);
        break;
    case LAM_TOK_PRE_GPT2:
    default:
        split_gpt2(&c, 0, n);
        break;
    }
    return c.oom ? LAM_ERR_NO_MEMORY : LAM_OK;
}
