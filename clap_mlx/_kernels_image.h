/* The audio tower's mel image: transformers' ClapAudioEncoder batch norm and reshape_mel2img
 * in one pass. A plane (one clip's channel, [frames, mels]) goes through the frozen batch norm
 * per mel, is resized along time to ratio * width frames (torch's bicubic: 4 taps per output
 * frame; the frames as they are when `taps` is NULL) and is cut into `ratio` chunks of `width`
 * frames stacked along the frequency axis: an image plane [ratio * mels, width]. On MLX these
 * are ~8 passes over memory (norm, gather, weighting, sum, two transposes). */

#include <stdlib.h>

#define MEL_IMAGE_BLOCK 16 /* output frames per block: a cache line of each image row */

/* norm: [4][mels] the batch norm's mean, sqrt(var + eps), weight and bias, applied as MLX's
 * FrozenBatchNorm does, once per source frame (a divide per tap instead was most of the kernel's
 * time); planes [plane_start, plane_stop). Returns 0 when out of memory. */
static int mel_image_planes(const float *src, ptrdiff_t frames, ptrdiff_t mels, const float *norm,
                            const int32_t *taps, const float *tap_weights, ptrdiff_t ratio, ptrdiff_t width, float *dst,
                            ptrdiff_t plane_start, ptrdiff_t plane_stop) {
    const float *mean = norm, *std = norm + mels, *weight = norm + 2 * mels, *bias = norm + 3 * mels;
    float block[MEL_IMAGE_BLOCK][MEL_IMAGE_MAX_MELS];
    float *normed = malloc(sizeof(float) * (size_t)(frames * mels));
    if (!normed) return 0;
    for (ptrdiff_t p = plane_start; p < plane_stop; p++) {
        const float *plane = src + p * frames * mels;
        for (ptrdiff_t f = 0; f < frames; f++)
            for (ptrdiff_t m = 0; m < mels; m++)
                normed[f * mels + m] = (plane[f * mels + m] - mean[m]) / std[m] * weight[m] + bias[m];
        float *image = dst + p * ratio * mels * width;
        for (ptrdiff_t r = 0; r < ratio; r++)
            for (ptrdiff_t t0 = 0; t0 < width; t0 += MEL_IMAGE_BLOCK) {
                const ptrdiff_t count = width - t0 < MEL_IMAGE_BLOCK ? width - t0 : MEL_IMAGE_BLOCK;
                for (ptrdiff_t t = 0; t < count; t++) {
                    const ptrdiff_t o = r * width + t0 + t;
                    float *out = block[t];
                    if (!taps) {
                        memcpy(out, normed + o * mels, (size_t)mels * sizeof(float));
                        continue;
                    }
                    const int32_t *tap = taps + 4 * o;
                    const float *w = tap_weights + 4 * o;
                    const float *x0 = normed + tap[0] * mels, *x1 = normed + tap[1] * mels;
                    const float *x2 = normed + tap[2] * mels, *x3 = normed + tap[3] * mels;
                    for (ptrdiff_t m = 0; m < mels; m++) out[m] = w[0] * x0[m] + w[1] * x1[m] + w[2] * x2[m] + w[3] * x3[m];
                }
                /* the block transposed: each image row gets `count` consecutive frames */
                for (ptrdiff_t m = 0; m < mels; m++) {
                    float *row = image + (r * mels + m) * width + t0;
                    for (ptrdiff_t t = 0; t < count; t++) row[t] = block[t][m];
                }
            }
    }
    free(normed);
    return 1;
}
