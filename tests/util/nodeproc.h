/* Test helper: runs lamina-attention-node processes on loopback. */
#ifndef LAM_TEST_NODEPROC_H
#define LAM_TEST_NODEPROC_H

#include <sys/types.h>

typedef struct nodeproc {
    pid_t pid;
    int port;      /* the port it listens on */
    int out_fd;    /* read end of its stdout, kept open so it never gets SIGPIPE */
} nodeproc_t;

/* Sets the loopback UCX environment (UCX_TLS=tcp unless already set,
 * UCX_NET_DEVICES=lo, UCX_MM_ERROR_HANDLING=y, UCX_WARN_UNUSED_ENV_VARS=n)
 * and LAMINA_CLUSTER_TOKEN (unless set). Call before any UCX use. */
void np_loopback_env(void);

/* Starts `bin` with args (NULL-terminated; "--port 0" style is the
 * caller's) and waits up to timeout_s for its "listening on ADDR:PORT"
 * line. stderr goes to ours. Returns 0 on success. */
int np_start(nodeproc_t *np, const char *bin, const char *const *args, double timeout_s);

/* SIGKILL (hard = 1) or SIGTERM, then reaps it. Returns its wait status. */
int np_stop(nodeproc_t *np, int hard);

#endif
