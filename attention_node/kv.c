/* Paged KV cache: page memory from a dedicated jemalloc arena, a free stack
 * of pages, a fixed table of sequences and an open-addressing hash over
 * (owner, seq_id). See kv.h for the layout and the rules. */
#include "attention_node/kv.h"

#include "common/dtype.h"
#include "common/log.h"
#include "common/mem.h"
#include "kernels/cpu/attn.h"

#include <assert.h>
#include <jemalloc/jemalloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KV_DEFAULT_SLAB (64u << 20)
#define KV_ALIGN 64

struct lam_kv_seq {
    uint64_t id;
    uint32_t owner;
    bool used;
    lam_status_t poison;  /* LAM_OK, or the first error this sequence got */
    int n_pages;          /* pages[0 .. n_pages) are held */
    int32_t *len;         /* [n_layers] tokens held per layer */
    uint8_t **pages;      /* [max_pages_per_seq] */
    int32_t next_free;    /* free list of table entries, -1 ends it */
};

struct lam_kv {
    lam_kv_opts_t o;
    lam_kv_geom_t g;
    size_t esz;
    unsigned arena;
    bool have_arena;
    int flags;            /* mallocx flags for the arena */

    uint8_t **slabs;      /* [n_slabs] */
    int n_slabs;

    uint8_t **free_pages; /* [pages_total] stack; free_pages[0 .. n_free) are free */
    int64_t pages_total, n_free;

    lam_kv_seq_t *seqs;   /* [max_seqs] */
    int32_t *seq_len_mem; /* [max_seqs][n_layers] */
    uint8_t **seq_page_mem; /* [max_seqs][max_pages_per_seq] */
    int32_t free_seq;     /* head of the free list */
    int64_t n_seqs;

    int32_t *hash;        /* [hash_cap] table index or -1 */
    uint32_t hash_mask;
};

