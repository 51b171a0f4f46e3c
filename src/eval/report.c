/* Evaluation reports: per-image scores and maps in, figures and a report
 * folder out (report.json, report.md, scores.csv; report.html is written by
 * report_html.c). Every figure comes from the metric calls of metrics.c /
 * pixels.c, which are tested against scikit-learn and MVTec's AUPRO. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "dinoscope/eval.h"
#include "dinoscope/report.h"
#include "dinoscope/maps.h"
#include "dinoscope/preprocess.h"
#include "eval/report_internal.h"

/* ---- text buffer ------------------------------------------------------- */

static bool sb_reserve(ds_sb *b, size_t extra) {
    if (b->oom) return false;
    size_t need;
    if (!ds_add_size(b->len, extra + 1, &need)) {
        b->oom = true;
        return false;
    }
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < need) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->oom = true;
        return false;
    }
    b->s = s;
    b->cap = cap;
    return true;
}

void ds_sb_putn(ds_sb *b, const char *s, size_t n) {
    if (!sb_reserve(b, n)) return;
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

void ds_sb_puts(ds_sb *b, const char *s) { ds_sb_putn(b, s, strlen(s)); }

void ds_sb_printf(ds_sb *b, const char *fmt, ...) {
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        ds_sb_putn(b, small, (size_t)n);
        return;
    }
    if (!sb_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void ds_sb_html(ds_sb *b, const char *s) {
    for (const char *p = s; *p; p++) {
        switch (*p) {
        case '&': ds_sb_puts(b, "&amp;"); break;
        case '<': ds_sb_puts(b, "&lt;"); break;
        case '>': ds_sb_puts(b, "&gt;"); break;
        case '"': ds_sb_puts(b, "&quot;"); break;
        default: ds_sb_putn(b, p, 1);
        }
    }
}

void ds_sb_free(ds_sb *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

static char *dup_or_null(const char *s, bool *oom) {
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *oom = true;
    return d;
}

/* ---- figures ------------------------------------------------------------ */

ds_status ds_report_create(const ds_report_params *p, ds_report **out) {
    if (!p || !out) return ds_set_error(DS_ERR_ARG, "ds_report_create: NULL argument");
    if (p->n_scorers < 1 || p->n_scorers > DS_REPORT_MAX_SCORERS)
        return ds_set_error(DS_ERR_ARG, "ds_report_create: %d scorers (expected 1..%d)", p->n_scorers,
                            DS_REPORT_MAX_SCORERS);
    for (int k = 0; k < p->n_scorers; k++)
        if (!p->scorers[k].name || !p->scorers[k].name[0])
            return ds_set_error(DS_ERR_ARG, "ds_report_create: scorer %d has no name", k);
    ds_report *r = calloc(1, sizeof *r);
    if (!r) return ds_set_error(DS_ERR_NOMEM, "ds_report_create: out of memory");
    bool oom = false;
    r->model_path = dup_or_null(p->model_path ? p->model_path : "", &oom);
    r->data_path = dup_or_null(p->data_path ? p->data_path : "", &oom);
    r->layout = dup_or_null(p->layout ? p->layout : "", &oom);
    r->backbone = dup_or_null(p->backbone ? p->backbone : "", &oom);
    r->backbone_file = dup_or_null(p->backbone_file ? p->backbone_file : "", &oom);
    r->input_size = p->input_size;
    r->n_scorers = p->n_scorers;
    for (int k = 0; k < p->n_scorers; k++) {
        r->sc[k] = p->scorers[k];
        r->sc_name[k] = dup_or_null(p->scorers[k].name, &oom);
        r->sc_params[k] = dup_or_null(p->scorers[k].params, &oom);
        r->sc[k].name = r->sc_name[k];
        r->sc[k].params = r->sc_params[k];
    }
    if (oom) {
        ds_report_free(r);
        return ds_set_error(DS_ERR_NOMEM, "ds_report_create: out of memory");
    }
    *out = r;
    return DS_OK;
}

void ds_report_free(ds_report *r) {
    if (!r) return;
    DS_FREE_ALL(r->model_path, r->data_path, r->layout, r->backbone, r->backbone_file);
    for (int k = 0; k < DS_REPORT_MAX_SCORERS; k++) {
        DS_FREE_ALL(r->sc_name[k], r->sc_params[k], r->scores[k], r->score_ms[k], r->folds[k]);
        ds_eval_pixels_free(r->px[k]);
    }
    for (int i = 0; i < r->n; i++) {
        DS_FREE_ALL(r->rows[i].path, r->rows[i].defect, r->rows[i].mask_path, r->rows[i].picture);
    }
    free(r->rows);
    free(r->labels);
    for (int i = 0; i < r->n_notes; i++) free(r->notes[i]);
    free(r->notes);
    for (int s = 0; s < DS_GALLERY_SECTIONS; s++) free(r->section[s]);
    free(r);
}

static bool grow_array(void **p, size_t n, size_t sz) {
    void *q = realloc(*p, n * sz);
    if (!q) return false;
    *p = q;
    return true;
}

ds_status ds_report_add_image(ds_report *r, const ds_report_image *im, int *index) {
    if (!r || !im || !im->path || !im->scores) return ds_set_error(DS_ERR_ARG, "ds_report_add_image: NULL argument");
    if (im->label != 0 && im->label != 1)
        return ds_set_error(DS_ERR_ARG, "ds_report_add_image: '%s' has label %d, expected 0 or 1", im->path, im->label);
    for (int k = 0; k < r->n_scorers; k++)
        if (!isfinite(im->scores[k]))
            return ds_set_error(DS_ERR_ARG, "ds_report_add_image: '%s' has a non-finite %s score", im->path, r->sc_name[k]);
    if (r->n == (1 << 30)) return ds_set_error(DS_ERR_ARG, "ds_report_add_image: too many images");
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 256;
        bool ok = grow_array((void **)&r->rows, (size_t)cap, sizeof *r->rows) &&
                  grow_array((void **)&r->labels, (size_t)cap, sizeof *r->labels);
        for (int k = 0; ok && k < r->n_scorers; k++)
            ok = grow_array((void **)&r->scores[k], (size_t)cap, sizeof(float)) &&
                 grow_array((void **)&r->score_ms[k], (size_t)cap, sizeof(double));
        if (!ok) return ds_set_error(DS_ERR_NOMEM, "ds_report_add_image: out of memory");
        r->cap = cap;
    }
    bool oom = false;
    ds_report_row row = {.path = dup_or_null(im->path, &oom),
                         .defect = dup_or_null(im->defect, &oom),
                         .mask_path = dup_or_null(im->mask_path, &oom),
                         .prep_ms = im->prep_ms,
                         .backbone_ms = im->backbone_ms,
                         .map_ms = im->map_ms};
    if (oom) {
        free(row.path);
        free(row.defect);
        free(row.mask_path);
        return ds_set_error(DS_ERR_NOMEM, "ds_report_add_image: out of memory");
    }
    int i = r->n++;
    r->rows[i] = row;
    r->labels[i] = im->label;
    for (int k = 0; k < r->n_scorers; k++) {
        r->scores[k][i] = im->scores[k];
        r->score_ms[k][i] = im->score_ms ? im->score_ms[k] : 0;
    }
    if (im->score_ms) r->have_score_ms = true;
    for (int k = 0; k < r->n_scorers; k++) r->fig_valid[k] = false;
    if (index) *index = i;
    return DS_OK;
}

ds_status ds_report_add_map(ds_report *r, int k, const float *map, const uint8_t *mask, int height, int width) {
    if (!r || k < 0 || k >= r->n_scorers) return ds_set_error(DS_ERR_ARG, "ds_report_add_map: bad report or scorer %d", k);
    if (!r->px[k]) {
        ds_status st = ds_eval_pixels_create(0, &r->px[k]);
        if (st != DS_OK) return st;
    }
    ds_status st = ds_eval_pixels_add(r->px[k], map, mask, height, width);
    if (st == DS_OK) r->fig_valid[k] = false;
    return st;
}

ds_status ds_report_add_fold(ds_report *r, int k, const ds_eval_figures *f) {
    if (!r || !f || k < 0 || k >= r->n_scorers)
        return ds_set_error(DS_ERR_ARG, "ds_report_add_fold: bad report, figures or scorer %d", k);
    if (r->n_folds[k] == r->fold_cap[k]) {
        int cap = r->fold_cap[k] ? 2 * r->fold_cap[k] : 8;
        if (!grow_array((void **)&r->folds[k], (size_t)cap, sizeof(ds_eval_figures)))
            return ds_set_error(DS_ERR_NOMEM, "ds_report_add_fold: out of memory");
        r->fold_cap[k] = cap;
    }
    r->folds[k][r->n_folds[k]++] = *f;
    return DS_OK;
}

ds_status ds_report_add_note(ds_report *r, const char *note) {
    if (!r || !note) return ds_set_error(DS_ERR_ARG, "ds_report_add_note: NULL argument");
    char *d = strdup(note);
    if (!d || !grow_array((void **)&r->notes, (size_t)r->n_notes + 1, sizeof(char *))) {
        free(d);
        return ds_set_error(DS_ERR_NOMEM, "ds_report_add_note: out of memory");
    }
    r->notes[r->n_notes++] = d;
    return DS_OK;
}

void ds_report_set_resources(ds_report *r, double wall_s, int64_t peak_rss_bytes) {
    if (!r) return;
    r->wall_s = wall_s;
    r->peak_rss_bytes = peak_rss_bytes;
}

void ds_report_set_map_scale(ds_report *r, float vmin, float vmax) {
    if (!r || !(vmax > vmin)) return;
    r->has_scale = true;
    r->map_vmin = vmin;
    r->map_vmax = vmax;
}

ds_status ds_report_figures(ds_report *r, int k, ds_eval_figures *out) {
    if (!r || !out || k < 0 || k >= r->n_scorers) return ds_set_error(DS_ERR_ARG, "ds_report_figures: bad scorer %d", k);
    if (r->n == 0) return ds_set_error(DS_ERR_ARG, "ds_report_figures: no images in the report");
    if (!r->fig_valid[k]) {
        ds_eval_figures f;
        ds_status st = ds_eval_image_figures(r->scores[k], r->labels, r->n, &f);
        if (st != DS_OK) return st;
        if (r->px[k]) {
            int64_t n_px, n_anom, n_regions;
            ds_eval_pixels_counts(r->px[k], NULL, &n_px, &n_anom, &n_regions);
            if (n_anom > 0 && n_anom < n_px) {
                if ((st = ds_eval_pixels_auroc(r->px[k], &f.pixel_auroc)) != DS_OK) return st;
                if ((st = ds_eval_pixels_aupro(r->px[k], 0.3, &f.aupro)) != DS_OK) return st;
            }
        }
        r->fig[k] = f;
        r->fig_valid[k] = true;
    }
    *out = r->fig[k];
    return DS_OK;
}

/* ---- statistics ---------------------------------------------------------- */

ds_status ds_report_threshold_rows(ds_report *r) {
    ds_report_threshold_row *rows = r->thr;
    int *n = &r->n_thr;
    *n = 0;
    for (int k = 0; k < r->n_scorers; k++) {
        ds_eval_figures f;
        ds_report_figures(r, k, &f);
        for (int which = 0; which < 2; which++) {
            if (which == 0 ? !isfinite(f.f1_threshold) : !r->sc[k].has_threshold) continue;
            ds_report_threshold_row *row = &rows[(*n)++];
            row->scorer = k;
            row->threshold = which == 0 ? f.f1_threshold : r->sc[k].threshold;
            row->from_model = which;
            ds_status st = ds_eval_at_threshold(r->scores[k], r->labels, r->n, row->threshold, &row->c);
            if (st != DS_OK) return st;
        }
    }
    return DS_OK;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

ds_report_stat ds_report_stat_of(const double *v, int n) {
    ds_report_stat s = {NAN, NAN};
    if (n < 1) return s;
    double *t = malloc(sizeof(double) * (size_t)n);
    double sum = 0;
    for (int i = 0; i < n; i++) sum += v[i];
    s.mean = sum / n;
    if (!t) return s; /* the median is then unknown (NaN); the mean needs no memory */
    memcpy(t, v, sizeof(double) * (size_t)n);
    qsort(t, (size_t)n, sizeof(double), cmp_double);
    s.median = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    free(t);
    return s;
}

ds_report_stat ds_report_stage_ms(const ds_report *r, int stage, int k) {
    double *v = malloc(sizeof(double) * (size_t)(r->n ? r->n : 1));
    ds_report_stat s = {NAN, NAN};
    if (!v) return s;
    for (int i = 0; i < r->n; i++) {
        const ds_report_row *w = &r->rows[i];
        v[i] = stage == 0 ? w->prep_ms : stage == 1 ? w->backbone_ms : stage == 2 ? r->score_ms[k][i] : w->map_ms;
    }
    s = ds_report_stat_of(v, r->n);
    free(v);
    return s;
}

ds_report_stat ds_report_total_ms(const ds_report *r, int k) {
    double *v = malloc(sizeof(double) * (size_t)(r->n ? r->n : 1));
    ds_report_stat s = {NAN, NAN};
    if (!v) return s;
    for (int i = 0; i < r->n; i++) v[i] = r->rows[i].prep_ms + r->rows[i].backbone_ms + r->score_ms[k][i];
    s = ds_report_stat_of(v, r->n);
    free(v);
    return s;
}

void ds_report_fold_stat(const ds_report *r, int k, size_t offset, double *mean, double *std, int *n_used) {
    double sum = 0, sq = 0;
    int m = 0;
    for (int f = 0; f < r->n_folds[k]; f++) {
        double v;
        memcpy(&v, (const char *)&r->folds[k][f] + offset, sizeof v);
        if (isnan(v)) continue;
        sum += v;
        m++;
    }
    *mean = m ? sum / m : NAN;
    for (int f = 0; f < r->n_folds[k]; f++) {
        double v;
        memcpy(&v, (const char *)&r->folds[k][f] + offset, sizeof v);
        if (!isnan(v)) sq += (v - *mean) * (v - *mean);
    }
    *std = m ? sqrt(sq / m) : NAN;
    if (n_used) *n_used = m;
}

int ds_report_gallery_scorer(const ds_report *r) {
    for (int k = 0; k < r->n_scorers; k++)
        if (r->sc[k].has_maps) return k;
    return 0;
}

const char *ds_report_backbone_short(const ds_report *r, char *buf, size_t n) {
    size_t i = 0;
    while (r->backbone[i] && r->backbone[i] != ' ' && i + 1 < n) {
        buf[i] = r->backbone[i];
        i++;
    }
    buf[i] = 0;
    if (i == 0) snprintf(buf, n, "?");
    return buf;
}

/* ---- gallery ---------------------------------------------------------------- */

/* Indices sorted by descending score, ties by index (stable merge sort;
 * a test set has thousands of images at most). */
static void sort_by_score_desc(int *idx, int n, const float *s) {
    int *tmp = malloc(sizeof(int) * (size_t)(n ? n : 1));
    if (!tmp) { /* fall back to an O(n^2) insertion sort: no memory needed */
        for (int i = 1; i < n; i++) {
            int v = idx[i], j = i;
            while (j > 0 && (s[idx[j - 1]] < s[v] || (s[idx[j - 1]] == s[v] && idx[j - 1] > v))) idx[j] = idx[j - 1], j--;
            idx[j] = v;
        }
        return;
    }
    for (int w = 1; w < n; w *= 2) {
        for (int lo = 0; lo < n; lo += 2 * w) {
            int mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int a = lo, b = mid, o = lo;
            while (a < mid && b < hi) {
                int x = idx[a], y = idx[b];
                bool take_a = s[x] > s[y] || (s[x] == s[y] && x < y);
                tmp[o++] = take_a ? idx[a++] : idx[b++];
            }
            while (a < mid) tmp[o++] = idx[a++];
            while (b < hi) tmp[o++] = idx[b++];
        }
        memcpy(idx, tmp, sizeof(int) * (size_t)n);
    }
    free(tmp);
}

ds_status ds_report_gallery_select(ds_report *r, int n_per, int *indices, int *n_out) {
    if (!r || !indices || !n_out || n_per < 1) return ds_set_error(DS_ERR_ARG, "ds_report_gallery_select: bad argument");
    if (r->n == 0) return ds_set_error(DS_ERR_ARG, "ds_report_gallery_select: no images in the report");
    int k = ds_report_gallery_scorer(r);
    ds_eval_figures f;
    ds_status st = ds_report_figures(r, k, &f);
    if (st != DS_OK) return st;
    if (r->sc[k].has_threshold) {
        r->gallery_threshold = r->sc[k].threshold;
        r->gallery_threshold_kind = "the model's stored threshold";
    } else {
        r->gallery_threshold = f.f1_threshold;
        r->gallery_threshold_kind = "the F1-optimal threshold";
    }
    r->gallery_scorer = k;
    int *order = malloc(sizeof(int) * (size_t)r->n);
    int *sec[DS_GALLERY_SECTIONS];
    for (int s = 0; s < DS_GALLERY_SECTIONS; s++) sec[s] = malloc(sizeof(int) * (size_t)n_per);
    if (!order || !sec[0] || !sec[1] || !sec[2]) {
        free(order);
        for (int s = 0; s < DS_GALLERY_SECTIONS; s++) free(sec[s]);
        return ds_set_error(DS_ERR_NOMEM, "ds_report_gallery_select: out of memory");
    }
    for (int i = 0; i < r->n; i++) order[i] = i;
    sort_by_score_desc(order, r->n, r->scores[k]);
    int cnt[DS_GALLERY_SECTIONS] = {0};
    for (int i = 0; i < r->n && cnt[DS_GALLERY_TOP] < n_per; i++) sec[DS_GALLERY_TOP][cnt[DS_GALLERY_TOP]++] = order[i];
    for (int i = r->n - 1; i >= 0 && cnt[DS_GALLERY_LOW_ANOMALY] < n_per; i--)
        if (r->labels[order[i]] == 1) sec[DS_GALLERY_LOW_ANOMALY][cnt[DS_GALLERY_LOW_ANOMALY]++] = order[i];
    for (int i = 0; i < r->n && cnt[DS_GALLERY_HIGH_NORMAL] < n_per; i++)
        if (r->labels[order[i]] == 0) sec[DS_GALLERY_HIGH_NORMAL][cnt[DS_GALLERY_HIGH_NORMAL]++] = order[i];
    free(order);
    int m = 0;
    for (int s = 0; s < DS_GALLERY_SECTIONS; s++) {
        free(r->section[s]);
        r->section[s] = sec[s];
        r->n_section[s] = cnt[s];
        for (int j = 0; j < cnt[s]; j++) {
            bool seen = false;
            for (int q = 0; q < m && !seen; q++) seen = indices[q] == sec[s][j];
            if (!seen) indices[m++] = sec[s][j];
        }
    }
    *n_out = m;
    return DS_OK;
}

static char *base64(const uint8_t *d, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t out_len = 4 * ((n + 2) / 3);
    char *o = malloc(out_len + 1), *p = o;
    if (!o) return NULL;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        *p++ = tab[v >> 18], *p++ = tab[(v >> 12) & 63], *p++ = tab[(v >> 6) & 63], *p++ = tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0);
        *p++ = tab[v >> 18], *p++ = tab[(v >> 12) & 63];
        *p++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *p++ = '=';
    }
    *p = 0;
    return o;
}

ds_status ds_report_set_picture(ds_report *r, int index, const ds_image *pic, const uint8_t *mask, int mask_w,
                                int mask_h, int max_side) {
    if (!r || !pic || !pic->pixels || index < 0 || index >= r->n || pic->width < 1 || pic->height < 1 ||
        (pic->channels != 1 && pic->channels != 3) || (mask && (mask_w < 1 || mask_h < 1)))
        return ds_set_error(DS_ERR_ARG, "ds_report_set_picture: bad argument (image %d)", index);
    if (max_side <= 0) max_side = 320;
    ds_image *rgb = NULL, *small = NULL;
    ds_status st = DS_OK;
    /* RGB copy (the outline is cyan) */
    rgb = ds_image_create(pic->width, pic->height, 3);
    if (!rgb) return DS_ERR_NOMEM;
    size_t npx = (size_t)pic->width * pic->height;
    for (size_t i = 0; i < npx; i++)
        for (int c = 0; c < 3; c++) rgb->pixels[3 * i + c] = pic->pixels[i * pic->channels + (pic->channels == 3 ? c : 0)];
    const ds_image *use = rgb;
    int longest = pic->width > pic->height ? pic->width : pic->height;
    if (longest > max_side) {
        double f = (double)max_side / longest;
        int w = (int)lround(pic->width * f), h = (int)lround(pic->height * f);
        if (w < 1) w = 1;
        if (h < 1) h = 1;
        if ((st = ds_resize_bicubic(rgb, w, h, &small)) != DS_OK) goto done;
        use = small;
    }
    if (mask) {
        /* outline: mask pixels with a 4-neighbour outside the mask (or at the
         * image border), on the picture's grid (nearest neighbour, pixel
         * centres: src = floor((x + 0.5) * src_w / dst_w), as PIL's NEAREST) */
        int W = use->width, H = use->height;
        uint8_t *m = malloc((size_t)W * H);
        if (!m) {
            st = ds_set_error(DS_ERR_NOMEM, "ds_report_set_picture: out of memory");
            goto done;
        }
        ds_mask_resize_nearest(mask, mask_w, mask_h, 1, W, H, m);
        static const uint8_t cyan[3] = {0, 255, 255};
        ds_draw_outline((ds_image *)use, m, 1, cyan);
        free(m);
    }
    uint8_t *png = NULL;
    size_t len = 0;
    if ((st = ds_image_encode_png(use, 6, &png, &len)) != DS_OK) goto done;
    char *b64 = base64(png, len);
    free(png);
    if (!b64) {
        st = ds_set_error(DS_ERR_NOMEM, "ds_report_set_picture: out of memory");
        goto done;
    }
    free(r->rows[index].picture);
    r->rows[index].picture = b64;
    r->rows[index].pic_w = use->width;
    r->rows[index].pic_h = use->height;
done:
    ds_image_free(rgb);
    ds_image_free(small);
    return st;
}

/* ---- writers ---------------------------------------------------------------- */

static void json_num(cJSON *o, const char *name, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, name, v);
    else cJSON_AddNullToObject(o, name);
}

