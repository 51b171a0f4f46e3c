/* report.html: one self-contained page (no scripts, no external files):
 * the figures as tables, inline SVG ROC and PR curves (all scorers on one
 * plot each), per-scorer score histograms, and a gallery of pictures
 * embedded as PNG data URIs. Plot conventions follow sklearn's:
 * ROC from (0,0) through (FPR, TPR) at each distinct threshold; the PR
 * curve is drawn as the step function whose area is the average precision
 * (precision P_k held over the recall interval (R_{k-1}, R_k]). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "dinoscope/maps.h"
#include "eval/report_internal.h"

/* matplotlib's tab10: distinct and colour-blind tolerable; the curves use
 * these exact colours and nothing else on the page does (the browser test
 * looks for them). */
static const char *const COLOURS[DS_REPORT_MAX_SCORERS] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                                           "#9467bd", "#8c564b", "#e377c2", "#17becf"};
#define NORMAL_FILL "#4c72b0"
#define ANOMALY_FILL "#c44e52"

static const char *CSS =
    "body{font-family:'DejaVu Sans',Arial,sans-serif;margin:20px 28px;color:#222;max-width:1180px;font-size:14px}"
    "h1{font-size:22px;margin:0 0 6px}h2{font-size:18px;margin:22px 0 8px;border-bottom:1px solid #ddd}"
    "h3{font-size:15px;margin:14px 0 6px}.meta{color:#555;margin:2px 0}"
    "table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#f2f2f2}td:first-child,th:first-child{text-align:left}"
    ".plots{display:flex;flex-wrap:wrap;gap:14px}figure{margin:0}figcaption{font-size:12px;color:#444}"
    ".plots figure{width:372px}"
    ".gallery{display:flex;flex-wrap:wrap;gap:10px}.card{width:168px;border:1px solid #ddd;padding:4px}"
    ".card figcaption{overflow-wrap:anywhere}.card img{width:168px;height:auto;display:block}.card.anomalous{border-color:" ANOMALY_FILL "}"
    ".nopic{width:168px;height:120px;background:#eee;color:#777;text-align:center;line-height:120px}"
    "svg text{font-size:11px;fill:#333}.note{color:#555}";

static void num(ds_sb *b, double v, int digits) {
    if (isfinite(v)) ds_sb_printf(b, "<td>%.*f</td>", digits, v);
    else ds_sb_puts(b, "<td>&ndash;</td>");
}

/* ---- plots ------------------------------------------------------------------ */

enum { PW = 300, PH = 240, PX0 = 48, PY0 = 12, SVG_W = PX0 + PW + 24, SVG_H = PY0 + PH + 44 };

static double X(double u) { return PX0 + u * PW; }
static double Y(double v) { return PY0 + (1 - v) * PH; }

static void axes(ds_sb *b, const char *xlabel, const char *ylabel, double xmin, double xmax, double ymax) {
    for (int i = 0; i <= 5; i++) {
        double t = i / 5.0;
        ds_sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>", X(t), Y(0), X(t),
                     Y(1));
        ds_sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e6e6e6\"/>", X(0), Y(t), X(1),
                     Y(t));
        ds_sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.3g</text>", X(t), Y(0) + 14,
                     xmin + t * (xmax - xmin));
        ds_sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>", X(0) - 4, Y(t) + 4, t * ymax);
    }
    ds_sb_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#888\"/>", PX0, PY0, PW, PH);
    ds_sb_printf(b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", X(0.5), SVG_H - 14);
    ds_sb_html(b, xlabel);
    ds_sb_printf(b, "</text><text transform=\"translate(12,%.1f) rotate(-90)\" text-anchor=\"middle\">", Y(0.5));
    ds_sb_html(b, ylabel);
    ds_sb_puts(b, "</text>");
}

typedef struct {
    float *thr;
    int64_t *tp, *fp;
    int64_t n, n_pos, n_neg;
} curve;

static ds_status get_curve(const ds_report *r, int k, curve *c) {
    c->thr = malloc(sizeof(float) * (size_t)r->n);
    c->tp = malloc(sizeof(int64_t) * (size_t)r->n);
    c->fp = malloc(sizeof(int64_t) * (size_t)r->n);
    if (!c->thr || !c->tp || !c->fp) return ds_set_error(DS_ERR_NOMEM, "ds_report_write: out of memory for curves");
    ds_status st = ds_eval_curve(r->scores[k], r->labels, r->n, c->thr, c->tp, c->fp, &c->n);
    if (st != DS_OK) return st;
    c->n_pos = c->n ? c->tp[c->n - 1] : 0;
    c->n_neg = c->n ? c->fp[c->n - 1] : 0;
    return DS_OK;
}

