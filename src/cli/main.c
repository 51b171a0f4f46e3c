#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "dinoscope/image.h"

/* OpenMP threads that finish a parallel region spin for a while before they
 * sleep (libgomp's default "active" wait). On a 2-core server that also runs
 * other work, or next to OpenBLAS' own threads, the spinning steals the cores
 * the work needs: we measured 2.6 s instead of 0.5 s for 40 small images
 * under load. libgomp reads OMP_WAIT_POLICY once, before main(), so unless the
 * user chose a policy we set "passive" and re-execute ourselves once. */
static void prefer_passive_openmp(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc): carry on with the default policy */
}

int main(int argc, char **argv) {
    prefer_passive_openmp(argv);
    /* SIGINT/SIGTERM: remove the temp files of writes in flight, then die by the signal */
    ds_signal_cleanup_install();
    if (argc < 2) {
        cli_usage(stderr);
        return CLI_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        cli_usage(stdout);
        return CLI_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("dinoscope %s\n", ds_version());
        return CLI_OK;
    }
    for (size_t i = 0; i < (size_t)cli_n_commands; i++) {
        if (!strcmp(argv[1], cli_commands[i].name)) {
            if (ds_image_init() != DS_OK) return cli_lib_error(argv[1]);
            return cli_commands[i].fn(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "dinoscope: unknown command '%s'\n", argv[1]);
    cli_usage(stderr);
    return CLI_USAGE;
}