static uint64_t kv_mix(uint32_t owner, uint64_t id)
{
    /* splitmix64 finaliser over both halves of the key */
    uint64_t z = id + 0x9e3779b97f4a7c15ull * ((uint64_t)owner + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

static lam_status_t kv_check_opts(const lam_kv_opts_t *o, size_t esz)
{
    if (o->n_layers < 1 || o->n_layers > 4096 || o->n_kv_heads < 1 || o->n_kv_heads > 4096 || o->head_dim < 1 ||
        o->head_dim > 4096 || o->page_tokens < 1 || o->page_tokens > 65536 || esz == 0 || o->max_ctx < 1 ||
        o->max_ctx > (1 << 24) || o->max_seqs < 1 || o->max_seqs > (1 << 24)) {
        lam_log_error("kv: invalid options (layers %d, kv heads %d, head_dim %d, page_tokens %d, dtype %d, "
                      "max_ctx %d, max_seqs %d)",
                      o->n_layers, o->n_kv_heads, o->head_dim, o->page_tokens, o->dtype, o->max_ctx, o->max_seqs);
        return LAM_ERR_INVALID_ARG;
    }
    if (o->k_layout != LAM_ATTN_K_ROWS && o->k_layout != LAM_ATTN_K_TILED) {
        lam_log_error("kv: unknown K layout %d", o->k_layout);
        return LAM_ERR_INVALID_ARG;
    }
    if (o->k_layout == LAM_ATTN_K_TILED && o->page_tokens % LAM_ATTN_K_TILE) {
        lam_log_error("kv: tiled K needs page_tokens a multiple of %d, not %d", LAM_ATTN_K_TILE, o->page_tokens);
        return LAM_ERR_INVALID_ARG;
    }
    return LAM_OK;
}

static void kv_free_slabs(lam_kv_t *kv)
{
    for (int i = 0; i < kv->n_slabs; i++)
        if (kv->slabs[i])
            dallocx(kv->slabs[i], kv->flags);
    free(kv->slabs);
    kv->slabs = NULL;
    kv->n_slabs = 0;
}

/* Pages of an external pool: addresses only, never touched here. */
static lam_status_t kv_external_pages(lam_kv_t *kv)
{
    kv->free_pages = malloc((size_t)kv->pages_total * sizeof *kv->free_pages);
    if (!kv->free_pages)
        return LAM_ERR_NO_MEMORY;
    /* pop from the top hands out pages in address order */
    for (int64_t i = 0; i < kv->pages_total; i++)
        kv->free_pages[i] = kv->o.page_pool + (size_t)(kv->pages_total - 1 - i) * kv->g.page_bytes;
    kv->n_free = kv->pages_total;
    return LAM_OK;
}

static lam_status_t kv_alloc_pages(lam_kv_t *kv)
{
    if (kv->o.page_pool)
        return kv_external_pages(kv);
    size_t sz = sizeof kv->arena;
    if (mallctl("arenas.create", &kv->arena, &sz, NULL, 0) != 0) {
        lam_log_error("kv: cannot create a jemalloc arena");
        return LAM_ERR_NO_MEMORY;
    }
    kv->have_arena = true;
    /* slabs on 2 MiB boundaries so that huge pages can cover them whole */
    kv->flags = MALLOCX_ARENA(kv->arena) | MALLOCX_ALIGN(LAM_HUGE_PAGE) | MALLOCX_TCACHE_NONE;

    size_t pb = kv->g.page_bytes;
    size_t slab = kv->o.slab_bytes ? kv->o.slab_bytes : KV_DEFAULT_SLAB;
    int64_t per_slab = slab / pb ? (int64_t)(slab / pb) : 1;
    int64_t n_slabs = (kv->pages_total + per_slab - 1) / per_slab;
    kv->slabs = calloc((size_t)n_slabs, sizeof *kv->slabs);
    kv->free_pages = malloc((size_t)kv->pages_total * sizeof *kv->free_pages);
    if (!kv->slabs || !kv->free_pages)
        return LAM_ERR_NO_MEMORY;
    int64_t left = kv->pages_total, k = 0;
    for (int64_t i = 0; i < n_slabs; i++) {
        int64_t np = left < per_slab ? left : per_slab;
        uint8_t *p = mallocx((size_t)np * pb, kv->flags);
        if (!p) {
            lam_log_error("kv: cannot allocate %.1f MiB of pages (slab %lld of %lld)", (double)np * pb / 1048576.0,
                          (long long)i + 1, (long long)n_slabs);
            return LAM_ERR_NO_MEMORY;
        }
        kv->slabs[kv->n_slabs++] = p;
        lam_advise_huge(p, (size_t)np * pb);
        for (int64_t j = 0; j < np; j++)
            kv->free_pages[k++] = p + (size_t)j * pb;
        left -= np;
    }
    /* Touch every page now, from many threads (first touch also spreads
     * pages over NUMA nodes): no page faults in the hot path. */
    int64_t total = kv->pages_total;
    uint8_t **pages = kv->free_pages;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < total; i++)
        memset(pages[i], 0, pb);
    /* pop from the top hands out pages in address order */
    for (int64_t i = 0, j = kv->pages_total - 1; i < j; i++, j--) {
        uint8_t *t = kv->free_pages[i];
        kv->free_pages[i] = kv->free_pages[j];
        kv->free_pages[j] = t;
    }
    kv->n_free = kv->pages_total;
    return LAM_OK;
}

static lam_kv_geom_t kv_geom(const lam_kv_opts_t *o, size_t esz)
{
    lam_kv_geom_t g = {0};
    g.page_tokens = o->page_tokens;
    g.k_layout = o->k_layout;
    g.head_stride = (size_t)o->page_tokens * o->head_dim * esz;
    g.v_off = (size_t)o->n_kv_heads * g.head_stride;
    g.layer_stride = 2 * g.v_off;
    g.page_bytes = round_up((size_t)o->n_layers * g.layer_stride, KV_ALIGN);
    g.max_pages_per_seq = (o->max_ctx + o->page_tokens - 1) / o->page_tokens;
    return g;
}

lam_kv_geom_t lam_kv_geom_for(const lam_kv_opts_t *opts)
{
    lam_kv_opts_t o = *opts;
    if (!o.page_tokens)
        o.page_tokens = LAM_KV_DEFAULT_PAGE_TOKENS;
    size_t esz = lam_dtype_size((unsigned)o.dtype);
    if (kv_check_opts(&o, esz) != LAM_OK)
        return (lam_kv_geom_t){0};
    return kv_geom(&o, esz);
}

lam_status_t lam_kv_create(const lam_kv_opts_t *opts, lam_kv_t **out)
{
    lam_kv_opts_t o = *opts;
    if (!o.page_tokens)
        o.page_tokens = LAM_KV_DEFAULT_PAGE_TOKENS;
    size_t esz = lam_dtype_size((unsigned)o.dtype);
    lam_status_t st = kv_check_opts(&o, esz);
    if (st)
        return st;
    if (o.page_pool && o.capacity_pages < 1) {
        lam_log_error("kv: an external page pool needs capacity_pages");
        return LAM_ERR_INVALID_ARG;
    }

    lam_kv_t *kv = calloc(1, sizeof *kv);
    if (!kv)
        return LAM_ERR_NO_MEMORY;
    kv->o = o;
    kv->esz = esz;
    kv->g = kv_geom(&o, esz);

    kv->pages_total = o.capacity_pages > 0 ? o.capacity_pages : (int64_t)(o.capacity_bytes / kv->g.page_bytes);
    if (kv->pages_total < 1) {
        lam_log_error("kv: a capacity of %zu bytes holds no page of %zu bytes (%d layers x %d KV heads x %d tokens "
                      "x %d x %s)",
                      o.capacity_bytes, kv->g.page_bytes, o.n_layers, o.n_kv_heads, o.page_tokens, o.head_dim,
                      lam_dtype_name((unsigned)o.dtype));
        free(kv);
        return LAM_ERR_CONFIG;
    }

    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)o.max_seqs)
        cap <<= 1;
    kv->hash_mask = cap - 1;
    kv->hash = malloc(cap * sizeof *kv->hash);
    kv->seqs = calloc((size_t)o.max_seqs, sizeof *kv->seqs);
    kv->seq_len_mem = calloc((size_t)o.max_seqs * o.n_layers, sizeof *kv->seq_len_mem);
    kv->seq_page_mem = calloc((size_t)o.max_seqs * kv->g.max_pages_per_seq, sizeof *kv->seq_page_mem);
    if (!kv->hash || !kv->seqs || !kv->seq_len_mem || !kv->seq_page_mem) {
        lam_kv_destroy(kv);
        return LAM_ERR_NO_MEMORY;
    }
    memset(kv->hash, 0xff, cap * sizeof *kv->hash);
    for (int i = 0; i < o.max_seqs; i++) {
        lam_kv_seq_t *s = &kv->seqs[i];
        s->len = kv->seq_len_mem + (size_t)i * o.n_layers;
        s->pages = kv->seq_page_mem + (size_t)i * kv->g.max_pages_per_seq;
        s->next_free = i + 1 < o.max_seqs ? i + 1 : -1;
    }
    kv->free_seq = 0;

    if ((st = kv_alloc_pages(kv))) {
        lam_kv_destroy(kv);
        return st;
    }
    char where[32];
    if (o.page_pool)
        snprintf(where, sizeof where, "an external pool");
    else
        snprintf(where, sizeof where, "%d slabs", kv->n_slabs);
    lam_log_info("kv: %lld pages of %d tokens (%.1f KiB each, %.1f MiB in %s, %s), %d sequences of up to %d "
                 "tokens",
                 (long long)kv->pages_total, o.page_tokens, kv->g.page_bytes / 1024.0,
                 (double)kv->pages_total * kv->g.page_bytes / 1048576.0, where,
                 lam_dtype_name((unsigned)o.dtype), o.max_seqs, o.max_ctx);
    *out = kv;
    return LAM_OK;
}

