/* lamina-estimate: cost/throughput planner (library part, lam_est_*).
 *
 * What lives here: the model description and its derived sizes (model.c),
 * the hardware catalog (catalog.c), workloads and configuration specs
 * (workload.c), the three performance models (perf.c), the configuration
 * search (search.c), text/JSON/CSV output (output.c), SVG plots (svg.c) and
 * the calibration fit from lamina-bench results (calib.c). main.c is the
 * command-line front end; tests/estimate/ links the same library.
 *
 * Units everywhere inside: FLOP/s, bytes, bytes/s, seconds, watts, US
 * dollars per hour. Conversions happen only when reading and printing.
 */
#ifndef LAM_ESTIMATE_H
#define LAM_ESTIMATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/status.h"

/* ---- model -------------------------------------------------------------- */

typedef struct lam_est_model {
    char name[64];
    char arch[32];
    int64_t n_layers;
    int64_t d_model;    /* hidden size d */
    int64_t d_ff;       /* FFN inner size (SwiGLU: three d x d_ff matrices) */
    int64_t n_heads;    /* query heads */
    int64_t n_kv_heads; /* KV heads; G = n_heads / n_kv_heads */
    int64_t head_dim;
    int64_t vocab;
    bool tied_embeddings; /* LM head shares the embedding table */
    bool qkv_bias;
} lam_est_model_t;

/* Finds a built-in preset by case-insensitive name ("llama-3-70b", ...). */
const lam_est_model_t *lam_est_model_preset(const char *name);
int lam_est_model_preset_count(void);
const lam_est_model_t *lam_est_model_preset_at(int i);

/* Loads a model from a preset name, a .gguf file or a Hugging Face
 * config.json (chosen by suffix). Errors name the file (and line for JSON). */
lam_status_t lam_est_model_load(const char *spec, lam_est_model_t *out, char *err, size_t errlen);
lam_status_t lam_est_model_from_gguf(const char *path, lam_est_model_t *out, char *err,
                                     size_t errlen);
lam_status_t lam_est_model_from_hf_config(const char *path, lam_est_model_t *out, char *err,
                                          size_t errlen);
/* Checks every field is positive and the head counts divide. */
lam_status_t lam_est_model_validate(const lam_est_model_t *m, char *err, size_t errlen);

double lam_est_model_params(const lam_est_model_t *m);        /* every weight */
double lam_est_model_gemm_params(const lam_est_model_t *m);   /* weights read per token */
double lam_est_dense_flops_per_token(const lam_est_model_t *m); /* 2 * gemm params */
/* KV bytes per token = 2 * layers * kv_heads * head_dim * e. */
double lam_est_kv_bytes_per_token(const lam_est_model_t *m, double elem_bytes);
/* Attention FLOPs for one new token against `ctx` cached tokens, all layers:
 * QK^T and PV each 2 * heads * head_dim * ctx per layer. */
double lam_est_attn_flops_per_token(const lam_est_model_t *m, double ctx);
/* Bytes exchanged per sequence per layer in attention offload: q and o
 * (heads*head_dim each) plus k and v (kv_heads*head_dim each), times e;
 * equals (2 + 2/G) * e * d when heads*head_dim == d. */
double lam_est_exchange_bytes(const lam_est_model_t *m, double elem_bytes);

/* ---- hardware catalog --------------------------------------------------- */

typedef enum lam_est_field {
    LAM_EST_F_FLOPS,    /* dense BF16 FLOP/s */
    LAM_EST_F_MEM_BW,   /* memory bandwidth, B/s */
    LAM_EST_F_MEM_CAP,  /* memory capacity, B */
    LAM_EST_F_NET_BW,   /* scale-out network per device, B/s per direction */
    LAM_EST_F_NET_LAT,  /* one-way per-message latency, s */
    LAM_EST_F_LINK_BW,  /* intra-node link (NVLink/PCIe) per direction, B/s */
    LAM_EST_F_LINK_LAT, /* intra-node per-message latency, s */
    LAM_EST_F_POWER,    /* W */
    LAM_EST_F_PRICE,    /* USD per hour */
    LAM_EST_F_EFF_COMPUTE, /* optional per-device efficiency overrides */
    LAM_EST_F_EFF_MEM,
    LAM_EST_F_EFF_ATTN,
    LAM_EST_F_EFF_NET,
    LAM_EST_F_COUNT
} lam_est_field_t;