static void free_curve(curve *c) {
    free(c->thr);
    free(c->tp);
    free(c->fp);
    memset(c, 0, sizeof *c);
}

/* ROC (which = 0) or PR (which = 1) of every scorer on one plot. */
static ds_status plot_curves(ds_report *r, ds_sb *b, int which) {
    ds_sb_printf(b, "<figure><svg class=\"curve\" id=\"%s\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
                    "height=\"%d\" viewBox=\"0 0 %d %d\">",
                 which ? "pr" : "roc", SVG_W, SVG_H + 16 * r->n_scorers, SVG_W, SVG_H + 16 * r->n_scorers);
    axes(b, which ? "recall" : "false-positive rate", which ? "precision" : "true-positive rate", 0, 1, 1);
    int n_anom = 0;
    for (int i = 0; i < r->n; i++) n_anom += r->labels[i];
    if (which == 0)
        ds_sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>",
                     X(0), Y(0), X(1), Y(1));
    else if (r->n > 0)
        ds_sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>",
                     X(0), Y((double)n_anom / r->n), X(1), Y((double)n_anom / r->n));
    for (int k = 0; k < r->n_scorers; k++) {
        curve c = {0};
        ds_status st = get_curve(r, k, &c);
        if (st != DS_OK) {
            free_curve(&c);
            return st;
        }
        ds_eval_figures f;
        if ((st = ds_report_figures(r, k, &f)) != DS_OK) {
            free_curve(&c);
            return st;
        }
        bool drawable = which ? c.n_pos > 0 : c.n_pos > 0 && c.n_neg > 0;
        if (drawable) {
            ds_sb_printf(b, "<path class=\"%s-curve\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" d=\"", which ? "pr" : "roc",
                         COLOURS[k]);
            if (which == 0) {
                ds_sb_printf(b, "M%.1f %.1f", X(0), Y(0));
                for (int64_t i = 0; i < c.n; i++)
                    ds_sb_printf(b, " L%.1f %.1f", X((double)c.fp[i] / c.n_neg), Y((double)c.tp[i] / c.n_pos));
            } else {
                double prev_r = 0;
                for (int64_t i = 0; i < c.n; i++) {
                    double p = (double)c.tp[i] / (double)(c.tp[i] + c.fp[i]), rc = (double)c.tp[i] / c.n_pos;
                    ds_sb_printf(b, "%s%.1f %.1f L%.1f %.1f", i ? " L" : "M", X(prev_r), Y(p), X(rc), Y(p));
                    prev_r = rc;
                }
            }
            ds_sb_puts(b, "\"/>");
        }
        double ly = SVG_H + 16.0 * k - 2;
        ds_sb_printf(b, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"3\"/>", PX0,
                     ly - 4, PX0 + 22, ly - 4, COLOURS[k]);
        ds_sb_printf(b, "<text x=\"%d\" y=\"%.1f\">", PX0 + 28, ly);
        ds_sb_html(b, r->sc_name[k]);
        double v = which ? f.average_precision : f.image_auroc;
        if (isfinite(v)) ds_sb_printf(b, " (%s %.4f)", which ? "AP" : "AUROC", v);
        else ds_sb_puts(b, " (undefined: one class)");
        ds_sb_puts(b, "</text>");
        free_curve(&c);
    }
    ds_sb_printf(b, "</svg><figcaption>%s</figcaption></figure>",
                 which ? "Precision-recall (dashed: the anomaly fraction, a random scorer)"
                       : "ROC (dashed: a random scorer)");
    return DS_OK;
}

/* Histogram of one scorer's scores, normal vs anomalous, each as the
 * fraction of its class per bin, with the decision thresholds. */
