/* Tokenizer construction from arrays (validation, lookup tables, pieces,
 * special-token list), accessors and decoding. GGUF metadata is read into
 * a spec by tok_gguf.c; encoding lives in tok_encode.c. */
#include "common/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/tok_internal.h"

/* SentencePiece's visible space, U+2581, in UTF-8. */
static const char SPM_SPACE[] = "\xe2\x96\x81";

uint64_t lam_tok_hash(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static uint32_t pow2_at_least(uint64_t n) {
    uint64_t c = 16;
    while (c < n) c <<= 1;
    return (uint32_t)c;
}

/* ---- GPT-2 byte <-> unicode mapping ----
 * Printable bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) stand for
 * themselves; the other 68 bytes, in byte order, become U+0100... so that
 * every byte is a visible character. */
static uint32_t byte_to_cp(unsigned b) {
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae) return b;
    if (b <= 0x20) return 0x100 + b;
    if (b <= 0xa0) return 0x100 + 33 + (b - 0x7f);
    return 0x100 + 67; /* 0xad */
}

/* -1 if cp is not the image of a byte. */
static int cp_to_byte(uint32_t cp) {
    if ((cp >= 0x21 && cp <= 0x7e) || (cp >= 0xa1 && cp <= 0xac) || (cp >= 0xae && cp <= 0xff))
        return (int)cp;
    if (cp >= 0x100 && cp <= 0x100 + 32) return (int)(cp - 0x100);
    if (cp >= 0x100 + 33 && cp <= 0x100 + 66) return (int)(cp - 0x100 - 33 + 0x7f);
    if (cp == 0x100 + 67) return 0xad;
    return -1;
}

static size_t cp_to_utf8(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Strict decode of one UTF-8 character at s[0..n); 0 if invalid. */
static size_t utf8_decode_strict(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned b = s[0];
    size_t len;
    uint32_t c, min;
    if (b < 0x80) { *cp = b; return 1; }
    if (b >= 0xc2 && b <= 0xdf) { len = 2; c = b & 0x1f; min = 0x80; }
    else if (b >= 0xe0 && b <= 0xef) { len = 3; c = b & 0x0f; min = 0x800; }
    else if (b >= 0xf0 && b <= 0xf4) { len = 4; c = b & 0x07; min = 0x10000; }
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
    *cp = c;
    return len;
}

/* ---- token text hash table ---- */

static const char *tok_text(const lam_tok_t *t, int32_t id) { return t->text_blob + t->text_off[id]; }

int32_t lam_tok_find(const lam_tok_t *t, const char *s, size_t n) {
    uint32_t i = (uint32_t)lam_tok_hash(s, n) & t->tok_ht_mask;
    for (;;) {
        int32_t id = t->tok_ht[i];
        if (id == LAM_TOK_NULL) return LAM_TOK_NULL;
        if (t->text_len[id] == n && memcmp(tok_text(t, id), s, n) == 0) return id;
        i = (i + 1) & t->tok_ht_mask;
    }
}

/* A later duplicate text replaces the earlier id, as in llama.cpp. */
static void tok_ht_insert(lam_tok_t *t, int32_t id) {
    const char *s = tok_text(t, id);
    size_t n = t->text_len[id];
    uint32_t i = (uint32_t)lam_tok_hash(s, n) & t->tok_ht_mask;
    for (;;) {
        int32_t cur = t->tok_ht[i];
        if (cur == LAM_TOK_NULL || (t->text_len[cur] == n && memcmp(tok_text(t, cur), s, n) == 0)) {
            t->tok_ht[i] = id;
            return;
        }
        i = (i + 1) & t->tok_ht_mask;
    }
}

/* Keeps the first (lowest) rank of a duplicated pair. */
static void merge_ht_insert(lam_tok_t *t, int32_t left, int32_t right, int32_t rank, int32_t result) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    uint32_t i = lam_tok_merge_slot(key, t->merge_ht_mask);
    for (;;) {
        lam_tok_merge_t *m = &t->merge_ht[i];
        if (m->key == key) return;
        if (m->key == LAM_TOK_MERGE_EMPTY) {
            m->key = key;
            m->rank = rank;
            m->result = result;
            return;
        }
        i = (i + 1) & t->merge_ht_mask;
    }
}

