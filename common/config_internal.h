/* Shared by config.c (values, environment, command line), config_file.c
 * (the file syntax) and config_print.c (--help, the dump). Not for use
 * outside common/config*.c. */
#ifndef LAM_CONFIG_INTERNAL_H
#define LAM_CONFIG_INTERNAL_H

#include "common/config.h"

/* The option called name, or NULL. */
const lam_cfg_opt_t *lam_cfg_find(const lam_cfg_spec_t *spec, const char *name);
/* The option whose name is closest to name (typos, '_' for '-'), or NULL
 * if none is close. */
const char *lam_cfg_nearest(const lam_cfg_spec_t *spec, const char *name);
/* Parses, checks and stores one value; on failure err gets
 * "<prefix>'TEXT': REASON" and the field is unchanged. */
lam_status_t lam_cfg_set_opt(const lam_cfg_opt_t *o, void *dst, const char *text, const char *prefix, char *err,
                             size_t err_len);
/* text for an error message: control bytes and '\' escaped, long texts
 * cut with "..."; n >= 8. */
void lam_cfg_quote(char *out, size_t n, const char *text);
/* "kv-capacity" -> "LAMINA_KV_CAPACITY" */
void lam_cfg_env_name(const char *name, char *out, size_t n);
/* "0 to 65535", "1 to 16E", ...: the option's bounds for messages and --help. */
void lam_cfg_bounds_str(const lam_cfg_opt_t *o, char *out, size_t n);
/* Bytes in the largest binary unit that keeps them exact: 1073741824 -> "1G". */
void lam_cfg_size_str(size_t v, char *out, size_t n);

#endif
