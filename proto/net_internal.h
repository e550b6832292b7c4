/* Internals of the UCX transport (net.c): the structures behind lam_net_t and
 * lam_conn_t. Only net.c includes this header.
 *
 * Life of a received message (net_rx_t):
 *   eager, a pool buffer free      copied in the AM callback, or  -> READY
 *                                  kept in place (desc) where UCX
 *                                  lets us keep it
 *   eager, pool empty              UCX data kept (UCS_INPROGRESS)  -> WAIT_EAGER
 *   rendezvous                     descriptor kept                 -> WAIT_RNDV
 *   WAIT_* gets a buffer (arrival order, from progress): eager data is copied
 *   and released; rendezvous starts ucp_am_recv_data_nbx into the buffer
 *   (RECEIVING, then READY or FAILED from the completion callback).
 * Each connection delivers READY messages from the head of its own FIFO, so
 * on_msg sees them in arrival order. Buffers are handed to waiting messages
 * in global arrival order, which keeps every buffer holder older than every
 * waiter: the oldest message always owns a buffer, so the pool cannot
 * deadlock. */
#ifndef LAM_PROTO_NET_INTERNAL_H
#define LAM_PROTO_NET_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <ucp/api/ucp.h>

#include "common/log.h"
#include "proto/net.h"

/* Active-message ids. User messages travel on NET_AM_DATA; NET_AM_CTRL carries
 * the transport's own hello (client -> server) and ack (server -> client),
 * which never reach on_msg. */
enum { NET_AM_DATA = 0, NET_AM_CTRL = 1 };

#define NET_CTRL_MAGIC 0x4e4d414cu /* "LAMN" in memory order */
enum { NET_CTRL_HELLO = 1, NET_CTRL_ACK = 2 };

typedef struct net_ctrl {
    uint32_t magic;
    uint32_t kind;
} net_ctrl_t;

/* Messages that may wait for a pool buffer beyond the buffers themselves.
 * A peer that gets further ahead than this loses its connection. */
#define NET_RX_BACKLOG 4096
/* Incoming connection requests queued between the UCX callback and progress. */
#define NET_MAX_PENDING_ACCEPTS 64
/* lam_net_destroy: how long sends may take to drain, and connections to close. */
#define NET_DESTROY_FLUSH_MS 1000
#define NET_DESTROY_CLOSE_MS 2000

/* Every UCX call that returns ucs_status_t goes through this: on failure it
 * logs the statement, UCX's reason, file and line, then runs on_err. */
