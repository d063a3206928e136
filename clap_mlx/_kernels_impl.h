/* Fused float32 kernels for clap_mlx.ops: GELU (+ bias), softmax (+ scale, + additive
 * bias), layer norm (+ residual add), the AFF blend, 64-token multi-head window attention,
 * the few-rows linear layer, dense layers over many rows with the Swin block halves built
 * on them, and the audio tower's mel image.
 *
 * Included once per SIMD target by _kernels_<target>.c, which sets SIMD_LANES (the float32
 * lanes of the target's native vector), KERNEL_TABLE and KERNEL_NAME, and compiles this
 * with the target's instructions enabled: every vector here is at most the target's own
 * width (a wider generic vector is split into several registers and, in an AVX2 build of
 * 512-bit code, ran the attention kernel 6.5x slower than MLX's matmuls).
 *
 * MLX's CPU backend runs transcendental elementwise ops one scalar at a time, and NumPy
 * needs ~20 passes over memory for an erf GELU. Each kernel here makes one pass over a row
 * that sits in L1, written so the compiler vectorises it. The kernels work on a row range,
 * so ops.py splits a tensor across the cores with its own threads. `src` and `dst` may be
 * the same buffer (in-place).
 */
#include "_kernels_vec.h"
#include "_kernels_rows.h"
#include "_kernels_attention.h"
#include "_kernels_gemm.h"
#include "_kernels_dense.h"
#include "_kernels_image.h"

const struct kernel_table KERNEL_TABLE = {
    KERNEL_NAME, SIMD_LANES, gelu_rows, softmax_rows, layer_norm_rows, aff_blend_rows, attention_pairs, linear_cols,
    dense_rows, norm_dense_rows, swin_mlp_rows, mel_image_planes,
};
