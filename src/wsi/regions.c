/* Anomalous regions of a heatmap as polygons, without holding the heatmap.
 *
 * Labelling: rows arrive one at a time; each run of anomalous cells is
 * joined to the runs it touches in the previous row (4-connectivity) by
 * union-find, the classic run-based two-pass labelling (Rosenfeld & Pfaltz
 * 1966; He et al., IEEE TIP 2009) with the second pass reduced to merging
 * per-label statistics. Labels are created in raster order and a set's root
 * is its smallest label, so each component's root is its raster-first run.
 *
 * Outlines: crack following on the cell edges (the boundary between
 * anomalous cells and the rest), with the anomalous cells on the right of
 * the direction of travel; at a vertex the trace turns right if the cell
 * ahead-right is not anomalous, goes straight if only the ahead-left one is
 * not, and turns left otherwise. Turning right first keeps diagonal
 * neighbours apart, matching the 4-connected labelling. Outer rings come out
 * clockwise on screen (positive shoelace area with y down), holes
 * anticlockwise. Scanning top edges in raster order meets each component's
 * outer ring first at its raster-first cell, so outer rings and components
 * pair up in order; a hole belongs to the smallest outer ring that contains
 * the centre of the cell it was started from.
 *
 * Diagonal contacts make a ring touch itself at a vertex (OGC-invalid but
 * read by QuPath/JTS as drawn). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"
#include "wsi/wsi_internal.h"

typedef struct {
    int x0, x1;  /* [x0, x1) */
    int64_t label;
} run_t;

typedef struct {
    float max;
    double sum;
    int64_t count;
    int fx, fy; /* first cell (start of the run that created the label) */
} stats_t;

typedef struct {
    int32_t *v; /* X, Y pairs of corner vertices */
    int64_t n, cap;
    int64_t area2; /* twice the signed area in cell units */
    int sx, sy;    /* start cell */
    int32_t minx, miny, maxx, maxy;
} ring_t;

struct ds_regions {
    int W, H;
    size_t words; /* per row */
    uint64_t *bits;
    int next_y;
    run_t *prev, *cur;
    int n_prev, n_cur;
    int64_t *parent;
    stats_t *stats;
    int64_t n_labels, cap_labels;
};

static inline int cell(const ds_regions *r, int x, int y) {
    if (x < 0 || y < 0 || x >= r->W || y >= r->H) return 0;
    return (int)((r->bits[(size_t)y * r->words + (size_t)(x >> 6)] >> (x & 63)) & 1);
}

int ds_regions_cell(const ds_regions *r, int x, int y) { return cell(r, x, y); }

ds_status ds_regions_create(int width, int height, ds_regions **out) {
    if (width < 1 || height < 1) return ds_set_error(DS_ERR_ARG, "ds_regions_create: bad size %dx%d", width, height);
    ds_regions *r = calloc(1, sizeof *r);
    if (!r) return ds_set_error(DS_ERR_NOMEM, "out of memory");
    r->W = width;
    r->H = height;
    r->words = ((size_t)width + 63) / 64;
    r->bits = ds_calloc(r->words * (size_t)height, sizeof(uint64_t), "anomaly bitmap");
    r->prev = malloc(sizeof(run_t) * ((size_t)width / 2 + 1));
    r->cur = malloc(sizeof(run_t) * ((size_t)width / 2 + 1));
    if (!r->bits || !r->prev || !r->cur) {
        ds_regions_free(r);
        return ds_set_error(DS_ERR_NOMEM, "ds_regions_create: out of memory");
    }
    *out = r;
    return DS_OK;
}

void ds_regions_free(ds_regions *r) {
    if (!r) return;
    DS_FREE_ALL(r->bits, r->prev, r->cur, r->parent, r->stats, r);
}