static cJSON *json_stat(ds_report_stat s) {
    cJSON *o = cJSON_CreateObject();
    json_num(o, "median", s.median);
    json_num(o, "mean", s.mean);
    return o;
}

static cJSON *json_confusion(const ds_eval_confusion *c) {
    cJSON *o = cJSON_CreateObject();
    json_num(o, "threshold", c->threshold);
    json_num(o, "precision", c->precision);
    json_num(o, "recall", c->recall);
    json_num(o, "fpr", c->fpr);
    cJSON_AddNumberToObject(o, "tp", (double)c->tp);
    cJSON_AddNumberToObject(o, "fp", (double)c->fp);
    cJSON_AddNumberToObject(o, "tn", (double)c->tn);
    cJSON_AddNumberToObject(o, "fn", (double)c->fn);
    return o;
}

static const struct {
    const char *name;
    size_t offset;
} FIG_FIELDS[] = {
    {"image_auroc", offsetof(ds_eval_figures, image_auroc)},
    {"average_precision", offsetof(ds_eval_figures, average_precision)},
    {"f1_max", offsetof(ds_eval_figures, f1_max)},
    {"pixel_auroc", offsetof(ds_eval_figures, pixel_auroc)},
    {"aupro", offsetof(ds_eval_figures, aupro)},
};
enum { N_FIG_FIELDS = sizeof FIG_FIELDS / sizeof FIG_FIELDS[0] };

