"""ctypes mirror of the public C API (include/dinoscope/*.h) of libdinoscope.so.

Only what the package uses is declared. The struct layouts are checked
against the C compiler's by python/tests/test_abi.py (tests/py_abi_layout.c).
"""
import ctypes
import ctypes.util
import os
import sys
from ctypes import (CFUNCTYPE, POINTER, Structure, c_char, c_char_p, c_double, c_float, c_int, c_int64, c_size_t,
                    c_uint8, c_uint64, c_void_p)

SONAME = "libdinoscope.so.0"
MAX_SCORERS = 8  # DS_MODEL_MAX_SCORERS, DS_REPORT_MAX_SCORERS


class Image(Structure):
    _fields_ = [("width", c_int), ("height", c_int), ("channels", c_int), ("pixels", POINTER(c_uint8)),
                ("spacing_mm", c_double * 2)]


class ImageLoadParams(Structure):
    _fields_ = [("max_pixels", c_int64), ("window_set", c_int), ("window_min", c_double), ("window_max", c_double),
                ("window_lo_pct", c_double), ("window_hi_pct", c_double), ("voi_set", c_int),
                ("voi_center", c_double), ("voi_width", c_double), ("frame", c_int)]


class PreprocessParams(Structure):
    _fields_ = [("size", c_int), ("stain", c_int), ("clahe_clip", c_double), ("clahe_tiles", c_int)]


class BackboneParams(Structure):
    _fields_ = [("n_threads", c_int), ("preset", c_char_p), ("dtype", c_int)]


class PipelineItem(Structure):
    _fields_ = [("index", c_int), ("path", c_char_p), ("original", POINTER(Image)), ("feats", POINTER(c_float)),
                ("cls", POINTER(c_float)), ("prep_ms", c_double), ("backbone_ms", c_double)]


PIPELINE_SINK = CFUNCTYPE(c_int, c_void_p, POINTER(PipelineItem))
SKIP_FN = CFUNCTYPE(None, c_void_p, c_int, c_char_p, c_char_p)


class PipelineParams(Structure):
    _fields_ = [("size", c_int), ("n_layers", c_int), ("batch", c_int), ("want_cls", c_int),
                ("keep_original", c_int), ("skip_bad", c_int), ("prep", PreprocessParams),
                ("load", ImageLoadParams), ("progress", c_void_p), ("progress_user", c_void_p),
                ("on_skip", SKIP_FN), ("skip_user", c_void_p)]


class ScorerParams(Structure):
    _fields_ = [("k", c_int), ("max_components", c_int), ("coreset_ratio", c_double), ("coreset_proj_dim", c_int),
                ("coreset_method", c_int), ("coreset_block", c_int64), ("patch_k", c_int), ("metric", c_int),
                ("reduce", c_int), ("seed", c_uint64), ("bank_repr", c_int),
                ("ivf_nlist", c_int), ("pq_m", c_int), ("nprobe", c_int), ("padim_dim", c_int),
                ("flow_dim", c_int), ("flow_blocks", c_int), ("flow_pos_dim", c_int), ("flow_hidden", c_int),
                ("flow_epochs", c_int), ("flow_batch", c_int), ("flow_epoch_patches", c_int64), ("flow_lr", c_double),
                ("flow_patience", c_int), ("grid_w", c_int), ("n_threads", c_int), ("progress", c_void_p), ("progress_user", c_void_p)]


class FitParams(Structure):
    _fields_ = [("kinds", c_int * MAX_SCORERS), ("n_kinds", c_int), ("scorer", ScorerParams),
                ("val_split", c_double), ("fpr", c_double), ("on_fitted", c_void_p), ("on_fitted_user", c_void_p)]


class ModelInfo(Structure):
    _fields_ = [("backbone_file", c_char * 512), ("backbone_sha256", c_char * 65), ("backbone_arch", c_char * 320),
                ("prep", PreprocessParams), ("n_layers", c_int), ("grid_h", c_int), ("grid_w", c_int),
                ("dim", c_int), ("n_train", c_int64), ("map_sigma", c_float)]


