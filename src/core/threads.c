#include <time.h>
#include <omp.h>

#include "core/internal.h"

/* Declared by OpenBLAS (cblas.h of the openblas flavour); declared here so that
 * we do not depend on which cblas.h the alternatives system picked. */
extern void openblas_set_num_threads(int num_threads);
extern int openblas_get_num_threads(void);

int ds_resolve_threads(int n_threads) {
    if (n_threads > 0) return n_threads;
    int n = omp_get_max_threads();
    return n > 0 ? n : 1;
}

int ds_blas_set_threads(int n_threads) {
    int prev = openblas_get_num_threads();
    openblas_set_num_threads(ds_resolve_threads(n_threads));
    return prev;
}

double ds_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}
