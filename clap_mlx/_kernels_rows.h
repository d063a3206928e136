/* Row kernels: GELU (+ bias), softmax (+ scale, + additive bias), layer norm (+ residual), the
 * AFF blend. */

/* x * Phi(x) = relu(x) - |x| Phi(-|x|), with Phi(-|x|) = erfc(|x| / sqrt 2) / 2 from
 * Abramowitz & Stegun 7.1.26 (max abs error of the GELU 2.5e-7): the same formula as the
 * NumPy fallback in ops.py, so both paths agree to float32 rounding. In target-width
 * vectors: the compiler's own vectorisation of the scalar form ran at a third of this. */
INLINE vf gelu_vf(vf x) {
    const float k = 4.31700850f; /* sqrt(2) / 0.3275911 */
    vf a = (vf)((vi)x & 0x7fffffff);
    a = select_vf(a > 15.0f, VECTOR_SPLAT(15.0f), a); /* the tail underflows there; keeps inf finite, NaN NaN */
    vf t = k / (k + a);
    vf p = t * 0.5307027145f - 0.7265760135f;
    p = p * t + 0.7107068705f;
    p = p * t - 0.1422483680f;
    p = p * t + 0.1274147960f;
    vf tail = a * t * p * exp_vf(-0.5f * a * a);
    return (vf)(~(vi)(x < 0.0f) & (vi)x) - tail; /* relu(x) - tail */
}

static void gelu_rows(const float *src, float *dst, const float *bias, ptrdiff_t cols, ptrdiff_t row_start,
                      ptrdiff_t row_stop) {
    for (ptrdiff_t i = row_start; i < row_stop; i++) {
        const float *x = src + i * cols;
        float *y = dst + i * cols;
        ptrdiff_t j = 0;
        for (; j + SIMD_LANES <= cols; j += SIMD_LANES) {
            vf v = load_vf(x + j);
            if (bias) v += load_vf(bias + j);
            store_vf(y + j, gelu_vf(v));
        }
        if (j < cols) { /* the row's tail through one zero-padded vector */
            float part[SIMD_LANES] = {0};
            for (ptrdiff_t l = j; l < cols; l++) part[l - j] = x[l] + (bias ? bias[l] : 0.0f);
            vf v = gelu_vf(load_vf(part));
            memcpy(y + j, &v, (size_t)(cols - j) * sizeof(float));
        }
    }
}

/* The two accumulator vectors' lanes as a tree (vf_sum), not a 2 * SIMD_LANES-step chain of
 * dependent adds: for a 96-wide row the chains of a layer norm's two sums took longer than
 * its passes over the row. */
INLINE float lanes_sum(const float *acc) {
    vf halves[2];
    memcpy(halves, acc, sizeof halves);
    return vf_sum(halves[0] + halves[1]);
}

INLINE float row_max(const float *x, ptrdiff_t cols) {
    float acc[ACC_LANES];
    for (int l = 0; l < ACC_LANES; l++) acc[l] = -__builtin_inff();
    ptrdiff_t j = 0;
    for (; j + ACC_LANES <= cols; j += ACC_LANES)
        for (int l = 0; l < ACC_LANES; l++) acc[l] = x[j + l] > acc[l] ? x[j + l] : acc[l];
    float m = -__builtin_inff();
    for (; j < cols; j++) m = x[j] > m ? x[j] : m;
    vf halves[2];
    memcpy(halves, acc, sizeof halves);
    const float lanes = vf_max(select_vf(halves[1] > halves[0], halves[1], halves[0]));
    return lanes > m ? lanes : m;
}

/* y = exp(y - shift) in place; returns the sum of the new values. */
INLINE float exp_shifted_sum(float *y, float shift, ptrdiff_t cols) {
    float acc[ACC_LANES] = {0};
    float tail = 0.0f;
    ptrdiff_t j = 0;
    for (; j + ACC_LANES <= cols; j += ACC_LANES) {
        for (int l = 0; l < ACC_LANES; l++) {
            float e = exp_approx(y[j + l] - shift);
            y[j + l] = e;
            acc[l] += e;
        }
    }
    for (; j < cols; j++) {
        y[j] = exp_approx(y[j] - shift);
        tail += y[j];
    }
    return lanes_sum(acc) + tail;
}

/* 1 / (1 + exp(-z)) through exp of -|z| only (exp_vf has no overflow guard): e / (1 + e)
 * for z < 0. +-inf give 1 and 0, NaN stays NaN. */
