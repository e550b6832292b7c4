/* Message transport over UCX active messages (contract in net.h, structures
 * and the life of a received message in net_internal.h).
 *
 * Connections are identified by the endpoint UCX hands to the AM callback:
 * every send carries UCP_AM_SEND_FLAG_REPLY, so the receiver gets its own
 * endpoint for the connection as param->reply_ep and finds the lam_conn_t by
 * a short linear search (there are few connections).
 *
 * Client-server endpoints have no "connected" event, so the client sends a
 * hello on NET_AM_CTRL right after ucp_ep_create; the server answers with an
 * ack and then runs on_accept, and the client runs on_connect when the ack
 * arrives. Data sent by the server after on_accept follows the ack on the same
 * endpoint, so it never overtakes on_connect.
 *
 * UCX callbacks only record events and queue work; lam_net_progress runs the
 * user's callbacks afterwards. Sends always get a UCX request
 * (UCP_OP_ATTR_FLAG_NO_IMM_CMPL), so a send's cb runs from a later
 * lam_net_progress, never inside lam_net_send. User callbacks may send and
 * close; lam_net_progress called from one returns 0 at once, lam_net_flush
 * refuses, and lam_net_destroy must not be called from one.
 *
 * Closing: lam_net_close flushes (UCP_EP_CLOSE_FLAG_FORCE only after an
 * error); a flushing close completes when the peer answers the disconnect,
 * so it needs the peer to progress. on_close runs once the close and every
 * send on the connection have completed. lam_net_destroy drains sends for at
 * most NET_DESTROY_FLUSH_MS, then closes everything with FORCE (a stalled
 * peer cannot hold it up) and waits at most NET_DESTROY_CLOSE_MS. */
#include "proto/net_internal.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static net_req_outcome_t net_nbx_outcome(ucs_status_ptr_t r, const char *what, const char *file, int line,
                                         ucs_status_t *st, lam_log_level_t level)
{
    if (r == NULL) {
        *st = UCS_OK;
        return NET_REQ_DONE;
    }
    if (UCS_PTR_IS_ERR(r)) {
        *st = UCS_PTR_STATUS(r);
        lam_log_msg(level, file, line, "net: %s: %s", what, ucs_status_string(*st));
        return NET_REQ_ERROR;
    }
    *st = UCS_INPROGRESS;
    return NET_REQ_INFLIGHT;
}

/* UCX's reason for a failed send or connection, as a Lamina status. */
static lam_status_t net_status(ucs_status_t st)
{
    switch (st) {
    case UCS_OK:
        return LAM_OK;
    case UCS_ERR_CANCELED:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_REJECTED:
        return LAM_ERR_CONN_CLOSED;
    default:
        return LAM_ERR_NET;
    }
}

static int64_t net_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- receive pool and entries --------------------------------------------- */

static uint8_t *net_buf(lam_net_t *n, int i)
{
    return n->pool + (size_t)i * n->stride;
}

static void net_buf_put(lam_net_t *n, int i)
{
    n->free_bufs[n->n_free++] = i;
    if (n->wait_head)
        n->work = 1;
}

static net_rx_t *net_rx_get(lam_net_t *n)
{
    net_rx_t *e = n->rx_free;
    if (e) {
        n->rx_free = e->next;
        e->next = e->wnext = NULL;
        e->desc = e->req = NULL;
        e->buf = -1;
    }
    return e;
}

static void net_rx_put(lam_net_t *n, net_rx_t *e)
{
    e->conn = NULL;
    e->state = RX_FREE;
    e->next = n->rx_free;
    n->rx_free = e;
}

static void net_wait_push(lam_net_t *n, net_rx_t *e)
{
    e->wnext = NULL;
    if (n->wait_tail)
        n->wait_tail->wnext = e;
    else
        n->wait_head = e;
    n->wait_tail = e;
}

static void net_wait_unlink(lam_net_t *n, net_rx_t *e)
{
    net_rx_t *prev = NULL;
    for (net_rx_t *w = n->wait_head; w; prev = w, w = w->wnext) {
        if (w != e)
            continue;
        if (prev)
            prev->wnext = e->wnext;
        else
            n->wait_head = e->wnext;
        if (n->wait_tail == e)
            n->wait_tail = prev;
        e->wnext = NULL;
        return;
    }
}

/* Drops everything c has received but not delivered. A rendezvous receive
 * in flight keeps its buffer until UCX completes it (detached entry). */
static void net_rx_drop_conn(lam_net_t *n, lam_conn_t *c)
{
    net_rx_t *e = c->rx_head;
    c->rx_head = c->rx_tail = NULL;
    while (e) {
        net_rx_t *next = e->next;
        switch (e->state) {
        case RX_WAIT_EAGER:
        case RX_WAIT_RNDV:
            net_wait_unlink(n, e);
            ucp_am_data_release(n->worker, e->desc);
            net_rx_put(n, e);
            break;
        case RX_RECEIVING:
            e->conn = NULL;
            e->next = NULL;
            n->n_detached++;
            break;
        case RX_READY:
        case RX_FAILED:
            if (e->desc)
                ucp_am_data_release(n->worker, e->desc);
            if (e->buf >= 0)
                net_buf_put(n, e->buf);
            net_rx_put(n, e);
            break;
        case RX_FREE:
            break;
        }
        e = next;
    }
}