class ScorerCalibration(Structure):
    _fields_ = [("has_threshold", c_int), ("threshold_fpr", c_double), ("threshold", c_float), ("n_val", c_int),
                ("map_vmax", c_float), ("has_map_threshold", c_int), ("map_threshold", c_float)]


class ImageList(Structure):
    _fields_ = [("n", c_int), ("paths", POINTER(c_char_p)), ("labels", POINTER(c_int)),
                ("splits", POINTER(c_char_p)), ("masks", POINTER(c_char_p))]


class ReportScorer(Structure):
    _fields_ = [("name", c_char_p), ("params", c_char_p), ("has_threshold", c_int), ("threshold", c_float),
                ("threshold_fpr", c_double), ("has_maps", c_int)]


class ReportParams(Structure):
    _fields_ = [("model_path", c_char_p), ("data_path", c_char_p), ("layout", c_char_p), ("backbone", c_char_p),
                ("backbone_file", c_char_p), ("input_size", c_int), ("n_scorers", c_int),
                ("scorers", ReportScorer * MAX_SCORERS)]


class ReportImage(Structure):
    _fields_ = [("path", c_char_p), ("label", c_int), ("defect", c_char_p), ("mask_path", c_char_p),
                ("scores", POINTER(c_float)), ("prep_ms", c_double), ("backbone_ms", c_double),
                ("score_ms", POINTER(c_double)), ("map_ms", c_double)]


STRUCTS = {"ds_image": Image, "ds_image_load_params": ImageLoadParams, "ds_preprocess_params": PreprocessParams,
           "ds_backbone_params": BackboneParams, "ds_pipeline_item": PipelineItem,
           "ds_pipeline_params": PipelineParams, "ds_scorer_params": ScorerParams, "ds_fit_params": FitParams,
           "ds_model_info": ModelInfo, "ds_scorer_calibration": ScorerCalibration, "ds_image_list": ImageList,
           "ds_report_scorer": ReportScorer, "ds_report_params": ReportParams, "ds_report_image": ReportImage}

