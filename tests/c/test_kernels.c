/* C-level correctness test of clap_mlx's kernels (clap_mlx/_kernels_simd.h) against double
 * precision references, for every SIMD variant the CPU runs. Built and run by
 * tests/test_kernels_c.py, natively and cross-compiled for aarch64 under qemu-user, so the
 * kernels are tested on an architecture without the Python bindings' help.
 *
 *   cc -O3 -I clap_mlx -c clap_mlx/_kernels_{avx512,avx2,baseline,dispatch}.c
 *   cc -O3 -x c -DSIMD_LANES=16 -DKERNEL_TABLE=kernels_lanes16 '-DKERNEL_NAME="lanes16"' \
 *       -c clap_mlx/_kernels_impl.h -o lanes16.o
 *   cc -O3 -I clap_mlx -c clap_mlx/_kernels_team.c
 *   cc -O1 -I clap_mlx tests/c/test_kernels.c *.o -lm -pthread
 *
 * Prints one line per check and variant; exits 1 if any check fails. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_kernels_simd.h"
#include "_kernels_team.h"

/* _kernels_impl.h built a fourth time with 16 lanes for the build's default target (see
 * tests/test_kernels_c.py): the AVX-512 variant's code (its vector and head widths, score
 * columns) on any CPU, where the AVX-512 variant itself may not run. */
extern const struct kernel_table kernels_lanes16;

static int failures = 0;

static void check(const char *variant, const char *what, double error, double bound) {
    int ok = error <= bound; /* a NaN error fails */
    printf("%-8s %-40s max error %.3g (bound %.3g) %s\n", variant, what, error, bound, ok ? "ok" : "FAIL");
    if (!ok) failures++;
}

static uint64_t state = 42;

static double uniform(void) { /* in [-1, 1) */
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(state >> 11) / (double)(1ULL << 52) - 1.0;
}

static float *random_floats(size_t n, double scale, double offset) {
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(offset + scale * uniform());
    return x;
}

static double gelu_reference(double x) { return 0.5 * x * erfc(-x / sqrt(2.0)); }

static void test_gelu(const struct kernel_table *k) {
    enum { ROWS = 7, COLS = 1001 }; /* odd width: vector body and scalar tail */
    float *x = random_floats(ROWS * COLS, 7.0, 0.0), *bias = random_floats(COLS, 1.0, 0.0);
    float *y = malloc(sizeof(float) * ROWS * COLS);
    k->gelu_rows(x, y, bias, COLS, 0, ROWS);
    double error = 0.0;
    for (int i = 0; i < ROWS * COLS; i++) error = fmax(error, fabs(y[i] - gelu_reference((double)x[i] + bias[i % COLS])));
    /* the approximation's 2.5e-7 plus float32 rounding of outputs up to 8 (half an ulp: 4.8e-7) */
    check(k->name, "gelu(x + bias), |x + bias| <= 8", error, 7.5e-7);

    float edges[4] = {INFINITY, -INFINITY, NAN, 0.0f}, out[4];
    k->gelu_rows(edges, out, NULL, 4, 0, 1);
    check(k->name, "gelu(inf) = inf, gelu(-inf) = 0, NaN, 0",
          (out[0] == INFINITY && out[1] == 0.0f && isnan(out[2]) && out[3] == 0.0f) ? 0.0 : 1.0, 0.0);
    free(x), free(bias), free(y);
}

