/* The GPU attention executor in a build without CUDA: --device cuda is
 * refused with a clear reason. */
#include "attention_node/exec.h"

#include "common/log.h"

lam_status_t lam_an_exec_cuda_create(const lam_an_exec_opts_t *o, lam_an_exec_t **out)
{
    (void)o, (void)out;
    lam_log_error("attention node: --device cuda: built without CUDA (rebuild with nvcc installed, LAMINA_CUDA=ON)");
    return LAM_ERR_UNSUPPORTED;
}
