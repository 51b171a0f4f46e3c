"""dinoscope: anomaly detection in medical images with frozen DINOv2 features.

A thin layer over the C library (libdinoscope.so, through ctypes): the same
preprocessing, backbones, scorers, model files and metrics as the
`dinoscope` command line tool, so scores agree with it exactly.

    import dinoscope
    bb = dinoscope.Backbone("dinov2_vits14.safetensors", threads=4)
    model = dinoscope.fit(bb, "data/train/good", scorers=("knn", "patchbank"))
    model.save("model.dsm")
    out = model.score(["a.png", "b.png"])       # out["scores"]["patchbank"], out["maps"][i]
    dinoscope.evaluate(model, "data/labels.csv")["scorers"][0]["image_auroc"]

Images are paths (files, folders, a labels.csv) or numpy arrays: uint8 or
float in [0, 1], [H, W] (grey) or [H, W, 3] (RGB); a 4-d array is a batch.
uint8 C-contiguous arrays are used in place, without a copy. Errors raise
dinoscope.Error with the library's message.
"""
import ctypes
import json
import os
from ctypes import POINTER, byref, c_char_p, c_float, c_int, c_uint8, c_void_p

import numpy as np

from ._lib import MAX_SCORERS, PIPELINE_SINK, SKIP_FN, BackboneParams, Image, ImageList, ReportImage, ReportParams, lib, libc

__all__ = ["Error", "Backbone", "Model", "fit", "load", "evaluate", "imread", "version", "SCORERS"]
__version__ = lib.ds_version().decode()
SCORERS = ("knn", "gaussian", "patchbank", "padim", "flow")
_METRICS = {"l2": 0, "cosine": 1}
_REDUCE = {"max": 0, "top1pct": 1}
_STAIN = {"none": 0, "clahe": 1}


class Error(RuntimeError):
    """A failed library call: .status is the ds_status code (negative),
    the message is ds_last_error()'s text."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _check(status):
    if status != 0:
        raise Error(status, lib.ds_last_error().decode(errors="replace"))


def version():
    return __version__


_check(lib.ds_image_init())


def _enc(s):
    return os.fsencode(s)


# ---- inputs -------------------------------------------------------------------

def _expand(args, recursive=False):
    """Paths, folders or labels.csv files -> (paths, labels, splits, masks) via ds_image_list_expand."""
    arr = (c_char_p * len(args))(*[_enc(a) for a in args])
    lst = POINTER(ImageList)()
    _check(lib.ds_image_list_expand(arr, len(args), int(recursive), byref(lst)))
    try:
        L = lst.contents
        dec = lambda p: os.fsdecode(p) if p is not None else None  # noqa: E731
        paths = [dec(L.paths[i]) for i in range(L.n)]
        labels = [L.labels[i] for i in range(L.n)] if L.labels else [-1] * L.n
        splits = [dec(L.splits[i]) for i in range(L.n)] if L.splits else [None] * L.n
        masks = [dec(L.masks[i]) for i in range(L.n)] if L.masks else [None] * L.n
    finally:
        lib.ds_image_list_free(lst)
    return paths, labels, splits, masks


def _as_u8(a):
    """One image array -> a C-contiguous uint8 [H, W] or [H, W, 3] (the same array when it already is one)."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3) or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError("dinoscope: an image array must be [H, W] or [H, W, 3], got shape %s" % (a.shape,))
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise ValueError("dinoscope: a float image has NaN or infinite values")
        return np.ascontiguousarray(np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8))
    raise ValueError("dinoscope: image arrays must be uint8 or float in [0, 1], got %s" % a.dtype)


def imread(path):
    """An image file decoded as the library decodes its inputs (libvips: 8-bit RGB, alpha on white, EXIF
    orientation, >8-bit windowed at the 0.5/99.5 percentiles): uint8 [H, W, 3]."""
    img = POINTER(Image)()
    _check(lib.ds_image_load(_enc(path), None, byref(img)))
    try:
        im = img.contents
        return np.ctypeslib.as_array(im.pixels, shape=(im.height, im.width, im.channels)).copy()
    finally:
        lib.ds_image_free(img)