static void test_aff_blend(const struct kernel_table *k) {
    enum { ITEMS = 3, ITEM_ROWS = 5, ROWS = ITEMS * ITEM_ROWS, COLS = 101 }; /* odd width: a tail */
    float *x = random_floats(ROWS * COLS, 4.0, 0.0), *r = random_floats(ROWS * COLS, 4.0, 0.0);
    float *local = random_floats(ROWS * COLS, 30.0, 0.0), *global = random_floats(ITEMS * COLS, 30.0, 0.0);
    float *out = malloc(sizeof(float) * ROWS * COLS);
    k->aff_blend_rows(x, r, local, global, ITEM_ROWS, COLS, out, 0, ROWS);
    double error = 0.0;
    for (int i = 0; i < ROWS * COLS; i++) {
        const double z = (double)local[i] + global[(i / COLS / ITEM_ROWS) * COLS + i % COLS];
        const double want = 2.0 * (r[i] + (x[i] - (double)r[i]) / (1.0 + exp(-z)));
        error = fmax(error, fabs(out[i] - want) / (1.0 + fabs(x[i]) + fabs(r[i]))); /* ulps of the inputs' size */
    }
    check(k->name, "aff blend 2 (r + sigmoid(l + g) (x - r))", error, 1e-6);

    /* in place over local; a gate of +-inf is exactly 1 or 0, NaN stays NaN */
    float ex[4] = {3.0f, 3.0f, 3.0f, 3.0f}, er[4] = {1.0f, 1.0f, 1.0f, 1.0f};
    float el[4] = {INFINITY, -INFINITY, NAN, 0.0f}, eg[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    k->aff_blend_rows(ex, er, el, eg, 1, 4, el, 0, 1);
    check(k->name, "aff blend gates 1, 0, NaN, 1/2 in place",
          (el[0] == 6.0f && el[1] == 2.0f && isnan(el[2]) && el[3] == 4.0f) ? 0.0 : 1.0, 0.0);
    free(x), free(r), free(local), free(global), free(out);
}

static void test_softmax(const struct kernel_table *k) {
    enum { ROWS = 12, COLS = 77, ADD_ROWS = 3 };
    float *x = random_floats(ROWS * COLS, 30.0, 0.0), *add = random_floats(ADD_ROWS * COLS, 2.0, 0.0);
    for (int j = 60; j < COLS; j++) add[COLS + j] = -INFINITY; /* a padding mask on one bias row */
    float *y = malloc(sizeof(float) * ROWS * COLS);
    const float scale = 0.125f;
    k->softmax_rows(x, y, scale, add, ADD_ROWS, COLS, 0, ROWS);
    double error = 0.0;
    for (int i = 0; i < ROWS; i++) {
        double s[COLS], m = -INFINITY, sum = 0.0;
        for (int j = 0; j < COLS; j++) m = fmax(m, s[j] = (double)scale * x[i * COLS + j] + add[(i % ADD_ROWS) * COLS + j]);
        for (int j = 0; j < COLS; j++) sum += (s[j] = exp(s[j] - m));
        for (int j = 0; j < COLS; j++) error = fmax(error, fabs(y[i * COLS + j] - s[j] / sum));
    }
    check(k->name, "softmax(scale * x + add), -inf mask", error, 1e-6);
    free(x), free(add), free(y);
}

static void test_layer_norm(const struct kernel_table *k) {
    enum { ROWS = 9, COLS = 97 };
    float *x = random_floats(ROWS * COLS, 3.0, 0.0), *residual = random_floats(ROWS * COLS, 30.0, 100.0);
    float *w = random_floats(COLS, 1.0, 0.0), *b = random_floats(COLS, 1.0, 0.0);
    float *sum = malloc(sizeof(float) * ROWS * COLS), *y = malloc(sizeof(float) * ROWS * COLS);
    k->layer_norm_rows(x, residual, sum, y, w, b, 1e-5f, COLS, 0, ROWS);
    double error = 0.0, sum_error = 0.0;
    for (int i = 0; i < ROWS; i++) {
        double mean = 0.0, var = 0.0;
        for (int j = 0; j < COLS; j++) mean += (double)x[i * COLS + j] + residual[i * COLS + j];
        mean /= COLS;
        for (int j = 0; j < COLS; j++) {
            double d = (double)x[i * COLS + j] + residual[i * COLS + j] - mean;
            var += d * d;
        }
        var /= COLS;
        for (int j = 0; j < COLS; j++) {
            double total = (double)x[i * COLS + j] + residual[i * COLS + j];
            error = fmax(error, fabs(y[i * COLS + j] - ((total - mean) / sqrt(var + 1e-5) * w[j] + b[j])));
            sum_error = fmax(sum_error, fabs(sum[i * COLS + j] - (float)(x[i * COLS + j] + residual[i * COLS + j])));
        }
    }
    check(k->name, "layer_norm(x + residual) * w + b", error, 2e-5);
    check(k->name, "layer_norm's residual sum (exact)", sum_error, 0.0);
    free(x), free(residual), free(w), free(b), free(sum), free(y);
}

static void test_attention(const struct kernel_table *k, int head_dims) {
    /* 2 batch elements of 187 tokens in 3 windows each: the tokens shuffled, 5 padding slots */
    enum { BATCH = 2, WINDOWS = 3, TOKENS = 64, HEADS = 2, GROUPS = 3, SEQ = WINDOWS * TOKENS - 5 };
    const int dims = HEADS * head_dims, stride = 3 * dims, items = BATCH * WINDOWS;
    float *qkv = random_floats((size_t)BATCH * SEQ * stride, 1.7, 0.0), *pad = random_floats(stride, 1.7, 0.0);
    float *bias = random_floats((size_t)GROUPS * HEADS * TOKENS * TOKENS, 1.7, 0.0);
    for (int i = 0; i < TOKENS * TOKENS; i++)
        if (i % TOKENS >= TOKENS / 2) bias[i] = -1e9f; /* a shifted-window mask on group 0, head 0 */
    int32_t windows[WINDOWS * TOKENS];
    for (int t = 0; t < WINDOWS * TOKENS; t++) windows[t] = t < SEQ ? t : -1;
    for (int t = WINDOWS * TOKENS - 1; t > 0; t--) { /* Fisher-Yates */
        int other = (int)((uniform() + 1.0) / 2.0 * (t + 1)), kept = windows[t];
        windows[t] = windows[other], windows[other] = kept;
    }
    float *out = malloc(sizeof(float) * BATCH * SEQ * dims);
    for (int i = 0; i < BATCH * SEQ * dims; i++) out[i] = 1e30f; /* a row left unwritten fails */
    const float scale = 1.0f / sqrtf((float)head_dims);
    k->attention_pairs(qkv, out, windows, WINDOWS, SEQ, pad, bias, GROUPS * HEADS, scale, HEADS, head_dims, 0,
                       items * HEADS);
    double error = 0.0;
    for (int item = 0; item < items; item++) {
        const int32_t *window = windows + (item % WINDOWS) * TOKENS;
        const float *rows[TOKENS];
        for (int t = 0; t < TOKENS; t++)
            rows[t] = window[t] < 0 ? pad : qkv + ((size_t)(item / WINDOWS) * SEQ + window[t]) * stride;
        for (int head = 0; head < HEADS; head++) {
            const float *b = bias + (size_t)((item * HEADS + head) % (GROUPS * HEADS)) * TOKENS * TOKENS;
            for (int i = 0; i < TOKENS; i++) {
                if (window[i] < 0) continue; /* a padding token's output is dropped */
                double p[TOKENS], m = -INFINITY, sum = 0.0;
                for (int j = 0; j < TOKENS; j++) {
                    double dot = 0.0;
                    for (int d = 0; d < head_dims; d++)
                        dot += (double)rows[i][head * head_dims + d] * rows[j][dims + head * head_dims + d];
                    m = fmax(m, p[j] = scale * dot + b[i * TOKENS + j]);
                }
                for (int j = 0; j < TOKENS; j++) sum += (p[j] = exp(p[j] - m));
                for (int d = 0; d < head_dims; d++) {
                    double o = 0.0;
                    for (int j = 0; j < TOKENS; j++) o += p[j] / sum * rows[j][2 * dims + head * head_dims + d];
                    const size_t row = (size_t)(item / WINDOWS) * SEQ + window[i];
                    error = fmax(error, fabs(out[row * dims + head * head_dims + d] - o));
                }
            }
        }
    }
    char what[64];
    snprintf(what, sizeof what, "attention, 64 tokens, heads of %d, bias", head_dims);
    check(k->name, what, error, 2e-6);
    free(qkv), free(pad), free(bias), free(out);
}

/* y = x w^T + bias over a column range, against double dot products; the columns outside
 * the range stay untouched. Row counts cover every block of input rows, column counts every
 * block of weight rows, widths the vector body, the scalar tail and the next-block prefetch. */
static void test_linear(const struct kernel_table *k) {
    const int shapes[][3] = {{1, 1, 1}, {2, 7, 5}, {3, 8, 4}, {4, 33, 7}, {5, 64, 3}, {8, 768, 27}, {13, 1030, 11}};
    double error = 0.0;
    int untouched = 1;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int rows = shapes[s][0], in_dims = shapes[s][1], out_dims = shapes[s][2];
        float *x = random_floats((size_t)rows * in_dims, 2.0, 0.5), *w = random_floats((size_t)out_dims * in_dims, 1.0, 0.0);
        float *bias = random_floats(out_dims, 3.0, 0.0), *y = malloc(sizeof(float) * rows * out_dims);
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            const int col_start = out_dims / 3, col_stop = out_dims - out_dims / 4;
            for (int i = 0; i < rows * out_dims; i++) y[i] = 12345.0f;
            k->linear_cols(x, w, with_bias ? bias : NULL, y, rows, in_dims, out_dims, col_start, col_stop);
            for (int m = 0; m < rows; m++) {
                for (int n = 0; n < out_dims; n++) {
                    const float got = y[m * out_dims + n];
                    if (n < col_start || n >= col_stop) {
                        untouched &= got == 12345.0f;
                        continue;
                    }
                    double dot = with_bias ? bias[n] : 0.0, scale = fabs(dot);
                    for (int i = 0; i < in_dims; i++) {
                        dot += (double)x[m * in_dims + i] * w[n * in_dims + i];
                        scale += fabs((double)x[m * in_dims + i] * w[n * in_dims + i]);
                    }
                    error = fmax(error, fabs(got - dot) / (scale + 1e-30));
                }
            }
        }
        free(x), free(w), free(bias), free(y);
    }
    check(k->name, "linear x w^T + bias, error / sum |x w|", error, 1e-6);
    check(k->name, "linear leaves other columns untouched", untouched ? 0.0 : 1.0, 0.0);
}

