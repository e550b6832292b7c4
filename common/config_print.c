/* --help and the configuration dump (--print-config), both from the
 * option table (common/config.h). */
#include "common/config.h"
#include "common/config_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static bool zero_outside_bounds(const lam_cfg_opt_t *o);

static void metavar(const lam_cfg_opt_t *o, char *out, size_t n)
{
    if (o->metavar) {
        snprintf(out, n, "%s", o->metavar);
        return;
    }
    switch (o->type) {
    case LAM_CFG_BOOL: out[0] = '\0'; return;
    case LAM_CFG_INT:
    case LAM_CFG_U64: snprintf(out, n, "N"); return;
    case LAM_CFG_FLOAT: snprintf(out, n, "F"); return;
    case LAM_CFG_SIZE: snprintf(out, n, "SIZE"); return;
    case LAM_CFG_STRING: snprintf(out, n, "TEXT"); return;
    case LAM_CFG_ENUM: {
        size_t k = 0;
        for (int i = 0; o->choices[i] && k < n; i++)
            k += (size_t)snprintf(out + k, n - k, "%s%s", i ? "|" : "", o->choices[i]);
        if (k >= 24) /* too long for the option line: the choices go below */
            snprintf(out, n, "NAME");
        return;
    }
    }
    out[0] = '\0';
}

/* Indents each line of text by 8 spaces. */
static void print_indented(FILE *f, const char *text)
{
    while (*text) {
        const char *nl = strchr(text, '\n');
        int len = nl ? (int)(nl - text) : (int)strlen(text);
        fprintf(f, "        %.*s\n", len, text);
        text += len + (nl != NULL);
    }
}

static void print_opt(FILE *f, const lam_cfg_opt_t *o)
{
    char mv[96], bounds[96], env[96];
    metavar(o, mv, sizeof mv);
    if (o->short_name)
        fprintf(f, "  -%c, ", o->short_name);
    else
        fprintf(f, "      ");
    fprintf(f, "--%s%s%s%s\n", o->type == LAM_CFG_BOOL ? "[no-]" : "", o->name, mv[0] ? " " : "", mv);
    print_indented(f, o->help);
    /* the facts the table knows: default, bounds or choices, environment */
    const char *def = o->def;
    if (!def) /* what lam_cfg_set_defaults stores */
        def = o->type == LAM_CFG_BOOL              ? "false"
              : o->type == LAM_CFG_STRING           ? "unset"
              : o->type == LAM_CFG_ENUM             ? o->choices[0]
              : zero_outside_bounds(o)              ? "unset"
                                                    : "0";
    fprintf(f, "        [default: %s", def);
    lam_cfg_bounds_str(o, bounds, sizeof bounds);
    if (bounds[0] && !(o->min == 0 && o->max == 0)) /* the type's whole range says nothing */
        fprintf(f, "; %s", bounds);
    if (o->type == LAM_CFG_ENUM) {
        fprintf(f, "; one of");
        for (int i = 0; o->choices[i]; i++)
            fprintf(f, "%s %s", i ? "," : "", o->choices[i]);
    }
    lam_cfg_env_name(o->name, env, sizeof env);
    fprintf(f, "; env %s]\n", env);
}

void lam_cfg_print_help(const lam_cfg_spec_t *spec, FILE *f)
{
    fprintf(f, "usage: %s %s\n\n", spec->prog, spec->usage ? spec->usage : "[options]");
    fprintf(f, "Every option can also be set in a config file (--config) as \"name = value\", or in\n"
               "the environment as LAMINA_<NAME>. The command line wins over the environment,\n"
               "which wins over the file, which wins over the defaults.\n\n");
    for (int i = 0; i < spec->n_opts; i++)
        print_opt(f, &spec->opts[i]);
    fprintf(f, "      --config PATH\n"
               "        read options from this config file first [env LAMINA_CONFIG]\n"
               "      --print-config\n"
               "        print the effective configuration as a config file and exit\n"
               "  -h, --help\n"
               "        print this help and exit\n");
    if (spec->epilog)
        fprintf(f, "\n%s\n", spec->epilog);
}

static void print_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* A number with no default whose bounds exclude 0 still holds the 0 that
 * lam_cfg_set_defaults stored: "not set" (the program picks a value, e.g.
 * the model's context length), written as a comment so the dump loads. */
static bool zero_outside_bounds(const lam_cfg_opt_t *o)
{
    return !o->def && o->type != LAM_CFG_BOOL && o->type != LAM_CFG_STRING && o->type != LAM_CFG_ENUM &&
           !(o->min == 0 && o->max == 0) && (o->min > 0 || o->max < 0);
}

static bool unset_number(const lam_cfg_opt_t *o, const char *p)
{
    static const char zero[8];
    size_t n = o->type == LAM_CFG_U64 ? sizeof(uint64_t) : o->type == LAM_CFG_SIZE ? sizeof(size_t)
             : o->type == LAM_CFG_FLOAT ? sizeof(float) : sizeof(int);
    return zero_outside_bounds(o) && !memcmp(p, zero, n);
}

void lam_cfg_dump(const lam_cfg_spec_t *spec, const void *dst, FILE *f)
{
    fprintf(f, "# %s: effective configuration\n", spec->prog);
    for (int i = 0; i < spec->n_opts; i++) {
        const lam_cfg_opt_t *o = &spec->opts[i];
        const char *p = (const char *)dst + o->offset;
        bool b;
        int v;
        uint64_t u;
        float x;
        size_t z;
        char *s;
        char buf[32];
        if (unset_number(o, p)) {
            fprintf(f, "# %s is not set\n", o->name);
            continue;
        }
        switch (o->type) {
        case LAM_CFG_BOOL:
            memcpy(&b, p, sizeof b);
            fprintf(f, "%s = %s\n", o->name, b ? "true" : "false");
            break;
        case LAM_CFG_INT:
            memcpy(&v, p, sizeof v);
            fprintf(f, "%s = %d\n", o->name, v);
            break;
        case LAM_CFG_U64:
            memcpy(&u, p, sizeof u);
            fprintf(f, "%s = %" PRIu64 "\n", o->name, u);
            break;
        case LAM_CFG_FLOAT:
            memcpy(&x, p, sizeof x);
            /* the shortest of %g and %.9g that reads back as the same float */
            snprintf(buf, sizeof buf, "%g", (double)x);
            if (strtof(buf, NULL) != x)
                snprintf(buf, sizeof buf, "%.9g", (double)x);
            fprintf(f, "%s = %s\n", o->name, buf);
            break;
        case LAM_CFG_SIZE:
            memcpy(&z, p, sizeof z);
            lam_cfg_size_str(z, buf, sizeof buf);
            fprintf(f, "%s = %s\n", o->name, buf);
            break;
        case LAM_CFG_STRING:
            memcpy(&s, p, sizeof s);
            if (!s) {
                fprintf(f, "# %s is not set\n", o->name);
                break;
            }
            fprintf(f, "%s = ", o->name);
            print_quoted(f, s);
            fputc('\n', f);
            break;
        case LAM_CFG_ENUM: {
            int n = 0;
            memcpy(&v, p, sizeof v);
            while (o->choices[n])
                n++;
            if (v >= 0 && v < n)
                fprintf(f, "%s = %s\n", o->name, o->choices[v]);
            else
                fprintf(f, "# %s holds %d, not one of its choices\n", o->name, v);
            break;
        }
        }
    }
}
