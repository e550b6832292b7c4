/* Encoding: special-token partition, then byte-level BPE (merge by rank)
 * or SentencePiece-style merging (merge by score) on each text fragment.
 *
 * Both merge loops keep the word as a linked list of symbols and a binary
 * heap of candidate pairs; a popped pair that is no longer current (one side
 * merged meanwhile) is skipped. That is O(n log n) per word, so a long word
 * (a run of 10k spaces, a base64 blob) stays cheap. */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/tok_internal.h"

/* ---- growable id vector ---- */

typedef struct ids {
    int32_t *v;
    size_t n, cap;
    bool oom;
} ids_t;

static void ids_push(ids_t *o, int32_t id) {
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 64;
        int32_t *v = realloc(o->v, cap * sizeof(*v));
        if (!v) {
            o->oom = true;
            return;
        }
        o->v = v;
        o->cap = cap;
    }
    o->v[o->n++] = id;
}

/* ---- per-call work space, grown on demand ---- */

typedef struct sym {
    int32_t id;   /* BPE: token id, LAM_TOK_NULL if the byte has no token */
    uint32_t off; /* SPM: byte offset in the escaped text */
    uint32_t n;   /* bytes; 0 once merged into its left neighbour */
    int32_t prev, next;
} sym_t;

typedef struct pair {
    float score;   /* SPM: higher first */
    int32_t rank;  /* BPE: lower first */
    int32_t left, right;
    int32_t lid, rid; /* BPE: ids when pushed, to spot stale pairs */
    uint32_t size;    /* SPM: bytes of the merged text */
} pair_t;

typedef struct work {
    sym_t *sym;
    size_t sym_cap;
    pair_t *heap;
    size_t heap_n, heap_cap;
    char *buf; /* BPE: mapped word; SPM: escaped fragment */
    size_t buf_cap;
    lam_tok_pretok_scratch_t pre;
    lam_tok_spans_t words;
    bool spm; /* heap order */
} work_t;

static void work_free(work_t *w) {
    free(w->sym);
    free(w->heap);
    free(w->buf);
    free(w->words.v);
    lam_tok_pretok_scratch_free(&w->pre);
}

static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

/* true if a should pop before b */
static bool pair_before(const work_t *w, const pair_t *a, const pair_t *b) {
    if (w->spm) {
        if (a->score != b->score) return a->score > b->score;
    } else if (a->rank != b->rank) {
        return a->rank < b->rank;
    }
    return a->left < b->left;
}

static bool heap_push(work_t *w, pair_t p) {
    if (!grow((void **)&w->heap, &w->heap_cap, w->heap_n + 1, sizeof(pair_t))) return false;
    size_t i = w->heap_n++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_before(w, &p, &w->heap[up])) break;
        w->heap[i] = w->heap[up];
        i = up;
    }
    w->heap[i] = p;
    return true;
}