# name: (restype, argtypes); restype c_int = a ds_status
_P = c_void_p
_FP = POINTER(c_float)
_FUNCS = {
    "ds_last_error": (c_char_p, []),
    "ds_version": (c_char_p, []),
    "ds_image_init": (c_int, []),
    "ds_image_load": (c_int, [c_char_p, POINTER(ImageLoadParams), POINTER(POINTER(Image))]),
    "ds_image_probe": (c_int, [c_char_p, POINTER(ImageLoadParams), POINTER(c_int), POINTER(c_int)]),
    "ds_image_free": (None, [POINTER(Image)]),
    "ds_image_list_expand": (c_int, [POINTER(c_char_p), c_int, c_int, POINTER(POINTER(ImageList))]),
    "ds_image_list_free": (None, [POINTER(ImageList)]),
    "ds_mask_resize_nearest": (None, [POINTER(c_uint8), c_int, c_int, c_int, c_int, c_int, POINTER(c_uint8)]),
    "ds_backbone_load": (c_int, [c_char_p, POINTER(BackboneParams), POINTER(_P)]),
    "ds_backbone_free": (None, [_P]),
    "ds_backbone_describe": (c_char_p, [_P]),
    "ds_backbone_preset_in": (c_char_p, [c_char_p]),
    "ds_backbone_path": (c_char_p, [_P]),
    "ds_backbone_native_size": (c_int, [_P]),
    "ds_backbone_stride": (c_int, [_P]),
    "ds_backbone_grid": (c_int, [_P, c_int, c_int, POINTER(c_int), POINTER(c_int), POINTER(c_int)]),
    "ds_file_sha256": (c_int, [c_char_p, c_char * 65]),
    "ds_pipeline_defaults": (PipelineParams, []),
    "ds_pipeline_run": (c_int, [_P, POINTER(PipelineParams), POINTER(c_char_p), POINTER(POINTER(Image)), c_int,
                                PIPELINE_SINK, c_void_p, POINTER(c_int)]),
    "ds_scorer_kind_parse": (c_int, [c_char_p, POINTER(c_int)]),
    "ds_bank_repr_parse": (c_int, [c_char_p, POINTER(c_int)]),
    "ds_scorer_kind_name": (c_char_p, [c_int]),
    "ds_scorer_get_kind": (c_int, [_P]),
    "ds_scorer_has_patch_scores": (c_int, [_P]),
    "ds_fit_defaults": (FitParams, []),
    "ds_model_fit": (c_int, [_P, POINTER(PipelineParams), POINTER(FitParams), POINTER(c_char_p),
                             POINTER(POINTER(Image)), c_int, POINTER(_P), POINTER(c_int)]),
    "ds_model_write": (c_int, [_P, c_char_p]),
    "ds_model_load": (c_int, [c_char_p, POINTER(_P)]),
    "ds_model_free": (None, [_P]),
    "ds_model_get_info": (POINTER(ModelInfo), [_P]),
    "ds_model_n_scorers": (c_int, [_P]),
    "ds_model_scorer": (_P, [_P, c_int]),
    "ds_model_calibration": (POINTER(ScorerCalibration), [_P, c_int]),
    "ds_model_map_scorer": (c_int, [_P]),
    "ds_model_meta_json": (c_char_p, [_P]),
    "ds_model_check_backbone": (c_int, [_P, _P]),
    "ds_model_score_features": (c_int, [_P, _FP, c_int, _FP, _FP, POINTER(c_double)]),
    "ds_model_anomaly_map": (c_int, [_P, _FP, c_int, c_int, _FP]),
    "ds_report_create": (c_int, [POINTER(ReportParams), POINTER(_P)]),
    "ds_report_free": (None, [_P]),
    "ds_report_add_image": (c_int, [_P, POINTER(ReportImage), POINTER(c_int)]),
    "ds_report_add_map": (c_int, [_P, c_int, _FP, POINTER(c_uint8), c_int, c_int]),
    "ds_report_format": (c_int, [_P, c_char_p, POINTER(c_void_p)]),
}


def _candidates():
    """Where libdinoscope.so may be, in order: $DINOSCOPE_LIBRARY (the file),
    the build folder recorded at install time (or the repository's build/
    beside this package's source), the install prefixes, then the dynamic
    loader's own search (ld.so.conf, LD_LIBRARY_PATH)."""
    env = os.environ.get("DINOSCOPE_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    dirs = []
    try:
        from . import _paths  # written by setup.py: the repository's build folder, the install prefix
        dirs += list(_paths.LIBRARY_DIRS)
    except ImportError:
        pass
    dirs.append(os.path.join(here, "..", "..", "build"))
    prefix = os.environ.get("DINOSCOPE_PREFIX")
    if prefix:
        dirs.insert(0, os.path.join(prefix, "lib"))
    dirs += [os.path.join(sys.prefix, "lib"), "/usr/local/lib"]
    for d in dirs:
        yield os.path.join(d, SONAME)
    found = ctypes.util.find_library("dinoscope")
    yield found or SONAME


def _load():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path)
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
            continue
        for name, (res, args) in _FUNCS.items():
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args
        lib.path = path
        return lib
    raise ImportError("dinoscope: libdinoscope.so not found; set DINOSCOPE_LIBRARY to the file or DINOSCOPE_PREFIX "
                      "to the install prefix (tried: %s)" % "; ".join(tried))


# libgomp's idle threads spin ("active" wait) unless told otherwise, which on a
# small machine shared with other work steals the cores the work needs (the
# CLI measured 2.6 s instead of 0.5 s, src/cli/main.c). libgomp reads the
# variable once, when it is loaded with the library: set it before that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
lib = _load()
libc = ctypes.CDLL(None)
libc.free.argtypes = [c_void_p]
libc.free.restype = None
size_t = c_size_t