static ds_status plot_hist(ds_report *r, ds_sb *b, int k) {
    enum { BINS = 30 };
    float lo = r->scores[k][0], hi = lo;
    for (int i = 1; i < r->n; i++) {
        lo = fminf(lo, r->scores[k][i]);
        hi = fmaxf(hi, r->scores[k][i]);
    }
    double span = hi > lo ? (double)hi - lo : 1.0;
    double cnt[2][BINS] = {{0}};
    int n_cls[2] = {0, 0};
    for (int i = 0; i < r->n; i++) {
        int bin = (int)(((double)r->scores[k][i] - lo) / span * BINS);
        if (bin >= BINS) bin = BINS - 1;
        if (bin < 0) bin = 0;
        cnt[r->labels[i]][bin] += 1;
        n_cls[r->labels[i]]++;
    }
    double ymax = 0;
    for (int c = 0; c < 2; c++)
        for (int j = 0; j < BINS; j++) {
            if (n_cls[c]) cnt[c][j] /= n_cls[c];
            ymax = fmax(ymax, cnt[c][j]);
        }
    ymax = ymax > 0 ? ceil(ymax * 10) / 10 : 1;
    ds_sb_printf(b, "<figure><svg class=\"hist\" id=\"hist-%d\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
                    "height=\"%d\" viewBox=\"0 0 %d %d\">",
                 k, SVG_W, SVG_H + 16, SVG_W, SVG_H + 16);
    char xl[160];
    snprintf(xl, sizeof xl, "%s score", r->sc_name[k]);
    axes(b, xl, "fraction of the class", lo, lo + span, ymax);
    static const char *const fill[2] = {NORMAL_FILL, ANOMALY_FILL};
    for (int c = 0; c < 2; c++)
        for (int j = 0; j < BINS; j++) {
            if (cnt[c][j] <= 0) continue;
            double h = cnt[c][j] / ymax;
            ds_sb_printf(b, "<rect class=\"bar-%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\" "
                            "fill-opacity=\"0.55\"/>",
                         c ? "anomalous" : "normal", X((double)j / BINS), Y(h), (double)PW / BINS, h * PH, fill[c]);
        }
    ds_eval_figures f;
    ds_status st = ds_report_figures(r, k, &f);
    if (st != DS_OK) return st;
    if (isfinite(f.f1_threshold)) {
        double u = ((double)f.f1_threshold - lo) / span;
        ds_sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#222\" stroke-dasharray=\"5 3\"/>",
                     X(u), Y(0), X(u), Y(1));
    }
    if (r->sc[k].has_threshold) {
        double u = fmin(fmax(((double)r->sc[k].threshold - lo) / span, 0), 1);
        ds_sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#2a7f62\" stroke-width=\"2\" "
                        "stroke-dasharray=\"2 2\"/>",
                     X(u), Y(0), X(u), Y(1));
    }
    double ly = SVG_H + 10;
    ds_sb_printf(b, "<rect x=\"%d\" y=\"%.1f\" width=\"12\" height=\"10\" fill=\"%s\" fill-opacity=\"0.55\"/>"
                    "<text x=\"%d\" y=\"%.1f\">normal (%d)</text>",
                 PX0, ly - 9, NORMAL_FILL, PX0 + 16, ly, n_cls[0]);
    ds_sb_printf(b, "<rect x=\"%d\" y=\"%.1f\" width=\"12\" height=\"10\" fill=\"%s\" fill-opacity=\"0.55\"/>"
                    "<text x=\"%d\" y=\"%.1f\">anomalous (%d)</text>",
                 PX0 + 110, ly - 9, ANOMALY_FILL, PX0 + 126, ly, n_cls[1]);
    ds_sb_puts(b, "</svg><figcaption>");
    ds_sb_html(b, r->sc_name[k]);
    ds_sb_puts(b, ": dashed = F1-optimal threshold");
    if (r->sc[k].has_threshold) ds_sb_puts(b, ", green dotted = the model's stored threshold");
    ds_sb_puts(b, "</figcaption></figure>");
    return DS_OK;
}