class _Inputs:
    """Images for ds_pipeline_run: paths[n] or ds_image views of arrays[n] (kept alive here)."""

    def __init__(self, images, recursive=False, keep_normal_training=False):
        self.labels = self.splits = self.masks = None
        self.paths = None
        self.arrays = None
        if isinstance(images, (str, bytes, os.PathLike)):
            images = [images]
        elif isinstance(images, np.ndarray):
            images = list(images) if images.ndim == 4 else [images]
        images = list(images)
        if not images:
            raise ValueError("dinoscope: no images given")
        if all(isinstance(x, (str, bytes, os.PathLike)) for x in images):
            paths, labels, splits, masks = _expand([os.fspath(x) for x in images], recursive)
            if keep_normal_training:  # as `dinoscope fit`: labels.csv rows with split=train (or none), label <= 0
                keep = [i for i in range(len(paths)) if (splits[i] in (None, "train")) and labels[i] <= 0]
                paths, labels, splits, masks = ([v[i] for i in keep] for v in (paths, labels, splits, masks))
            if not paths:
                raise ValueError("dinoscope: no images found in the inputs")
            self.paths, self.labels, self.splits, self.masks = paths, labels, splits, masks
            self.n = len(paths)
            self._c_paths = (c_char_p * self.n)(*[_enc(p) for p in paths])
            self._c_images = None
        elif all(isinstance(x, np.ndarray) for x in images):
            self.arrays = [_as_u8(x) for x in images]
            self.n = len(self.arrays)
            self._structs = [Image(a.shape[1], a.shape[0], 1 if a.ndim == 2 else 3,
                                   a.ctypes.data_as(POINTER(c_uint8))) for a in self.arrays]
            self._c_images = (POINTER(Image) * self.n)(*[ctypes.pointer(s) for s in self._structs])
            self._c_paths = None
        else:
            raise TypeError("dinoscope: images must be paths or numpy arrays (not a mix)")

    def name(self, i):
        return self.paths[i] if self.paths is not None else None

    def size(self, i, item):
        """(width, height) of image i at its original size."""
        if item.original:
            return item.original.contents.width, item.original.contents.height
        a = self.arrays[i]
        return a.shape[1], a.shape[0]


def _pipeline_params(size, layers, batch, stain_norm, clahe_clip, clahe_tiles, skip_bad, keep_original=False,
                     want_cls=False):
    p = lib.ds_pipeline_defaults()
    p.size, p.n_layers, p.batch = int(size), int(layers), int(batch)
    p.want_cls, p.keep_original, p.skip_bad = int(want_cls), int(keep_original), int(skip_bad)
    if stain_norm not in _STAIN:
        raise ValueError("dinoscope: stain_norm must be one of %s" % ", ".join(_STAIN))
    p.prep.stain = _STAIN[stain_norm]
    p.prep.clahe_clip, p.prep.clahe_tiles = float(clahe_clip), int(clahe_tiles)
    return p


def _run(bb, params, inputs, on_item):
    """ds_pipeline_run with a Python sink; returns the input indices skipped (skip_bad)."""
    failure = []
    skipped = []

    def sink(_user, item):
        try:
            on_item(item.contents)
            return 0
        except BaseException as e:  # re-raised below, after the C loop has stopped
            failure.append(e)
            return 1

    def on_skip(_user, index, _path, _reason):
        skipped.append(index)

    c_sink, c_skip = PIPELINE_SINK(sink), SKIP_FN(on_skip)
    params.on_skip = c_skip
    n_skipped = c_int(0)
    st = lib.ds_pipeline_run(bb, byref(params), inputs._c_paths, inputs._c_images, inputs.n, c_sink, None,
                             byref(n_skipped))
    if failure:
        raise failure[0]
    _check(st)
    return skipped


# ---- library objects ---------------------------------------------------------------

class _Owned:
    """A library object (a handle) freed by close(), on garbage collection or at the end of a with block."""
    _h = None
    _what = "object"

    @staticmethod
    def _free(h):
        raise NotImplementedError

    def close(self):
        if self._h:
            self._free(self._h)
            self._h = None

    __del__ = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _handle(self):
        if not self._h:
            raise ValueError("dinoscope: the %s is closed" % self._what)
        return self._h


# ---- backbone -------------------------------------------------------------------

