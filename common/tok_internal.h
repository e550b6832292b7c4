/* Tokenizer internals shared by common/tokenizer.c, tok_encode.c,
 * tok_pretok.c and tok_chat.c. Not for use outside the tokenizer. */
#ifndef LAM_TOK_INTERNAL_H
#define LAM_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/tokenizer.h"

/* Merge table entry: the pair (left id, right id) -> rank and result id.
 * Open addressing, key == LAM_TOK_MERGE_EMPTY marks a free slot. */
#define LAM_TOK_MERGE_EMPTY UINT64_MAX
typedef struct lam_tok_merge {
    uint64_t key; /* (uint64)left << 32 | right */
    int32_t rank;
    int32_t result;
} lam_tok_merge_t;

/* Home slot of a merge key (a 64-bit mix, so neighbouring ids spread). */
static inline uint32_t lam_tok_merge_slot(uint64_t key, uint32_t mask) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (uint32_t)key & mask;
}

#define LAM_TOK_MAX_EOG 16

struct lam_tok {
    lam_tok_model_t model;
    lam_tok_pre_t pre;
    int32_t n_vocab;

    /* token text as stored, and the bytes it decodes to */
    char *text_blob;      /* all texts, each NUL-terminated */
    uint32_t *text_off;   /* [n_vocab] */
    uint32_t *text_len;   /* [n_vocab] */
    char *piece_blob;
    uint32_t *piece_off;  /* [n_vocab] */
    uint32_t *piece_len;  /* [n_vocab] */
    float *scores;        /* [n_vocab] */
    uint8_t *types;       /* [n_vocab] lam_tok_type_t */

    /* text -> id: open addressing over ids, LAM_TOK_NULL = free slot */
    int32_t *tok_ht;      /* [tok_ht_mask + 1] */
    uint32_t tok_ht_mask;

    /* BPE merges */
    lam_tok_merge_t *merge_ht; /* [merge_ht_mask + 1], NULL if no merges */
    uint32_t merge_ht_mask;
    size_t n_merges;

    /* BPE: token of the mapped character of each byte; SPM: <0xNN> token */
    int32_t byte_tok[256];

    /* tokens matched literally in text, longest first */
    int32_t *specials;
    size_t n_specials;

    int32_t bos, eos, unk, pad, eot;
    bool add_bos, add_eos, add_space_prefix;
    bool ignore_merges; /* whole-word lookup before merging (llama3) */
    int32_t eog[LAM_TOK_MAX_EOG];
    size_t n_eog;

    /* chat */
    bool chat_supported;
    lam_chat_format_t chat_fmt;
    char *chat_default_system; /* NULL if none */
};

/* Hash of a token text (64-bit FNV-1a, high bits folded in). */
uint64_t lam_tok_hash(const char *s, size_t n);

/* ---- pre-tokenisation (tok_pretok.c) ---- */

/* A word: a byte range of the fragment. */
typedef struct lam_tok_span {
    size_t off;
    size_t len;
} lam_tok_span_t;

/* Growable list of spans. */
typedef struct lam_tok_spans {
    lam_tok_span_t *v;
    size_t n, cap;
} lam_tok_spans_t;

/* Splits text[0..len) into words with the pre-tokenizer `pre`, appending
 * to *out. Scratch arrays are reused across calls via *scratch (free with
 * lam_tok_pretok_scratch_free). */
typedef struct lam_tok_pretok_scratch {
    uint32_t *cp;   /* codepoint or invalid byte (flagged) */
    uint8_t *fl;    /* LAM_CPF_* */
    size_t *off;    /* byte offset of each codepoint, plus the end */
    size_t cap;
} lam_tok_pretok_scratch_t;

lam_status_t lam_tok_pretokenize(lam_tok_pre_t pre, const char *text, size_t len,
                                 lam_tok_pretok_scratch_t *scratch, lam_tok_spans_t *out);
void lam_tok_pretok_scratch_free(lam_tok_pretok_scratch_t *s);

/* Length of the UTF-8 sequence led by byte b as llama.cpp counts it: 1 for
 * ASCII and stray continuation bytes, else from the high bits. */
size_t lam_tok_utf8_len(unsigned char b);

/* ---- chat template detection (tok_chat.c) ---- */

/* Sets tok->chat_supported / chat_fmt / chat_default_system from the
 * template (NULL: ChatML, no default). LAM_ERR_NO_MEMORY only. */
lam_status_t lam_tok_chat_detect(lam_tok_t *tok, const char *tmpl, size_t len);

#endif
