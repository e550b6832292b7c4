/* Message transport over UCX active messages.
 *
 * One lam_net_t owns a UCX context and worker and is used by one thread at a
 * time: by one thread only (UCS_THREAD_MODE_SINGLE), or, with opts.shared,
 * by several threads that take turns under a mutex of the caller's
 * (UCS_THREAD_MODE_SERIALIZED; see lam_net_wait_unlocking). It can listen on a socket address, connect to
 * one, and send and receive whole messages (byte buffers, at most max_msg
 * bytes). Receiving goes into a pool of preallocated buffers registered with
 * UCX (ucp_mem_map): eager messages are copied there, rendezvous messages
 * are received straight into them with ucp_am_recv_data_nbx. When the pool
 * is empty, arriving messages wait inside UCX (persistent data descriptors)
 * until a buffer frees up: backpressure, never an allocation.
 *
 * Messages below LAM_NET_RNDV_THRESH bytes go eagerly, larger ones by
 * rendezvous (UCX_RNDV_THRESH in the environment overrides it). UCX 1.13
 * has no RMA over TCP, so its rendezvous takes two more trips through both
 * sides' progress before the data moves: a decode step's 31 KB of q/k/v
 * and 19 KB of o (batch 16) went back and forth in 90-130 us that way and
 * in 20 us eagerly, on loopback.
 *
 * Callbacks run from lam_net_progress, never from inside a UCX callback, so
 * they may send, close connections and do real work. A message buffer is
 * valid until the on_msg callback returns.
 *
 * Idle waiting: lam_net_wait arms the worker and sleeps in epoll. Other file
 * descriptors (an eventfd from another thread, say) can be added to the same
 * epoll set with lam_net_watch_fd so one wait covers both. */
#ifndef LAM_PROTO_NET_H
#define LAM_PROTO_NET_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define LAM_NET_RNDV_THRESH 262144 /* bytes; see above */

typedef struct lam_net lam_net_t;
typedef struct lam_conn lam_conn_t;

typedef struct lam_net_cbs {
    /* A client connected to our listener (server side only). */
    void (*on_accept)(void *ud, lam_conn_t *c);
    /* A client-side connection finished connecting (lam_net_connect). */
    void (*on_connect)(void *ud, lam_conn_t *c);
    /* A whole message arrived on c. */
    void (*on_msg)(void *ud, lam_conn_t *c, const void *msg, size_t len);
    /* c is closed (peer failure, lam_net_close, or a transport error); this
     * is the last callback for c, which is freed when it returns. Sends
     * still in flight on c have completed (with an error) before it. */
    void (*on_close)(void *ud, lam_conn_t *c, lam_status_t why);
    void *ud;
} lam_net_cbs_t;

typedef struct lam_net_opts {
    size_t max_msg;            /* largest message sent or received */
    int n_recv_bufs;           /* receive pool size (buffers of max_msg bytes) */
    int shared;                /* several threads take turns (serialized worker) */
} lam_net_opts_t;

/* Send completion: st is LAM_OK or the reason the message was not delivered. */
typedef void (*lam_net_send_cb)(void *arg, lam_status_t st);

lam_status_t lam_net_create(const lam_net_opts_t *o, const lam_net_cbs_t *cbs, lam_net_t **out);
/* Closes every connection (on_close runs for each), then frees everything. */
void lam_net_destroy(lam_net_t *n);

/* Listens on addr (NULL or "" = 127.0.0.1) and port (0 = any free port);
 * *bound_port gets the port actually bound. One listener per lam_net_t. */
lam_status_t lam_net_listen(lam_net_t *n, const char *addr, int port, int *bound_port);

/* Starts connecting to host:port. *out is usable at once (sends queue inside
 * UCX); on_connect or on_close reports how it went. A refused or unreachable
 * peer reaches on_close, usually within one progress round. */
lam_status_t lam_net_connect(lam_net_t *n, const char *host, int port, lam_conn_t **out);

/* Sends len bytes (<= max_msg). buf must stay valid and unchanged until cb
 * runs (cb may be NULL: then buf must stay valid until the connection's
 * on_close or lam_net_flush). Errors that are known at once (closed
 * connection, oversized message) are returned and cb is not called. */
lam_status_t lam_net_send(lam_conn_t *c, const void *buf, size_t len, lam_net_send_cb cb, void *arg);

/* Starts closing c; on_close follows from a later progress call. */
void lam_net_close(lam_conn_t *c, lam_status_t why);

/* Runs UCX progress and delivers queued callbacks; returns how many events
 * it handled (0: nothing happened). */
int lam_net_progress(lam_net_t *n);

/* Sleeps until UCX has work, a watched fd is readable, or timeout_ms passes
 * (-1: no limit). Returns at once if work is already pending. */
lam_status_t lam_net_wait(lam_net_t *n, int timeout_ms);

/* lam_net_wait for a shared lam_net_t: the caller holds mu, which is
 * released while sleeping (so that other threads may progress meanwhile)
 * and held again on return. */
lam_status_t lam_net_wait_unlocking(lam_net_t *n, int timeout_ms, pthread_mutex_t *mu);

/* mute = 1: UCX activity no longer ends lam_net_wait (only watched fds and
 * the timeout do), for while another thread polls a shared worker itself;
 * mute = 0 undoes it. Thread-safe against a lam_net_wait in progress. */
void lam_net_mute(lam_net_t *n, int mute);

/* Adds fd to the wait set (EPOLLIN). */
lam_status_t lam_net_watch_fd(lam_net_t *n, int fd);

/* Progresses until every send posted so far has completed, or timeout_ms. */
lam_status_t lam_net_flush(lam_net_t *n, int timeout_ms);

void lam_conn_set_ud(lam_conn_t *c, void *ud);
void *lam_conn_ud(const lam_conn_t *c);
/* "host:port" of the peer, for logs. */
const char *lam_conn_peer(const lam_conn_t *c);

#endif