/* ---- construction ---- */

void lam_tok_spec_init(lam_tok_spec_t *spec, lam_tok_model_t model) {
    memset(spec, 0, sizeof(*spec));
    spec->model = model;
    spec->pre = LAM_TOK_PRE_GPT2;
    spec->bos = spec->eos = spec->unk = spec->pad = spec->eot = LAM_TOK_NULL;
    if (model == LAM_TOK_MODEL_SPM) {
        spec->add_bos = true;
        spec->add_space_prefix = true;
    }
}

static size_t spec_token_len(const lam_tok_spec_t *s, int32_t i) {
    return s->token_lens ? s->token_lens[i] : strlen(s->tokens[i]);
}

static int hex_val(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Builds the piece (decoded bytes) of every token into one blob. */
static lam_status_t build_pieces(lam_tok_t *t) {
    size_t total = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) total += (size_t)t->text_len[id] + 1;
    /* a piece is never longer than its text: unmapping and U+2581 -> ' '
     * shrink; "<0xNN>" (6 bytes) becomes 1 byte */
    t->piece_blob = malloc(total);
    t->piece_off = malloc(sizeof(uint32_t) * (size_t)t->n_vocab);
    t->piece_len = malloc(sizeof(uint32_t) * (size_t)t->n_vocab);
    if (!t->piece_blob || !t->piece_off || !t->piece_len) return LAM_ERR_NO_MEMORY;
    size_t pos = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const unsigned char *s = (const unsigned char *)tok_text(t, id);
        size_t n = t->text_len[id];
        char *o = t->piece_blob + pos;
        size_t on = 0;
        lam_tok_type_t ty = (lam_tok_type_t)t->types[id];
        if (ty == LAM_TOK_TYPE_CONTROL || ty == LAM_TOK_TYPE_USER_DEFINED ||
            ty == LAM_TOK_TYPE_UNKNOWN) {
            memcpy(o, s, n);
            on = n;
        } else if (ty == LAM_TOK_TYPE_UNUSED || ty == LAM_TOK_TYPE_UNDEFINED) {
            on = 0; /* llama.cpp renders these as nothing */
        } else if (t->model == LAM_TOK_MODEL_SPM && ty == LAM_TOK_TYPE_BYTE) {
            int hi = n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' ? hex_val(s[3]) : -1;
            int lo = hi >= 0 ? hex_val(s[4]) : -1;
            if (lo >= 0) {
                o[0] = (char)(hi << 4 | lo);
                on = 1;
            }
        } else if (t->model == LAM_TOK_MODEL_SPM) {
            for (size_t i = 0; i < n;) {
                if (i + 3 <= n && memcmp(s + i, SPM_SPACE, 3) == 0) {
                    o[on++] = ' ';
                    i += 3;
                } else {
                    o[on++] = (char)s[i++];
                }
            }
        } else {
            /* byte-level: each character stands for one byte; a character
             * outside the mapping (malformed vocab) is kept as it is */
            for (size_t i = 0; i < n;) {
                uint32_t cp;
                size_t l = utf8_decode_strict(s + i, n - i, &cp);
                int b = l ? cp_to_byte(cp) : -1;
                if (b >= 0) {
                    o[on++] = (char)b;
                    i += l;
                } else {
                    size_t k = l ? l : 1;
                    memcpy(o + on, s + i, k);
                    on += k;
                    i += k;
                }
            }
        }
        t->piece_off[id] = (uint32_t)pos;
        t->piece_len[id] = (uint32_t)on;
        o[on] = '\0';
        pos += on + 1;
    }
    return LAM_OK;
}

typedef struct special_ent {
    uint32_t len;
    int32_t id;
} special_ent_t;