/* ---- UCX callbacks: record and queue only --------------------------------- */

static void net_request_init(void *request)
{
    memset(request, 0, sizeof(net_req_t));
}

static void net_send_done_cb(void *request, ucs_status_t status, void *user_data)
{
    lam_net_t *n = user_data;
    net_req_t *q = request;
    q->status = status;
    q->done_next = NULL;
    if (n->done_tail)
        n->done_tail->done_next = q;
    else
        n->done_head = q;
    n->done_tail = q;
    n->work = 1;
}

static void net_rndv_done_cb(void *request, ucs_status_t status, size_t length, void *user_data)
{
    net_rx_t *e = user_data;
    lam_net_t *n = e->net;
    e->status = (status == UCS_OK && length != e->len) ? UCS_ERR_MESSAGE_TRUNCATED : status;
    e->wnext = NULL;
    if (n->rdone_tail)
        n->rdone_tail->wnext = e;
    else
        n->rdone_head = e;
    n->rdone_tail = e;
    n->work = 1;
}

static void net_close_done_cb(void *request, ucs_status_t status, void *user_data)
{
    lam_conn_t *c = user_data;
    c->close_done = 1;
    c->net->work = 1;
}

static void net_ep_err_cb(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    lam_conn_t *c = arg;
    if (!c->ev_failed) {
        c->ev_failed = 1;
        c->fail_status = status;
    }
    c->net->work = 1;
}

static void net_conn_req_cb(ucp_conn_request_h req, void *arg)
{
    lam_net_t *n = arg;
    if (n->n_accepts == NET_MAX_PENDING_ACCEPTS) {
        NET_UCS_CHECK(ucp_listener_reject(n->listener, req), (void)0);
        n->n_rejected++;
    } else {
        n->accepts[n->n_accepts++] = req;
    }
    n->work = 1;
}

static lam_conn_t *net_conn_by_ep(lam_net_t *n, ucp_ep_h ep)
{
    if (n->last_conn && n->last_conn->ep == ep)
        return n->last_conn;
    for (lam_conn_t *c = n->conns; c; c = c->next) {
        if (c->ep == ep) {
            n->last_conn = c;
            return c;
        }
    }
    return NULL;
}

static ucs_status_t net_am_ctrl_cb(void *arg, const void *hdr, size_t hdr_len, void *data, size_t len,
                                   const ucp_am_recv_param_t *p)
{
    lam_net_t *n = arg;
    net_ctrl_t m;
    if (len != sizeof m || (p->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) ||
        !(p->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP))
        return UCS_OK;
    memcpy(&m, data, sizeof m);
    lam_conn_t *c = net_conn_by_ep(n, p->reply_ep);
    if (!c || c->closing || m.magic != NET_CTRL_MAGIC)
        return UCS_OK;
    if (m.kind == NET_CTRL_HELLO && !c->is_client) {
        c->hello_seen = 1;
        c->ev_hello = 1;
    } else if (m.kind == NET_CTRL_ACK && c->is_client) {
        c->ev_ack = 1;
    }
    n->work = 1;
    return UCS_OK;
}

static ucs_status_t net_am_data_cb(void *arg, const void *hdr, size_t hdr_len, void *data, size_t len,
                                   const ucp_am_recv_param_t *p)
{
    lam_net_t *n = arg;
    int rndv = (p->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
    if (!(p->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP))
        return UCS_OK;
    lam_conn_t *c = net_conn_by_ep(n, p->reply_ep);
    /* a server connection takes data only after the client's hello */
    if (!c || c->closing || c->ev_oversize || c->ev_overrun || (!c->is_client && !c->hello_seen))
        return UCS_OK;
    if (len > n->opts.max_msg) {
        c->ev_oversize = 1;
        c->bad_len = len;
        n->work = 1;
        /* a rendezvous sender learns the refusal from its send status */
        return rndv ? UCS_ERR_MESSAGE_TRUNCATED : UCS_OK;
    }
    /* PERSISTENT_DATA makes UCX hand over eager data it lets us keep */
    int keepable = rndv || (p->recv_attr & UCP_AM_RECV_ATTR_FLAG_DATA);
    /* eager data UCX lets us keep is delivered where it lies (no copy);
     * the message still takes a pool buffer, so the pool bounds what is
     * held either way. 16-byte aligned as UCX gives it over TCP, so the
     * arrays inside sit as they would in a pool buffer (wire.h: offsets
     * are multiples of 8) */
    int in_place = !rndv && keepable && ((uintptr_t)data & 15) == 0;
    int copy_now = !rndv && !n->wait_head && n->n_free > 0;
    net_rx_t *e = (copy_now || keepable) ? net_rx_get(n) : NULL;
    if (!e) {
        c->ev_overrun = 1;
        n->work = 1;
        return rndv ? UCS_ERR_NO_RESOURCE : UCS_OK;
    }
    e->conn = c;
    e->len = len;
    if (c->rx_tail)
        c->rx_tail->next = e;
    else
        c->rx_head = e;
    c->rx_tail = e;
    n->work = 1;
    if (copy_now) {
        e->buf = n->free_bufs[--n->n_free];
        e->state = RX_READY;
        if (in_place) {
            e->desc = data;
            return UCS_INPROGRESS;
        }
        memcpy(net_buf(n, e->buf), data, len);
        return UCS_OK;
    }
    /* keep the data (eager) or the descriptor (rendezvous) until a buffer frees */
    e->desc = data;
    e->state = rndv ? RX_WAIT_RNDV : RX_WAIT_EAGER;
    net_wait_push(n, e);
    return UCS_INPROGRESS;
}

/* ---- connections ---------------------------------------------------------- */

static void net_conn_link(lam_net_t *n, lam_conn_t *c)
{
    c->next = n->conns;
    n->conns = c;
}

/* Starts closing c: drops what it received, then ucp_ep_close_nbx. FLUSH lets
 * sends in flight finish; FORCE (after an error, or at destroy) fails them.
 * on_close follows from progress once the close and every send completed. */
static void net_conn_start_close(lam_conn_t *c, lam_status_t why, int force)
{
    lam_net_t *n = c->net;
    if (c->closing)
        return;
    c->closing = 1;
    c->why = why;
    n->work = 1;
    net_rx_drop_conn(n, c);
    if (!c->ep) {
        c->close_done = 1;
        return;
    }
    ucp_request_param_t p = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS,
        .flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0,
        .cb.send = net_close_done_cb,
        .user_data = c,
    };
    ucs_status_ptr_t r;
    ucs_status_t st;
    if (NET_NBX(r = ucp_ep_close_nbx(c->ep, &p), &st, LAM_LOG_WARN) == NET_REQ_INFLIGHT) {
        c->close_req = r;
    } else {
        c->close_done = 1;
        c->ep = NULL;
    }
}

