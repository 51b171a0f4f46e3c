/* Atomic file output (temp file + fsync + rename) and the removal of
 * unfinished temp files when the process is interrupted.
 *
 * Every temp file a write in progress owns is registered in a fixed table of
 * slots; ds_signal_cleanup_install() sets SIGINT/SIGTERM/SIGHUP/SIGQUIT
 * handlers that unlink() every registered path (unlink is async-signal-safe,
 * POSIX.1-2008 2.4.3) and then re-raise the signal with its default action,
 * so the process still dies of that signal (exit status 128 + n in a shell)
 * and outputs at their final paths are either complete or absent. Slots are
 * lock-free atomics so that the handler never waits on a lock held by the
 * thread it interrupted. */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"

/* 65536 slots: `preprocess` keeps one part file per image until all are
 * done (all or nothing), so a run over a folder of thousands of images has
 * as many registered at once. 512 KB of zeroed BSS, touched only as used;
 * the handler's scan of them takes microseconds. */
enum { TEMP_SLOTS = 1 << 16 };
static _Atomic(char *) temp_slots[TEMP_SLOTS];
static atomic_uint temp_serial, temp_next;

int ds_temp_register(const char *path) {
    char *copy = path ? strdup(path) : NULL;
    if (!copy) return -1;
    /* start where the last registration ended: the next slot is free in
     * the usual case, so n registrations cost O(n), not O(n^2) */
    unsigned start = atomic_fetch_add(&temp_next, 1);
    for (int k = 0; k < TEMP_SLOTS; k++) {
        int i = (int)((start + (unsigned)k) % TEMP_SLOTS);
        char *expected = NULL;
        if (atomic_compare_exchange_strong(&temp_slots[i], &expected, copy)) return i;
    }
    free(copy); /* table full: still written atomically, just not cleaned on a signal */
    return -1;
}

void ds_temp_unregister(int slot) {
    if (slot < 0 || slot >= TEMP_SLOTS) return;
    free(atomic_exchange(&temp_slots[slot], NULL));
}

static const int CLEANUP_SIGNALS[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

static void cleanup_handler(int sig) {
    int saved = errno;
    for (int i = 0; i < TEMP_SLOTS; i++) {
        char *p = atomic_load(&temp_slots[i]);
        if (p) unlink(p);
    }
    /* SA_RESETHAND restored the default action: the signal, blocked while
     * we run, is delivered again when the handler returns */
    raise(sig);
    errno = saved;
}

ds_status ds_signal_cleanup_install(void) {
    for (size_t i = 0; i < sizeof CLEANUP_SIGNALS / sizeof *CLEANUP_SIGNALS; i++) {
        struct sigaction old, sa;
        if (sigaction(CLEANUP_SIGNALS[i], NULL, &old) != 0)
            return ds_set_error(DS_ERR_ARG, "ds_signal_cleanup_install: %s", strerror(errno));
        /* keep what the caller chose (e.g. SIGHUP ignored under nohup, or its own handler) */
        if (old.sa_handler != SIG_DFL) continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = cleanup_handler;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESETHAND;
        if (sigaction(CLEANUP_SIGNALS[i], &sa, NULL) != 0)
            return ds_set_error(DS_ERR_ARG, "ds_signal_cleanup_install: %s", strerror(errno));
    }
    return DS_OK;
}

ds_status ds_atomic_open(ds_atomic_file *af, const char *path) {
    memset(af, 0, sizeof *af);
    af->slot = -1;
    size_t n = strlen(path) + 48;
    af->tmp_path = malloc(n);
    af->final_path = strdup(path);
    if (!af->tmp_path || !af->final_path) {
        free(af->tmp_path);
        free(af->final_path);
        af->tmp_path = af->final_path = NULL;
        return ds_set_error(DS_ERR_NOMEM, "out of memory");
    }
    /* pid + serial: distinct temp files for concurrent writers of one path,
     * in other processes or in other threads; the last rename wins whole */
    snprintf(af->tmp_path, n, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&temp_serial, 1));
    af->slot = ds_temp_register(af->tmp_path);
    af->fp = fopen(af->tmp_path, "wb");
    if (!af->fp) {
        ds_status st = ds_set_error(DS_ERR_IO, "cannot create '%s': %s", af->final_path, strerror(errno));
        ds_temp_unregister(af->slot);
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
    if (ok && (ferror(af->fp) || fflush(af->fp) != 0)) {
        st = ds_set_error(DS_ERR_IO, "cannot write '%s': %s", af->final_path, strerror(errno ? errno : EIO));
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
    ds_temp_unregister(af->slot);
    af->slot = -1;
    free(af->tmp_path);
    free(af->final_path);
    af->tmp_path = af->final_path = NULL;
    return st;
}

ds_status ds_write_file_atomic(const char *path, const void *data, size_t n_bytes) {
    if (!path || (n_bytes && !data)) return ds_set_error(DS_ERR_ARG, "ds_write_file_atomic: bad arguments");
    ds_atomic_file af;
    ds_status st = ds_atomic_open(&af, path);
    if (st != DS_OK) return st;
    bool ok = n_bytes == 0 || fwrite(data, 1, n_bytes, af.fp) == n_bytes;
    if (!ok) st = ds_set_error(DS_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
    ds_status st2 = ds_atomic_commit(&af, ok);
    return st != DS_OK ? st : st2;
}

ds_status ds_atomic_writer_new(size_t size, size_t af_offset, const char *path, void **out) {
    char *w = calloc(1, size);
    if (!w) return ds_set_error(DS_ERR_NOMEM, "out of memory for the writer of '%s'", path);
    ds_status st = ds_atomic_open((ds_atomic_file *)(w + af_offset), path);
    if (st != DS_OK) {
        free(w);
        return st;
    }
    *out = w;
    return DS_OK;
}