class Backbone(_Owned):
    """A feature backbone (DINOv2, MobileNetV2, ResNet), detected from the weights file.

    dtype: the features are float32 whatever the file stores (F32/F16/BF16
    tensors are converted on load); only "float32" is accepted.
    threads: 0 = all cores."""
    _what = "backbone"
    _free = staticmethod(lib.ds_backbone_free)

    def __init__(self, path, dtype="float32", threads=0, preset=None):
        if np.dtype(dtype) != np.float32:
            raise ValueError("dinoscope: features are float32; dtype=%s is not supported" % dtype)
        h = c_void_p()
        self.threads = int(threads)
        self.preset = preset
        params = BackboneParams(self.threads, preset.encode() if preset else None)
        _check(lib.ds_backbone_load(_enc(path), byref(params), byref(h)))
        self._h = h
        self.path = os.fsdecode(lib.ds_backbone_path(h))
        self.arch = lib.ds_backbone_describe(h).decode()
        self.native_size = lib.ds_backbone_native_size(h)
        self.stride = lib.ds_backbone_stride(h)

    def __repr__(self):
        return "dinoscope.Backbone(%r, %s)" % (self.path, self.arch)

    def grid(self, size):
        """(gh, gw, D) of the feature grid at an S x S input."""
        gh, gw, d = c_int(), c_int(), c_int()
        _check(lib.ds_backbone_grid(self._handle(), int(size), int(size), byref(gh), byref(gw), byref(d)))
        return gh.value, gw.value, d.value

    def features(self, images, size=None, layers=4, batch=1, cls=False, stain_norm="none", clahe_clip=2.0,
                 clahe_tiles=8, recursive=False):
        """Patch features [B, N, D] float32 (N = gh*gw), or the CLS tokens [B, D] with cls=True:
        each image decoded and prepared as the CLI does (`dinoscope extract`)."""
        size = int(size or self.native_size)
        gh, gw, d = self.grid(size)
        n_tok = gh * gw
        inputs = _Inputs(images, recursive)
        out = np.empty((inputs.n, d) if cls else (inputs.n, n_tok, d), dtype=np.float32)
        row = out[0].size
        base = out.ctypes.data

        def on_item(it):
            ctypes.memmove(base + 4 * row * it.index, it.cls if cls else it.feats, 4 * row)

        p = _pipeline_params(size, layers, batch, stain_norm, clahe_clip, clahe_tiles, False, want_cls=cls)
        _run(self._handle(), p, inputs, on_item)
        return out


# ---- models ---------------------------------------------------------------------

