/* lamina-estimate: command-line front end. See README.md for the options and
 * a worked example; the math lives in the lamina_estimate library. */
#include "tools/estimate/estimate.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifndef LAM_EST_CATALOG_SRC
#define LAM_EST_CATALOG_SRC ""
#endif
#ifndef LAM_EST_CATALOG_INSTALLED
#define LAM_EST_CATALOG_INSTALLED "/usr/local/share/lamina/catalog.txt"
#endif

#define MAX_LIST 32

typedef struct opts {
    const char *model;
    const char *catalog;
    const char *catalog_add[MAX_LIST];
    int n_add;
    const char *sets[MAX_LIST];
    int n_set;
    const char *configs[MAX_LIST];
    int n_cfg;
    const char *format;
    const char *plot_context, *plot_cost;
    const char *calibrate, *device, *out;
    long context;
    bool search, explain, list_devices, list_models;
    int top;
    lam_est_search_opts_t so;
    lam_est_workload_t w;
} opts_t;

static void usage(FILE *f)
{
    fputs(
"usage: lamina-estimate [options]\n"
"Model and workload:\n"
"  -m, --model NAME|FILE.gguf|config.json  model (default llama-3-8b); --list-models\n"
"      --prompt LEN|uniform:LO:HI|list:A,B,...   prompt tokens (default 1024)\n"
"      --output LEN|uniform:LO:HI|list:A,B,...   output tokens (default 256)\n"
"      --context N          total context: prompt = N - mean output\n"
"      --rate R             arrival rate, requests/s (default: saturated)\n"
"      --tpot-slo MS        time per output token limit\n"
"      --ttft-slo MS        time to first token limit\n"
"      --weight-dtype T     bf16|fp16|fp8|int8|int4 or bytes per element (default bf16)\n"
"      --kv-dtype T         KV cache element type (default bf16)\n"
"      --max-batch N        scheduler limit on sequences per instance\n"
"      --no-pingpong        attention offload without two overlapped micro-batches\n"
"Hardware:\n"
"      --catalog FILE       hardware catalog (default: the shipped catalog.txt)\n"
"      --catalog-add FILE   overlay: override figures or add devices (repeatable)\n"
"      --set ID.KEY=V | FACTOR=V   override one figure or factor (repeatable)\n"
"      --list-devices       print the catalog with sources\n"
"Configurations:\n"
"  -c, --config SPEC        2xh100 | 1xh100+2xh20 (offload) | pd:1xh100/2xh100 (split)\n"
"      --search             find the best tokens/s per $/h under the SLOs\n"
"      --devices A,B,...    devices the search may use (default: all)\n"
"      --max-devices N      per role in the search (default 8)\n"
"      --modes homo,offload,split   layouts the search tries (default: all)\n"
"      --top N              search results to print (default 10)\n"
"Output:\n"
"      --explain            print every intermediate with its formula\n"
"      --format text|json|csv\n"
"      --plot-context FILE.svg   tokens/s per $/h against context length\n"
"      --plot-cost FILE.svg      TPOT against $ per 1M tokens\n"
"Calibration:\n"
"      --calibrate BENCH.json [--device ID] [--out FILE]   fit factors from lamina-bench\n",
        f);
}

static bool parse_dtype(const char *s, double *out)
{
    static const struct { const char *n; double b; } t[] = {
        {"fp32", 4}, {"f32", 4}, {"bf16", 2}, {"fp16", 2}, {"f16", 2}, {"fp8", 1},
        {"int8", 1}, {"q8_0", 1.0625}, {"int4", 0.5}, {"q4_0", 0.5625}, {"q4_1", 0.625},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcasecmp(s, t[i].n)) {
            *out = t[i].b;
            return true;
        }
    return lam_est_parse_number(s, out) && *out > 0 && *out <= 8;
}

static bool parse_ms(const char *s, double *out)
{
    double v;
    if (!lam_est_parse_number(s, &v) || !(v > 0))
        return false;
    *out = v * 1e-3;
    return true;
}