static int64_t find(int64_t *parent, int64_t a) {
    int64_t root = a;
    while (parent[root] != root) root = parent[root];
    while (parent[a] != root) { /* path compression */
        int64_t next = parent[a];
        parent[a] = root;
        a = next;
    }
    return root;
}

static int64_t unite(int64_t *parent, int64_t a, int64_t b) {
    a = find(parent, a);
    b = find(parent, b);
    if (a < b) {
        parent[b] = a;
        return a;
    }
    parent[a] = b;
    return b;
}

static ds_status new_label(ds_regions *r, int x, int y, int64_t *out) {
    if (r->n_labels == r->cap_labels) {
        int64_t cap = r->cap_labels ? 2 * r->cap_labels : 256;
        int64_t *p = realloc(r->parent, sizeof(int64_t) * (size_t)cap);
        if (p) r->parent = p;
        stats_t *s = p ? realloc(r->stats, sizeof(stats_t) * (size_t)cap) : NULL;
        if (!p || !s) return ds_set_error(DS_ERR_NOMEM, "anomalous regions: out of memory (%lld labels)", (long long)cap);
        r->stats = s;
        r->cap_labels = cap;
    }
    int64_t l = r->n_labels++;
    r->parent[l] = l;
    r->stats[l] = (stats_t){.max = -INFINITY, .sum = 0, .count = 0, .fx = x, .fy = y};
    *out = l;
    return DS_OK;
}

ds_status ds_regions_add_row(ds_regions *r, int y, const uint8_t *anomalous, const float *values) {
    DS_ASSERT(y == r->next_y && y < r->H);
    r->next_y++;
    uint64_t *row = r->bits + (size_t)y * r->words;
    r->n_cur = 0;
    int j = 0; /* first previous-row run that may still overlap */
    for (int x = 0; x < r->W;) {
        if (!anomalous[x]) {
            x++;
            continue;
        }
        int x0 = x;
        float mx = -INFINITY;
        double sum = 0;
        while (x < r->W && anomalous[x]) {
            row[x >> 6] |= (uint64_t)1 << (x & 63);
            mx = values[x] > mx ? values[x] : mx;
            sum += values[x];
            x++;
        }
        int64_t label = -1;
        while (j < r->n_prev && r->prev[j].x1 <= x0) j++;
        /* previous runs overlapping [x0, x) share at least one column */
        for (int k = j; k < r->n_prev && r->prev[k].x0 < x; k++)
            label = label < 0 ? find(r->parent, r->prev[k].label) : unite(r->parent, label, r->prev[k].label);
        if (label < 0) {
            ds_status st = new_label(r, x0, y, &label);
            if (st != DS_OK) return st;
        }
        stats_t *s = &r->stats[label];
        s->max = mx > s->max ? mx : s->max;
        s->sum += sum;
        s->count += x - x0;
        r->cur[r->n_cur++] = (run_t){x0, x, label};
    }
    run_t *t = r->prev;
    r->prev = r->cur;
    r->cur = t;
    r->n_prev = r->n_cur;
    return DS_OK;
}

/* ---- tracing ---------------------------------------------------------- */

enum { DIR_E = 0, DIR_S = 1, DIR_W = 2, DIR_N = 3 };
static const int DX[4] = {1, 0, -1, 0}, DY[4] = {0, 1, 0, -1};

typedef struct {
    uint64_t *h; /* used horizontal edges: line Y (0..H), cell x: index Y*W + x */
    uint64_t *v; /* used vertical edges: line X (0..W), row y: index y*(W+1) + X */
} used_t;

static inline int test_bit(const uint64_t *b, size_t i) { return (int)((b[i >> 6] >> (i & 63)) & 1); }
static inline void set_bit(uint64_t *b, size_t i) { b[i >> 6] |= (uint64_t)1 << (i & 63); }

