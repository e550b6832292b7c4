/* Starting and stopping helper processes that announce a listening port
 * on stdout ("... listening on ADDR:PORT"): attention nodes started by the
 * benchmarks, the tests and the local-cluster launcher. */
#ifndef LAM_PROC_H
#define LAM_PROC_H

#include <sys/types.h>

typedef struct lam_proc {
    pid_t pid;
    int port;      /* the port it listens on */
    int out_fd;    /* read end of its stdout, kept open so it never gets SIGPIPE */
} lam_proc_t;

/* Starts `bin` with args (NULL-terminated) and waits up to timeout_s for
 * its "listening on ADDR:PORT" line. stderr goes to ours. Returns 0 on
 * success; on failure the process is killed. */
int lam_proc_start(lam_proc_t *p, const char *bin, const char *const *args, double timeout_s);

/* SIGKILL (hard = 1) or SIGTERM, then reaps it. Returns its wait status. */
int lam_proc_stop(lam_proc_t *p, int hard);

/* The path of a program installed next to the running one (same
 * directory), or in the build tree's `subdir` (relative to that directory's
 * parent), whichever exists; NULL if neither. */
const char *lam_proc_sibling(const char *name, const char *subdir, char *buf, size_t len);

/* If `name` is not set in the environment: sets it to `value` and
 * re-executes this program with the same arguments (for settings a library
 * reads when it loads, such as libgomp's GOMP_SPINCOUNT). Returns only if
 * it was already set or the exec failed. */
void lam_proc_reexec_with_env(const char *name, const char *value, char **argv);

#endif
