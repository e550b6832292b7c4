/* The HTTP daemon: binding, request bodies, routing, authentication, the
 * small endpoints (/v1/models, /health, /metrics) and error replies. The
 * completion endpoints live in http_gen.c. */
#include "compute_node/http_internal.h"
#include "compute_node/http_parse.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Per-request state (MHD's con_cls): the body as it arrives. */
typedef struct http_req {
    lam_serve_str_t body;
    bool too_big;
} http_req_t;

enum MHD_Result lam_http_reply_json(lam_http_t *h, struct MHD_Connection *c, lam_metrics_ep_t ep, int status,
                                    json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        text = strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,"
                      "\"code\":null}}");
        if (!text)
            return MHD_NO;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    lam_metrics_request(h->mx, ep, status);
    return ret;
}

enum MHD_Result lam_http_reply_error(lam_http_t *h, struct MHD_Connection *c, lam_metrics_ep_t ep, int status,
                                     const char *type, const char *param, const char *code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *m = json_string(msg);
    if (!m) { /* it quotes bytes that are not UTF-8 (a URL, a name from the command line) */
        char clean[sizeof msg];
        lam_http_utf8_sanitize(msg, clean, sizeof clean);
        m = json_string(clean);
    }
    json_t *err = json_pack("{s:{s:o, s:s, s:o, s:o}}", "error", "message", m, "type", type, "param",
                            param ? json_string(param) : json_null(), "code",
                            code ? json_string(code) : json_null());
    return lam_http_reply_json(h, c, ep, status, err);
}

