/* Node handshake proofs: both sides show that they know the shared cluster
 * token without sending it. See the handshake description in proto/wire.h. */
#ifndef LAM_PROTO_AUTH_H
#define LAM_PROTO_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "proto/wire.h"

/* Initialises the crypto library; call once before the others. */
lam_status_t lam_auth_init(void);

void lam_auth_nonce(uint8_t nonce[LAM_WIRE_NONCE]);

/* mac = HMAC-SHA256(token, role ‖ first ‖ second). role is "lamina-a" for
 * the attention node's proof and "lamina-c" for the compute node's. */
void lam_auth_mac(uint8_t mac[LAM_WIRE_MAC], const char *token, const char *role,
                  const uint8_t first[LAM_WIRE_NONCE], const uint8_t second[LAM_WIRE_NONCE]);

/* Constant-time comparison of two proofs. */
bool lam_auth_equal(const uint8_t a[LAM_WIRE_MAC], const uint8_t b[LAM_WIRE_MAC]);

/* Reads the cluster token: the first line of `path` if path is given (the
 * command line wins), else the value of LAMINA_CLUSTER_TOKEN; trailing
 * whitespace cut.
 * Tokens shorter than 16 bytes are refused. */
lam_status_t lam_auth_load_token(const char *path, char *buf, size_t len);

#endif
