/* The float32 kernels of clap_mlx.ops, compiled once per SIMD target (_kernels_avx512.c,
 * _kernels_avx2.c, _kernels_baseline.c, each with its own vector width) and picked at run
 * time by CPU feature. Plain C: the Python bindings (_kernels.c) and the C tests
 * (tests/c/test_kernels.c) both call them through a table. */
#ifndef CLAP_KERNELS_SIMD_H
#define CLAP_KERNELS_SIMD_H

#include <stddef.h>
#include <stdint.h>

/* One pre-norm Swin block's parameters for the fused block kernels (the first half uses
 * norm_dense_rows with norm_before and qkv): the layer norms' weights and
 * biases, and its linear layers' weights packed into panels (_kernels_dense.h) with their biases
 * (any bias may be NULL). */
struct swin_weights {
    const float *norm_before_w, *norm_before_b, *qkv_w, *qkv_b, *proj_w, *proj_b;
    const float *norm_after_w, *norm_after_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
    float eps;
    ptrdiff_t dims, hidden;
};

/* Output columns per packed weight panel of the dense kernels: the same on every variant, so one
 * packed copy serves them all. */
#define DENSE_PANEL_COLS 16

/* Mel bins the mel image kernel takes (its block of output frames sits on the stack). */
#define MEL_IMAGE_MAX_MELS 256

struct kernel_table {
    const char *name;
    int lanes; /* float32 lanes of the target's native vector */
    /* dst[i] = gelu(src[i] (+ bias)) for rows [row_start, row_stop) of a [rows, cols] matrix */
    void (*gelu_rows)(const float *src, float *dst, const float *bias, ptrdiff_t cols, ptrdiff_t row_start,
                      ptrdiff_t row_stop);
    /* dst[i] = softmax(scale * src[i] (+ add[i % add_rows])) */
    void (*softmax_rows)(const float *src, float *dst, float scale, const float *add, ptrdiff_t add_rows,
                         ptrdiff_t cols, ptrdiff_t row_start, ptrdiff_t row_stop);
    /* dst[i] = LayerNorm(src[i] (+ residual[i])), the sum also to sum_dst when given */
    void (*layer_norm_rows)(const float *src, const float *residual, float *sum_dst, float *dst,
                            const float *weight, const float *bias, float eps, ptrdiff_t cols, ptrdiff_t row_start,
                            ptrdiff_t row_stop);
    /* out[i] = 2 (residual[i] + sigmoid(local[i] + global[i / item_rows]) (x[i] - residual[i])):
     * attentional feature fusion's gate and blend */
    void (*aff_blend_rows)(const float *x, const float *residual, const float *local, const float *global,
                           ptrdiff_t item_rows, ptrdiff_t cols, float *out, ptrdiff_t row_start, ptrdiff_t row_stop);
    /* multi-head attention inside 64-token windows of packed q/k/v rows: windows[w] lists window
     * w's tokens of each batch element (-1: a padding token projected as `pad`), pairs of (window
     * item, head) [pair_start, pair_stop) */
    void (*attention_pairs)(const float *qkv, float *out, const int32_t *windows, ptrdiff_t window_count,
                            ptrdiff_t tokens, const float *pad, const float *bias, ptrdiff_t bias_count, float scale,
                            ptrdiff_t heads, ptrdiff_t head_dims, ptrdiff_t pair_start, ptrdiff_t pair_stop);
    /* y[m, n] = dot(x[m], w[n]) (+ bias[n]) for all rows m and the columns [col_start, col_stop):
     * nn.Linear with x [rows, in_dims], w [out_dims, in_dims] (its own layout), y [rows, out_dims] */
    void (*linear_cols)(const float *x, const float *w, const float *bias, float *y, ptrdiff_t rows, ptrdiff_t in_dims,
                        ptrdiff_t out_dims, ptrdiff_t col_start, ptrdiff_t col_stop);
    /* y[m] = x[m] W^T (+ bias) (+ y[m] if flags & 2) (GELU'd if flags & 1) for rows [row_start,
     * row_stop); W packed in panels of DENSE_PANEL_COLS columns, [panels][in_dims][16] */
    void (*dense_rows)(const float *x, ptrdiff_t ldx, const float *panels, const float *bias, float *y, ptrdiff_t ldy,
                       ptrdiff_t in_dims, ptrdiff_t out_dims, int flags, ptrdiff_t row_start, ptrdiff_t row_stop);
    /* y = LayerNorm(x) W^T (+ bias) over rows [row_start, row_stop), W packed as for dense_rows;
     * and a Swin block's second half in place on the residual stream x [rows, dims]: x += attn
     * Wo^T + bo, x += MLP(LayerNorm_after(x)). Return 0 when out of memory. */
    int (*norm_dense_rows)(const float *x, ptrdiff_t in_dims, const float *norm_w, const float *norm_b, float eps,
                           const float *panels, const float *bias, float *y, ptrdiff_t out_dims, ptrdiff_t row_start,
                           ptrdiff_t row_stop);
    int (*swin_mlp_rows)(const struct swin_weights *w, float *x, const float *attn, ptrdiff_t row_start,
                         ptrdiff_t row_stop);
    /* the audio tower's batch norm and mel image for planes [plane_start, plane_stop) of src
     * [planes, frames, mels] into dst [planes, ratio * mels, width] (_kernels_image.h); 0 when
     * out of memory */
    int (*mel_image_planes)(const float *src, ptrdiff_t frames, ptrdiff_t mels, const float *norm,
                             const int32_t *taps, const float *tap_weights, ptrdiff_t ratio, ptrdiff_t width,
                             float *dst, ptrdiff_t plane_start, ptrdiff_t plane_stop);
};

/* Fills `out` with the variants this CPU can run, fastest first; returns how many (>= 1). */
int kernels_runnable(const struct kernel_table **out, int capacity);

/* The variant called `name` if this CPU can run it, else NULL. */
const struct kernel_table *kernels_find(const char *name);

/* Every variant this build knows, runnable or not, separated by "|" (for error messages). */
extern const char kernels_all_names[];

#endif
