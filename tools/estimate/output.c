/* Text table, --explain, JSON and CSV output. */
#include "tools/estimate/estimate.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

static const char *mode_name(lam_est_mode_t m)
{
    switch (m) {
    case LAM_EST_HOMO: return "homogeneous";
    case LAM_EST_OFFLOAD: return "attention-offload";
    case LAM_EST_SPLIT: return "prefill-decode-split";
    }
    return "?";
}

/* Scales a value into a readable unit: seconds to ms/us, bytes to GB/MB. */
static void human(char *buf, size_t n, double v, const char *unit)
{
    if (!isfinite(v)) {
        snprintf(buf, n, "inf %s", unit);
        return;
    }
    double a = fabs(v);
    if (!strcmp(unit, "s")) {
        if (a >= 1 || a == 0)
            snprintf(buf, n, "%.4g s", v);
        else if (a >= 1e-3)
            snprintf(buf, n, "%.4g ms", v * 1e3);
        else
            snprintf(buf, n, "%.4g us", v * 1e6);
    } else if (!strcmp(unit, "B") || !strcmp(unit, "B/s") || !strcmp(unit, "FLOP")) {
        static const char *pfx[] = {"", "k", "M", "G", "T", "P"};
        int i = 0;
        while (a >= 1000 && i < 5) {
            a /= 1000;
            v /= 1000;
            i++;
        }
        snprintf(buf, n, "%.4g %s%s", v, pfx[i], unit);
    } else {
        snprintf(buf, n, "%.4g%s%s", v, unit[0] ? " " : "", unit);
    }
}

void lam_est_print_model(FILE *f, const lam_est_model_t *m, const lam_est_workload_t *w)
{
    double kv = lam_est_kv_bytes_per_token(m, w->kv_bytes);
    fprintf(f, "model %s (%s): %lld layers, d=%lld, ffn=%lld, %lld heads / %lld KV heads "
            "(G=%lld), head_dim %lld, vocab %lld\n", m->name, m->arch, (long long)m->n_layers,
            (long long)m->d_model, (long long)m->d_ff, (long long)m->n_heads,
            (long long)m->n_kv_heads, (long long)(m->n_heads / m->n_kv_heads),
            (long long)m->head_dim, (long long)m->vocab);
    fprintf(f, "  %.2fB params, weights %.1f GB at %g B/elem, KV %.0f B/token at %g B/elem\n",
            lam_est_model_params(m) / 1e9, lam_est_model_params(m) * w->w_bytes / 1e9,
            w->w_bytes, kv, w->kv_bytes);
    fprintf(f, "workload: prompt %.0f, output %.0f tokens (means), live context %.1f; ",
            lam_est_dist_mean(&w->prompt), lam_est_dist_mean(&w->output),
            lam_est_live_context(w));
    if (w->rate > 0)
        fprintf(f, "%g req/s", w->rate);
    else
        fprintf(f, "saturated");
    if (w->tpot_slo > 0)
        fprintf(f, "; TPOT <= %g ms", w->tpot_slo * 1e3);
    if (w->ttft_slo > 0)
        fprintf(f, "; TTFT <= %g ms", w->ttft_slo * 1e3);
    fprintf(f, "\n\n");
}