static void mark_edge(const ds_regions *r, used_t *u, int X, int Y, int d) {
    switch (d) {
    case DIR_E: set_bit(u->h, (size_t)Y * r->W + X); break;          /* (X,Y)->(X+1,Y) */
    case DIR_W: set_bit(u->h, (size_t)Y * r->W + (X - 1)); break;    /* (X,Y)->(X-1,Y) */
    case DIR_S: set_bit(u->v, (size_t)Y * (r->W + 1) + X); break;    /* (X,Y)->(X,Y+1) */
    default: set_bit(u->v, (size_t)(Y - 1) * (r->W + 1) + X); break; /* (X,Y)->(X,Y-1) */
    }
}

static ds_status ring_push(ring_t *g, int X, int Y) {
    if (g->n == g->cap) {
        int64_t cap = g->cap ? 2 * g->cap : 16;
        int32_t *v = realloc(g->v, sizeof(int32_t) * 2 * (size_t)cap);
        if (!v) return ds_set_error(DS_ERR_NOMEM, "anomalous regions: out of memory");
        g->v = v;
        g->cap = cap;
    }
    g->v[2 * g->n] = X;
    g->v[2 * g->n + 1] = Y;
    g->n++;
    return DS_OK;
}

/* Traces the ring whose first edge is the top edge of cell (x, y), going E. */
static ds_status trace(const ds_regions *r, used_t *u, int x, int y, ring_t *g) {
    memset(g, 0, sizeof *g);
    g->sx = x;
    g->sy = y;
    int X = x, Y = y, d = DIR_E;
    ds_status st = ring_push(g, X, Y);
    for (;;) {
        if (st != DS_OK) return st;
        mark_edge(r, u, X, Y, d);
        X += DX[d];
        Y += DY[d];
        /* cells around vertex (X,Y): NW (X-1,Y-1), NE (X,Y-1), SW (X-1,Y), SE (X,Y) */
        int nw = cell(r, X - 1, Y - 1), ne = cell(r, X, Y - 1), sw = cell(r, X - 1, Y), se = cell(r, X, Y);
        int ar, al;
        switch (d) {
        case DIR_E: ar = se, al = ne; break;
        case DIR_S: ar = sw, al = se; break;
        case DIR_W: ar = nw, al = sw; break;
        default: ar = ne, al = nw; break;
        }
        int nd = !ar ? (d + 1) & 3 : !al ? d : (d + 3) & 3;
        if (X == x && Y == y && nd == DIR_E) break;
        if (nd != d) st = ring_push(g, X, Y);
        d = nd;
    }
    int64_t a2 = 0;
    g->minx = g->maxx = g->v[0];
    g->miny = g->maxy = g->v[1];
    for (int64_t i = 0; i < g->n; i++) {
        int64_t j = (i + 1) % g->n;
        a2 += (int64_t)g->v[2 * i] * g->v[2 * j + 1] - (int64_t)g->v[2 * j] * g->v[2 * i + 1];
        g->minx = DS_MIN(g->minx, g->v[2 * i]);
        g->maxx = DS_MAX(g->maxx, g->v[2 * i]);
        g->miny = DS_MIN(g->miny, g->v[2 * i + 1]);
        g->maxy = DS_MAX(g->maxy, g->v[2 * i + 1]);
    }
    g->area2 = a2;
    return DS_OK;
}

/* Even-odd test of (px, py) (never on a cell edge) against ring g. */
static int ring_contains(const ring_t *g, double px, double py) {
    int in = 0;
    for (int64_t i = 0; i < g->n; i++) {
        int64_t j = (i + 1) % g->n;
        int32_t x0 = g->v[2 * i], y0 = g->v[2 * i + 1], x1 = g->v[2 * j], y1 = g->v[2 * j + 1];
        if (x0 != x1) continue; /* horizontal edges never cross the ray y = py */
        if ((py > y0) != (py > y1) && px < x0) in = !in;
    }
    return in;
}

