#include "proto/auth.h"
#include "common/log.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static_assert(LAM_WIRE_MAC == crypto_auth_hmacsha256_BYTES, "proof is one HMAC-SHA256");

lam_status_t lam_auth_init(void)
{
    if (sodium_init() < 0) {
        lam_log_error("auth: libsodium failed to initialise");
        return LAM_ERR_UNSUPPORTED;
    }
    return LAM_OK;
}

void lam_auth_nonce(uint8_t nonce[LAM_WIRE_NONCE]) { randombytes_buf(nonce, LAM_WIRE_NONCE); }

void lam_auth_mac(uint8_t mac[LAM_WIRE_MAC], const char *token, const char *role,
                  const uint8_t first[LAM_WIRE_NONCE], const uint8_t second[LAM_WIRE_NONCE])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)token, strlen(token));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)role, strlen(role));
    crypto_auth_hmacsha256_update(&st, first, LAM_WIRE_NONCE);
    crypto_auth_hmacsha256_update(&st, second, LAM_WIRE_NONCE);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof st);
}

bool lam_auth_equal(const uint8_t a[LAM_WIRE_MAC], const uint8_t b[LAM_WIRE_MAC])
{
    return sodium_memcmp(a, b, LAM_WIRE_MAC) == 0;
}

lam_status_t lam_auth_load_token(const char *path, char *buf, size_t len)
{
    const char *env = getenv("LAMINA_CLUSTER_TOKEN");
    if (path && *path) {
        FILE *f = fopen(path, "r");
        if (!f) {
            lam_log_error("auth: cannot open token file %s", path);
            return LAM_ERR_IO;
        }
        if (!fgets(buf, (int)len, f))
            buf[0] = '\0';
        fclose(f);
    } else if (env && *env) {
        snprintf(buf, len, "%s", env);
    } else {
        lam_log_error("auth: no cluster token (give a token file or set LAMINA_CLUSTER_TOKEN)");
        return LAM_ERR_CONFIG;
    }
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        buf[--n] = '\0';
    if (n < 16) {
        lam_log_error("auth: cluster token too short (%zu bytes; at least 16)", n);
        return LAM_ERR_CONFIG;
    }
    return LAM_OK;
}
