/* 64-token multi-head window attention from one packed q/k/v projection. */

/* Head rows use at most 8 lanes: every head width (8, 16, 24, 32) is a multiple of 8, not
 * of 16. */
#define HEAD_LANES (SIMD_LANES < 8 ? SIMD_LANES : 8)
typedef float vh __attribute__((vector_size(4 * HEAD_LANES)));

INLINE vh load_vh(const float *p) {
    vh v;
    memcpy(&v, p, sizeof v);
    return v;
}
INLINE void store_vh(float *p, vh v) { memcpy(p, &v, sizeof v); }

#define TOKENS 64
#define ROW_VECTORS (TOKENS / SIMD_LANES)
#define MAX_ROW_BLOCK 4

/* Query rows per block: the block's rows share each loaded key and value vector, and its
 * independent accumulators (p.v: rows x chunks <= 12, x86 has 16 vector registers) hide
 * the FMA latency that one row's alone would expose. */
INLINE int row_block(int chunks) { return chunks <= 3 ? 4 : chunks <= 6 ? 2 : 1; }

/* Score vectors per pass over the keys: SCORE_ACCUMULATORS for the block, so they, the key
 * vectors and a broadcast query value stay in registers (16 of AVX-512's 32: a row's 64
 * scores in one pass, each loaded key vector shared by 4 rows). */
#if SIMD_LANES >= 16
#define SCORE_ACCUMULATORS 16
#else
#define SCORE_ACCUMULATORS 8
#endif
INLINE int score_vectors(int block) {
    return SCORE_ACCUMULATORS / block < ROW_VECTORS ? SCORE_ACCUMULATORS / block : ROW_VECTORS;
}

/* scores[r] = exp(scale * q_r k^T + bias_r - its max) for `block` query rows q[r]
 * (unnormalised); returns each row's normaliser in inverse[r]. */
INLINE void score_rows(const float *const *q, const float *keys_t, int head_dims, const float *bias, float scale,
                       const int block, float scores[][TOKENS], float *inverse) {
    const int vectors = score_vectors(block);
    for (int c0 = 0; c0 < TOKENS; c0 += vectors * SIMD_LANES) {
        vf s[MAX_ROW_BLOCK][SCORE_ACCUMULATORS] = {{{0}}};
        for (int d = 0; d < head_dims; d++) {
            vf k[SCORE_ACCUMULATORS];
            for (int v = 0; v < vectors; v++) k[v] = load_vf(keys_t + d * TOKENS + c0 + v * SIMD_LANES);
            for (int r = 0; r < block; r++) {
                const float qd = q[r][d];
                for (int v = 0; v < vectors; v++) s[r][v] += qd * k[v];
            }
        }
        for (int r = 0; r < block; r++) {
            for (int v = 0; v < vectors; v++) {
                const int col = c0 + v * SIMD_LANES;
                vf x = s[r][v] * scale;
                if (bias) x += load_vf(bias + r * TOKENS + col);
                store_vf(scores[r] + col, x);
            }
        }
    }
    for (int r = 0; r < block; r++) {
        vf m = load_vf(scores[r]);
        for (int v = 1; v < ROW_VECTORS; v++) {
            const vf x = load_vf(scores[r] + v * SIMD_LANES);
            m = select_vf(x > m, x, m);
        }
        const float shift = vf_max(m);
        vf sum = {0};
        for (int v = 0; v < ROW_VECTORS; v++) {
            const vf e = exp_vf(load_vf(scores[r] + v * SIMD_LANES) - shift);
            store_vf(scores[r] + v * SIMD_LANES, e);
            sum += e;
        }
        inverse[r] = 1.0f / vf_sum(sum);
    }
}

/* One (window, head) pair with a head width of HEAD_LANES * chunks: scores for a block of
 * query rows, then their p.v with the block's accumulators in registers. rows[t] is token
 * t's packed q/k/v at this head, out_rows[t] its output row (NULL: a padding token, not
 * written). Called with a constant `chunks`, so it is specialised and its loops unrolled. */
INLINE void attention_pair(const float *const *rows, ptrdiff_t dims, const float *bias, float scale,
                           float *const *out_rows, const float *keys_t, const int chunks) {
    const int head_dims = HEAD_LANES * chunks, block = row_block(chunks);
    /* p.v in native vectors plus, where the width is not a multiple of them (24 lanes on
     * AVX-512), one head-lane vector: 8-lane vectors alone would run AVX-512 at half width */
    const int whole = head_dims / SIMD_LANES, rest = head_dims % SIMD_LANES / HEAD_LANES;
    float scores[MAX_ROW_BLOCK][TOKENS];
    float inverse[MAX_ROW_BLOCK];
    for (int i = 0; i < TOKENS; i += block) {
        score_rows(rows + i, keys_t, head_dims, bias ? bias + i * TOKENS : NULL, scale, block, scores, inverse);
        vf o[MAX_ROW_BLOCK][32 / SIMD_LANES] = {{{0}}};
        vh o_rest[MAX_ROW_BLOCK] = {{0}};
        for (int j = 0; j < TOKENS; j++) {
            const float *v = rows[j] + 2 * dims;
            vf value[32 / SIMD_LANES];
            for (int c = 0; c < whole; c++) value[c] = load_vf(v + c * SIMD_LANES);
            const vh value_rest = rest ? load_vh(v + whole * SIMD_LANES) : (vh){0};
            for (int r = 0; r < block; r++) {
                for (int c = 0; c < whole; c++) o[r][c] += scores[r][j] * value[c];
                if (rest) o_rest[r] += scores[r][j] * value_rest;
            }
        }
        for (int r = 0; r < block; r++) {
            float *out = out_rows[i + r];
            if (!out) continue;
            for (int c = 0; c < whole; c++) store_vf(out + c * SIMD_LANES, o[r][c] * inverse[r]);
            if (rest) store_vh(out + whole * SIMD_LANES, o_rest[r] * inverse[r]);
        }
    }
}

