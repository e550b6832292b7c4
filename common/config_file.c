/* The config file syntax (common/config.h): "key = value" lines, '#'
 * comments, quoted strings with \" and \\ escapes, each key once. Every
 * error names the file, the line and the offending text. */
#include "common/config.h"
#include "common/config_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Config files are a few hundred bytes; anything this big is a mistake. */
#define MAX_FILE_BYTES (1u << 20)

static lam_status_t line_error(char *err, size_t err_len, const char *file, int line, const char *text,
                               const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static lam_status_t line_error(char *err, size_t err_len, const char *file, int line, const char *text,
                               const char *fmt, ...)
{
    if (!err || !err_len)
        return LAM_ERR_CONFIG;
    char q[128], why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    lam_cfg_quote(q, sizeof q, text);
    snprintf(err, err_len, "%s:%d: '%s': %s", file, line, q, why);
    return LAM_ERR_CONFIG;
}

static const char *skip_blank(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Unquotes the string starting after the opening quote at *p into out. Returns false with a reason on an
 * unknown escape or a missing closing quote; else *p points after the
 * closing quote. */
static bool unquote(char **p, char *out, char *why, size_t n)
{
    char *s = *p;
    for (;;) {
        char c = *s++;
        if (!c) {
            snprintf(why, n, "unterminated quote");
            return false;
        }
        if (c == '"')
            break;
        if (c == '\\') {
            if (*s != '"' && *s != '\\') {
                snprintf(why, n, "unknown escape '\\%c' (only \\\" and \\\\)", *s ? *s : ' ');
                return false;
            }
            c = *s++;
        }
        *out++ = c;
    }
    *out = '\0';
    *p = s;
    return true;
}

/* Handles one line (no '\n'); seen[i] is the line option i was set on;
 * scratch has room for the line. */
static lam_status_t parse_line(const lam_cfg_spec_t *spec, void *dst, const char *name, int lineno, char *line,
                               char *scratch, int *seen, char *err, size_t err_len)
{
    size_t len = strlen(line);
    if (len && line[len - 1] == '\r')
        line[--len] = '\0';
    char *p = (char *)skip_blank(line);
    if (!*p || *p == '#')
        return LAM_OK;
    char *key = p;
    while (*p && *p != ' ' && *p != '\t' && *p != '=')
        p++;
    char *key_end = p;
    p = (char *)skip_blank(p);
    if (*p != '=')
        return line_error(err, err_len, name, lineno, key, "missing '=' (lines are 'key = value')");
    if (key_end == key)
        return line_error(err, err_len, name, lineno, key, "missing key before '='");
    *key_end = '\0';
    p = (char *)skip_blank(p + 1);

    char why[160];
    char *value = p;
    if (*p == '"') {
        char *start = p++;
        value = scratch;
        if (!unquote(&p, value, why, sizeof why))
            return line_error(err, err_len, name, lineno, start, "%s", why);
        char *rest = (char *)skip_blank(p);
        if (*rest && *rest != '#')
            return line_error(err, err_len, name, lineno, rest, "stray text after the quoted value");
    } else {
        /* an unquoted value ends at a '#' after whitespace, or at the end */
        char *end = p;
        while (*end && !(*end == '#' && (end[-1] == ' ' || end[-1] == '\t')))
            end++;
        while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        *end = '\0';
        if (!*value)
            return line_error(err, err_len, name, lineno, key, "no value (write \"\" for an empty string)");
    }

    const lam_cfg_opt_t *o = lam_cfg_find(spec, key);
    if (!o) {
        const lam_cfg_opt_t *neg = !strncmp(key, "no-", 3) ? lam_cfg_find(spec, key + 3) : NULL;
        if (neg && neg->type == LAM_CFG_BOOL)
            return line_error(err, err_len, name, lineno, key, "unknown key (write '%s = false')", neg->name);
        if (!strcmp(key, "config"))
            return line_error(err, err_len, name, lineno, key, "a config file cannot include another");
        const char *near = lam_cfg_nearest(spec, key);
        if (near)
            return line_error(err, err_len, name, lineno, key, "unknown key (did you mean '%s'?)", near);
        return line_error(err, err_len, name, lineno, key, "unknown key");
    }
    int idx = (int)(o - spec->opts);
    if (seen[idx])
        return line_error(err, err_len, name, lineno, key, "set twice, first on line %d", seen[idx]);
    seen[idx] = lineno;
    char prefix[320];
    snprintf(prefix, sizeof prefix, "%s:%d: ", name, lineno);
    return lam_cfg_set_opt(o, dst, value, prefix, err, err_len);
}

lam_status_t lam_cfg_load_text(const lam_cfg_spec_t *spec, void *dst, const char *name, const char *text,
                               char *err, size_t err_len)
{
    char *buf = strdup(text);
    char *scratch = malloc(strlen(text) + 1);
    int *seen = calloc((size_t)spec->n_opts + 1, sizeof *seen);
    lam_status_t st = LAM_OK;
    if (!buf || !scratch || !seen) {
        snprintf(err, err_len, "%s: out of memory", name);
        st = LAM_ERR_NO_MEMORY;
        goto out;
    }
    char *line = buf;
    for (int lineno = 1; st == LAM_OK; lineno++) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        st = parse_line(spec, dst, name, lineno, line, scratch, seen, err, err_len);
        if (!nl)
            break;
        line = nl + 1;
    }
out:
    free(seen);
    free(scratch);
    free(buf);
    return st;
}

lam_status_t lam_cfg_load_file(const lam_cfg_spec_t *spec, void *dst, const char *path, char *err,
                               size_t err_len)
{
    char ebuf[128];
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "cannot open config file %s: %s", path, strerror_r(errno, ebuf, sizeof ebuf));
        return LAM_ERR_CONFIG;
    }
    char *text = malloc(MAX_FILE_BYTES + 1);
    if (!text) {
        fclose(f);
        snprintf(err, err_len, "%s: out of memory", path);
        return LAM_ERR_NO_MEMORY;
    }
    size_t n = fread(text, 1, MAX_FILE_BYTES + 1, f);
    int read_errno = ferror(f) ? errno : 0;
    fclose(f);
    lam_status_t st = LAM_ERR_CONFIG;
    if (read_errno) {
        snprintf(err, err_len, "cannot read config file %s: %s", path, strerror_r(read_errno, ebuf, sizeof ebuf));
    } else if (n > MAX_FILE_BYTES) {
        snprintf(err, err_len, "%s: larger than %u bytes: not a config file", path, MAX_FILE_BYTES);
    } else {
        text[n] = '\0';
        char *nul = memchr(text, '\0', n);
        if (nul) {
            int line = 1;
            for (char *c = text; c < nul; c++)
                line += *c == '\n';
            snprintf(err, err_len, "%s:%d: contains a NUL byte: not a text file", path, line);
        } else {
            st = lam_cfg_load_text(spec, dst, path, text, err, err_len);
        }
    }
    free(text);
    return st;
}

/* ---- "did you mean" ---------------------------------------------------------------- */

/* Edit distance (insert, delete, substitute, swap neighbours) with '_'
 * equal to '-'; names are at most 64 bytes (the table check). */
static int distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return 1000;
    int d[65][65];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            char ca = a[i - 1] == '_' ? '-' : a[i - 1], cb = b[j - 1] == '_' ? '-' : b[j - 1];
            int best = d[i - 1][j - 1] + (ca != cb);
            if (d[i - 1][j] + 1 < best)
                best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && ca == b[j - 2] && a[i - 2] == cb && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

const char *lam_cfg_nearest(const lam_cfg_spec_t *spec, const char *name)
{
    const char *best = NULL;
    int best_d = 1000;
    for (int i = 0; i < spec->n_opts; i++) {
        int d = distance(name, spec->opts[i].name);
        if (d < best_d)
            best_d = d, best = spec->opts[i].name;
    }
    /* close: a third of the name's letters at most (one for short names) */
    int limit = (int)strlen(name) / 3;
    return best_d <= (limit < 1 ? 1 : limit) ? best : NULL;
}
