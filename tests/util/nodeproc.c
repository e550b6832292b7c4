#include "tests/util/nodeproc.h"

#include <stdlib.h>

void np_loopback_env(void)
{
    setenv("UCX_TLS", "tcp", 0);
    setenv("UCX_NET_DEVICES", "lo", 0);
    setenv("UCX_MM_ERROR_HANDLING", "y", 0);
    setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 0);
    setenv("LAMINA_CLUSTER_TOKEN", "test-cluster-token-0123456789", 0);
}