static lam_status_t net_send_ctrl(lam_conn_t *c, uint32_t kind)
{
    static const net_ctrl_t hello = {NET_CTRL_MAGIC, NET_CTRL_HELLO};
    static const net_ctrl_t ack = {NET_CTRL_MAGIC, NET_CTRL_ACK};
    ucp_request_param_t p = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
        .flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER,
    };
    const net_ctrl_t *m = kind == NET_CTRL_HELLO ? &hello : &ack;
    ucs_status_ptr_t r;
    ucs_status_t st;
    switch (NET_NBX(r = ucp_am_send_nbx(c->ep, NET_AM_CTRL, NULL, 0, m, sizeof *m, &p), &st, LAM_LOG_WARN)) {
    case NET_REQ_DONE:
        return LAM_OK;
    case NET_REQ_INFLIGHT:
        ucp_request_free(r); /* UCX releases it when the send completes */
        return LAM_OK;
    case NET_REQ_ERROR:
        break;
    }
    c->ev_failed = 1;
    c->fail_status = st;
    c->net->work = 1;
    return net_status(st);
}

static void net_format_addr(const struct sockaddr *sa, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s->sin_addr, host, sizeof host);
        port = ntohs(s->sin_port);
        snprintf(out, cap, "%s:%d", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof host);
        port = ntohs(s->sin6_port);
        snprintf(out, cap, "[%s]:%d", host, port);
    } else {
        snprintf(out, cap, "?");
    }
}

static lam_status_t net_resolve(const char *host, int port, int passive, struct sockaddr_storage *ss,
                                socklen_t *len)
{
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, ps, &hints, &res);
    if (rc != 0 || !res) {
        lam_log_error("net: cannot resolve '%s': %s", host, gai_strerror(rc));
        return LAM_ERR_NET;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return LAM_OK;
}

/* Creates the server side of a connection from a queued request. */
static void net_accept_one(lam_net_t *n, ucp_conn_request_h req)
{
    lam_conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        lam_log_error("net: out of memory accepting a connection");
        NET_UCS_CHECK(ucp_listener_reject(n->listener, req), (void)0);
        return;
    }
    c->net = n;
    ucp_conn_request_attr_t ra = {.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR};
    int have_addr = 1;
    NET_UCS_CHECK(ucp_conn_request_query(req, &ra), have_addr = 0);
    if (have_addr)
        net_format_addr((const struct sockaddr *)&ra.client_address, c->peer, sizeof c->peer);
    else
        snprintf(c->peer, sizeof c->peer, "?");
    ucp_ep_params_t ep = {
        .field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER,
        .conn_request = req,
        .err_mode = UCP_ERR_HANDLING_MODE_PEER,
        .err_handler = {.cb = net_ep_err_cb, .arg = c},
    };
    NET_UCS_CHECK(ucp_ep_create(n->worker, &ep, &c->ep), free(c); return);
    net_conn_link(n, c);
    lam_log_debug("net: connection request from %s", c->peer);
}

/* ---- progress steps (each returns how many things it did) ----------------- */

static int net_step_accepts(lam_net_t *n)
{
    int did = n->n_accepts;
    if (n->n_rejected) {
        lam_log_warn("net: rejected %d connection requests (more than %d pending)", n->n_rejected,
                     NET_MAX_PENDING_ACCEPTS);
        n->n_rejected = 0;
    }
    for (int i = 0; i < n->n_accepts; i++)
        net_accept_one(n, n->accepts[i]);
    n->n_accepts = 0;
    return did;
}

