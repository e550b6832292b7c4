/* Reading a tokenizer from GGUF tokenizer.* metadata into a lam_tok_spec_t.
 * Every key is type-checked; a missing optional key takes llama.cpp's
 * default, a wrong one is an error (logged once, here). */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/tokenizer.h"

#define KEY_MODEL "tokenizer.ggml.model"
#define KEY_PRE "tokenizer.ggml.pre"
#define KEY_TOKENS "tokenizer.ggml.tokens"
#define KEY_SCORES "tokenizer.ggml.scores"
#define KEY_TYPES "tokenizer.ggml.token_type"
#define KEY_MERGES "tokenizer.ggml.merges"
#define KEY_TEMPLATE "tokenizer.chat_template"

/* Reads a string array `key` into pointer/length arrays pointing into the
 * file. Absent: LAM_ERR_NOT_FOUND (logged by the caller if required). */
static lam_status_t gguf_str_array(const lam_gguf_t *g, const char *key, uint64_t *n_out,
                                   const char ***ptrs, size_t **lens) {
    lam_gguf_vtype_t et;
    uint64_t n;
    const void *data;
    lam_status_t st = lam_gguf_get_arr(g, key, &et, &n, &data);
    if (st == LAM_ERR_NOT_FOUND) return st;
    if (st != LAM_OK) {
        lam_log_error("tokenizer: %s is not an array (%s)", key, lam_status_str(st));
        return LAM_ERR_TOKENIZER;
    }
    if (et != LAM_GGUF_STRING) {
        lam_log_error("tokenizer: %s is an array of type %d, not of strings", key, (int)et);
        return LAM_ERR_TOKENIZER;
    }
    if (n > (uint64_t)INT32_MAX) {
        lam_log_error("tokenizer: %s has %llu entries", key, (unsigned long long)n);
        return LAM_ERR_TOKENIZER;
    }
    const char **p = malloc(sizeof(char *) * (n ? n : 1));
    size_t *l = malloc(sizeof(size_t) * (n ? n : 1));
    if (!p || !l) {
        free(p);
        free(l);
        return LAM_ERR_NO_MEMORY;
    }
    for (uint64_t i = 0; i < n; i++) {
        lam_gguf_str_t s;
        st = lam_gguf_get_arr_str(g, key, i, &s);
        if (st != LAM_OK) {
            lam_log_error("tokenizer: %s[%llu] unreadable (%s)", key, (unsigned long long)i,
                          lam_status_str(st));
            free(p);
            free(l);
            return LAM_ERR_TOKENIZER;
        }
        p[i] = s.ptr ? s.ptr : "";
        l[i] = (size_t)s.len;
    }
    *n_out = n;
    *ptrs = p;
    *lens = l;
    return LAM_OK;
}

/* Optional numeric array of exactly n elements, 4 bytes each, of one of
 * the accepted types; copied (file data may be unaligned). */
static lam_status_t gguf_num_array(const lam_gguf_t *g, const char *key, uint64_t n,
                                   lam_gguf_vtype_t t1, lam_gguf_vtype_t t2, void **out) {
    lam_gguf_vtype_t et;
    uint64_t cnt;
    const void *data;
    lam_status_t st = lam_gguf_get_arr(g, key, &et, &cnt, &data);
    if (st == LAM_ERR_NOT_FOUND) return LAM_OK;
    if (st != LAM_OK) {
        lam_log_error("tokenizer: %s is not an array (%s)", key, lam_status_str(st));
        return LAM_ERR_TOKENIZER;
    }
    if (et != t1 && et != t2) {
        lam_log_error("tokenizer: %s is an array of type %d, expected %d", key, (int)et, (int)t1);
        return LAM_ERR_TOKENIZER;
    }
    if (cnt != n) {
        lam_log_error("tokenizer: %s has %llu entries for %llu tokens", key,
                      (unsigned long long)cnt, (unsigned long long)n);
        return LAM_ERR_TOKENIZER;
    }
    void *p = malloc(4 * (n ? n : 1));
    if (!p) return LAM_ERR_NO_MEMORY;
    if (n) memcpy(p, data, 4 * n);
    *out = p;
    return LAM_OK;
}

static lam_status_t gguf_id(const lam_gguf_t *g, const char *key, int32_t *id) {
    uint32_t v;
    lam_status_t st = lam_gguf_get_u32(g, key, &v);
    if (st == LAM_ERR_NOT_FOUND) return LAM_OK;
    if (st != LAM_OK || v > (uint32_t)INT32_MAX) {
        lam_log_error("tokenizer: %s is not a valid token id (%s)", key,
                      st ? lam_status_str(st) : "too large");
        return LAM_ERR_TOKENIZER;
    }
    *id = (int32_t)v;
    return LAM_OK;
}

static lam_status_t gguf_flag(const lam_gguf_t *g, const char *key, bool *b) {
    lam_status_t st = lam_gguf_get_bool(g, key, b);
    if (st == LAM_ERR_NOT_FOUND) return LAM_OK;
    if (st != LAM_OK) {
        lam_log_error("tokenizer: %s is not a bool (%s)", key, lam_status_str(st));
        return LAM_ERR_TOKENIZER;
    }
    return LAM_OK;
}

static bool str_is(lam_gguf_str_t s, const char *lit) {
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.ptr, lit, n) == 0;
}

static lam_status_t gguf_opt_str(const lam_gguf_t *g, const char *key, lam_gguf_str_t *s, bool *found) {
    lam_status_t st = lam_gguf_get_str(g, key, s);
    *found = st == LAM_OK;
    if (st == LAM_OK || st == LAM_ERR_NOT_FOUND) return LAM_OK;
    lam_log_error("tokenizer: %s is not a string (%s)", key, lam_status_str(st));
    return LAM_ERR_TOKENIZER;
}

