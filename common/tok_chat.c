/* Chat prompts: ChatML and Llama-3 rendering, and recognising which one a
 * model's Jinja chat template is (we do not run Jinja: the common formats
 * are fixed strings around role and content). */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/tok_internal.h"

typedef struct sb {
    char *p;
    size_t n, cap;
    bool oom;
} sb_t;

static void sb_add(sb_t *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_str(sb_t *b, const char *s) { sb_add(b, s, strlen(s)); }

static bool is_trim_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Jinja's `| trim`, which the Llama-3 template applies to content. */
static void sb_trimmed(sb_t *b, const char *s) {
    size_t n = strlen(s);
    while (n > 0 && is_trim_space(s[n - 1])) n--;
    while (n > 0 && is_trim_space(*s)) {
        s++;
        n--;
    }
    sb_add(b, s, n);
}

lam_status_t lam_chat_render(lam_chat_format_t fmt, const lam_chat_msg_t *msgs, size_t n,
                             bool add_generation_prompt, const char *default_system, char **out) {
    if ((!msgs && n) || !out) return LAM_ERR_INVALID_ARG;
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content) {
            lam_log_error("chat: message %zu has no %s", i, msgs[i].role ? "content" : "role");
            return LAM_ERR_INVALID_ARG;
        }
    }
    sb_t b = {0};
    sb_add(&b, "", 0);
    bool add_default = default_system && n > 0 && strcmp(msgs[0].role, "system") != 0;
    switch (fmt) {
    case LAM_CHAT_CHATML:
        if (add_default) {
            sb_str(&b, "<|im_start|>system\n");
            sb_str(&b, default_system);
            sb_str(&b, "<|im_end|>\n");
        }
        for (size_t i = 0; i < n; i++) {
            sb_str(&b, "<|im_start|>");
            sb_str(&b, msgs[i].role);
            sb_str(&b, "\n");
            sb_str(&b, msgs[i].content);
            sb_str(&b, "<|im_end|>\n");
        }
        if (add_generation_prompt) sb_str(&b, "<|im_start|>assistant\n");
        break;
    case LAM_CHAT_LLAMA3:
        sb_str(&b, "<|begin_of_text|>");
        if (add_default) {
            sb_str(&b, "<|start_header_id|>system<|end_header_id|>\n\n");
            sb_trimmed(&b, default_system);
            sb_str(&b, "<|eot_id|>");
        }
        for (size_t i = 0; i < n; i++) {
            sb_str(&b, "<|start_header_id|>");
            sb_str(&b, msgs[i].role);
            sb_str(&b, "<|end_header_id|>\n\n");
            sb_trimmed(&b, msgs[i].content);
            sb_str(&b, "<|eot_id|>");
        }
        if (add_generation_prompt) sb_str(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    default:
        free(b.p);
        return LAM_ERR_INVALID_ARG;
    }
    if (b.oom) {
        free(b.p);
        lam_log_error("chat: out of memory");
        return LAM_ERR_NO_MEMORY;
    }
    *out = b.p;
    return LAM_OK;
}

static const char *find_in(const char *h, size_t hn, const char *needle) {
    return memmem(h, hn, needle, strlen(needle));
}

/* A ChatML template that injects a default system message has it as a
 * plain literal: '<|im_start|>system\n...<|im_end|>' with no Jinja
 * expression inside. Returns a malloc'ed copy (escapes \n undone) or NULL. */
static char *chatml_default_system(const char *t, size_t n, bool *oom) {
    static const char head[] = "<|im_start|>system";
    const char *end = t + n, *p = t;
    while ((p = find_in(p, (size_t)(end - p), head)) != NULL) {
        p += sizeof(head) - 1;
        const char *body;
        if (end - p >= 1 && p[0] == '\n') body = p + 1;
        else if (end - p >= 2 && p[0] == '\\' && p[1] == 'n') body = p + 2;
        else continue;
        const char *stop = find_in(body, (size_t)(end - body), "<|im_end|>");
        if (!stop || stop == body) continue;
        size_t bn = (size_t)(stop - body);
        if (memchr(body, '\'', bn) || memchr(body, '"', bn) || memchr(body, '{', bn) ||
            memchr(body, '}', bn))
            continue; /* an expression such as ' + message['content'] + ' */
        char *s = malloc(bn + 1);
        if (!s) {
            *oom = true;
            return NULL;
        }
        size_t k = 0;
        for (size_t i = 0; i < bn; i++) {
            if (body[i] == '\\' && i + 1 < bn && body[i + 1] == 'n') {
                s[k++] = '\n';
                i++;
            } else {
                s[k++] = body[i];
            }
        }
        s[k] = '\0';
        return s;
    }
    return NULL;
}

lam_status_t lam_tok_chat_detect(lam_tok_t *t, const char *tmpl, size_t len) {
    t->chat_supported = true;
    t->chat_fmt = LAM_CHAT_CHATML;
    t->chat_default_system = NULL;
    if (!tmpl || len == 0) return LAM_OK;
    if (find_in(tmpl, len, "<|im_start|>")) {
        bool oom = false;
        t->chat_default_system = chatml_default_system(tmpl, len, &oom);
        return oom ? LAM_ERR_NO_MEMORY : LAM_OK;
    }
    if (find_in(tmpl, len, "<|start_header_id|>")) {
        t->chat_fmt = LAM_CHAT_LLAMA3;
        return LAM_OK;
    }
    t->chat_supported = false;
    lam_log_warn("tokenizer: chat template is neither ChatML nor Llama-3; chat rendering unsupported");
    return LAM_OK;
}

bool lam_tok_chat_format(const lam_tok_t *t, lam_chat_format_t *fmt) {
    if (t->chat_supported && fmt) *fmt = t->chat_fmt;
    return t->chat_supported;
}

const char *lam_tok_chat_default_system(const lam_tok_t *t) { return t->chat_default_system; }

lam_status_t lam_tok_chat_render(const lam_tok_t *t, const lam_chat_msg_t *msgs, size_t n,
                                 bool add_generation_prompt, char **out) {
    if (!t) return LAM_ERR_INVALID_ARG;
    if (!t->chat_supported) {
        lam_log_error("chat: the model's chat template is not a supported format");
        return LAM_ERR_UNSUPPORTED;
    }
    return lam_chat_render(t->chat_fmt, msgs, n, add_generation_prompt, t->chat_default_system, out);
}
