/* Per-batch checkpoints of a slide run (layout in wsi_internal.h).
 *
 * A record is appended and fsync'd once its whole batch is scored, so a
 * killed run loses at most the batch in flight; a record cut short by the
 * kill (or by a full disk) fails its length or CRC check and is cut off on
 * resume. Batches are fixed slices of the tile list, so the records are
 * always batches 0..n-1 in order. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "core/internal.h"
#include "wsi/wsi_internal.h"

#define CKPT_MAGIC "DSWSICK1"
#define REC_MAGIC 0x42525344u /* "DSRB" little-endian */

struct ds_ckpt {
    FILE *fp;
    char *path;
    int n_scores, n_patch;
    int64_t batch, n_tiles;
    long data_start;
    int64_t n_done;
    /* reading */
    int64_t rec_left;
    float *buf; /* [batch, per] */
};

static size_t per_tile(const ds_ckpt *c) { return (size_t)c->n_scores + (size_t)c->n_patch; }
static int64_t batch_len(const ds_ckpt *c, int64_t b) { return DS_MIN(c->batch, c->n_tiles - b * c->batch); }

static uint32_t crc_update(uint32_t crc, const void *p, size_t n) {
    const unsigned char *b = p;
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, b, chunk);
        b += chunk;
        n -= chunk;
    }
    return crc;
}

void ds_ckpt_close(ds_ckpt *c) {
    if (!c) return;
    if (c->fp) fclose(c->fp);
    free(c->path);
    free(c->buf);
    free(c);
}

/* First line where a and b differ, for the message. */
static void first_diff(const char *a, const char *b, char *out, size_t n) {
    while (*a && *b) {
        const char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
        size_t la = ea ? (size_t)(ea - a) : strlen(a), lb = eb ? (size_t)(eb - b) : strlen(b);
        if (la != lb || memcmp(a, b, la) != 0) {
            snprintf(out, n, "'%.*s' there, '%.*s' now", (int)DS_MIN(la, 200), a, (int)DS_MIN(lb, 200), b);
            return;
        }
        a += la + (ea ? 1 : 0);
        b += lb + (eb ? 1 : 0);
    }
    snprintf(out, n, "the settings differ");
}

static ds_status write_header(ds_ckpt *c, const char *header, const char *soft) {
    uint32_t lh = (uint32_t)strlen(header), ls = (uint32_t)strlen(soft), len = lh + ls;
    if (fwrite(CKPT_MAGIC, 1, 8, c->fp) != 8 || fwrite(&len, 4, 1, c->fp) != 1 || fwrite(header, 1, lh, c->fp) != lh ||
        fwrite(soft, 1, ls, c->fp) != ls || fflush(c->fp) != 0 || fsync(fileno(c->fp)) != 0)
        return ds_set_error(DS_ERR_IO, "cannot write checkpoint '%s': %s", c->path, strerror(errno));
    c->data_start = ftell(c->fp);
    return DS_OK;
}

/* Reads the existing header; *usable 1 = it matches, 0 = torn (treat as
 * absent), error otherwise. */
static ds_status check_header(ds_ckpt *c, const char *header, const char *soft, int *usable, bool *soft_differs) {
    char magic[8];
    uint32_t len;
    *usable = 0;
    if (fread(magic, 1, 8, c->fp) != 8) return DS_OK; /* torn before anything was kept */
    if (memcmp(magic, CKPT_MAGIC, 8) != 0)
        return ds_set_error(DS_ERR_FORMAT, "'%s' is not a dinoscope slide checkpoint", c->path);
    if (fread(&len, 4, 1, c->fp) != 1) return DS_OK;
    if (len > (1u << 20)) return ds_set_error(DS_ERR_FORMAT, "checkpoint '%s': header length %u is corrupt", c->path, len);
    char *h = malloc((size_t)len + 1);
    if (!h) return ds_set_error(DS_ERR_NOMEM, "out of memory");
    if (fread(h, 1, len, c->fp) != len) {
        free(h);
        return DS_OK;
    }
    h[len] = 0;
    size_t hl = strlen(header);
    if (strncmp(h, header, hl) != 0 || strncmp(h + hl, "threads=", 8) != 0) {
        char why[512];
        first_diff(h, header, why, sizeof why);
        free(h);
        return ds_set_error(DS_ERR_MISMATCH,
                            "checkpoint '%s' was written for another run (%s): run without --resume to start over", c->path,
                            why);
    }
    *soft_differs = strcmp(h + hl, soft) != 0;
    free(h);
    c->data_start = ftell(c->fp);
    *usable = 1;
    return DS_OK;
}