/* Distinct defect names of the anomalous images, in first-seen order. */
static int defects(const ds_report *r, const char **names, int max) {
    int n = 0;
    for (int i = 0; i < r->n; i++) {
        const char *d = r->rows[i].defect;
        if (!d || r->labels[i] != 1) continue;
        bool seen = false;
        for (int j = 0; j < n && !seen; j++) seen = !strcmp(names[j], d);
        if (!seen && n < max) names[n++] = d;
    }
    return n;
}

/* Image AUROC of normals vs the anomalies of one defect type. */
static double defect_auroc(const ds_report *r, int k, const char *defect, int *n_def) {
    float *s = malloc(sizeof(float) * (size_t)r->n);
    int *l = malloc(sizeof(int) * (size_t)r->n);
    int m = 0, nd = 0, nn = 0;
    double a = NAN;
    if (s && l) {
        for (int i = 0; i < r->n; i++) {
            bool is_def = r->labels[i] == 1 && r->rows[i].defect && !strcmp(r->rows[i].defect, defect);
            if (r->labels[i] == 0 || is_def) {
                s[m] = r->scores[k][i], l[m] = r->labels[i], m++;
                nd += is_def, nn += !is_def;
            }
        }
        if (nd > 0 && nn > 0 && ds_eval_auroc(s, l, m, &a) != DS_OK) a = NAN;
    }
    free(s);
    free(l);
    *n_def = nd;
    return a;
}

