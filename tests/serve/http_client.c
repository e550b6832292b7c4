#include "tests/serve/http_client.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static int connect_local(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One raw byte, or -1 at EOF / error / the deadline. */
static int raw_getc(hc_stream_t *s, double deadline)
{
    if (s->pos == s->len) {
        if (s->eof)
            return -1;
        for (;;) {
            int ms = (int)((deadline - lam_now_s()) * 1000);
            if (ms <= 0)
                return -1;
            struct pollfd p = {s->fd, POLLIN, 0};
            if (poll(&p, 1, ms) > 0)
                break;
        }
        ssize_t r = recv(s->fd, s->buf, sizeof s->buf, 0);
        if (r <= 0) {
            s->eof = true;
            return -1;
        }
        s->pos = 0;
        s->len = (size_t)r;
    }
    return (unsigned char)s->buf[s->pos++];
}

/* A raw line without its CRLF; -1 on failure. */
static int raw_line(hc_stream_t *s, char *line, size_t len, double deadline)
{
    size_t n = 0;
    for (;;) {
        int c = raw_getc(s, deadline);
        if (c < 0)
            return -1;
        if (c == '\n')
            break;
        if (n + 1 < len)
            line[n++] = (char)c;
    }
    if (n && line[n - 1] == '\r')
        n--;
    line[n] = '\0';
    return 0;
}

/* One byte of the decoded body, or -1 at its end. */
static int body_getc(hc_stream_t *s, double deadline)
{
    if (s->chunked) {
        if (s->left == 0) {
            char line[64];
            if (raw_line(s, line, sizeof line, deadline) != 0)
                return -1;
            s->left = strtol(line, NULL, 16);
            if (s->left <= 0) {
                s->left = -2; /* the last chunk: no more body */
                return -1;
            }
        }
        if (s->left < 0)
            return -1;
        int c = raw_getc(s, deadline);
        if (c >= 0 && --s->left == 0) {
            char crlf[8];
            if (raw_line(s, crlf, sizeof crlf, deadline) != 0)
                return c;
        }
        return c;
    }
    if (s->left == 0)
        return -1;
    int c = raw_getc(s, deadline);
    if (c >= 0 && s->left > 0)
        s->left--;
    return c;
}

static int read_head(hc_stream_t *s, double deadline)
{
    size_t n = 0;
    char line[2048];
    s->left = -1;
    for (int first = 1;; first = 0) {
        if (raw_line(s, line, sizeof line, deadline) != 0)
            return -1;
        if (!line[0])
            break;
        n += (size_t)snprintf(s->head + n, sizeof s->head - n, "%s\r\n", line);
        if (n >= sizeof s->head)
            n = sizeof s->head - 1;
        if (first && sscanf(line, "HTTP/1.%*d %d", &s->status) != 1)
            return -1;
        if (!strncasecmp(line, "Content-Length:", 15))
            s->left = atol(line + 15);
        if (!strncasecmp(line, "Transfer-Encoding:", 18) && strstr(line + 18, "chunked"))
            s->chunked = true;
    }
    if (s->chunked)
        s->left = 0;
    return 0;
}

static int open_and_send(hc_stream_t *s, int port, const char *method, const char *path, const char *extra,
                         const char *body, size_t body_len, double deadline)
{
    memset(s, 0, sizeof *s);
    s->fd = connect_local(port);
    if (s->fd < 0)
        return -1;
    if (!method) { /* body is the whole request */
        send_all(s->fd, body, body_len);
        if (read_head(s, deadline) != 0) {
            close(s->fd);
            s->fd = -1;
            return -1;
        }
        return 0;
    }
    char head[4096];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s%s", method, path, port,
                     extra ? extra : "", body ? "Content-Type: application/json\r\n" : "");
    if (body)
        n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %zu\r\n", body_len);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    /* a server may answer (413) and close before it has the whole body:
     * read its answer whatever became of the sending */
    if (send_all(s->fd, head, (size_t)n) == 0 && body)
        send_all(s->fd, body, body_len);
    if (read_head(s, deadline) != 0) {
        close(s->fd);
        s->fd = -1;
        return -1;
    }
    return 0;
}

int hc_request_raw(int port, const char *raw, size_t len, double timeout_s, hc_resp_t *out)
{
    return hc_request(port, NULL, NULL, NULL, raw, len, timeout_s, out);
}

int hc_request(int port, const char *method, const char *path, const char *extra, const char *body,
               size_t body_len, double timeout_s, hc_resp_t *out)
{
    memset(out, 0, sizeof *out);
    double deadline = lam_now_s() + timeout_s;
    hc_stream_t *s = malloc(sizeof *s);
    if (!s || open_and_send(s, port, method, path, extra, body, body_len, deadline) != 0) {
        free(s);
        return -1;
    }
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    int c;
    while (b && (c = body_getc(s, deadline)) >= 0) {
        if (n + 2 > cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
        }
        b[n++] = (char)c;
    }
    if (b)
        b[n] = '\0';
    out->status = s->status;
    out->head = strdup(s->head);
    out->body = b;
    out->body_len = n;
    close(s->fd);
    free(s);
    return b && out->head ? 0 : -1;
}

void hc_resp_free(hc_resp_t *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

const char *hc_header(const hc_resp_t *r, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    for (const char *p = r->head; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        if (!eol)
            break;
        if (!strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(buf, len, "%.*s", (int)(eol - v), v);
            return buf;
        }
        p = eol + 2;
    }
    return NULL;
}

int hc_stream_open(hc_stream_t *s, int port, const char *path, const char *extra, const char *body,
                   double timeout_s)
{
    return open_and_send(s, port, "POST", path, extra, body, strlen(body), lam_now_s() + timeout_s);
}

char *hc_stream_event(hc_stream_t *s, double timeout_s)
{
    double deadline = lam_now_s() + timeout_s;
    size_t cap = 1024, n = 0;
    char *data = malloc(cap);
    bool any = false;
    if (!data)
        return NULL;
    data[0] = '\0';
    /* lines until a blank one; keep the "data:" ones */
    for (;;) {
        char line[16384];
        size_t ln = 0;
        int c;
        while ((c = body_getc(s, deadline)) >= 0 && c != '\n')
            if (ln + 1 < sizeof line)
                line[ln++] = (char)c;
        if (c < 0 && ln == 0) {
            if (any)
                return data;
            free(data);
            return NULL;
        }
        if (ln && line[ln - 1] == '\r')
            ln--;
        line[ln] = '\0';
        if (ln == 0) {
            if (any)
                return data;
            continue;
        }
        if (strncmp(line, "data:", 5) != 0)
            continue;
        const char *v = line + 5 + (line[5] == ' ');
        size_t vl = strlen(v);
        if (n + vl + 2 > cap) {
            char *nd = realloc(data, cap = n + vl + 1024);
            if (!nd) {
                free(data);
                return NULL;
            }
            data = nd;
        }
        if (any)
            data[n++] = '\n';
        memcpy(data + n, v, vl + 1);
        n += vl;
        any = true;
    }
}

void hc_stream_close(hc_stream_t *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}
