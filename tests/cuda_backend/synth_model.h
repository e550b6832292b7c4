/* Test and benchmark helper: a GGUF file of a LLaMA-shaped model with
 * random weights, for machines that lack the real test model (the GPU
 * machine cannot receive the 98 MB SmolLM2 file). Matrices are Q4_1 like
 * SmolLM2's (random 4-bit codes, per-block scale and minimum chosen so the
 * values are uniform in about ±sqrt(3 / inputs): activations keep unit
 * scale through the layers), norms F32 near 1, embeddings tied. There is
 * no tokenizer: the file serves the engines and the attention node, not
 * text generation. */
#ifndef LAM_TEST_SYNTH_MODEL_H
#define LAM_TEST_SYNTH_MODEL_H

#include <stdbool.h>
#include <stdint.h>

typedef struct synth_shape {
    int n_layers, dim, n_heads, n_kv_heads, ffn_dim, vocab, ctx;
    float rope_theta;
    /* only the configuration and token_embd.weight's descriptor (its data
     * a hole in a sparse file): enough for attention nodes and for random
     * device weights of this shape, not for lam_model_load */
    bool config_only;
} synth_shape_t;

/* SmolLM2-135M-Instruct's shape; LLaMA-3-8B's (config only, context 32768). */
extern const synth_shape_t synth_smollm2, synth_llama3_8b;

/* Writes the model to path; returns 0, or -1 with a message on stdout. */
int synth_model_write(const char *path, const synth_shape_t *s, uint64_t seed);

/* The model tests run on: the shipped SmolLM2 if it is there (*synthetic =
 * false), else a synthetic one of its shape written once per process under
 * $TMPDIR (or /tmp), with a visible note. NULL if neither works. */
const char *synth_model_or_real(char *buf, int len, bool *synthetic);
/* Deletes the synthetic file synth_model_or_real wrote, if any. */
void synth_model_remove(void);

#endif
