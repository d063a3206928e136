/* Dense layers over many rows, and the Swin block halves built on them.
 *
 * y = x W^T (+ bias) (+ y) (then GELU) with W packed once into panels of DENSE_NR output
 * columns, [panels][K][DENSE_NR] (zero past N): a tile of DENSE_MR rows x DENSE_TILE_PANELS
 * panels reads each of its panels contiguously, and per k one broadcast of each row's x and
 * DENSE_VECS weight vectors feed DENSE_MR x DENSE_VECS FMAs into registers (12 accumulators
 * with 16 vector registers, 24 on AVX-512: measured on an AVX-512 Xeon, one core, the audio
 * tower's ten GEMM shapes 1.2x faster than 12). K runs in blocks of DENSE_KC so the tile's
 * panel blocks (24 KB) stay in L1 while the rows' tiles pass over them; bias, residual and
 * GELU are applied to the registers of the last K block, so no extra pass over y.
 *
 * The layer norm + dense and Swin MLP kernels chain them over DENSE_SUB_ROWS rows at a time: the MLP's hidden
 * layer of those rows (<= 576 KB) never leaves L2, and there is no hand-off between ops. */

#include <stdlib.h>

#define DENSE_NR DENSE_PANEL_COLS
#define DENSE_PANEL_VECS (DENSE_NR / SIMD_LANES)
/* AVX-512's 32 registers hold a tile two panels wide (24 accumulators); 16 registers hold one */
#if SIMD_LANES >= 16
#define DENSE_TILE_PANELS 2
#else
#define DENSE_TILE_PANELS 1
#endif
#define DENSE_VECS (DENSE_TILE_PANELS * DENSE_PANEL_VECS) /* weight vectors per k of a tile */
#define DENSE_MR (12 / DENSE_PANEL_VECS) /* 12, 6 or 3 rows for 16, 8 or 4 lanes */
#define DENSE_KC (384 / DENSE_TILE_PANELS) /* the tile's panel blocks: 24 KB */
#define DENSE_SUB_ROWS 48 /* a multiple of every DENSE_MR */
#define DENSE_GELU 1
#define DENSE_ACCUMULATE 2

/* One tile: rows x cols (<= DENSE_MR x vecs * SIMD_LANES) of y, over the K block [k0, k0 + kc);
 * weight vector v of a k comes from panel v / DENSE_PANEL_VECS (panel_stride floats apart).
 * Inlined with constant `rows` and `vecs`, so the accumulators live in registers. */
INLINE void dense_tile(const float *x, ptrdiff_t ldx, const float *panel, ptrdiff_t panel_stride, ptrdiff_t kc,
                       float *y, ptrdiff_t ldy, const int rows, const int vecs, ptrdiff_t cols, const float *bias,
                       int first, int last, int flags) {
    vf acc[DENSE_MR][DENSE_VECS];
    /* a full tile (all but a layer's last columns) takes whole-vector loads and stores, which
     * keep its epilogue straight-line code */
    const int full = cols >= vecs * SIMD_LANES;
    for (int i = 0; i < rows; i++) {
        for (int v = 0; v < vecs; v++) {
            const ptrdiff_t n = full ? SIMD_LANES : cols - v * SIMD_LANES;
            vf start = load_part(y + i * ldy + v * SIMD_LANES, first && !(flags & DENSE_ACCUMULATE) ? 0 : n);
            if (first && bias) start += load_part(bias + v * SIMD_LANES, n);
            acc[i][v] = start;
        }
    }
    for (ptrdiff_t k = 0; k < kc; k++) {
        vf w[DENSE_VECS];
        for (int v = 0; v < vecs; v++)
            w[v] = load_vf(panel + v / DENSE_PANEL_VECS * panel_stride + k * DENSE_NR + v % DENSE_PANEL_VECS * SIMD_LANES);
        for (int i = 0; i < rows; i++) {
            const vf xv = x[i * ldx + k] - (vf){0}; /* a broadcast load (x - 0 is x, -0 included) */
            for (int v = 0; v < vecs; v++) acc[i][v] += xv * w[v];
        }
    }
    if (last && (flags & DENSE_GELU))
        for (int i = 0; i < rows; i++)
            for (int v = 0; v < vecs; v++) acc[i][v] = gelu_vf(acc[i][v]);
    if (full)
        for (int i = 0; i < rows; i++)
            for (int v = 0; v < vecs; v++) store_vf(y + i * ldy + v * SIMD_LANES, acc[i][v]);
    else
        for (int i = 0; i < rows; i++)
            for (int v = 0; v < vecs; v++) store_part(y + i * ldy + v * SIMD_LANES, acc[i][v], cols - v * SIMD_LANES);
}

/* y[m] = x[m] W^T (+ bias) (+ y[m] with DENSE_ACCUMULATE) (GELU'd with DENSE_GELU) for rows
 * m in [row_start, row_stop); x: [rows, in_dims] with row stride ldx, y with stride ldy,
 * panels: W packed as described above. */