class Model(_Owned):
    """A fitted model: backbone identity, preprocessing, scorers and their thresholds.
    From dinoscope.fit() (in memory) or dinoscope.load() (a memory-mapped file)."""
    _what = "model"
    _free = staticmethod(lib.ds_model_free)

    def __init__(self, handle, backbone=None, path=None, force_backbone=False):
        self._h = handle
        self.path = path
        self._backbone = backbone
        self._force = force_backbone
        info = lib.ds_model_get_info(handle).contents
        self.size = info.prep.size
        self.layers = info.n_layers
        self.grid = (info.grid_h, info.grid_w)
        self.dim = info.dim
        self.n_train = info.n_train
        self.backbone_file = os.fsdecode(info.backbone_file)
        self.backbone_sha256 = info.backbone_sha256.decode()
        self.backbone_arch = info.backbone_arch.decode()
        self.stain_norm = {v: k for k, v in _STAIN.items()}[info.prep.stain]
        self.clahe_clip, self.clahe_tiles = info.prep.clahe_clip, info.prep.clahe_tiles
        self.meta = json.loads(lib.ds_model_meta_json(handle).decode())
        n = lib.ds_model_n_scorers(handle)
        self.scorers = tuple(lib.ds_scorer_kind_name(lib.ds_scorer_get_kind(lib.ds_model_scorer(handle, k))).decode()
                             for k in range(n))
        self.thresholds = {}
        self.map_vmax = {}
        for k, name in enumerate(self.scorers):
            c = lib.ds_model_calibration(handle, k).contents
            if c.has_threshold:
                self.thresholds[name] = float(c.threshold)
            if c.map_vmax > 0:
                self.map_vmax[name] = float(c.map_vmax)
        mk = lib.ds_model_map_scorer(handle)
        self.map_scorer = self.scorers[mk] if mk >= 0 else None

    def __repr__(self):
        return "dinoscope.Model(scorers=%s, size=%d, backbone=%s)" % (",".join(self.scorers), self.size,
                                                                       self.backbone_arch)

    def save(self, path):
        """Writes the model file atomically (what `dinoscope score` reads)."""
        _check(lib.ds_model_write(self._handle(), _enc(path)))
        self.path = os.fspath(path)

    @property
    def backbone(self):
        """The model's backbone: the one given to fit/load, else the stored file, refused (as the CLI does)
        when its SHA-256 differs from the fitted one unless force_backbone."""
        if self._backbone is None:
            digest = (ctypes.c_char * 65)()
            _check(lib.ds_file_sha256(_enc(self.backbone_file), digest))
            if digest.value.decode() != self.backbone_sha256 and not self._force:
                raise Error(-7, "backbone '%s' has SHA-256 %s but the model was fitted with %s (force_backbone=True "
                                "overrides)" % (self.backbone_file, digest.value.decode(), self.backbone_sha256))
            preset = lib.ds_backbone_preset_in(self.backbone_arch.encode())
            self._backbone = Backbone(self.backbone_file, preset=preset.decode() if preset else None)
        _check(lib.ds_model_check_backbone(self._handle(), self._backbone._handle()))
        return self._backbone

    def score_features(self, feats, threads=0):
        """Scores features [B, N, D] (Backbone.features at the model's size): {"scores": {scorer: [B]},
        "patch_scores": [B, gh, gw] of the map scorer or None, "anomalous": {scorer: bool [B]}}."""
        f = np.ascontiguousarray(feats, dtype=np.float32)
        gh, gw = self.grid
        if f.ndim != 3 or f.shape[1] != gh * gw or f.shape[2] != self.dim:
            raise ValueError("dinoscope: features must be [B, %d, %d] for this model, got %s" % (gh * gw, self.dim,
                                                                                               f.shape))
        res = _Scores(self, f.shape[0], threads)
        for i in range(f.shape[0]):
            res.add(i, f[i].ctypes.data_as(POINTER(c_float)))
        return res.result(maps=None)

    def score(self, images, maps=True, batch=1, threads=0, recursive=False, skip_bad=False):
        """Scores images end to end with the model's preprocessing and backbone, as `dinoscope score`:
        {"scores": {scorer: float32 [B]}, "anomalous": {scorer: bool [B]} (where the model holds a threshold),
        "thresholds": {scorer: float}, "paths": [...] or None, "labels": [...] or None (labels.csv),
        "patch_scores": float32 [B, gh, gw] of the map scorer (or None), "maps": [float32 [H, W]] per image at
        its original size (maps=True and a map scorer; else None), "skipped": [input indices]}."""
        mk = self.scorers.index(self.map_scorer) if self.map_scorer else -1
        map_ks = [mk] if maps and mk >= 0 else []
        out, all_maps = self._score(images, map_ks, batch, threads, recursive, skip_bad)
        out["maps"] = all_maps[mk] if map_ks else None
        return out

    def _score(self, images, map_ks, batch, threads, recursive, skip_bad):
        """score() with the maps of the scorers map_ks: (result, {k: [map per image]})."""
        h_model = self._handle()
        bb = self.backbone
        inputs = _Inputs(images, recursive)
        res = _Scores(self, inputs.n, threads)
        all_maps = {k: [None] * inputs.n for k in map_ks}

        def on_item(it):
            res.add(it.index, it.feats)
            w, h = inputs.size(it.index, it) if map_ks else (0, 0)
            for k in map_ks:
                m = np.empty((h, w), dtype=np.float32)
                _check(lib.ds_model_anomaly_map(h_model, res.patch_row_ptr(k), w, h, m.ctypes.data_as(POINTER(c_float))))
                all_maps[k][it.index] = m

        p = _pipeline_params(self.size, self.layers, batch, self.stain_norm, self.clahe_clip, self.clahe_tiles,
                             skip_bad, keep_original=bool(map_ks) and inputs.paths is not None)
        skipped = _run(bb._handle(), p, inputs, on_item)
        out = res.result(maps=None)
        out["paths"] = inputs.paths
        out["labels"] = inputs.labels if inputs.labels and any(v >= 0 for v in inputs.labels) else None
        out["skipped"] = skipped
        return out, all_maps