/* W [out, in] into the dense kernels' panels: [panels][in][DENSE_PANEL_COLS], zero past out. */
static float *pack_panels(const float *w, int out_dims, int in_dims) {
    const int panels = (out_dims + DENSE_PANEL_COLS - 1) / DENSE_PANEL_COLS;
    float *p = calloc((size_t)panels * in_dims * DENSE_PANEL_COLS, sizeof(float));
    for (int n = 0; n < out_dims; n++)
        for (int k = 0; k < in_dims; k++)
            p[((size_t)(n / DENSE_PANEL_COLS) * in_dims + k) * DENSE_PANEL_COLS + n % DENSE_PANEL_COLS] = w[(size_t)n * in_dims + k];
    return p;
}

/* y (+)= x w^T + bias (GELU'd) in double; `scale` gets sum |x w| + |bias| per output. */
static void dense_reference(const float *x, int ldx, const float *w, const float *bias, const float *y_in, int ldy,
                            int rows, int in_dims, int out_dims, int flags, double *out, double *scale) {
    for (int m = 0; m < rows; m++)
        for (int n = 0; n < out_dims; n++) {
            double dot = bias ? bias[n] : 0.0, size = fabs(dot);
            for (int k = 0; k < in_dims; k++) {
                dot += (double)x[m * ldx + k] * w[(size_t)n * in_dims + k];
                size += fabs((double)x[m * ldx + k] * w[(size_t)n * in_dims + k]);
            }
            if (flags & 2) dot += y_in[m * ldy + n], size += fabs(y_in[m * ldy + n]);
            out[m * out_dims + n] = flags & 1 ? gelu_reference(dot) : dot;
            scale[m * out_dims + n] = size;
        }
}