static int special_cmp(const void *a, const void *b) {
    const special_ent_t *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static bool is_special_type(uint8_t ty) {
    return ty == LAM_TOK_TYPE_CONTROL || ty == LAM_TOK_TYPE_USER_DEFINED || ty == LAM_TOK_TYPE_UNKNOWN;
}

static lam_status_t build_specials(lam_tok_t *t) {
    size_t n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (is_special_type(t->types[id]) && t->text_len[id] > 0) n++;
    if (n == 0) return LAM_OK;
    special_ent_t *e = malloc(sizeof(*e) * n);
    t->specials = malloc(sizeof(int32_t) * n);
    if (!e || !t->specials) {
        free(e);
        return LAM_ERR_NO_MEMORY;
    }
    size_t k = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (is_special_type(t->types[id]) && t->text_len[id] > 0)
            e[k++] = (special_ent_t){t->text_len[id], id};
    qsort(e, n, sizeof(*e), special_cmp);
    for (size_t i = 0; i < n; i++) t->specials[i] = e[i].id;
    t->n_specials = n;
    free(e);
    return LAM_OK;
}

static int32_t find_control_named(const lam_tok_t *t, const char *name) {
    int32_t id = lam_tok_find(t, name, strlen(name));
    if (id == LAM_TOK_NULL) return LAM_TOK_NULL;
    uint8_t ty = t->types[id];
    return (ty == LAM_TOK_TYPE_CONTROL || ty == LAM_TOK_TYPE_USER_DEFINED) ? id : LAM_TOK_NULL;
}

static void add_eog(lam_tok_t *t, int32_t id) {
    if (id == LAM_TOK_NULL) return;
    for (size_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return;
    if (t->n_eog < LAM_TOK_MAX_EOG) t->eog[t->n_eog++] = id;
}

static void find_eot_eog(lam_tok_t *t) {
    static const char *const eot_names[] = {"<|im_end|>", "<|eot_id|>", "<|end|>",
                                            "<end_of_turn>", "<|end_of_text|>", "<EOT>"};
    /* llama.cpp's end-of-generation names, FIM pad/repo/separator included
     * (a FIM model emits those at the end of a fill) */
    static const char *const eog_names[] = {
        "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
        "<|end_of_text|>", "<EOT>", "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<|fim_repo|>",
        "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", "<|file_sep|>"};
    if (t->eot == LAM_TOK_NULL) {
        for (size_t i = 0; i < sizeof(eot_names) / sizeof(eot_names[0]); i++) {
            int32_t id = find_control_named(t, eot_names[i]);
            if (id != LAM_TOK_NULL) {
                t->eot = id;
                break;
            }
        }
    }
    add_eog(t, t->eos);
    add_eog(t, t->eot);
    for (size_t i = 0; i < sizeof(eog_names) / sizeof(eog_names[0]); i++)
        add_eog(t, find_control_named(t, eog_names[i]));
}

/* Parses merge `idx` ("left right") into the merge table. */
static lam_status_t add_merge(lam_tok_t *t, size_t idx, const char *s, size_t n) {
    /* split at the first space after the first byte, as llama.cpp does */
    const char *sp = n > 1 ? memchr(s + 1, ' ', n - 1) : NULL;
    if (!sp) {
        lam_log_error("tokenizer: merge %zu '%.*s' is not 'left right'", idx, (int)(n > 64 ? 64 : n), s);
        return LAM_ERR_TOKENIZER;
    }
    size_t ln = (size_t)(sp - s), rn = n - ln - 1;
    int32_t l = lam_tok_find(t, s, ln);
    int32_t r = lam_tok_find(t, sp + 1, rn);
    if (l == LAM_TOK_NULL || r == LAM_TOK_NULL) {
        lam_log_error("tokenizer: merge %zu '%.*s' names a token not in the vocabulary", idx,
                      (int)(n > 64 ? 64 : n), s);
        return LAM_ERR_TOKENIZER;
    }
    char buf[512];
    char *cat = ln + rn <= sizeof(buf) ? buf : malloc(ln + rn);
    if (!cat) return LAM_ERR_NO_MEMORY;
    memcpy(cat, s, ln);
    memcpy(cat + ln, sp + 1, rn);
    int32_t res = lam_tok_find(t, cat, ln + rn);
    if (cat != buf) free(cat);
    if (res == LAM_TOK_NULL) {
        lam_log_error("tokenizer: merge %zu '%.*s' makes a token not in the vocabulary", idx,
                      (int)(n > 64 ? 64 : n), s);
        return LAM_ERR_TOKENIZER;
    }
    merge_ht_insert(t, l, r, (int32_t)idx, res);
    return LAM_OK;
}

static lam_status_t check_id(const char *what, int32_t id, int32_t n_vocab) {
    if (id == LAM_TOK_NULL || (id >= 0 && id < n_vocab)) return LAM_OK;
    lam_log_error("tokenizer: %s id %d is outside the vocabulary (0..%d)", what, id, n_vocab - 1);
    return LAM_ERR_TOKENIZER;
}

lam_status_t lam_tok_create(const lam_tok_spec_t *spec, lam_tok_t **out) {
    if (!spec || !out) return LAM_ERR_INVALID_ARG;
    if (spec->model != LAM_TOK_MODEL_BPE && spec->model != LAM_TOK_MODEL_SPM) {
        lam_log_error("tokenizer: unknown model kind %d", (int)spec->model);
        return LAM_ERR_UNSUPPORTED;
    }
    if (spec->n_vocab <= 0 || !spec->tokens) {
        lam_log_error("tokenizer: empty vocabulary");
        return LAM_ERR_TOKENIZER;
    }
    if (spec->n_vocab > (1 << 28)) {
        lam_log_error("tokenizer: vocabulary of %d tokens is too large", spec->n_vocab);
        return LAM_ERR_TOKENIZER;
    }
    if (spec->n_merges > 0 && !spec->merges) return LAM_ERR_INVALID_ARG;
    if (spec->n_merges > (size_t)INT32_MAX) {
        lam_log_error("tokenizer: %zu merges is too many", spec->n_merges);
        return LAM_ERR_TOKENIZER;
    }
    const int32_t nv = spec->n_vocab;
    lam_status_t st;
    if ((st = check_id("bos", spec->bos, nv)) || (st = check_id("eos", spec->eos, nv)) ||
        (st = check_id("unknown", spec->unk, nv)) || (st = check_id("padding", spec->pad, nv)) ||
        (st = check_id("eot", spec->eot, nv)))
        return st;
    if (spec->add_bos && spec->bos == LAM_TOK_NULL) {
        lam_log_error("tokenizer: add_bos_token is set but there is no bos_token_id");
        return LAM_ERR_TOKENIZER;
    }
    if (spec->add_eos && spec->eos == LAM_TOK_NULL) {
        lam_log_error("tokenizer: add_eos_token is set but there is no eos_token_id");
        return LAM_ERR_TOKENIZER;
    }
    size_t total = 0;
    for (int32_t i = 0; i < nv; i++) {
        if (!spec->tokens[i]) {
            lam_log_error("tokenizer: token %d has no text", i);
            return LAM_ERR_TOKENIZER;
        }
        size_t l = spec_token_len(spec, i);
        if (l > 65536) {
            lam_log_error("tokenizer: token %d is %zu bytes long", i, l);
            return LAM_ERR_TOKENIZER;
        }
        total += l + 1;
        if (spec->types && (spec->types[i] < 0 || spec->types[i] > LAM_TOK_TYPE_BYTE)) {
            lam_log_error("tokenizer: token %d has unknown type %d", i, spec->types[i]);
            return LAM_ERR_TOKENIZER;
        }
    }
    if (total >= UINT32_MAX) {
        lam_log_error("tokenizer: vocabulary text too large");
        return LAM_ERR_TOKENIZER;
    }

    lam_tok_t *t = calloc(1, sizeof(*t));
    if (!t) return LAM_ERR_NO_MEMORY;
    t->model = spec->model;
    t->pre = spec->model == LAM_TOK_MODEL_BPE ? spec->pre : LAM_TOK_PRE_GPT2;
    if (t->pre != LAM_TOK_PRE_GPT2 && t->pre != LAM_TOK_PRE_SMOLLM && t->pre != LAM_TOK_PRE_LLAMA3) {
        lam_log_warn("tokenizer: unknown pre-tokenizer %d, using gpt2", (int)t->pre);
        t->pre = LAM_TOK_PRE_GPT2;
    }
    t->ignore_merges = t->model == LAM_TOK_MODEL_BPE && t->pre == LAM_TOK_PRE_LLAMA3;
    t->n_vocab = nv;
    t->bos = spec->bos;
    t->eos = spec->eos;
    t->unk = spec->unk;
    t->pad = spec->pad;
    t->eot = spec->eot;
    t->add_bos = spec->add_bos;
    t->add_eos = spec->add_eos;
    t->add_space_prefix = spec->model == LAM_TOK_MODEL_SPM && spec->add_space_prefix;

    st = LAM_ERR_NO_MEMORY;
    t->text_blob = malloc(total);
    t->text_off = malloc(sizeof(uint32_t) * (size_t)nv);
    t->text_len = malloc(sizeof(uint32_t) * (size_t)nv);
    t->scores = calloc((size_t)nv, sizeof(float));
    t->types = malloc((size_t)nv);
    t->tok_ht_mask = pow2_at_least((uint64_t)nv * 2) - 1;
    t->tok_ht = malloc(sizeof(int32_t) * ((size_t)t->tok_ht_mask + 1));
    if (!t->text_blob || !t->text_off || !t->text_len || !t->scores || !t->types || !t->tok_ht)
        goto fail;
    size_t pos = 0;
    for (int32_t i = 0; i < nv; i++) {
        size_t l = spec_token_len(spec, i);
        memcpy(t->text_blob + pos, spec->tokens[i], l);
        t->text_blob[pos + l] = '\0';
        t->text_off[i] = (uint32_t)pos;
        t->text_len[i] = (uint32_t)l;
        pos += l + 1;
        t->types[i] = (uint8_t)(spec->types ? spec->types[i] : LAM_TOK_TYPE_NORMAL);
        if (spec->scores) t->scores[i] = spec->scores[i];
    }
    for (size_t i = 0; i <= t->tok_ht_mask; i++) t->tok_ht[i] = LAM_TOK_NULL;
    for (int32_t i = 0; i < nv; i++) tok_ht_insert(t, i);

    /* byte tokens */
    int n_no_byte = 0;
    for (unsigned b = 0; b < 256; b++) {
        char buf[8];
        size_t n;
        if (t->model == LAM_TOK_MODEL_BPE) {
            n = cp_to_utf8(byte_to_cp(b), buf);
        } else {
            static const char hex[] = "0123456789ABCDEF";
            memcpy(buf, "<0x", 3);
            buf[3] = hex[b >> 4];
            buf[4] = hex[b & 15];
            buf[5] = '>';
            n = 6;
        }
        t->byte_tok[b] = lam_tok_find(t, buf, n);
        n_no_byte += t->byte_tok[b] == LAM_TOK_NULL;
    }
    if (t->model == LAM_TOK_MODEL_BPE && n_no_byte > 0)
        lam_log_debug("tokenizer: %d of 256 bytes have no token; encoding drops them", n_no_byte);

    if (t->model == LAM_TOK_MODEL_BPE && spec->n_merges > 0) {
        t->merge_ht_mask = pow2_at_least((uint64_t)spec->n_merges * 2) - 1;
        t->merge_ht = malloc(sizeof(lam_tok_merge_t) * ((size_t)t->merge_ht_mask + 1));
        if (!t->merge_ht) goto fail;
        for (size_t i = 0; i <= t->merge_ht_mask; i++) t->merge_ht[i].key = LAM_TOK_MERGE_EMPTY;
        for (size_t i = 0; i < spec->n_merges; i++) {
            const char *m = spec->merges[i];
            if (!m) {
                lam_log_error("tokenizer: merge %zu has no text", i);
                st = LAM_ERR_TOKENIZER;
                goto fail;
            }
            size_t ml = spec->merge_lens ? spec->merge_lens[i] : strlen(m);
            if ((st = add_merge(t, i, m, ml)) != LAM_OK) goto fail;
        }
        t->n_merges = spec->n_merges;
    } else if (t->model == LAM_TOK_MODEL_SPM && spec->n_merges > 0) {
        lam_log_warn("tokenizer: SentencePiece vocabulary has %zu merges; ignored", spec->n_merges);
    }

    st = LAM_ERR_NO_MEMORY;
    if (build_pieces(t) != LAM_OK || build_specials(t) != LAM_OK) goto fail;
    find_eot_eog(t);
    if (lam_tok_chat_detect(t, spec->chat_template, spec->chat_template ? spec->chat_template_len : 0))
        goto fail;
    *out = t;
    return LAM_OK;
fail:
    if (st == LAM_ERR_NO_MEMORY) lam_log_error("tokenizer: out of memory");
    lam_tok_free(t);
    return st;
}

void lam_tok_free(lam_tok_t *t) {
    if (!t) return;
    free(t->text_blob);
    free(t->text_off);
    free(t->text_len);
    free(t->piece_blob);
    free(t->piece_off);
    free(t->piece_len);
    free(t->scores);
    free(t->types);
    free(t->tok_ht);
    free(t->merge_ht);
    free(t->specials);
    free(t->chat_default_system);
    free(t);
}

/* ---- accessors ---- */

int32_t lam_tok_n_vocab(const lam_tok_t *t) { return t->n_vocab; }
lam_tok_model_t lam_tok_model(const lam_tok_t *t) { return t->model; }
lam_tok_pre_t lam_tok_pre(const lam_tok_t *t) { return t->pre; }
int32_t lam_tok_bos(const lam_tok_t *t) { return t->bos; }
int32_t lam_tok_eos(const lam_tok_t *t) { return t->eos; }
int32_t lam_tok_eot(const lam_tok_t *t) { return t->eot; }
int32_t lam_tok_unk(const lam_tok_t *t) { return t->unk; }
int32_t lam_tok_pad(const lam_tok_t *t) { return t->pad; }

int32_t lam_tok_byte_token(const lam_tok_t *t, uint8_t b) { return t->byte_tok[b]; }

lam_tok_type_t lam_tok_type(const lam_tok_t *t, int32_t id) {
    if (id < 0 || id >= t->n_vocab) return LAM_TOK_TYPE_UNDEFINED;
    return (lam_tok_type_t)t->types[id];
}

bool lam_tok_is_eog(const lam_tok_t *t, int32_t id) {
    for (size_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return true;
    return false;
}

bool lam_tok_is_special(const lam_tok_t *t, int32_t id) {
    return id >= 0 && id < t->n_vocab && is_special_type(t->types[id]);
}

const char *lam_tok_piece(const lam_tok_t *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->piece_len[id];
    return t->piece_blob + t->piece_off[id];
}

const char *lam_tok_text(const lam_tok_t *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->text_len[id];
    return tok_text(t, id);
}

/* ---- decoding ---- */

lam_status_t lam_tok_decode(const lam_tok_t *t, const int32_t *ids, size_t n, char **text, size_t *len) {
    if (!t || (!ids && n) || !text) return LAM_ERR_INVALID_ARG;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab) {
            lam_log_error("tokenizer: cannot decode id %d (vocabulary has %d tokens)", ids[i], t->n_vocab);
            return LAM_ERR_RANGE;
        }
        total += t->piece_len[ids[i]];
    }
    char *o = malloc(total + 1);
    if (!o) return LAM_ERR_NO_MEMORY;
    size_t pos = 0;
    bool after_special = true; /* the SPM encoder adds ' ' at the start and after specials */
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        const char *p = t->piece_blob + t->piece_off[id];
        size_t pl = t->piece_len[id];
        bool special = is_special_type(t->types[id]);
        if (t->add_space_prefix && after_special && !special && pl > 0 && p[0] == ' ') {
            p++;
            pl--;
        }
        if (!special && t->piece_len[id] > 0) after_special = false;
        if (special) after_special = true;
        memcpy(o + pos, p, pl);
        pos += pl;
    }
    o[pos] = '\0';
    *text = o;
    if (len) *len = pos;
    return LAM_OK;
}