static void dense_rows(const float *x, ptrdiff_t ldx, const float *panels, const float *bias, float *y, ptrdiff_t ldy,
                       ptrdiff_t in_dims, ptrdiff_t out_dims, int flags, ptrdiff_t row_start, ptrdiff_t row_stop) {
    const ptrdiff_t tile_cols = DENSE_TILE_PANELS * DENSE_NR, panel_stride = DENSE_NR * in_dims;
    for (ptrdiff_t k0 = 0; k0 < in_dims; k0 += DENSE_KC) {
        const ptrdiff_t kc = in_dims - k0 < DENSE_KC ? in_dims - k0 : DENSE_KC;
        const int first = k0 == 0, last = k0 + kc == in_dims;
        for (ptrdiff_t n = 0; n < out_dims; n += tile_cols) {
            const float *panel = panels + n * in_dims + k0 * DENSE_NR, *bn = bias ? bias + n : NULL;
            const ptrdiff_t cols = out_dims - n < tile_cols ? out_dims - n : tile_cols;
            /* a last tile narrower than its panels reads only the panels it has */
            const int vecs = (int)((cols + DENSE_NR - 1) / DENSE_NR) * DENSE_PANEL_VECS;
            for (ptrdiff_t m = row_start; m < row_stop; m += DENSE_MR) {
                const float *xm = x + m * ldx + k0;
                float *ym = y + m * ldy + n;
                const int rows = row_stop - m < DENSE_MR ? (int)(row_stop - m) : DENSE_MR;
                switch (rows * 8 + vecs) {
#define DENSE_TILE_VECS(r, v)                                                                                          \
    case r * 8 + v:                                                                                                    \
        dense_tile(xm, ldx, panel, panel_stride, kc, ym, ldy, r, v, cols, bn, first, last, flags);                     \
        break;
#if DENSE_VECS == DENSE_PANEL_VECS
#define DENSE_TILE(r) DENSE_TILE_VECS(r, DENSE_VECS)
#else
#define DENSE_TILE(r) DENSE_TILE_VECS(r, DENSE_PANEL_VECS) DENSE_TILE_VECS(r, DENSE_VECS)
#endif
                    DENSE_TILE(1) DENSE_TILE(2) DENSE_TILE(3)
#if DENSE_MR > 3
                    DENSE_TILE(4) DENSE_TILE(5) DENSE_TILE(6)
#endif
#if DENSE_MR > 6
                    DENSE_TILE(7) DENSE_TILE(8) DENSE_TILE(9) DENSE_TILE(10) DENSE_TILE(11) DENSE_TILE(12)
#endif
#undef DENSE_TILE
#undef DENSE_TILE_VECS
                }
            }
        }
    }
}

/* Scratch rows for a Swin block half: DENSE_SUB_ROWS rows of `cols` floats, or NULL. */
static float *sub_rows_scratch(ptrdiff_t cols) { return malloc(sizeof(float) * DENSE_SUB_ROWS * (size_t)cols); }

/* y = LayerNorm(x) W^T (+ bias) for rows [row_start, row_stop) of x [rows, in_dims]: a
 * pre-norm block's first projection (Swin's q/k/v) or a patch merging's reduction. Returns 0
 * when out of memory. */
static int norm_dense_rows(const float *x, ptrdiff_t in_dims, const float *norm_w, const float *norm_b, float eps,
                           const float *panels, const float *bias, float *y, ptrdiff_t out_dims, ptrdiff_t row_start,
                           ptrdiff_t row_stop) {
    float *normed = sub_rows_scratch(in_dims);
    if (!normed) return 0;
    for (ptrdiff_t m = row_start; m < row_stop; m += DENSE_SUB_ROWS) {
        const ptrdiff_t n = row_stop - m < DENSE_SUB_ROWS ? row_stop - m : DENSE_SUB_ROWS;
        layer_norm_rows(x + m * in_dims, NULL, NULL, normed, norm_w, norm_b, eps, in_dims, 0, n);
        dense_rows(normed, in_dims, panels, bias, y + m * out_dims, out_dims, in_dims, out_dims, 0, 0, n);
    }
    free(normed);
    return 1;
}

/* A pre-norm Swin block's second half for rows [row_start, row_stop) of the residual stream
 * x [rows, dims], in place: x += attn Wo^T + bo; x += fc2(GELU(fc1(LayerNorm_after(x)))).
 * Returns 0 when out of memory (x untouched). */
static int swin_mlp_rows(const struct swin_weights *w, float *x, const float *attn, ptrdiff_t row_start,
                         ptrdiff_t row_stop) {
    const ptrdiff_t dims = w->dims, hidden = w->hidden;
    float *normed = sub_rows_scratch(dims), *inner = sub_rows_scratch(hidden);
    if (!normed || !inner) {
        free(normed), free(inner);
        return 0;
    }
    for (ptrdiff_t m = row_start; m < row_stop; m += DENSE_SUB_ROWS) {
        const ptrdiff_t n = row_stop - m < DENSE_SUB_ROWS ? row_stop - m : DENSE_SUB_ROWS;
        float *xm = x + m * dims;
        dense_rows(attn + m * dims, dims, w->proj_w, w->proj_b, xm, dims, dims, dims, DENSE_ACCUMULATE, 0, n);
        layer_norm_rows(xm, NULL, NULL, normed, w->norm_after_w, w->norm_after_b, w->eps, dims, 0, n);
        dense_rows(normed, dims, w->fc1_w, w->fc1_b, inner, hidden, dims, hidden, DENSE_GELU, 0, n);
        dense_rows(inner, hidden, w->fc2_w, w->fc2_b, xm, dims, hidden, dims, DENSE_ACCUMULATE, 0, n);
    }
    free(normed), free(inner);
    return 1;
}