enum { MAX_DEFECTS = 64 };

static ds_status build_json(ds_report *r, char **out) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return ds_set_error(DS_ERR_NOMEM, "ds_report_write: out of memory");
    ds_status st = DS_OK;
    cJSON_AddStringToObject(root, "dinoscope_version", ds_version());
    cJSON_AddStringToObject(root, "model", r->model_path);
    cJSON_AddStringToObject(root, "data", r->data_path);
    cJSON_AddStringToObject(root, "layout", r->layout);
    cJSON *bb = cJSON_AddObjectToObject(root, "backbone");
    cJSON_AddStringToObject(bb, "arch", r->backbone);
    cJSON_AddStringToObject(bb, "file", r->backbone_file);
    cJSON_AddNumberToObject(bb, "input_size", r->input_size);
    int n_anom = 0, n_masks = 0;
    for (int i = 0; i < r->n; i++) {
        n_anom += r->labels[i];
        n_masks += r->rows[i].mask_path != NULL;
    }
    cJSON *ts = cJSON_AddObjectToObject(root, "test_set");
    cJSON_AddNumberToObject(ts, "n_images", r->n);
    cJSON_AddNumberToObject(ts, "n_normal", r->n - n_anom);
    cJSON_AddNumberToObject(ts, "n_anomalous", n_anom);
    cJSON_AddNumberToObject(ts, "n_masks", n_masks);
    const char *dnames[MAX_DEFECTS];
    int n_def = defects(r, dnames, MAX_DEFECTS);
    cJSON *scs = cJSON_AddArrayToObject(root, "scorers");
    for (int k = 0; k < r->n_scorers && st == DS_OK; k++) {
        ds_eval_figures f;
        if ((st = ds_report_figures(r, k, &f)) != DS_OK) break;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(scs, o);
        cJSON_AddStringToObject(o, "name", r->sc_name[k]);
        if (r->sc_params[k]) cJSON_AddStringToObject(o, "params", r->sc_params[k]);
        json_num(o, "image_auroc", f.image_auroc);
        json_num(o, "average_precision", f.average_precision);
        json_num(o, "f1_max", f.f1_max);
        json_num(o, "f1_threshold", f.f1_threshold);
        json_num(o, "pixel_auroc", f.pixel_auroc);
        json_num(o, "aupro", f.aupro);
        cJSON_AddNumberToObject(o, "aupro_fpr_limit", 0.3);
        if (r->px[k]) {
            int64_t ni, np, na, nr;
            ds_eval_pixels_counts(r->px[k], &ni, &np, &na, &nr);
            cJSON *p = cJSON_AddObjectToObject(o, "pixels");
            cJSON_AddNumberToObject(p, "n_maps", (double)ni);
            cJSON_AddNumberToObject(p, "n_pixels", (double)np);
            cJSON_AddNumberToObject(p, "n_anomalous_pixels", (double)na);
            cJSON_AddNumberToObject(p, "n_regions", (double)nr);
        }
        ds_eval_confusion c;
        if (isfinite(f.f1_threshold)) {
            if ((st = ds_eval_at_threshold(r->scores[k], r->labels, r->n, f.f1_threshold, &c)) != DS_OK) break;
            cJSON_AddItemToObject(o, "at_f1_threshold", json_confusion(&c));
        } else {
            cJSON_AddNullToObject(o, "at_f1_threshold");
        }
        if (r->sc[k].has_threshold) {
            if ((st = ds_eval_at_threshold(r->scores[k], r->labels, r->n, r->sc[k].threshold, &c)) != DS_OK) break;
            cJSON *t = json_confusion(&c);
            json_num(t, "target_fpr", r->sc[k].threshold_fpr);
            cJSON_AddItemToObject(o, "stored_threshold", t);
        } else {
            cJSON_AddNullToObject(o, "stored_threshold");
        }
        cJSON *tm = cJSON_AddObjectToObject(o, "timing_ms");
        cJSON_AddItemToObject(tm, "score", json_stat(ds_report_stage_ms(r, 2, k)));
        cJSON_AddItemToObject(tm, "inference", json_stat(ds_report_total_ms(r, k)));
        if (n_def > 1) {
            cJSON *pd = cJSON_AddObjectToObject(o, "per_defect");
            for (int d = 0; d < n_def; d++) {
                int nd;
                double a = defect_auroc(r, k, dnames[d], &nd);
                cJSON *e = cJSON_AddObjectToObject(pd, dnames[d]);
                cJSON_AddNumberToObject(e, "n", nd);
                json_num(e, "image_auroc", a);
            }
        }
        if (r->n_folds[k] > 0) {
            cJSON *cv = cJSON_AddObjectToObject(o, "cv");
            cJSON_AddNumberToObject(cv, "folds", r->n_folds[k]);
            cJSON *mean = cJSON_AddObjectToObject(cv, "mean"), *sd = cJSON_AddObjectToObject(cv, "std");
            for (int q = 0; q < N_FIG_FIELDS; q++) {
                double m, s;
                ds_report_fold_stat(r, k, FIG_FIELDS[q].offset, &m, &s, NULL);
                json_num(mean, FIG_FIELDS[q].name, m);
                json_num(sd, FIG_FIELDS[q].name, s);
            }
            cJSON *per = cJSON_AddArrayToObject(cv, "per_fold");
            for (int fo = 0; fo < r->n_folds[k]; fo++) {
                const ds_eval_figures *g = &r->folds[k][fo];
                cJSON *e = cJSON_CreateObject();
                cJSON_AddNumberToObject(e, "n_normal", (double)g->n_normal);
                cJSON_AddNumberToObject(e, "n_anomalous", (double)g->n_anomalous);
                for (int q = 0; q < N_FIG_FIELDS; q++) {
                    double v;
                    memcpy(&v, (const char *)g + FIG_FIELDS[q].offset, sizeof v);
                    json_num(e, FIG_FIELDS[q].name, v);
                }
                json_num(e, "f1_threshold", g->f1_threshold);
                cJSON_AddItemToArray(per, e);
            }
        }
    }
    cJSON *tm = cJSON_AddObjectToObject(root, "timing_ms");
    cJSON_AddNumberToObject(tm, "n_images", r->n);
    cJSON_AddItemToObject(tm, "preprocess", json_stat(ds_report_stage_ms(r, 0, 0)));
    cJSON_AddItemToObject(tm, "backbone", json_stat(ds_report_stage_ms(r, 1, 0)));
    cJSON_AddItemToObject(tm, "anomaly_map", json_stat(ds_report_stage_ms(r, 3, 0)));
    cJSON *res = cJSON_AddObjectToObject(root, "resources");
    json_num(res, "wall_s", r->wall_s);
    json_num(res, "peak_rss_mb", r->peak_rss_bytes > 0 ? (double)r->peak_rss_bytes / (1024.0 * 1024.0) : NAN);
    cJSON *notes = cJSON_AddArrayToObject(root, "notes");
    for (int i = 0; i < r->n_notes; i++) cJSON_AddItemToArray(notes, cJSON_CreateString(r->notes[i]));
    char *text = st == DS_OK ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (st != DS_OK) return st;
    if (!text) return ds_set_error(DS_ERR_NOMEM, "ds_report_write: out of memory for report.json");
    *out = text;
    return DS_OK;
}

