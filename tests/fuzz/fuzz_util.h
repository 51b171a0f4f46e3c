/* Shared helpers of the libFuzzer targets: the loaders under test take paths
 * (they mmap or stream the file, as in real use), so each input is written to
 * a file in a per-process scratch folder (under /dev/shm when it exists: the
 * writes stay in RAM). */
#ifndef DS_FUZZ_UTIL_H
#define DS_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fz_dir[256];

static inline void fz_cleanup(void) {
    if (!fz_dir[0]) return;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fz_dir);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", fz_dir);
}

/* Path of name inside the scratch folder (created on first use). */
static inline const char *fz_path(const char *name) {
    static char path[512];
    if (!fz_dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fz_dir, sizeof fz_dir, "%s/dsfuzz.XXXXXX", base);
        if (!mkdtemp(fz_dir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fz_cleanup);
    }
    snprintf(path, sizeof path, "%s/%s", fz_dir, name);
    return path;
}

/* Writes data to the scratch file name and returns its path. */
static inline const char *fz_write(const char *name, const uint8_t *data, size_t size) {
    const char *path = fz_path(name);
    FILE *fp = fopen(path, "wb");
    if (!fp || (size && fwrite(data, 1, size, fp) != size) || fclose(fp) != 0) {
        perror("fuzz: writing the input");
        abort();
    }
    return path;
}

/* Writes a copy of data, passed through fix (which may rewrite checksums
 * in place), to the scratch file name; returns its path. */
static inline const char *fz_write_fixed(const char *name, const uint8_t *data, size_t size,
                                         void (*fix)(uint8_t *, size_t)) {
    uint8_t *b = malloc(size ? size : 1);
    if (!b) abort();
    memcpy(b, data, size);
    fix(b, size);
    const char *path = fz_write(name, b, size);
    free(b);
    return path;
}

#endif