static int die(const char *msg)
{
    fprintf(stderr, "lamina-estimate: %s\n", msg);
    return 2;
}

enum {
    O_PROMPT = 256, O_OUTPUT, O_CONTEXT, O_RATE, O_TPOT, O_TTFT, O_WDT, O_KVDT, O_MAXB, O_NOPP,
    O_CAT, O_CATADD, O_SET, O_LISTD, O_LISTM, O_SEARCH, O_DEVICES, O_MAXD, O_MODES, O_TOP,
    O_EXPLAIN, O_FORMAT, O_PLOTCTX, O_PLOTCOST, O_CALIB, O_DEVICE, O_OUT, O_HELP
};

static const struct option longopts[] = {
    {"model", required_argument, 0, 'm'}, {"prompt", required_argument, 0, O_PROMPT},
    {"output", required_argument, 0, O_OUTPUT}, {"context", required_argument, 0, O_CONTEXT},
    {"rate", required_argument, 0, O_RATE}, {"tpot-slo", required_argument, 0, O_TPOT},
    {"ttft-slo", required_argument, 0, O_TTFT}, {"weight-dtype", required_argument, 0, O_WDT},
    {"kv-dtype", required_argument, 0, O_KVDT}, {"max-batch", required_argument, 0, O_MAXB},
    {"no-pingpong", no_argument, 0, O_NOPP}, {"catalog", required_argument, 0, O_CAT},
    {"catalog-add", required_argument, 0, O_CATADD}, {"set", required_argument, 0, O_SET},
    {"list-devices", no_argument, 0, O_LISTD}, {"list-models", no_argument, 0, O_LISTM},
    {"config", required_argument, 0, 'c'}, {"search", no_argument, 0, O_SEARCH},
    {"devices", required_argument, 0, O_DEVICES}, {"max-devices", required_argument, 0, O_MAXD},
    {"modes", required_argument, 0, O_MODES}, {"top", required_argument, 0, O_TOP},
    {"explain", no_argument, 0, O_EXPLAIN}, {"format", required_argument, 0, O_FORMAT},
    {"plot-context", required_argument, 0, O_PLOTCTX},
    {"plot-cost", required_argument, 0, O_PLOTCOST}, {"calibrate", required_argument, 0, O_CALIB},
    {"device", required_argument, 0, O_DEVICE}, {"out", required_argument, 0, O_OUT},
    {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0},
};

