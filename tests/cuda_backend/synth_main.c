/* lamina-synth-model OUT.gguf [smollm2|llama3-8b] [SEED]: writes a model
 * file with random weights (synth_model.h) for machines without the real
 * one: SmolLM2-135M's shape with Q4_1 weights (default), or LLaMA-3-8B's
 * shape, configuration only (a sparse file: random weights are then made on
 * the GPU). Exit 0 on success, 1 on failure, 2 on bad usage. */
#include "tests/cuda_backend/synth_model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    const synth_shape_t *s = &synth_smollm2;
    if (argc >= 3 && !strcmp(argv[2], "llama3-8b"))
        s = &synth_llama3_8b;
    else if (argc >= 3 && strcmp(argv[2], "smollm2"))
        argc = 0;
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: lamina-synth-model OUT.gguf [smollm2|llama3-8b] [SEED]\n");
        return 2;
    }
    uint64_t seed = argc == 4 ? strtoull(argv[3], NULL, 10) : 135;
    return synth_model_write(argv[1], s, seed) == 0 ? 0 : 1;
}