class _Scores:
    """Per-image ds_model_score_features into [B, n_scorers] and the map scorer's [B, N] patch scores."""

    def __init__(self, model, n, threads):
        self.model, self.threads = model, int(threads)
        self.K = len(model.scorers)
        self.N = model.grid[0] * model.grid[1]
        self.scores = np.full((n, self.K), np.nan, dtype=np.float32)
        self.mk = model.scorers.index(model.map_scorer) if model.map_scorer else -1
        self.patch = np.zeros((n, self.N), dtype=np.float32) if self.mk >= 0 else None
        self._patch_all = np.empty((self.K, self.N), dtype=np.float32)

    def add(self, i, feats_ptr):
        _check(lib.ds_model_score_features(self.model._handle(), feats_ptr, self.threads,
                                           self.scores[i].ctypes.data_as(POINTER(c_float)),
                                           self._patch_all.ctypes.data_as(POINTER(c_float)), None))
        if self.mk >= 0:
            self.patch[i] = self._patch_all[self.mk]

    def patch_row_ptr(self, k):
        return self._patch_all[k].ctypes.data_as(POINTER(c_float))

    def result(self, maps):
        m = self.model
        scores = {name: self.scores[:, k].copy() for k, name in enumerate(m.scorers)}
        return {"scores": scores,
                "anomalous": {name: scores[name] >= t for name, t in m.thresholds.items()},
                "thresholds": dict(m.thresholds),
                "patch_scores": self.patch.reshape(-1, *m.grid) if self.patch is not None else None,
                "maps": maps}


def load(path, backbone=None, force_backbone=False):
    """Opens a model file (validated, memory-mapped). backbone: a Backbone to score with (else the stored file)."""
    h = c_void_p()
    _check(lib.ds_model_load(_enc(path), byref(h)))
    try:
        return Model(h, backbone=backbone, path=os.fspath(path), force_backbone=force_backbone)
    except BaseException:
        lib.ds_model_free(h)
        raise


def fit(backbone, images, scorers=("knn", "gaussian", "patchbank"), size=None, layers=4, batch=1, knn_k=5,
        max_components=512, coreset=0.1, patch_k=1, metric="cosine", reduce="top1pct", seed=0, padim_dim=100,
        val_split=0.1, fpr=0.01, stain_norm="none", clahe_clip=2.0, clahe_tiles=8, threads=0, recursive=False,
        skip_bad=False, bank="int8", nprobe=0):
    """Fits scorers on NORMAL images (a folder, files, arrays, or a labels.csv: its rows with split=train and
    label 0) exactly as `dinoscope fit` with the same options: every (n / n_val)-th image is held out to set
    the thresholds (val_split, fpr). bank: f32|bf16|f16|int8|ivfpq (`fit --bank`, docs/bank.md), nprobe:
    ivfpq's lists per query (0 = 16). Returns a Model in memory (Model.save writes it)."""
    if isinstance(scorers, str):
        scorers = ("knn", "gaussian", "patchbank") if scorers == "all" else tuple(scorers.split(","))
    if not 1 <= len(scorers) <= MAX_SCORERS:
        raise ValueError("dinoscope: give 1 to %d scorers" % MAX_SCORERS)
    if metric not in _METRICS or reduce not in _REDUCE:
        raise ValueError("dinoscope: metric must be l2|cosine and reduce max|top1pct")
    fp = lib.ds_fit_defaults()
    for k, name in enumerate(scorers):
        kind = c_int()
        _check(lib.ds_scorer_kind_parse(name.encode(), byref(kind)))
        fp.kinds[k] = kind.value
    fp.n_kinds = len(scorers)
    sp = fp.scorer
    sp.k, sp.max_components, sp.coreset_ratio, sp.patch_k = int(knn_k), int(max_components), float(coreset), int(patch_k)
    sp.metric, sp.reduce, sp.seed, sp.padim_dim, sp.n_threads = (_METRICS[metric], _REDUCE[reduce], int(seed),
                                                                 int(padim_dim), int(threads))
    repr_ = c_int()
    _check(lib.ds_bank_repr_parse(str(bank).encode(), byref(repr_)))
    sp.bank_repr, sp.nprobe = repr_.value, int(nprobe)
    fp.val_split, fp.fpr = float(val_split), float(fpr)
    inputs = _Inputs(images, recursive, keep_normal_training=True)
    pp = _pipeline_params(size or backbone.native_size, layers, batch, stain_norm, clahe_clip, clahe_tiles, skip_bad)
    h = c_void_p()
    _check(lib.ds_model_fit(backbone._handle(), byref(pp), byref(fp), inputs._c_paths, inputs._c_images, inputs.n,
                            byref(h), None))
    try:
        return Model(h, backbone=backbone)
    except BaseException:
        lib.ds_model_free(h)
        raise


