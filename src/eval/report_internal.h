/* Shared by src/eval/report.c (data, figures, JSON/Markdown/CSV) and
 * src/eval/report_html.c (the HTML page). Not installed. */
#ifndef DS_REPORT_INTERNAL_H
#define DS_REPORT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dinoscope/eval.h"
#include "dinoscope/report.h"

/* A growable text buffer. A failed allocation sets oom and drops further
 * text, so that writers check once at the end. */
typedef struct {
    char *s;
    size_t len, cap;
    bool oom;
} ds_sb;
void ds_sb_printf(ds_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ds_sb_puts(ds_sb *b, const char *s);
void ds_sb_putn(ds_sb *b, const char *s, size_t n);
/* text with & < > " escaped for HTML */
void ds_sb_html(ds_sb *b, const char *s);
void ds_sb_free(ds_sb *b);

typedef struct {
    double median, mean;
} ds_report_stat;

enum { DS_GALLERY_TOP = 0, DS_GALLERY_LOW_ANOMALY = 1, DS_GALLERY_HIGH_NORMAL = 2, DS_GALLERY_SECTIONS = 3 };

typedef struct {
    char *path, *defect, *mask_path;
    double prep_ms, backbone_ms, map_ms;
    char *picture;          /* base64 PNG, NULL if none */
    int pic_w, pic_h;
} ds_report_row;

/* A threshold the report tables: per scorer in order, the F1-optimal one
 * on the test set (from_model 0) when defined, then the model's stored one
 * (from_model 1) when it has one, each with its confusion on the test set.
 * ds_report_threshold_rows fills r->thr / r->n_thr before each output is
 * formatted. Returns DS_OK or ds_eval_at_threshold's error. */
typedef struct {
    int scorer;
    float threshold;
    int from_model;
    ds_eval_confusion c;
} ds_report_threshold_row;

struct ds_report {
    char *model_path, *data_path, *layout, *backbone, *backbone_file;
    int input_size, n_scorers;
    ds_report_threshold_row thr[2 * DS_REPORT_MAX_SCORERS]; /* see ds_report_threshold_rows */
    int n_thr;
    ds_report_scorer sc[DS_REPORT_MAX_SCORERS]; /* name/params point at copies below */
    char *sc_name[DS_REPORT_MAX_SCORERS], *sc_params[DS_REPORT_MAX_SCORERS];

    int n, cap;                                 /* test images */
    ds_report_row *rows;                        /* [cap] */
    int *labels;                                /* [cap] */
    float *scores[DS_REPORT_MAX_SCORERS];       /* [cap] per scorer */
    double *score_ms[DS_REPORT_MAX_SCORERS];    /* [cap] per scorer */
    bool have_score_ms;

    ds_eval_pixels *px[DS_REPORT_MAX_SCORERS];  /* NULL until a map is added */

    int n_folds[DS_REPORT_MAX_SCORERS], fold_cap[DS_REPORT_MAX_SCORERS];
    ds_eval_figures *folds[DS_REPORT_MAX_SCORERS];

    char **notes;
    int n_notes;
    double wall_s;
    int64_t peak_rss_bytes;
    bool has_scale;
    float map_vmin, map_vmax;

    bool fig_valid[DS_REPORT_MAX_SCORERS];
    ds_eval_figures fig[DS_REPORT_MAX_SCORERS];

    /* gallery: chosen by ds_report_gallery_select */
    int gallery_scorer;
    float gallery_threshold;
    const char *gallery_threshold_kind;         /* "stored" / "F1-optimal" */
    int n_section[DS_GALLERY_SECTIONS];
    int *section[DS_GALLERY_SECTIONS];          /* image indices, best first */
};

/* Median and mean of v[n] (numpy's median: mean of the middle two). */
ds_report_stat ds_report_stat_of(const double *v, int n);
/* The scorer whose scores choose the gallery: the first with maps, else 0. */
int ds_report_gallery_scorer(const ds_report *r);
/* Mean and std (ddof = 0) over the folds of one field (offset into
 * ds_eval_figures, a double), NaN folds skipped; n_used may be NULL. */
void ds_report_fold_stat(const ds_report *r, int k, size_t offset, double *mean, double *std, int *n_used);
/* The scorer's short backbone name for tables: the first word of the
 * description ("mobilenet_v2", "dinov2"). Static buffer per report. */
const char *ds_report_backbone_short(const ds_report *r, char *buf, size_t n);
/* Total inference time per image of scorer k: prep + backbone + scoring. */
ds_report_stat ds_report_total_ms(const ds_report *r, int k);
ds_report_stat ds_report_stage_ms(const ds_report *r, int stage, int k); /* 0 prep, 1 backbone, 2 score k, 3 map */

/* The HTML page (report_html.c). */
ds_status ds_report_html(ds_report *r, ds_sb *out);



ds_status ds_report_threshold_rows(ds_report *r);

#endif