bool lam_http_client_gone(int fd)
{
    if (fd < 0)
        return false;
    struct pollfd p = {fd, POLLRDHUP, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* ---- small endpoints ---- */

static json_t *model_object(lam_http_t *h)
{
    return json_pack("{s:s, s:s, s:I, s:s}", "id", h->model_name, "object", "model", "created",
                     (json_int_t)h->t_start, "owned_by", "lamina");
}

static enum MHD_Result get_models(lam_http_t *h, struct MHD_Connection *c, const char *url)
{
    if (!strcmp(url, "/v1/models"))
        return lam_http_reply_json(h, c, LAM_EP_MODELS, MHD_HTTP_OK,
                                   json_pack("{s:s, s:[o]}", "object", "list", "data", model_object(h)));
    const char *id = url + strlen("/v1/models/");
    if (!strcmp(id, h->model_name))
        return lam_http_reply_json(h, c, LAM_EP_MODELS, MHD_HTTP_OK, model_object(h));
    return lam_http_reply_error(h, c, LAM_EP_MODELS, MHD_HTTP_NOT_FOUND, "invalid_request_error", "model",
                                "model_not_found", "The model '%s' does not exist", id);
}

static bool is_draining(lam_http_t *h)
{
    return atomic_load(&h->draining) || (h->o.shutdown_flag && *h->o.shutdown_flag);
}

static enum MHD_Result get_health(lam_http_t *h, struct MHD_Connection *c)
{
    bool ready = lam_remote_ready(h->r), draining = is_draining(h);
    json_t *nodes = json_array();
    for (int i = 0; i < h->n_nodes; i++) {
        lam_remote_node_info_t info;
        lam_remote_node_info(h->r, i, &info);
        json_array_append_new(nodes, json_pack("{s:i, s:s, s:b}", "node", i, "peer", info.peer, "up", info.up));
    }
    const char *status = draining ? "draining" : ready ? "ok" : "unavailable";
    json_t *body = json_pack("{s:s, s:s, s:o}", "status", status, "model", h->model_name, "attention_nodes", nodes);
    return lam_http_reply_json(h, c, LAM_EP_HEALTH, ready && !draining ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                               body);
}

static enum MHD_Result get_metrics(lam_http_t *h, struct MHD_Connection *c)
{
    /* the nodes' answers land in the background; this scrape shows the
     * previous ones (the main loop also asks every second) */
    lam_remote_request_stats(h->r);
    lam_serve_str_t out = {0};
    lam_metrics_request(h->mx, LAM_EP_METRICS, MHD_HTTP_OK); /* counts this scrape too */
    if (lam_metrics_render(h->mx, h->r, h->n_nodes, &out) != LAM_OK) {
        lam_serve_str_free(&out);
        return MHD_NO;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(out.n, out.p, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        lam_serve_str_free(&out);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- routing ---- */

static bool authorized(lam_http_t *h, struct MHD_Connection *c)
{
    if (!h->api_key)
        return true;
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!v || strncasecmp(v, "Bearer ", 7) != 0)
        return false;
    v += 7;
    while (*v == ' ')
        v++;
    /* constant time in the key's length */
    size_t kl = strlen(h->api_key), vl = strlen(v);
    unsigned diff = (unsigned)(kl ^ vl);
    for (size_t i = 0; i < kl; i++)
        diff |= (unsigned char)h->api_key[i] ^ (unsigned char)(i < vl ? v[i] : 0);
    return diff == 0;
}

typedef struct route {
    const char *path;
    bool prefix;         /* path is a prefix ("/v1/models/") */
    const char *method;
    lam_metrics_ep_t ep;
} route_t;

static const route_t ROUTES[] = {
    {"/v1/completions", false, "POST", LAM_EP_COMPLETIONS},
    {"/v1/chat/completions", false, "POST", LAM_EP_CHAT},
    {"/v1/models", false, "GET", LAM_EP_MODELS},
    {"/v1/models/", true, "GET", LAM_EP_MODELS},
    {"/health", false, "GET", LAM_EP_HEALTH},
    {"/metrics", false, "GET", LAM_EP_METRICS},
};

static enum MHD_Result dispatch(lam_http_t *h, struct MHD_Connection *c, const char *url, const char *method,
                                http_req_t *rq)
{
    const route_t *rt = NULL;
    for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0] && !rt; i++)
        if (ROUTES[i].prefix ? !strncmp(url, ROUTES[i].path, strlen(ROUTES[i].path)) && url[strlen(ROUTES[i].path)]
                             : !strcmp(url, ROUTES[i].path))
            rt = &ROUTES[i];
    if (!rt)
        return lam_http_reply_error(h, c, LAM_EP_OTHER, MHD_HTTP_NOT_FOUND, "invalid_request_error", NULL,
                                    "not_found", "Unknown path %s %s", method, url);
    bool head = !strcmp(method, "HEAD") && !strcmp(rt->method, "GET");
    if (strcmp(method, rt->method) != 0 && !head) {
        char msg[128];
        snprintf(msg, sizeof msg, "Method %s is not allowed on %s; use %s", method, rt->path, rt->method);
        json_t *err = json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", msg, "type",
                                "invalid_request_error", "param", "code", "method_not_allowed");
        char *text = json_dumps(err, JSON_COMPACT);
        json_decref(err);
        struct MHD_Response *resp =
            text ? MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE) : NULL;
        if (!resp) {
            free(text);
            return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, rt->method);
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_METHOD_NOT_ALLOWED, resp);
        MHD_destroy_response(resp);
        lam_metrics_request(h->mx, rt->ep, MHD_HTTP_METHOD_NOT_ALLOWED);
        return ret;
    }
    bool v1 = !strncmp(url, "/v1/", 4);
    if (v1 && !authorized(h, c))
        return lam_http_reply_error(h, c, rt->ep, MHD_HTTP_UNAUTHORIZED, "invalid_request_error", NULL,
                                    "invalid_api_key", "Missing or incorrect API key (Authorization: Bearer KEY)");
    if (rq->too_big)
        return lam_http_reply_error(h, c, rt->ep, MHD_HTTP_CONTENT_TOO_LARGE, "invalid_request_error", NULL,
                                    "body_too_large", "The request body exceeds %zu bytes", h->o.max_body);
    if (v1 && is_draining(h))
        return lam_http_reply_error(h, c, rt->ep, MHD_HTTP_SERVICE_UNAVAILABLE, "server_error", NULL,
                                    "shutting_down", "The server is shutting down");
    switch (rt->ep) {
    case LAM_EP_COMPLETIONS: return lam_http_generate(h, c, false, rq->body.p ? rq->body.p : "", rq->body.n);
    case LAM_EP_CHAT: return lam_http_generate(h, c, true, rq->body.p ? rq->body.p : "", rq->body.n);
    case LAM_EP_MODELS: return get_models(h, c, url);
    case LAM_EP_HEALTH: return get_health(h, c);
    default: return get_metrics(h, c);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    lam_http_t *h = cls;
    http_req_t *rq = *con_cls;
    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        *con_cls = rq;
        atomic_fetch_add(&h->busy, 1);
        /* refuse an announced oversized body before reading it */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > h->o.max_body) {
            rq->too_big = true;
            lam_metrics_ep_t ep = !strcmp(url, "/v1/completions") ? LAM_EP_COMPLETIONS
                                  : !strcmp(url, "/v1/chat/completions") ? LAM_EP_CHAT
                                                                         : LAM_EP_OTHER;
            return lam_http_reply_error(h, c, ep, MHD_HTTP_CONTENT_TOO_LARGE, "invalid_request_error", NULL,
                                        "body_too_large", "The request body exceeds %zu bytes", h->o.max_body);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!rq->too_big && rq->body.n + *upload_size > h->o.max_body) {
            rq->too_big = true;
            lam_serve_str_free(&rq->body);
        }
        if (!rq->too_big && lam_serve_str_add(&rq->body, upload, *upload_size) != LAM_OK)
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    return dispatch(h, c, url, method, rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why)
{
    (void)c;
    (void)why;
    lam_http_t *h = cls;
    http_req_t *rq = *con_cls;
    if (!rq)
        return;
    atomic_fetch_sub(&h->busy, 1);
    lam_serve_str_free(&rq->body);
    free(rq);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    /* a streamed reply ended because its client went away: expected */
    if (strstr(msg, "application error generating response"))
        lam_log_debug("http: %s", msg);
    else
        lam_log_warn("http: %s", msg);
}

