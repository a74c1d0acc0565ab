/* The fused rank kernel: a register-tiled float32 GEMM of packed factors A (rows × K) and B (K × cols)
 * whose tiles are compared with each row's own entry as they leave the registers, so that the vocab ×
 * vocab block is never written (unless a caller asks for it, for the explorer's lists).
 *
 * Every entry (r, c) is the same chain of fused multiply-adds over k = 0 … K-1, from 0.0f:
 *     acc = fmaf(A[r][k], B[k][c], acc)
 * in the vector tile (AVX-512, AVX2 + FMA) and in the scalar paths alike (hr_own, the portable tile),
 * so the own entry (r, r) is bit-identical to the block's copy of it and the ranks need no re-check.
 * No -ffast-math: nothing is reassociated.
 *
 * Layouts (packed by hr_pack; zero-padded to whole panels):
 *     A_packed[p][k][MR]   rows p·MR … p·MR+MR-1
 *     B_packed[q][k][NR]   columns q·NR … q·NR+NR-1
 * Counts, for each row r of a call: le[r] += #{c in [c0, c1) : x_rc <= own_r}  (>= when descending),
 *                                   eq[r] += #{c in [c0, c1) : x_rc == own_r};
 * comparisons are ordered (false when either side is NaN), as numpy's.
 *
 * Lists (the token explorer's candidates, hr_lists): the entries x_rc >= row_hi[r], x_rc <= row_lo[r]
 * and x_rc >= col_hi[c], each list's (row, column, value) appended to its buffers; a vector compare
 * finds the (rare) tile rows that hold any, so the tile is never written out.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define HR_MR 14
#define HR_NR 32
#define HR_ISA "avx512"
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define HR_MR 6
#define HR_NR 16
#define HR_ISA "avx2"
#else
#define HR_MR 4
#define HR_NR 16
#define HR_ISA "portable"
#endif

typedef struct {
    const float *row_hi; /* per row of the call: collect x >= row_hi[i] (NULL: off) */
    const float *row_lo; /* per row of the call: collect x <= row_lo[i] (NULL: off) */
    const float *col_hi; /* per column, absolute index: collect x >= col_hi[c] (NULL: off) */
    int64_t cap;         /* capacity of each list's buffers */
    int64_t n[3];        /* entries appended to lists hi, lo, col */
    int32_t *row[3], *col[3];
    float *val[3];
    int64_t overflow;    /* set when a list was full: its later entries were dropped */
} hr_lists;

int hr_mr(void) { return HR_MR; }
int hr_nr(void) { return HR_NR; }
const char *hr_isa(void) { return HR_ISA; }

/* X (n × K, element (i, k) at X[i·so + k·sk]) into ceil(n / panel) panels of K × panel, zero-padded:
 * A's rows in MR-row panels (so, sk = A's strides), B's columns in NR-column panels (B transposed:
 * so = B's column stride). */
void hr_pack(const float *X, int64_t so, int64_t sk, int64_t n, int64_t K, int64_t panel, float *out) {
    int64_t panels = (n + panel - 1) / panel;
    /* Read X along its unit stride, 16 k at a time: a panel's rows read across k (so apart) map to a
     * few cache sets when so is a power of two (B = Kᵀ of a vocab × d_head key matrix: 1 KB apart),
     * which had made packing such a B take longer than the pass itself. */
    int along_k = sk == 1 && so != 1;
    for (int64_t p = 0; p < panels; p++) {
        float *dst = out + p * K * panel;
        if (along_k) {  /* 16 k (one cache line of each row) at a time: reads and writes stay in L1 */
            for (int64_t k0 = 0; k0 < K; k0 += 16) {
                int64_t k1 = k0 + 16 < K ? k0 + 16 : K;
                for (int64_t r = 0; r < panel; r++) {
                    int64_t i = p * panel + r;
                    for (int64_t k = k0; k < k1; k++) dst[k * panel + r] = i < n ? X[i * so + k] : 0.0f;
                }
            }
        } else {
            for (int64_t k = 0; k < K; k++)
                for (int64_t r = 0; r < panel; r++) {
                    int64_t i = p * panel + r;
                    dst[k * panel + r] = i < n ? X[i * so + k * sk] : 0.0f;
                }
        }
    }
}