static int net_step_rndv_done(lam_net_t *n)
{
    int did = 0;
    while (n->rdone_head) {
        net_rx_t *e = n->rdone_head;
        n->rdone_head = e->wnext;
        if (!n->rdone_head)
            n->rdone_tail = NULL;
        e->wnext = NULL;
        ucp_request_free(e->req);
        e->req = NULL;
        if (!e->conn) {
            net_buf_put(n, e->buf);
            net_rx_put(n, e);
            n->n_detached--;
        } else {
            e->state = e->status == UCS_OK ? RX_READY : RX_FAILED;
        }
        did++;
    }
    return did;
}

static int net_step_send_done(lam_net_t *n)
{
    int did = 0;
    while (n->done_head) {
        net_req_t *q = n->done_head;
        n->done_head = q->done_next;
        if (!n->done_head)
            n->done_tail = NULL;
        lam_conn_t *c = q->conn;
        lam_net_send_cb cb = q->cb;
        void *arg = q->arg;
        lam_status_t st = net_status(q->status);
        if (c) {
            if (q->cprev)
                q->cprev->cnext = q->cnext;
            else
                c->sends = q->cnext;
            if (q->cnext)
                q->cnext->cprev = q->cprev;
            c->n_sends--;
            n->n_sends--;
        }
        memset(q, 0, sizeof *q);
        ucp_request_free(q);
        if (c && cb)
            cb(arg, st);
        did++;
    }
    return did;
}

static int net_step_conn_events(lam_net_t *n)
{
    int did = 0;
    for (lam_conn_t *c = n->conns; c; c = c->next) {
        if (c->closing) {
            c->ev_hello = c->ev_ack = 0;
            continue;
        }
        if (c->ev_failed && c->up && c->rx_head &&
            (c->rx_head->state == RX_READY || c->rx_head->state == RX_WAIT_EAGER)) {
            /* what the peer sent before it went away (an ERROR explaining
             * why, say) is delivered first; net_step_deliver runs next */
            did++;
            continue;
        }
        if (c->ev_failed) {
            lam_log_info("net: connection %s %s: %s", c->is_client ? "to" : "from", c->peer,
                         ucs_status_string(c->fail_status));
            net_conn_start_close(c, LAM_ERR_CONN_CLOSED, 1);
            did++;
            continue;
        }
        if (c->ev_oversize) {
            lam_log_error("net: %s sent a %zu-byte message, more than max_msg %zu; closing the connection",
                          c->peer, c->bad_len, n->opts.max_msg);
            net_conn_start_close(c, LAM_ERR_PROTO, 1);
            did++;
            continue;
        }
        if (c->ev_overrun) {
            lam_log_error("net: %s is more than %d messages ahead of delivery; closing the connection",
                          c->peer, n->rx_cap);
            net_conn_start_close(c, LAM_ERR_NO_MEMORY, 1);
            did++;
            continue;
        }
        if (c->ev_hello) {
            c->ev_hello = 0;
            did++;
            if (!c->up && net_send_ctrl(c, NET_CTRL_ACK) == LAM_OK) {
                c->up = c->visible = 1;
                lam_log_debug("net: accepted %s", c->peer);
                if (n->cbs.on_accept)
                    n->cbs.on_accept(n->cbs.ud, c);
            }
        }
        if (c->ev_ack) {
            c->ev_ack = 0;
            did++;
            if (!c->up && !c->closing) {
                c->up = 1;
                lam_log_debug("net: connected to %s", c->peer);
                if (n->cbs.on_connect)
                    n->cbs.on_connect(n->cbs.ud, c);
            }
        }
    }
    return did;
}

/* Hands free buffers to waiting messages, oldest first. */
static int net_step_assign(lam_net_t *n)
{
    int did = 0;
    while (n->wait_head && n->n_free > 0) {
        net_rx_t *e = n->wait_head;
        n->wait_head = e->wnext;
        if (!n->wait_head)
            n->wait_tail = NULL;
        e->wnext = NULL;
        e->buf = n->free_bufs[--n->n_free];
        uint8_t *buf = net_buf(n, e->buf);
        void *desc = e->desc;
        e->desc = NULL;
        did++;
        if (e->state == RX_WAIT_EAGER) {
            memcpy(buf, desc, e->len);
            ucp_am_data_release(n->worker, desc);
            e->state = RX_READY;
            continue;
        }
        ucp_request_param_t p = {
            .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                            UCP_OP_ATTR_FIELD_MEMH | UCP_OP_ATTR_FIELD_MEMORY_TYPE,
            .cb.recv_am = net_rndv_done_cb,
            .user_data = e,
            .memh = n->memh,
            .memory_type = UCS_MEMORY_TYPE_HOST,
        };
        ucs_status_ptr_t r;
        ucs_status_t st;
        switch (NET_NBX(r = ucp_am_recv_data_nbx(n->worker, desc, buf, e->len, &p), &st, LAM_LOG_WARN)) {
        case NET_REQ_DONE:
            e->state = RX_READY;
            break;
        case NET_REQ_INFLIGHT:
            e->req = r;
            e->state = RX_RECEIVING;
            break;
        case NET_REQ_ERROR:
            e->status = st;
            e->state = RX_FAILED;
            break;
        }
    }
    return did;
}

