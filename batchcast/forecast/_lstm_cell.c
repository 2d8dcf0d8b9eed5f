/* The elementwise half of an LSTM step, fused into one pass (see batchcast/forecast/native.py).
 *
 * torch runs the cell as ~10 separate elementwise kernels (sigmoid, tanh, mul, addcmul...),
 * each a full pass over the gate buffer, and its vectorised sigmoid/tanh cost 1-4 ns per
 * element on some CPUs. Here every row is read once: gates in, c updated in place, h written
 * to a strided destination (so that it can land directly inside the next GEMM's input).
 *
 * Determinism: every element is computed by the same code whatever the number of rows or the
 * row offset of a call (the inner loop runs over one row of fixed width, so the vector/scalar
 * split of a row does not depend on the tiling), and nothing reads the floating-point
 * environment. Built without -ffast-math: results depend only on this source, the compiler
 * and its -march, which batchcast keys its build cache on.
 *
 * Gate order is PyTorch's own (i, f, g, o); pre-activations include all biases.
 */
#include <stdint.h>
#include <string.h>

/* exp(x) for x in [-87.3, 88.3] (clamped outside): Cody-Waite range reduction, Cephes'
 * degree-6 polynomial, 2^n by exponent bits. ~2 ulp; branch-free so loops vectorise. */
static inline float bc_exp(float x) {
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.3f ? 88.3f : x;
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n;
}

static inline float bc_sigmoid(float x) { return 1.0f / (1.0f + bc_exp(-x)); }

/* tanh(x) = 1 - 2 / (1 + e^{2x}): one exp and one division, exact limits at +-inf; absolute
 * error ~1e-7 near 0 (the cell needs absolute, not relative, accuracy). */
static inline float bc_tanh(float x) { return 1.0f - 2.0f / (1.0f + bc_exp(2.0f * x)); }

/* Round-to-nearest-even float -> bfloat16 bits (inputs are finite here). */
static inline uint16_t bc_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float bc_from_bf16(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* One row: pre-activations g4 (4H, i f g o) -> c (H, in place), h (H, fp32), and hb (H,
 * bf16) when not NULL (written in a second pass over the row, still in L1). */
static inline void bc_row(int64_t hidden, const float *restrict g4, float *restrict c,
                          float *restrict h, uint16_t *restrict hb) {
    const float *gi = g4, *gf = g4 + hidden, *gg = g4 + 2 * hidden, *go = g4 + 3 * hidden;
    for (int64_t j = 0; j < hidden; ++j) {
        float cj = bc_sigmoid(gf[j]) * c[j] + bc_sigmoid(gi[j]) * bc_tanh(gg[j]);
        c[j] = cj;
        h[j] = bc_sigmoid(go[j]) * bc_tanh(cj);
    }
    if (hb) {
        for (int64_t j = 0; j < hidden; ++j) hb[j] = bc_to_bf16(h[j]);
    }
}

/* rows x (4H) fp32 gates (row stride gs), c (stride cs), h fp32 (stride hs), hb bf16 (stride
 * hbs, may be NULL). Strides in elements. */
void bc_lstm_cell_f32(int64_t rows, int64_t hidden, const float *gates, int64_t gs, float *c,
                      int64_t cs, float *h, int64_t hs, uint16_t *hb, int64_t hbs) {
    for (int64_t r = 0; r < rows; ++r) {
        bc_row(hidden, gates + r * gs, c + r * cs, h + r * hs, hb ? hb + r * hbs : 0);
    }
}

/* The same with bf16 gates (a bf16 GEMM's output) plus an fp32 addend per row (stride as, may
 * be NULL): layer 0's path-independent gates, or a bias. scratch: 4H floats. */
void bc_lstm_cell_bf16(int64_t rows, int64_t hidden, const uint16_t *gates, int64_t gs,
                       const float *add, int64_t as, float *c, int64_t cs, float *h, int64_t hs,
                       uint16_t *hb, int64_t hbs, float *scratch) {
    const int64_t width = 4 * hidden;
    for (int64_t r = 0; r < rows; ++r) {
        const uint16_t *g = gates + r * gs;
        const float *a = add ? add + r * as : 0;
        for (int64_t j = 0; j < width; ++j) scratch[j] = bc_from_bf16(g[j]) + (a ? a[j] : 0.0f);
        bc_row(hidden, scratch, c + r * cs, h + r * hs, hb ? hb + r * hbs : 0);
    }
}
