/* Table-driven configuration for the Lamina programs.
 *
 * A program describes its options once, in a table of lam_cfg_opt_t (name,
 * type, default, bounds, help text, where the value goes); the same table
 * drives the config file parser, the environment, the command line and
 * --help. Sources, lowest precedence first:
 *
 *   1. the defaults in the table
 *   2. a config file: --config PATH (or LAMINA_CONFIG=PATH)
 *   3. the environment: LAMINA_<NAME>, the option's name upper-cased with
 *      '-' turned into '_' (kv-capacity -> LAMINA_KV_CAPACITY)
 *   4. the command line: --name VALUE, --name=VALUE, -x VALUE; booleans as
 *      --name / --no-name (or --name=true|false)
 *
 * Config file syntax, one setting per line:
 *
 *   # comment
 *   kv-capacity = 8G          # trailing comment after whitespace
 *   listen = "0.0.0.0"        # quotes keep spaces and '#'; \" and \\ escape
 *
 * Keys are the long option names. A key may appear once per file. Unknown
 * keys, bad values, values out of bounds, missing '=' and stray text are
 * errors reported as "FILE:LINE: 'TEXT': REASON" (environment:
 * "LAMINA_X='TEXT': REASON", command line: "option --x: 'TEXT': REASON"), and
 * the program exits before it reports ready. Strings are copied; the caller
 * frees them with lam_cfg_free.
 *
 * Only the table's own variables are read from the environment: other
 * LAMINA_ variables (LAMINA_CLUSTER_TOKEN, LAMINA_MODEL_DIR, ...) are left
 * alone. */
#ifndef LAM_CONFIG_H
#define LAM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/status.h"

typedef enum lam_cfg_type {
    LAM_CFG_BOOL,   /* bool: true/false, yes/no, on/off, 1/0 */
    LAM_CFG_INT,    /* int within [min, max] */
    LAM_CFG_U64,    /* uint64_t within [min, max] (seeds, counts) */
    LAM_CFG_FLOAT,  /* float within [min, max] */
    LAM_CFG_SIZE,   /* size_t bytes, suffix K/M/G/T (binary), optional B/iB; within [min, max] */
    LAM_CFG_STRING, /* char *, owned (lam_cfg_free); NULL when unset */
    LAM_CFG_ENUM,   /* int: index of the value in choices[] */
} lam_cfg_type_t;

typedef struct lam_cfg_opt {
    const char *name;            /* long name: file key, --name, LAMINA_NAME */
    char short_name;             /* -x, or 0 */
    lam_cfg_type_t type;
    size_t offset;               /* offsetof(options struct, field) */
    const char *def;             /* default written as in a file; NULL: 0 / false / NULL (a number
                                    whose bounds exclude 0 is then "not set": 0 in the struct, a
                                    comment in the dump, for the program to pick a value) */
    double min, max;             /* inclusive bounds for numbers and sizes; both 0: the type's range */
    const char *const *choices;  /* LAM_CFG_ENUM: NULL-terminated names */
    const char *metavar;         /* value name in --help ("N", "PATH"); NULL: from the type */
    const char *help;            /* one line or several ('\n') */
    /* optional extra check run on every value set from any source (after
     * the type's own parsing), e.g. "I/N" shards or host:port lists: return
     * false and write the reason into why. */
    bool (*check)(const char *text, void *field, char *why, size_t why_len);
} lam_cfg_opt_t;

typedef struct lam_cfg_spec {
    const char *prog;            /* "lamina-attention-node" */
    const char *usage;           /* first line of --help after "usage: " */
    const char *epilog;          /* printed after the options, or NULL */
    const lam_cfg_opt_t *opts;
    int n_opts;
} lam_cfg_spec_t;

/* Loads the configuration into dst (the struct the offsets point into;
 * zero it first) from all four sources. On --help, prints the help to
 * stdout and sets *help_shown (dst is then filled with defaults only). On
 * --print-config, loads every source, writes the result to stdout with
 * lam_cfg_dump and sets *help_shown too: either way the caller frees dst
 * and exits 0. Returns LAM_OK, or LAM_ERR_CONFIG with the one-line reason
 * in err (the caller prints it and exits 2). Positional arguments are
 * errors; the table itself is checked first (unique names and short
 * names, defaults that parse), and a bad table is LAM_ERR_CONFIG too, with
 * "option table of PROG: ..." in err.
 *
 * An environment variable set to the empty string counts as unset. String
 * values may not contain line breaks (a config file could not hold them).
 * Repeated command-line options: the last one wins. */
lam_status_t lam_cfg_load(const lam_cfg_spec_t *spec, void *dst, int argc, char **argv, bool *help_shown,
                          char *err, size_t err_len);

/* The pieces lam_cfg_load is made of, for tests and tools. */
lam_status_t lam_cfg_set_defaults(const lam_cfg_spec_t *spec, void *dst, char *err, size_t err_len);
lam_status_t lam_cfg_load_file(const lam_cfg_spec_t *spec, void *dst, const char *path, char *err,
                               size_t err_len);
/* Same as a file's contents; name is used in error messages. */
lam_status_t lam_cfg_load_text(const lam_cfg_spec_t *spec, void *dst, const char *name, const char *text,
                               char *err, size_t err_len);
/* Sets one option by name from text (source names the origin in errors). */
lam_status_t lam_cfg_set(const lam_cfg_spec_t *spec, void *dst, const char *name, const char *text,
                         const char *source, char *err, size_t err_len);

void lam_cfg_print_help(const lam_cfg_spec_t *spec, FILE *f);
/* Writes the effective configuration as a config file (strings quoted),
 * for --print-config and round-trip tests. */
void lam_cfg_dump(const lam_cfg_spec_t *spec, const void *dst, FILE *f);
/* Frees the strings in dst. */
void lam_cfg_free(const lam_cfg_spec_t *spec, void *dst);

/* "512M" -> 536870912: the LAM_CFG_SIZE syntax, for other parsers. */
bool lam_cfg_parse_size(const char *s, size_t *out);

#endif