void lam_kv_destroy(lam_kv_t *kv)
{
    if (!kv)
        return;
    kv_free_slabs(kv);
    if (kv->have_arena) {
        char name[64];
        snprintf(name, sizeof name, "arena.%u.destroy", kv->arena);
        if (mallctl(name, NULL, NULL, NULL, 0) != 0)
            lam_log_warn("kv: cannot destroy jemalloc arena %u", kv->arena);
    }
    free(kv->free_pages);
    free(kv->hash);
    free(kv->seqs);
    free(kv->seq_len_mem);
    free(kv->seq_page_mem);
    free(kv);
}

const lam_kv_geom_t *lam_kv_geom(const lam_kv_t *kv) { return &kv->g; }

lam_kv_stats_t lam_kv_stats(const lam_kv_t *kv)
{
    return (lam_kv_stats_t){.pages_total = kv->pages_total,
                            .pages_used = kv->pages_total - kv->n_free,
                            .seqs = kv->n_seqs,
                            .max_seqs = kv->o.max_seqs};
}

/* ---- sequences ---------------------------------------------------------- */

/* Slot of (owner, id) in the hash, or of the empty slot where it would go. */
static uint32_t kv_slot(const lam_kv_t *kv, uint32_t owner, uint64_t id)
{
    uint32_t i = (uint32_t)kv_mix(owner, id) & kv->hash_mask;
    for (;;) {
        int32_t e = kv->hash[i];
        if (e < 0 || (kv->seqs[e].id == id && kv->seqs[e].owner == owner))
            return i;
        i = (i + 1) & kv->hash_mask;
    }
}

