/* Shared by the libFuzzer targets: the entry points libFuzzer calls and
 * CHECK, which reports a broken invariant with the target's file and line
 * and abort()s (libFuzzer then saves the input). */
#ifndef LAM_FUZZ_H
#define LAM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(c)                                                                                           \
    do {                                                                                                   \
        if (!(c)) {                                                                                        \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c);                      \
            abort();                                                                                       \
        }                                                                                                  \
    } while (0)

#endif
