/* Paged KV cache of an attention node.
 *
 * A page holds page_tokens consecutive tokens of one sequence for ALL layers
 * and this node's KV heads, laid out as kernels/cpu/attn.h expects:
 *
 *   page = [layer][K|V][kv_head][page_tokens][head_dim]   (elements of dtype)
 *   k_off(layer) = layer * 2 * n_kv_heads * head_stride
 *   v_off(layer) = k_off(layer) + n_kv_heads * head_stride
 *   head_stride  = page_tokens * head_dim * dtype_size
 *
 * so a sequence has one page table shared by every layer, and position j of
 * any layer lives in page pages[j / page_tokens] at row j % page_tokens.
 * With k_layout LAM_ATTN_K_TILED (CPU nodes) each K block is stored instead
 * as tiles of 16 tokens, [head_dim][16] each (lam_attn_k_index); V blocks
 * are always rows.
 *
 * All memory is taken at creation: the pages come from a dedicated jemalloc
 * arena in slabs (64 MiB, say) and are touched once so that the kernel has
 * backed them; sequences come from a table of max_seqs entries, each with a
 * page array of ceil(max_ctx / page_tokens) entries; lookup is an
 * open-addressing hash on (owner, seq_id). Nothing allocates afterwards, so
 * running out of pages or sequences is a status, never a failure of malloc.
 *
 * A sequence is identified by (owner, seq_id): the owner is the attention
 * node's connection number, so two compute nodes never collide.
 *
 * Appending a chunk to one layer of a sequence is lam_kv_reserve (checks and
 * pages), lam_kv_write (rows, converted from the sender's dtype),
 * lam_kv_commit (the layer's length); lam_kv_append does all three. A
 * sequence keeps one length per layer, and a chunk must continue exactly
 * where that layer stopped. The first error a sequence gets (LAM_ERR_SEQ_POS,
 * LAM_ERR_CTX_FULL, LAM_ERR_KV_FULL) poisons it: every later reserve returns
 * the same error until the sequence is released, so its layers never get out
 * of step with each other.
 *
 * One thread uses a lam_kv_t at a time (the attention node's event loop). */
#ifndef LAM_ATTENTION_NODE_KV_H
#define LAM_ATTENTION_NODE_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct lam_kv lam_kv_t;
typedef struct lam_kv_seq lam_kv_seq_t;

#define LAM_KV_DEFAULT_PAGE_TOKENS 64

typedef struct lam_kv_opts {
    int n_layers;
    int n_kv_heads;         /* this node's KV heads */
    int head_dim;
    int page_tokens;        /* 0: LAM_KV_DEFAULT_PAGE_TOKENS */
    int k_layout;           /* LAM_ATTN_K_ROWS, or LAM_ATTN_K_TILED (page_tokens a multiple of 16) */
    int dtype;              /* lam_dtype_t of the cache */
    size_t capacity_bytes;  /* page memory; rounded down to whole pages */
    int64_t capacity_pages; /* if > 0, used instead of capacity_bytes */
    int max_ctx;            /* longest sequence, in tokens */
    int max_seqs;           /* sequences held at once */
    size_t slab_bytes;      /* 0: 64 MiB; at least one page per slab */
    /* NULL: host pages from a jemalloc arena, as above. Otherwise the
     * pages are page_pool + i * page_bytes for i < capacity_pages (which
     * must be set): memory that lam_kv never touches, such as a GPU's.
     * lam_kv then only keeps the books; lam_kv_write, lam_kv_append and
     * lam_kv_read_row must not be used. */
    uint8_t *page_pool;
} lam_kv_opts_t;

/* Where a layer's blocks sit inside a page (bytes); see the layout above. */
typedef struct lam_kv_geom {
    size_t page_bytes;      /* one page, all layers (a multiple of 64) */
    size_t head_stride;
    size_t layer_stride;    /* k_off(l) = l * layer_stride */
    size_t v_off;           /* v_off(l) = k_off(l) + v_off */
    int page_tokens;
    int k_layout;           /* as in the options */
    int max_pages_per_seq;
} lam_kv_geom_t;