static int net_step_deliver(lam_net_t *n)
{
    int did = 0;
    for (lam_conn_t *c = n->conns; c; c = c->next) {
        while (c->up && !c->closing && c->rx_head) {
            net_rx_t *e = c->rx_head;
            if (e->state == RX_FAILED) {
                lam_log_warn("net: receiving a %zu-byte message from %s failed: %s", e->len, c->peer,
                             ucs_status_string(e->status));
                net_conn_start_close(c, net_status(e->status), 1);
                did++;
                break;
            }
            if (e->state != RX_READY)
                break;
            c->rx_head = e->next;
            if (!c->rx_head)
                c->rx_tail = NULL;
            if (n->cbs.on_msg)
                n->cbs.on_msg(n->cbs.ud, c, e->desc ? e->desc : net_buf(n, e->buf), e->len);
            if (e->desc)
                ucp_am_data_release(n->worker, e->desc);
            net_buf_put(n, e->buf);
            net_rx_put(n, e);
            did++;
        }
    }
    return did;
}

/* Frees connections whose close and sends have all completed; on_close is
 * their last callback. */
static int net_step_finalize(lam_net_t *n)
{
    int did = 0;
    lam_conn_t **pp = &n->conns;
    while (*pp) {
        lam_conn_t *c = *pp;
        if (c->close_done && c->close_req) {
            ucp_request_free(c->close_req);
            c->close_req = NULL;
        }
        if (c->close_done)
            c->ep = NULL;
        if (!c->closing || !c->close_done || c->n_sends > 0) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        if (n->last_conn == c)
            n->last_conn = NULL;
        lam_log_debug("net: connection %s closed (%s)", c->peer, lam_status_str(c->why));
        if (c->visible && n->cbs.on_close)
            n->cbs.on_close(n->cbs.ud, c, c->why);
        free(c);
        did++;
    }
    return did;
}

int lam_net_progress(lam_net_t *n)
{
    if (n->in_progress)
        return 0; /* called from one of our own callbacks */
    n->in_progress = 1;
    int events = 0;
    /* until UCX runs dry, or one of our callbacks queued work: that is
     * handled first (a message waiting on the next ucp_worker_progress, an
     * epoll_wait over TCP, took ~0.5 us per message on each side) */
    for (int i = 0; i < 64; i++) {
        unsigned k = ucp_worker_progress(n->worker);
        events += (int)k;
        if (!k || n->work)
            break;
    }
    int did = 1;
    for (int round = 0; did && round < 16; round++) {
        n->work = 0;
        did = net_step_accepts(n);
        did += net_step_rndv_done(n);
        did += net_step_send_done(n);
        did += net_step_conn_events(n);
        did += net_step_assign(n);
        did += net_step_deliver(n);
        did += net_step_assign(n);
        did += net_step_finalize(n);
        events += did;
    }
    if (did)
        n->work = 1;
    n->in_progress = 0;
    return events;
}

/* ---- public API ----------------------------------------------------------- */