static void md_num(ds_sb *b, double v, int digits) {
    if (isfinite(v)) ds_sb_printf(b, " %.*f |", digits, v);
    else ds_sb_puts(b, " – |");
}

static void md_pm(ds_sb *b, double m, double s) {
    if (isfinite(m)) ds_sb_printf(b, " %.4f ± %.4f |", m, s);
    else ds_sb_puts(b, " – |");
}

static ds_status build_md(ds_report *r, ds_sb *b) {
    char bbs[64];
    ds_report_backbone_short(r, bbs, sizeof bbs);
    int n_anom = 0;
    for (int i = 0; i < r->n; i++) n_anom += r->labels[i];
    ds_sb_printf(b, "# dinoscope evaluation\n\nModel `%s` on `%s` (%s layout): %d test images, %d normal, %d anomalous. "
                 "Backbone %s at %dx%d.\n\n",
                 r->model_path, r->data_path, r->layout, r->n, r->n - n_anom, n_anom, r->backbone, r->input_size,
                 r->input_size);
    ds_sb_puts(b, "| Method | Backbone | Image AUROC | Pixel AUROC | AUPRO | F1-max | Inference ms/img |\n"
                  "|---|---|---|---|---|---|---|\n");
    for (int k = 0; k < r->n_scorers; k++) {
        ds_eval_figures f;
        ds_status st = ds_report_figures(r, k, &f);
        if (st != DS_OK) return st;
        ds_sb_printf(b, "| %s | %s |", r->sc_name[k], bbs);
        md_num(b, f.image_auroc, 4);
        md_num(b, f.pixel_auroc, 4);
        md_num(b, f.aupro, 4);
        md_num(b, f.f1_max, 4);
        md_num(b, ds_report_total_ms(r, k).median, 1);
        ds_sb_puts(b, "\n");
    }
    ds_sb_puts(b, "\nInference ms/img: median over the test images of preprocessing + backbone + that scorer "
                  "(anomaly map not included). AUPRO integrates up to FPR 0.3. – : undefined (no masks, or one class).\n");

    ds_sb_puts(b, "\n## Thresholds\n\n| Method | Threshold | From | Precision | Recall | FPR | TP | FP | TN | FN |\n"
                  "|---|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < r->n_thr; i++) {
        const ds_report_threshold_row *row = &r->thr[i];
        const ds_eval_confusion *c = &row->c;
        const int k = row->scorer;
        char from[96];
        if (!row->from_model) snprintf(from, sizeof from, "F1-optimal on this test set");
        else snprintf(from, sizeof from, "model (FPR %g on held-out normals)", r->sc[k].threshold_fpr);
        ds_sb_printf(b, "| %s | %.6g | %s |", r->sc_name[k], row->threshold, from);
        md_num(b, c->precision, 4);
        md_num(b, c->recall, 4);
        md_num(b, c->fpr, 4);
        ds_sb_printf(b, " %lld | %lld | %lld | %lld |\n", (long long)c->tp, (long long)c->fp, (long long)c->tn,
                     (long long)c->fn);
    }
    bool any_cv = false;
    for (int k = 0; k < r->n_scorers; k++) any_cv = any_cv || r->n_folds[k] > 0;
    if (any_cv) {
        ds_sb_puts(b, "\n## Cross-validation (mean ± std over folds)\n\n| Method | Folds | Image AUROC | AP | F1-max | "
                      "Pixel AUROC | AUPRO |\n|---|---|---|---|---|---|---|\n");
        for (int k = 0; k < r->n_scorers; k++) {
            if (!r->n_folds[k]) continue;
            ds_sb_printf(b, "| %s | %d |", r->sc_name[k], r->n_folds[k]);
            for (int q = 0; q < N_FIG_FIELDS; q++) {
                double m, s;
                ds_report_fold_stat(r, k, FIG_FIELDS[q].offset, &m, &s, NULL);
                md_pm(b, m, s);
            }
            ds_sb_puts(b, "\n");
        }
    }
    const char *dnames[MAX_DEFECTS];
    int n_def = defects(r, dnames, MAX_DEFECTS);
    if (n_def > 1) {
        ds_sb_puts(b, "\n## Image AUROC per defect type (normals vs that type)\n\n| Defect | n |");
        for (int k = 0; k < r->n_scorers; k++) ds_sb_printf(b, " %s |", r->sc_name[k]);
        ds_sb_puts(b, "\n|---|---|");
        for (int k = 0; k < r->n_scorers; k++) ds_sb_puts(b, "---|");
        ds_sb_puts(b, "\n");
        for (int d = 0; d < n_def; d++) {
            int nd = 0;
            ds_sb_printf(b, "| %s |", dnames[d]);
            double a[DS_REPORT_MAX_SCORERS];
            for (int k = 0; k < r->n_scorers; k++) a[k] = defect_auroc(r, k, dnames[d], &nd);
            ds_sb_printf(b, " %d |", nd);
            for (int k = 0; k < r->n_scorers; k++) md_num(b, a[k], 4);
            ds_sb_puts(b, "\n");
        }
    }
    ds_sb_puts(b, "\n## Timing per image (ms)\n\n| Stage | Median | Mean |\n|---|---|---|\n");
    ds_report_stat s = ds_report_stage_ms(r, 0, 0);
    ds_sb_printf(b, "| preprocessing (decode, stain norm., resize, normalise) | %.2f | %.2f |\n", s.median, s.mean);
    s = ds_report_stage_ms(r, 1, 0);
    ds_sb_printf(b, "| backbone | %.2f | %.2f |\n", s.median, s.mean);
    for (int k = 0; k < r->n_scorers; k++) {
        s = ds_report_stage_ms(r, 2, k);
        ds_sb_printf(b, "| scoring: %s | %.3f | %.3f |\n", r->sc_name[k], s.median, s.mean);
    }
    s = ds_report_stage_ms(r, 3, 0);
    if (s.mean > 0) ds_sb_printf(b, "| anomaly map at the original size | %.2f | %.2f |\n", s.median, s.mean);
    if (r->peak_rss_bytes > 0 || r->wall_s > 0)
        ds_sb_printf(b, "\nPeak resident memory %.0f MB; wall time %.1f s.\n",
                     (double)r->peak_rss_bytes / (1024.0 * 1024.0), r->wall_s);
    if (r->n_notes) {
        ds_sb_puts(b, "\n## Notes\n\n");
        for (int i = 0; i < r->n_notes; i++) ds_sb_printf(b, "- %s\n", r->notes[i]);
    }
    return DS_OK;
}