/* ---- gallery ------------------------------------------------------------------ */

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static void card(const ds_report *r, ds_sb *b, int i) {
    const ds_report_row *w = &r->rows[i];
    int k = r->gallery_scorer;
    float s = r->scores[k][i];
    bool anom = r->labels[i] == 1, flagged = s >= r->gallery_threshold;
    ds_sb_printf(b, "<figure class=\"card %s\">", anom ? "anomalous" : "normal");
    if (w->picture) {
        ds_sb_printf(b, "<img class=\"overlay\" width=\"%d\" height=\"%d\" alt=\"", w->pic_w, w->pic_h);
        ds_sb_html(b, base_name(w->path));
        ds_sb_puts(b, "\" src=\"data:image/png;base64,");
        ds_sb_puts(b, w->picture);
        ds_sb_puts(b, "\">");
    } else {
        ds_sb_puts(b, "<div class=\"nopic\">no picture</div>");
    }
    ds_sb_puts(b, "<figcaption><b>");
    ds_sb_html(b, base_name(w->path));
    ds_sb_printf(b, "</b><br>%s %.5g &middot; %s", r->sc_name[k], s, anom ? "anomalous" : "normal");
    if (w->defect) {
        ds_sb_puts(b, " (");
        ds_sb_html(b, w->defect);
        ds_sb_puts(b, ")");
    }
    ds_sb_printf(b, "<br>%s</figcaption></figure>",
                 anom ? (flagged ? "detected" : "<b>missed</b>") : (flagged ? "<b>false alarm</b>" : "not flagged"));
}

static void gallery(const ds_report *r, ds_sb *b) {
    if (!r->section[0]) return;
    int k = r->gallery_scorer;
    ds_sb_puts(b, "<h2>Gallery</h2><p class=\"note\">Judged by <b>");
    ds_sb_html(b, r->sc_name[k]);
    ds_sb_printf(b, "</b> at %s (%.6g).", r->gallery_threshold_kind, r->gallery_threshold);
    if (r->sc[k].has_maps)
        ds_sb_puts(b, " Pictures: the anomaly map over the image (inferno colours on one fixed scale); cyan: "
                      "the outline of the ground-truth mask where one exists.");
    ds_sb_puts(b, "</p>");
    if (r->has_scale && r->sc[k].has_maps) {
        ds_sb_puts(b, "<svg class=\"scale\" xmlns=\"http://www.w3.org/2000/svg\" width=\"360\" height=\"34\">"
                      "<defs><linearGradient id=\"inferno\">");
        for (int i = 0; i <= 10; i++) {
            uint8_t c[3];
            ds_map_colour(i / 10.0f, c);
            ds_sb_printf(b, "<stop offset=\"%d%%\" stop-color=\"#%02x%02x%02x\"/>", i * 10, c[0], c[1], c[2]);
        }
        ds_sb_printf(b, "</linearGradient></defs><rect x=\"40\" y=\"2\" width=\"280\" height=\"14\" fill=\"url(#inferno)\"/>"
                        "<text x=\"40\" y=\"30\" text-anchor=\"middle\">%.3g</text>"
                        "<text x=\"320\" y=\"30\" text-anchor=\"middle\">%.3g</text>"
                        "<text x=\"180\" y=\"30\" text-anchor=\"middle\">patch score</text></svg>",
                     r->map_vmin, r->map_vmax);
    }
    static const char *const titles[DS_GALLERY_SECTIONS] = {
        "Most anomalous (highest scores)",
        "Lowest-scoring anomalies (missed when below the threshold)",
        "Highest-scoring normal images (false alarms when at or above the threshold)"};
    static const char *const ids[DS_GALLERY_SECTIONS] = {"top", "missed", "false-alarms"};
    for (int s = 0; s < DS_GALLERY_SECTIONS; s++) {
        ds_sb_printf(b, "<h3>%s</h3><div class=\"gallery\" id=\"gallery-%s\">", titles[s], ids[s]);
        if (!r->n_section[s]) ds_sb_puts(b, "<p class=\"note\">none in the test set</p>");
        for (int j = 0; j < r->n_section[s]; j++) card(r, b, r->section[s][j]);
        ds_sb_puts(b, "</div>");
    }
}

/* ---- tables --------------------------------------------------------------------- */