lam_status_t lam_net_create(const lam_net_opts_t *o, const lam_net_cbs_t *cbs, lam_net_t **out)
{
    if (!o || !cbs || !out || o->max_msg == 0 || o->n_recv_bufs < 1 || o->n_recv_bufs > 65536) {
        lam_log_error("net: invalid options (max_msg must be > 0, n_recv_bufs in [1, 65536])");
        return LAM_ERR_INVALID_ARG;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (o->max_msg > (SIZE_MAX - page) / (size_t)o->n_recv_bufs) {
        lam_log_error("net: receive pool of %d x %zu bytes is too large", o->n_recv_bufs, o->max_msg);
        return LAM_ERR_INVALID_ARG;
    }
    lam_status_t st = LAM_ERR_NO_MEMORY;
    lam_net_t *n = calloc(1, sizeof *n);
    if (!n)
        return LAM_ERR_NO_MEMORY;
    n->opts = *o;
    n->cbs = *cbs;
    n->epfd = -1;
    n->stride = (o->max_msg + page - 1) / page * page;
    n->pool_len = n->stride * (size_t)o->n_recv_bufs;
    n->rx_cap = o->n_recv_bufs + NET_RX_BACKLOG;
    n->rx = calloc((size_t)n->rx_cap, sizeof *n->rx);
    n->free_bufs = calloc((size_t)o->n_recv_bufs, sizeof *n->free_bufs);
    if (!n->rx || !n->free_bufs)
        goto err_free;
    for (int i = n->rx_cap - 1; i >= 0; i--) {
        n->rx[i].net = n;
        n->rx[i].buf = -1;
        net_rx_put(n, &n->rx[i]);
    }
    for (int i = o->n_recv_bufs - 1; i >= 0; i--)
        n->free_bufs[n->n_free++] = i;
    n->pool = mmap(NULL, n->pool_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (n->pool == MAP_FAILED) {
        n->pool = NULL;
        lam_log_error("net: cannot allocate a %zu-byte receive pool: %s", n->pool_len, strerror(errno));
        goto err_free;
    }

    st = LAM_ERR_NET;
    ucp_config_t *cfg;
    NET_UCS_CHECK(ucp_config_read(NULL, NULL, &cfg), goto err_unmap_pool);
    if (!getenv("UCX_RNDV_THRESH")) {
        char thresh[32];
        snprintf(thresh, sizeof thresh, "%d", LAM_NET_RNDV_THRESH);
        NET_UCS_CHECK(ucp_config_modify(cfg, "RNDV_THRESH", thresh), ucp_config_release(cfg);
                      goto err_unmap_pool);
    }
    ucp_params_t up = {
        .field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_REQUEST_SIZE | UCP_PARAM_FIELD_REQUEST_INIT |
                      UCP_PARAM_FIELD_NAME,
        .features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP,
        .request_size = sizeof(net_req_t),
        .request_init = net_request_init,
        .name = "lamina",
    };
    NET_UCS_CHECK(ucp_init(&up, cfg, &n->ctx), ucp_config_release(cfg); goto err_unmap_pool);
    ucp_config_release(cfg);

    ucp_worker_params_t wp = {
        .field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
        .thread_mode = o->shared ? UCS_THREAD_MODE_SERIALIZED : UCS_THREAD_MODE_SINGLE,
    };
    NET_UCS_CHECK(ucp_worker_create(n->ctx, &wp, &n->worker), goto err_cleanup_ctx);

    ucp_mem_map_params_t mp = {
        .field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH,
        .address = n->pool,
        .length = n->pool_len,
    };
    NET_UCS_CHECK(ucp_mem_map(n->ctx, &mp, &n->memh), goto err_destroy_worker);

    ucp_am_handler_param_t hp = {
        .field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                      UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG,
        .id = NET_AM_DATA,
        .flags = UCP_AM_FLAG_WHOLE_MSG | UCP_AM_FLAG_PERSISTENT_DATA,
        .cb = net_am_data_cb,
        .arg = n,
    };
    NET_UCS_CHECK(ucp_worker_set_am_recv_handler(n->worker, &hp), goto err_unmap_memh);
    hp.id = NET_AM_CTRL;
    hp.flags = UCP_AM_FLAG_WHOLE_MSG;
    hp.cb = net_am_ctrl_cb;
    NET_UCS_CHECK(ucp_worker_set_am_recv_handler(n->worker, &hp), goto err_unmap_memh);

    int wfd;
    NET_UCS_CHECK(ucp_worker_get_efd(n->worker, &wfd), goto err_unmap_memh);
    n->wfd = wfd;
    n->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (n->epfd < 0) {
        lam_log_error("net: epoll_create1: %s", strerror(errno));
        goto err_unmap_memh;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = wfd};
    if (epoll_ctl(n->epfd, EPOLL_CTL_ADD, wfd, &ev) != 0) {
        lam_log_error("net: epoll_ctl(worker fd): %s", strerror(errno));
        goto err_close_epoll;
    }
    *out = n;
    return LAM_OK;

err_close_epoll:
    close(n->epfd);
err_unmap_memh:
    NET_UCS_CHECK(ucp_mem_unmap(n->ctx, n->memh), (void)0);
err_destroy_worker:
    ucp_worker_destroy(n->worker);
err_cleanup_ctx:
    ucp_cleanup(n->ctx);
err_unmap_pool:
    munmap(n->pool, n->pool_len);
err_free:
    free(n->rx);
    free(n->free_bufs);
    free(n);
    return st;
}

/* Destroy could not finish in time (a graceful close waiting for a stalled
 * peer, say): complete the remaining sends with an error, run on_close, and
 * release every request we still hold, which UCX requires before
 * ucp_worker_destroy (it completes them there, so their callbacks may still
 * run: connections stay allocated until the worker is gone). */
static void net_abandon(lam_net_t *n)
{
    while (n->conns) {
        lam_conn_t *c = n->conns;
        n->conns = c->next;
        while (c->sends) {
            net_req_t *q = c->sends;
            c->sends = q->cnext;
            lam_net_send_cb cb = q->cb;
            void *arg = q->arg;
            q->conn = NULL;
            q->cb = NULL;
            q->cprev = q->cnext = NULL;
            n->n_sends--;
            ucp_request_free(q);
            if (cb)
                cb(arg, LAM_ERR_CONN_CLOSED);
        }
        c->n_sends = 0;
        if (c->close_req) {
            ucp_request_free(c->close_req);
            c->close_req = NULL;
        }
        if (c->visible && n->cbs.on_close)
            n->cbs.on_close(n->cbs.ud, c, c->why);
        c->next = n->zombies;
        n->zombies = c;
    }
    for (int i = 0; i < n->rx_cap; i++) {
        net_rx_t *e = &n->rx[i];
        if (e->state == RX_RECEIVING && !e->conn && e->req) {
            ucp_request_free(e->req);
            e->req = NULL;
        }
    }
    n->last_conn = NULL;
}

void lam_net_destroy(lam_net_t *n)
{
    if (!n)
        return;
    assert(!n->in_progress); /* not from a callback */
    if (n->listener) {
        for (int i = 0; i < n->n_accepts; i++)
            NET_UCS_CHECK(ucp_listener_reject(n->listener, n->accepts[i]), (void)0);
        n->n_accepts = 0;
        ucp_listener_destroy(n->listener);
        n->listener = NULL;
    }
    /* Let sends drain, then close with FORCE: a FLUSH close waits for the
     * peer's disconnect reply, which a stalled peer never sends. */
    if (lam_net_flush(n, NET_DESTROY_FLUSH_MS) != LAM_OK)
        lam_log_warn("net: %d sends still in flight at shutdown; they fail", n->n_sends);
    for (lam_conn_t *c = n->conns; c; c = c->next)
        net_conn_start_close(c, LAM_OK, 1);
    int64_t deadline = net_now_ms() + NET_DESTROY_CLOSE_MS;
    for (;;) {
        lam_net_progress(n);
        if (!n->conns && !n->n_detached)
            break;
        int64_t left = deadline - net_now_ms();
        if (left <= 0)
            break;
        lam_net_wait(n, left < 10 ? (int)left : 10);
    }
    if (n->conns || n->n_detached) {
        lam_log_warn("net: shutdown left connections or receives unfinished after %d ms", NET_DESTROY_CLOSE_MS);
        net_abandon(n);
    }
    ucp_worker_destroy(n->worker);
    while (n->zombies) {
        lam_conn_t *c = n->zombies;
        n->zombies = c->next;
        free(c);
    }
    NET_UCS_CHECK(ucp_mem_unmap(n->ctx, n->memh), (void)0);
    ucp_cleanup(n->ctx);
    munmap(n->pool, n->pool_len);
    close(n->epfd);
    free(n->rx);
    free(n->free_bufs);
    free(n);
}

lam_status_t lam_net_listen(lam_net_t *n, const char *addr, int port, int *bound_port)
{
    if (!n || port < 0 || port > 65535)
        return LAM_ERR_INVALID_ARG;
    if (n->listener) {
        lam_log_error("net: already listening (one listener per lam_net_t)");
        return LAM_ERR_INVALID_ARG;
    }
    struct sockaddr_storage ss;
    socklen_t sl;
    lam_status_t st = net_resolve(addr && *addr ? addr : "127.0.0.1", port, 1, &ss, &sl);
    if (st != LAM_OK)
        return st;
    ucp_listener_params_t lp = {
        .field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER,
        .sockaddr = {.addr = (const struct sockaddr *)&ss, .addrlen = sl},
        .conn_handler = {.cb = net_conn_req_cb, .arg = n},
    };
    NET_UCS_CHECK(ucp_listener_create(n->worker, &lp, &n->listener), return LAM_ERR_NET);
    ucp_listener_attr_t la = {.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR};
    NET_UCS_CHECK(ucp_listener_query(n->listener, &la), goto err_destroy_listener);
    char name[80];
    net_format_addr((const struct sockaddr *)&la.sockaddr, name, sizeof name);
    int bp = la.sockaddr.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&la.sockaddr)->sin6_port)
                                                : ntohs(((struct sockaddr_in *)&la.sockaddr)->sin_port);
    lam_log_info("net: listening on %s", name);
    if (bound_port)
        *bound_port = bp;
    return LAM_OK;

err_destroy_listener:
    ucp_listener_destroy(n->listener);
    n->listener = NULL;
    return LAM_ERR_NET;
}

