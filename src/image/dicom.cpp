/* DICOM input through DCMTK (Debian libdcmtk-dev): the one C++ translation
 * unit of dinoscope, behind the C interface of dicom.h.
 *
 * DCMTK parses the file (Part 10 or a bare dataset; implicit/explicit VR,
 * little/big endian, deflated), decompresses the pixel data through its
 * codecs (JPEG baseline/extended/lossless: dcmjpeg; JPEG-LS: dcmjpls; RLE:
 * dcmdata) and turns stored samples into values (DicomImage: bit depth, sign,
 * planar configuration, colour models, palettes). The grey-scale value chain
 * of PS3.3 C.11 (modality -> VOI -> presentation) is done here in double
 * precision, because DCMTK's DiMonoModality stores rescaled values as
 * integers (truncating non-integer slopes) and its VOI window truncates
 * instead of rounding; our reference, pydicom's apply_modality_lut and
 * apply_voi_lut, computes in floating point. Only a VOI LUT Sequence or a
 * Modality LUT Sequence (tables, no arithmetic to get wrong) is left to
 * DCMTK.
 *
 * Every DCMTK call that can fail is checked; C++ exceptions (bad_alloc from
 * DCMTK's new) are caught here and never cross into C. No std:: templates
 * (containers, algorithms): their instantiations are weak symbols of
 * default visibility that the shared library would export, and its exports
 * must be exactly include/dinoscope/ (tests/install_check.sh). */
#include <pthread.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdicdir.h"
#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmimage/diregist.h" /* colour images in DicomImage */
#include "dcmtk/dcmimgle/dcmimage.h"
#include "dcmtk/dcmimgle/dipixel.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmjpls/djdecode.h"
#include "dcmtk/oflog/oflog.h"

#include "image/dicom.h"

