/* common/notify.c against a stand-in for systemd: an AF_UNIX datagram
 * socket named by NOTIFY_SOCKET, read back after each call. Without
 * NOTIFY_SOCKET every call does nothing. */
#include "common/notify.h"

#include <CUnit/Basic.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int g_sock = -1;
static char g_path[108];

static int open_socket(void)
{
    snprintf(g_path, sizeof g_path, "/tmp/lamina-notify-%d", (int)getpid());
    unlink(g_path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", g_path);
    if (bind(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The next datagram, or "" if none came within timeout_ms. */
static const char *next_msg(int timeout_ms)
{
    static char buf[1024];
    struct pollfd p = {.fd = g_sock, .events = POLLIN};
    buf[0] = '\0';
    if (poll(&p, 1, timeout_ms) == 1) {
        ssize_t n = recv(g_sock, buf, sizeof buf - 1, 0);
        buf[n > 0 ? n : 0] = '\0';
    }
    return buf;
}

static void test_messages(void)
{
    CU_ASSERT_FATAL(setenv("NOTIFY_SOCKET", g_path, 1) == 0);
    lam_notify_status("Loading %s (%d of %d)", "model", 1, 2);
    CU_ASSERT_STRING_EQUAL(next_msg(2000), "STATUS=Loading model (1 of 2)");
    lam_notify_status("two\nlines\r");
    CU_ASSERT_STRING_EQUAL(next_msg(2000), "STATUS=two lines ");
    lam_notify_ready();
    CU_ASSERT_STRING_EQUAL(next_msg(2000), "READY=1\nSTATUS=Ready");
    lam_notify_ready_status("Serving on %s:%d", "0.0.0.0", 7400);
    CU_ASSERT_STRING_EQUAL(next_msg(2000), "READY=1\nSTATUS=Serving on 0.0.0.0:7400");
    lam_notify_stopping();
    CU_ASSERT_STRING_EQUAL(next_msg(2000), "STOPPING=1\nSTATUS=Stopping");
    /* a long status is cut, not overflowed */
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    lam_notify_status("%s", big);
    const char *m = next_msg(2000);
    CU_ASSERT(!strncmp(m, "STATUS=xxxx", 11) && strlen(m) < sizeof big);
}

static void test_unset_is_silent(void)
{
    unsetenv("NOTIFY_SOCKET");
    lam_notify_status("nobody listens");
    lam_notify_ready();
    lam_notify_stopping();
    CU_ASSERT_STRING_EQUAL(next_msg(200), "");
    /* a socket that is not there: no crash, nothing received */
    setenv("NOTIFY_SOCKET", "/nonexistent/notify.sock", 1);
    lam_notify_ready();
    CU_ASSERT_STRING_EQUAL(next_msg(200), "");
    unsetenv("NOTIFY_SOCKET");
}

int main(void)
{
    g_sock = open_socket();
    if (g_sock < 0) {
        perror("notify test socket");
        return 1;
    }
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("notify", NULL, NULL);
    CU_add_test(s, "messages", test_messages);
    CU_add_test(s, "unset_is_silent", test_unset_is_silent);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    close(g_sock);
    unlink(g_path);
    return fails ? 1 : 0;
}