typedef enum { LAM_EST_GPU, LAM_EST_CPU } lam_est_kind_t;

typedef struct lam_est_fig {
    double v;
    bool set;
    char src[200]; /* where the figure comes from */
    char date[24];
} lam_est_fig_t;

typedef struct lam_est_device {
    char id[32];
    char name[96];
    lam_est_kind_t kind;
    bool kind_set;
    lam_est_fig_t f[LAM_EST_F_COUNT];
    char origin[320]; /* file:line of the section header */
} lam_est_device_t;

/* Efficiency factors: achieved / datasheet peak. */
typedef enum lam_est_factor {
    LAM_EST_EFF_COMPUTE, /* GEMM and attention FLOP/s */
    LAM_EST_EFF_MEM,     /* weight streaming */
    LAM_EST_EFF_ATTN,    /* KV-cache reads in attention */
    LAM_EST_EFF_NET,     /* network and link bandwidth */
    LAM_EST_MEM_UTIL,    /* usable share of device memory (rest: activations, runtime) */
    LAM_EST_RTT,         /* per-layer round trip in offload, s; 0 = sum of devices' net_lat */
    LAM_EST_FACTOR_COUNT
} lam_est_factor_t;

typedef struct lam_est_catalog {
    lam_est_device_t *dev;
    int n_dev, cap_dev;
    lam_est_fig_t fac[LAM_EST_FACTOR_COUNT];
} lam_est_catalog_t;

void lam_est_catalog_init(lam_est_catalog_t *c); /* built-in factor defaults, no devices */
void lam_est_catalog_free(lam_est_catalog_t *c);
/* Parses a catalog file on top of what `c` already holds: a section for an
 * existing id overrides only the keys it names; a new id must give every
 * required key. Errors: "file:line: reason: 'text'". */
lam_status_t lam_est_catalog_load(lam_est_catalog_t *c, const char *path, char *err,
                                  size_t errlen);
lam_status_t lam_est_catalog_parse(lam_est_catalog_t *c, const char *text, const char *origin,
                                   char *err, size_t errlen);
/* --set KEY=VALUE: "device.key=value" or "factor=value". */
lam_status_t lam_est_catalog_set(lam_est_catalog_t *c, const char *assignment, char *err,
                                 size_t errlen);
int lam_est_catalog_find(const lam_est_catalog_t *c, const char *id); /* -1 if absent */
const char *lam_est_field_name(lam_est_field_t f);
const char *lam_est_factor_name(lam_est_factor_t f);
/* Efficiency for a device: its own override if set, else the global one. */
double lam_est_eff(const lam_est_catalog_t *c, const lam_est_device_t *d, lam_est_factor_t f);
/* Parses "989.4T", "3.35e12", "80Gi", "5u" into a double. */
bool lam_est_parse_number(const char *s, double *out);

/* ---- workload and configurations ---------------------------------------- */

#define LAM_EST_DIST_MAX 64

/* A length distribution as weighted points (a fixed length is one point). */
typedef struct lam_est_dist {
    int n;
    double v[LAM_EST_DIST_MAX];
    double w[LAM_EST_DIST_MAX];
} lam_est_dist_t;

/* "512", "uniform:128:2048" or "list:100,200,200,4000". */
lam_status_t lam_est_dist_parse(const char *s, lam_est_dist_t *out, char *err, size_t errlen);
void lam_est_dist_fixed(lam_est_dist_t *d, double v);
double lam_est_dist_mean(const lam_est_dist_t *d);
double lam_est_dist_moment2(const lam_est_dist_t *d); /* E[x^2] */