/* Dense rows against double dot products: row counts cover every tile height and a partial
 * one, widths a partial panel (also as the second panel of a two-panel tile, 20) and a last
 * tile one panel wide (33, 40), K past one K block (192 or 384); the row range and the strides
 * of a sub-matrix; bias, residual accumulate and GELU. Rows outside the range stay untouched. */
static void test_dense(const struct kernel_table *k) {
    const int shapes[][3] = {{1, 1, 1}, {7, 5, 16}, {9, 40, 20}, {13, 96, 40}, {30, 300, 33}, {50, 520, 96}};
    double error = 0.0;
    int untouched = 1;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int rows = shapes[s][0], in_dims = shapes[s][1], out_dims = shapes[s][2];
        const int ldx = in_dims + 3, ldy = out_dims + 5, start = rows / 4, stop = rows - rows / 5;
        float *x = random_floats((size_t)rows * ldx, 1.0, 0.1), *w = random_floats((size_t)out_dims * in_dims, 0.5, 0.0);
        float *bias = random_floats(out_dims, 1.0, 0.0), *y0 = random_floats((size_t)rows * ldy, 2.0, 0.0);
        float *panels = pack_panels(w, out_dims, in_dims), *y = malloc(sizeof(float) * rows * ldy);
        double *want = malloc(sizeof(double) * rows * out_dims), *scale = malloc(sizeof(double) * rows * out_dims);
        for (int flags = 0; flags < 4; flags++) {
            const float *b = flags == 1 ? NULL : bias;
            memcpy(y, y0, sizeof(float) * rows * ldy);
            k->dense_rows(x, ldx, panels, b, y, ldy, in_dims, out_dims, flags, start, stop);
            dense_reference(x, ldx, w, b, y0, ldy, rows, in_dims, out_dims, flags, want, scale);
            for (int m = 0; m < rows; m++)
                for (int n = 0; n < ldy; n++) {
                    if (m < start || m >= stop || n >= out_dims) {
                        untouched &= y[m * ldy + n] == y0[m * ldy + n];
                        continue;
                    }
                    error = fmax(error, fabs(y[m * ldy + n] - want[m * out_dims + n]) / (scale[m * out_dims + n] + 1e-30));
                }
        }
        free(x), free(w), free(bias), free(y0), free(panels), free(y), free(want), free(scale);
    }
    check(k->name, "dense x w^T (+ b) (+ y) (gelu), error / sum", error, 1e-6);
    check(k->name, "dense leaves other rows and columns untouched", untouched ? 0.0 : 1.0, 0.0);
}