lam_status_t lam_tok_from_gguf(const lam_gguf_t *g, lam_tok_t **out) {
    if (!g || !out) return LAM_ERR_INVALID_ARG;
    lam_tok_spec_t spec;
    lam_gguf_str_t model, pre, tmpl;
    bool have_model, have_pre, have_tmpl;
    lam_status_t st;
    const char **tok_p = NULL, **mrg_p = NULL;
    size_t *tok_l = NULL, *mrg_l = NULL;
    float *scores = NULL;
    int32_t *types = NULL;
    uint64_t n_tok = 0, n_mrg = 0;

    if ((st = gguf_opt_str(g, KEY_MODEL, &model, &have_model))) return st;
    if (!have_model) {
        lam_log_error("tokenizer: no %s in the model file", KEY_MODEL);
        return LAM_ERR_TOKENIZER;
    }
    if (str_is(model, "gpt2")) {
        lam_tok_spec_init(&spec, LAM_TOK_MODEL_BPE);
    } else if (str_is(model, "llama")) {
        lam_tok_spec_init(&spec, LAM_TOK_MODEL_SPM);
    } else {
        lam_log_error("tokenizer: unsupported tokenizer model '%.*s'", (int)(model.len > 64 ? 64 : model.len),
                      model.ptr);
        return LAM_ERR_UNSUPPORTED;
    }

    if ((st = gguf_opt_str(g, KEY_PRE, &pre, &have_pre))) return st;
    if (spec.model == LAM_TOK_MODEL_BPE && have_pre) {
        if (str_is(pre, "smollm"))
            spec.pre = LAM_TOK_PRE_SMOLLM;
        else if (str_is(pre, "llama3") || str_is(pre, "llama-bpe"))
            spec.pre = LAM_TOK_PRE_LLAMA3;
        else if (!str_is(pre, "gpt2") && !str_is(pre, "gpt-2") && !str_is(pre, "default"))
            lam_log_warn("tokenizer: unknown pre-tokenizer '%.*s', using gpt2",
                         (int)(pre.len > 64 ? 64 : pre.len), pre.ptr);
    }

    st = gguf_str_array(g, KEY_TOKENS, &n_tok, &tok_p, &tok_l);
    if (st == LAM_ERR_NOT_FOUND) {
        lam_log_error("tokenizer: no %s in the model file", KEY_TOKENS);
        st = LAM_ERR_TOKENIZER;
    }
    if (st) goto done;
    if (n_tok == 0) {
        lam_log_error("tokenizer: %s is empty", KEY_TOKENS);
        st = LAM_ERR_TOKENIZER;
        goto done;
    }
    if ((st = gguf_num_array(g, KEY_SCORES, n_tok, LAM_GGUF_FLOAT32, LAM_GGUF_FLOAT32, (void **)&scores)))
        goto done;
    if ((st = gguf_num_array(g, KEY_TYPES, n_tok, LAM_GGUF_INT32, LAM_GGUF_UINT32, (void **)&types)))
        goto done;
    if (spec.model == LAM_TOK_MODEL_BPE) {
        st = gguf_str_array(g, KEY_MERGES, &n_mrg, &mrg_p, &mrg_l);
        if (st == LAM_ERR_NOT_FOUND) {
            lam_log_error("tokenizer: no %s in the model file (needed by gpt2 tokenizers)", KEY_MERGES);
            st = LAM_ERR_TOKENIZER;
        }
        if (st) goto done;
    }

    spec.n_vocab = (int32_t)n_tok;
    spec.tokens = tok_p;
    spec.token_lens = tok_l;
    spec.scores = scores;
    spec.types = types;
    spec.n_merges = (size_t)n_mrg;
    spec.merges = mrg_p;
    spec.merge_lens = mrg_l;
    if (spec.model == LAM_TOK_MODEL_SPM) {
        /* llama.cpp's defaults, where the vocabulary has them */
        spec.unk = n_tok > 0 ? 0 : LAM_TOK_NULL;
        spec.bos = n_tok > 1 ? 1 : LAM_TOK_NULL;
        spec.eos = n_tok > 2 ? 2 : LAM_TOK_NULL;
        if (spec.bos == LAM_TOK_NULL) spec.add_bos = false;
    }
    if ((st = gguf_id(g, "tokenizer.ggml.bos_token_id", &spec.bos)) ||
        (st = gguf_id(g, "tokenizer.ggml.eos_token_id", &spec.eos)) ||
        (st = gguf_id(g, "tokenizer.ggml.unknown_token_id", &spec.unk)) ||
        (st = gguf_id(g, "tokenizer.ggml.padding_token_id", &spec.pad)) ||
        (st = gguf_id(g, "tokenizer.ggml.eot_token_id", &spec.eot)) ||
        (st = gguf_flag(g, "tokenizer.ggml.add_bos_token", &spec.add_bos)) ||
        (st = gguf_flag(g, "tokenizer.ggml.add_eos_token", &spec.add_eos)) ||
        (st = gguf_flag(g, "tokenizer.ggml.add_space_prefix", &spec.add_space_prefix)))
        goto done;
    if ((st = gguf_opt_str(g, KEY_TEMPLATE, &tmpl, &have_tmpl))) goto done;
    if (have_tmpl) {
        spec.chat_template = tmpl.ptr;
        spec.chat_template_len = (size_t)tmpl.len;
    }
    st = lam_tok_create(&spec, out);
done:
    if (st == LAM_ERR_NO_MEMORY) lam_log_error("tokenizer: out of memory reading metadata");
    free(tok_p);
    free(tok_l);
    free(mrg_p);
    free(mrg_l);
    free(scores);
    free(types);
    return st;
}
