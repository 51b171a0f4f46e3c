/* Refusing images whose header declares more pixel data than the file can
 * hold, before anything of that size is allocated (decompression bombs and
 * corrupt headers; issue 11). libvips allocates the whole decoded image in
 * vips_image_write_to_memory before the decoder finds out that the data are
 * missing, so the check is made here, from the file's own tables:
 *   PNG   deflate expands at most 1032:1 (zlib's technical details, "maximum
 *         compression factor"), so the IDAT data of a file of n bytes decode
 *         to at most 1032 n bytes; the image needs width*height*depth*
 *         channels/8 of them (IHDR, PNG spec 11.2.2).
 *   TIFF  every strip or tile of the first directory (the page libvips
 *         loads) must lie inside the file, and uncompressed data must cover
 *         the image (TIFF 6.0, StripOffsets/StripByteCounts, TileOffsets/
 *         TileByteCounts). Read with libtiff, its allocations capped.
 * JPEG has no such bound (arithmetic coding and EOB runs code a block in
 * far less than a bit), so JPEG relies on the pixel limit of open_header. */
#include <stdio.h>
#include <string.h>
#include <tiffio.h>

#include "core/internal.h"
#include "image/image_internal.h"

#define DEFLATE_MAX_RATIO 1032

static int quiet_tiff(TIFF *tif, void *user, const char *module, const char *fmt, va_list ap) {
    (void)tif, (void)module;
    if (user) vsnprintf(user, 256, fmt, ap);
    return 1; /* handled: libtiff's (and libvips') global handlers stay silent */
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static ds_status check_png(const char *path, FILE *fp, uint64_t file_bytes) {
    unsigned char h[29];
    if (fseek(fp, 0, SEEK_SET) != 0 || fread(h, 1, sizeof h, fp) != sizeof h || memcmp(h + 12, "IHDR", 4) != 0)
        return DS_OK; /* libvips reports a bad header itself */
    uint64_t w = be32(h + 16), ht = be32(h + 20), depth = h[24];
    static const int channels_of[7] = {1, 0, 3, 1, 2, 0, 4}; /* colour types 0, 2, 3, 4, 6 */
    uint64_t ch = h[25] < 7 ? (uint64_t)channels_of[h[25]] : 0;
    if (!ch || !depth || w > (1u << 31) || ht > (1u << 31)) return DS_OK;
    /* bits first, then bytes: 1-bit images of 2^31 x 2^31 still fit in 64 bits */
    uint64_t need = w * ht / 8 * depth * ch;
    if (need / DEFLATE_MAX_RATIO > file_bytes)
        return ds_set_error(DS_ERR_FORMAT,
                            "'%s': corrupt or truncated PNG: %llux%llu pixels need at least %llu bytes of compressed "
                            "data, the file has %llu",
                            path, (unsigned long long)w, (unsigned long long)ht,
                            (unsigned long long)(need / DEFLATE_MAX_RATIO), (unsigned long long)file_bytes);
    return DS_OK;
}

static ds_status check_tiff(const char *path, uint64_t file_bytes) {
    char why[256] = "";
    TIFFOpenOptions *o = TIFFOpenOptionsAlloc();
    if (!o) return ds_set_error(DS_ERR_NOMEM, "'%s': out of memory", path);
    TIFFOpenOptionsSetMaxSingleMemAlloc(o, 64 << 20); /* directory arrays only: 8 M strips */
    TIFFOpenOptionsSetErrorHandlerExtR(o, quiet_tiff, why);
    TIFFOpenOptionsSetWarningHandlerExtR(o, quiet_tiff, NULL);
    TIFF *t = TIFFOpenExt(path, "rm", o); /* m: no mmap, the file may be shorter than it says */
    TIFFOpenOptionsFree(o);
    if (!t) return DS_OK; /* not readable by libtiff at all: libvips says why */
    ds_status st = DS_OK;
    uint32_t w = 0, h = 0;
    uint16_t bps = 1, spp = 1, comp = COMPRESSION_NONE, planar = PLANARCONFIG_CONTIG;
    TIFFGetField(t, TIFFTAG_IMAGEWIDTH, &w);
    TIFFGetField(t, TIFFTAG_IMAGELENGTH, &h);
    TIFFGetFieldDefaulted(t, TIFFTAG_BITSPERSAMPLE, &bps);
    TIFFGetFieldDefaulted(t, TIFFTAG_SAMPLESPERPIXEL, &spp);
    TIFFGetFieldDefaulted(t, TIFFTAG_COMPRESSION, &comp);
    TIFFGetFieldDefaulted(t, TIFFTAG_PLANARCONFIG, &planar);
    const bool tiled = TIFFIsTiled(t);
    uint64_t *offs = NULL, *counts = NULL;
    uint32_t n = tiled ? TIFFNumberOfTiles(t) : TIFFNumberOfStrips(t);
    int got = tiled ? TIFFGetField(t, TIFFTAG_TILEOFFSETS, &offs) && TIFFGetField(t, TIFFTAG_TILEBYTECOUNTS, &counts)
                    : TIFFGetField(t, TIFFTAG_STRIPOFFSETS, &offs) && TIFFGetField(t, TIFFTAG_STRIPBYTECOUNTS, &counts);
    if (!got || !offs || !counts || n == 0) {
        st = ds_set_error(DS_ERR_FORMAT, "'%s': corrupt TIFF: no %s table%s%s", path, tiled ? "tile" : "strip",
                          why[0] ? ": " : "", why);
        goto done;
    }
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (offs[i] > file_bytes || counts[i] > file_bytes - offs[i]) {
            st = ds_set_error(DS_ERR_FORMAT,
                              "'%s': corrupt TIFF: %s %u of %u lies at bytes %llu..%llu, past the end of the file (%llu "
                              "bytes)",
                              path, tiled ? "tile" : "strip", i, n, (unsigned long long)offs[i],
                              (unsigned long long)offs[i] + counts[i], (unsigned long long)file_bytes);
            goto done;
        }
        total += counts[i];
    }
    if (comp == COMPRESSION_NONE) {
        /* uncompressed: rows of whole bytes (TIFF 6.0 section 7) */
        uint64_t row_bits = (uint64_t)w * bps * (planar == PLANARCONFIG_SEPARATE ? 1 : spp);
        uint64_t need = (row_bits + 7) / 8 * h * (planar == PLANARCONFIG_SEPARATE ? spp : 1);
        if (!tiled && total < need)
            st = ds_set_error(DS_ERR_FORMAT,
                              "'%s': corrupt or truncated TIFF: %ux%u pixels of %u x %u bits need %llu bytes, its "
                              "strips hold %llu",
                              path, w, h, spp, bps, (unsigned long long)need, (unsigned long long)total);
    }
done:
    TIFFClose(t);
    return st;
}

ds_status ds_image_check_declared_size(const char *path, uint64_t file_bytes) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return DS_OK; /* check_file already named the problem */
    unsigned char m[8] = {0};
    size_t got = fread(m, 1, sizeof m, fp);
    ds_status st = DS_OK;
    if (got == 8 && memcmp(m, "\x89PNG\r\n\x1a\n", 8) == 0) st = check_png(path, fp, file_bytes);
    fclose(fp);
    if (st == DS_OK && got >= 4 &&
        (!memcmp(m, "II*\0", 4) || !memcmp(m, "MM\0*", 4) || !memcmp(m, "II+\0", 4) || !memcmp(m, "MM\0+", 4)))
        st = check_tiff(path, file_bytes);
    return st;
}