lam_kv_seq_t *lam_kv_seq_find(lam_kv_t *kv, uint32_t owner, uint64_t id)
{
    int32_t e = kv->hash[kv_slot(kv, owner, id)];
    return e < 0 ? NULL : &kv->seqs[e];
}

lam_status_t lam_kv_seq_get(lam_kv_t *kv, uint32_t owner, uint64_t id, lam_kv_seq_t **out)
{
    uint32_t slot = kv_slot(kv, owner, id);
    if (kv->hash[slot] >= 0) {
        *out = &kv->seqs[kv->hash[slot]];
        return LAM_OK;
    }
    if (kv->free_seq < 0)
        return LAM_ERR_KV_FULL;
    int32_t e = kv->free_seq;
    lam_kv_seq_t *s = &kv->seqs[e];
    kv->free_seq = s->next_free;
    s->id = id;
    s->owner = owner;
    s->used = true;
    s->poison = LAM_OK;
    s->n_pages = 0;
    memset(s->len, 0, (size_t)kv->o.n_layers * sizeof *s->len);
    kv->hash[slot] = e;
    kv->n_seqs++;
    *out = s;
    return LAM_OK;
}

/* Removes hash slot i, moving later members of its probe run back so that
 * lookups never need tombstones. */
static void kv_hash_remove(lam_kv_t *kv, uint32_t i)
{
    uint32_t m = kv->hash_mask;
    kv->hash[i] = -1;
    for (uint32_t j = (i + 1) & m; kv->hash[j] >= 0; j = (j + 1) & m) {
        const lam_kv_seq_t *s = &kv->seqs[kv->hash[j]];
        uint32_t home = (uint32_t)kv_mix(s->owner, s->id) & m;
        /* j's entry may move to i only if i lies cyclically in [home, j) */
        if (((j - home) & m) >= ((j - i) & m)) {
            kv->hash[i] = kv->hash[j];
            kv->hash[j] = -1;
            i = j;
        }
    }
}

void lam_kv_release(lam_kv_t *kv, lam_kv_seq_t *s)
{
    assert(s->used);
    for (int i = 0; i < s->n_pages; i++)
        kv->free_pages[kv->n_free++] = s->pages[i];
    s->n_pages = 0;
    kv_hash_remove(kv, kv_slot(kv, s->owner, s->id));
    s->used = false;
    int32_t e = (int32_t)(s - kv->seqs);
    s->next_free = kv->free_seq;
    kv->free_seq = e;
    kv->n_seqs--;
}

lam_status_t lam_kv_release_id(lam_kv_t *kv, uint32_t owner, uint64_t id)
{
    lam_kv_seq_t *s = lam_kv_seq_find(kv, owner, id);
    if (!s)
        return LAM_ERR_SEQ_UNKNOWN;
    lam_kv_release(kv, s);
    return LAM_OK;
}

int lam_kv_release_owner(lam_kv_t *kv, uint32_t owner)
{
    int n = 0;
    for (int i = 0; i < kv->o.max_seqs; i++)
        if (kv->seqs[i].used && kv->seqs[i].owner == owner) {
            lam_kv_release(kv, &kv->seqs[i]);
            n++;
        }
    return n;
}

/* ---- appending ---------------------------------------------------------- */

lam_status_t lam_kv_reserve(lam_kv_t *kv, lam_kv_seq_t *s, int layer, int pos, int n)
{
    if (layer < 0 || layer >= kv->o.n_layers || n < 1)
        return LAM_ERR_INVALID_ARG;
    if (s->poison)
        return s->poison;
    lam_status_t st = LAM_OK;
    if (pos != s->len[layer])
        st = LAM_ERR_SEQ_POS;
    else if ((int64_t)pos + n > kv->o.max_ctx)
        st = LAM_ERR_CTX_FULL;
    else {
        int need = (pos + n + kv->g.page_tokens - 1) / kv->g.page_tokens;
        if (need > s->n_pages) {
            if (need - s->n_pages > kv->n_free)
                st = LAM_ERR_KV_FULL;
            else
                while (s->n_pages < need)
                    s->pages[s->n_pages++] = kv->free_pages[--kv->n_free];
        }
    }
    s->poison = st;
    return st;
}

/* One K row into a tiled block: element d of key j goes 16 elements after
 * element d - 1 (lam_attn_k_index). Converted in pieces through a small
 * buffer, then stored with that stride. */
