/* Parsing numbers from command lines and config values: the whole string
 * must be the number, within [lo, hi]. */
#ifndef LAM_PARSE_H
#define LAM_PARSE_H

#include <stdbool.h>

bool lam_parse_int(const char *s, long lo, long hi, int *out);
bool lam_parse_float(const char *s, float lo, float hi, float *out);

#endif