typedef struct lam_est_workload {
    lam_est_dist_t prompt, output;
    double rate;        /* requests/s; 0 = saturated (as many as the cluster takes) */
    double tpot_slo;    /* s; 0 = none */
    double ttft_slo;    /* s; 0 = none */
    double w_bytes;     /* bytes per weight element */
    double kv_bytes;    /* bytes per KV element */
    double act_bytes;   /* bytes per activation element on the wire */
    int64_t max_batch;  /* scheduler limit per instance; 0 = none */
    bool pingpong;      /* two micro-batches in attention offload */
} lam_est_workload_t;

void lam_est_workload_default(lam_est_workload_t *w);
/* Mean context a decoding sequence holds, averaged over decode steps:
 * E[P] + (E[O^2] + E[O]) / (2 E[O])  (prompt and output independent). */
double lam_est_live_context(const lam_est_workload_t *w);

typedef enum { LAM_EST_HOMO, LAM_EST_OFFLOAD, LAM_EST_SPLIT } lam_est_mode_t;

/* homo: n_a x dev_a with tensor parallelism.
 * offload: n_a x dev_a compute + n_b x dev_b attention.
 * split: prefill instances of n_a x dev_a, decode instances of n_b x dev_b. */
typedef struct lam_est_config {
    lam_est_mode_t mode;
    int dev_a, n_a;
    int dev_b, n_b;
    char label[80];
} lam_est_config_t;

/* "2xh100", "1xh100+2xh20", "pd:1xh100/2xh100" (device ids from the catalog). */
lam_status_t lam_est_config_parse(const lam_est_catalog_t *c, const char *spec,
                                  lam_est_config_t *out, char *err, size_t errlen);
void lam_est_config_label(const lam_est_catalog_t *c, lam_est_config_t *cfg);

/* ---- results ------------------------------------------------------------ */

#define LAM_EST_MAX_TERMS 96

/* One intermediate of the computation, for --explain and JSON. */
typedef struct lam_est_term {
    char name[40];
    double value;
    char unit[12];
    char formula[240];
} lam_est_term_t;

typedef struct lam_est_result {
    bool feasible;
    char why[320];          /* reason when infeasible */
    bool slo_ok;
    int64_t batch;          /* sequences decoding together per (decode) instance */
    int64_t max_batch;      /* KV-capacity limit per instance */
    const char *bound;      /* compute, memory, network, capacity */
    const char *batch_limit;/* capacity, slo, max-batch, rate */
    double tok_s;           /* output tokens/s of the whole deployment */
    double tpot, ttft;      /* s */
    double cost_h;          /* USD/h of the whole deployment */
    double usd_per_mtok;    /* per million output tokens */
    double tok_s_per_usd_h; /* output tokens/s per USD/h */
    double power_w;
    double j_per_tok;
    double t_step;          /* one decode step, s */
    double t_prefill;       /* one prompt, s */
    int64_t instances;      /* homo/offload: replicas; split: prefill instances */
    int64_t instances_b;    /* split: decode instances */
    lam_est_term_t *terms;  /* the caller's buffer given to lam_est_evaluate, or NULL */
    int n_terms, cap_terms;
} lam_est_result_t;

/* Evaluates one configuration. Never fails on valid inputs: an impossible
 * configuration gives feasible=false and a reason. Intermediates go into
 * terms[cap] when terms != NULL (LAM_EST_MAX_TERMS is enough). */
void lam_est_evaluate(const lam_est_model_t *m, const lam_est_catalog_t *c,
                      const lam_est_workload_t *w, const lam_est_config_t *cfg,
                      lam_est_result_t *out, lam_est_term_t *terms, int cap);
const lam_est_term_t *lam_est_result_term(const lam_est_result_t *r, const char *name);

/* Ring all-reduce of `bytes` over n devices: 2(n-1)/n * bytes / bw + 2(n-1) * lat. */
double lam_est_allreduce_time(double bytes, int n, double bw, double lat);

/* ---- search ------------------------------------------------------------- */

typedef struct lam_est_search_opts {
    const char *devices;  /* comma-separated ids to consider; NULL = all */
    int max_devices;      /* per instance, default 8 */
    bool homo, offload, split;
} lam_est_search_opts_t;

/* Enumerates configurations, evaluates each, and returns them sorted: SLO
 * met first, then by tokens/s per USD/h. Caller frees *out. */
