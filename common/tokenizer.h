/* Tokenizer: byte-level BPE (GPT-2 / SmolLM / LLaMA-3 style) and
 * SentencePiece-style (LLaMA-2 style) vocabularies, read from GGUF metadata
 * or built from in-memory arrays, plus ChatML / Llama-3 chat rendering.
 *
 * Behaviour follows llama.cpp's tokenizer (the project's peer) so that the
 * same text gives the same ids; the deliberate differences are listed here:
 *  - Invalid UTF-8 is kept byte for byte (llama.cpp turns it into U+FFFD),
 *    so for byte-level BPE decode(encode(s)) == s for ANY bytes, provided
 *    every byte of s has a token (lam_tok_byte_token). A vocabulary may
 *    lack some: SmolLM2 has none for 21 bytes (0x04 0x06 0x13 0x14 0x16
 *    0x1d 0xc0 0xc1 0xf1 0xf2 0xf5..0xff); such bytes are dropped, as
 *    llama.cpp drops them. For SPM the same holds except that U+2581 in
 *    the input decodes as ' ' (SentencePiece's own loss).
 *  - SPM merges only form NORMAL tokens (llama.cpp may also form a control
 *    token such as "<s>" from plain text when parse_special is false).
 *  - Decoding always renders control / user-defined tokens as their text;
 *    use lam_tok_is_special() to suppress them when streaming.
 *
 * Special tokens: with parse_special, control and user-defined tokens that
 * appear literally in the text become their ids (longest token first, each
 * token's occurrences left to right, as llama.cpp does); user-defined tokens
 * are matched even without parse_special (as llama.cpp and HF do).
 *
 * Thread safety: a lam_tok_t is immutable after creation; any number of
 * threads may encode/decode with one concurrently. All outputs are malloc'ed
 * and owned by the caller unless stated otherwise.
 *
 * Lives in common/: tokenizer.c (build, lookup tables, decode), tok_gguf.c
 * (GGUF metadata), tok_encode.c (special-token partition, BPE and SPM
 * merging), tok_pretok.c (hand-written pre-tokenizer matchers on utf8proc
 * categories), tok_chat.c (chat prompts); tok_internal.h is theirs only.
 */
#ifndef LAM_TOKENIZER_H
#define LAM_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/gguf.h"
#include "common/status.h"

#define LAM_TOK_NULL (-1) /* "no such token" in ids and in the spec */

typedef enum lam_tok_model {
    LAM_TOK_MODEL_BPE = 0, /* GGUF tokenizer.ggml.model = "gpt2" */
    LAM_TOK_MODEL_SPM = 1, /* GGUF tokenizer.ggml.model = "llama" */
} lam_tok_model_t;

/* Pre-tokenizers of byte-level BPE (GGUF tokenizer.ggml.pre). */
typedef enum lam_tok_pre {
    LAM_TOK_PRE_GPT2 = 0,   /* "gpt2", "default", unknown names */
    LAM_TOK_PRE_SMOLLM = 1, /* "smollm": each \p{N} alone, then GPT-2 */
    LAM_TOK_PRE_LLAMA3 = 2, /* "llama3", "llama-bpe" (also ignores merges
                               for words that are whole tokens) */
} lam_tok_pre_t;

/* Token types, numbered as in GGUF tokenizer.ggml.token_type. */
typedef enum lam_tok_type {
    LAM_TOK_TYPE_UNDEFINED = 0,
    LAM_TOK_TYPE_NORMAL = 1,
    LAM_TOK_TYPE_UNKNOWN = 2,
    LAM_TOK_TYPE_CONTROL = 3,
    LAM_TOK_TYPE_USER_DEFINED = 4,
    LAM_TOK_TYPE_UNUSED = 5,
    LAM_TOK_TYPE_BYTE = 6,
} lam_tok_type_t;

/* Everything a tokenizer is made of, as plain arrays. Strings are byte
 * ranges (need not be NUL-terminated); a NULL `*_lens` array means the
 * strings are NUL-terminated. All of it is copied: the caller may free the
 * spec after lam_tok_create() returns. */
typedef struct lam_tok_spec {
    lam_tok_model_t model;
    lam_tok_pre_t pre;              /* BPE only */
    int32_t n_vocab;
    const char *const *tokens;      /* [n_vocab] token text as stored (BPE:
                                       byte-to-unicode mapped; SPM: U+2581
                                       for spaces, "<0xNN>" byte tokens) */
    const size_t *token_lens;       /* [n_vocab] or NULL */
    const float *scores;            /* [n_vocab] or NULL (all 0); SPM merge priority */
    const int32_t *types;           /* [n_vocab] lam_tok_type_t or NULL (all NORMAL) */
    size_t n_merges;                /* BPE: merges in rank order, "left right" */
    const char *const *merges;
    const size_t *merge_lens;       /* [n_merges] or NULL */
    int32_t bos, eos, unk, pad;     /* LAM_TOK_NULL when absent */
    int32_t eot;                    /* LAM_TOK_NULL: look for "<|im_end|>", "<|eot_id|>"... */
    bool add_bos, add_eos;          /* what add_special adds */
    bool add_space_prefix;          /* SPM: prepend ' ' to text at start / after a special */
    const char *chat_template;      /* Jinja text from the model, or NULL */
    size_t chat_template_len;
} lam_tok_spec_t;

typedef struct lam_tok lam_tok_t;

/* Fills *spec with llama.cpp's defaults for `model` and no vocabulary:
 * all ids LAM_TOK_NULL, pre gpt2; SPM also add_bos and add_space_prefix
 * (so an SPM spec needs a bos id). */