void lam_est_print_table(FILE *f, const lam_est_config_t *cfgs, const lam_est_result_t *res,
                         int n)
{
    fprintf(f, "%-26s %6s %6s %-9s %9s %8s %9s %7s %8s %9s %7s %s\n", "config", "batch", "max",
            "bound", "tok/s", "TPOT ms", "TTFT ms", "$/h", "$/Mtok", "tok/s/$h", "J/tok", "SLO");
    for (int i = 0; i < n; i++) {
        const lam_est_result_t *r = &res[i];
        char label[96];
        if (cfgs[i].mode == LAM_EST_SPLIT && r->feasible)
            snprintf(label, sizeof label, "%s %lld:%lld", cfgs[i].label,
                     (long long)r->instances, (long long)r->instances_b);
        else if (r->instances > 1)
            snprintf(label, sizeof label, "%lld*(%s)", (long long)r->instances, cfgs[i].label);
        else
            snprintf(label, sizeof label, "%s", cfgs[i].label);
        if (!r->feasible) {
            fprintf(f, "%-26s infeasible: %s\n", label, r->why);
            continue;
        }
        fprintf(f, "%-26s %6lld %6lld %-9s %9.0f %8.2f %9.1f %7.2f %8.3f %9.1f %7.3f %s\n", label,
                (long long)r->batch, (long long)r->max_batch, r->bound, r->tok_s, r->tpot * 1e3,
                r->ttft * 1e3, r->cost_h, r->usd_per_mtok, r->tok_s_per_usd_h, r->j_per_tok,
                r->slo_ok ? "ok" : "MISS");
    }
}

void lam_est_print_explain(FILE *f, const lam_est_config_t *cfg, const lam_est_result_t *r)
{
    fprintf(f, "\n== %s (%s) ==\n", cfg->label, mode_name(cfg->mode));
    for (int i = 0; i < r->n_terms; i++) {
        const lam_est_term_t *t = &r->terms[i];
        char v[48];
        human(v, sizeof v, t->value, t->unit);
        fprintf(f, "  %-22s %14s   %s\n", t->name, v, t->formula);
    }
    if (!r->feasible)
        fprintf(f, "  infeasible: %s\n", r->why);
    else
        fprintf(f, "  => batch %lld (limited by %s), bound: %s\n", (long long)r->batch,
                r->batch_limit, r->bound);
}

