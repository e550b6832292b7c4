/* Test helper: a tiny HTTP/1.1 client over a loopback TCP socket, enough
 * to talk to lamina-compute-node's API: one request per connection
 * ("Connection: close"), Content-Length or chunked bodies, and server-sent
 * events read one at a time. Every read has a deadline, so a hung server
 * fails the test instead of hanging it. */
#ifndef LAM_TEST_HTTP_CLIENT_H
#define LAM_TEST_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct hc_resp {
    int status;          /* 0 when no response came */
    char *head;          /* status line and headers */
    char *body;          /* NUL-terminated */
    size_t body_len;
} hc_resp_t;

/* Sends one request and reads the whole response (timeout_s in all).
 * extra: more header lines, each ending in "\r\n", or NULL. body may be
 * NULL. Returns 0, or -1 if the connection or the response failed. */
int hc_request(int port, const char *method, const char *path, const char *extra, const char *body,
               size_t body_len, double timeout_s, hc_resp_t *out);
/* Sends `raw` as it is (a whole request, framing included) and reads the
 * response like hc_request. */
int hc_request_raw(int port, const char *raw, size_t len, double timeout_s, hc_resp_t *out);
void hc_resp_free(hc_resp_t *r);
/* The value of header `name` (case-insensitive) copied into buf, or NULL. */
const char *hc_header(const hc_resp_t *r, const char *name, char *buf, size_t len);

typedef struct hc_stream {
    int fd;
    int status;
    char head[4096];
    bool chunked;
    long left;           /* bytes left in the current chunk, or of the body (-1: until EOF) */
    bool eof;
    char buf[8192];
    size_t pos, len;
} hc_stream_t;

/* POSTs body to path and reads the response head. Returns 0 (s->status
 * holds the status) or -1. */
int hc_stream_open(hc_stream_t *s, int port, const char *path, const char *extra, const char *body,
                   double timeout_s);
/* The data of the next server-sent event (malloc'ed), or NULL at the end
 * of the body, on a timeout or an error. */
char *hc_stream_event(hc_stream_t *s, double timeout_s);
/* Closes the connection (mid-stream: the client goes away). */
void hc_stream_close(hc_stream_t *s);

#endif
