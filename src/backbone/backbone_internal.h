#ifndef DS_BACKBONE_INTERNAL_H
#define DS_BACKBONE_INTERNAL_H

#include "dinoscope/backbone.h"
#include "dinoscope/vit.h"

/* What the config files next to a ViT's weights say (0 / unset = silent). */
typedef struct {
    char source[48];          /* "timm config.json", "transformers config.json", "open_clip_config.json", "" */
    int embed_dim;            /* the width the config describes, to check against the tensors */
    int n_heads;
    float ln_eps;
    int has_norm;             /* mean/std below are set */
    float mean[3], std[3];
    int input_size;
    ds_vit_pos_rule pos_rule; /* the implementation the config belongs to */
} ds_vit_config;

/* Reads config.json / open_clip_config.json / preprocessor_config.json in
 * the folder of weights_path. Returns DS_OK (also when there is none) or
 * DS_ERR_FORMAT for a config that is not valid JSON or has wrong types. */
ds_status ds_vit_config_read(const char *weights_path, ds_vit_config *out);

#endif