/* own[i] = entry (i, cols[i]): the same fmaf chain as the tile's, from the packed factors. */
void hr_own(const float *Ap, const float *Bp, int64_t K, int64_t m, const int64_t *cols, float *own) {
    for (int64_t i = 0; i < m; i++) {
        const float *a = Ap + (i / HR_MR) * K * HR_MR + i % HR_MR;
        const float *b = Bp + (cols[i] / HR_NR) * K * HR_NR + cols[i] % HR_NR;
        float acc = 0.0f;
        for (int64_t k = 0; k < K; k++) acc = fmaf(a[k * HR_MR], b[k * HR_NR], acc);
        own[i] = acc;
    }
}

/* One MR × NR tile of the product, in row-major `tile`. */
static inline void tile_product(const float *a, const float *b, int64_t K, float *tile) {
#if defined(__AVX512F__)
    __m512 acc[HR_MR][2];
    for (int r = 0; r < HR_MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
        __m512 b0 = _mm512_loadu_ps(b + k * HR_NR), b1 = _mm512_loadu_ps(b + k * HR_NR + 16);
#pragma GCC unroll 14
        for (int r = 0; r < HR_MR; r++) {
            __m512 x = _mm512_set1_ps(a[k * HR_MR + r]);
            acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < HR_MR; r++) {
        _mm512_storeu_ps(tile + r * HR_NR, acc[r][0]);
        _mm512_storeu_ps(tile + r * HR_NR + 16, acc[r][1]);
    }
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 acc[HR_MR][2];
    for (int r = 0; r < HR_MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
        __m256 b0 = _mm256_loadu_ps(b + k * HR_NR), b1 = _mm256_loadu_ps(b + k * HR_NR + 8);
#pragma GCC unroll 6
        for (int r = 0; r < HR_MR; r++) {
            __m256 x = _mm256_broadcast_ss(a + k * HR_MR + r);
            acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
        }
    }
    for (int r = 0; r < HR_MR; r++) {
        _mm256_storeu_ps(tile + r * HR_NR, acc[r][0]);
        _mm256_storeu_ps(tile + r * HR_NR + 8, acc[r][1]);
    }
#else
    float acc[HR_MR][HR_NR];
    memset(acc, 0, sizeof acc);
    for (int64_t k = 0; k < K; k++)
        for (int r = 0; r < HR_MR; r++)
            for (int c = 0; c < HR_NR; c++) acc[r][c] = fmaf(a[k * HR_MR + r], b[k * HR_NR + c], acc[r][c]);
    memcpy(tile, acc, sizeof acc);
#endif
}

/* Bit c of the result: x[c] >= t (ge) or x[c] <= t (le), t = the per-column t_col[c] or, when t_col
 * is NULL, the scalar t_row; for c < width (width <= NR <= 32). */
static inline uint32_t tile_mask(const float *x, const float *t_col, float t_row, int ge, int64_t width) {
    uint32_t m = 0;
#if defined(__AVX512F__)
    const __m512 tr = _mm512_set1_ps(t_row);
    for (int v = 0; v < HR_NR / 16; v++) {
        __m512 a = _mm512_loadu_ps(x + 16 * v), b = t_col ? _mm512_loadu_ps(t_col + 16 * v) : tr;
        m |= (uint32_t)(ge ? _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ) : _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ)) << (16 * v);
    }
#elif defined(__AVX2__) && defined(__FMA__)
    const __m256 tr = _mm256_set1_ps(t_row);
    for (int v = 0; v < HR_NR / 8; v++) {
        __m256 a = _mm256_loadu_ps(x + 8 * v), b = t_col ? _mm256_loadu_ps(t_col + 8 * v) : tr;
        __m256 c = ge ? _mm256_cmp_ps(a, b, _CMP_GE_OQ) : _mm256_cmp_ps(a, b, _CMP_LE_OQ);
        m |= (uint32_t)_mm256_movemask_ps(c) << (8 * v);
    }