/* Starts loading pair n's q/k/v head slices and bias into L2 while the pair before it runs:
 * a window's tokens are rows spread over the map, and a batch's q/k/v (4.7 MB per clip in
 * the first stage) is past L2, so their loads otherwise wait on L3 or memory one by one. */
INLINE void prefetch_pair(const float *qkv, const int32_t *windows, ptrdiff_t window_count, ptrdiff_t tokens,
                          const float *bias, ptrdiff_t bias_count, ptrdiff_t heads, ptrdiff_t head_dims, ptrdiff_t n) {
    const ptrdiff_t item = n / heads, head = n % heads, dims = heads * head_dims;
    const int32_t *window = windows + (item % window_count) * TOKENS;
    const ptrdiff_t first = (item / window_count) * tokens;
    for (int t = 0; t < TOKENS; t++) {
        if (window[t] < 0) continue;
        const char *row = (const char *)(qkv + (first + window[t]) * 3 * dims + head * head_dims);
        for (int part = 0; part < 3; part++) /* q, k and v: head_dims * 4 bytes each, <= 2 lines */
            for (ptrdiff_t byte = 0; byte < head_dims * 4; byte += 64)
                __builtin_prefetch(row + part * dims * 4 + byte, 0, 2);
    }
    if (bias) {
        const char *b = (const char *)(bias + (n % bias_count) * TOKENS * TOKENS);
        for (int byte = 0; byte < TOKENS * TOKENS * 4; byte += 64) __builtin_prefetch(b + byte, 0, 2);
    }
}

/* Multi-head self-attention inside 64-token windows from a packed q/k/v projection, for
 * head widths of 8, 16, 24 or 32, one (window, head) pair at a time: scores = scale * q k^T
 * + bias, softmax, times v, all inside L1. qkv is [batch, tokens, 3, heads, head_dims] (the
 * output of one fused projection GEMM over the tokens in any order), out is [batch, tokens,
 * heads, head_dims]. Window item n / heads is window (n / heads) % window_count of batch
 * element (n / heads) / window_count; windows[w] lists its 64 tokens, -1 standing for a
 * padding token whose projection is `pad` [3 * dims] and whose output is dropped, so the
 * windows are read and written in place, without gathering them. bias is [bias_count, 64,
 * 64], pair n using bias n % bias_count. For Swin's windows this replaces thousands of tiny
 * batched BLAS calls; ops.py takes MLX's path for other shapes. */
static void attention_pairs(const float *qkv, float *out, const int32_t *windows, ptrdiff_t window_count,
                            ptrdiff_t tokens, const float *pad, const float *bias, ptrdiff_t bias_count, float scale,
                            ptrdiff_t heads, ptrdiff_t head_dims, ptrdiff_t pair_start, ptrdiff_t pair_stop) {
    const ptrdiff_t dims = heads * head_dims;
    float keys_t[32 * TOKENS]; /* [head_dims, tokens]: k transposed so score rows are contiguous */
    const float *rows[TOKENS];
    float *out_rows[TOKENS];
    for (ptrdiff_t n = pair_start; n < pair_stop; n++) {
        const ptrdiff_t item = n / heads, head = n % heads;
        const int32_t *window = windows + (item % window_count) * TOKENS;
        const ptrdiff_t first = (item / window_count) * tokens; /* the batch element's first token */
        if (n + 1 < pair_stop) prefetch_pair(qkv, windows, window_count, tokens, bias, bias_count, heads, head_dims, n + 1);
        for (int t = 0; t < TOKENS; t++) {
            const int32_t token = window[t];
            rows[t] = (token < 0 ? pad : qkv + (first + token) * 3 * dims) + head * head_dims;
            out_rows[t] = token < 0 ? NULL : out + (first + token) * dims + head * head_dims;
            const float *k = rows[t] + dims;
            for (ptrdiff_t d = 0; d < head_dims; d++) keys_t[d * TOKENS + t] = k[d];
        }
        const float *pair_bias = bias ? bias + (n % bias_count) * TOKENS * TOKENS : NULL;
        /* constant chunk counts: one specialised copy per head width */
        switch (head_dims / HEAD_LANES) {
        case 1: attention_pair(rows, dims, pair_bias, scale, out_rows, keys_t, 1); break;
        case 2: attention_pair(rows, dims, pair_bias, scale, out_rows, keys_t, 2); break;
        case 3: attention_pair(rows, dims, pair_bias, scale, out_rows, keys_t, 3); break;
        case 4: attention_pair(rows, dims, pair_bias, scale, out_rows, keys_t, 4); break;
#if HEAD_LANES < 8
        case 6: attention_pair(rows, dims, pair_bias, scale, out_rows, keys_t, 6); break;
        case 8: attention_pair(rows, dims, pair_bias, scale, out_rows, keys_t, 8); break;
#endif
        default: break; /* the bindings accept only 8, 16, 24 and 32 */
        }
    }
}
