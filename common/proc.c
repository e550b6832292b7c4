#include "common/proc.h"
#include "common/log.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int lam_proc_start(lam_proc_t *np, const char *bin, const char *const *args, double timeout_s)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    const char *argv[64];
    int n = 0;
    argv[n++] = bin;
    for (int i = 0; args[i] && n < 63; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        /* never outlive the starter (a failed test, a killed benchmark):
         * an orphan keeps the starter's output pipes open */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    np->pid = pid;
    np->port = -1;
    char line[512];
    size_t len = 0;
    double deadline = lam_now_s() + timeout_s;
    while (np->port < 0 && lam_now_s() < deadline) {
        struct pollfd p = {fds[0], POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(fds[0], line + len, sizeof line - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
        line[len] = '\0';
        const char *at = strstr(line, "listening on ");
        const char *colon = at ? strrchr(at, ':') : NULL;
        if (colon && strchr(colon, '\n'))
            np->port = atoi(colon + 1);
    }
    np->out_fd = fds[0];
    if (np->port <= 0) {
        lam_log_error("%s did not report a listening port within %.0f s", bin, timeout_s);
        lam_proc_stop(np, 1);
        return -1;
    }
    return 0;
}

int lam_proc_stop(lam_proc_t *np, int hard)
{
    if (np->pid <= 0)
        return -1;
    kill(np->pid, hard ? SIGKILL : SIGTERM);
    int status = 0;
    while (waitpid(np->pid, &status, 0) < 0 && errno == EINTR) {
    }
    np->pid = 0;
    close(np->out_fd);
    np->out_fd = -1;
    return status;
}

const char *lam_proc_sibling(const char *name, const char *subdir, char *buf, size_t len)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return NULL;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    snprintf(buf, len, "%s/%s", self, name);
    if (access(buf, X_OK) == 0)
        return buf;
    slash = strrchr(self, '/');
    if (slash && subdir) {
        *slash = '\0';
        snprintf(buf, len, "%s/%s/%s", self, subdir, name);
        if (access(buf, X_OK) == 0)
            return buf;
        /* tests sit one level deeper (build/tests/<suite>/) */
        slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            snprintf(buf, len, "%s/%s/%s", self, subdir, name);
            if (access(buf, X_OK) == 0)
                return buf;
        }
    }
    return NULL;
}

void lam_proc_reexec_with_env(const char *name, const char *value, char **argv)
{
    if (getenv(name))
        return;
    setenv(name, value, 1);
    execv("/proc/self/exe", argv);
    lam_log_warn("could not re-execute with %s=%s; continuing without it", name, value);
}
