/* lamina-synth-model OUT.gguf [SEED]: writes a model of SmolLM2-135M's
 * shape with random Q4_1 weights (synth_model.h), for benchmarks on
 * machines without the real file. Exit 0 on success, 1 on failure, 2 on
 * bad usage. */
#include "tests/cuda_backend/synth_model.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: lamina-synth-model OUT.gguf [SEED]\n");
        return 2;
    }
    uint64_t seed = argc == 3 ? strtoull(argv[2], NULL, 10) : 135;
    return synth_model_write(argv[1], &synth_smollm2, seed) == 0 ? 0 : 1;
}