static json_t *num(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

lam_status_t lam_est_write_json(FILE *f, const lam_est_model_t *m, const lam_est_workload_t *w,
                                const lam_est_config_t *cfgs, const lam_est_result_t *res,
                                int n, bool terms)
{
    json_t *root = json_object();
    json_t *jm = json_object();
    json_object_set_new(jm, "name", json_string(m->name));
    json_object_set_new(jm, "arch", json_string(m->arch));
    json_object_set_new(jm, "layers", json_integer(m->n_layers));
    json_object_set_new(jm, "hidden", json_integer(m->d_model));
    json_object_set_new(jm, "ffn", json_integer(m->d_ff));
    json_object_set_new(jm, "heads", json_integer(m->n_heads));
    json_object_set_new(jm, "kv_heads", json_integer(m->n_kv_heads));
    json_object_set_new(jm, "head_dim", json_integer(m->head_dim));
    json_object_set_new(jm, "vocab", json_integer(m->vocab));
    json_object_set_new(jm, "params", num(lam_est_model_params(m)));
    json_object_set_new(jm, "kv_bytes_per_token", num(lam_est_kv_bytes_per_token(m, w->kv_bytes)));
    json_object_set_new(root, "model", jm);
    json_t *jw = json_object();
    json_object_set_new(jw, "prompt_mean", num(lam_est_dist_mean(&w->prompt)));
    json_object_set_new(jw, "output_mean", num(lam_est_dist_mean(&w->output)));
    json_object_set_new(jw, "live_context", num(lam_est_live_context(w)));
    json_object_set_new(jw, "rate", num(w->rate));
    json_object_set_new(jw, "tpot_slo_s", num(w->tpot_slo));
    json_object_set_new(jw, "ttft_slo_s", num(w->ttft_slo));
    json_object_set_new(jw, "weight_bytes", num(w->w_bytes));
    json_object_set_new(jw, "kv_bytes", num(w->kv_bytes));
    json_object_set_new(root, "workload", jw);
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        const lam_est_result_t *r = &res[i];
        json_t *o = json_object();
        json_object_set_new(o, "config", json_string(cfgs[i].label));
        json_object_set_new(o, "mode", json_string(mode_name(cfgs[i].mode)));
        json_object_set_new(o, "feasible", json_boolean(r->feasible));
        if (!r->feasible) {
            json_object_set_new(o, "why", json_string(r->why));
        } else {
            json_object_set_new(o, "slo_ok", json_boolean(r->slo_ok));
            json_object_set_new(o, "batch", json_integer(r->batch));
            json_object_set_new(o, "max_batch", json_integer(r->max_batch));
            json_object_set_new(o, "bound", json_string(r->bound));
            json_object_set_new(o, "batch_limit", json_string(r->batch_limit));
            json_object_set_new(o, "instances", json_integer(r->instances));
            if (cfgs[i].mode == LAM_EST_SPLIT)
                json_object_set_new(o, "decode_instances", json_integer(r->instances_b));
            json_object_set_new(o, "tok_s", num(r->tok_s));
            json_object_set_new(o, "tpot_s", num(r->tpot));
            json_object_set_new(o, "ttft_s", num(r->ttft));
            json_object_set_new(o, "step_s", num(r->t_step));
            json_object_set_new(o, "prefill_s", num(r->t_prefill));
            json_object_set_new(o, "cost_usd_h", num(r->cost_h));
            json_object_set_new(o, "usd_per_mtok", num(r->usd_per_mtok));
            json_object_set_new(o, "tok_s_per_usd_h", num(r->tok_s_per_usd_h));
            json_object_set_new(o, "power_w", num(r->power_w));
            json_object_set_new(o, "j_per_tok", num(r->j_per_tok));
        }
        if (terms) {
            json_t *jt = json_array();
            for (int k = 0; k < r->n_terms; k++) {
                json_t *t = json_object();
                json_object_set_new(t, "name", json_string(r->terms[k].name));
                json_object_set_new(t, "value", num(r->terms[k].value));
                json_object_set_new(t, "unit", json_string(r->terms[k].unit));
                json_object_set_new(t, "formula", json_string(r->terms[k].formula));
                json_array_append_new(jt, t);
            }
            json_object_set_new(o, "terms", jt);
        }
        json_array_append_new(arr, o);
    }
    json_object_set_new(root, "results", arr);
    int rc = json_dumpf(root, f, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    fputc('\n', f);
    json_decref(root);
    return rc == 0 ? LAM_OK : LAM_ERR_IO;
}

static void csv_num(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, ",%.6g", v);
    else
        fprintf(f, ",");
}

void lam_est_write_csv(FILE *f, const lam_est_config_t *cfgs, const lam_est_result_t *res,
                       int n)
{
    fprintf(f, "config,mode,feasible,slo_ok,batch,max_batch,bound,batch_limit,instances,"
            "decode_instances,tok_s,tpot_s,ttft_s,cost_usd_h,usd_per_mtok,tok_s_per_usd_h,"
            "power_w,j_per_tok,why\n");
    for (int i = 0; i < n; i++) {
        const lam_est_result_t *r = &res[i];
        fprintf(f, "%s,%s,%d,%d,%lld,%lld,%s,%s,%lld,%lld", cfgs[i].label,
                mode_name(cfgs[i].mode), r->feasible, r->slo_ok, (long long)r->batch,
                (long long)r->max_batch, r->bound, r->batch_limit, (long long)r->instances,
                (long long)r->instances_b);
        csv_num(f, r->tok_s);
        csv_num(f, r->tpot);
        csv_num(f, r->ttft);
        csv_num(f, r->cost_h);
        csv_num(f, r->usd_per_mtok);
        csv_num(f, r->tok_s_per_usd_h);
        csv_num(f, r->power_w);
        csv_num(f, r->j_per_tok);
        /* reasons may hold commas: quote and double any quotes */
        fputs(",\"", f);
        for (const char *p = r->why; *p; p++) {
            if (*p == '"')
                fputc('"', f);
            fputc(*p, f);
        }
        fputs("\"\n", f);
    }
}