/* Validates records from data_start; keeps the good prefix. */
static ds_status scan_records(ds_ckpt *c, bool *truncated) {
    long good = c->data_start;
    size_t per = per_tile(c);
    int64_t n_batches = (c->n_tiles + c->batch - 1) / c->batch;
    int64_t b = 0;
    for (; b < n_batches; b++) {
        uint32_t head[4], crc_file;
        if (fread(head, 4, 4, c->fp) != 4) break;
        int64_t n = batch_len(c, b);
        if (head[0] != REC_MAGIC || head[1] != (uint32_t)b || head[2] != (uint32_t)(b * c->batch) || head[3] != (uint32_t)n)
            break;
        size_t nv = (size_t)n * per;
        if (fread(c->buf, sizeof(float), nv, c->fp) != nv || fread(&crc_file, 4, 1, c->fp) != 1) break;
        uint32_t crc = crc_update(crc_update(0, head, sizeof head), c->buf, nv * sizeof(float));
        if (crc != crc_file) break;
        good = ftell(c->fp);
    }
    c->n_done = b;
    /* anything after the last good record (a torn write) goes */
    if (fseek(c->fp, 0, SEEK_END) != 0) return ds_set_error(DS_ERR_IO, "checkpoint '%s': %s", c->path, strerror(errno));
    long end = ftell(c->fp);
    *truncated = end > good;
    if (end > good) {
        fflush(c->fp);
        if (ftruncate(fileno(c->fp), (off_t)good) != 0 || fsync(fileno(c->fp)) != 0)
            return ds_set_error(DS_ERR_IO, "cannot truncate checkpoint '%s': %s", c->path, strerror(errno));
    }
    if (fseek(c->fp, good, SEEK_SET) != 0) return ds_set_error(DS_ERR_IO, "checkpoint '%s': %s", c->path, strerror(errno));
    return DS_OK;
}

ds_status ds_ckpt_open(const char *path, const char *header, const char *soft, int resume, int n_scores, int n_patch,
                       int64_t batch, int64_t n_tiles, ds_ckpt **out, int64_t *n_done_batches, bool *truncated,
                       bool *soft_differs) {
    if (!path || !header || !soft || n_scores < 1 || n_patch < 0 || batch < 1 || n_tiles < 1 || n_tiles > UINT32_MAX)
        return ds_set_error(DS_ERR_ARG, "ds_ckpt_open: bad arguments");
    ds_ckpt *c = calloc(1, sizeof *c);
    if (!c) return ds_set_error(DS_ERR_NOMEM, "out of memory");
    c->path = strdup(path);
    c->n_scores = n_scores;
    c->n_patch = n_patch;
    c->batch = batch;
    c->n_tiles = n_tiles;
    c->buf = ds_alloc((size_t)batch, per_tile(c) * sizeof(float), "checkpoint");
    ds_status st = DS_OK;
    *truncated = false;
    *soft_differs = false;
    if (!c->path || !c->buf) {
        st = ds_set_error(DS_ERR_NOMEM, "out of memory");
        goto fail;
    }
    int usable = 0;
    if (resume) {
        c->fp = fopen(path, "r+b");
        if (!c->fp && errno != ENOENT) {
            st = ds_set_error(DS_ERR_IO, "cannot open checkpoint '%s': %s", path, strerror(errno));
            goto fail;
        }
        if (c->fp) {
            st = check_header(c, header, soft, &usable, soft_differs);
            if (st != DS_OK) goto fail;
            if (usable) st = scan_records(c, truncated);
            if (st != DS_OK) goto fail;
        }
    }
    if (!usable) {
        if (c->fp) fclose(c->fp);
        c->fp = fopen(path, "w+b");
        if (!c->fp) {
            st = ds_set_error(DS_ERR_IO, "cannot create checkpoint '%s': %s", path, strerror(errno));
            goto fail;
        }
        st = write_header(c, header, soft);
        if (st != DS_OK) goto fail;
        c->n_done = 0;
    }
    *n_done_batches = c->n_done;
    *out = c;
    return DS_OK;
fail:
    ds_ckpt_close(c);
    return st;
}

ds_status ds_ckpt_append(ds_ckpt *c, int64_t b, int64_t first, int n, const float *vals) {
    DS_ASSERT(b == c->n_done && first == b * c->batch && n == batch_len(c, b));
    uint32_t head[4] = {REC_MAGIC, (uint32_t)b, (uint32_t)first, (uint32_t)n};
    size_t nv = (size_t)n * per_tile(c);
    uint32_t crc = crc_update(crc_update(0, head, sizeof head), vals, nv * sizeof(float));
    if (fwrite(head, 4, 4, c->fp) != 4 || fwrite(vals, sizeof(float), nv, c->fp) != nv || fwrite(&crc, 4, 1, c->fp) != 1 ||
        fflush(c->fp) != 0 || fsync(fileno(c->fp)) != 0)
        return ds_set_error(DS_ERR_IO, "cannot write checkpoint '%s': %s", c->path, strerror(errno));
    c->n_done++;
    return DS_OK;
}

ds_status ds_ckpt_rewind(ds_ckpt *c) {
    if (fflush(c->fp) != 0 || fseek(c->fp, c->data_start, SEEK_SET) != 0)
        return ds_set_error(DS_ERR_IO, "checkpoint '%s': %s", c->path, strerror(errno));
    c->rec_left = 0;
    return DS_OK;
}

ds_status ds_ckpt_next(ds_ckpt *c, float *vals) {
    if (c->rec_left == 0) {
        uint32_t head[4];
        if (fread(head, 4, 4, c->fp) != 4 || head[0] != REC_MAGIC)
            return ds_set_error(DS_ERR_IO, "checkpoint '%s': cannot read it back", c->path);
        c->rec_left = head[3];
    }
    size_t per = per_tile(c);
    if (fread(vals, sizeof(float), per, c->fp) != per)
        return ds_set_error(DS_ERR_IO, "checkpoint '%s': cannot read it back", c->path);
    if (--c->rec_left == 0) {
        uint32_t crc;
        if (fread(&crc, 4, 1, c->fp) != 1) return ds_set_error(DS_ERR_IO, "checkpoint '%s': cannot read it back", c->path);
    }
    return DS_OK;
}