static void put_xy(FILE *fp, const ds_regions_geo *geo, int32_t X, int32_t Y) {
    double x = DS_MIN((double)X * geo->sx, geo->max_x), y = DS_MIN((double)Y * geo->sy, geo->max_y);
    fprintf(fp, "[%.10g, %.10g]", x, y);
}

/* Twice the signed area of g in output units after clamping. */
static double ring_area2_out(const ring_t *g, const ds_regions_geo *geo) {
    double a = 0;
    for (int64_t i = 0; i < g->n; i++) {
        int64_t j = (i + 1) % g->n;
        double xi = DS_MIN(g->v[2 * i] * geo->sx, geo->max_x), yi = DS_MIN(g->v[2 * i + 1] * geo->sy, geo->max_y);
        double xj = DS_MIN(g->v[2 * j] * geo->sx, geo->max_x), yj = DS_MIN(g->v[2 * j + 1] * geo->sy, geo->max_y);
        a += xi * yj - xj * yi;
    }
    return a;
}

static void put_ring(FILE *fp, const ds_regions_geo *geo, const ring_t *g) {
    fputs("[", fp);
    for (int64_t i = 0; i <= g->n; i++) { /* closed: first vertex repeated */
        int64_t k = i % g->n;
        if (i) fputs(", ", fp);
        put_xy(fp, geo, g->v[2 * k], g->v[2 * k + 1]);
    }
    fputs("]", fp);
}