static ds_status tables(ds_report *r, ds_sb *b) {
    char bbs[64];
    ds_report_backbone_short(r, bbs, sizeof bbs);
    ds_sb_puts(b, "<h2>Results</h2><table id=\"results\"><tr><th>Method</th><th>Backbone</th><th>Image AUROC</th>"
                  "<th>AP</th><th>Pixel AUROC</th><th>AUPRO</th><th>F1-max</th><th>F1 threshold</th>"
                  "<th>Inference ms/img</th></tr>");
    for (int k = 0; k < r->n_scorers; k++) {
        ds_eval_figures f;
        ds_status st = ds_report_figures(r, k, &f);
        if (st != DS_OK) return st;
        ds_sb_printf(b, "<tr><td><span style=\"color:%s\">&#9632;</span> ", COLOURS[k]);
        ds_sb_html(b, r->sc_name[k]);
        if (r->sc_params[k]) {
            ds_sb_puts(b, " <small>(");
            ds_sb_html(b, r->sc_params[k]);
            ds_sb_puts(b, ")</small>");
        }
        ds_sb_puts(b, "</td><td>");
        ds_sb_html(b, bbs);
        ds_sb_puts(b, "</td>");
        num(b, f.image_auroc, 4);
        num(b, f.average_precision, 4);
        num(b, f.pixel_auroc, 4);
        num(b, f.aupro, 4);
        num(b, f.f1_max, 4);
        if (isfinite(f.f1_threshold)) ds_sb_printf(b, "<td>%.6g</td>", f.f1_threshold);
        else ds_sb_puts(b, "<td>&ndash;</td>");
        num(b, ds_report_total_ms(r, k).median, 1);
        ds_sb_puts(b, "</tr>");
    }
    ds_sb_puts(b, "</table><p class=\"note\">Inference ms/img: median of preprocessing + backbone + scoring per image "
                  "(the anomaly map is not included). AUPRO integrates the per-region overlap up to FPR 0.3 "
                  "(MVTec AD). &ndash;: undefined (no masks, or one class only).</p>");

    ds_sb_puts(b, "<h2>Thresholds</h2><table id=\"thresholds\"><tr><th>Method</th><th>Threshold</th><th>From</th>"
                  "<th>Precision</th><th>Recall</th><th>FPR</th><th>TP</th><th>FP</th><th>TN</th><th>FN</th></tr>");
    for (int i = 0; i < r->n_thr; i++) {
        const ds_report_threshold_row *row = &r->thr[i];
        const ds_eval_confusion *c = &row->c;
        ds_sb_puts(b, "<tr><td>");
        ds_sb_html(b, r->sc_name[row->scorer]);
        ds_sb_printf(b, "</td><td>%.6g</td><td>", row->threshold);
        if (!row->from_model) ds_sb_puts(b, "F1-optimal on this test set");
        else ds_sb_printf(b, "the model's (FPR %g on held-out normals)", r->sc[row->scorer].threshold_fpr);
        ds_sb_puts(b, "</td>");
        num(b, c->precision, 4);
        num(b, c->recall, 4);
        num(b, c->fpr, 4);
        ds_sb_printf(b, "<td>%lld</td><td>%lld</td><td>%lld</td><td>%lld</td></tr>", (long long)c->tp, (long long)c->fp,
                     (long long)c->tn, (long long)c->fn);
    }
    ds_sb_puts(b, "</table>");

    bool any_cv = false;
    for (int k = 0; k < r->n_scorers; k++) any_cv = any_cv || r->n_folds[k] > 0;
    if (any_cv) {
        static const char *const names[] = {"Image AUROC", "AP", "F1-max", "Pixel AUROC", "AUPRO"};
        static const size_t offs[] = {offsetof(ds_eval_figures, image_auroc),
                                      offsetof(ds_eval_figures, average_precision), offsetof(ds_eval_figures, f1_max),
                                      offsetof(ds_eval_figures, pixel_auroc), offsetof(ds_eval_figures, aupro)};
        ds_sb_puts(b, "<h2>Cross-validation</h2><table id=\"cv\"><tr><th>Method</th><th>Folds</th>");
        for (int q = 0; q < 5; q++) ds_sb_printf(b, "<th>%s</th>", names[q]);
        ds_sb_puts(b, "</tr>");
        for (int k = 0; k < r->n_scorers; k++) {
            if (!r->n_folds[k]) continue;
            ds_sb_puts(b, "<tr><td>");
            ds_sb_html(b, r->sc_name[k]);
            ds_sb_printf(b, "</td><td>%d</td>", r->n_folds[k]);
            for (int q = 0; q < 5; q++) {
                double m, s;
                ds_report_fold_stat(r, k, offs[q], &m, &s, NULL);
                if (isfinite(m)) ds_sb_printf(b, "<td>%.4f &plusmn; %.4f</td>", m, s);
                else ds_sb_puts(b, "<td>&ndash;</td>");
            }
            ds_sb_puts(b, "</tr>");
        }
        ds_sb_puts(b, "</table><p class=\"note\">Mean &plusmn; standard deviation (ddof = 0) over the folds.</p>");
    }
    return DS_OK;
}