extern "C" {
/* from core/internal.h and image/image_internal.h (C headers) */
ds_status ds_set_error(ds_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
ds_image *ds_image_alloc(int width, int height, int channels);
}

namespace {

pthread_once_t g_once = PTHREAD_ONCE_INIT;

void register_codecs() {
    OFLog::configure(OFLogger::OFF_LOG_LEVEL);
    DJDecoderRegistration::registerCodecs();   /* JPEG: YBR output converted to RGB (EDC default) */
    DJLSDecoderRegistration::registerCodecs(); /* JPEG-LS */
    DcmRLEDecoderRegistration::registerCodecs();
}

/* Codecs are registered once per process (DCMTK's registries are global);
 * DCMTK's own log output is switched off because every failure reaches the
 * caller as one line through ds_last_error. */
void dcmtk_start() { pthread_once(&g_once, register_codecs); }

/* malloc'd doubles freed on every return path */
struct dbuf {
    double *p = nullptr;
    ~dbuf() { free(p); }
};

int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct header {
    Uint16 rows = 0, cols = 0, spp = 0, bits_alloc = 0;
    long n_frames = 1;
    OFString photometric;
    bool has_pixels = false;
};

/* Loads the file and reads what we check before decoding. */
ds_status open_file(const char *path, DcmFileFormat &ff, header &h) {
    dcmtk_start();
    /* ERM_autoDetect: Part 10 files and bare datasets (no preamble) alike */
    OFCondition c = ff.loadFile(path, EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
    if (c == EC_StreamNotifyClient)
        return ds_set_error(DS_ERR_FORMAT, "'%s': not a readable DICOM file (truncated, or not DICOM: premature end "
                                           "of data)", path);
    if (c.bad()) return ds_set_error(DS_ERR_FORMAT, "'%s': not a readable DICOM file (%s)", path, c.text());
    DcmDataset *ds = ff.getDataset();
    if (!ds) return ds_set_error(DS_ERR_FORMAT, "'%s': no DICOM dataset", path);
    /* DCMTK detects the dataset's encoding by itself; an unknown Transfer
     * Syntax UID in the meta header may still be a private compression
     * whose bytes would be misread as raw samples: refuse it */
    OFString ts_uid;
    if (ff.getMetaInfo() && ff.getMetaInfo()->findAndGetOFString(DCM_TransferSyntaxUID, ts_uid).good() &&
        DcmXfer(ts_uid.c_str()).getXfer() == EXS_Unknown)
        return ds_set_error(DS_ERR_UNSUPPORTED, "'%s': unknown transfer syntax '%s'", path, ts_uid.c_str());
    DcmElement *px = NULL;
    h.has_pixels = ds->findAndGetElement(DCM_PixelData, px).good() && px;
    if (!h.has_pixels) {
        OFString sop;
        ds->findAndGetOFString(DCM_SOPClassUID, sop);
        const char *name = dcmFindNameOfUID(sop.c_str(), NULL);
        return ds_set_error(DS_ERR_FORMAT, "'%s': no pixel data (not an image%s%s)", path, name ? ": " : "",
                            name ? name : "");
    }
    if (ds->findAndGetUint16(DCM_Rows, h.rows).bad() || ds->findAndGetUint16(DCM_Columns, h.cols).bad() ||
        h.rows == 0 || h.cols == 0)
        return ds_set_error(DS_ERR_FORMAT, "'%s': missing or zero Rows/Columns", path);
    if (ds->findAndGetUint16(DCM_SamplesPerPixel, h.spp).bad()) h.spp = 1;
    ds->findAndGetUint16(DCM_BitsAllocated, h.bits_alloc);
    Sint32 nf = 1;
    if (ds->findAndGetSint32(DCM_NumberOfFrames, nf).good()) h.n_frames = nf;
    if (h.n_frames < 1) h.n_frames = 1; /* 0 or negative: treat as single frame, as DCMTK does */
    ds->findAndGetOFString(DCM_PhotometricInterpretation, h.photometric);

    const E_TransferSyntax xs = ds->getOriginalXfer();
    DcmXfer x(xs);
    if (xs == EXS_JPEG2000LosslessOnly || xs == EXS_JPEG2000 || xs == EXS_JPEG2000MulticomponentLosslessOnly ||
        xs == EXS_JPEG2000Multicomponent)
        return ds_set_error(DS_ERR_UNSUPPORTED,
                            "'%s': transfer syntax %s is not supported (Debian's DCMTK has no JPEG 2000 codec; "
                            "convert the file, e.g. with gdcmconv --raw)",
                            path, x.getXferName());
    if (x.isEncapsulated()) {
        /* the registered codecs: JPEG processes 1, 2+4, 14, 14 SV1; JPEG-LS; RLE */
        bool ok = xs == EXS_JPEGProcess1 || xs == EXS_JPEGProcess2_4 || xs == EXS_JPEGProcess14 ||
                  xs == EXS_JPEGProcess14SV1 || xs == EXS_JPEGLSLossless || xs == EXS_JPEGLSLossy ||
                  xs == EXS_RLELossless;
        if (!ok)
            return ds_set_error(DS_ERR_UNSUPPORTED, "'%s': transfer syntax %s is not supported", path,
                                x.getXferName());
    }
    return DS_OK;
}

ds_status check_limits(const char *path, const ds_image_load_params *p, const header &h) {
    const int64_t n_px = (int64_t)h.rows * (int64_t)h.cols;
    if (n_px > p->max_pixels)
        return ds_set_error(DS_ERR_UNSUPPORTED,
                            "'%s': %dx%d = %lld pixels exceeds the limit of %lld pixels (decompression-bomb guard; "
                            "raise max_pixels / --max-pixels)",
                            path, (int)h.cols, (int)h.rows, (long long)n_px, (long long)p->max_pixels);
    if (p->frame < 0 || p->frame >= h.n_frames)
        return ds_set_error(DS_ERR_ARG, "'%s': frame %d requested, the file has %ld frame%s (0-based)", path,
                            p->frame, h.n_frames, h.n_frames == 1 ? "" : "s");
    return DS_OK;
}

bool has_items(DcmDataset *ds, const DcmTagKey &seq) {
    DcmSequenceOfItems *s = NULL;
    return ds->findAndGetSequence(seq, s).good() && s && s->card() > 0;
}

/* Value i of the inter data (DCMTK's per-pixel representation) as double. */
double sample(const void *data, EP_Representation r, size_t i) {
    switch (r) {
    case EPR_Uint8: return ((const Uint8 *)data)[i];
    case EPR_Sint8: return ((const Sint8 *)data)[i];
    case EPR_Uint16: return ((const Uint16 *)data)[i];
    case EPR_Sint16: return ((const Sint16 *)data)[i];
    case EPR_Uint32: return ((const Uint32 *)data)[i];
    case EPR_Sint32: return ((const Sint32 *)data)[i];
    }
    return 0;
}

/* numpy.percentile (method "linear") of sorted v at pct, as image.c's. */
double percentile(const double *v, size_t n, double pct) {
    double idx = pct / 100.0 * (double)(n - 1);
    if (idx <= 0) return v[0];
    if (idx >= (double)(n - 1)) return v[n - 1];
    size_t i = (size_t)std::floor(idx);
    double t = idx - (double)i, a = v[i], b = v[i + 1], d = b - a;
    return t >= 0.5 ? b - d * (1.0 - t) : a + d * t; /* numpy's _lerp */
}

uint8_t to_u8(double y) { /* y already on 0..255 */
    double m = std::rint(y);
    return m >= 0 && m <= 255 ? (uint8_t)m : m > 255 ? 255 : 0; /* NaN -> 0 */
}

enum voi_kind { VOI_RANGE, VOI_LINEAR, VOI_LINEAR_EXACT, VOI_SIGMOID, VOI_IDENTITY };

/* One modality value to 0..255 through the VOI function; PS3.3 C.11.2.1.2
 * (LINEAR, LINEAR_EXACT) and C.11.2.1.3 (SIGMOID), with ymin = 0, ymax =
 * 255; VOI_RANGE is dinoscope's --window / percentile rule (image.c). */
double voi(double x, voi_kind k, double c, double w) {
    switch (k) {
    case VOI_RANGE: { /* c = lo, w = hi */
        double range = w - c;
        return range > 0 ? (x - c) / range * 255.0 : (x > c ? 255.0 : 0.0);
    }
    case VOI_LINEAR:
        if (x <= c - 0.5 - (w - 1) / 2) return 0;
        if (x > c - 0.5 + (w - 1) / 2) return 255;
        return ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0;
    case VOI_LINEAR_EXACT:
        if (x <= c - w / 2) return 0;
        if (x > c + w / 2) return 255;
        return ((x - c) / w + 0.5) * 255.0;
    case VOI_SIGMOID: return 255.0 / (1.0 + std::exp(-4.0 * (x - c) / w));
    case VOI_IDENTITY: return x;
    }
    return 0;
}

/* Modality LUT, PS3.3 C.11.1: v = stored * slope + intercept (1 and 0 when
 * absent); rescaled: other than the identity. */
ds_status rescale_of(DcmDataset *ds, const char *path, double &slope, double &intercept, bool &rescaled) {
    rescaled = false;
    if (ds->findAndGetFloat64(DCM_RescaleSlope, slope).good()) rescaled = true;
    else slope = 1;
    if (ds->findAndGetFloat64(DCM_RescaleIntercept, intercept).good()) rescaled = true;
    else intercept = 0;
    if (!std::isfinite(slope) || !std::isfinite(intercept))
        return ds_set_error(DS_ERR_FORMAT, "'%s': Rescale Slope/Intercept is not a finite number", path);
    rescaled = rescaled && !(slope == 1 && intercept == 0);
    return DS_OK;
}

bool is_mono(const header &h) {
    return h.photometric == "MONOCHROME1" || h.photometric == "MONOCHROME2" || h.photometric.empty();
}

ds_status load_impl(const char *path, const ds_image_load_params *p, ds_image **out) {
    DcmFileFormat ff;
    header h;
    ds_status st = open_file(path, ff, h);
    if (st != DS_OK) return st;
    if ((st = check_limits(path, p, h)) != DS_OK) return st;
    DcmDataset *ds = ff.getDataset();
    const E_TransferSyntax xs = ds->getOriginalXfer();

    const bool mono = is_mono(h);
    const bool explicit_voi = p->window_set || p->voi_set;
    const bool dcmtk_modality = has_items(ds, DCM_ModalityLUTSequence);
    const bool dcmtk_voi = mono && !explicit_voi && has_items(ds, DCM_VOILUTSequence);
    /* our own rescale unless DCMTK must apply a Modality LUT table */
    unsigned long flags = CIF_UsePartialAccessToPixelData | CIF_NeverAccessEmbeddedOverlays;
    if (mono && !dcmtk_modality) flags |= CIF_IgnoreModalityTransformation;

    DicomImage di(ds, xs, flags, (unsigned long)p->frame, 1);
    if (di.getStatus() != EIS_Normal)
        return ds_set_error(DS_ERR_FORMAT, "'%s': cannot decode the pixel data: %s", path,
                            DicomImage::getString(di.getStatus()));
    const int w = (int)di.getWidth(), hgt = (int)di.getHeight();
    if (w <= 0 || hgt <= 0) return ds_set_error(DS_ERR_FORMAT, "'%s': image of size %dx%d", path, w, hgt);
    const size_t n = (size_t)w * (size_t)hgt;

    ds_image *img = ds_image_alloc(w, hgt, 3);
    if (!img) return DS_ERR_NOMEM;
    const bool inverse = di.getPhotometricInterpretation() == EPI_Monochrome1;

    if (di.isMonochrome() && dcmtk_voi) {
        /* VOI LUT Sequence (preferred over a window, as pydicom's
         * apply_voi_lut): DCMTK maps through the table and inverts
         * MONOCHROME1 itself */
        if (!di.setVoiLut(0)) {
            ds_image_free(img);
            return ds_set_error(DS_ERR_FORMAT, "'%s': unusable VOI LUT Sequence", path);
        }
        const Uint8 *o = (const Uint8 *)di.getOutputData(8, 0, 0);
        if (!o) {
            ds_image_free(img);
            return ds_set_error(DS_ERR_FORMAT, "'%s': cannot render the pixel data", path);
        }
        for (size_t i = 0; i < n; i++) img->pixels[3 * i] = img->pixels[3 * i + 1] = img->pixels[3 * i + 2] = o[i];
    } else if (di.isMonochrome()) {
        const DiPixel *px = di.getInterData();
        if (!px || !px->getData() || px->getCount() < n) {
            ds_image_free(img);
            return ds_set_error(DS_ERR_FORMAT, "'%s': pixel data shorter than %dx%d", path, w, hgt);
        }
        const void *data = px->getData();
        const EP_Representation rep = px->getRepresentation();
        double slope = 1, intercept = 0;
        bool rescaled = true;
        if (!dcmtk_modality && (st = rescale_of(ds, path, slope, intercept, rescaled)) != DS_OK) {
            ds_image_free(img);
            return st;
        }
        dbuf vb;
        if (!(vb.p = (double *)malloc(sizeof(double) * n))) {
            ds_image_free(img);
            return ds_set_error(DS_ERR_NOMEM, "'%s': out of memory for %zu values", path, n);
        }
        double *v = vb.p;
        for (size_t i = 0; i < n; i++) v[i] = sample(data, rep, i) * slope + intercept;

        voi_kind kind;
        double c = 0, wd = 0;
        if (p->window_set) {
            kind = VOI_RANGE, c = p->window_min, wd = p->window_max;
        } else if (p->voi_set) {
            kind = VOI_LINEAR, c = p->voi_center, wd = p->voi_width;
        } else if (ds->findAndGetFloat64(DCM_WindowCenter, c, 0).good() &&
                   ds->findAndGetFloat64(DCM_WindowWidth, wd, 0).good()) {
            OFString fn;
            ds->findAndGetOFString(DCM_VOILUTFunction, fn);
            kind = fn == "SIGMOID" ? VOI_SIGMOID : fn == "LINEAR_EXACT" ? VOI_LINEAR_EXACT : VOI_LINEAR;
            bool bad = !std::isfinite(c) || !std::isfinite(wd) || (kind == VOI_LINEAR ? wd < 1 : wd <= 0);
            if (bad) {
                ds_image_free(img);
                return ds_set_error(DS_ERR_FORMAT, "'%s': invalid Window Center/Width %g/%g", path, c, wd);
            }
        } else {
            double lo = 0, hi = 0;
            bool fits8 = !rescaled && (rep == EPR_Uint8);
            if (fits8) {
                kind = VOI_IDENTITY;
            } else {
                /* no window anywhere: the percentile window of other >8-bit images */
                dbuf sb;
                if (!(sb.p = (double *)malloc(sizeof(double) * n))) {
                    ds_image_free(img);
                    return ds_set_error(DS_ERR_NOMEM, "'%s': out of memory for %zu values", path, n);
                }
                std::memcpy(sb.p, v, sizeof(double) * n);
                qsort(sb.p, n, sizeof(double), cmp_double);
                lo = percentile(sb.p, n, p->window_lo_pct);
                hi = percentile(sb.p, n, p->window_hi_pct);
                kind = VOI_RANGE, c = lo, wd = hi;
            }
        }
        for (size_t i = 0; i < n; i++) {
            uint8_t u = to_u8(voi(v[i], kind, c, wd));
            if (inverse) u = (uint8_t)(255 - u); /* MONOCHROME1: presentation inverts, PS3.3 C.7.6.3.1.2 */
            img->pixels[3 * i] = img->pixels[3 * i + 1] = img->pixels[3 * i + 2] = u;
        }
    } else {
        /* RGB, YBR_* (DCMTK converts to RGB), PALETTE COLOR */
        const Uint8 *o = (const Uint8 *)di.getOutputData(8, 0, 0);
        if (!o) {
            ds_image_free(img);
            return ds_set_error(DS_ERR_FORMAT, "'%s': cannot render the colour pixel data (%s)", path,
                                h.photometric.c_str());
        }
        std::memcpy(img->pixels, o, n * 3);
    }

    /* Pixel Spacing (row\column, mm), else Imager Pixel Spacing (projection
     * radiographs measured at the detector) */
    Float64 sr = 0, sc = 0;
    if ((ds->findAndGetFloat64(DCM_PixelSpacing, sr, 0).good() && ds->findAndGetFloat64(DCM_PixelSpacing, sc, 1).good()) ||
        (ds->findAndGetFloat64(DCM_ImagerPixelSpacing, sr, 0).good() &&
         ds->findAndGetFloat64(DCM_ImagerPixelSpacing, sc, 1).good())) {
        if (std::isfinite(sr) && std::isfinite(sc) && sr > 0 && sc > 0) {
            img->spacing_mm[0] = sr;
            img->spacing_mm[1] = sc;
        }
    }
    *out = img;
    return DS_OK;
}

/* Float64 values i0..i0+n-1 of a multi-valued tag; false if any is missing or not finite. */
bool get_doubles(DcmDataset *ds, const DcmTagKey &tag, double *v, int n) {
    for (int i = 0; i < n; i++)
        if (ds->findAndGetFloat64(tag, v[i], (unsigned long)i).bad() || !std::isfinite(v[i])) return false;
    return true;
}

ds_status read_slice_impl(const char *path, const ds_image_load_params *p, ds_dicom_slice *out) {
    DcmFileFormat ff;
    header h;
    ds_status st = open_file(path, ff, h);
    ds_image_load_params p0 = *p;
    p0.frame = 0;
    if (st != DS_OK || (st = check_limits(path, &p0, h)) != DS_OK) return st;
    if (h.n_frames > 1)
        return ds_set_error(DS_ERR_UNSUPPORTED, "'%s': a multi-frame file (%ld frames) in a series of slices", path,
                            h.n_frames);
    if (!is_mono(h) || h.spp != 1)
        return ds_set_error(DS_ERR_UNSUPPORTED, "'%s': a %s image in a series (volumes are grey-scale)", path,
                            h.photometric.c_str());
    DcmDataset *ds = ff.getDataset();
    const bool dcmtk_modality = has_items(ds, DCM_ModalityLUTSequence);
    unsigned long flags = CIF_UsePartialAccessToPixelData | CIF_NeverAccessEmbeddedOverlays;
    if (!dcmtk_modality) flags |= CIF_IgnoreModalityTransformation;
    double slope = 1, intercept = 0;
    bool rescaled = false;
    if (!dcmtk_modality && (st = rescale_of(ds, path, slope, intercept, rescaled)) != DS_OK) return st;
    DicomImage di(ds, ds->getOriginalXfer(), flags, 0, 1);
    if (di.getStatus() != EIS_Normal)
        return ds_set_error(DS_ERR_FORMAT, "'%s': cannot decode the pixel data: %s", path,
                            DicomImage::getString(di.getStatus()));
    const int w = (int)di.getWidth(), hgt = (int)di.getHeight();
    const size_t n = (size_t)w * (size_t)hgt;
    const DiPixel *px = di.getInterData();
    if (w <= 0 || hgt <= 0 || !px || !px->getData() || px->getCount() < n)
        return ds_set_error(DS_ERR_FORMAT, "'%s': pixel data shorter than %dx%d", path, w, hgt);
    float *v = (float *)malloc(sizeof(float) * n);
    if (!v) return ds_set_error(DS_ERR_NOMEM, "'%s': out of memory for %zu values", path, n);
    for (size_t i = 0; i < n; i++) v[i] = (float)(sample(px->getData(), px->getRepresentation(), i) * slope + intercept);
    ds_dicom_slice s;
    std::memset(&s, 0, sizeof s);
    OFString uid;
    if (ds->findAndGetOFString(DCM_SeriesInstanceUID, uid).good())
        std::snprintf(s.series_uid, sizeof s.series_uid, "%s", uid.c_str());
    s.rows = hgt, s.cols = w;
    s.has_position = get_doubles(ds, DCM_ImagePositionPatient, s.ipp, 3) &&
                     get_doubles(ds, DCM_ImageOrientationPatient, s.iop, 6);
    if (!get_doubles(ds, DCM_PixelSpacing, s.spacing, 2) || !(s.spacing[0] > 0 && s.spacing[1] > 0))
        s.spacing[0] = s.spacing[1] = 1;
    if (ds->findAndGetFloat64(DCM_SliceThickness, s.slice_thickness).bad() || !std::isfinite(s.slice_thickness))
        s.slice_thickness = 0;
    Sint32 inst = 0;
    if (ds->findAndGetSint32(DCM_InstanceNumber, inst).good()) s.instance = (int)inst;
    s.values = v;
    *out = s;
    return DS_OK;
}

} // namespace

/* No C++ exception crosses into C: DCMTK and the standard library throw
 * (bad_alloc above all); each entry point turns them into one error line. */
template <class F> static ds_status decode_guarded(const char *path, F &&f) {
    try {
        return f();
    } catch (const std::bad_alloc &) {
        return ds_set_error(DS_ERR_NOMEM, "'%s': out of memory while decoding DICOM", path);
    } catch (...) {
        return ds_set_error(DS_ERR_FORMAT, "'%s': DCMTK failed to decode the file", path);
    }
}

extern "C" ds_status ds_dicom_read_slice(const char *path, const ds_image_load_params *p, ds_dicom_slice *out) {
    return decode_guarded(path, [&] { return read_slice_impl(path, p, out); });
}

extern "C" ds_status ds_dicom_load(const char *path, const ds_image_load_params *p, ds_image **out) {
    return decode_guarded(path, [&] { return load_impl(path, p, out); });
}

extern "C" ds_status ds_dicom_probe(const char *path, const ds_image_load_params *p, int *width, int *height,
                                    int *n_frames) {
    try {
        DcmFileFormat ff;
        header h;
        ds_status st = open_file(path, ff, h);
        if (st == DS_OK) st = check_limits(path, p, h);
        if (st != DS_OK) return st;
        if (width) *width = h.cols;
        if (height) *height = h.rows;
        if (n_frames) *n_frames = (int)h.n_frames;
        return DS_OK;
    } catch (const std::bad_alloc &) {
        return ds_set_error(DS_ERR_NOMEM, "'%s': out of memory while reading DICOM", path);
    } catch (...) {
        return ds_set_error(DS_ERR_FORMAT, "'%s': DCMTK failed to read the file", path);
    }
}

extern "C" ds_status ds_dicom_dir_files(const char *dicomdir, char ***paths, int *n) {
    try {
        dcmtk_start();
        DcmFileFormat ff;
        OFCondition c = ff.loadFile(dicomdir, EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
        if (c.bad()) return ds_set_error(DS_ERR_FORMAT, "'%s': not a readable DICOMDIR (%s)", dicomdir, c.text());
        DcmSequenceOfItems *recs = NULL;
        if (ff.getDataset()->findAndGetSequence(DCM_DirectoryRecordSequence, recs).bad() || !recs)
            return ds_set_error(DS_ERR_FORMAT, "'%s': not a DICOMDIR (no Directory Record Sequence)", dicomdir);
        const char *slash = strrchr(dicomdir, '/');
        const size_t dir_len = slash ? (size_t)(slash - dicomdir) + 1 : 0;
        char **v = NULL;
        int nv = 0, cap = 0;
        bool oom = false;
        for (unsigned long i = 0; i < recs->card() && !oom; i++) {
            DcmItem *it = recs->getItem(i);
            OFString type, fid;
            if (!it || it->findAndGetOFString(DCM_DirectoryRecordType, type).bad()) continue;
            if (type != "IMAGE") continue;
            /* Referenced File ID: components joined by '/', PS3.10 8.5 */
            if (it->findAndGetOFStringArray(DCM_ReferencedFileID, fid).bad() || fid.empty()) continue;
            if (nv == cap) {
                cap = cap ? 2 * cap : 16;
                char **nvp = (char **)realloc(v, sizeof(char *) * (size_t)cap);
                if (!nvp) {
                    oom = true;
                    break;
                }
                v = nvp;
            }
            char *f = (char *)malloc(dir_len + fid.length() + 1);
            if (!f) {
                oom = true;
                break;
            }
            memcpy(f, dicomdir, dir_len);
            memcpy(f + dir_len, fid.c_str(), fid.length() + 1);
            for (char *ch = f + dir_len; *ch; ch++)
                if (*ch == '\\') *ch = '/';
            v[nv++] = f;
        }
        if (oom || nv == 0) {
            for (int k = 0; k < nv; k++) free(v[k]);
            free(v);
            return oom ? ds_set_error(DS_ERR_NOMEM, "'%s': out of memory", dicomdir)
                       : ds_set_error(DS_ERR_FORMAT, "'%s': DICOMDIR lists no IMAGE records", dicomdir);
        }
        *paths = v;
        *n = nv;
        return DS_OK;
    } catch (const std::bad_alloc &) {
        return ds_set_error(DS_ERR_NOMEM, "'%s': out of memory while reading DICOMDIR", dicomdir);
    } catch (...) {
        return ds_set_error(DS_ERR_FORMAT, "'%s': DCMTK failed to read the DICOMDIR", dicomdir);
    }
}