INLINE vf sigmoid_vf(vf z) {
    const vf e = exp_vf(-(vf)((vi)z & 0x7fffffff));
    const vf t = 1.0f / (1.0f + e);
    return select_vf(z < 0.0f, e * t, t);
}

/* Attentional feature fusion's blend, row i: 2 (r + sigmoid(local + global) (x - r)), with
 * global[i / item_rows] (one pooled row per batch item): the gate and the blend in one pass
 * instead of six over the patch map. */
static void aff_blend_rows(const float *x, const float *residual, const float *local, const float *global,
                           ptrdiff_t item_rows, ptrdiff_t cols, float *out, ptrdiff_t row_start, ptrdiff_t row_stop) {
    for (ptrdiff_t i = row_start; i < row_stop; i++) {
        const float *xi = x + i * cols, *ri = residual + i * cols, *li = local + i * cols;
        const float *gi = global + (i / item_rows) * cols;
        float *oi = out + i * cols;
        for (ptrdiff_t j = 0; j < cols; j += SIMD_LANES) {
            const ptrdiff_t n = cols - j; /* the row's tail through zero-padded vectors */
            const vf xv = load_part(xi + j, n), rv = load_part(ri + j, n);
            const vf gate = sigmoid_vf(load_part(li + j, n) + load_part(gi + j, n));
            store_part(oi + j, 2.0f * (rv + gate * (xv - rv)), n);
        }
    }
}

/* Row i gets softmax(scale * src[i] + add[i % add_rows]); -inf scores get exactly 0 and
 * a row of -inf gives NaN, as torch and mx.softmax. */
static void softmax_rows(const float *src, float *dst, float scale, const float *add, ptrdiff_t add_rows,
                         ptrdiff_t cols, ptrdiff_t row_start, ptrdiff_t row_stop) {
    for (ptrdiff_t i = row_start; i < row_stop; i++) {
        const float *x = src + i * cols;
        float *y = dst + i * cols;
        if (add) {
            const float *b = add + (i % add_rows) * cols;
            for (ptrdiff_t j = 0; j < cols; j++) y[j] = scale * x[j] + b[j];
        } else {
            for (ptrdiff_t j = 0; j < cols; j++) y[j] = scale * x[j];
        }
        float inverse = 1.0f / exp_shifted_sum(y, row_max(y, cols), cols);
        for (ptrdiff_t j = 0; j < cols; j++) y[j] *= inverse;
    }
}

/* dst[i] = LayerNorm(src[i] (+ residual[i])) with biased variance, as torch; the sum is
 * also written to sum_dst when given (the residual stream of a pre-norm block). */
static void layer_norm_rows(const float *src, const float *residual, float *sum_dst, float *dst,
                            const float *weight, const float *bias, float eps, ptrdiff_t cols, ptrdiff_t row_start,
                            ptrdiff_t row_stop) {
    for (ptrdiff_t i = row_start; i < row_stop; i++) {
        const float *x = src + i * cols;
        float *y = dst + i * cols;
        if (residual) {
            const float *r = residual + i * cols;
            float *s = sum_dst ? sum_dst + i * cols : y;
            for (ptrdiff_t j = 0; j < cols; j++) s[j] = x[j] + r[j];
            x = s;
        }
        float acc[ACC_LANES] = {0};
        float tail = 0.0f;
        ptrdiff_t j = 0;
        for (; j + ACC_LANES <= cols; j += ACC_LANES)
            for (int l = 0; l < ACC_LANES; l++) acc[l] += x[j + l];
        for (; j < cols; j++) tail += x[j];
        float mean = (lanes_sum(acc) + tail) / (float)cols;
        for (int l = 0; l < ACC_LANES; l++) acc[l] = 0.0f;
        tail = 0.0f;
        for (j = 0; j + ACC_LANES <= cols; j += ACC_LANES) {
            for (int l = 0; l < ACC_LANES; l++) {
                float d = x[j + l] - mean;
                acc[l] += d * d;
            }
        }
        for (; j < cols; j++) tail += (x[j] - mean) * (x[j] - mean);
        float variance = (lanes_sum(acc) + tail) / (float)cols;
        float inverse_std = 1.0f / __builtin_sqrtf(variance + eps);
        for (j = 0; j < cols; j++) {
            float v = (x[j] - mean) * inverse_std;
            if (weight) v *= weight[j];
            if (bias) v += bias[j];
            y[j] = v;
        }
    }
}