# ---- evaluation -------------------------------------------------------------------

def _load_mask(path, w, h):
    """A mask file as 0/1 uint8 [h, w] (nonzero = anomalous; resized with nearest neighbour, as `eval`)."""
    img = POINTER(Image)()
    _check(lib.ds_image_load(_enc(path), None, byref(img)))
    try:
        m = np.empty((h, w), dtype=np.uint8)
        im = img.contents
        lib.ds_mask_resize_nearest(im.pixels, im.width, im.height, im.channels, w, h, m.ctypes.data_as(POINTER(c_uint8)))
    finally:
        lib.ds_image_free(img)
    return m


def evaluate(model, labels_csv, batch=1, threads=0):
    """Evaluates model on the test rows of a labels.csv (split 'test', or every row without a split column), as
    `dinoscope eval`: returns the report's JSON document as a dict, whose "scorers" list holds per scorer
    image_auroc, average_precision, f1_max, and with masks pixel_auroc and aupro (None where undefined)."""
    paths, labels, splits, masks = _expand([os.fspath(labels_csv)])
    any_split = any(s is not None for s in splits)
    test = [i for i in range(len(paths)) if (splits[i] == "test" if any_split else True)]
    if not test:
        raise ValueError("dinoscope: '%s' has no test rows" % os.fspath(labels_csv))
    if any(labels[i] not in (0, 1) for i in test):
        raise ValueError("dinoscope: every test row of '%s' needs a label 0 or 1" % os.fspath(labels_csv))
    h_model = model._handle()
    map_ks = [k for k in range(len(model.scorers)) if lib.ds_scorer_has_patch_scores(lib.ds_model_scorer(h_model, k))]
    pixel = bool(map_ks) and any(labels[i] == 1 and masks[i] for i in test)
    out, all_maps = model._score([paths[i] for i in test], map_ks if pixel else [], batch, threads, False, False)
    rp = ReportParams()
    keep = []
    rp.model_path = _enc(model.path or "(in memory)")
    rp.data_path = _enc(os.fspath(labels_csv))
    rp.layout, rp.backbone = b"labels.csv", model.backbone_arch.encode()
    rp.backbone_file, rp.input_size, rp.n_scorers = _enc(model.backbone_file), model.size, len(model.scorers)
    for k, name in enumerate(model.scorers):
        c = lib.ds_model_calibration(h_model, k).contents
        s = rp.scorers[k]
        s.name, s.has_threshold, s.threshold, s.threshold_fpr = name.encode(), c.has_threshold, c.threshold, c.threshold_fpr
        s.has_maps = int(k in map_ks)
    r = c_void_p()
    _check(lib.ds_report_create(byref(rp), byref(r)))
    try:
        S = np.stack([out["scores"][n] for n in model.scorers], axis=1).astype(np.float32)
        for j, i in enumerate(test):
            row = np.ascontiguousarray(S[j])
            keep.append(row)
            im = ReportImage(path=_enc(paths[i]), label=labels[i], mask_path=_enc(masks[i]) if masks[i] else None,
                             scores=row.ctypes.data_as(POINTER(c_float)))
            _check(lib.ds_report_add_image(r, byref(im), None))
            if pixel and (labels[i] == 0 or masks[i]):
                h, w = all_maps[map_ks[0]][j].shape
                mask = _load_mask(masks[i], w, h) if labels[i] == 1 else None
                for k in map_ks:
                    _check(lib.ds_report_add_map(r, k, all_maps[k][j].ctypes.data_as(POINTER(c_float)),
                                                 mask.ctypes.data_as(POINTER(c_uint8)) if mask is not None else None,
                                                 h, w))
        text = c_void_p()
        _check(lib.ds_report_format(r, b"json", byref(text)))
        try:
            doc = json.loads(ctypes.string_at(text).decode())
        finally:
            libc.free(text)
    finally:
        lib.ds_report_free(r)
    return doc
