#include "common/log.h"
#include "common/status.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static lam_log_level_t g_level = LAM_LOG_INFO;
static int g_level_from_env = 0;

static void lam_log_init_env(void)
{
    if (g_level_from_env)
        return;
    g_level_from_env = 1;
    const char *e = getenv("LAMINA_LOG_LEVEL");
    if (!e)
        return;
    if (!strcmp(e, "debug")) g_level = LAM_LOG_DEBUG;
    else if (!strcmp(e, "info")) g_level = LAM_LOG_INFO;
    else if (!strcmp(e, "warn")) g_level = LAM_LOG_WARN;
    else if (!strcmp(e, "error")) g_level = LAM_LOG_ERROR;
    else if (!strcmp(e, "quiet")) g_level = LAM_LOG_QUIET;
}

void lam_log_set_level(lam_log_level_t level)
{
    g_level_from_env = 1;
    g_level = level;
}

lam_log_level_t lam_log_get_level(void)
{
    lam_log_init_env();
    return g_level;
}

size_t lam_log_escape(char *dst, size_t cap, const char *src)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    if (!cap)
        return 0;
    for (const unsigned char *p = (const unsigned char *)src; *p; p++) {
        bool ctl = *p < 0x20 || *p == 0x7f;
        if (n + (ctl ? 4 : 1) >= cap)
            break;
        if (ctl) {
            dst[n++] = '\\';
            dst[n++] = 'x';
            dst[n++] = hex[*p >> 4];
            dst[n++] = hex[*p & 15];
        } else {
            dst[n++] = (char)*p;
        }
    }
    dst[n] = '\0';
    return n;
}

void lam_log_msg(lam_log_level_t level, const char *file, int line, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    lam_log_init_env();
    if (level < g_level || level >= LAM_LOG_QUIET)
        return;
    char raw[1024], msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    lam_log_escape(msg, sizeof msg, raw);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    /* one fprintf so lines from different threads do not interleave */
    fprintf(stderr, "%02d:%02d:%02d.%03ld %-5s %s:%d: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            ts.tv_nsec / 1000000, names[level], base, line, msg);
}

const char *lam_status_str(lam_status_t st)
{
    switch (st) {
    case LAM_OK: return "ok";
    case LAM_ERR_INVALID_ARG: return "invalid argument";
    case LAM_ERR_NO_MEMORY: return "out of memory";
    case LAM_ERR_IO: return "I/O error";
    case LAM_ERR_UNSUPPORTED: return "unsupported";
    case LAM_ERR_OVERFLOW: return "integer overflow";
    case LAM_ERR_NOT_FOUND: return "not found";
    case LAM_ERR_RANGE: return "value out of range";
    case LAM_ERR_GGUF_MAGIC: return "not a GGUF file (bad magic)";
    case LAM_ERR_GGUF_VERSION: return "unsupported GGUF version";
    case LAM_ERR_GGUF_TRUNCATED: return "GGUF file truncated";
    case LAM_ERR_GGUF_BAD_TYPE: return "GGUF: unknown or unsupported type";
    case LAM_ERR_GGUF_BAD_SHAPE: return "GGUF: bad tensor shape";
    case LAM_ERR_GGUF_BAD_OFFSET: return "GGUF: bad tensor offset";
    case LAM_ERR_GGUF_BAD_KEY: return "GGUF: bad metadata key";
    case LAM_ERR_MODEL_CONFIG: return "bad model configuration";
    case LAM_ERR_TOKENIZER: return "tokenizer error";
    case LAM_ERR_CONFIG: return "configuration error";
    case LAM_ERR_PROTO: return "malformed protocol message";
    case LAM_ERR_PROTO_VERSION: return "protocol magic or version mismatch";
    case LAM_ERR_AUTH: return "authentication failed";
    case LAM_ERR_MODEL_MISMATCH: return "peer has a different model or shard";
    case LAM_ERR_NET: return "network error";
    case LAM_ERR_CONN_CLOSED: return "connection closed";
    case LAM_ERR_TIMEOUT: return "timed out";
    case LAM_ERR_KV_FULL: return "KV cache full";
    case LAM_ERR_SEQ_UNKNOWN: return "unknown sequence";
    case LAM_ERR_SEQ_POS: return "sequence position mismatch";
    case LAM_ERR_CTX_FULL: return "context length exceeded";
    case LAM_ERR_CUDA: return "CUDA error";
    case LAM_ERR_CUDA_OOM: return "out of GPU memory";
    case LAM_ERR_NO_DEVICE: return "no CUDA device";
    case LAM_ERR_CUBLAS: return "cuBLAS error";
    }
    return "unknown status";
}

void lam_deadline_ts(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

double lam_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