#else
    for (int c = 0; c < HR_NR; c++) {
        float b = t_col ? t_col[c] : t_row;
        m |= (uint32_t)(ge ? x[c] >= b : x[c] <= b) << c;
    }
#endif
    return width >= 32 ? m : m & ((1u << width) - 1u);
}

/* The counts of one tile row against its own entry o, from tile_mask's vector compares: x >= o and
 * x <= o both hold exactly when x == o (neither when either is NaN). Popcounted masks, not the
 * compiler's vectorised sums with a horizontal sum per row, which had cost 40% of the pass on AVX2
 * and 15% on AVX-512. */
static inline void count_row(const float *x, float o, int64_t width, int descending, int64_t *le, int64_t *eq) {
    uint32_t ge = tile_mask(x, NULL, o, 1, width), lo = tile_mask(x, NULL, o, 0, width);
    *le += __builtin_popcount(descending ? ge : lo);
    *eq += __builtin_popcount(ge & lo);
}

static inline void append(hr_lists *L, int which, uint32_t mask, int64_t i, int64_t col, const float *x) {
    while (mask) {
        int c = __builtin_ctz(mask);
        mask &= mask - 1;
        int64_t at = L->n[which];
        if (at >= L->cap) { L->overflow = 1; return; }
        L->row[which][at] = (int32_t)i;
        L->col[which][at] = (int32_t)(col + c);
        L->val[which][at] = x[c];
        L->n[which] = at + 1;
    }
}

/* The list entries of one tile row (row i of the call, columns col … col+width-1). */
static inline void collect(const float *x, int64_t i, int64_t col, int64_t width, hr_lists *L) {
    if (L->row_hi) append(L, 0, tile_mask(x, NULL, L->row_hi[i], 1, width), i, col, x);
    if (L->row_lo) append(L, 1, tile_mask(x, NULL, L->row_lo[i], 0, width), i, col, x);
    if (L->col_hi) {
        float t[HR_NR] __attribute__((aligned(64)));
        const float *thr = L->col_hi + col;
        if (width < HR_NR) {  /* the last panel: never read past the thresholds' end */
            for (int c = 0; c < HR_NR; c++) t[c] = c < width ? thr[c] : INFINITY;
            thr = t;
        }
        append(L, 2, tile_mask(x, thr, 0.0f, 1, width), i, col, x);
    }
}

/* Rows 0 … m-1 of the packed A block (its own entries `own`) against columns [c0, c1) of packed B
 * (c0 a multiple of NR): counts added to le[] and eq[] (skipped when le is NULL); the entries
 * written to out[i·ldo + (c - c0)] when out is not NULL; the lists' entries appended when lists is
 * not NULL. The tile stays in L1 between the product and the comparisons. */
void hr_scan(const float *Ap, const float *Bp, int64_t K, int64_t m, int64_t c0, int64_t c1,
             const float *own, int descending, int64_t *le, int64_t *eq, float *out, int64_t ldo,
             hr_lists *lists) {
    float tile[HR_MR * HR_NR] __attribute__((aligned(64)));
    int64_t row_panels = (m + HR_MR - 1) / HR_MR;
    for (int64_t q = c0 / HR_NR; q * HR_NR < c1; q++) {
        const float *b = Bp + q * K * HR_NR;
        int64_t col = q * HR_NR, width = c1 - col < HR_NR ? c1 - col : HR_NR;
        for (int64_t p = 0; p < row_panels; p++) {
            tile_product(Ap + p * K * HR_MR, b, K, tile);
            int64_t rows = m - p * HR_MR < HR_MR ? m - p * HR_MR : HR_MR;
            for (int64_t r = 0; r < rows; r++) {
                int64_t i = p * HR_MR + r;
                const float *x = tile + r * HR_NR;
                if (le) count_row(x, own[i], width, descending, le + i, eq + i);
                if (out) memcpy(out + i * ldo + (col - c0), x, (size_t)width * sizeof(float));
                if (lists) collect(x, i, col, width, lists);
            }
        }
    }
}
