/* Memory advice shared by the attention node's KV pages and the benchmark
 * that stands in for them. */
#ifndef LAM_MEM_H
#define LAM_MEM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/mman.h>

#define LAM_HUGE_PAGE ((size_t)2 << 20)

/* Asks for transparent huge pages over the whole 2 MiB pages inside
 * [p, p + n): a KV page table walks pages at random addresses, and with 4
 * KiB pages nearly every step of that walk misses the TLB. Only advice:
 * returns 0, or -1 where the kernel refuses (THP off), which costs only
 * speed. */
static inline int lam_advise_huge(void *p, size_t n)
{
#ifdef MADV_HUGEPAGE
    uintptr_t lo = ((uintptr_t)p + LAM_HUGE_PAGE - 1) & ~(uintptr_t)(LAM_HUGE_PAGE - 1);
    uintptr_t hi = ((uintptr_t)p + n) & ~(uintptr_t)(LAM_HUGE_PAGE - 1);
    return hi > lo ? madvise((void *)lo, hi - lo, MADV_HUGEPAGE) : 0;
#else
    (void)p, (void)n;
    return -1;
#endif
}

#endif
