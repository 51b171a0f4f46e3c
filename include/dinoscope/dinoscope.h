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

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