static pair_t heap_pop(work_t *w) {
    pair_t top = w->heap[0], last = w->heap[--w->heap_n];
    size_t i = 0, n = w->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_before(w, &w->heap[c + 1], &w->heap[c])) c++;
        if (!pair_before(w, &w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

/* ---- byte-level BPE ---- */

static const lam_tok_merge_t *merge_find(const lam_tok_t *t, int32_t l, int32_t r) {
    if (!t->merge_ht || l < 0 || r < 0) return NULL;
    uint64_t key = (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
    uint32_t i = lam_tok_merge_slot(key, t->merge_ht_mask);
    for (;;) {
        const lam_tok_merge_t *m = &t->merge_ht[i];
        if (m->key == key) return m;
        if (m->key == LAM_TOK_MERGE_EMPTY) return NULL;
        i = (i + 1) & t->merge_ht_mask;
    }
}

static bool bpe_try_pair(const lam_tok_t *t, work_t *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return true;
    const lam_tok_merge_t *m = merge_find(t, w->sym[l].id, w->sym[r].id);
    if (!m) return true;
    pair_t p = {0};
    p.rank = m->rank;
    p.left = l;
    p.right = r;
    p.lid = w->sym[l].id;
    p.rid = w->sym[r].id;
    return heap_push(w, p);
}

/* The mapped character of each byte, as UTF-8 (for whole-word lookup). */
static size_t map_byte(unsigned b, char *o) {
    uint32_t cp;
    if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae) cp = b;
    else if (b <= 0x20) cp = 0x100 + b;
    else if (b <= 0xa0) cp = 0x100 + 33 + (b - 0x7f);
    else cp = 0x100 + 67;
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

/* A byte whose mapped character is not a token (SmolLM2 has no token for
 * 21 bytes, e.g. 0x04 and 0xf5..0xff). Like llama.cpp, try each byte of
 * the mapped character as a one-byte token text, else drop it: such bytes
 * do not survive a round trip. */
static void bpe_lost_byte(const lam_tok_t *t, unsigned b, ids_t *out) {
    char m[2];
    size_t n = map_byte(b, m);
    for (size_t i = 0; i < n; i++) {
        int32_t id = lam_tok_find(t, m + i, 1);
        if (id != LAM_TOK_NULL) ids_push(out, id);
    }
}

static lam_status_t bpe_word(const lam_tok_t *t, work_t *w, const unsigned char *s, size_t n, ids_t *out) {
    if (n == 0) return LAM_OK;
    if (t->ignore_merges) {
        if (!grow((void **)&w->buf, &w->buf_cap, 2 * n, 1)) return LAM_ERR_NO_MEMORY;
        size_t m = 0;
        for (size_t i = 0; i < n; i++) m += map_byte(s[i], w->buf + m);
        int32_t id = lam_tok_find(t, w->buf, m);
        if (id != LAM_TOK_NULL) {
            ids_push(out, id);
            return LAM_OK;
        }
    }
    if (n == 1) { /* the common case of a one-byte word needs no merging */
        if (t->byte_tok[s[0]] != LAM_TOK_NULL) ids_push(out, t->byte_tok[s[0]]);
        else bpe_lost_byte(t, s[0], out);
        return LAM_OK;
    }
    if (n > (size_t)INT32_MAX - 1) return LAM_ERR_OVERFLOW;
    if (!grow((void **)&w->sym, &w->sym_cap, n, sizeof(sym_t))) return LAM_ERR_NO_MEMORY;
    for (size_t i = 0; i < n; i++) {
        w->sym[i] = (sym_t){t->byte_tok[s[i]], (uint32_t)i, 1, (int32_t)i - 1,
                            i + 1 < n ? (int32_t)i + 1 : -1};
    }
    w->heap_n = 0;
    w->spm = false;
    for (size_t i = 1; i < n; i++)
        if (!bpe_try_pair(t, w, (int32_t)i - 1, (int32_t)i)) return LAM_ERR_NO_MEMORY;
    while (w->heap_n > 0) {
        pair_t p = heap_pop(w);
        sym_t *l = &w->sym[p.left], *r = &w->sym[p.right];
        if (l->n == 0 || r->n == 0 || l->id != p.lid || r->id != p.rid) continue; /* stale */
        l->id = merge_find(t, p.lid, p.rid)->result;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = p.left;
        if (!bpe_try_pair(t, w, l->prev, p.left) || !bpe_try_pair(t, w, p.left, l->next))
            return LAM_ERR_NO_MEMORY;
    }
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
        if (w->sym[i].id != LAM_TOK_NULL) ids_push(out, w->sym[i].id);
        else bpe_lost_byte(t, s[w->sym[i].off], out);
    }
    return LAM_OK;
}

static lam_status_t bpe_fragment(const lam_tok_t *t, work_t *w, const char *s, size_t n, ids_t *out) {
    w->words.n = 0;
    lam_status_t st = lam_tok_pretokenize(t->pre, s, n, &w->pre, &w->words);
    for (size_t i = 0; st == LAM_OK && i < w->words.n; i++)
        st = bpe_word(t, w, (const unsigned char *)s + w->words.v[i].off, w->words.v[i].len, out);
    return st;
}

/* ---- SentencePiece-style ---- */

static bool spm_try_pair(const lam_tok_t *t, work_t *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) return true;
    uint32_t size = w->sym[l].n + w->sym[r].n;
    int32_t id = lam_tok_find(t, w->buf + w->sym[l].off, size);
    if (id == LAM_TOK_NULL || t->types[id] != LAM_TOK_TYPE_NORMAL) return true;
    pair_t p = {0};
    p.score = t->scores[id];
    p.left = l;
    p.right = r;
    p.size = size;
    return heap_push(w, p);
}

static void spm_emit(const lam_tok_t *t, const char *s, size_t n, ids_t *out) {
    int32_t id = lam_tok_find(t, s, n);
    if (id != LAM_TOK_NULL &&
        (t->types[id] == LAM_TOK_TYPE_NORMAL || t->types[id] == LAM_TOK_TYPE_USER_DEFINED)) {
        ids_push(out, id);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        id = t->byte_tok[(unsigned char)s[i]];
        if (id == LAM_TOK_NULL) id = t->unk;
        if (id != LAM_TOK_NULL) ids_push(out, id);
    }
}

static lam_status_t spm_fragment(const lam_tok_t *t, work_t *w, const char *s, size_t n,
                                 bool space_prefix, ids_t *out) {
    /* escape: ' ' -> U+2581 (3 bytes) */
    size_t need = 3 * (n + 1);
    if (need > UINT32_MAX) return LAM_ERR_OVERFLOW;
    if (!grow((void **)&w->buf, &w->buf_cap, need, 1)) return LAM_ERR_NO_MEMORY;
    size_t m = 0;
    for (size_t i = 0; i < n + space_prefix; i++) {
        char c = (space_prefix && i == 0) ? ' ' : s[i - space_prefix];
        if (c == ' ') {
            memcpy(w->buf + m, "\xe2\x96\x81", 3);
            m += 3;
        } else {
            w->buf[m++] = c;
        }
    }
    if (m == 0) return LAM_OK;
    if (!grow((void **)&w->sym, &w->sym_cap, m, sizeof(sym_t))) return LAM_ERR_NO_MEMORY;
    int32_t ns = 0;
    for (size_t off = 0; off < m;) {
        size_t l = lam_tok_utf8_len((unsigned char)w->buf[off]);
        if (l > m - off) l = m - off;
        w->sym[ns] = (sym_t){LAM_TOK_NULL, (uint32_t)off, (uint32_t)l, ns - 1, -1};
        if (ns > 0) w->sym[ns - 1].next = ns;
        ns++;
        off += l;
    }
    w->heap_n = 0;
    w->spm = true;
    for (int32_t i = 1; i < ns; i++)
        if (!spm_try_pair(t, w, i - 1, i)) return LAM_ERR_NO_MEMORY;
    while (w->heap_n > 0) {
        pair_t p = heap_pop(w);
        sym_t *l = &w->sym[p.left], *r = &w->sym[p.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = p.left;
        if (!spm_try_pair(t, w, l->prev, p.left) || !spm_try_pair(t, w, p.left, l->next))
            return LAM_ERR_NO_MEMORY;
    }
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) spm_emit(t, w->buf + w->sym[i].off, w->sym[i].n, out);
    return LAM_OK;
}

/* ---- special-token partition ----
 * Like llama.cpp: for each special token, longest first, every occurrence
 * in every remaining text fragment, left to right, becomes that token. */

typedef struct frag {
    int32_t id; /* LAM_TOK_NULL: text */
    size_t off, len;
} frag_t;

typedef struct frags {
    frag_t *v;
    size_t n, cap;
} frags_t;

static bool frags_push(frags_t *f, frag_t x) {
    if (!grow((void **)&f->v, &f->cap, f->n + 1, sizeof(frag_t))) return false;
    f->v[f->n++] = x;
    return true;
}

static lam_status_t partition(const lam_tok_t *t, const char *text, size_t len, bool parse_special,
                              frags_t *cur) {
    frags_t next = {0};
    cur->n = 0;
    if (len > 0 && !frags_push(cur, (frag_t){LAM_TOK_NULL, 0, len})) return LAM_ERR_NO_MEMORY;
    for (size_t k = 0; k < t->n_specials; k++) {
        int32_t id = t->specials[k];
        if (!parse_special && t->types[id] != LAM_TOK_TYPE_USER_DEFINED) continue;
        const char *st = t->text_blob + t->text_off[id];
        size_t sl = t->text_len[id];
        bool found = false;
        for (size_t i = 0; i < cur->n && !found; i++)
            found = cur->v[i].id == LAM_TOK_NULL && cur->v[i].len >= sl &&
                    memmem(text + cur->v[i].off, cur->v[i].len, st, sl) != NULL;
        if (!found) continue;
        next.n = 0;
        for (size_t i = 0; i < cur->n; i++) {
            frag_t f = cur->v[i];
            if (f.id != LAM_TOK_NULL) {
                if (!frags_push(&next, f)) goto oom;
                continue;
            }
            size_t pos = f.off, end = f.off + f.len;
            while (pos < end) {
                const char *hit = end - pos >= sl ? memmem(text + pos, end - pos, st, sl) : NULL;
                if (!hit) break;
                size_t h = (size_t)(hit - text);
                if (h > pos && !frags_push(&next, (frag_t){LAM_TOK_NULL, pos, h - pos})) goto oom;
                if (!frags_push(&next, (frag_t){id, h, sl})) goto oom;
                pos = h + sl;
            }
            if (pos < end && !frags_push(&next, (frag_t){LAM_TOK_NULL, pos, end - pos})) goto oom;
        }
        frags_t tmp = *cur;
        *cur = next;
        next = tmp;
    }
    free(next.v);
    return LAM_OK;
oom:
    free(next.v);
    return LAM_ERR_NO_MEMORY;
}

lam_status_t lam_tok_encode(const lam_tok_t *t, const char *text, size_t len, bool add_special,
                            bool parse_special, int32_t **ids, size_t *n_ids) {
    if (!t || (!text && len) || !ids || !n_ids) return LAM_ERR_INVALID_ARG;
    ids_t out = {0};
    frags_t fr = {0};
    work_t w = {0};
    lam_status_t st = partition(t, text, len, parse_special, &fr);
    if (add_special && t->add_bos) ids_push(&out, t->bos);
    bool prev_special = true; /* SPM: space prefix at the start and after specials */
    for (size_t i = 0; st == LAM_OK && i < fr.n; i++) {
        frag_t f = fr.v[i];
        if (f.id != LAM_TOK_NULL) {
            ids_push(&out, f.id);
            prev_special = true;
        } else if (t->model == LAM_TOK_MODEL_BPE) {
            st = bpe_fragment(t, &w, text + f.off, f.len, &out);
        } else {
            st = spm_fragment(t, &w, text + f.off, f.len, t->add_space_prefix && prev_special, &out);
            prev_special = false;
        }
        if (out.oom) st = LAM_ERR_NO_MEMORY;
    }
    if (st == LAM_OK && add_special && t->add_eos) ids_push(&out, t->eos);
    if (st == LAM_OK && out.oom) st = LAM_ERR_NO_MEMORY;
    work_free(&w);
    free(fr.v);
    if (st != LAM_OK) {
        if (st == LAM_ERR_NO_MEMORY) lam_log_error("tokenizer: out of memory encoding %zu bytes", len);
        free(out.v);
        return st;
    }
    *ids = out.v;
    *n_ids = out.n;
    return LAM_OK;
}
