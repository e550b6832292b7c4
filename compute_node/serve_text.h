/* The text of a generated sequence, produced as tokens arrive: token pieces
 * in, valid UTF-8 out, with stop strings.
 *
 *  - A piece may end inside a code point (byte-level BPE splits them); the
 *    incomplete bytes are held until the rest arrives, so emitted text is
 *    always whole code points. Bytes that cannot form valid UTF-8 become
 *    U+FFFD (JSON strings must be valid UTF-8).
 *  - Stop strings may span tokens: text that could be the start of a stop
 *    string is held back until it either completes one (the text before it
 *    is emitted, the rest dropped, the sequence is over) or stops matching
 *    (then it is emitted). The sequence ends with the first token that
 *    completes any stop string, cut before the earliest stop string in the
 *    text by then: a longer one that began earlier but is not complete yet
 *    does not count (what a client streaming the tokens would see).
 *  - Special tokens (control, user-defined) add no text.
 *
 * One lam_serve_text_t per sequence; not shared between threads. */
#ifndef LAM_SERVE_TEXT_H
#define LAM_SERVE_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "common/tokenizer.h"

#define LAM_SERVE_MAX_STOPS 4

/* A growable byte string (NUL-terminated when non-empty). */
typedef struct lam_serve_str {
    char *p;
    size_t n, cap;
} lam_serve_str_t;

lam_status_t lam_serve_str_add(lam_serve_str_t *s, const void *bytes, size_t n);
lam_status_t lam_serve_str_printf(lam_serve_str_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void lam_serve_str_free(lam_serve_str_t *s);

typedef struct lam_serve_text {
    const lam_tok_t *tok;             /* may be NULL: push bytes only */
    char *stop[LAM_SERVE_MAX_STOPS];  /* owned copies */
    size_t stop_len[LAM_SERVE_MAX_STOPS];
    int n_stop;
    lam_serve_str_t held;             /* valid UTF-8 that may begin a stop string */
    uint8_t part[4];                  /* an incomplete code point */
    int n_part, need;                 /* bytes held, bytes the code point needs in all */
    bool stopped;                     /* a stop string matched: nothing more comes out */
} lam_serve_text_t;

/* stops: n_stop (<= LAM_SERVE_MAX_STOPS) non-empty strings, copied. */
lam_status_t lam_serve_text_init(lam_serve_text_t *t, const lam_tok_t *tok, const char *const *stops, int n_stop);
void lam_serve_text_free(lam_serve_text_t *t);

/* Adds token id's text; appends what can be emitted now to out. Returns
 * true once a stop string has matched (then and afterwards). */
bool lam_serve_text_push(lam_serve_text_t *t, int32_t id, lam_serve_str_t *out);
/* The same for raw bytes. */
bool lam_serve_text_push_bytes(lam_serve_text_t *t, const void *bytes, size_t n, lam_serve_str_t *out);

/* End of the sequence: emits whatever is held (an incomplete code point
 * as U+FFFD) unless a stop string matched. */
void lam_serve_text_finish(lam_serve_text_t *t, lam_serve_str_t *out);

#endif
