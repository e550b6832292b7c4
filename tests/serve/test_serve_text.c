/* compute_node/serve_text.c: incremental text with stop strings. Whole
 * code points only, U+FFFD for bytes that cannot be UTF-8, stop strings
 * spanning pieces, hold-back released when a partial match fails, and
 * random byte streams split at random points giving the same valid UTF-8
 * as when pushed whole. */
#include "compute_node/serve_text.h"

#include <CUnit/Basic.h>
#include <stdlib.h>
#include <string.h>

#define FFFD "\xEF\xBF\xBD"

typedef struct run {
    lam_serve_text_t t;
    lam_serve_str_t out;
    bool stopped;
} run_t;

static void start(run_t *r, const char *const *stops, int n)
{
    memset(r, 0, sizeof *r);
    CU_ASSERT_FATAL(lam_serve_text_init(&r->t, NULL, stops, n) == LAM_OK);
}

/* Pushes s; returns what came out of this push. */
static const char *push(run_t *r, const char *s)
{
    static char last[256];
    size_t before = r->out.n;
    r->stopped = lam_serve_text_push_bytes(&r->t, s, strlen(s), &r->out);
    snprintf(last, sizeof last, "%.*s", (int)(r->out.n - before), r->out.p ? r->out.p + before : "");
    return last;
}

static const char *finish(run_t *r)
{
    lam_serve_text_finish(&r->t, &r->out);
    return r->out.p ? r->out.p : "";
}

static void stop(run_t *r)
{
    lam_serve_text_free(&r->t);
    lam_serve_str_free(&r->out);
}

static void test_utf8_split(void)
{
    run_t r;
    start(&r, NULL, 0);
    CU_ASSERT_STRING_EQUAL(push(&r, "caf"), "caf");
    CU_ASSERT_STRING_EQUAL(push(&r, "\xC3"), "");        /* half of é */
    CU_ASSERT_STRING_EQUAL(push(&r, "\xA9 "), "\xC3\xA9 ");
    CU_ASSERT_STRING_EQUAL(push(&r, "\xF0\x9F"), "");    /* an emoji in three pieces */
    CU_ASSERT_STRING_EQUAL(push(&r, "\x98"), "");
    CU_ASSERT_STRING_EQUAL(push(&r, "\x80!"), "\xF0\x9F\x98\x80!");
    CU_ASSERT_STRING_EQUAL(push(&r, "\xE2\x82"), "");    /* cut off at the end */
    CU_ASSERT_STRING_EQUAL(finish(&r), "caf\xC3\xA9 \xF0\x9F\x98\x80!" FFFD);
    stop(&r);
}

static void test_invalid_bytes(void)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"a\x80z", "a" FFFD "z"},                      /* stray continuation */
        {"\xC3z", FFFD "z"},                           /* lead byte, then ASCII */
        {"\xC0\xAF", FFFD FFFD},                       /* overlong lead */
        {"\xE0\x80\x80", FFFD FFFD FFFD},              /* overlong 3-byte */
        {"\xED\xA0\x80", FFFD FFFD FFFD},              /* surrogate */
        {"\xF4\x90\x80\x80", FFFD FFFD FFFD FFFD},     /* past U+10FFFF */
        {"\xF5", FFFD},
        {"\xE2\x82\xAC\xC3", "\xE2\x82\xAC" FFFD},     /* € then a cut lead byte */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_t r;
        start(&r, NULL, 0);
        push(&r, cases[i].in);
        CU_ASSERT_STRING_EQUAL(finish(&r), cases[i].out);
        stop(&r);
    }
}