/* LayerNorm of each row in double (biased variance, as torch). */
static void layer_norm_reference(const double *x, int rows, int cols, const float *w, const float *b, double eps,
                                 float *out) {
    for (int m = 0; m < rows; m++) {
        double mean = 0.0, var = 0.0;
        for (int j = 0; j < cols; j++) mean += x[m * cols + j];
        mean /= cols;
        for (int j = 0; j < cols; j++) var += (x[m * cols + j] - mean) * (x[m * cols + j] - mean);
        var /= cols;
        for (int j = 0; j < cols; j++) out[m * cols + j] = (float)((x[m * cols + j] - mean) / sqrt(var + eps) * w[j] + b[j]);
    }
}

/* norm_dense (as a Swin block's q/k/v) and the Swin MLP half against the same steps in double (each step's float32 input from the
 * previous step's double result): rows past one sub-block (48) and a row range. */
static void test_swin_halves(const struct kernel_table *k) {
    enum { ROWS = 110, DIMS = 40, HIDDEN = 160, START = 3, STOP = 101, N = STOP - START };
    float *x = random_floats(ROWS * DIMS, 1.0, 0.2), *attn = random_floats(ROWS * DIMS, 1.0, 0.0);
    float *weights[12];
    const int sizes[12] = {DIMS, DIMS, 3 * DIMS * DIMS, 3 * DIMS, DIMS * DIMS, DIMS, DIMS, DIMS, HIDDEN * DIMS, HIDDEN, DIMS * HIDDEN, DIMS};
    for (int i = 0; i < 12; i++) weights[i] = random_floats(sizes[i], 0.3, i == 0 || i == 6 ? 1.0 : 0.0);
    float *qkv_p = pack_panels(weights[2], 3 * DIMS, DIMS), *proj_p = pack_panels(weights[4], DIMS, DIMS);
    float *fc1_p = pack_panels(weights[8], HIDDEN, DIMS), *fc2_p = pack_panels(weights[10], DIMS, HIDDEN);
    const struct swin_weights w = {weights[0], weights[1], qkv_p, weights[3], proj_p, weights[5], weights[6],
                                   weights[7], fc1_p, weights[9], fc2_p, weights[11], 1e-5f, DIMS, HIDDEN};
    float *qkv = malloc(sizeof(float) * ROWS * 3 * DIMS), *y = malloc(sizeof(float) * ROWS * DIMS);
    memcpy(y, x, sizeof(float) * ROWS * DIMS);
    int ok = k->norm_dense_rows(x, DIMS, w.norm_before_w, w.norm_before_b, w.eps, w.qkv_w, w.qkv_b, qkv, 3 * DIMS,
                                START, STOP) &&
             k->swin_mlp_rows(&w, y, attn, START, STOP);

    double *xd = malloc(sizeof(double) * N * HIDDEN), *want = malloc(sizeof(double) * N * 3 * DIMS);
    double *scale = malloc(sizeof(double) * N * HIDDEN);
    float *normed = malloc(sizeof(float) * N * DIMS), *inner = malloc(sizeof(float) * N * HIDDEN);
    float *stream = malloc(sizeof(float) * N * DIMS);
    double qkv_error = 0.0, mlp_error = 0.0;
    for (int i = 0; i < N * DIMS; i++) xd[i] = x[START * DIMS + i];
    layer_norm_reference(xd, N, DIMS, weights[0], weights[1], 1e-5, normed);
    dense_reference(normed, DIMS, weights[2], weights[3], NULL, 0, N, DIMS, 3 * DIMS, 0, want, scale);
    for (int i = 0; i < N * 3 * DIMS; i++) qkv_error = fmax(qkv_error, fabs(qkv[START * 3 * DIMS + i] - want[i]) / (scale[i] + 1e-30));
    /* x + attn Wo^T + bo */
    dense_reference(attn + START * DIMS, DIMS, weights[4], weights[5], x + START * DIMS, DIMS, N, DIMS, DIMS, 2, want, scale);
    for (int i = 0; i < N * DIMS; i++) stream[i] = (float)want[i], xd[i] = want[i];
    layer_norm_reference(xd, N, DIMS, weights[6], weights[7], 1e-5, normed);
    dense_reference(normed, DIMS, weights[8], weights[9], NULL, 0, N, DIMS, HIDDEN, 1, xd, scale);
    for (int i = 0; i < N * HIDDEN; i++) inner[i] = (float)xd[i];
    dense_reference(inner, HIDDEN, weights[10], weights[11], stream, DIMS, N, HIDDEN, DIMS, 2, want, scale);
    for (int i = 0; i < N * DIMS; i++) mlp_error = fmax(mlp_error, fabs(y[START * DIMS + i] - want[i]) / (scale[i] + 1e-30));
    int untouched = 1;
    for (int i = 0; i < ROWS * DIMS; i++)
        if (i < START * DIMS || i >= STOP * DIMS) untouched &= y[i] == x[i];
    check(k->name, "norm_dense LN(x) Wqkv^T + b, error / sum", ok ? qkv_error : 1.0, 1e-5);
    check(k->name, "swin x += attn Wo^T + b, += MLP(LN(x))", ok ? mlp_error : 1.0, 1e-5);
    check(k->name, "swin mlp leaves other rows untouched", untouched ? 0.0 : 1.0, 0.0);
    for (int i = 0; i < 12; i++) free(weights[i]);
    free(x), free(attn), free(qkv_p), free(proj_p), free(fc1_p), free(fc2_p), free(qkv), free(y);
    free(xd), free(want), free(scale), free(normed), free(inner), free(stream);
}