ds_status ds_regions_write_geojson(ds_regions *r, const ds_regions_geo *geo, FILE *fp, int *n_features) {
    DS_ASSERT(r->next_y == r->H);
    ds_status st = DS_OK;
    /* second pass of the labelling: statistics onto the roots */
    int64_t n_comp = 0;
    for (int64_t l = 0; l < r->n_labels; l++) {
        int64_t root = find(r->parent, l);
        if (root == l) {
            n_comp++;
            continue;
        }
        stats_t *a = &r->stats[root], *b = &r->stats[l];
        a->max = b->max > a->max ? b->max : a->max;
        a->sum += b->sum;
        a->count += b->count;
    }
    used_t u = {0};
    ring_t *outer = NULL, *holes = NULL;
    int64_t n_outer = 0, n_holes = 0, cap_holes = 0;
    int64_t *hole_owner = NULL, *comp_of = NULL;
    size_t nh = (size_t)(r->H + 1) * r->W, nv = (size_t)(r->W + 1) * r->H;
    u.h = ds_calloc((nh + 63) / 64, sizeof(uint64_t), "anomalous regions");
    u.v = ds_calloc((nv + 63) / 64, sizeof(uint64_t), "anomalous regions");
    outer = calloc((size_t)DS_MAX(n_comp, 1), sizeof(ring_t));
    comp_of = malloc(sizeof(int64_t) * (size_t)DS_MAX(n_comp, 1));
    if (!u.h || !u.v || !outer || !comp_of) {
        st = ds_set_error(DS_ERR_NOMEM, "anomalous regions: out of memory");
        goto done;
    }
    /* roots in label order = components in raster order of their first cell */
    for (int64_t l = 0, k = 0; l < r->n_labels; l++)
        if (r->parent[l] == l) comp_of[k++] = l;
    for (int y = 0; y < r->H && st == DS_OK; y++) {
        const uint64_t *row = r->bits + (size_t)y * r->words;
        for (size_t wi = 0; wi < r->words && st == DS_OK; wi++) {
            uint64_t word = row[wi];
            while (word && st == DS_OK) {
                int x = (int)(wi * 64) + __builtin_ctzll(word);
                word &= word - 1;
                if (cell(r, x, y - 1) || test_bit(u.h, (size_t)y * r->W + x)) continue;
                ring_t g;
                st = trace(r, &u, x, y, &g);
                if (st != DS_OK) {
                    free(g.v);
                    break;
                }
                if (g.area2 > 0) {
                    if (n_outer >= n_comp || r->stats[comp_of[n_outer]].fx != x || r->stats[comp_of[n_outer]].fy != y) {
                        free(g.v);
                        st = ds_set_error(DS_ERR_ARG, "anomalous regions: outline %lld does not match its component "
                                                      "(internal error)", (long long)n_outer);
                        break;
                    }
                    outer[n_outer++] = g;
                } else {
                    if (n_holes == cap_holes) {
                        int64_t cap = cap_holes ? 2 * cap_holes : 16;
                        ring_t *h = realloc(holes, sizeof(ring_t) * (size_t)cap);
                        if (!h) {
                            free(g.v);
                            st = ds_set_error(DS_ERR_NOMEM, "anomalous regions: out of memory");
                            break;
                        }
                        holes = h;
                        cap_holes = cap;
                    }
                    holes[n_holes++] = g;
                }
            }
        }
    }
    if (st == DS_OK && n_outer != n_comp)
        st = ds_set_error(DS_ERR_ARG, "anomalous regions: %lld outlines for %lld components (internal error)",
                          (long long)n_outer, (long long)n_comp);
    if (st != DS_OK) goto done;
    hole_owner = malloc(sizeof(int64_t) * (size_t)DS_MAX(n_holes, 1));
    if (!hole_owner) {
        st = ds_set_error(DS_ERR_NOMEM, "anomalous regions: out of memory");
        goto done;
    }
    for (int64_t h = 0; h < n_holes; h++) {
        double px = holes[h].sx + 0.5, py = holes[h].sy + 0.5;
        int64_t best = -1;
        for (int64_t k = 0; k < n_outer; k++) {
            const ring_t *g = &outer[k];
            if (px < g->minx || px > g->maxx || py < g->miny || py > g->maxy) continue;
            if (best >= 0 && g->area2 >= outer[best].area2) continue;
            if (ring_contains(g, px, py)) best = k;
        }
        hole_owner[h] = best; /* -1 cannot happen for a hole ring; it is then dropped */
    }
    fputs("{\"type\": \"FeatureCollection\", \"features\": [", fp);
    for (int64_t k = 0; k < n_outer; k++) {
        const stats_t *s = &r->stats[comp_of[k]];
        double area = ring_area2_out(&outer[k], geo);
        fprintf(fp, "%s\n{\"type\": \"Feature\", \"geometry\": {\"type\": \"Polygon\", \"coordinates\": [", k ? "," : "");
        put_ring(fp, geo, &outer[k]);
        for (int64_t h = 0; h < n_holes; h++) {
            if (hole_owner[h] != k) continue;
            fputs(", ", fp);
            put_ring(fp, geo, &holes[h]);
            area += ring_area2_out(&holes[h], geo); /* negative */
        }
        area *= 0.5;
        fprintf(fp,
                "]}, \"properties\": {\"objectType\": \"annotation\", \"name\": \"Anomaly %lld\", "
                "\"classification\": {\"name\": \"Anomaly\", \"color\": [255, 0, 0]}, \"isLocked\": false, "
                "\"measurements\": {\"Max score\": %.9g, \"Mean score\": %.9g, \"Area px^2\": %.10g",
                (long long)k + 1, s->max, s->sum / (double)s->count, area);
        if (geo->mpp_x_um > 0 && geo->mpp_y_um > 0)
            fprintf(fp, ", \"Area \xc2\xb5m^2\": %.10g", area * geo->mpp_x_um * geo->mpp_y_um);
        fputs("}}}", fp);
    }
    fputs("\n]}\n", fp);
    if (ferror(fp)) st = ds_set_error(DS_ERR_IO, "anomalous regions: write failed");
    *n_features = (int)n_outer;
done:
    for (int64_t k = 0; k < n_outer; k++) free(outer[k].v);
    for (int64_t h = 0; h < n_holes; h++) free(holes[h].v);
    DS_FREE_ALL(outer, holes, hole_owner, comp_of, u.h, u.v);
    return st;
}