static void kv_write_tiled(uint8_t *blk, int j, int hd, int dtype, size_t esz, const uint8_t *src, int src_dtype)
{
    uint8_t buf[64 * 4];
    size_t src_esz = lam_dtype_size((unsigned)src_dtype);
    uint8_t *dst = blk + lam_attn_k_index(LAM_ATTN_K_TILED, hd, j, 0) * esz;
    for (int d0 = 0; d0 < hd; d0 += 64) {
        int n = hd - d0 < 64 ? hd - d0 : 64;
        lam_convert(buf, dtype, src + (size_t)d0 * src_esz, src_dtype, (size_t)n);
        uint8_t *p = dst + (size_t)d0 * LAM_ATTN_K_TILE * esz;
        if (esz == 2)
            for (int d = 0; d < n; d++)
                memcpy(p + (size_t)d * LAM_ATTN_K_TILE * 2, buf + 2 * d, 2);
        else
            for (int d = 0; d < n; d++)
                memcpy(p + (size_t)d * LAM_ATTN_K_TILE * 4, buf + 4 * d, 4);
    }
}

void lam_kv_write(lam_kv_t *kv, lam_kv_seq_t *s, int layer, int pos, int n, const void *k, const void *v,
                  int src_dtype)
{
    const lam_kv_geom_t *g = &kv->g;
    const int hd = kv->o.head_dim, nkv = kv->o.n_kv_heads, P = g->page_tokens;
    const size_t row = (size_t)hd * kv->esz, src_row = (size_t)hd * lam_dtype_size((unsigned)src_dtype);
    const size_t k_off = (size_t)layer * g->layer_stride, v_off = k_off + g->v_off;
    const uint8_t *ks = k, *vs = v;
    assert(pos + n <= s->n_pages * P && !kv->o.page_pool);
    for (int t = 0; t < n; t++) {
        uint8_t *page = s->pages[(pos + t) / P];
        int j = (pos + t) % P;
        size_t r = (size_t)j * row;
        for (int h = 0; h < nkv; h++) {
            size_t src = ((size_t)t * nkv + h) * src_row;
            uint8_t *kb = page + k_off + h * g->head_stride;
            if (g->k_layout == LAM_ATTN_K_TILED)
                kv_write_tiled(kb, j, hd, kv->o.dtype, kv->esz, ks + src, src_dtype);
            else
                lam_convert(kb + r, kv->o.dtype, ks + src, src_dtype, (size_t)hd);
            lam_convert(page + v_off + h * g->head_stride + r, kv->o.dtype, vs + src, src_dtype, (size_t)hd);
        }
    }
}

void lam_kv_commit(lam_kv_t *kv, lam_kv_seq_t *s, int layer, int pos, int n)
{
    assert(s->len[layer] == pos && pos + n <= s->n_pages * kv->g.page_tokens);
    s->len[layer] = pos + n;
}

lam_status_t lam_kv_append(lam_kv_t *kv, lam_kv_seq_t *s, int layer, int pos, int n, const void *k,
                           const void *v, int src_dtype)
{
    lam_status_t st = lam_kv_reserve(kv, s, layer, pos, n);
    if (st)
        return st;
    lam_kv_write(kv, s, layer, pos, n, k, v, src_dtype);
    lam_kv_commit(kv, s, layer, pos, n);
    return LAM_OK;
}

void lam_kv_read_row(const lam_kv_t *kv, const lam_kv_seq_t *s, int layer, int kv_head, int pos, float *k_out,
                     float *v_out)
{
    const lam_kv_geom_t *g = &kv->g;
    assert(!kv->o.page_pool);
    const uint8_t *page = s->pages[pos / g->page_tokens];
    int hd = kv->o.head_dim, j = pos % g->page_tokens;
    size_t off = (size_t)layer * g->layer_stride + kv_head * g->head_stride;
    for (int d = 0; d < hd; d++)
        lam_convert(k_out + d, LAM_DT_F32, page + off + lam_attn_k_index(g->k_layout, hd, j, d) * kv->esz,
                    kv->o.dtype, 1);
    lam_convert(v_out, LAM_DT_F32, page + off + g->v_off + (size_t)j * hd * kv->esz, kv->o.dtype, (size_t)hd);
}

uint8_t *const *lam_kv_seq_pages(const lam_kv_seq_t *s) { return s->pages; }
int lam_kv_seq_len(const lam_kv_seq_t *s, int layer) { return s->len[layer]; }
lam_status_t lam_kv_seq_poison(const lam_kv_seq_t *s) { return s->poison; }
uint64_t lam_kv_seq_id(const lam_kv_seq_t *s) { return s->id; }
int lam_kv_seq_pages_held(const lam_kv_seq_t *s) { return s->n_pages; }