/* The helper team: every item of every job taken exactly once, whichever thread takes it, a
 * failed unit reported, and jobs from two callers at once (the second runs alone). */
enum { TEAM_ITEMS = 1000 };

struct team_counts {
    atomic_int count[TEAM_ITEMS];
    atomic_int units, helper_units, fail_at; /* fail_at: the unit start that fails, or -1 */
    pthread_t caller;
};

static int count_unit(void *ctx, ptrdiff_t start, ptrdiff_t stop) {
    struct team_counts *c = ctx;
    for (ptrdiff_t i = start; i < stop; i++) atomic_fetch_add(&c->count[i], 1);
    atomic_fetch_add(&c->units, 1);
    if (!pthread_equal(pthread_self(), c->caller)) atomic_fetch_add(&c->helper_units, 1);
    return start != atomic_load(&c->fail_at);
}

static int team_job(struct team_counts *c, ptrdiff_t start, ptrdiff_t stop, ptrdiff_t unit, int fail_at) {
    for (int i = 0; i < TEAM_ITEMS; i++) atomic_store(&c->count[i], 0);
    atomic_store(&c->units, 0), atomic_store(&c->helper_units, 0), atomic_store(&c->fail_at, fail_at);
    c->caller = pthread_self();
    int ok = team_run(count_unit, c, start, stop, unit);
    for (int i = 0; i < TEAM_ITEMS; i++) /* items of the range once, the others never */
        if (atomic_load(&c->count[i]) != (i >= start && i < stop)) return -1;
    /* split into its units, or one range on the caller (unit 0, or another job running) */
    ptrdiff_t units = start >= stop ? 0 : unit <= 0 ? 1 : (stop - start + unit - 1) / unit;
    return atomic_load(&c->units) == units || (start < stop && atomic_load(&c->units) == 1) ? ok : -1;
}

