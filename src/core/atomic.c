#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"

ds_status ds_atomic_open(ds_atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    size_t n = strlen(path) + 32;
    af->tmp_path = malloc(n);
    af->final_path = strdup(path);
    if (!af->tmp_path || !af->final_path) {
        free(af->tmp_path);
        free(af->final_path);
        af->tmp_path = af->final_path = NULL;
        return ds_set_error(DS_ERR_NOMEM, "out of memory");
    }
    snprintf(af->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    af->fp = fopen(af->tmp_path, "wb");
    if (!af->fp) {
        ds_status st = ds_set_error(DS_ERR_IO, "cannot create '%s': %s", af->tmp_path, strerror(errno));
        free(af->tmp_path);
        free(af->final_path);
        af->tmp_path = af->final_path = NULL;
        return st;
    }
    return DS_OK;
}

ds_status ds_atomic_commit(ds_atomic_file *af, bool ok) {
    ds_status st = DS_OK;
    if (!af->fp) return ds_set_error(DS_ERR_ARG, "ds_atomic_commit: file not open");
    if (ok && fflush(af->fp) != 0) {
        st = ds_set_error(DS_ERR_IO, "cannot write '%s': %s", af->final_path, strerror(errno));
        ok = false;
    }
    if (ok && fsync(fileno(af->fp)) != 0) {
        st = ds_set_error(DS_ERR_IO, "cannot sync '%s': %s", af->final_path, strerror(errno));
        ok = false;
    }
    if (fclose(af->fp) != 0 && ok) {
        st = ds_set_error(DS_ERR_IO, "cannot close '%s': %s", af->final_path, strerror(errno));
        ok = false;
    }
    af->fp = NULL;
    if (ok && rename(af->tmp_path, af->final_path) != 0) {
        st = ds_set_error(DS_ERR_IO, "cannot rename '%s' to '%s': %s", af->tmp_path, af->final_path,
                          strerror(errno));
        ok = false;
    }
    if (!ok) remove(af->tmp_path);
    free(af->tmp_path);
    free(af->final_path);
    af->tmp_path = af->final_path = NULL;
    return st;
}
