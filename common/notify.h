/* systemd service notification (sd_notify(3)) for Type=notify units:
 * STATUS= while starting, READY=1 once the service really serves,
 * STOPPING=1 when it begins to shut down. Every call is a no-op when
 * NOTIFY_SOCKET is unset (not started by systemd) and never fails the
 * caller: a lost notification is logged at debug level only.
 * Safe from any thread; not from signal handlers (set a flag there and
 * notify from the main loop). */
#ifndef LAM_NOTIFY_H
#define LAM_NOTIFY_H

/* STATUS=<text>, shown by systemctl status. Line breaks become spaces. */
void lam_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* READY=1 with STATUS=Ready. */
void lam_notify_ready(void);
/* READY=1 with STATUS=<text>, e.g. "Serving on 0.0.0.0:7400". */
void lam_notify_ready_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* STOPPING=1 with STATUS=Stopping. */
void lam_notify_stopping(void);

#endif