typedef struct lam_kv_stats {
    int64_t pages_total, pages_used;
    int64_t seqs, max_seqs;
} lam_kv_stats_t;

/* The geometry lam_kv_create gives options o (page_tokens 0: the default),
 * e.g. to size an external page pool; page_bytes is 0 if o is invalid. */
lam_kv_geom_t lam_kv_geom_for(const lam_kv_opts_t *o);

/* Checks the options, takes all memory. LAM_ERR_INVALID_ARG for bad
 * dimensions, LAM_ERR_CONFIG when the capacity holds no page, LAM_ERR_NO_MEMORY. */
lam_status_t lam_kv_create(const lam_kv_opts_t *o, lam_kv_t **out);
void lam_kv_destroy(lam_kv_t *kv);

const lam_kv_geom_t *lam_kv_geom(const lam_kv_t *kv);
lam_kv_stats_t lam_kv_stats(const lam_kv_t *kv);

/* The sequence (owner, id), or NULL. */
lam_kv_seq_t *lam_kv_seq_find(lam_kv_t *kv, uint32_t owner, uint64_t id);
/* Finds the sequence or creates an empty one. LAM_ERR_KV_FULL when all
 * max_seqs entries are taken. */
lam_status_t lam_kv_seq_get(lam_kv_t *kv, uint32_t owner, uint64_t id, lam_kv_seq_t **out);

/* Makes room for tokens [pos, pos + n) of `layer`: pos must equal the
 * layer's length (LAM_ERR_SEQ_POS), pos + n <= max_ctx (LAM_ERR_CTX_FULL),
 * and missing pages are taken from the free stack (LAM_ERR_KV_FULL if there
 * are not enough: then none are taken). Any error poisons the sequence; a
 * poisoned sequence returns its error. LAM_ERR_INVALID_ARG (layer out of
 * range, n < 1) is the caller's bug and poisons nothing. */
lam_status_t lam_kv_reserve(lam_kv_t *kv, lam_kv_seq_t *s, int layer, int pos, int n);

/* Writes rows of tokens [pos, pos + n) of `layer`, reserved before. k and v
 * are [n][n_kv_heads][head_dim] of src_dtype, converted to the cache dtype. */
void lam_kv_write(lam_kv_t *kv, lam_kv_seq_t *s, int layer, int pos, int n, const void *k, const void *v,
                  int src_dtype);

/* The layer now holds pos + n tokens (after lam_kv_reserve(.., pos, n)). */
void lam_kv_commit(lam_kv_t *kv, lam_kv_seq_t *s, int layer, int pos, int n);

/* reserve + write + commit. */
lam_status_t lam_kv_append(lam_kv_t *kv, lam_kv_seq_t *s, int layer, int pos, int n, const void *k,
                           const void *v, int src_dtype);

/* Reads back row `pos` of `layer` for KV head h into dst (f32): tests and
 * debugging. */
void lam_kv_read_row(const lam_kv_t *kv, const lam_kv_seq_t *s, int layer, int kv_head, int pos, float *k_out,
                     float *v_out);

/* Gives the sequence's pages back and frees its entry; s is invalid after. */
void lam_kv_release(lam_kv_t *kv, lam_kv_seq_t *s);
/* Releases (owner, id); LAM_ERR_SEQ_UNKNOWN if there is none. */
lam_status_t lam_kv_release_id(lam_kv_t *kv, uint32_t owner, uint64_t id);
/* Releases every sequence of owner (a closed connection); returns how many. */
int lam_kv_release_owner(lam_kv_t *kv, uint32_t owner);

/* Accessors for building kernel arguments. */
uint8_t *const *lam_kv_seq_pages(const lam_kv_seq_t *s);
int lam_kv_seq_len(const lam_kv_seq_t *s, int layer);
lam_status_t lam_kv_seq_poison(const lam_kv_seq_t *s);
uint64_t lam_kv_seq_id(const lam_kv_seq_t *s);
int lam_kv_seq_pages_held(const lam_kv_seq_t *s);

#endif
