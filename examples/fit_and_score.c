/* Fits a patch bank on a folder of normal images and scores one image.
 *   cc fit_and_score.c $(pkg-config --cflags --libs dinoscope) -o fit_and_score
 *   ./fit_and_score BACKBONE.safetensors NORMALS_DIR IMAGE [SIZE] */
#include <dinoscope/model.h>
#include <stdio.h>
#include <stdlib.h>

static int fail(const char *what) {
    fprintf(stderr, "fit_and_score: %s: %s\n", what, ds_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 4) return fprintf(stderr, "usage: %s BACKBONE NORMALS_DIR IMAGE [SIZE]\n", argv[0]), 2;
    ds_backbone *bb = NULL;
    ds_image_list *normals = NULL;
    ds_model *model = NULL;
    ds_image *img = NULL;
    int rc = 1;
    if (ds_backbone_load(argv[1], &(ds_backbone_params){0}, &bb) != DS_OK) return fail(argv[1]);
    if (ds_image_list_expand((const char *const *)&argv[2], 1, 0, &normals) != DS_OK) { fail(argv[2]); goto done; }

    ds_pipeline_params pp = ds_pipeline_defaults();   /* decoding, preprocessing, batches */
    pp.size = argc > 4 ? atoi(argv[4]) : 0;           /* 0: the backbone's native size */
    ds_fit_params fp = ds_fit_defaults();
    fp.kinds[0] = DS_SCORER_PATCHBANK, fp.n_kinds = 1; /* PatchCore-style memory bank */
    if (ds_model_fit(bb, &pp, &fp, (const char *const *)normals->paths, NULL, normals->n, &model, NULL) != DS_OK) {
        fail("fit");
        goto done;
    }
    if (ds_image_load(argv[3], NULL, &img) != DS_OK) { fail(argv[3]); goto done; }
    float score;
    if (ds_model_score_images(model, bb, (const ds_image *const *)&img, 1, 1, 0, &score, -1, NULL) != DS_OK) {
        fail("score");
        goto done;
    }
    const ds_scorer_calibration *cal = ds_model_calibration(model, 0);
    printf("%s: patchbank %.6f (threshold %.6f: %s)\n", argv[3], score, cal->threshold,
           cal->has_threshold ? (score >= cal->threshold ? "anomalous" : "normal") : "none");
    rc = 0;
done:
    ds_image_free(img);
    ds_model_free(model);
    ds_image_list_free(normals);
    ds_backbone_free(bb);
    return rc;
}
