/* Few-rows linear layer: y = x W^T (+ bias) with W in nn.Linear's own [out, in] layout.
 *
 * A text label is ~8 tokens, so its GEMMs have ~8 rows and stream the weights once: BLAS
 * reaches a third of the memory bandwidth on that shape. Here a block of GEMM_W_ROWS
 * weight rows (contiguous in K, read in place: no packed copy) meets GEMM_X_ROWS input
 * rows at a time, their dot products held in vector accumulators over K and summed across
 * lanes at the end. The input row blocks are the inner loop, so a weight block comes from
 * memory once and from L1 for the other row blocks; while the first row block runs, the
 * next weight block is prefetched, so memory keeps streaming during the L1-bound passes.
 * Callers split the output columns across the cores. */

/* The register block: GEMM_X_ROWS x GEMM_W_ROWS accumulators and GEMM_W_ROWS weight vectors
 * (the input rows are read as FMA operands). 4 x 3 fills the 16 registers of AVX2 and SSE
 * (measured on AVX2 against 3 x 4, 2 x 4 and 6 x 2: fewer passes over a block); AVX-512's 32
 * take 6 x 4, so a ~9-token label's rows take 2 passes over a weight block instead of 3
 * (measured on an AVX-512 Xeon, one core, 768 -> 2304 and 3072 -> 768 at 5-16 rows: 1.1-2x
 * faster than 4 x 3, and than 8 x 3, 5 x 4 and 4 x 4 at 12-16 rows). */
#if SIMD_LANES >= 16
#define GEMM_X_ROWS 6
#define GEMM_W_ROWS 4
#else
#define GEMM_X_ROWS 4
#define GEMM_W_ROWS 3
#endif
/* Prefetching the next block pays while both blocks fit in L1 (measured on AVX2: K = 768
 * gains ~20%, K = 3072 loses ~5%, its 36 KB block evicting the one in use). Into every cache
 * level (prefetcht0): a non-temporal prefetch made K = 768 4-5x slower on an AVX-512 Xeon. */
#define GEMM_PREFETCH_MAX_IN_DIMS 1024

/* x_rows x w_rows dot products over the lanes-wide part of K: inlined with constant block
 * sizes, so the loops unroll and the accumulators live in registers. */
INLINE void block_dots(const float *x, const float *w, ptrdiff_t in_dims, int x_rows, int w_rows, const float *next,
                       vf acc[GEMM_X_ROWS][GEMM_W_ROWS]) {
    for (int i = 0; i < x_rows; i++)
        for (int j = 0; j < w_rows; j++) acc[i][j] = (vf){0};
    for (ptrdiff_t k = 0; k + SIMD_LANES <= in_dims; k += SIMD_LANES) {
        vf wv[GEMM_W_ROWS];
        for (int j = 0; j < w_rows; j++) wv[j] = load_vf(w + j * in_dims + k);
        if (next)
            for (int j = 0; j < GEMM_W_ROWS; j++) __builtin_prefetch(next + j * in_dims + k, 0, 3);
        for (int i = 0; i < x_rows; i++) {
            vf xv = load_vf(x + i * in_dims + k);
            for (int j = 0; j < w_rows; j++) acc[i][j] += xv * wv[j];
        }
    }
}

INLINE void linear_block(const float *x, const float *w, const float *bias, float *y, ptrdiff_t in_dims,
                         ptrdiff_t out_dims, int x_rows, int w_rows, const float *next) {
    vf acc[GEMM_X_ROWS][GEMM_W_ROWS];
    if (next) /* two copies of the loop: one without the prefetch test (3% faster) */
        block_dots(x, w, in_dims, x_rows, w_rows, next, acc);
    else
        block_dots(x, w, in_dims, x_rows, w_rows, NULL, acc);
    float tail[GEMM_X_ROWS][GEMM_W_ROWS] = {{0}};
    for (ptrdiff_t k = in_dims / SIMD_LANES * SIMD_LANES; k < in_dims; k++)
        for (int i = 0; i < x_rows; i++)
            for (int j = 0; j < w_rows; j++) tail[i][j] += x[i * in_dims + k] * w[j * in_dims + k];
    for (int i = 0; i < x_rows; i++)
        for (int j = 0; j < w_rows; j++) y[i * out_dims + j] = vf_sum(acc[i][j]) + tail[i][j] + (bias ? bias[j] : 0.0f);
}

/* y[m, n] = dot(x[m], w[n]) (+ bias[n]) for every row m < rows and the output columns
 * n in [col_start, col_stop); x: [rows, in_dims], w: [out_dims, in_dims], y: [rows, out_dims]. */
static void linear_cols(const float *x, const float *w, const float *bias, float *y, ptrdiff_t rows,
                        ptrdiff_t in_dims, ptrdiff_t out_dims, ptrdiff_t col_start, ptrdiff_t col_stop) {
    for (ptrdiff_t n = col_start; n < col_stop; n += GEMM_W_ROWS) {
        const int w_rows = col_stop - n < GEMM_W_ROWS ? (int)(col_stop - n) : GEMM_W_ROWS;
        const float *wn = w + n * in_dims, *bn = bias ? bias + n : NULL;
        /* the next block, when it is a whole one (a prefetch never reads past the weight) */
        const int prefetch = n + 2 * GEMM_W_ROWS <= col_stop && in_dims <= GEMM_PREFETCH_MAX_IN_DIMS;
        for (ptrdiff_t m = 0; m < rows; m += GEMM_X_ROWS) {
            const int x_rows = rows - m < GEMM_X_ROWS ? (int)(rows - m) : GEMM_X_ROWS;
            const float *xm = x + m * in_dims, *next = prefetch && m == 0 ? wn + GEMM_W_ROWS * in_dims : NULL;
            float *ym = y + m * out_dims + n;
            /* one case per block shape: each is linear_block unrolled for its sizes */
            switch (x_rows * 8 + w_rows) {
#define LINEAR_BLOCK(xr, wr)                                                                                           \
    case xr * 8 + wr:                                                                                                  \
        linear_block(xm, wn, bn, ym, in_dims, out_dims, xr, wr, next);                                                 \
        break;
#define LINEAR_ROW(xr) LINEAR_BLOCK(xr, 1) LINEAR_BLOCK(xr, 2) LINEAR_BLOCK(xr, 3) LINEAR_BLOCK_4(xr)
#if GEMM_W_ROWS >= 4
#define LINEAR_BLOCK_4(xr) LINEAR_BLOCK(xr, 4)
#else
#define LINEAR_BLOCK_4(xr)
#endif
                LINEAR_ROW(1) LINEAR_ROW(2) LINEAR_ROW(3) LINEAR_ROW(4)
#if GEMM_X_ROWS >= 5
                LINEAR_ROW(5)
#endif
#if GEMM_X_ROWS >= 6
                LINEAR_ROW(6)
#endif
#undef LINEAR_ROW
#undef LINEAR_BLOCK_4
#undef LINEAR_BLOCK
            }
        }
    }
}
