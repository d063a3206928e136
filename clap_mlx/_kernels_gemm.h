/* Few-rows linear layer: y = x W^T (+ bias) with W in nn.Linear's own [out, in] layout.
 *
 * A text label is ~8 tokens, so its GEMMs have ~8 rows and stream the weights once: BLAS
 * reaches a third of the memory bandwidth on that shape. Here a block of GEMM_W_ROWS
 * weight rows (contiguous in K, read in place: no packed copy) meets GEMM_X_ROWS input
 * rows at a time, their GEMM_X_ROWS x GEMM_W_ROWS dot products held in vector accumulators
 * over K and summed across lanes at the end. The input row blocks are the inner loop, so a
 * weight block comes from memory once and from L1/L2 for the other row blocks. Callers
 * split the output columns across the cores. */

/* 3 x 4 accumulators and 4 weight vectors fill AVX2's 16 registers (the input operand
 * comes from memory). */
#define GEMM_X_ROWS 3
#define GEMM_W_ROWS 4

INLINE float vf_sum(vf v) {
    float total = 0.0f;
    for (int l = 0; l < SIMD_LANES; l++) total += v[l];
    return total;
}

/* y[i][j] for i < x_rows, j < w_rows: inlined with constant block sizes, so the loops
 * unroll and the accumulators live in registers. */
INLINE void linear_block(const float *x, const float *w, const float *bias, float *y, ptrdiff_t in_dims,
                         ptrdiff_t out_dims, int x_rows, int w_rows) {
    vf acc[GEMM_X_ROWS][GEMM_W_ROWS];
    for (int i = 0; i < x_rows; i++)
        for (int j = 0; j < w_rows; j++) acc[i][j] = (vf){0};
    ptrdiff_t k = 0;
    for (; k + SIMD_LANES <= in_dims; k += SIMD_LANES) {
        vf wv[GEMM_W_ROWS];
        for (int j = 0; j < w_rows; j++) wv[j] = load_vf(w + j * in_dims + k);
        for (int i = 0; i < x_rows; i++) {
            vf xv = load_vf(x + i * in_dims + k);
            for (int j = 0; j < w_rows; j++) acc[i][j] += xv * wv[j];
        }
    }
    float tail[GEMM_X_ROWS][GEMM_W_ROWS] = {{0}};
    for (; k < in_dims; k++)
        for (int i = 0; i < x_rows; i++)
            for (int j = 0; j < w_rows; j++) tail[i][j] += x[i * in_dims + k] * w[j * in_dims + k];
    for (int i = 0; i < x_rows; i++)
        for (int j = 0; j < w_rows; j++)
            y[i * out_dims + j] = vf_sum(acc[i][j]) + tail[i][j] + (bias ? bias[j] : 0.0f);
}

/* y[m, n] = dot(x[m], w[n]) (+ bias[n]) for every row m < rows and the output columns
 * n in [col_start, col_stop); x: [rows, in_dims], w: [out_dims, in_dims], y: [rows, out_dims]. */
static void linear_cols(const float *x, const float *w, const float *bias, float *y, ptrdiff_t rows,
                        ptrdiff_t in_dims, ptrdiff_t out_dims, ptrdiff_t col_start, ptrdiff_t col_stop) {
    for (ptrdiff_t n = col_start; n < col_stop; n += GEMM_W_ROWS) {
        const int w_rows = col_stop - n < GEMM_W_ROWS ? (int)(col_stop - n) : GEMM_W_ROWS;
        const float *wn = w + n * in_dims, *bn = bias ? bias + n : NULL;
        for (ptrdiff_t m = 0; m < rows; m += GEMM_X_ROWS) {
            const int x_rows = rows - m < GEMM_X_ROWS ? (int)(rows - m) : GEMM_X_ROWS;
            const float *xm = x + m * in_dims;
            float *ym = y + m * out_dims + n;
            /* one case per block shape: each is linear_block unrolled for its sizes */
            switch (x_rows * 8 + w_rows) {
#define LINEAR_BLOCK(xr, wr)                                                                                           \
    case xr * 8 + wr:                                                                                                  \
        linear_block(xm, wn, bn, ym, in_dims, out_dims, xr, wr);                                                       \
        break;
                LINEAR_BLOCK(1, 1) LINEAR_BLOCK(1, 2) LINEAR_BLOCK(1, 3) LINEAR_BLOCK(1, 4)
                LINEAR_BLOCK(2, 1) LINEAR_BLOCK(2, 2) LINEAR_BLOCK(2, 3) LINEAR_BLOCK(2, 4)
                LINEAR_BLOCK(3, 1) LINEAR_BLOCK(3, 2) LINEAR_BLOCK(3, 3) LINEAR_BLOCK(3, 4)
#undef LINEAR_BLOCK
            }
        }
    }
}