/* ---- lifetime ---- */

lam_status_t lam_http_start(const lam_http_opts_t *o, lam_serve_t *sv, const lam_tok_t *tok, lam_remote_t *r,
                            int n_nodes, lam_metrics_t *mx, lam_http_t **out)
{
    struct addrinfo hints = {.ai_flags = AI_PASSIVE, .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int gai = getaddrinfo(o->listen, NULL, &hints, &ai);
    if (gai != 0) {
        lam_log_error("http: cannot resolve listen address '%s': %s", o->listen, gai_strerror(gai));
        return LAM_ERR_CONFIG;
    }
    struct sockaddr_storage sa;
    memcpy(&sa, ai->ai_addr, ai->ai_addrlen);
    int family = ai->ai_family;
    freeaddrinfo(ai);
    if (family == AF_INET6)
        ((struct sockaddr_in6 *)&sa)->sin6_port = htons((uint16_t)o->port);
    else
        ((struct sockaddr_in *)&sa)->sin_port = htons((uint16_t)o->port);

    lam_http_t *h = calloc(1, sizeof *h);
    if (!h)
        return LAM_ERR_NO_MEMORY;
    h->o = *o;
    h->model_name = strdup(o->model_name);
    h->api_key = o->api_key ? strdup(o->api_key) : NULL;
    h->sv = sv;
    h->tok = tok;
    h->r = r;
    h->n_nodes = n_nodes;
    h->mx = mx;
    h->t_start = (long)time(NULL);
    h->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)h;
    pthread_mutex_init(&h->rng_mu, NULL);
    if (!h->model_name || (o->api_key && !h->api_key)) {
        lam_http_stop(h);
        return LAM_ERR_NO_MEMORY;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     MHD_USE_ERROR_LOG | (family == AF_INET6 ? MHD_USE_IPv6 : 0);
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_conns, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)300, MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
    if (!h->d) {
        lam_log_error("http: cannot listen on %s port %d (address in use, or not an address of this host?)",
                      o->listen, o->port);
        lam_http_stop(h);
        return LAM_ERR_NET;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : o->port;
    if (family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, h->addr, sizeof h->addr);
    else
        inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, h->addr, sizeof h->addr);
    *out = h;
    return LAM_OK;
}

int lam_http_port(const lam_http_t *h) { return h->port; }
const char *lam_http_addr(const lam_http_t *h) { return h->addr; }

void lam_http_drain(lam_http_t *h) { atomic_store(&h->draining, true); }
int lam_http_busy(lam_http_t *h) { return atomic_load(&h->busy); }

void lam_http_stop(lam_http_t *h)
{
    if (!h)
        return;
    if (h->d)
        MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->rng_mu);
    free(h->model_name);
    free(h->api_key);
    free(h);
}
