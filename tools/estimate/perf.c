/* The performance models: homogeneous tensor-parallel serving, attention
 * offload (N compute + M attention devices, ping-pong micro-batches) and the
 * prefill/decode split. Every intermediate is recorded as a term (name,
 * value, unit, the formula with numbers filled in) for --explain.
 *
 * Shared shape of all three: a decode step time t_step(B) for batch B at the
 * workload's mean live context L; a capacity limit on B from KV memory; the
 * largest B that meets the SLOs; throughput, cost and energy from there.
 */
#include "tools/estimate/estimate.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

typedef struct est {
    const lam_est_model_t *m;
    const lam_est_catalog_t *c;
    const lam_est_workload_t *w;
    const lam_est_config_t *cfg;
    lam_est_result_t *r;
    bool rec; /* record terms (only for the final evaluation) */
    const lam_est_device_t *da, *db;
    double P, P2, O, O2, L;    /* E[prompt], E[prompt^2], E[output], E[output^2], live context */
    double kv_tok;             /* KV bytes per token, whole model */
    double w_total, w_gemm;    /* weight bytes: all, and read per forward pass */
    double f_dense;            /* dense FLOPs per token */
    double x_bytes;            /* offload exchange bytes per sequence per layer */
} est_t;

static void term(est_t *e, const char *name, double v, const char *unit, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void term(est_t *e, const char *name, double v, const char *unit, const char *fmt, ...)
{
    if (!e->rec || !e->r->terms || e->r->n_terms >= e->r->cap_terms)
        return;
    lam_est_term_t *t = &e->r->terms[e->r->n_terms++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->value = v;
    snprintf(t->unit, sizeof t->unit, "%s", unit);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->formula, sizeof t->formula, fmt, ap);
    va_end(ap);
}

const lam_est_term_t *lam_est_result_term(const lam_est_result_t *r, const char *name)
{
    for (int i = 0; i < r->n_terms; i++)
        if (!strcmp(r->terms[i].name, name))
            return &r->terms[i];
    return NULL;
}

static void infeasible(est_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void infeasible(est_t *e, const char *fmt, ...)
{
    e->r->feasible = false;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->r->why, sizeof e->r->why, fmt, ap);
    va_end(ap);
}

double lam_est_allreduce_time(double bytes, int n, double bw, double lat)
{
    if (n <= 1)
        return 0;
    return 2.0 * (n - 1) / n * bytes / bw + 2.0 * (n - 1) * lat;
}

static double fig(const lam_est_device_t *d, lam_est_field_t f)
{
    return d->f[f].v;
}

/* ---- building blocks ---- */

/* Tensor parallelism over n devices shards heads; KV heads are replicated
 * when n exceeds them, so each device holds max(1/n, 1/kv_heads) of the KV. */
static bool tp_check(est_t *e, const lam_est_device_t *d, int n, const char *role)
{
    const lam_est_model_t *m = e->m;
    if (n > 1 && m->n_heads % n) {
        infeasible(e, "%s: tensor parallelism %d does not divide the %lld query heads", role, n,
                   (long long)m->n_heads);
        return false;
    }
    if (n > 1 && m->n_kv_heads % n && n % m->n_kv_heads) {
        infeasible(e, "%s: tensor parallelism %d neither divides nor is a multiple of the %lld "
                   "KV heads", role, n, (long long)m->n_kv_heads);
        return false;
    }
    if (n > 1 && !d->f[LAM_EST_F_LINK_BW].set) {
        infeasible(e, "%s: device '%s' has no link_bw in the catalog; tensor parallelism needs "
                   "it", role, d->id);
        return false;
    }
    if (e->w_total / n > fig(d, LAM_EST_F_MEM_CAP) * e->c->fac[LAM_EST_MEM_UTIL].v) {
        infeasible(e, "%s: weights %.1f GB / %d device(s) = %.1f GB do not fit in %s's usable "
                   "%.1f GB (%.0f GB x mem_util %.2f)", role, e->w_total / 1e9, n,
                   e->w_total / n / 1e9, d->id,
                   fig(d, LAM_EST_F_MEM_CAP) * e->c->fac[LAM_EST_MEM_UTIL].v / 1e9,
                   fig(d, LAM_EST_F_MEM_CAP) / 1e9, e->c->fac[LAM_EST_MEM_UTIL].v);
        return false;
    }
    return true;
}

static double kv_shard(const lam_est_model_t *m, int n)
{
    double a = 1.0 / n, b = 1.0 / (double)m->n_kv_heads;
    return a > b ? a : b;
}

/* Classifies a step into compute / memory / network time. */
typedef struct parts {
    double compute, memory, network;
} parts_t;

static const char *dominant(const parts_t *p)
{
    if (p->network >= p->compute && p->network >= p->memory)
        return "network";
    return p->compute >= p->memory ? "compute" : "memory";
}

static double roof(double tc, double tm, parts_t *p)
{
    if (tc >= tm)
        p->compute += tc;
    else
        p->memory += tm;
    return tc >= tm ? tc : tm;
}

/* Tensor-parallel decode step on n x d for batch B (homogeneous, split decode). */
static double tp_step(est_t *e, const lam_est_device_t *d, int n, double B, parts_t *p)
{
    const lam_est_model_t *m = e->m;
    double ec = lam_est_eff(e->c, d, LAM_EST_EFF_COMPUTE), em = lam_est_eff(e->c, d, LAM_EST_EFF_MEM);
    double ea = lam_est_eff(e->c, d, LAM_EST_EFF_ATTN), en = lam_est_eff(e->c, d, LAM_EST_EFF_NET);
    double F = fig(d, LAM_EST_F_FLOPS), bw = fig(d, LAM_EST_F_MEM_BW);
    double gc = B * e->f_dense / (n * F * ec);
    double gm = e->w_gemm / (n * bw * em);
    double kv = B * e->L * e->kv_tok * kv_shard(m, n) / (bw * ea);
    double af = lam_est_attn_flops_per_token(m, e->L);
    double ac = B * af / (n * F * ec);
    double arb = B * m->d_model * e->w->act_bytes;
    double ar = n > 1 ? 2.0 * m->n_layers * lam_est_allreduce_time(arb, n,
                            fig(d, LAM_EST_F_LINK_BW) * en, d->f[LAM_EST_F_LINK_LAT].set ?
                            fig(d, LAM_EST_F_LINK_LAT) : 0) : 0;
    parts_t q = {0, 0, 0};
    double t = roof(gc, gm, &q) + roof(ac, kv, &q) + ar;
    q.network += ar;
    if (p)
        *p = q;
    term(e, "gemm_compute_time", gc, "s", "B*F_dense/(n*flops*eff_compute) = %g*%.4g/(%d*%.4g*%.2f)",
         B, e->f_dense, n, F, ec);
    term(e, "weight_read_time", gm, "s", "W_gemm/(n*mem_bw*eff_mem) = %.4g/(%d*%.4g*%.2f)",
         e->w_gemm, n, bw, em);
    term(e, "kv_read_time", kv, "s", "B*L*kv_per_token*shard/(mem_bw*eff_attn) = "
         "%g*%.1f*%.0f*%.4g/(%.4g*%.2f)", B, e->L, e->kv_tok, kv_shard(m, n), bw, ea);
    term(e, "attn_flops_per_token", af, "FLOP", "4*layers*heads*head_dim*L = 4*%lld*%lld*%lld*%.1f",
         (long long)m->n_layers, (long long)m->n_heads, (long long)m->head_dim, e->L);
    term(e, "attn_compute_time", ac, "s", "B*attn_flops/(n*flops*eff_compute) = %g*%.4g/(%d*%.4g*%.2f)",
         B, af, n, F, ec);
    term(e, "allreduce_time", ar, "s", "2*layers*[2(n-1)/n*B*d*e_act/(link_bw*eff_net) + "
         "2(n-1)*link_lat], n=%d, %.0f B per all-reduce", n, arb);
    term(e, "step_time", t, "s", "max(gemm_compute, weight_read) + max(attn_compute, kv_read) "
         "+ allreduce");
    return t;
}

/* Prefill FLOPs for one prompt: every token through the GEMMs except the LM
 * head (last token only), plus causal attention sum_{i=1..P} 4*h*hd*i per
 * layer = 2*h*hd*P(P+1), taken in expectation over the prompt distribution. */
static double prefill_flops(est_t *e)
{
    const lam_est_model_t *m = e->m;
    double head = 2.0 * m->vocab * m->d_model;
    double attn = 2.0 * m->n_layers * m->n_heads * m->head_dim * (e->P2 + e->P);
    double f = e->P * (e->f_dense - head) + head + attn;
    term(e, "prefill_flops", f, "FLOP", "E[P]*(F_dense-2*vocab*d) + 2*vocab*d + "
         "2*layers*heads*head_dim*(E[P^2]+E[P]) = %.1f*%.4g + %.4g + %.4g", e->P,
         e->f_dense - head, head, attn);
    return f;
}

/* Prefill of one prompt on n x d with tensor parallelism. */
static double tp_prefill(est_t *e, const lam_est_device_t *d, int n)
{
    const lam_est_model_t *m = e->m;
    double ec = lam_est_eff(e->c, d, LAM_EST_EFF_COMPUTE), em = lam_est_eff(e->c, d, LAM_EST_EFF_MEM);
    double en = lam_est_eff(e->c, d, LAM_EST_EFF_NET);
    double F = fig(d, LAM_EST_F_FLOPS);
    double tc = prefill_flops(e) / (n * F * ec);
    double tm = e->w_gemm / (n * fig(d, LAM_EST_F_MEM_BW) * em);
    double ar = n > 1 ? 2.0 * m->n_layers * lam_est_allreduce_time(e->P * m->d_model *
                            e->w->act_bytes, n, fig(d, LAM_EST_F_LINK_BW) * en,
                            d->f[LAM_EST_F_LINK_LAT].set ? fig(d, LAM_EST_F_LINK_LAT) : 0) : 0;
    double t = (tc > tm ? tc : tm) + ar;
    term(e, "prefill_compute_time", tc, "s", "prefill_flops/(n*flops*eff_compute), n=%d", n);
    term(e, "prefill_weight_time", tm, "s", "W_gemm/(n*mem_bw*eff_mem)");
    term(e, "prefill_allreduce_time", ar, "s", "2*layers*allreduce(E[P]*d*e_act)");
    return t;
}

/* Capacity in sequences for `kv_bytes_free` bytes of KV memory. */
static int64_t capacity(est_t *e, double kv_bytes_free, double per_seq)
{
    double b = floor(kv_bytes_free / per_seq);
    return b > 1e9 ? 1000000000 : (int64_t)b;
}

/* M/D/1 queue wait for a deterministic service time s at utilisation rho. */
static double md1_wait(double rho, double s)
{
    return rho >= 1 ? INFINITY : rho * s / (2 * (1 - rho));
}

/* ---- the shared "prefill interleaved with decode" model ---- *
 * One instance alternates prefills (t_p each) with decode steps. Per request:
 * t_p of prefill plus E[O] steps shared by B sequences, so the saturated
 * request rate is R = 1/(t_p + E[O]*t_step/B). Prefill takes f_p = R*t_p of
 * the time, so a decoding sequence sees TPOT = t_step/(1-f_p). */
typedef struct point {
    double t_step, R, tpot, ttft, rho;
    parts_t parts;
} point_t;

typedef double (*step_fn)(est_t *e, double B, parts_t *p);

static double homo_step(est_t *e, double B, parts_t *p)
{
    return tp_step(e, e->da, e->cfg->n_a, B, p);
}

static double split_decode_step(est_t *e, double B, parts_t *p)
{
    return tp_step(e, e->db, e->cfg->n_b, B, p);
}

/* Attention offload, per layer and per micro-batch of Bm sequences:
 *   dense_l = max(Bm*F_dense/layers/(N*flops*eff), W_gemm/layers/(N*bw*eff)) + all-reduce
 *   attn_l  = max(Bm*L*kv_layer/(M*bw_a*eff_attn), Bm*attn_flops_layer/(M*flops_a*eff))
 *   net_l   = rtt + Bm*x_bytes/(min(N*net_c, M*net_a)*eff_net)
 * ping-pong (two micro-batches): layer period = 2*max(dense_l, attn_l + net_l);
 * without: dense_l + attn_l + net_l. Step = layers * period. */
static double offload_step(est_t *e, double B, parts_t *p)
{
    const lam_est_model_t *m = e->m;
    const lam_est_device_t *dc = e->da, *da = e->db;
    int N = e->cfg->n_a, M = e->cfg->n_b;
    double Lyr = (double)m->n_layers;
    int n_mb = e->w->pingpong ? 2 : 1;
    double Bm = ceil(B / n_mb);
    double ecc = lam_est_eff(e->c, dc, LAM_EST_EFF_COMPUTE), emc = lam_est_eff(e->c, dc, LAM_EST_EFF_MEM);
    double enc = lam_est_eff(e->c, dc, LAM_EST_EFF_NET);
    double eca = lam_est_eff(e->c, da, LAM_EST_EFF_COMPUTE), eaa = lam_est_eff(e->c, da, LAM_EST_EFF_ATTN);
    double ena = lam_est_eff(e->c, da, LAM_EST_EFF_NET);
    double gc = Bm * e->f_dense / Lyr / (N * fig(dc, LAM_EST_F_FLOPS) * ecc);
    double gm = e->w_gemm / Lyr / (N * fig(dc, LAM_EST_F_MEM_BW) * emc);
    double ar = N > 1 ? 2.0 * lam_est_allreduce_time(Bm * m->d_model * e->w->act_bytes, N,
                            fig(dc, LAM_EST_F_LINK_BW) * enc, dc->f[LAM_EST_F_LINK_LAT].set ?
                            fig(dc, LAM_EST_F_LINK_LAT) : 0) : 0;
    double kv = Bm * e->L * e->kv_tok / Lyr / (M * fig(da, LAM_EST_F_MEM_BW) * eaa);
    double ac = Bm * lam_est_attn_flops_per_token(m, e->L) / Lyr / (M * fig(da, LAM_EST_F_FLOPS) * eca);
    double netc = N * fig(dc, LAM_EST_F_NET_BW) * enc, neta = M * fig(da, LAM_EST_F_NET_BW) * ena;
    double net_bw = netc < neta ? netc : neta;
    double rtt = e->c->fac[LAM_EST_RTT].set ? e->c->fac[LAM_EST_RTT].v :
                 fig(dc, LAM_EST_F_NET_LAT) + fig(da, LAM_EST_F_NET_LAT);
    double xfer = Bm * e->x_bytes / net_bw;
    parts_t q = {0, 0, 0};
    double dense = roof(gc, gm, &q) + ar;
    parts_t qa = {0, 0, 0};
    double att = roof(ac, kv, &qa) + rtt + xfer;
    qa.network += rtt + xfer;
    q.network += ar;
    double period;
    parts_t sum;
    if (e->w->pingpong) {
        period = n_mb * (dense > att ? dense : att);
        sum = dense > att ? q : qa;
    } else {
        period = dense + att;
        sum = (parts_t){q.compute + qa.compute, q.memory + qa.memory, q.network + qa.network};
    }
    double t = Lyr * period;
    if (p)
        *p = sum;
    term(e, "microbatch", Bm, "seq", "%s: ceil(B/%d) = ceil(%g/%d)",
         e->w->pingpong ? "ping-pong, two micro-batches" : "no ping-pong", n_mb, B, n_mb);
    term(e, "layer_gemm_compute", gc, "s", "Bm*F_dense/layers/(N*flops*eff) = %g*%.4g/%.0f/(%d*%.4g*%.2f)",
         Bm, e->f_dense, Lyr, N, fig(dc, LAM_EST_F_FLOPS), ecc);
    term(e, "layer_weight_read", gm, "s", "W_gemm/layers/(N*mem_bw*eff_mem) = %.4g/%.0f/(%d*%.4g*%.2f)",
         e->w_gemm, Lyr, N, fig(dc, LAM_EST_F_MEM_BW), emc);
    term(e, "layer_allreduce", ar, "s", "2 ring all-reduces of Bm*d*e_act over N=%d", N);
    term(e, "layer_dense_time", dense, "s", "max(gemm_compute, weight_read) + allreduce");
    term(e, "layer_kv_read", kv, "s", "Bm*L*kv_per_token/layers/(M*mem_bw*eff_attn) = "
         "%g*%.1f*%.0f/%.0f/(%d*%.4g*%.2f)", Bm, e->L, e->kv_tok, Lyr, M,
         fig(da, LAM_EST_F_MEM_BW), eaa);
    term(e, "layer_attn_compute", ac, "s", "Bm*attn_flops/layers/(M*flops*eff)");
    term(e, "net_bandwidth", net_bw, "B/s", "min(N*net_bw_c, M*net_bw_a)*eff_net = min(%.4g, %.4g)",
         netc, neta);
    term(e, "layer_round_trip", rtt, "s", "%s", e->c->fac[LAM_EST_RTT].set ? "rtt factor" :
         "net_lat(compute) + net_lat(attention)");
    term(e, "layer_transfer", xfer, "s", "Bm*x_bytes/net_bandwidth = %g*%.0f/%.4g", Bm,
         e->x_bytes, net_bw);
    term(e, "layer_attn_side", att, "s", "max(attn_compute, kv_read) + round_trip + transfer");
    term(e, "layer_period", period, "s", "%s", e->w->pingpong ?
         "2*max(dense, attn_side): the two micro-batches overlap" : "dense + attn_side");
    term(e, "step_time", t, "s", "layers*period = %.0f*%.4g", Lyr, period);
    return t;
}

static void eval_point(est_t *e, step_fn step, double B, double t_p, double lambda_i,
                       point_t *pt)
{
    pt->t_step = step(e, B, &pt->parts);
    pt->R = 1.0 / (t_p + e->O * pt->t_step / B);
    double R = lambda_i > 0 ? lambda_i : pt->R;
    double fp = R * t_p;
    pt->rho = fp;
    pt->tpot = fp < 1 ? pt->t_step / (1 - fp) : INFINITY;
    pt->ttft = md1_wait(fp, t_p) + pt->t_step / 2 + t_p;
}

static bool meets_slo(const lam_est_workload_t *w, double tpot, double ttft)
{
    return (w->tpot_slo <= 0 || tpot <= w->tpot_slo) && (w->ttft_slo <= 0 || ttft <= w->ttft_slo);
}

/* Largest B in [1, cap] that meets the SLOs (tpot and ttft grow with B). */
static int64_t largest_ok(est_t *e, step_fn step, int64_t cap, double t_p)
{
    int64_t lo = 1, hi = cap;
    point_t pt;
    eval_point(e, step, 1, t_p, 0, &pt);
    if (!meets_slo(e->w, pt.tpot, pt.ttft))
        return 0;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        eval_point(e, step, (double)mid, t_p, 0, &pt);
        if (meets_slo(e->w, pt.tpot, pt.ttft))
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Smallest B whose saturated rate keeps up with lambda_i. */
static int64_t smallest_for_rate(est_t *e, step_fn step, int64_t bmax, double t_p,
                                 double lambda_i)
{
    int64_t lo = 1, hi = bmax;
    point_t pt;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        eval_point(e, step, (double)mid, t_p, 0, &pt);
        if (pt.R >= lambda_i)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void finish_costs(est_t *e, double power, double cost)
{
    lam_est_result_t *r = e->r;
    r->cost_h = cost;
    r->power_w = power;
    r->usd_per_mtok = r->tok_s > 0 ? cost / (r->tok_s * 3600) * 1e6 : INFINITY;
    r->tok_s_per_usd_h = cost > 0 ? r->tok_s / cost : 0;
    r->j_per_tok = r->tok_s > 0 ? power / r->tok_s : INFINITY;
    term(e, "cost_per_hour", cost, "USD/h", "sum of device prices x instances");
    term(e, "usd_per_mtok", r->usd_per_mtok, "USD", "cost_per_hour/(tok_s*3600)*1e6");
    term(e, "tok_s_per_usd_h", r->tok_s_per_usd_h, "tok/s/$h", "tok_s/cost_per_hour");
    term(e, "power", power, "W", "sum of device power (datasheet TDP: an upper bound)");
    term(e, "energy_per_token", r->j_per_tok, "J", "power/tok_s");
}

/* Homogeneous and offload share this: one kind of instance, prefill interleaved. */
static void single_pool(est_t *e, step_fn step, int64_t cap, double t_p, double inst_cost,
                        double inst_power)
{
    lam_est_result_t *r = e->r;
    const lam_est_workload_t *w = e->w;
    int64_t bmax = cap;
    r->batch_limit = "capacity";
    if (w->max_batch > 0 && w->max_batch < bmax) {
        bmax = w->max_batch;
        r->batch_limit = "max-batch";
    }
    int64_t b = largest_ok(e, step, bmax, t_p);
    r->slo_ok = b > 0;
    if (b == 0)
        b = 1; /* report the smallest batch, marked as missing the SLO */
    if (b < bmax)
        r->batch_limit = "slo";
    point_t pt;
    eval_point(e, step, (double)b, t_p, 0, &pt);
    int64_t inst = 1;
    double lambda_i = 0;
    if (w->rate > 0) {
        inst = (int64_t)ceil(w->rate / pt.R);
        lambda_i = w->rate / inst;
        b = smallest_for_rate(e, step, b, t_p, lambda_i);
        r->batch_limit = "rate";
    }
    e->rec = true;
    eval_point(e, step, (double)b, t_p, lambda_i, &pt);
    r->batch = b;
    r->instances = inst;
    r->t_step = pt.t_step;
    r->tpot = pt.tpot;
    r->ttft = pt.ttft;
    r->tok_s = w->rate > 0 ? w->rate * e->O : pt.R * e->O;
    r->bound = !strcmp(r->batch_limit, "capacity") ? "capacity" : dominant(&pt.parts);
    if (w->rate > 0)
        r->slo_ok = meets_slo(w, pt.tpot, pt.ttft);
    term(e, "batch", (double)b, "seq", "largest B <= %lld (%s) meeting the SLOs%s", (long long)bmax,
         bmax == cap ? "KV capacity" : "max-batch", w->rate > 0 ? "; then smallest B keeping up "
         "with the per-instance rate" : "");
    term(e, "request_rate", pt.R, "req/s", "1/(t_prefill + E[O]*t_step/B) = 1/(%.4g + %.1f*%.4g/%lld)",
         t_p, e->O, pt.t_step, (long long)b);
    term(e, "prefill_share", pt.rho, "", "rate*t_prefill: time the instance spends on prefill");
    term(e, "tpot", pt.tpot, "s", "t_step/(1 - prefill_share) = %.4g/(1 - %.3f)", pt.t_step, pt.rho);
    term(e, "ttft", pt.ttft, "s", "M/D/1 wait rho*t_p/(2(1-rho)) + t_step/2 + t_prefill");
    term(e, "instances", (double)inst, "", "%s", w->rate > 0 ? "ceil(rate/request_rate)" :
         "saturated: one instance");
    term(e, "tok_s", r->tok_s, "tok/s", "%s", w->rate > 0 ? "rate*E[O]" : "request_rate*E[O]");
    finish_costs(e, inst * inst_power, inst * inst_cost);
}

static void eval_homo(est_t *e)
{
    const lam_est_device_t *d = e->da;
    int n = e->cfg->n_a;
    if (!tp_check(e, d, n, "homogeneous"))
        return;
    double usable = n * fig(d, LAM_EST_F_MEM_CAP) * e->c->fac[LAM_EST_MEM_UTIL].v;
    double free_kv = usable - e->w_total;
    /* replicated KV heads (n > kv heads) cost capacity */
    double per_seq = e->L * e->kv_tok * kv_shard(e->m, n) * n;
    int64_t cap = capacity(e, free_kv, per_seq);
    e->rec = true;
    term(e, "kv_budget", free_kv, "B", "n*mem_cap*mem_util - weights = %d*%.4g*%.2f - %.4g", n,
         fig(d, LAM_EST_F_MEM_CAP), e->c->fac[LAM_EST_MEM_UTIL].v, e->w_total);
    term(e, "kv_per_sequence", per_seq, "B", "L*kv_per_token*max(1, n/kv_heads) = %.1f*%.0f*%.4g",
         e->L, e->kv_tok, kv_shard(e->m, n) * n);
    term(e, "max_batch", (double)cap, "seq", "floor(kv_budget/kv_per_sequence)");
    double t_p = tp_prefill(e, d, n);
    term(e, "t_prefill", t_p, "s", "max(prefill_compute, prefill_weight) + prefill_allreduce");
    e->rec = false;
    e->r->max_batch = cap;
    e->r->t_prefill = t_p;
    if (cap < 1) {
        infeasible(e, "KV capacity: %.1f GB left after weights holds no sequence of %.0f tokens "
                   "(%.2f GB each)", free_kv / 1e9, e->L, per_seq / 1e9);
        return;
    }
    single_pool(e, homo_step, cap, t_p, n * fig(d, LAM_EST_F_PRICE), n * fig(d, LAM_EST_F_POWER));
}

static void eval_offload(est_t *e)
{
    const lam_est_device_t *dc = e->da, *da = e->db;
    int N = e->cfg->n_a, M = e->cfg->n_b;
    const lam_est_model_t *m = e->m;
    if (!tp_check(e, dc, N, "compute"))
        return;
    if (m->n_kv_heads % M) {
        infeasible(e, "attention: %d devices do not divide the %lld KV heads (head-level "
                   "sharding gives each attention device kv_heads/M whole heads)", M,
                   (long long)m->n_kv_heads);
        return;
    }
    double usable = M * fig(da, LAM_EST_F_MEM_CAP) * e->c->fac[LAM_EST_MEM_UTIL].v;
    double per_seq = e->L * e->kv_tok;
    int64_t cap = capacity(e, usable, per_seq);
    double ecn = lam_est_eff(e->c, dc, LAM_EST_EFF_NET), ean = lam_est_eff(e->c, da, LAM_EST_EFF_NET);
    double netc = N * fig(dc, LAM_EST_F_NET_BW) * ecn, neta = M * fig(da, LAM_EST_F_NET_BW) * ean;
    double net_bw = netc < neta ? netc : neta;
    e->rec = true;
    term(e, "exchange_bytes", e->x_bytes, "B", "(2*heads + 2*kv_heads)*head_dim*e_act = "
         "(2*%lld + 2*%lld)*%lld*%g = (2+2/G)*e*d per sequence per layer",
         (long long)m->n_heads, (long long)m->n_kv_heads, (long long)m->head_dim,
         e->w->act_bytes);
    term(e, "kv_budget", usable, "B", "M*mem_cap*mem_util = %d*%.4g*%.2f (attention devices "
         "hold no weights)", M, fig(da, LAM_EST_F_MEM_CAP), e->c->fac[LAM_EST_MEM_UTIL].v);
    term(e, "kv_per_sequence", per_seq, "B", "L*kv_per_token = %.1f*%.0f", e->L, e->kv_tok);
    term(e, "max_batch", (double)cap, "seq", "floor(kv_budget/kv_per_sequence)");
    double t_c = tp_prefill(e, dc, N);
    double t_kv = e->P * e->kv_tok / net_bw;
    double t_p = (t_c > t_kv ? t_c : t_kv) + t_kv / m->n_layers;
    term(e, "prefill_kv_stream", t_kv, "s", "E[P]*kv_per_token/net_bandwidth = %.1f*%.0f/%.4g",
         e->P, e->kv_tok, net_bw);
    term(e, "t_prefill", t_p, "s", "max(prefill on compute, KV stream) + last layer's stream "
         "(K/V sent to attention devices layer by layer)");
    e->rec = false;
    e->r->max_batch = cap;
    e->r->t_prefill = t_p;
    if (cap < 1) {
        infeasible(e, "KV capacity: %d x %s hold no sequence of %.0f tokens (%.2f GB each)", M,
                   da->id, e->L, per_seq / 1e9);
        return;
    }
    single_pool(e, offload_step, cap, t_p,
                N * fig(dc, LAM_EST_F_PRICE) + M * fig(da, LAM_EST_F_PRICE),
                N * fig(dc, LAM_EST_F_POWER) + M * fig(da, LAM_EST_F_POWER));
}

/* ---- prefill/decode split ---- *
 * X prefill instances (n_a x dev_a) and Y decode instances (n_b x dev_b).
 * A prefill instance serves one prompt at a time (prefill is compute-bound)
 * and streams each layer's K/V to the decode instance as soon as the layer is
 * done, so only max(0, t_kv - t_p) plus the last layer's share and one round
 * trip add to TTFT. Decode instances never stall for prefills. */
static double split_decode_rate(est_t *e, double B)
{
    return B / (e->O * split_decode_step(e, B, NULL));
}

static int64_t split_smallest_for_rate(est_t *e, int64_t bmax, double lambda_i)
{
    int64_t lo = 1, hi = bmax;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (split_decode_rate(e, (double)mid) >= lambda_i)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void eval_split(est_t *e)
{
    const lam_est_model_t *m = e->m;
    const lam_est_workload_t *w = e->w;
    lam_est_result_t *r = e->r;
    const lam_est_device_t *dp = e->da, *dd = e->db;
    int np = e->cfg->n_a, nd = e->cfg->n_b;
    if (!tp_check(e, dp, np, "prefill") || !tp_check(e, dd, nd, "decode"))
        return;
    double free_kv = nd * fig(dd, LAM_EST_F_MEM_CAP) * e->c->fac[LAM_EST_MEM_UTIL].v - e->w_total;
    double per_seq = e->L * e->kv_tok * kv_shard(m, nd) * nd;
    int64_t cap = capacity(e, free_kv, per_seq);
    double bw_p = np * fig(dp, LAM_EST_F_NET_BW) * lam_est_eff(e->c, dp, LAM_EST_EFF_NET);
    double bw_d = nd * fig(dd, LAM_EST_F_NET_BW) * lam_est_eff(e->c, dd, LAM_EST_EFF_NET);
    double bw = bw_p < bw_d ? bw_p : bw_d;
    double rtt = e->c->fac[LAM_EST_RTT].set ? e->c->fac[LAM_EST_RTT].v :
                 fig(dp, LAM_EST_F_NET_LAT) + fig(dd, LAM_EST_F_NET_LAT);
    e->rec = true;
    term(e, "kv_budget", free_kv, "B", "decode: n*mem_cap*mem_util - weights");
    term(e, "kv_per_sequence", per_seq, "B", "L*kv_per_token*max(1, n/kv_heads)");
    term(e, "max_batch", (double)cap, "seq", "floor(kv_budget/kv_per_sequence), per decode instance");
    double t_p = tp_prefill(e, dp, np);
    double t_kv = e->P * e->kv_tok / bw;
    double tail = (t_kv > t_p ? t_kv - t_p : 0) + t_kv / m->n_layers + rtt;
    double svc = t_p > t_kv ? t_p : t_kv;
    double Rp = 1.0 / svc;
    term(e, "t_prefill", t_p, "s", "max(prefill_compute, prefill_weight) + prefill_allreduce");
    term(e, "kv_handoff", t_kv, "s", "E[P]*kv_per_token/min(net_p, net_d) = %.1f*%.0f/%.4g",
         e->P, e->kv_tok, bw);
    term(e, "handoff_tail", tail, "s", "max(0, handoff - t_prefill) + handoff/layers + rtt "
         "(layer-by-layer overlap hides the rest)");
    term(e, "prefill_rate", Rp, "req/s", "1/max(t_prefill, handoff) per prefill instance");
    e->rec = false;
    r->max_batch = cap;
    r->t_prefill = t_p;
    if (cap < 1) {
        infeasible(e, "decode KV capacity: %.1f GB left after weights holds no sequence of %.0f "
                   "tokens", free_kv / 1e9, e->L);
        return;
    }
    int64_t bmax = cap;
    r->batch_limit = "capacity";
    if (w->max_batch > 0 && w->max_batch < bmax) {
        bmax = w->max_batch;
        r->batch_limit = "max-batch";
    }
    /* TPOT grows with B; TTFT does not depend on the decode batch */
    int64_t lo = 1, hi = bmax;
    bool tpot_ok = w->tpot_slo <= 0 || split_decode_step(e, 1, NULL) <= w->tpot_slo;
    while (tpot_ok && lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (w->tpot_slo <= 0 || split_decode_step(e, (double)mid, NULL) <= w->tpot_slo)
            lo = mid;
        else
            hi = mid - 1;
    }
    int64_t b = lo;
    if (b < bmax)
        r->batch_limit = "slo";
    double Rd = split_decode_rate(e, (double)b);
    double pc = np * fig(dp, LAM_EST_F_PRICE), dc = nd * fig(dd, LAM_EST_F_PRICE);
    double pp = np * fig(dp, LAM_EST_F_POWER), dpw = nd * fig(dd, LAM_EST_F_POWER);
    int64_t X = 1, Y = 1;
    double lambda;
    /* keep prefill queues finite: at most 90% busy, less if the TTFT SLO needs it */
    double rho_cap = 0.9;
    if (w->ttft_slo > 0) {
        double s = w->ttft_slo - t_p - tail;
        double rc = s > 0 ? 2 * s / (svc + 2 * s) : 0;
        rho_cap = rc < rho_cap ? rc : rho_cap;
    }
    if (w->rate > 0) {
        lambda = w->rate;
        Y = (int64_t)ceil(lambda / Rd);
        X = (int64_t)floor(lambda / Rp) + 1;
        while (X < 100000 && lambda / (X * Rp) > rho_cap)
            X++;
        r->batch_limit = "rate";
    } else {
        double best = -1;
        lambda = 0;
        for (int x = 1; x <= 16; x++) {
            for (int y = 1; y <= 32; y++) {
                double lp = x * Rp * (rho_cap > 0 ? rho_cap : 0.9), ld = y * Rd;
                double l = lp < ld ? lp : ld;
                double v = l / (x * pc + y * dc);
                if (v > best * (1 + 1e-9)) {
                    best = v;
                    X = x;
                    Y = y;
                    lambda = l;
                }
            }
        }
    }
    if (w->rate > 0 || lambda < Y * Rd) {
        int64_t b2 = split_smallest_for_rate(e, b, lambda / Y);
        if (b2 < b)
            r->batch_limit = "rate"; /* decode is fed only as fast as requests arrive */
        b = b2;
    }
    double rho = lambda / (X * Rp);
    e->rec = true;
    parts_t parts;
    double t_step = split_decode_step(e, (double)b, &parts);
    e->rec = false;
    r->batch = b;
    r->instances = X;
    r->instances_b = Y;
    r->t_step = t_step;
    r->tpot = t_step;
    r->ttft = md1_wait(rho, svc) + t_p + tail;
    r->tok_s = lambda * e->O;
    r->slo_ok = meets_slo(w, r->tpot, r->ttft);
    r->bound = !strcmp(r->batch_limit, "capacity") ? "capacity" : dominant(&parts);
    e->rec = true;
    term(e, "batch", (double)b, "seq", "per decode instance: largest B meeting TPOT, then "
         "smallest B keeping up with rate/Y");
    term(e, "decode_rate", Rd, "req/s", "B*/(E[O]*t_step(B*)) per decode instance at the largest batch");
    term(e, "prefill_instances", (double)X, "", "%s", w->rate > 0 ?
         "smallest X with rate/(X*prefill_rate) <= rho_cap" :
         "best tokens/s per $/h over X<=16, Y<=32");
    term(e, "decode_instances", (double)Y, "", "%s", w->rate > 0 ? "ceil(rate/decode_rate)" :
         "best tokens/s per $/h over X<=16, Y<=32");
    term(e, "request_rate", lambda, "req/s", "%s", w->rate > 0 ? "given" :
         "min(X*prefill_rate*rho_cap, Y*decode_rate)");
    term(e, "prefill_utilisation", rho, "", "request_rate/(X*prefill_rate), cap %.2f", rho_cap);
    term(e, "tpot", r->tpot, "s", "decode step (no prefill stalls)");
    term(e, "ttft", r->ttft, "s", "M/D/1 wait + t_prefill + handoff_tail");
    term(e, "tok_s", r->tok_s, "tok/s", "request_rate*E[O]");
    finish_costs(e, X * pp + Y * dpw, X * pc + Y * dc);
}

void lam_est_evaluate(const lam_est_model_t *m, const lam_est_catalog_t *c,
                      const lam_est_workload_t *w, const lam_est_config_t *cfg,
                      lam_est_result_t *out, lam_est_term_t *terms, int cap)
{
    memset(out, 0, sizeof *out);
    out->terms = terms;
    out->cap_terms = terms ? cap : 0;
    out->feasible = true;
    out->bound = "-";
    out->batch_limit = "-";
    est_t e = {.m = m, .c = c, .w = w, .cfg = cfg, .r = out, .rec = true};
    e.da = &c->dev[cfg->dev_a];
    e.db = cfg->mode != LAM_EST_HOMO ? &c->dev[cfg->dev_b] : NULL;
    e.P = lam_est_dist_mean(&w->prompt);
    e.P2 = lam_est_dist_moment2(&w->prompt);
    e.O = lam_est_dist_mean(&w->output);
    e.O2 = lam_est_dist_moment2(&w->output);
    e.L = lam_est_live_context(w);
    e.kv_tok = lam_est_kv_bytes_per_token(m, w->kv_bytes);
    e.w_total = lam_est_model_params(m) * w->w_bytes;
    e.w_gemm = lam_est_model_gemm_params(m) * w->w_bytes;
    e.f_dense = lam_est_dense_flops_per_token(m);
    e.x_bytes = lam_est_exchange_bytes(m, w->act_bytes);
    term(&e, "params", lam_est_model_params(m), "", "layers*(attn+ffn) + norms + embedding "
         "+ LM head%s", m->tied_embeddings ? " (tied)" : "");
    term(&e, "weight_bytes", e.w_total, "B", "params*e_w = %.4g*%g", lam_est_model_params(m),
         w->w_bytes);
    term(&e, "kv_per_token", e.kv_tok, "B", "2*layers*kv_heads*head_dim*e_kv = 2*%lld*%lld*%lld*%g",
         (long long)m->n_layers, (long long)m->n_kv_heads, (long long)m->head_dim, w->kv_bytes);
    term(&e, "dense_flops_per_token", e.f_dense, "FLOP", "2*gemm_params = 2*%.4g",
         lam_est_model_gemm_params(m));
    term(&e, "live_context", e.L, "tok", "E[P] + (E[O^2]+E[O])/(2E[O]) = %.1f + (%.1f+%.1f)/(2*%.1f)",
         e.P, e.O2, e.O, e.O);
    e.rec = false;
    switch (cfg->mode) {
    case LAM_EST_HOMO: eval_homo(&e); break;
    case LAM_EST_OFFLOAD: eval_offload(&e); break;
    case LAM_EST_SPLIT: eval_split(&e); break;
    }
    if (!out->feasible) {
        out->slo_ok = false;
        out->bound = "-";
        out->batch_limit = "-";
    }
}
