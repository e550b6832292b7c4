/* Configuration search: enumerate homogeneous, offload and split layouts over
 * the catalog's devices (power-of-two counts up to max_devices per role),
 * evaluate each, and sort by tokens/s per USD/h with SLO-meeting ones first. */
#include "tools/estimate/estimate.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct item {
    lam_est_config_t cfg;
    lam_est_result_t res;
} item_t;

typedef struct list {
    item_t *v;
    int n, cap;
} list_t;

static bool allowed(const lam_est_catalog_t *c, int d, const char *devices)
{
    if (!devices || !*devices)
        return true;
    const char *id = c->dev[d].id;
    size_t n = strlen(id);
    for (const char *p = devices; *p;) {
        const char *q = strchr(p, ',');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == n && !strncasecmp(p, id, n))
            return true;
        if (!q)
            break;
        p = q + 1;
    }
    return false;
}

static lam_status_t push(list_t *l, const lam_est_model_t *m, const lam_est_catalog_t *c,
                         const lam_est_workload_t *w, lam_est_mode_t mode, int a, int na, int b,
                         int nb)
{
    if (l->n == l->cap) {
        int ncap = l->cap ? l->cap * 2 : 64;
        item_t *nv = realloc(l->v, (size_t)ncap * sizeof *nv);
        if (!nv)
            return LAM_ERR_NO_MEMORY;
        l->v = nv;
        l->cap = ncap;
    }
    item_t *it = &l->v[l->n++];
    memset(&it->cfg, 0, sizeof it->cfg);
    it->cfg = (lam_est_config_t){.mode = mode, .dev_a = a, .n_a = na, .dev_b = b, .n_b = nb};
    lam_est_config_label(c, &it->cfg);
    lam_est_evaluate(m, c, w, &it->cfg, &it->res, NULL, 0);
    return LAM_OK;
}

static int cmp_items(const void *pa, const void *pb)
{
    const lam_est_result_t *a = &((const item_t *)pa)->res, *b = &((const item_t *)pb)->res;
    int ka = a->feasible + (a->feasible && a->slo_ok), kb = b->feasible + (b->feasible && b->slo_ok);
    if (ka != kb)
        return kb - ka;
    if (a->tok_s_per_usd_h != b->tok_s_per_usd_h)
        return a->tok_s_per_usd_h < b->tok_s_per_usd_h ? 1 : -1;
    return strcmp(((const item_t *)pa)->cfg.label, ((const item_t *)pb)->cfg.label);
}

lam_status_t lam_est_search(const lam_est_model_t *m, const lam_est_catalog_t *c,
                            const lam_est_workload_t *w, const lam_est_search_opts_t *o,
                            lam_est_config_t **cfgs, lam_est_result_t **res, int *n)
{
    int maxd = o->max_devices > 0 ? o->max_devices : 8;
    list_t l = {0};
    lam_status_t st = LAM_OK;
    for (int a = 0; a < c->n_dev && st == LAM_OK; a++) {
        if (!allowed(c, a, o->devices) || c->dev[a].kind != LAM_EST_GPU)
            continue; /* compute and prefill roles need a GPU */
        for (int na = 1; na <= maxd && st == LAM_OK; na *= 2) {
            if (o->homo)
                st = push(&l, m, c, w, LAM_EST_HOMO, a, na, 0, 0);
            for (int b = 0; b < c->n_dev && st == LAM_OK; b++) {
                if (!allowed(c, b, o->devices))
                    continue;
                for (int nb = 1; nb <= maxd && st == LAM_OK; nb *= 2) {
                    if (o->offload && m->n_kv_heads % nb == 0)
                        st = push(&l, m, c, w, LAM_EST_OFFLOAD, a, na, b, nb);
                    if (st == LAM_OK && o->split && c->dev[b].kind == LAM_EST_GPU)
                        st = push(&l, m, c, w, LAM_EST_SPLIT, a, na, b, nb);
                }
            }
        }
    }
    if (st != LAM_OK) {
        free(l.v);
        return st;
    }
    if (l.n > 1)
        qsort(l.v, (size_t)l.n, sizeof *l.v, cmp_items);
    lam_est_config_t *oc = malloc((size_t)(l.n ? l.n : 1) * sizeof *oc);
    lam_est_result_t *orr = malloc((size_t)(l.n ? l.n : 1) * sizeof *orr);
    if (!oc || !orr) {
        free(oc);
        free(orr);
        free(l.v);
        return LAM_ERR_NO_MEMORY;
    }
    for (int i = 0; i < l.n; i++) {
        oc[i] = l.v[i].cfg;
        orr[i] = l.v[i].res;
    }
    free(l.v);
    *cfgs = oc;
    *res = orr;
    *n = l.n;
    return LAM_OK;
}
