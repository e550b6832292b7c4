/* Test helper for the serving suites: a real lamina-attention-node and
 * lamina-compute-node processes serving HTTP on loopback (ports chosen by
 * the kernel), and JSON / metrics helpers on top of http_client.h. */
#ifndef LAM_TEST_SERVE_FIXTURE_H
#define LAM_TEST_SERVE_FIXTURE_H

#include <jansson.h>
#include <stdbool.h>

#include "common/proc.h"
#include "tests/serve/http_client.h"

#define SF_MODEL_NAME "test-model"
#define SF_API_KEY "test-api-key-0123456789"
#define SF_AUTH "Authorization: Bearer " SF_API_KEY "\r\n"

/* Loopback environment, the model path and the API key file; false (with
 * *skip set when LAMINA_ALLOW_NO_MODEL=1) if the model is missing. */
bool sf_init(bool *skip);
const char *sf_model_path(void);

/* Starts an attention node (1 thread) on port (0: any). */
int sf_start_attention(lam_proc_t *an, int port);
/* Starts a compute node serving HTTP on port 0 against the attention node
 * at port an_port, with --model-name SF_MODEL_NAME, --api-key-file and the
 * extra arguments (NULL-terminated, may be NULL). p->port is the HTTP port. */
int sf_start_compute(lam_proc_t *p, int an_port, const char *const *extra);
/* A suite's setup, for CUnit's init hook: sf_init, an attention node on
 * any port, and a compute node against it with the extra arguments. 0, or
 * -1 on failure; 0 with *skip set when the model is missing and that is
 * allowed (the tests then return at once). */
int sf_suite_start(lam_proc_t *an, lam_proc_t *cn, bool *skip, const char *const *extra);
/* Stops what sf_suite_start started, compute node first; returns 0. */
int sf_suite_stop(lam_proc_t *an, lam_proc_t *cn);
/* Waits up to timeout_s for the process to exit by itself; returns its
 * wait status, or -1 (then it is killed). */
int sf_wait_exit(lam_proc_t *p, double timeout_s);

/* POST with the API key; the parsed body (NULL if it is not JSON), the
 * HTTP status in *status. */
json_t *sf_post(int port, const char *path, const char *body, int *status);
json_t *sf_get(int port, const char *path, int *status);
/* An OpenAI error body: {"error":{"message":str,"type":str,"param":..,"code":..}}. */
bool sf_is_error(const json_t *body);

/* The value of the first /metrics line starting with `series` (name and
 * labels up to where the line should match), or -1 if there is none. */
double sf_metric(int port, const char *series);

/* The text a chat or completion reply carries (choices[0]). */
const char *sf_reply_text(const json_t *reply);
/* NULL-safe string checks for assertions: s equals want; the error body's
 * code equals want. */
bool sf_streq(const char *s, const char *want);
bool sf_str_is(const json_t *s, const char *want);
bool sf_error_code_is(const json_t *body, const char *want);

#endif
