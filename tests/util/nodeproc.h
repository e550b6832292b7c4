/* Test helper: the loopback environment for tests that start attention
 * nodes (common/proc.h starts them). */
#ifndef LAM_TEST_NODEPROC_H
#define LAM_TEST_NODEPROC_H

/* Sets UCX_TLS=tcp (unless set: the suite also runs with sm,tcp and ^cma),
 * UCX_NET_DEVICES=lo, UCX_MM_ERROR_HANDLING=y, UCX_WARN_UNUSED_ENV_VARS=n,
 * and LAMINA_CLUSTER_TOKEN (unless set). Call before any UCX use. */
void np_loopback_env(void);

#endif
