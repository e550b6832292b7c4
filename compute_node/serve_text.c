#include "compute_node/serve_text.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char REPLACEMENT[] = "\xEF\xBF\xBD"; /* U+FFFD */

/* Room for n more bytes and the NUL. */
static lam_status_t reserve(lam_serve_str_t *s, size_t n)
{
    if (s->n + n + 1 <= s->cap)
        return LAM_OK;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < s->n + n + 1)
        cap *= 2;
    char *p = realloc(s->p, cap);
    if (!p)
        return LAM_ERR_NO_MEMORY;
    s->p = p;
    s->cap = cap;
    return LAM_OK;
}

lam_status_t lam_serve_str_add(lam_serve_str_t *s, const void *bytes, size_t n)
{
    lam_status_t st = reserve(s, n);
    if (st != LAM_OK)
        return st;
    if (n)
        memcpy(s->p + s->n, bytes, n);
    s->n += n;
    s->p[s->n] = '\0';
    return LAM_OK;
}

lam_status_t lam_serve_str_printf(lam_serve_str_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0)
        return LAM_ERR_INVALID_ARG;
    lam_status_t st = reserve(s, (size_t)len);
    if (st != LAM_OK)
        return st;
    va_start(ap, fmt);
    vsnprintf(s->p + s->n, (size_t)len + 1, fmt, ap);
    va_end(ap);
    s->n += (size_t)len;
    return LAM_OK;
}

void lam_serve_str_free(lam_serve_str_t *s)
{
    free(s->p);
    memset(s, 0, sizeof *s);
}

lam_status_t lam_serve_text_init(lam_serve_text_t *t, const lam_tok_t *tok, const char *const *stops, int n_stop)
{
    memset(t, 0, sizeof *t);
    t->tok = tok;
    if (n_stop < 0 || n_stop > LAM_SERVE_MAX_STOPS)
        return LAM_ERR_INVALID_ARG;
    for (int i = 0; i < n_stop; i++) {
        size_t len = strlen(stops[i]);
        if (len == 0 || !(t->stop[i] = malloc(len + 1))) {
            lam_serve_text_free(t);
            return len == 0 ? LAM_ERR_INVALID_ARG : LAM_ERR_NO_MEMORY;
        }
        memcpy(t->stop[i], stops[i], len + 1);
        t->stop_len[i] = len;
        t->n_stop = i + 1;
    }
    return LAM_OK;
}

void lam_serve_text_free(lam_serve_text_t *t)
{
    for (int i = 0; i < t->n_stop; i++)
        free(t->stop[i]);
    lam_serve_str_free(&t->held);
    memset(t, 0, sizeof *t);
}

/* Moves held text out: all of it if no stop string can start in it, else
 * everything before the longest suffix that is a proper prefix of a stop
 * string. A match of a whole stop string ends the sequence. */
static void settle(lam_serve_text_t *t, lam_serve_str_t *out)
{
    lam_serve_str_t *h = &t->held;
    if (h->n == 0)
        return;
    size_t first = h->n;
    for (int i = 0; i < t->n_stop; i++) {
        const char *m = memmem(h->p, h->n, t->stop[i], t->stop_len[i]);
        if (m && (size_t)(m - h->p) < first)
            first = (size_t)(m - h->p);
    }
    if (first < h->n) {
        lam_serve_str_add(out, h->p, first);
        h->n = 0;
        t->stopped = true;
        return;
    }
    size_t keep = 0;
    for (int i = 0; i < t->n_stop; i++) {
        size_t max = t->stop_len[i] - 1 < h->n ? t->stop_len[i] - 1 : h->n;
        for (size_t k = max; k > keep; k--)
            if (!memcmp(h->p + h->n - k, t->stop[i], k)) {
                keep = k;
                break;
            }
    }
    /* a stop string is valid UTF-8, so a suffix equal to its prefix starts
     * on a code point boundary of the (valid) held text */
    lam_serve_str_add(out, h->p, h->n - keep);
    memmove(h->p, h->p + h->n - keep, keep);
    h->n = keep;
}

/* Bytes a code point starting with b has in all (0: b cannot start one). */
static int utf8_len(uint8_t b)
{
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF)
        return 2;
    if (b >= 0xE0 && b <= 0xEF)
        return 3;
    if (b >= 0xF0 && b <= 0xF4)
        return 4;
    return 0;
}

/* May b follow the bytes in part[] (no overlongs, no surrogates, <= U+10FFFF)? */
static bool utf8_next_ok(const uint8_t *part, int n_part, uint8_t b)
{
    if (b < 0x80 || b > 0xBF)
        return false;
    if (n_part != 1)
        return true;
    switch (part[0]) {
    case 0xE0: return b >= 0xA0;
    case 0xED: return b <= 0x9F;
    case 0xF0: return b >= 0x90;
    case 0xF4: return b <= 0x8F;
    default: return true;
    }
}

bool lam_serve_text_push_bytes(lam_serve_text_t *t, const void *bytes, size_t n, lam_serve_str_t *out)
{
    if (t->stopped)
        return true;
    const uint8_t *b = bytes;
    for (size_t i = 0; i < n; i++) {
        if (t->n_part > 0) {
            if (utf8_next_ok(t->part, t->n_part, b[i])) {
                t->part[t->n_part++] = b[i];
                if (t->n_part == t->need) {
                    lam_serve_str_add(&t->held, t->part, (size_t)t->n_part);
                    t->n_part = 0;
                }
                continue;
            }
            /* the code point broke off: replace it, then see b afresh */
            lam_serve_str_add(&t->held, REPLACEMENT, 3);
            t->n_part = 0;
        }
        int len = utf8_len(b[i]);
        if (len == 1) {
            lam_serve_str_add(&t->held, &b[i], 1);
        } else if (len == 0) {
            lam_serve_str_add(&t->held, REPLACEMENT, 3);
        } else {
            t->part[0] = b[i];
            t->n_part = 1;
            t->need = len;
        }
    }
    settle(t, out);
    return t->stopped;
}

bool lam_serve_text_push(lam_serve_text_t *t, int32_t id, lam_serve_str_t *out)
{
    if (t->stopped)
        return true;
    if (!t->tok || lam_tok_is_special(t->tok, id))
        return false;
    size_t len = 0;
    const char *p = lam_tok_piece(t->tok, id, &len);
    return p ? lam_serve_text_push_bytes(t, p, len, out) : false;
}

void lam_serve_text_finish(lam_serve_text_t *t, lam_serve_str_t *out)
{
    if (t->stopped)
        return;
    if (t->n_part > 0) {
        lam_serve_str_add(&t->held, REPLACEMENT, 3);
        t->n_part = 0;
        settle(t, out);
        if (t->stopped)
            return;
    }
    lam_serve_str_add(out, t->held.p, t->held.n);
    t->held.n = 0;
}
