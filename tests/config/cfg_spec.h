/* An option table with one option of every type, shared by the config
 * tests and the config fuzz target. */
#ifndef LAM_TEST_CFG_SPEC_H
#define LAM_TEST_CFG_SPEC_H

#include "common/config.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

typedef struct tcfg {
    bool verbose;
    bool chat;
    int port;
    int level;
    int ctx;
    uint64_t seed;
    float temp;
    float bias;
    size_t cap;
    size_t any_size;
    char *name;
    char *token_file;
    int dtype;
    char *shard;
} tcfg_t;

static const char *const tcfg_dtypes[] = {"f16", "bf16", "f32", NULL};

/* "I/N" with 0 <= I < N <= 64 */
static inline bool tcfg_check_shard(const char *text, void *field, char *why, size_t why_len)
{
    (void)field;
    int i, n, end = -1;
    if (sscanf(text, "%d/%d%n", &i, &n, &end) != 2 || end != (int)strlen(text) || text[0] < '0' ||
        text[0] > '9' || n < 1 || n > 64 || i < 0 || i >= n) {
        snprintf(why, why_len, "not a shard I/N with 0 <= I < N <= 64");
        return false;
    }
    return true;
}

static const lam_cfg_opt_t tcfg_opts[] = {
    {"verbose", 'v', LAM_CFG_BOOL, offsetof(tcfg_t, verbose), NULL, 0, 0, NULL, NULL, "say more", NULL},
    {"chat", 0, LAM_CFG_BOOL, offsetof(tcfg_t, chat), "true", 0, 0, NULL, NULL, "use the chat template", NULL},
    {"port", 'p', LAM_CFG_INT, offsetof(tcfg_t, port), "7400", 0, 65535, NULL, NULL,
     "port to listen on\n0 = any free port", NULL},
    {"level", 0, LAM_CFG_INT, offsetof(tcfg_t, level), "-3", -10, 10, NULL, "L", "a signed level", NULL},
    {"ctx", 'c', LAM_CFG_INT, offsetof(tcfg_t, ctx), NULL, 1, 1 << 24, NULL, NULL,
     "context length (not set: the model's)", NULL},
    {"seed", 's', LAM_CFG_U64, offsetof(tcfg_t, seed), "0", 0, 0, NULL, NULL, "sampling seed", NULL},
    {"temperature", 0, LAM_CFG_FLOAT, offsetof(tcfg_t, temp), "0.8", 0, 2, NULL, NULL, "sampling temperature",
     NULL},
    {"bias", 0, LAM_CFG_FLOAT, offsetof(tcfg_t, bias), NULL, 0, 0, NULL, NULL, "unbounded float", NULL},
    {"kv-capacity", 0, LAM_CFG_SIZE, offsetof(tcfg_t, cap), "1G", 1, 1099511627776.0, NULL, NULL,
     "KV cache memory", NULL},
    {"any-size", 0, LAM_CFG_SIZE, offsetof(tcfg_t, any_size), "0", 0, 0, NULL, NULL, "unbounded size", NULL},
    {"name", 'n', LAM_CFG_STRING, offsetof(tcfg_t, name), "node", 0, 0, NULL, "NAME", "node name", NULL},
    {"token-file", 0, LAM_CFG_STRING, offsetof(tcfg_t, token_file), NULL, 0, 0, NULL, "PATH", "token file",
     NULL},
    {"kv-dtype", 0, LAM_CFG_ENUM, offsetof(tcfg_t, dtype), "f16", 0, 0, tcfg_dtypes, NULL, "KV element type",
     NULL},
    {"shard", 0, LAM_CFG_STRING, offsetof(tcfg_t, shard), "0/1", 0, 0, NULL, "I/N", "which shard",
     tcfg_check_shard},
};

static const lam_cfg_spec_t tcfg_spec = {
    "lamina-test", "[options]", "An epilog line.", tcfg_opts, (int)(sizeof tcfg_opts / sizeof tcfg_opts[0]),
};

#endif