lam_status_t lam_net_connect(lam_net_t *n, const char *host, int port, lam_conn_t **out)
{
    if (!n || !host || !*host || port <= 0 || port > 65535 || !out)
        return LAM_ERR_INVALID_ARG;
    struct sockaddr_storage ss;
    socklen_t sl;
    lam_status_t st = net_resolve(host, port, 0, &ss, &sl);
    if (st != LAM_OK)
        return st;
    lam_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return LAM_ERR_NO_MEMORY;
    c->net = n;
    c->is_client = 1;
    c->visible = 1;
    snprintf(c->peer, sizeof c->peer, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    ucp_ep_params_t ep = {
        .field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER,
        .flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER,
        .sockaddr = {.addr = (const struct sockaddr *)&ss, .addrlen = sl},
        .err_mode = UCP_ERR_HANDLING_MODE_PEER,
        .err_handler = {.cb = net_ep_err_cb, .arg = c},
    };
    NET_UCS_CHECK(ucp_ep_create(n->worker, &ep, &c->ep), free(c); return LAM_ERR_NET);
    net_conn_link(n, c);
    net_send_ctrl(c, NET_CTRL_HELLO); /* a failure reaches on_close */
    *out = c;
    return LAM_OK;
}

lam_status_t lam_net_send(lam_conn_t *c, const void *buf, size_t len, lam_net_send_cb cb, void *arg)
{
    if (!c || (!buf && len))
        return LAM_ERR_INVALID_ARG;
    lam_net_t *n = c->net;
    if (len > n->opts.max_msg) {
        lam_log_error("net: a %zu-byte message exceeds max_msg %zu", len, n->opts.max_msg);
        return LAM_ERR_INVALID_ARG;
    }
    if (c->closing || c->ev_failed || !c->ep)
        return LAM_ERR_CONN_CLOSED;
    /* NO_IMM_CMPL: always a request, so completion is always reported by the
     * callback and cb runs from progress, never inside this call. */
    ucp_request_param_t p = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS |
                        UCP_OP_ATTR_FLAG_NO_IMM_CMPL,
        .flags = UCP_AM_SEND_FLAG_REPLY,
        .cb.send = net_send_done_cb,
        .user_data = n,
    };
    ucs_status_ptr_t r;
    ucs_status_t st;
    switch (NET_NBX(r = ucp_am_send_nbx(c->ep, NET_AM_DATA, NULL, 0, buf, len, &p), &st, LAM_LOG_WARN)) {
    case NET_REQ_INFLIGHT:
        break;
    case NET_REQ_DONE:
        assert(!"ucp_am_send_nbx completed at once despite UCP_OP_ATTR_FLAG_NO_IMM_CMPL");
        return LAM_ERR_NET;
    case NET_REQ_ERROR:
        return net_status(st);
    }
    net_req_t *q = r;
    q->conn = c;
    q->cb = cb;
    q->arg = arg;
    q->cprev = NULL;
    q->cnext = c->sends;
    if (c->sends)
        c->sends->cprev = q;
    c->sends = q;
    c->n_sends++;
    n->n_sends++;
    return LAM_OK;
}

