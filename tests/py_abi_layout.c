/* Prints the size and field offsets of every public struct the Python
 * package mirrors with ctypes (python/dinoscope/_lib.py), as JSON, for
 * python/tests/test_abi.py: a field added to a struct in a header and not
 * to the mirror fails that test instead of corrupting memory. */
#include <stddef.h>
#include <stdio.h>

#include "dinoscope/backbone.h"
#include "dinoscope/eval.h"
#include "dinoscope/image.h"
#include "dinoscope/model.h"
#include "dinoscope/pipeline.h"
#include "dinoscope/report.h"

static int first_struct = 1, first_field;
static void begin(const char *name, size_t size) {
    printf("%s\n  \"%s\": {\"size\": %zu, \"fields\": {", first_struct ? "{" : ",", name, size);
    first_struct = 0;
    first_field = 1;
}
static void field(const char *name, size_t off) {
    printf("%s\"%s\": %zu", first_field ? "" : ", ", name, off);
    first_field = 0;
}
#define S(T) begin(#T, sizeof(T))
#define F(T, f) field(#f, offsetof(T, f))
#define E() printf("}}")

int main(void) {
    S(ds_image); F(ds_image, width); F(ds_image, height); F(ds_image, channels); F(ds_image, pixels); F(ds_image, spacing_mm); E();
    S(ds_image_load_params); F(ds_image_load_params, max_pixels); F(ds_image_load_params, window_set);
    F(ds_image_load_params, window_min); F(ds_image_load_params, window_max); F(ds_image_load_params, window_lo_pct);
    F(ds_image_load_params, window_hi_pct); F(ds_image_load_params, voi_set); F(ds_image_load_params, voi_center);
    F(ds_image_load_params, voi_width); F(ds_image_load_params, frame); E();
    S(ds_preprocess_params); F(ds_preprocess_params, size); F(ds_preprocess_params, stain);
    F(ds_preprocess_params, clahe_clip); F(ds_preprocess_params, clahe_tiles); E();
    S(ds_backbone_params); F(ds_backbone_params, n_threads); F(ds_backbone_params, preset); F(ds_backbone_params, dtype); E();
    S(ds_pipeline_item); F(ds_pipeline_item, index); F(ds_pipeline_item, path); F(ds_pipeline_item, original);
    F(ds_pipeline_item, feats); F(ds_pipeline_item, cls); F(ds_pipeline_item, prep_ms); F(ds_pipeline_item, backbone_ms); E();
    S(ds_pipeline_params); F(ds_pipeline_params, size); F(ds_pipeline_params, n_layers); F(ds_pipeline_params, batch);
    F(ds_pipeline_params, want_cls); F(ds_pipeline_params, keep_original); F(ds_pipeline_params, skip_bad);
    F(ds_pipeline_params, prep); F(ds_pipeline_params, load); F(ds_pipeline_params, progress);
    F(ds_pipeline_params, progress_user); F(ds_pipeline_params, on_skip); F(ds_pipeline_params, skip_user); E();
    S(ds_scorer_params); F(ds_scorer_params, k); F(ds_scorer_params, max_components); F(ds_scorer_params, coreset_ratio);
    F(ds_scorer_params, coreset_proj_dim); F(ds_scorer_params, coreset_method); F(ds_scorer_params, coreset_block);
    F(ds_scorer_params, patch_k); F(ds_scorer_params, metric);
    F(ds_scorer_params, reduce); F(ds_scorer_params, seed); F(ds_scorer_params, bank_repr); F(ds_scorer_params, ivf_nlist);
    F(ds_scorer_params, pq_m); F(ds_scorer_params, nprobe); F(ds_scorer_params, padim_dim);
    F(ds_scorer_params, flow_dim); F(ds_scorer_params, flow_blocks); F(ds_scorer_params, flow_pos_dim);
    F(ds_scorer_params, flow_hidden); F(ds_scorer_params, flow_epochs); F(ds_scorer_params, flow_batch);
    F(ds_scorer_params, flow_epoch_patches); F(ds_scorer_params, flow_lr); F(ds_scorer_params, flow_patience);
    F(ds_scorer_params, grid_w); F(ds_scorer_params, n_threads);
    F(ds_scorer_params, progress); F(ds_scorer_params, progress_user); E();
    S(ds_fit_params); F(ds_fit_params, kinds); F(ds_fit_params, n_kinds); F(ds_fit_params, scorer);
    F(ds_fit_params, val_split); F(ds_fit_params, fpr); F(ds_fit_params, on_fitted); F(ds_fit_params, on_fitted_user); E();
    S(ds_model_info); F(ds_model_info, backbone_file); F(ds_model_info, backbone_sha256); F(ds_model_info, backbone_arch);
    F(ds_model_info, prep); F(ds_model_info, n_layers); F(ds_model_info, grid_h); F(ds_model_info, grid_w);
    F(ds_model_info, dim); F(ds_model_info, n_train); F(ds_model_info, map_sigma); E();
    S(ds_scorer_calibration); F(ds_scorer_calibration, has_threshold); F(ds_scorer_calibration, threshold_fpr);
    F(ds_scorer_calibration, threshold); F(ds_scorer_calibration, n_val); F(ds_scorer_calibration, map_vmax);
    F(ds_scorer_calibration, has_map_threshold); F(ds_scorer_calibration, map_threshold); E();
    S(ds_image_list); F(ds_image_list, n); F(ds_image_list, paths); F(ds_image_list, labels); F(ds_image_list, splits);
    F(ds_image_list, masks); E();
    S(ds_report_scorer); F(ds_report_scorer, name); F(ds_report_scorer, params); F(ds_report_scorer, has_threshold);
    F(ds_report_scorer, threshold); F(ds_report_scorer, threshold_fpr); F(ds_report_scorer, has_maps); E();
    S(ds_report_params); F(ds_report_params, model_path); F(ds_report_params, data_path); F(ds_report_params, layout);
    F(ds_report_params, backbone); F(ds_report_params, backbone_file); F(ds_report_params, input_size);
    F(ds_report_params, n_scorers); F(ds_report_params, scorers); E();
    S(ds_report_image); F(ds_report_image, path); F(ds_report_image, label); F(ds_report_image, defect);
    F(ds_report_image, mask_path); F(ds_report_image, scores); F(ds_report_image, prep_ms);
    F(ds_report_image, backbone_ms); F(ds_report_image, score_ms); F(ds_report_image, map_ms); E();
    printf("\n}\n");
    return 0;
}