lam_status_t lam_est_search(const lam_est_model_t *m, const lam_est_catalog_t *c,
                            const lam_est_workload_t *w, const lam_est_search_opts_t *o,
                            lam_est_config_t **cfgs, lam_est_result_t **res, int *n);

/* ---- output ------------------------------------------------------------- */

void lam_est_print_model(FILE *f, const lam_est_model_t *m, const lam_est_workload_t *w);
void lam_est_print_table(FILE *f, const lam_est_config_t *cfgs, const lam_est_result_t *res,
                         int n);
void lam_est_print_explain(FILE *f, const lam_est_config_t *cfg, const lam_est_result_t *r);
lam_status_t lam_est_write_json(FILE *f, const lam_est_model_t *m, const lam_est_workload_t *w,
                                const lam_est_config_t *cfgs, const lam_est_result_t *res,
                                int n, bool terms);
void lam_est_write_csv(FILE *f, const lam_est_config_t *cfgs, const lam_est_result_t *res,
                       int n);

/* ---- SVG plots ---------------------------------------------------------- */

typedef struct lam_est_series {
    const char *label;
    int n;
    const double *x, *y; /* NaN y = no point (infeasible) */
} lam_est_series_t;

typedef struct lam_est_plot {
    const char *title, *xlabel, *ylabel;
    bool logx;
    bool lines; /* false = scatter */
    int n_series;
    const lam_est_series_t *series;
} lam_est_plot_t;

lam_status_t lam_est_svg_write(const char *path, const lam_est_plot_t *p, char *err,
                               size_t errlen);

/* Tokens/s per USD/h against context length for each configuration, keeping
 * the workload's prompt:output proportion; points that are infeasible or
 * miss the SLOs are left out. */
lam_status_t lam_est_plot_context(const char *path, const lam_est_model_t *m,
                                  const lam_est_catalog_t *c, const lam_est_workload_t *w,
                                  const lam_est_config_t *cfgs, int n, const double *ctxs,
                                  int n_ctx, char *err, size_t errlen);
/* TPOT against USD per 1M output tokens: one series per configuration, or per
 * layout when there are more than ten. */
lam_status_t lam_est_plot_cost(const char *path, const lam_est_model_t *m,
                               const lam_est_workload_t *w, const lam_est_config_t *cfgs,
                               const lam_est_result_t *res, int n, char *err, size_t errlen);

/* ---- calibration -------------------------------------------------------- */

#define LAM_EST_CALIB_MAX_DEV 8

/* Fitted factors for one device; NaN = not measured. */
typedef struct lam_est_calib_dev {
    char id[32];
    double eff[LAM_EST_EFF_NET + 1];   /* compute, mem, attn, net */
    double lo[LAM_EST_EFF_NET + 1], hi[LAM_EST_EFF_NET + 1]; /* spread of the samples */
    int n_used[LAM_EST_EFF_NET + 1];
} lam_est_calib_dev_t;

typedef struct lam_est_calib {
    char machine[96];
    int n_dev;
    lam_est_calib_dev_t dev[LAM_EST_CALIB_MAX_DEV];
    double rtt;        /* fitted per-layer round trip, s; NaN if no exchange results */
    double net_bw;     /* fitted exchange bandwidth, B/s; NaN if not identifiable */
    double rtt_resid;  /* RMS residual of the exchange fit, s */
    int n_exchange;
    int n_results, n_ignored;
} lam_est_calib_t;

/* Reads lamina-bench JSON (format in tools/estimate/README.md) and fits the
 * efficiency factors (achieved / catalog peak) of each device named by the
 * results (or `device` / the file's "device" when a result names none) and
 * the per-layer round trip from "exchange_us" results (t = rtt + bytes/bw). */
lam_status_t lam_est_calib_fit(const char *path, const lam_est_catalog_t *c, const char *device,
                               lam_est_calib_t *out, char *err, size_t errlen);
/* Writes the fit as a catalog overlay (usable with --catalog-add). */
void lam_est_calib_write_overlay(FILE *f, const lam_est_calib_t *cal, const char *source);
/* Human-readable summary of the fit. */
void lam_est_calib_print(FILE *f, const lam_est_calib_t *cal);

#endif