static void *team_caller(void *arg) {
    struct team_counts *c = arg;
    int wrong = 0;
    for (int job = 0; job < 300; job++) wrong += team_job(c, job % 7, TEAM_ITEMS - job % 5, 1 + job % 40, -1) != 1;
    return (void *)(ptrdiff_t)wrong;
}

/* The batch norm and mel image: 2 planes of 7 frames x 5 mels resized to ratio 2 x width 19
 * (a partial block of frames) with arbitrary taps, and the same planes without taps (14
 * frames in, 2 x 7 out), against double references. */
static void test_mel_image(const struct kernel_table *k) {
    enum { PLANES = 2, FRAMES = 7, MELS = 5, RATIO = 2, WIDTH = 19, OUT = RATIO * WIDTH };
    float *src = random_floats(PLANES * 14 * MELS, 30.0, -40.0), *norm = random_floats(4 * MELS, 0.5, 1.0);
    int32_t taps[OUT * 4];
    float *weights = random_floats(OUT * 4, 1.0, 0.0), *dst = malloc(sizeof(float) * PLANES * OUT * MELS);
    for (int i = 0; i < OUT * 4; i++) taps[i] = (int32_t)((i * 5 + i / 4) % FRAMES);
    double error = 0, plain_error = 0;
    int ok = k->mel_image_planes(src, FRAMES, MELS, norm, taps, weights, RATIO, WIDTH, dst, 0, PLANES);
    for (int p = 0; p < PLANES; p++)
        for (int o = 0; o < OUT; o++)
            for (int m = 0; m < MELS; m++) {
                double expected = 0;
                for (int t = 0; t < 4; t++) {
                    double x = src[(p * FRAMES + taps[o * 4 + t]) * MELS + m];
                    expected += weights[o * 4 + t] * ((x - norm[m]) / norm[MELS + m] * norm[2 * MELS + m] + norm[3 * MELS + m]);
                }
                float got = dst[((p * RATIO + o / WIDTH) * MELS + m) * WIDTH + o % WIDTH];
                error = fmax(error, fabs(got - expected) / (1.0 + fabs(expected)));
            }
    ok = ok && k->mel_image_planes(src, 2 * 7, MELS, norm, NULL, NULL, RATIO, 7, dst, 0, PLANES);
    for (int p = 0; p < PLANES; p++)
        for (int o = 0; o < 14; o++)
            for (int m = 0; m < MELS; m++) {
                double x = src[(p * 14 + o) * MELS + m];
                double expected = (x - norm[m]) / norm[MELS + m] * norm[2 * MELS + m] + norm[3 * MELS + m];
                float got = dst[((p * RATIO + o / 7) * MELS + m) * 7 + o % 7];
                plain_error = fmax(plain_error, fabs(got - expected) / (1.0 + fabs(expected)));
            }
    check(k->name, "mel image (norm, 4-tap resize, layout)", ok ? error : 1.0, 1e-5);
    check(k->name, "mel image without taps", ok ? plain_error : 1.0, 1e-6);
    free(src), free(norm), free(weights), free(dst);
}

