/* The elementwise half of an LSTM step, fused into one pass (see batchcast/forecast/native.py).
 *
 * torch runs the cell as ~10 separate elementwise kernels (sigmoid, tanh, mul, addcmul...),
 * each a full pass over the gate buffer, and its vectorised sigmoid/tanh cost 1-4 ns per
 * element on some CPUs. Here every row is read once: gates in, c updated in place, h written
 * to a strided destination (so that it can land directly inside the next GEMM's input).
 *
 * Determinism: every element is computed by the same expressions whatever the number of rows,
 * the row offset of a call or the rows run side by side (the inner loop runs along a row of
 * fixed width, so the vector/scalar split of a row does not depend on the tiling or the
 * grouping), and nothing reads the floating-point environment. Built without -ffast-math:
 * results depend only on this source, the compiler and its -march, which batchcast keys its
 * build cache on.
 *
 * Gate order is PyTorch's own (i, f, g, o); pre-activations include all biases.
 */
#include <stdint.h>
#include <string.h>

/* x clamped to [-40, 40] by its magnitude bits: an unsigned min, which every vector unit has
 * (NaN's bits exceed 40's, so NaN becomes +-40: finite, as every other gate). A float ternary
 * would let the compiler fold exp of the clamped constant at compile time, in another
 * rounding than the code computes at run time (1 ulp apart, measured with gcc 12), so that
 * its builds differ from one another at the clamps. */
