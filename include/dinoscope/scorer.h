/* Anomaly scorers over DINOv2 patch features, fitted on normal images only,
 * and the building blocks they share: exact nearest-neighbour search, the
 * greedy k-center coreset and anomaly maps.
 *
 *   ds_scorer_params p = ds_scorer_defaults();            // k=5, coreset 0.1, ...
 *   ds_scorer *s;
 *   // feats [n_images, N, D] f32 of NORMAL images, N patches per image
 *   ds_scorer_fit(DS_SCORER_PATCHBANK, &p, feats, n_images, N, D, &s);
 *   float score, patch[N];
 *   ds_scorer_score(s, feats_of_one_image, N, 0, &score, patch);  // [N,D] -> score, [N]
 *   ds_anomaly_map(patch, gh, gw, 518, DS_ANOMALY_MAP_SIGMA, W, H, map); // [gh,gw] -> [H,W]
 *   ds_scorer_free(s);
 *
 * Saving: a scorer is a kind, a few named scalars (ds_scorer_scalar) and a
 * few named f32 arrays (ds_scorer_array). ds_scorer_from_parts() rebuilds a
 * scorer from them WITHOUT copying the arrays, so they may be views into a
 * memory-mapped model file that outlives the scorer.
 *
 * Distances are float32; every array is row-major and contiguous.
 */
#ifndef DINOSCOPE_SCORER_H
#define DINOSCOPE_SCORER_H

#include "dinoscope.h"