static void timing(const ds_report *r, ds_sb *b) {
    ds_sb_puts(b, "<h2>Timing per image</h2><table id=\"timing\"><tr><th>Stage</th><th>Median ms</th><th>Mean ms</th></tr>");
    ds_report_stat s = ds_report_stage_ms(r, 0, 0);
    ds_sb_printf(b, "<tr><td>preprocessing (decode, stain normalisation, resize, normalise)</td><td>%.2f</td><td>%.2f</td></tr>",
                 s.median, s.mean);
    s = ds_report_stage_ms(r, 1, 0);
    ds_sb_printf(b, "<tr><td>backbone</td><td>%.2f</td><td>%.2f</td></tr>", s.median, s.mean);
    for (int k = 0; k < r->n_scorers; k++) {
        s = ds_report_stage_ms(r, 2, k);
        ds_sb_puts(b, "<tr><td>scoring: ");
        ds_sb_html(b, r->sc_name[k]);
        ds_sb_printf(b, "</td><td>%.3f</td><td>%.3f</td></tr>", s.median, s.mean);
    }
    s = ds_report_stage_ms(r, 3, 0);
    if (s.mean > 0)
        ds_sb_printf(b, "<tr><td>anomaly map at the original size</td><td>%.2f</td><td>%.2f</td></tr>", s.median, s.mean);
    ds_sb_puts(b, "</table>");
    if (r->peak_rss_bytes > 0 || r->wall_s > 0)
        ds_sb_printf(b, "<p class=\"meta\">Peak resident memory %.0f MB; wall time %.1f s.</p>",
                     (double)r->peak_rss_bytes / (1024.0 * 1024.0), r->wall_s);
}

ds_status ds_report_html(ds_report *r, ds_sb *b) {
    int n_anom = 0, n_masks = 0;
    for (int i = 0; i < r->n; i++) {
        n_anom += r->labels[i];
        n_masks += r->rows[i].mask_path != NULL;
    }
    ds_sb_puts(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>dinoscope evaluation: ");
    ds_sb_html(b, base_name(r->model_path));
    ds_sb_printf(b, "</title><style>%s</style></head><body>\n<h1>dinoscope evaluation</h1>", CSS);
    ds_sb_puts(b, "<p class=\"meta\">Model <code>");
    ds_sb_html(b, r->model_path);
    ds_sb_puts(b, "</code> on <code>");
    ds_sb_html(b, r->data_path);
    ds_sb_printf(b, "</code> (%s layout)</p><p class=\"meta\">Backbone ", r->layout);
    ds_sb_html(b, r->backbone);
    ds_sb_printf(b, " at %dx%d &middot; %d test images: %d normal, %d anomalous, %d with masks &middot; dinoscope %s</p>\n",
                 r->input_size, r->input_size, r->n, r->n - n_anom, n_anom, n_masks, ds_version());
    ds_status st = tables(r, b);
    if (st != DS_OK) return st;
    ds_sb_puts(b, "\n<h2>Curves</h2><div class=\"plots\">");
    if ((st = plot_curves(r, b, 0)) != DS_OK) return st;
    if ((st = plot_curves(r, b, 1)) != DS_OK) return st;
    ds_sb_puts(b, "</div>\n<h2>Score distributions</h2><div class=\"plots\">");
    for (int k = 0; k < r->n_scorers; k++)
        if ((st = plot_hist(r, b, k)) != DS_OK) return st;
    ds_sb_puts(b, "</div>\n");
    gallery(r, b);
    ds_sb_puts(b, "\n");
    timing(r, b);
    if (r->n_notes) {
        ds_sb_puts(b, "<h2>Notes</h2><ul>");
        for (int i = 0; i < r->n_notes; i++) {
            ds_sb_puts(b, "<li>");
            ds_sb_html(b, r->notes[i]);
            ds_sb_puts(b, "</li>");
        }
        ds_sb_puts(b, "</ul>");
    }
    ds_sb_puts(b, "\n</body></html>\n");
    return DS_OK;
}
