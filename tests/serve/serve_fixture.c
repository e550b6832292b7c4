#include "tests/serve/serve_fixture.h"
#include "common/log.h"
#include "tests/util/fixtures.h"
#include "tests/util/nodeproc.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char g_model[4096];
static char g_key_file[256];

bool sf_init(bool *skip)
{
    np_loopback_env();
    setenv("LAMINA_LOG_LEVEL", "warn", 0); /* the servers' logs: problems only */
    signal(SIGPIPE, SIG_IGN);
    if (!fx_model_path(g_model, sizeof g_model, skip))
        return false;
    snprintf(g_key_file, sizeof g_key_file, "/tmp/lamina-test-key-%d", (int)getpid());
    FILE *f = fopen(g_key_file, "w");
    if (!f)
        return false;
    fprintf(f, "  %s  \n", SF_API_KEY); /* surrounding blanks are not part of the key */
    fclose(f);
    return true;
}

const char *sf_model_path(void) { return g_model; }

int sf_start_attention(lam_proc_t *an, int port)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    const char *args[] = {"--model", g_model, "--port", ps, "--kv-capacity", "256M", "--threads", "1", NULL};
    return lam_proc_start(an, LAM_ATTN_NODE_BIN, args, 60.0);
}

int sf_start_compute(lam_proc_t *p, int an_port, const char *const *extra)
{
    char attn[64];
    snprintf(attn, sizeof attn, "127.0.0.1:%d", an_port);
    const char *args[48] = {"--attention", attn, "--http-port", "0", "--model-name", SF_MODEL_NAME,
                            "--api-key-file", g_key_file};
    int n = 8;
    for (int i = 0; extra && extra[i] && n < 46; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    return lam_proc_start(p, LAM_COMPUTE_NODE_BIN, args, 120.0);
}

int sf_suite_start(lam_proc_t *an, lam_proc_t *cn, bool *skip, const char *const *extra)
{
    if (!sf_init(skip))
        return *skip ? 0 : -1;
    if (sf_start_attention(an, 0) != 0 || sf_start_compute(cn, an->port, extra) != 0)
        return -1;
    return 0;
}

int sf_suite_stop(lam_proc_t *an, lam_proc_t *cn)
{
    if (cn->pid > 0)
        lam_proc_stop(cn, 0);
    if (an->pid > 0)
        lam_proc_stop(an, 0);
    return 0;
}

int sf_wait_exit(lam_proc_t *p, double timeout_s)
{
    double deadline = lam_now_s() + timeout_s;
    int status = -1;
    while (lam_now_s() < deadline) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            close(p->out_fd);
            p->out_fd = -1;
            return status;
        }
        if (r < 0 && errno != EINTR)
            break;
        usleep(20000);
    }
    lam_proc_stop(p, 1);
    return -1;
}

static json_t *parse(hc_resp_t *r, int *status)
{
    *status = r->status;
    json_t *j = r->body ? json_loadb(r->body, r->body_len, 0, NULL) : NULL;
    if (!j && r->status)
        printf("\n  (non-JSON body with status %d: %.200s)", r->status, r->body ? r->body : "");
    hc_resp_free(r);
    return j;
}

json_t *sf_post(int port, const char *path, const char *body, int *status)
{
    hc_resp_t r;
    if (hc_request(port, "POST", path, SF_AUTH, body, strlen(body), 120.0, &r) != 0) {
        *status = 0;
        hc_resp_free(&r);
        return NULL;
    }
    return parse(&r, status);
}

json_t *sf_get(int port, const char *path, int *status)
{
    hc_resp_t r;
    if (hc_request(port, "GET", path, SF_AUTH, NULL, 0, 30.0, &r) != 0) {
        *status = 0;
        hc_resp_free(&r);
        return NULL;
    }
    return parse(&r, status);
}

bool sf_is_error(const json_t *body)
{
    json_t *e = json_object_get(body, "error");
    return json_is_object(e) && json_is_string(json_object_get(e, "message")) &&
           json_string_length(json_object_get(e, "message")) > 0 && json_is_string(json_object_get(e, "type")) &&
           json_object_get(e, "param") && json_object_get(e, "code");
}

double sf_metric(int port, const char *series)
{
    hc_resp_t r;
    if (hc_request(port, "GET", "/metrics", NULL, NULL, 0, 30.0, &r) != 0 || r.status != 200) {
        hc_resp_free(&r);
        return -1;
    }
    double v = -1;
    size_t n = strlen(series);
    for (char *line = r.body; line && *line;) {
        char *eol = strchr(line, '\n');
        if (!strncmp(line, series, n) && line[0] != '#') {
            char *sp = eol ? eol : line + strlen(line);
            while (sp > line && sp[-1] != ' ')
                sp--;
            v = strtod(sp, NULL);
            break;
        }
        line = eol ? eol + 1 : NULL;
    }
    hc_resp_free(&r);
    return v;
}

const char *sf_reply_text(const json_t *reply)
{
    json_t *c = json_array_get(json_object_get(reply, "choices"), 0);
    json_t *t = json_object_get(c, "text");
    if (!t)
        t = json_object_get(json_object_get(c, "message"), "content");
    return json_string_value(t);
}

bool sf_streq(const char *s, const char *want)
{
    if (!s)
        printf("\n  (NULL where \"%s\" was expected)", want);
    return s && !strcmp(s, want);
}

bool sf_str_is(const json_t *s, const char *want) { return sf_streq(json_string_value(s), want); }

bool sf_error_code_is(const json_t *body, const char *want)
{
    return sf_str_is(json_object_get(json_object_get(body, "error"), "code"), want);
}
