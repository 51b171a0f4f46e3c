#ifndef DS_VIT_INTERNAL_H
#define DS_VIT_INTERNAL_H

#include "core/internal.h"
#include "dinoscope/vit.h"

/* Position embeddings for a gh x gw patch grid: out [1 + gh*gw, D], from the
 * learned pos [1 + M*M, D], following DINOv2's interpolate_pos_encoding. */
ds_status ds_vit_pos_embed_for(const ds_vit_arch *arch, const float *pos, int gh, int gw, float *out);

/* Fused self-attention of one image (src/vit/attention.c): qkv [T, 3D]
 * (query | key | value per row), o [T, D] = softmax(q k^T / sqrt(64)) v per
 * head of 64 channels (D = 64 n_heads). work: ds_vit_attention_work_floats
 * floats. Runs its own OpenMP team of n_threads. */
size_t ds_vit_attention_work_floats(int T, int D, int n_threads);
void ds_vit_attention(const float *qkv, float *o, int T, int D, int n_heads, float *work, int n_threads);

#endif