static void csv_field(ds_sb *b, const char *v) {
    if (!strpbrk(v, ",\"\n\r")) {
        ds_sb_puts(b, v);
        return;
    }
    ds_sb_putn(b, "\"", 1);
    for (const char *p = v; *p; p++) {
        if (*p == '"') ds_sb_putn(b, "\"", 1);
        ds_sb_putn(b, p, 1);
    }
    ds_sb_putn(b, "\"", 1);
}

static void build_csv(const ds_report *r, ds_sb *b) {
    ds_sb_puts(b, "path,label,defect,maskfile");
    for (int k = 0; k < r->n_scorers; k++) ds_sb_printf(b, ",%s", r->sc_name[k]);
    for (int k = 0; k < r->n_scorers; k++)
        if (r->sc[k].has_threshold) ds_sb_printf(b, ",%s_anomalous", r->sc_name[k]);
    ds_sb_puts(b, ",prep_ms,backbone_ms");
    for (int k = 0; k < r->n_scorers; k++) ds_sb_printf(b, ",%s_ms", r->sc_name[k]);
    ds_sb_puts(b, ",map_ms\n");
    for (int i = 0; i < r->n; i++) {
        const ds_report_row *w = &r->rows[i];
        csv_field(b, w->path);
        ds_sb_printf(b, ",%d,", r->labels[i]);
        csv_field(b, w->defect ? w->defect : "");
        ds_sb_puts(b, ",");
        csv_field(b, w->mask_path ? w->mask_path : "");
        /* %.9g: every float32 round-trips */
        for (int k = 0; k < r->n_scorers; k++) ds_sb_printf(b, ",%.9g", r->scores[k][i]);
        for (int k = 0; k < r->n_scorers; k++)
            if (r->sc[k].has_threshold) ds_sb_printf(b, ",%d", r->scores[k][i] >= r->sc[k].threshold);
        ds_sb_printf(b, ",%.3f,%.3f", w->prep_ms, w->backbone_ms);
        for (int k = 0; k < r->n_scorers; k++) ds_sb_printf(b, ",%.4f", r->score_ms[k][i]);
        ds_sb_printf(b, ",%.3f\n", w->map_ms);
    }
}

