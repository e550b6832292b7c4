#include "tests/util/fixtures.h"
#include "common/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *fx_source_path(const char *rel, char *buf, int len)
{
    const char *src = getenv("LAMINA_SOURCE_DIR");
    snprintf(buf, (size_t)len, "%s/%s", src && *src ? src : ".", rel);
    return buf;
}

const char *fx_model_path(char *buf, int len, bool *skip)
{
    *skip = false;
    lam_model_default_path(buf, (size_t)len);
    if (access(buf, R_OK) == 0)
        return buf;
    const char *allow = getenv("LAMINA_ALLOW_NO_MODEL");
    *skip = allow && !strcmp(allow, "1");
    printf("\n  test model %s is missing (run scripts/fetch-model.sh)%s\n", buf,
           *skip ? "; SKIPPED because LAMINA_ALLOW_NO_MODEL=1" : "");
    return NULL;
}

/* Parses the rest of a line as whitespace-separated numbers. */
static int parse_list(char *s, void **out, bool is_float)
{
    int n = 0, cap = 16;
    size_t es = is_float ? sizeof(float) : sizeof(int32_t);
    char *arr = malloc(cap * es);
    for (char *tok = strtok(s, " \t\r\n"); tok; tok = strtok(NULL, " \t\r\n")) {
        if (n == cap) {
            cap *= 2;
            arr = realloc(arr, cap * es);
        }
        if (is_float)
            ((float *)arr)[n++] = strtof(tok, NULL);
        else
            ((int32_t *)arr)[n++] = (int32_t)strtol(tok, NULL, 10);
    }
    *out = arr;
    return n;
}

int fx_load_prompts(const char *path, fx_prompt_t **out)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("cannot open fixture %s\n", path);
        return -1;
    }
    fx_prompt_t *p = NULL;
    int n = 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        fx_prompt_t *cur = n ? &p[n - 1] : NULL;
        if (!strncmp(line, "prompt ", 7)) {
            p = realloc(p, (size_t)(n + 1) * sizeof *p);
            memset(&p[n], 0, sizeof p[n]);
            sscanf(line + 7, "%63s", p[n].name);
            n++;
        } else if (cur && !strncmp(line, "tokens ", 7)) {
            cur->n_tokens = parse_list(line + 7, (void **)&cur->tokens, false);
        } else if (cur && !strncmp(line, "top1 ", 5)) {
            cur->n_top1 = parse_list(line + 5, (void **)&cur->top1, false);
        } else if (cur && !strncmp(line, "# top1_gap ", 11)) {
            cur->n_gap = parse_list(line + 11, (void **)&cur->top1_gap, true);
        } else if (cur && !strncmp(line, "greedy ", 7)) {
            cur->n_greedy = parse_list(line + 7, (void **)&cur->greedy, false);
        }
    }
    free(line);
    fclose(f);
    *out = p;
    return n;
}

void fx_free_prompts(fx_prompt_t *p, int n)
{
    for (int i = 0; i < n; i++) {
        free(p[i].tokens);
        free(p[i].top1);
        free(p[i].top1_gap);
        free(p[i].greedy);
    }
    free(p);
}
