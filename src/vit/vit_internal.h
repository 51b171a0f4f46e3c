#ifndef DS_VIT_INTERNAL_H
#define DS_VIT_INTERNAL_H

#include "core/internal.h"
#include "dinoscope/vit.h"

/* Position embeddings for a gh x gw patch grid: out [1 + gh*gw, D], from the
 * learned pos [1 + M*M, D], following DINOv2's interpolate_pos_encoding. */
ds_status ds_vit_pos_embed_for(const ds_vit_arch *arch, const float *pos, int gh, int gw, float *out);

#endif