#define NET_UCS_CHECK(stmt, on_err)                                                     \
    do {                                                                                \
        ucs_status_t net_st_ = (stmt);                                                  \
        if (net_st_ != UCS_OK) {                                                        \
            lam_log_error("net: %s: %s", #stmt, ucs_status_string(net_st_));            \
            on_err;                                                                     \
        }                                                                               \
    } while (0)

/* The three outcomes of a non-blocking UCX call (ucs_status_ptr_t). */
typedef enum { NET_REQ_DONE, NET_REQ_INFLIGHT, NET_REQ_ERROR } net_req_outcome_t;

/* NET_NBX(stmt, &st): runs stmt, sorts its result into done / in flight /
 * error (logged with the statement, file and line at `level`) and stores the
 * UCX status in st. The request handle of an in-flight call is stmt's value,
 * so callers that need it assign it inside stmt. */
#define NET_NBX(stmt, st_p, level) net_nbx_outcome((stmt), #stmt, __FILE__, __LINE__, (st_p), (level))

typedef enum {
    RX_FREE,       /* on the free list */
    RX_WAIT_EAGER, /* eager data held by UCX, waiting for a buffer */
    RX_WAIT_RNDV,  /* rendezvous descriptor, waiting for a buffer */
    RX_RECEIVING,  /* ucp_am_recv_data_nbx into buf in flight */
    RX_READY,      /* whole message in buf */
    RX_FAILED,     /* the rendezvous receive failed */
} net_rx_state_t;

typedef struct net_rx {
    struct net_rx *next;  /* connection FIFO, or the net's free list */
    struct net_rx *wnext; /* net's waiting list, or rendezvous completions */
    lam_net_t *net;
    lam_conn_t *conn;     /* NULL: connection gone while RECEIVING (detached) */
    void *desc;           /* UCX data or descriptor while WAIT_*; the message
                             itself while READY in place (released after
                             on_msg) */
    void *req;            /* UCX request while RECEIVING */
    size_t len;
    int buf;              /* pool buffer index, -1 if none */
    ucs_status_t status;  /* rendezvous completion status */
    net_rx_state_t state;
} net_rx_t;

/* Per-send bookkeeping, kept in the space UCX reserves in every request
 * (ucp_params_t.request_size): no allocation per send. request_init zeroes
 * it once; net.c zeroes it again before every ucp_request_free, so a fresh
 * request always starts zeroed. The completion callback may run inside
 * ucp_am_send_nbx (UCP_OP_ATTR_FLAG_NO_IMM_CMPL), before lam_net_send fills
 * in the rest, so the two halves are disjoint. */
typedef struct net_req {
    /* written by the UCX completion callback */
    struct net_req *done_next;
    ucs_status_t status;
    /* written by lam_net_send after ucp_am_send_nbx returns */
    lam_conn_t *conn; /* NULL: orphaned at destroy, cb already ran */
    struct net_req *cprev, *cnext;
    lam_net_send_cb cb;
    void *arg;
} net_req_t;

struct lam_conn {
    lam_net_t *net;
    lam_conn_t *next; /* net's connection list */
    ucp_ep_h ep;      /* NULL once the close has completed */
    void *ud;
    char peer[80];

    uint8_t is_client;
    uint8_t visible;    /* the user holds it: on_close is owed */
    uint8_t up;         /* on_connect / on_accept ran: messages may be delivered */
    uint8_t hello_seen; /* server: the client's hello arrived (set in the AM callback) */
    uint8_t closing;    /* close started; nothing more is delivered */
    uint8_t close_done; /* ucp_ep_close_nbx completed */
    /* events from UCX callbacks, handled by progress */
    uint8_t ev_hello, ev_ack, ev_failed, ev_oversize, ev_overrun;
    ucs_status_t fail_status;
    size_t bad_len;
    lam_status_t why;
    void *close_req;

    net_rx_t *rx_head, *rx_tail; /* received messages, arrival order */
    net_req_t *sends;            /* sends in flight (doubly linked) */
    int n_sends;
};

struct lam_net {
    lam_net_opts_t opts;
    lam_net_cbs_t cbs;

    ucp_context_h ctx;
    ucp_worker_h worker;
    ucp_listener_h listener;
    int epfd;
    int wfd;                   /* the worker's event fd, in epfd unless muted */

    /* receive pool: n_recv_bufs buffers of `stride` bytes, one mapping */
    uint8_t *pool;
    size_t pool_len, stride;
    ucp_mem_h memh;
    int *free_bufs; /* stack of free buffer indices */
    int n_free;

    net_rx_t *rx;   /* rx_cap entries, allocated at create */
    int rx_cap;
    net_rx_t *rx_free;
    net_rx_t *wait_head, *wait_tail;   /* waiting for a buffer, arrival order */
    net_rx_t *rdone_head, *rdone_tail; /* rendezvous receives completed by UCX */
    int n_detached;                    /* RECEIVING entries whose connection is gone */

    net_req_t *done_head, *done_tail;  /* sends completed by UCX */
    int n_sends;

    lam_conn_t *conns;
    lam_conn_t *last_conn; /* lookup cache for the AM callbacks */
    lam_conn_t *zombies;   /* abandoned at destroy; freed after the worker */

    ucp_conn_request_h accepts[NET_MAX_PENDING_ACCEPTS];
    int n_accepts;
    int n_rejected;

    int work;        /* something is queued for progress */
    int in_progress; /* inside lam_net_progress (callbacks run) */
};

#endif