void lam_tok_spec_init(lam_tok_spec_t *spec, lam_tok_model_t model);

/* Builds a tokenizer from GGUF tokenizer.* metadata. Bad metadata (missing
 * or mistyped arrays, merges naming unknown tokens, ids out of range,
 * mismatched array lengths...) gives one lam_log_error line and
 * LAM_ERR_TOKENIZER (LAM_ERR_UNSUPPORTED for an unknown model kind). */
lam_status_t lam_tok_from_gguf(const lam_gguf_t *g, lam_tok_t **out);

/* Builds a tokenizer from arrays; validates like lam_tok_from_gguf(). */
lam_status_t lam_tok_create(const lam_tok_spec_t *spec, lam_tok_t **out);

void lam_tok_free(lam_tok_t *tok);

/* Encodes text[0..len) (any bytes). add_special adds BOS/EOS as the model's
 * add_bos/add_eos flags say. On success *ids is malloc'ed (caller frees; may
 * be NULL when *n_ids == 0). */
lam_status_t lam_tok_encode(const lam_tok_t *tok, const char *text, size_t len, bool add_special,
                            bool parse_special, int32_t **ids, size_t *n_ids);

/* Concatenates the pieces of ids[0..n) into a malloc'ed, NUL-terminated
 * string (*len excludes the NUL). For SPM with add_space_prefix, the one
 * space the encoder adds at the start and after each special token is
 * removed again. LAM_ERR_RANGE for an id outside the vocabulary. */
lam_status_t lam_tok_decode(const lam_tok_t *tok, const int32_t *ids, size_t n, char **text,
                            size_t *len);

/* The bytes token `id` stands for (byte-level unmapped, U+2581 -> ' ',
 * <0xNN> -> the byte, special tokens -> their text), owned by the
 * tokenizer; may be partial UTF-8. NULL (and *len = 0) if id is out of
 * range. len may be NULL. */
const char *lam_tok_piece(const lam_tok_t *tok, int32_t id, size_t *len);

/* The token's text as stored in the vocabulary (not unmapped). */
const char *lam_tok_text(const lam_tok_t *tok, int32_t id, size_t *len);

/* The token that stands for byte b alone (BPE: its mapped character;
 * SPM: "<0xNN>"), or LAM_TOK_NULL if the vocabulary has none. */
int32_t lam_tok_byte_token(const lam_tok_t *tok, uint8_t b);

/* Token id of an exact vocabulary text, or LAM_TOK_NULL. */
int32_t lam_tok_find(const lam_tok_t *tok, const char *text, size_t len);

int32_t lam_tok_n_vocab(const lam_tok_t *tok);
lam_tok_model_t lam_tok_model(const lam_tok_t *tok);
lam_tok_pre_t lam_tok_pre(const lam_tok_t *tok);
int32_t lam_tok_bos(const lam_tok_t *tok); /* LAM_TOK_NULL if none */
int32_t lam_tok_eos(const lam_tok_t *tok);
int32_t lam_tok_eot(const lam_tok_t *tok); /* e.g. <|im_end|>; LAM_TOK_NULL if none */
int32_t lam_tok_unk(const lam_tok_t *tok);
int32_t lam_tok_pad(const lam_tok_t *tok);
lam_tok_type_t lam_tok_type(const lam_tok_t *tok, int32_t id); /* UNDEFINED if out of range */
/* End of generation: eos, eot, and control tokens llama.cpp also stops at
 * by name (<|endoftext|>, <|im_end|>, <|eot_id|>, <end_of_turn>, FIM
 * repo/pad/separator tokens...). SmolLM2: 0, 2 and 4 (<reponame>). */
bool lam_tok_is_eog(const lam_tok_t *tok, int32_t id);
/* Control, user-defined or unknown token (rendered as text by decode). */
bool lam_tok_is_special(const lam_tok_t *tok, int32_t id);

/* ---- chat prompts ---- */

typedef struct lam_chat_msg {
    const char *role;    /* "system", "user", "assistant", ... */
    const char *content; /* NUL-terminated */
} lam_chat_msg_t;

typedef enum lam_chat_format {
    LAM_CHAT_CHATML = 0, /* <|im_start|>role\ncontent<|im_end|>\n */
    LAM_CHAT_LLAMA3 = 1, /* <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> */
} lam_chat_format_t;

/* Renders messages in `fmt`. If default_system is non-NULL and the first
 * message is not a system message, a system message with that content comes
 * first (SmolLM2's template does this). Llama-3 output starts with
 * "<|begin_of_text|>". *out is malloc'ed and NUL-terminated. */
lam_status_t lam_chat_render(lam_chat_format_t fmt, const lam_chat_msg_t *msgs, size_t n,
                             bool add_generation_prompt, const char *default_system,
                             char **out);

/* Renders with the model's format and default system message, both read
 * from tokenizer.chat_template (ChatML when the model has no template).
 * LAM_ERR_UNSUPPORTED if the template is neither ChatML nor Llama-3. */
lam_status_t lam_tok_chat_render(const lam_tok_t *tok, const lam_chat_msg_t *msgs, size_t n,
                                 bool add_generation_prompt, char **out);

/* What lam_tok_chat_render() will use: the detected format (false if the
 * template is unsupported) and default system message (NULL if none). */
bool lam_tok_chat_format(const lam_tok_t *tok, lam_chat_format_t *fmt);
const char *lam_tok_chat_default_system(const lam_tok_t *tok);

#endif