static void test_stops(void)
{
    const char *s1[] = {"STOP"};
    run_t r;
    start(&r, s1, 1);
    CU_ASSERT_STRING_EQUAL(push(&r, "abcST"), "abc"); /* "ST" may begin STOP */
    CU_ASSERT_FALSE(r.stopped);
    CU_ASSERT_STRING_EQUAL(push(&r, "OPxyz"), "");
    CU_ASSERT(r.stopped);
    CU_ASSERT_STRING_EQUAL(push(&r, "more"), "");
    CU_ASSERT(r.stopped);
    CU_ASSERT_STRING_EQUAL(finish(&r), "abc");
    stop(&r);

    start(&r, s1, 1); /* a partial match that fails is released */
    CU_ASSERT_STRING_EQUAL(push(&r, "abcST"), "abc");
    CU_ASSERT_STRING_EQUAL(push(&r, "Ax"), "STAx");
    CU_ASSERT_STRING_EQUAL(push(&r, "S"), "");
    CU_ASSERT_STRING_EQUAL(finish(&r), "abcSTAxS"); /* held text comes out at the end */
    stop(&r);

    const char *s2[] = {"cd", "b"};
    start(&r, s2, 2); /* the earliest match wins */
    CU_ASSERT_STRING_EQUAL(push(&r, "abcd"), "a");
    CU_ASSERT(r.stopped);
    stop(&r);

    const char *s6[] = {"abcdef", "cd"};
    start(&r, s6, 2); /* a stop string that completes first ends it, before */
    CU_ASSERT_STRING_EQUAL(push(&r, "xab"), "x"); /* a longer one begun earlier */
    CU_ASSERT_STRING_EQUAL(push(&r, "cd"), "ab");
    CU_ASSERT(r.stopped);
    stop(&r);
    start(&r, s6, 2); /* both complete in one piece: the earliest start */
    CU_ASSERT_STRING_EQUAL(push(&r, "xabcdef"), "x");
    CU_ASSERT(r.stopped);
    stop(&r);

    const char *s3[] = {"aab"};
    start(&r, s3, 1); /* overlapping prefix */
    CU_ASSERT_STRING_EQUAL(push(&r, "aa"), "");
    CU_ASSERT_STRING_EQUAL(push(&r, "a"), "a");
    CU_ASSERT_STRING_EQUAL(push(&r, "b"), "");
    CU_ASSERT(r.stopped);
    CU_ASSERT_STRING_EQUAL(finish(&r), "a");
    stop(&r);

    const char *s4[] = {"\xC3\xA9!"};
    start(&r, s4, 1); /* multi-byte stop string, split inside its first code point */
    CU_ASSERT_STRING_EQUAL(push(&r, "x\xC3"), "x");
    CU_ASSERT_STRING_EQUAL(push(&r, "\xA9"), "");
    CU_ASSERT_STRING_EQUAL(push(&r, "!tail"), "");
    CU_ASSERT(r.stopped);
    CU_ASSERT_STRING_EQUAL(finish(&r), "x");
    stop(&r);

    const char *s5[] = {"\n\n"};
    start(&r, s5, 1); /* the stop string at the very start */
    CU_ASSERT_STRING_EQUAL(push(&r, "\n"), "");
    CU_ASSERT_STRING_EQUAL(push(&r, "\nrest"), "");
    CU_ASSERT(r.stopped);
    CU_ASSERT_STRING_EQUAL(finish(&r), "");
    stop(&r);

    lam_serve_text_t t;
    const char *bad[] = {""}, *five[] = {"a", "b", "c", "d", "e"};
    CU_ASSERT_EQUAL(lam_serve_text_init(&t, NULL, bad, 1), LAM_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(lam_serve_text_init(&t, NULL, five, 5), LAM_ERR_INVALID_ARG);
}

static bool valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        int len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!len || i + (size_t)len > n)
            return false;
        for (int k = 1; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F) || (c == 0xF0 && s[i + 1] < 0x90) ||
            (c == 0xF4 && s[i + 1] > 0x8F))
            return false;
        i += (size_t)len;
    }
    return true;
}

/* Random bytes (biased towards UTF-8-looking ones) in random pieces: the
 * same valid output as one push, and with a stop string, the output is
 * the one-push output's prefix before the stop string. */
static void test_random_pieces(void)
{
    unsigned seed = 12345;
    const unsigned char alphabet[] = {'a', 'b', ' ', 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0xED, 0xFF};
    int mismatches = 0, invalid = 0;
    for (int iter = 0; iter < 2000; iter++) {
        char in[64];
        int n = 1 + rand_r(&seed) % 60;
        for (int i = 0; i < n; i++)
            in[i] = (char)alphabet[rand_r(&seed) % sizeof alphabet];
        const char *stops[] = {"b\xC3\xA9"};
        int n_stop = iter % 2;
        run_t whole, pieces;
        start(&whole, stops, n_stop);
        start(&pieces, stops, n_stop);
        lam_serve_text_push_bytes(&whole.t, in, (size_t)n, &whole.out);
        lam_serve_text_finish(&whole.t, &whole.out);
        for (int i = 0; i < n;) {
            int k = 1 + rand_r(&seed) % 5;
            k = k < n - i ? k : n - i;
            lam_serve_text_push_bytes(&pieces.t, in + i, (size_t)k, &pieces.out);
            i += k;
        }
        lam_serve_text_finish(&pieces.t, &pieces.out);
        mismatches += whole.out.n != pieces.out.n || (whole.out.n && memcmp(whole.out.p, pieces.out.p, whole.out.n));
        invalid += !valid_utf8((const unsigned char *)pieces.out.p, pieces.out.n);
        if (n_stop && pieces.out.n && memmem(pieces.out.p, pieces.out.n, stops[0], strlen(stops[0])))
            invalid++;
        stop(&whole);
        stop(&pieces);
    }
    CU_ASSERT_EQUAL(mismatches, 0);
    CU_ASSERT_EQUAL(invalid, 0);
}

static void test_str(void)
{
    lam_serve_str_t s = {0};
    for (int i = 0; i < 1000; i++)
        CU_ASSERT_EQUAL(lam_serve_str_printf(&s, "%d,", i), LAM_OK);
    CU_ASSERT_EQUAL(strlen(s.p), s.n);
    CU_ASSERT(!strncmp(s.p, "0,1,2,", 6));
    CU_ASSERT(!strcmp(s.p + s.n - 4, "999,"));
    lam_serve_str_free(&s);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("serve_text", NULL, NULL);
    CU_add_test(s, "code points split across pieces", test_utf8_split);
    CU_add_test(s, "invalid bytes become U+FFFD", test_invalid_bytes);
    CU_add_test(s, "stop strings", test_stops);
    CU_add_test(s, "random pieces: same valid output", test_random_pieces);
    CU_add_test(s, "growable strings", test_str);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures() + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return fails ? 1 : 0;
}