#ifdef __cplusplus
extern "C" {
#endif
DS_API_BEGIN

typedef enum {
    DS_METRIC_L2 = 0,     /* Euclidean distance ||a-b|| (not squared) */
    DS_METRIC_COSINE = 1, /* 1 - a.b; rows must already be L2-normalised */
} ds_metric;

/* Called from the calling thread every so often during long work, and once
 * with done == total at the end. stage names the step ("coreset",
 * "project", ...). Must not call back into the library on the same object. */
typedef void (*ds_progress_fn)(const char *stage, int64_t done, int64_t total, void *user);

/* ---------------------------------------------------------------------------
 * Exact k-nearest-neighbour search.
 *
 * bank:    [M,D] f32, queries: [Q,D] f32.
 * k:       1..M (k > M is DS_ERR_ARG).
 * dist:    [Q,k] output, ascending per query; L2: Euclidean distance (not
 *          squared); COSINE: 1 - a.b of the (caller-normalised) rows, clipped
 *          to [0,2] as sklearn's cosine_distances.
 * idx:     [Q,k] output, bank row of each distance; equal distances are
 *          ordered by bank row. May be NULL.
 * n_threads: 0 = auto; the threads split the bank (OpenMP, BLAS single-threaded).
 * Candidates are ranked with ||b||^2 - 2a.b (L2) or 1 - a.b (cosine) through a
 * blocked GEMM (faiss IndexFlat's decomposition), then the k winners'
 * distances are recomputed directly (sum of squared differences / dot, in
 * double) so that they carry no cancellation error: a query equal to a bank
 * row gets exactly 0. Memory: one packed bank block (~0.5 MiB) and Q*k
 * candidates per thread, never a QxM matrix. A query with NaN/inf features
 * (fewer than k finite distances) is an error.
 * Returns DS_OK, DS_ERR_ARG (bad sizes, k > M, non-finite query), DS_ERR_NOMEM. */
ds_status ds_nn_search(const float *bank, int64_t M, const float *queries, int64_t Q, int D, int k,
                       ds_metric metric, int n_threads, float *dist, int64_t *idx);

/* ---------------------------------------------------------------------------
 * Memory banks in a chosen representation (docs/bank.md has the measured
 * bytes, speed, recall and AUROC of each). One enum for every
 * representation; each is searched over the values it holds:
 *   DS_BANK_F32:   float32, a view of the caller's rows (no copy: they must
 *                  outlive the bank); ds_nn_bank_search = ds_nn_search.
 *   DS_BANK_BF16:  bfloat16 (2 bytes a value), rounded to nearest even. The
 *                  search ranks on bf16 products with fp32 sums (AVX-512
 *                  BF16 where the CPU has it), keeps k + 8 candidates and
 *                  re-ranks them by the exact distance between the f32 query
 *                  and the row's bf16 values. Against an f32 search over the
 *                  unrounded rows, distances differ by the bank's rounding
 *                  (relative 2^-9 per value) and near-ties may swap.
 *   DS_BANK_F16:   IEEE half (2 bytes a value, 2^-11 relative rounding, range
 *                  +-65504: values beyond it become inf), rounded to nearest
 *                  even as numpy's float16.
 *   DS_BANK_INT8:  per row a scale s = max|x| / 127 (f32) and the codes
 *                  c = rint(x / s) in [-127, 127] (round half to even, as
 *                  numpy's rint): D + 4 bytes a row. F16 and INT8 are
 *                  searched exactly over the decoded rows: blocks of rows are
 *                  decoded to f32 and run through ds_nn_search's kernel, and
 *                  the distance is the exact one between the f32 query and the
 *                  decoded row.
 *   DS_BANK_IVFPQ: an inverted file with product quantisation of the residuals
 *                  (Jegou et al., TPAMI 2011; faiss IndexIVFPQ with by_residual):
 *                  nlist coarse k-means centroids, each row stored as its list
 *                  and m one-byte codes of its residual (x - centroid) split into m
 *                  sub-vectors of D/m values, each the index of one of 256
 *                  sub-centroids. A search visits the nprobe lists nearest to the
 *                  query and ranks their rows by asymmetric distance (ADC: the
 *                  f32 query against the decoded row, by table look-ups). It is
 *                  approximate (recall@1 below 1) and does NOT keep the vectors
 *                  for a re-rank: its point is a bank far smaller than f32 (m
 *                  bytes a row), so the re-ranking vectors would defeat it. Rows
 *                  are numbered in list order (the order the model file keeps).
 *                  L2: the distance to the decoded row; cosine: 1 - q.decoded,
 *                  clipped to [0,2] (faiss' METRIC_INNER_PRODUCT over unit
 *                  rows). Training (k-means on at most 256 points per
 *                  centroid, 25 iterations, as faiss' ClusteringParameters) is
 *                  deterministic from the seed.
 * In every representation but IVF-PQ, cosine distances use the decoded row
 * scaled to unit norm (the stored row's direction).
 *
 *   ds_nn_bank *b;
 *   ds_nn_bank_create(rows, M, D, DS_BANK_INT8, &b);
 *   ds_nn_bank_search(b, queries, Q, 1, DS_METRIC_COSINE, 0, dist, idx);
 *   ds_nn_bank_free(b);
 */
typedef enum {
    DS_BANK_F32 = 0,
    DS_BANK_BF16 = 1,
    DS_BANK_F16 = 2,
    DS_BANK_INT8 = 3,
    DS_BANK_IVFPQ = 4,
} ds_bank_repr;

/* IVF-PQ training and search settings (0 = the default). */
typedef struct {
    int nlist;      /* coarse centroids; default round(sqrt(M)) (faiss' guide: a few sqrt(M)),
                       at most M / 4 and 65536 */
    int pq_m;       /* sub-quantisers, must divide D; default the divisor of D nearest D/4
                       (about D bytes a row: 1/16 of f32) */
    int nprobe;     /* lists visited per query; default DS_IVFPQ_NPROBE, at most nlist */
    uint64_t seed;  /* k-means initialisation and training sample */
    int n_threads;  /* training, 0 = auto */
} ds_ivfpq_params;
#define DS_IVFPQ_NPROBE 16
/* All defaults (nprobe DS_IVFPQ_NPROBE, seed 0). */
ds_ivfpq_params ds_ivfpq_defaults(void);

typedef struct ds_nn_bank ds_nn_bank;

/* rows [M, D] f32. ivf: settings of DS_BANK_IVFPQ (NULL = defaults),
 * ignored by the others. Returns DS_OK, DS_ERR_ARG (sizes, unknown repr,
 * pq_m not dividing D, nlist > M, non-finite rows for INT8/IVFPQ, F16 values
 * beyond +-65504), DS_ERR_NOMEM. */
ds_status ds_nn_bank_create(const float *rows, int64_t M, int D, ds_bank_repr repr, ds_nn_bank **out);
ds_status ds_nn_bank_create_ex(const float *rows, int64_t M, int D, ds_bank_repr repr, const ds_ivfpq_params *ivf,
                               ds_nn_bank **out);
void ds_nn_bank_free(ds_nn_bank *bank);
/* Bytes of the representation's own data (rows, scales, codes, centroids,
 * codebooks and list offsets: what the model file stores), M*D*4 for f32. */
size_t ds_nn_bank_bytes(const ds_nn_bank *bank);
ds_bank_repr ds_nn_bank_repr(const ds_nn_bank *bank);
int64_t ds_nn_bank_rows(const ds_nn_bank *bank); /* M */
int ds_nn_bank_dim(const ds_nn_bank *bank);      /* D */
/* IVF-PQ: lists visited per query from now on (1..nlist; larger is clipped
 * to nlist). DS_ERR_ARG for other representations or nprobe < 1. Not
 * thread-safe against a concurrent search of the same bank. */
ds_status ds_nn_bank_set_nprobe(ds_nn_bank *bank, int nprobe);
/* IVF-PQ: the current nprobe and nlist (0, 0 for the others). */
void ds_nn_bank_ivf_info(const ds_nn_bank *bank, int *nprobe, int *nlist);
/* As ds_nn_search (same dist/idx contract) over the bank's values. IVF-PQ:
 * if the nprobe lists hold fewer than k rows, more lists are visited (all of
 * them if need be). */
ds_status ds_nn_bank_search(const ds_nn_bank *bank, const float *queries, int64_t Q, int k, ds_metric metric,
                            int n_threads, float *dist, int64_t *idx);
/* The row of create()'s input that bank row j holds: j, except for IVF-PQ
 * (rows in list order) where it is known only for a bank made by create (-1
 * for one read from a model file, or j out of range). */
int64_t ds_nn_bank_source_row(const ds_nn_bank *bank, int64_t j);
/* Row j decoded to f32 (IVF-PQ: centroid + decoded residual), out [D]. */
ds_status ds_nn_bank_row(const ds_nn_bank *bank, int64_t j, float *out);
/* "f32", "bf16", "f16", "int8", "ivfpq"; and back (DS_ERR_ARG for an unknown name). */
const char *ds_bank_repr_name(ds_bank_repr repr);
ds_status ds_bank_repr_parse(const char *name, ds_bank_repr *repr);

/* ---------------------------------------------------------------------------
 * Greedy k-center coreset (PatchCore, Roth et al. CVPR 2022, Sec. 3.2;
 * Gonzalez 1985's farthest-first traversal).
 *
 * x:        [N,D] f32 points.
 * n_select: 1..N points to select.
 * selected: [n_select] output, point indices in selection order; the first
 *           is the start point (see params.start).
 * Points are optionally L2-normalised, then optionally projected to
 * proj_dim dimensions with a seeded Gaussian matrix N(0, 1/proj_dim)
 * (Johnson-Lindenstrauss, as PatchCore's random linear projection; used for
 * the selection only). Each step picks the unselected point whose Euclidean
 * distance to its nearest selected point is largest, lowest index on ties
 * (so with all remaining distances 0 it takes the lowest unselected index):
 * exactly the naive O(N * n_select * d) loop's choice, but computed with lazy
 * block updates (see src/scorer/coreset.c) that run at GEMM speed instead of
 * streaming all points from memory once per step: 10% of 500k patches of
 * D=384 in about a minute on 2 cores. The result does not depend on n_threads.
 * Memory: N*128 floats (+ N*D/16 transient for the projection).
 * Returns DS_OK, DS_ERR_ARG, DS_ERR_NOMEM. */
typedef struct {
    int proj_dim;          /* 0 = no projection; PatchCore uses 128 */
    int l2_normalize;      /* 1: normalise each row before (projecting and) selecting */
    uint64_t seed;         /* projection matrix and random start */
    int64_t start;         /* first point (selected[0]); -1 = uniform random from seed, as
                              anomalib's KCenterGreedy (which, unlike us, does not return it) */
    int n_threads;         /* 0 = auto */
    ds_progress_fn progress; /* may be NULL */
    void *progress_user;
} ds_coreset_params;

/* proj_dim 128, no normalisation, seed 0, random start, auto threads. */
ds_coreset_params ds_coreset_defaults(void);

ds_status ds_coreset_greedy(const float *x, int64_t N, int D, int64_t n_select, const ds_coreset_params *p,
                            int64_t *selected);

/* ---------------------------------------------------------------------------
 * Row sources: points that are not one array in memory (a feature store on
 * disk, several .npy files, the banks of partial models), read in order in
 * chunks so that only a chunk is resident at a time.
 *
 *   const float *parts[2] = {bank_a, bank_b};
 *   int64_t rows[2] = {n_a, n_b};
 *   ds_row_segments segs = {parts, rows, 2, D};
 *   ds_row_source src = ds_row_source_of_segments(&segs);
 *   ds_coreset_greedy_rows(&src, n_select, &p, selected); // indices into a ++ b
 */
typedef struct {
    int64_t n_rows;
    int dim;
    /* Copies rows [first, first + n) into out [n, dim]. Returns DS_OK (0)
     * or a ds_status error with its message set (the caller propagates it). */
    int (*read)(void *user, int64_t first, int64_t n, float *out);
    void *user;
} ds_row_source;

/* n_segs arrays rows[s] of n[s] rows of dim floats, read as their
 * concatenation. */
typedef struct {
    const float *const *rows;
    const int64_t *n;
    int n_segs;
    int dim;
} ds_row_segments;

/* A source over segs; segs and its arrays must outlive every use of the
 * source. Can't fail (a bad read is reported by read()). */
ds_row_source ds_row_source_of_segments(const ds_row_segments *segs);

/* ds_coreset_greedy over a row source (same selection as over the rows
 * concatenated in memory). Memory: src->n_rows * 128 floats (the packed
 * projections), not the rows. */
ds_status ds_coreset_greedy_rows(const ds_row_source *src, int64_t n_select, const ds_coreset_params *p,
                                 int64_t *selected);

/* Composable k-center coreset: the exact greedy per block, then the greedy
 * again over the union of the blocks' selections (Indyk, Mahabadi, Mahdian,
 * Mirrokni, "Composable core-sets for diversity and coverage maximization",
 * PODS 2014; Malkomes et al., "Fast distributed k-center clustering with
 * outliers on massive data", NeurIPS 2015; Ceccarello, Pietracaprina, Pucci,
 * "Solving k-center clustering (with outliers) in MapReduce and streaming,
 * almost as accurately as sequentially", VLDB 2019). It scales: each
 * greedy instance has at most block_rows points, so time is linear in N and
 * memory is one block plus the union's projections.
 *
 * Definition (tests/fixtures/make_coreset_blocked_fixture.py implements it
 * in numpy). Let N = src->n_rows, k = n_select, B = block_rows,
 * y_i = the prepared point i (optionally L2-normalised, then projected as
 * in ds_coreset_greedy with p->proj_dim and p->seed), and
 * share(S, [a, b), T) = floor(S * b / T) - floor(S * a / T), which sums to
 * S exactly over a partition of [0, T).
 *   level 1: S = min(N, ceil(oversample * k)); block j holds points
 *     [jB, min(N, (j+1)B)) and selects s_j = share(S, block, N) of them by
 *     farthest-first traversal from its first point (all of them, in index
 *     order, when s_j equals the block's size). The union U lists the
 *     blocks' selections block by block, each in selection order.
 *   level 2: U is cut the same way into groups of B consecutive entries;
 *     group g selects share(k, group, |U|) of its points the same way.
 *     With |U| <= B this is one group: the greedy over the whole union.
 * selected: [k] output, the indices (into src) of the level-2 selections,
 *     group by group, each in selection order. Ties: lowest position.
 * Guarantee (the argument of Gonzalez 1985, as in Malkomes et al. Thm 1):
 * each greedy instance run with m centres on a subset of the points has a
 * covering radius of at most 2 OPT_m (OPT_m: the optimal k-center radius of
 * ALL the points with m centres), and radii add across levels, so the
 * returned set covers every point within r_1 + r_2 <= 2 OPT_{s_min} +
 * 2 OPT_{k_min} <= 4 OPT_{min(s_min, k_min)}, s_min and k_min the smallest
 * block and group budgets. With a budget of at least k per block and one
 * group this is the classic 4-approximation of k-center (2 per level). The
 * measured radius against the exact greedy: docs/scale.md.
 * p->start is ignored (each instance starts at its first point); threads as
 * ds_coreset_greedy. The result does not depend on n_threads.
 * Returns DS_OK, DS_ERR_ARG (sizes, block_rows < 2, oversample < 1), a
 * read error, DS_ERR_NOMEM. */
ds_status ds_coreset_blocked(const ds_row_source *src, int64_t n_select, const ds_coreset_params *p,
                             int64_t block_rows, double oversample, int64_t *selected);

/* Method choice for patchbank's coreset (ds_scorer_params.coreset_method). */
typedef enum {
    DS_CORESET_AUTO = 0,    /* exact up to DS_CORESET_AUTO_MAX_EXACT points, else blocked */
    DS_CORESET_EXACT = 1,   /* ds_coreset_greedy */
    DS_CORESET_BLOCKED = 2, /* ds_coreset_blocked */
} ds_coreset_method;

/* The point count above which auto switches to blocked (measured on this
 * project's 2-core machine: docs/scale.md). */
#define DS_CORESET_AUTO_MAX_EXACT ((int64_t)1 << 19)
/* Default block_rows and oversample of the blocked method. */
#define DS_CORESET_DEFAULT_BLOCK ((int64_t)16384)
#define DS_CORESET_DEFAULT_OVERSAMPLE 2.0

/* "auto", "exact", "blocked"; and back (DS_ERR_ARG for an unknown name). */
const char *ds_coreset_method_name(ds_coreset_method m);
ds_status ds_coreset_method_parse(const char *name, ds_coreset_method *m);

/* The method auto resolves to for N points (EXACT or BLOCKED). */
ds_coreset_method ds_coreset_resolve(ds_coreset_method m, int64_t N);

/* ---------------------------------------------------------------------------
 * Anomaly map from a patch-score grid, as PatchCore/anomalib post-process it:
 *   1. bicubic upsample [gh,gw] -> [S,S]: torch F.interpolate(mode='bicubic',
 *      align_corners=False), cubic convolution A = -0.75, edge indices clamped;
 *   2. Gaussian blur, kernel size 2*int(4*sigma+0.5)+1 (anomalib's
 *      GaussianBlur2d), normalised exp(-x^2/(2 sigma^2)) taps, 'reflect'
 *      padding (torch/torchvision; OpenCV BORDER_REFLECT_101), separable;
 *      sigma <= 0 skips it;
 *   3. if (out_w,out_h) != (S,S): bilinear resize as torch F.interpolate(
 *      mode='bilinear', align_corners=False) (= cv2.resize INTER_LINEAR).
 * patch_scores: [gh,gw]; out: [out_h,out_w] caller buffer.
 * Returns DS_OK, DS_ERR_ARG on bad sizes, DS_ERR_NOMEM. */
/* The blur every map uses: sigma 4 as PatchCore (Roth 2022, sec. 3.3) and
 * anomalib's AnomalyMapGenerator. Models record the sigma they were
 * calibrated with (ds_model_info.map_sigma), so that a later change of this
 * default cannot silently shift stored map thresholds. */
#define DS_ANOMALY_MAP_SIGMA 4.0f
ds_status ds_anomaly_map(const float *patch_scores, int gh, int gw, int S, float sigma, int out_w, int out_h,
                         float *out);

/* ---------------------------------------------------------------------------
 * Scorers. */
typedef enum {
    DS_SCORER_KNN = 0,       /* image level: cosine distance of the pooled feature to the
                                k-th nearest normal image */
    DS_SCORER_GAUSSIAN = 1,  /* image level: Mahalanobis distance of the pooled feature */
    DS_SCORER_PATCHBANK = 2, /* patch level: distance to the coreset memory bank; gives maps */
    DS_SCORER_PADIM = 3,     /* patch level: per-position Gaussian over a random channel subset
                                (PaDiM, Defard et al. ICPR 2021); gives maps. Memory: one d x d
                                f32 precision per patch position, N*d*d*4 bytes (d = 100: DINOv2
                                at 518, N = 1369: 55 MB; a CNN at 224, N = 784: 31 MB), plus
                                (n_images + d + 1)*d doubles per thread while fitting */
    DS_SCORER_FLOW = 4,      /* patch level: negative log-likelihood under a conditional normalizing
                                flow (CFlow-AD, Gudovskiy et al. WACV 2022) trained on the normal
                                patches; gives maps. Memory: L blocks of about
                                (H*(d/2+P) + d*H + d*d) floats, 0.2-1 MB at the defaults */
} ds_scorer_kind;

typedef enum {
    DS_REDUCE_MAX = 0,     /* image score = max patch score (PatchCore) */
    DS_REDUCE_TOP1PCT = 1, /* mean of the top 1% patch scores, at least one (AnomalyDINO) */
} ds_reduce;

typedef struct {
    /* knn */
    int k;                  /* k-th nearest normal image, default 5 */
    /* gaussian */
    int max_components;     /* PCA components: min(max_components, n_train-1, D); default 512 */
    /* patchbank */
    double coreset_ratio;   /* (0,1]: fraction of patches kept; 1 = all; default 0.1 */
    int coreset_proj_dim;   /* projection for the selection; default 128, 0 = none */
    ds_coreset_method coreset_method; /* default DS_CORESET_AUTO */
    int64_t coreset_block;  /* blocked: block_rows, 0 = DS_CORESET_DEFAULT_BLOCK (oversample
                               DS_CORESET_DEFAULT_OVERSAMPLE) */
    int patch_k;            /* k-th nearest bank patch, default 1 */
    ds_metric metric;       /* default DS_METRIC_COSINE (on L2-normalised tokens); flow: COSINE
                               L2-normalises the tokens before the whitening, L2 keeps them raw */
    ds_reduce reduce;       /* default DS_REDUCE_MAX */
    uint64_t seed;          /* coreset projection/start and padim's channel subset, default 0 */
    /* knn, patchbank: how the bank is held and searched (ds_bank_repr),
     * default DS_BANK_F32: the scorer keeps (and the model file stores) the
     * representation only, searched as ds_nn_bank_search says. IVFPQ is for
     * the patch bank only (a knn bank of a few hundred images is too small
     * to train it). */
    ds_bank_repr bank_repr;
    int ivf_nlist, pq_m, nprobe; /* DS_BANK_IVFPQ: ds_ivfpq_params (0 = default); the seed is seed */
    /* padim */
    int padim_dim;          /* channels kept: d = min(padim_dim, D), default 100 (PaDiM's d for
                               ResNet18); d = D keeps them all, d < D a seeded random subset */
    /* flow (see DS_SCORER_FLOW and ds_scorer_fit) */
    int flow_dim;           /* PCA-whitened dimensions d = min(flow_dim, D); 0 = D; default 64 */
    int flow_blocks;        /* coupling blocks L, default 8 (CFlow-AD's coupling_blocks) */
    int flow_pos_dim;       /* positional-encoding channels P, a multiple of 4, default 32 */
    int flow_hidden;        /* subnet hidden units H; 0 = 2*(d/2 + P) (CFlow's subnet_fc) */
    int flow_epochs;        /* maximum epochs, default 20 */
    int flow_batch;         /* patches per Adam step, default 256 */
    int64_t flow_epoch_patches; /* patches per epoch, a fresh random subset each epoch; 0 = all;
                               default 65536 */
    double flow_lr;         /* Adam learning rate, default 1e-3 */
    int flow_patience;      /* stop after this many epochs without a better held-out nll, default 2 */
    int grid_w;             /* patch grid width (flow's positions); 0 = sqrt(N), N must be a square */
    /* all */
    int n_threads;          /* 0 = auto */
    ds_progress_fn progress;
    void *progress_user;
} ds_scorer_params;

ds_scorer_params ds_scorer_defaults(void);

typedef struct ds_scorer ds_scorer;

/* Fits a scorer on feats [n_images, N, D] f32 of normal images (N patches
 * each). The scorer owns copies of what it keeps; feats may be freed after.
 * knn needs n_images >= k, gaussian n_images >= 2, patchbank a bank of at
 * least patch_k patches, padim n_images >= 2. patchbank keeps int(coreset_ratio * n_images * N)
 * patches (at least patch_k) chosen by ds_coreset_greedy on the normalised
 * (cosine) or raw (l2) tokens, reporting through params.progress.
 * padim keeps d = min(padim_dim, D) channels (ascending; a subset drawn
 * from seed when d < D) and, per patch position i, the mean [d] of the n
 * training vectors and the inverse of np.cov(rowvar=False) + 0.01 I (PaDiM's
 * regulariser), by Cholesky in double; N*d*d*4 bytes (see DS_SCORER_PADIM).
 * flow (with metric COSINE on L2-normalised tokens) holds out every 10th image (i % 10 == 9; none below 10 images) for
 * early stopping, PCA-whitens the patches of the others to d = flow_dim
 * dimensions (the global Gaussian of the patches, src/scorer/flow.h) and
 * fits L affine coupling blocks conditioned on the patch position by maximum
 * likelihood: Adam, mini-batches of flow_batch patches in a seeded order, at
 * most flow_epochs epochs of flow_epoch_patches patches, keeping the weights of the epoch with the best
 * held-out nll. It reports through params.progress with a stage string that
 * carries the epoch and the losses ("flow epoch 3/20 (nll 1.2345, val ...)").
 * Returns DS_OK, DS_ERR_ARG (bad sizes or params), DS_ERR_NOMEM. */
ds_status ds_scorer_fit(ds_scorer_kind kind, const ds_scorer_params *params, const float *feats, int64_t n_images,
                        int64_t N, int D, ds_scorer **out);
void ds_scorer_free(ds_scorer *s);

/* ds_scorer_fit over a row source of n_images * N rows (image i = rows
 * [i N, (i+1) N)), for features that are not one array in memory (a
 * feature store, several .npy files): each scorer reads them in one or two
 * passes in order, holding one image (knn, gaussian: the pooled features;
 * padim: per-position moments, see DS_SCORER_PADIM) or the coreset's
 * working set (patchbank: ds_coreset_greedy_rows or ds_coreset_blocked by
 * params.coreset_method; then the bank rows in increasing order); flow
 * reads them all into memory (it samples patches across epochs).
 * Same results as ds_scorer_fit on the rows concatenated.
 * Returns as ds_scorer_fit, or the source's read error. */
ds_status ds_scorer_fit_rows(ds_scorer_kind kind, const ds_scorer_params *params, const ds_row_source *src,
                             int64_t n_images, int64_t N, ds_scorer **out);

/* The bank rows patchbank keeps of n_patches training patches:
 * int(coreset_ratio * n_patches) (all at ratio 1), at least patch_k. */
int64_t ds_patchbank_n_keep(const ds_scorer_params *p, int64_t n_patches);

/* Scores one image: feats [N,D] (same D as fitted; N may differ from fit,
 * except for padim: DS_ERR_SHAPE).
 * image_score: one float. patch_scores: [N] output for the patch-level
 * scorers (ds_scorer_has_patch_scores; may be NULL); ignored by the others.
 * Scores grow with abnormality:
 *   knn:       1 - cos to the k-th nearest normal image (sklearn
 *              NearestNeighbors(metric='cosine').kneighbors distance);
 *   gaussian:  sqrt((z-mu)' P (z-mu)), z the PCA projection, P the Ledoit-Wolf
 *              precision: the square root of sklearn's LedoitWolf.mahalanobis();
 *   patchbank: per patch the metric's distance to the patch_k-th nearest bank
 *              patch; image score by params.reduce;
 *   padim:     per patch sqrt((x-mu_i)' P_i (x-mu_i)) over the kept channels
 *              (scipy.spatial.distance.mahalanobis, as PaDiM); image score =
 *              the max patch score;
 *   flow:      per patch the negative log-likelihood per dimension (nats) of
 *              its whitened feature under the flow, conditioned on its
 *              position (N must be the fit's grid); image score by
 *              params.reduce.
 * n_threads: for the nearest-neighbour search (0 = auto).
 * The scorer is not modified: several threads may score with one scorer.
 * Returns DS_OK, DS_ERR_ARG/DS_ERR_SHAPE, DS_ERR_NOMEM. */
ds_status ds_scorer_score(const ds_scorer *s, const float *feats, int64_t N, int n_threads, float *image_score,
                          float *patch_scores);

ds_scorer_kind ds_scorer_get_kind(const ds_scorer *s);
int ds_scorer_get_dim(const ds_scorer *s);  /* D */
/* 1 if ds_scorer_score fills patch_scores (patchbank, padim, flow: the kinds
 * that give maps), else 0 (also for NULL). */
int ds_scorer_has_patch_scores(const ds_scorer *s);
const char *ds_scorer_kind_name(ds_scorer_kind kind); /* "knn", "gaussian", "patchbank", "padim", "flow" */
/* "knn" etc. -> kind; DS_ERR_ARG for an unknown name. */
ds_status ds_scorer_kind_parse(const char *name, ds_scorer_kind *kind);

/* --- Serialisation: named parts. */
typedef enum {
    DS_ARRAY_F32 = 0,
    DS_ARRAY_I8 = 1,   /* int8 bank codes */
    DS_ARRAY_U8 = 2,   /* IVF-PQ codes */
    DS_ARRAY_U16 = 3,  /* bf16 or f16 bit patterns */
    DS_ARRAY_I64 = 4,  /* IVF list offsets */
} ds_array_dtype;

typedef struct {
    const char *name;   /* e.g. "bank"; static string */
    int n_dims;         /* 1 or 2 */
    int64_t shape[2];
    const void *data;   /* shape[0] (* shape[1]) elements of dtype */
    ds_array_dtype dtype; /* DS_ARRAY_F32 for everything but the compact banks */
} ds_scorer_array;
/* Bytes of one element of dtype (0 for an unknown one). */
size_t ds_array_dtype_size(ds_array_dtype dtype);

typedef struct {
    const char *name;   /* e.g. "k"; static string */
    double value;       /* integers and enums are stored exactly */
} ds_scorer_scalar;

/* Number of arrays / scalars; ds_scorer_get_* fill item i (0-based) and
 * return DS_ERR_ARG for i out of range. The pointers stay valid while the
 * scorer lives.
 *   knn:       arrays "bank" [n_train,D] (pooled, L2-normalised);
 *              scalars "k", "n_train"
 *   gaussian:  arrays "mean" [D], "components" [c,D], "location" [c],
 *              "precision" [c,c]; scalars "n_components", "shrinkage", "n_train"
 *   patchbank: arrays "bank" [M,D] (L2-normalised for cosine); scalars
 *              "patch_k", "metric" (ds_metric), "reduce" (ds_reduce),
 *              "coreset_ratio", "n_train_patches"
 *   knn and patchbank also "bank_repr" (ds_bank_repr), only when it is
 *              not DS_BANK_F32 (absent: f32), and then the bank arrays are:
 *              bf16: "bank" [M,D] u16 (bf16 bits; files before the u16 form
 *              hold f32 values already rounded to bf16: still read); f16:
 *              "bank" [M,D] u16; int8: "bank" [M,D] i8 and "bank_scale" [M]
 *              f32; ivfpq: "ivf_centroids" [nlist,D] f32, "pq_codebook"
 *              [m,ksub*D/m] f32 (ksub = min(256, rows trained on); sub-quantiser
 *              i's centroid c at [i][c*D/m ..]), "pq_codes" [M,m] u8 (rows in list order),
 *              "ivf_offsets" [nlist+1] i64 (list l = rows offsets[l] ..
 *              offsets[l+1]-1) and scalar "nprobe"
 *   padim:     arrays "channels" [d] (ascending feature indices, exact in
 *              f32), "mean" [N,d], "precision" [N,d*d] (row i: position i's
 *              d x d precision, row-major); scalars "dim" (D), "n_train"
 *   flow:      arrays "mean" [D], "proj" [d,D] (whitening), "w1" [L,H*(d/2+P)],
 *              "b1" [L,H], "w2" [L,2*(d-d/2)*H], "b2" [L,2*(d-d/2)],
 *              "mix" [L,d*d] (each block's orthogonal Q), "curve" [E+1,2]
 *              (train, held-out nll before training and after each epoch);
 *              scalars "pos_dim", "grid_h", "grid_w", "clamp", "reduce", "metric",
 *              and the training summary "n_train_patches", "epochs",
 *              "best_epoch", "train_nll", "val_nll", "max_epochs", "batch",
 *              "lr", "patience", "epoch_patches"
 * D comes from the array shapes (padim: the "dim" scalar). "n_train*", "shrinkage", "coreset_ratio"
 * and flow's "curve" and training summary are informative and "n_components" must match the arrays:
 * all optional when rebuilding; the others are required. */
int ds_scorer_n_arrays(const ds_scorer *s);
int ds_scorer_n_scalars(const ds_scorer *s);
ds_status ds_scorer_get_array(const ds_scorer *s, int i, ds_scorer_array *out);
ds_status ds_scorer_get_scalar(const ds_scorer *s, int i, ds_scorer_scalar *out);

/* Rebuilds a scorer from the parts above (any order, matched by name). The
 * array data is NOT copied: it must stay valid and unchanged until
 * ds_scorer_free(); float (4-byte) alignment is enough. Every required part must be present with consistent
 * shapes; unknown names are DS_ERR_FORMAT (a newer writer), as are
 * non-integral or out-of-range scalars.
 * Returns DS_OK, DS_ERR_FORMAT naming the part, DS_ERR_NOMEM. */
ds_status ds_scorer_from_parts(ds_scorer_kind kind, const ds_scorer_scalar *scalars, int n_scalars,
                               const ds_scorer_array *arrays, int n_arrays, ds_scorer **out);

/* The fit parameters of a fitted scorer as far as its stored scalars tell
 * (src/scorer/params.c), to refit it the same way on other images (eval's
 * cross-validation): knn k; gaussian max_components = the components it
 * kept; patchbank patch_k, metric, reduce, coreset_ratio; padim padim_dim
 * = its channel count; flow its dimensions, blocks, positions, hidden
 * units, reduce and the stored training settings. Everything not
 * stored (seed, coreset_proj_dim, threads, progress) is ds_scorer_defaults().
 * Returns DS_OK, DS_ERR_ARG (NULL), DS_ERR_FORMAT (a scalar out of range). */
ds_status ds_scorer_params_of(const ds_scorer *s, ds_scorer_params *out);

/* The bank of a knn or patchbank scorer (its representation, bytes, nprobe),
 * NULL for the other kinds. Valid while the scorer lives. */
const ds_nn_bank *ds_scorer_bank(const ds_scorer *s);
/* knn/patchbank over an IVF-PQ bank: visit nprobe lists per query from now
 * on (overrides the stored "nprobe" for this scorer object, not the file).
 * DS_ERR_ARG for other scorers or representations, or nprobe < 1. */
ds_status ds_scorer_set_nprobe(ds_scorer *s, int nprobe);

DS_API_END
#ifdef __cplusplus
}
#endif
#endif
