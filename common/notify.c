/* sd_notify wrappers (common/notify.h). */
#include "common/notify.h"

#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

/* Sends head (state lines, each ending in '\n', or "") and STATUS=<fmt>. */
static void send_state(const char *head, const char *fmt, va_list ap)
{
    if (!getenv("NOTIFY_SOCKET"))
        return;
    char status[512], msg[600];
    vsnprintf(status, sizeof status, fmt, ap);
    for (char *c = status; *c; c++) /* one STATUS= line: the protocol is newline-separated */
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    snprintf(msg, sizeof msg, "%sSTATUS=%s", head, status);
    int r = sd_notify(0, msg);
    if (r <= 0) {
        char ebuf[128];
        lam_log_debug("sd_notify failed: %s", r < 0 ? strerror_r(-r, ebuf, sizeof ebuf) : "no socket");
    }
}

void lam_notify_status(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_state("", fmt, ap);
    va_end(ap);
}

void lam_notify_ready_status(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_state("READY=1\n", fmt, ap);
    va_end(ap);
}

void lam_notify_ready(void) { lam_notify_ready_status("Ready"); }

void lam_notify_stopping(void)
{
    if (!getenv("NOTIFY_SOCKET"))
        return;
    int r = sd_notify(0, "STOPPING=1\nSTATUS=Stopping");
    if (r <= 0)
        lam_log_debug("sd_notify(STOPPING=1) failed: %d", r);
}