void lam_net_close(lam_conn_t *c, lam_status_t why)
{
    if (c)
        net_conn_start_close(c, why, c->ev_failed);
}

/* Arms the worker for a sleep: 1 = may sleep, 0 = work is pending (the
 * caller should progress), -1 = error. */
static int net_arm(lam_net_t *n)
{
    ucs_status_t st;
    for (int tries = 0;; tries++) {
        if (n->work)
            return 0;
        st = ucp_worker_arm(n->worker);
        if (st != UCS_ERR_BUSY)
            break;
        /* BUSY: the worker's event fd was signalled since the last arm, often
         * by activity that progress already handled. Let UCX look (our UCX
         * callbacks only queue work) and arm again; if real work turns up, or
         * the worker stays busy, return so the caller progresses. */
        if (tries == 3)
            return 0;
        for (int i = 0; i < 64 && ucp_worker_progress(n->worker); i++)
            ;
    }
    NET_UCS_CHECK(st, return -1);
    return 1;
}

static lam_status_t net_sleep(lam_net_t *n, int timeout_ms)
{
    struct epoll_event evs[8];
    int rc = epoll_wait(n->epfd, evs, 8, timeout_ms);
    if (rc < 0 && errno != EINTR) {
        lam_log_error("net: epoll_wait: %s", strerror(errno));
        return LAM_ERR_NET;
    }
    return LAM_OK;
}

lam_status_t lam_net_wait(lam_net_t *n, int timeout_ms)
{
    int a = net_arm(n);
    return a < 0 ? LAM_ERR_NET : a == 0 ? LAM_OK : net_sleep(n, timeout_ms);
}

lam_status_t lam_net_wait_unlocking(lam_net_t *n, int timeout_ms, pthread_mutex_t *mu)
{
    int a = net_arm(n);
    if (a <= 0)
        return a < 0 ? LAM_ERR_NET : LAM_OK;
    pthread_mutex_unlock(mu);
    lam_status_t st = net_sleep(n, timeout_ms);
    pthread_mutex_lock(mu);
    return st;
}

void lam_net_mute(lam_net_t *n, int mute)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = n->wfd};
    /* fails only if already in that state */
    (void)epoll_ctl(n->epfd, mute ? EPOLL_CTL_DEL : EPOLL_CTL_ADD, n->wfd, &ev);
}

lam_status_t lam_net_watch_fd(lam_net_t *n, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (!n || fd < 0)
        return LAM_ERR_INVALID_ARG;
    if (epoll_ctl(n->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        lam_log_error("net: epoll_ctl(fd %d): %s", fd, strerror(errno));
        return LAM_ERR_NET;
    }
    return LAM_OK;
}

lam_status_t lam_net_flush(lam_net_t *n, int timeout_ms)
{
    if (n->in_progress) {
        lam_log_error("net: lam_net_flush cannot run from a callback");
        return LAM_ERR_INVALID_ARG;
    }
    int64_t deadline = net_now_ms() + timeout_ms;
    for (;;) {
        lam_net_progress(n);
        if (n->n_sends == 0)
            return LAM_OK;
        int left = -1;
        if (timeout_ms >= 0) {
            int64_t l = deadline - net_now_ms();
            if (l <= 0)
                return LAM_ERR_TIMEOUT;
            left = (int)l;
        }
        lam_net_wait(n, left);
    }
}

void lam_conn_set_ud(lam_conn_t *c, void *ud)
{
    c->ud = ud;
}

void *lam_conn_ud(const lam_conn_t *c)
{
    return c->ud;
}

const char *lam_conn_peer(const lam_conn_t *c)
{
    return c->peer;
}