static inline float bc_clamp40(float x) {
    uint32_t u, limit = 0x42200000u; /* 40.0f */
    memcpy(&u, &x, sizeof u);
    uint32_t magnitude = u & 0x7FFFFFFFu;
    magnitude = magnitude < limit ? magnitude : limit;
    u = (u & 0x80000000u) | magnitude;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* exp(x) for x in [-40, 40] (clamped outside: enough for sigmoid and tanh, whose results
 * are then exact to float or far below a cell's ~1e-7 absolute error), as 2^t, t = x log2(e):
 * n = floor(t + 1/2) (not rint, which would read the rounding mode), 2^(t - n) by a degree-6
 * minimax polynomial on [-1/2, 1/2], 2^n by exponent bits. Branch-free so the loops vectorise.
 * Measured on 1,600 rows x 40 cells (Zen 4): 17% faster than Cephes' expf with Cody-Waite
 * reduction, the same maximum error in c and h (2.8e-7 absolute, against double precision). */
static inline float bc_exp(float x) {
    x = bc_clamp40(x);
    float t = x * 1.44269504088896341f;
    float n = __builtin_floorf(t + 0.5f);
    float f = t - n;
    float p = 1.5353362e-4f;
    p = p * f + 1.3398874e-3f;
    p = p * f + 9.6184089e-3f;
    p = p * f + 5.5503406e-2f;
    p = p * f + 2.4022648e-1f;
    p = p * f + 6.9314718e-1f;
    p = p * f + 1.0f;
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

/* What a call adds to its gates, and what it does with the last layer's h.
 *
 * Addend (bf16 gates only): row r adds add + r * add_stride, in fp32 after the gates are
 * widened; add_stride 0 broadcasts one row (a bias). (fp32 gates come with their addends
 * already in: a GEMM that accumulates into them, beta = 1, is faster than one that does not.)
 *
 * Head: when head_w is set, each row's distribution arguments are computed from its new h,
 * out[a * head_stride + r] = head_b[a] + dot(head_w[a], h), stored argument-major so the
 * likelihood reads each argument as a contiguous column. This replaces a GEMM with N = 3,
 * which BLAS runs at ~5% of its peak (measured: 80 us for 1,600 rows, 29 here). */
typedef struct {
    const float *add;
    int64_t add_stride;
    const float *head_w, *head_b;
    int64_t nargs;
    float *head_out;
    int64_t head_stride;
} bc_extra;

/* dot(a, b) over n, in a fixed order: BC_LANES independent partial sums (which vectorise
 * without reassociating anything), then a fixed tree, then the tail. */
#define BC_LANES 8
_Static_assert(BC_LANES == 8, "bc_dot's tree sums exactly 8 lanes");
static inline float bc_dot(const float *restrict a, const float *restrict b, int64_t n) {
    float lane[BC_LANES] = {0};
    int64_t j = 0;
    for (; j + BC_LANES <= n; j += BC_LANES)
        for (int l = 0; l < BC_LANES; ++l) lane[l] += a[j + l] * b[j + l];
    float sum = ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
    for (; j < n; ++j) sum += a[j] * b[j];
    return sum;
}

/* Rows whose cells run before their heads: a head that reads h right after its row's
 * vector stores waits on them (measured on Zen 4: a call with the head 8% faster in blocks);
 * 16 rows of h stay in L1. */
#define BC_BLOCK 16

/* A cell's new c from its pre-activations i, f, g and old c; its new h from o and the new c.
 * Every element of every call computes these two expressions, whichever row loop calls them
 * (they return values rather than store, so that each loop's own restrict pointers do the
 * loads and stores: gcc loses restrict through an inlined callee's parameters). */
static inline float bc_new_c(float i, float f, float g, float c) {
    return bc_sigmoid(f) * c + bc_sigmoid(i) * bc_tanh(g);
}

static inline float bc_new_h(float o, float c) { return bc_sigmoid(o) * bc_tanh(c); }

/* One row: pre-activations g4 (4H, i f g o) -> c (H, in place) and h (H). */
static inline void bc_row(int64_t hidden, const float *restrict g4, float *restrict c,
                          float *restrict h) {
    const float *gi = g4, *gf = g4 + hidden, *gg = g4 + 2 * hidden, *go = g4 + 3 * hidden;
    for (int64_t j = 0; j < hidden; ++j) {
        float cj = bc_new_c(gi[j], gf[j], gg[j], c[j]);
        c[j] = cj;
        h[j] = bc_new_h(go[j], cj);
    }
}

/* Two and four rows side by side, the same expressions per element. Why: a cell is one long
 * dependent chain (exp, division, exp of the new c, division), and a row of 40 cells is only
 * 2.5-5 vectors, too few for the core to overlap; independent rows in one loop body give it
 * that overlap (measured on Zen 4, 1,600 rows x 40 cells: 118 us one row at a time, 101 two,
 * 93 four). Which grouping runs is timed at first use (native.py); all give the same bits
 * (checked there and by a test). */
static inline void bc_rows2(int64_t hidden, const float *restrict ga, const float *restrict gb,
                            float *restrict ca, float *restrict cb, float *restrict ha,
                            float *restrict hb) {
    const int64_t f = hidden, g = 2 * hidden, o = 3 * hidden;
    for (int64_t j = 0; j < hidden; ++j) {
        float xa = bc_new_c(ga[j], ga[f + j], ga[g + j], ca[j]);
        float xb = bc_new_c(gb[j], gb[f + j], gb[g + j], cb[j]);
        ca[j] = xa;
        cb[j] = xb;
        ha[j] = bc_new_h(ga[o + j], xa);
        hb[j] = bc_new_h(gb[o + j], xb);
    }
}

static inline void bc_rows4(int64_t hidden, const float *restrict ga, const float *restrict gb,
                            const float *restrict gc, const float *restrict gd,
                            float *restrict ca, float *restrict cb, float *restrict cc,
                            float *restrict cd, float *restrict ha, float *restrict hb,
                            float *restrict hc, float *restrict hd) {
    const int64_t f = hidden, g = 2 * hidden, o = 3 * hidden;
    for (int64_t j = 0; j < hidden; ++j) {
        float xa = bc_new_c(ga[j], ga[f + j], ga[g + j], ca[j]);
        float xb = bc_new_c(gb[j], gb[f + j], gb[g + j], cb[j]);
        float xc = bc_new_c(gc[j], gc[f + j], gc[g + j], cc[j]);
        float xd = bc_new_c(gd[j], gd[f + j], gd[g + j], cd[j]);
        ca[j] = xa;
        cb[j] = xb;
        cc[j] = xc;
        cd[j] = xd;
        ha[j] = bc_new_h(ga[o + j], xa);
        hb[j] = bc_new_h(gb[o + j], xb);
        hc[j] = bc_new_h(gc[o + j], xc);
        hd[j] = bc_new_h(gd[o + j], xd);
    }
}

/* A bf16 copy of a row's h (what the next bf16 GEMM reads). */
static inline void bc_row_bf16(int64_t hidden, const float *restrict h, uint16_t *restrict hb) {
    for (int64_t j = 0; j < hidden; ++j) hb[j] = bc_to_bf16(h[j]);
}

static inline void bc_head(const bc_extra *x, int64_t hidden, const float *h, int64_t r) {
    if (!x || !x->head_w) return;
    for (int64_t a = 0; a < x->nargs; ++a)
        x->head_out[a * x->head_stride + r] = x->head_b[a] + bc_dot(x->head_w + a * hidden, h, hidden);
}

/* Rows r0 .. r1 - 1 of a call, ``group`` rows per loop body (1, 2 or 4; the last few rows
 * of a block fewer). */
static inline __attribute__((always_inline)) void bc_rows(int group, int64_t r0, int64_t r1,
                                                          int64_t hidden, const float *g,
                                                          int64_t gs, float *c, int64_t cs,
                                                          float *h, int64_t hs) {
    int64_t r = r0;
    if (group >= 4)
        for (; r + 4 <= r1; r += 4)
            bc_rows4(hidden, g + r * gs, g + (r + 1) * gs, g + (r + 2) * gs, g + (r + 3) * gs,
                     c + r * cs, c + (r + 1) * cs, c + (r + 2) * cs, c + (r + 3) * cs,
                     h + r * hs, h + (r + 1) * hs, h + (r + 2) * hs, h + (r + 3) * hs);
    if (group >= 2)
        for (; r + 2 <= r1; r += 2)
            bc_rows2(hidden, g + r * gs, g + (r + 1) * gs, c + r * cs, c + (r + 1) * cs,
                     h + r * hs, h + (r + 1) * hs);
    for (; r < r1; ++r) bc_row(hidden, g + r * gs, c + r * cs, h + r * hs);
}

/* After a block's cells, rows r0 .. r1 - 1: each row's bf16 copy of h (hb may be NULL) and
 * its head (extra may be NULL or have no head). */
static inline void bc_block_outputs(const bc_extra *extra, int64_t hidden, const float *h,
                                    int64_t hs, uint16_t *hb, int64_t hbs, int64_t r0,
                                    int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
        if (hb) bc_row_bf16(hidden, h + r * hs, hb + r * hbs);
        bc_head(extra, hidden, h + r * hs, r);
    }
}

/* rows x (4H) fp32 gates (row stride gs), c (stride cs), h fp32 (stride hs), hb bf16 (stride
 * hbs, may be NULL), extra (may be NULL: no head; its addend is ignored). Strides in elements. */
static inline __attribute__((always_inline)) void bc_cells_f32(
    int group, int64_t rows, int64_t hidden, const float *gates, int64_t gs,
    const bc_extra *extra, float *c, int64_t cs, float *h, int64_t hs, uint16_t *hb,
    int64_t hbs) {
    for (int64_t r0 = 0; r0 < rows; r0 += BC_BLOCK) {
        const int64_t n = rows - r0 < BC_BLOCK ? rows - r0 : BC_BLOCK;
        bc_rows(group, r0, r0 + n, hidden, gates, gs, c, cs, h, hs);
        bc_block_outputs(extra, hidden, h, hs, hb, hbs, r0, r0 + n);
    }
}

/* The fp32 entry points, one per row grouping (1, 2, 4), with bc_cells_f32's arguments. */
#define BC_F32_ENTRY(name, group)                                                             \
    void name(int64_t rows, int64_t hidden, const float *gates, int64_t gs,                   \
              const bc_extra *extra, float *c, int64_t cs, float *h, int64_t hs, uint16_t *hb, \
              int64_t hbs) {                                                                  \
        bc_cells_f32(group, rows, hidden, gates, gs, extra, c, cs, h, hs, hb, hbs);           \
    }
BC_F32_ENTRY(bc_lstm_cell_f32, 1)
BC_F32_ENTRY(bc_lstm_cell_f32_x2, 2)
BC_F32_ENTRY(bc_lstm_cell_f32_x4, 4)

/* The same with bf16 gates (a bf16 GEMM's output). The addend is added in fp32 after the
 * bf16 gates are widened, a block's rows at a time into scratch (bc_block_rows() x 4H floats),
 * so that the same row loops as fp32's run on them. */
static inline __attribute__((always_inline)) void bc_cells_bf16(
    int group, int64_t rows, int64_t hidden, const uint16_t *gates, int64_t gs,
    const bc_extra *extra, float *c, int64_t cs, float *h, int64_t hs, uint16_t *hb,
    int64_t hbs, float *scratch) {
    const int64_t width = 4 * hidden;
    for (int64_t r0 = 0; r0 < rows; r0 += BC_BLOCK) {
        const int64_t n = rows - r0 < BC_BLOCK ? rows - r0 : BC_BLOCK;
        for (int64_t r = r0; r < r0 + n; ++r) {
            const uint16_t *g = gates + r * gs;
            const float *a = extra && extra->add ? extra->add + r * extra->add_stride : 0;
            float *s = scratch + (r - r0) * width;
            for (int64_t j = 0; j < width; ++j) s[j] = bc_from_bf16(g[j]) + (a ? a[j] : 0.0f);
        }
        bc_rows(group, 0, n, hidden, scratch, width, c + r0 * cs, cs, h + r0 * hs, hs);
        bc_block_outputs(extra, hidden, h, hs, hb, hbs, r0, r0 + n);
    }
}

#define BC_BF16_ENTRY(name, group)                                                             \
    void name(int64_t rows, int64_t hidden, const uint16_t *gates, int64_t gs,                 \
              const bc_extra *extra, float *c, int64_t cs, float *h, int64_t hs, uint16_t *hb,  \
              int64_t hbs, float *scratch) {                                                   \
        bc_cells_bf16(group, rows, hidden, gates, gs, extra, c, cs, h, hs, hb, hbs, scratch);  \
    }
BC_BF16_ENTRY(bc_lstm_cell_bf16, 1)
BC_BF16_ENTRY(bc_lstm_cell_bf16_x2, 2)
BC_BF16_ENTRY(bc_lstm_cell_bf16_x4, 4)

/* The rows of the bf16 entries' scratch (times 4H floats). */
int64_t bc_block_rows(void) { return BC_BLOCK; }
