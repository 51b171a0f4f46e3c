/* dinoscope: anomaly detection in medical images with frozen DINOv2 features.
 *
 * Conventions shared by every module:
 *   - Calls return ds_status: DS_OK (0) or a negative code. The message of the
 *     last failure on this thread is read with ds_last_error().
 *   - On failure, outputs are left unchanged.
 *   - Each ds_x_create/_load has a ds_x_free that accepts NULL. The library
 *     never frees caller memory.
 *   - Tensors are row-major and contiguous; shapes are written outermost-first.
 */
#ifndef DINOSCOPE_H
#define DINOSCOPE_H

#include <stddef.h>
#include <stdint.h>

/* Symbol visibility: the library is compiled with -fvisibility=hidden and
 * every public header brackets its declarations with DS_API_BEGIN/END, so
 * the shared library exports exactly the API declared in include/dinoscope/
 * (internal helpers under src/, even those named ds_*, stay hidden). */
#if defined(__GNUC__) || defined(__clang__)
#define DS_API_BEGIN _Pragma("GCC visibility push(default)")
#define DS_API_END _Pragma("GCC visibility pop")
#else
#define DS_API_BEGIN
#define DS_API_END
#endif

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

typedef enum {
    DS_OK = 0,
    DS_ERR_ARG = -1,         /* invalid argument from the caller */
    DS_ERR_IO = -2,          /* a file could not be opened, read or written */
    DS_ERR_FORMAT = -3,      /* a file's contents are malformed */
    DS_ERR_NOMEM = -4,       /* allocation failed or a size overflowed */
    DS_ERR_SHAPE = -5,       /* a tensor or image has the wrong shape */
    DS_ERR_UNSUPPORTED = -6, /* well-formed but not supported */
    DS_ERR_MISMATCH = -7,    /* files that must agree do not */
    DS_ERR_STOPPED = -8,     /* a caller's callback asked to stop (its own message, if any) */
} ds_status;

/* Message of the last error on this thread ("" if none). Valid until the
 * next failing call on this thread. This function can't fail. */
const char *ds_last_error(void);

/* Version string, e.g. "0.1.0". */
const char *ds_version(void);

/* ---- interrupted runs and atomic outputs (src/core/atomic.c) ----------- */

/* Installs handlers for SIGINT, SIGTERM, SIGHUP and SIGQUIT (those still at
 * their default action; an ignored SIGHUP under nohup stays ignored) that
 * remove the temp files of every write in progress (the library's atomic
 * writers and paths given to ds_temp_register), then re-raise the signal
 * with its default action, so the process still ends by that signal and no
 * half-written file is left. Call it once at program start, before threads
 * are created. Returns DS_OK or DS_ERR_ARG (sigaction failed). */
ds_status ds_signal_cleanup_install(void);

/* Registers path (copied) for removal by those handlers; returns a slot for
 * ds_temp_unregister, or -1 when the table (65536 entries) is full or out of
 * memory: the file is then just not removed on a signal. Thread-safe. */
int ds_temp_register(const char *path);
/* Forgets a slot (accepts -1); call it once the file is renamed or removed. */
void ds_temp_unregister(int slot);

/* Writes n_bytes of data to path atomically: a registered temp file in the
 * same folder, fsync, rename over path. Concurrent writers of one path
 * (threads or processes) leave one complete file, the last one renamed.
 * Returns DS_OK, DS_ERR_ARG or DS_ERR_IO ("cannot write '<path>': No space
 * left on device"); on error path is untouched (a previous file stays). */
ds_status ds_write_file_atomic(const char *path, const void *data, size_t n_bytes);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