static ds_status write_file(const char *dir, const char *name, const char *text, size_t len) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);
    if (!path) return ds_set_error(DS_ERR_NOMEM, "ds_report_write: out of memory");
    snprintf(path, n, "%s/%s", dir, name);
    ds_status st = ds_write_file_atomic(path, text, len); /* "cannot write '<path>': <reason>" */
    free(path);
    return st;
}

/* One output, built in full before anything is written. */
static ds_status build(ds_report *r, const char *which, char **text, size_t *len) {
    if (!strcmp(which, "json")) {
        char *json = NULL;
        ds_status st = build_json(r, &json);
        if (st != DS_OK) return st;
        size_t jl = strlen(json);
        char *j2 = realloc(json, jl + 2);
        if (!j2) {
            free(json);
            return ds_set_error(DS_ERR_NOMEM, "ds_report: out of memory for report.json");
        }
        j2[jl] = '\n', j2[jl + 1] = 0;
        *text = j2;
        *len = jl + 1;
        return DS_OK;
    }
    ds_sb b = {0};
    ds_status st = ds_report_threshold_rows(r);
    if (st != DS_OK) return st;
    if (!strcmp(which, "md")) st = build_md(r, &b);
    else if (!strcmp(which, "csv")) build_csv(r, &b);
    else if (!strcmp(which, "html")) st = ds_report_html(r, &b);
    else return ds_set_error(DS_ERR_ARG, "ds_report_format: unknown output '%s' (json, md, csv or html)", which);
    if (st == DS_OK && (b.oom || !b.s)) st = ds_set_error(DS_ERR_NOMEM, "ds_report: out of memory formatting the %s", which);
    if (st != DS_OK) {
        ds_sb_free(&b);
        return st;
    }
    *text = b.s;
    *len = b.len;
    return DS_OK;
}

ds_status ds_report_format(ds_report *r, const char *which, char **text) {
    if (!r || !which || !text) return ds_set_error(DS_ERR_ARG, "ds_report_format: NULL argument");
    if (r->n == 0) return ds_set_error(DS_ERR_ARG, "ds_report_format: no test images to report on");
    size_t len;
    return build(r, which, text, &len);
}

ds_status ds_report_write(ds_report *r, const char *dir) {
    if (!r || !dir) return ds_set_error(DS_ERR_ARG, "ds_report_write: NULL argument");
    if (r->n == 0) return ds_set_error(DS_ERR_ARG, "ds_report_write: no test images to report on");
    /* report.json last: its presence means the others were written */
    static const char *const which[4] = {"csv", "md", "html", "json"};
    static const char *const names[4] = {"scores.csv", "report.md", "report.html", "report.json"};
    ds_status st = DS_OK;
    for (int i = 0; i < 4 && st == DS_OK; i++) {
        char *text = NULL;
        size_t len = 0;
        st = build(r, which[i], &text, &len);
        if (st == DS_OK) st = write_file(dir, names[i], text, len);
        free(text);
    }
    return st;
}
