/* Logging: one line per event to stderr, with a level and a timestamp.
 * Errors are logged once, where they are first understood (STYLE.md).
 * Messages quote names from model files and peers, so control bytes in a
 * message are written as \xNN: a line is always one line, and what a file
 * or a peer sends cannot forge log lines or drive a terminal. */
#ifndef LAM_LOG_H
#define LAM_LOG_H

#include <stddef.h>

typedef enum { LAM_LOG_DEBUG, LAM_LOG_INFO, LAM_LOG_WARN, LAM_LOG_ERROR, LAM_LOG_QUIET } lam_log_level_t;

void lam_log_set_level(lam_log_level_t level);
lam_log_level_t lam_log_get_level(void);
void lam_log_msg(lam_log_level_t level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Copies src into dst (cap bytes, NUL-terminated, truncated to fit) with
 * each control byte (below 0x20, and 0x7f) written as \xNN; returns the
 * length written. */
size_t lam_log_escape(char *dst, size_t cap, const char *src);

#define lam_log_debug(...) lam_log_msg(LAM_LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
#define lam_log_info(...)  lam_log_msg(LAM_LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define lam_log_warn(...)  lam_log_msg(LAM_LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define lam_log_error(...) lam_log_msg(LAM_LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)

/* Monotonic clock in seconds, for durations. */
double lam_now_s(void);

/* *ts = the CLOCK_REALTIME time ms milliseconds from now: the deadline
 * pthread_cond_timedwait takes. */
struct timespec;
void lam_deadline_ts(struct timespec *ts, int ms);

#endif