static void test_team(void) {
    static struct team_counts c, other;
    int in_use = team_set_helpers(3), wrong = 0, failed_reported = 1, helped = 0;
    for (int job = 0; job < 2000; job++) { /* back to back, the helpers spinning between jobs */
        ptrdiff_t start = job % 13, stop = TEAM_ITEMS - job % 11, unit = 1 + (job * 37) % 97;
        wrong += team_job(&c, start, stop, unit, -1) != 1;
        helped += atomic_load(&c.helper_units) > 0;
    }
    for (int job = 0; job < 20; job++) failed_reported &= team_job(&c, 0, 500, 10, 10 * (job % 50)) == 0;
    wrong += team_job(&c, 0, TEAM_ITEMS, 0, -1) != 1 || atomic_load(&c.helper_units) != 0; /* unit 0: the caller */
    wrong += team_job(&c, 5, 5, 3, -1) != 1;                                                 /* empty range */
    team_set_spin_us(0); /* helpers sleep between jobs: woken for each */
    for (int job = 0; job < 200; job++) wrong += team_job(&c, 0, TEAM_ITEMS, 16, -1) != 1;
    team_set_spin_us(2000);
    pthread_t second;
    pthread_create(&second, NULL, team_caller, &other);
    void *second_wrong;
    wrong += (int)(ptrdiff_t)team_caller(&c);
    pthread_join(second, &second_wrong);
    wrong += (int)(ptrdiff_t)second_wrong;
    printf("team     %d helpers: %d of 2000 jobs shared with them\n", in_use, helped);
    check("team", "every item once, in jobs from 2 callers", wrong, 0);
    check("team", "a failed unit fails its job", failed_reported ? 0.0 : 1.0, 0.0);
    check("team", "helpers took part", in_use == 3 && helped > 0 ? 0.0 : 1.0, 0.0);
    team_set_helpers(0);
    wrong = team_job(&c, 0, TEAM_ITEMS, 8, -1) != 1 || atomic_load(&c.helper_units) != 0;
    check("team", "no helpers in use: the caller alone", wrong, 0);
}

int main(void) {
    const struct kernel_table *variants[4];
    int n = kernels_runnable(variants, 3);
    printf("variants this CPU runs:");
    for (int v = 0; v < n; v++) printf(" %s (%d lanes)", variants[v]->name, variants[v]->lanes);
    printf("\n");
    variants[n++] = &kernels_lanes16;
    for (int v = 0; v < n; v++) {
        test_gelu(variants[v]);
        test_softmax(variants[v]);
        test_layer_norm(variants[v]);
        test_aff_blend(variants[v]);
        for (int head_dims = 8; head_dims <= 32; head_dims += 8) test_attention(variants[v], head_dims);
        test_linear(variants[v]);
        test_dense(variants[v]);
        test_swin_halves(variants[v]);
        test_mel_image(variants[v]);
    }
    test_team();
    printf("%s\n", failures ? "FAILED" : "all kernel checks passed");
    return failures ? 1 : 0;
}