static bool parse_count(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* Returns 0 to go on, else the exit status. */
static int parse_args(int argc, char **argv, opts_t *o)
{
    char err[512];
    long v;
    int c;
    while ((c = getopt_long(argc, argv, "m:c:h", longopts, NULL)) != -1) {
        const char *a = optarg;
        switch (c) {
        case 'm': o->model = a; break;
        case O_PROMPT:
        case O_OUTPUT:
            if (lam_est_dist_parse(a, c == O_PROMPT ? &o->w.prompt : &o->w.output, err,
                                   sizeof err))
                return die(err);
            break;
        case O_CONTEXT:
            if (!parse_count(a, 2, 10000000, &o->context))
                return die("--context: expected an integer from 2 to 10000000");
            break;
        case O_RATE:
            if (!lam_est_parse_number(a, &o->w.rate) || !(o->w.rate > 0))
                return die("--rate: expected a positive number of requests/s");
            break;
        case O_TPOT:
            if (!parse_ms(a, &o->w.tpot_slo))
                return die("--tpot-slo: expected a positive number of milliseconds");
            break;
        case O_TTFT:
            if (!parse_ms(a, &o->w.ttft_slo))
                return die("--ttft-slo: expected a positive number of milliseconds");
            break;
        case O_WDT:
            if (!parse_dtype(a, &o->w.w_bytes))
                return die("--weight-dtype: expected bf16, fp16, fp8, int8, int4, q8_0, q4_0, "
                           "q4_1, fp32 or bytes per element in (0, 8]");
            break;
        case O_KVDT:
            if (!parse_dtype(a, &o->w.kv_bytes))
                return die("--kv-dtype: expected bf16, fp16, fp8, int8 or bytes per element");
            break;
        case O_MAXB:
            if (!parse_count(a, 1, 1000000000, &v))
                return die("--max-batch: expected a positive integer");
            o->w.max_batch = v;
            break;
        case O_NOPP: o->w.pingpong = false; break;
        case O_CAT: o->catalog = a; break;
        case O_CATADD:
        case O_SET:
        case 'c': {
            const char **list = c == O_CATADD ? o->catalog_add : c == O_SET ? o->sets : o->configs;
            int *n = c == O_CATADD ? &o->n_add : c == O_SET ? &o->n_set : &o->n_cfg;
            if (*n == MAX_LIST)
                return die("too many --catalog-add, --set or --config options (32 each)");
            list[(*n)++] = a;
            break;
        }
        case O_LISTD: o->list_devices = true; break;
        case O_LISTM: o->list_models = true; break;
        case O_SEARCH: o->search = true; break;
        case O_DEVICES: o->so.devices = a; break;
        case O_MAXD:
            if (!parse_count(a, 1, 64, &v))
                return die("--max-devices: expected 1..64");
            o->so.max_devices = (int)v;
            break;
        case O_MODES:
            o->so.homo = strstr(a, "homo") != NULL;
            o->so.offload = strstr(a, "offload") != NULL;
            o->so.split = strstr(a, "split") != NULL;
            if (!o->so.homo && !o->so.offload && !o->so.split)
                return die("--modes: expected a list of homo, offload, split");
            break;
        case O_TOP:
            if (!parse_count(a, 1, 100000, &v))
                return die("--top: expected a positive integer");
            o->top = (int)v;
            break;
        case O_EXPLAIN: o->explain = true; break;
        case O_FORMAT:
            if (strcmp(a, "text") && strcmp(a, "json") && strcmp(a, "csv"))
                return die("--format: expected text, json or csv");
            o->format = a;
            break;
        case O_PLOTCTX: o->plot_context = a; break;
        case O_PLOTCOST: o->plot_cost = a; break;
        case O_CALIB: o->calibrate = a; break;
        case O_DEVICE: o->device = a; break;
        case O_OUT: o->out = a; break;
        case 'h':
        case O_HELP: usage(stdout); return -1;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        snprintf(err, sizeof err, "unexpected argument '%s' (see --help)", argv[optind]);
        return die(err);
    }
    return 0;
}

static int load_catalog(const opts_t *o, lam_est_catalog_t *cat)
{
    char err[512];
    const char *path = o->catalog;
    if (!path)
        path = getenv("LAMINA_ESTIMATE_CATALOG");
    if (!path && LAM_EST_CATALOG_SRC[0] && access(LAM_EST_CATALOG_SRC, R_OK) == 0)
        path = LAM_EST_CATALOG_SRC;
    if (!path)
        path = LAM_EST_CATALOG_INSTALLED;
    lam_est_catalog_init(cat);
    if (lam_est_catalog_load(cat, path, err, sizeof err))
        return die(err);
    for (int i = 0; i < o->n_add; i++)
        if (lam_est_catalog_load(cat, o->catalog_add[i], err, sizeof err))
            return die(err);
    for (int i = 0; i < o->n_set; i++)
        if (lam_est_catalog_set(cat, o->sets[i], err, sizeof err))
            return die(err);
    return 0;
}

static void list_devices(const lam_est_catalog_t *c)
{
    printf("factors:\n");
    for (int k = 0; k < LAM_EST_FACTOR_COUNT; k++)
        if (c->fac[k].set)
            printf("  %-12s %-10.4g %s %s\n", lam_est_factor_name((lam_est_factor_t)k),
                   c->fac[k].v, c->fac[k].src, c->fac[k].date);
    for (int i = 0; i < c->n_dev; i++) {
        const lam_est_device_t *d = &c->dev[i];
        printf("[%s] %s (%s)\n", d->id, d->name, d->kind == LAM_EST_GPU ? "gpu" : "cpu");
        for (int f = 0; f < LAM_EST_F_COUNT; f++)
            if (d->f[f].set)
                printf("  %-12s %-10.4g %s | %s\n", lam_est_field_name((lam_est_field_t)f),
                       d->f[f].v, d->f[f].src, d->f[f].date);
    }
}

static void list_models(void)
{
    for (int i = 0; i < lam_est_model_preset_count(); i++) {
        const lam_est_model_t *m = lam_est_model_preset_at(i);
        printf("%-14s %6.2fB params, %lld layers, d=%lld, %lld/%lld heads, KV %.0f B/token\n",
               m->name, lam_est_model_params(m) / 1e9, (long long)m->n_layers,
               (long long)m->d_model, (long long)m->n_heads, (long long)m->n_kv_heads,
               lam_est_kv_bytes_per_token(m, 2));
    }
}

static int calibrate(const opts_t *o, const lam_est_catalog_t *cat)
{
    char err[512];
    lam_est_calib_t cal;
    if (lam_est_calib_fit(o->calibrate, cat, o->device, &cal, err, sizeof err))
        return die(err);
    lam_est_calib_print(stderr, &cal);
    if (cal.n_dev == 0 && isnan(cal.rtt)) {
        snprintf(err, sizeof err, "%s: nothing to fit: calibration needs gemm_tflops, mem_gbps, "
                 "attn_gbps or exchange_us results (see tools/estimate/README.md)", o->calibrate);
        fprintf(stderr, "lamina-estimate: %s\n", err);
        return 1;
    }
    FILE *f = o->out ? fopen(o->out, "w") : stdout;
    if (!f) {
        snprintf(err, sizeof err, "%s: cannot write", o->out);
        return die(err);
    }
    lam_est_calib_write_overlay(f, &cal, o->calibrate);
    if (o->out && fclose(f) != 0)
        return die("writing the calibration overlay failed");
    return 0;
}

/* Sets a fixed prompt so that prompt + mean output = ctx. */
static bool set_context(lam_est_workload_t *w, long ctx)
{
    double p = (double)ctx - round(lam_est_dist_mean(&w->output));
    if (p < 1)
        return false;
    lam_est_dist_fixed(&w->prompt, p);
    return true;
}

static int plots(const opts_t *o, const lam_est_model_t *m, const lam_est_catalog_t *cat,
                 const lam_est_config_t *cfgs, const lam_est_result_t *res, int n)
{
    char err[512];
    if (o->plot_context) {
        static const double ctxs[] = {1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072};
        if (lam_est_plot_context(o->plot_context, m, cat, &o->w, cfgs, n, ctxs,
                                 (int)(sizeof ctxs / sizeof ctxs[0]), err, sizeof err))
            return die(err);
    }
    if (o->plot_cost && lam_est_plot_cost(o->plot_cost, m, &o->w, cfgs, res, n, err, sizeof err))
        return die(err);
    return 0;
}

int main(int argc, char **argv)
{
    opts_t o;
    memset(&o, 0, sizeof o);
    lam_est_workload_default(&o.w);
    o.model = "llama-3-8b";
    o.format = "text";
    o.top = 10;
    o.so.homo = o.so.offload = o.so.split = true;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (o.list_models) {
        list_models();
        return 0;
    }
    lam_est_catalog_t cat;
    if ((rc = load_catalog(&o, &cat))) {
        lam_est_catalog_free(&cat);
        return rc;
    }
    if (o.list_devices || o.calibrate) {
        rc = o.list_devices ? (list_devices(&cat), 0) : calibrate(&o, &cat);
        lam_est_catalog_free(&cat);
        return rc;
    }
    char err[512];
    lam_est_model_t model;
    if (lam_est_model_load(o.model, &model, err, sizeof err)) {
        lam_est_catalog_free(&cat);
        return die(err);
    }
    if (o.context && !set_context(&o.w, o.context)) {
        lam_est_catalog_free(&cat);
        return die("--context must exceed the mean output length");
    }
    lam_est_config_t *cfgs = NULL;
    lam_est_result_t *res = NULL;
    lam_est_term_t *terms = NULL;
    int n = 0, shown = 0;
    if (o.search) {
        /* every id in --devices must be known: a typo would silently shrink the search */
        for (const char *p = o.so.devices; p && *p;) {
            const char *q = strchr(p, ',');
            size_t len = q ? (size_t)(q - p) : strlen(p);
            char id[64];
            snprintf(id, sizeof id, "%.*s", (int)(len < 63 ? len : 63), p);
            if (lam_est_catalog_find(&cat, id) < 0) {
                snprintf(err, sizeof err, "--devices: unknown device '%s' (see --list-devices)", id);
                rc = die(err);
                goto out;
            }
            p = q ? q + 1 : p + len;
        }
        if (lam_est_search(&model, &cat, &o.w, &o.so, &cfgs, &res, &n)) {
            rc = die("out of memory in the search");
            goto out;
        }
        int ok = 0;
        for (int i = 0; i < n; i++)
            ok += res[i].feasible && res[i].slo_ok;
        shown = ok < o.top ? ok : o.top;
        if (!strcmp(o.format, "text"))
            printf("search: %d configurations evaluated, %d feasible and meeting the SLOs\n", n,
                   ok);
        if (n == 0) {
            rc = die("nothing to search: compute and prefill roles need a GPU among --devices");
            goto out;
        }
        if (ok == 0) {
            fprintf(stderr, "lamina-estimate: no configuration meets the SLOs; closest "
                    "candidates follow\n");
            shown = n < o.top ? n : o.top;
            rc = 3;
        }
    } else {
        if (o.n_cfg == 0) {
            rc = die("give at least one --config or --search (see --help)");
            goto out;
        }
        n = shown = o.n_cfg;
        cfgs = calloc((size_t)n, sizeof *cfgs);
        res = calloc((size_t)n, sizeof *res);
        if (!cfgs || !res) {
            rc = die("out of memory");
            goto out;
        }
        for (int i = 0; i < n; i++) {
            if (lam_est_config_parse(&cat, o.configs[i], &cfgs[i], err, sizeof err)) {
                rc = die(err);
                goto out;
            }
        }
    }
    /* re-evaluate what is shown with intermediates recorded */
    terms = calloc((size_t)(shown ? shown : 1) * LAM_EST_MAX_TERMS, sizeof *terms);
    if (!terms) {
        rc = die("out of memory");
        goto out;
    }
    for (int i = 0; i < shown; i++)
        lam_est_evaluate(&model, &cat, &o.w, &cfgs[i], &res[i],
                         terms + (size_t)i * LAM_EST_MAX_TERMS, LAM_EST_MAX_TERMS);
    if (!strcmp(o.format, "json")) {
        lam_est_write_json(stdout, &model, &o.w, cfgs, res, shown, o.explain);
    } else if (!strcmp(o.format, "csv")) {
        lam_est_write_csv(stdout, cfgs, res, shown);
    } else {
        lam_est_print_model(stdout, &model, &o.w);
        lam_est_print_table(stdout, cfgs, res, shown);
        if (o.explain)
            for (int i = 0; i < shown; i++)
                lam_est_print_explain(stdout, &cfgs[i], &res[i]);
    }
    if (o.plot_context || o.plot_cost) {
        int prc = plots(&o, &model, &cat, cfgs, res, shown);
        if (prc)
            rc = prc;
    }
out:
    free(terms);
    free(cfgs);
    free(res);
    lam_est_catalog_free(&cat);
    return rc;
}
