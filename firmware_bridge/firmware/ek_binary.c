/* int8 binary ops with numpy broadcasting, twins of edgekit/runtime/kernels/int8_elementwise.py
 * (bit-exact: TFLite's reference arithmetic, ek_arith.h). Each walks the output with
 * EK_BINARY_ROWS (ek_binary.h), giving it the per-element computation. */
#include "ek_arith.h"
#include "ek_kernels.h"

void ek_sub(const ek_binary_t *p, const int8_t *x, const int8_t *y, int8_t *out) {
    ek_add_sub(p, x, y, -1, out);
}

static void ek_select(const ek_binary_t *p, const int8_t *x, const int8_t *y, int32_t take_max,
                      int8_t *out) {
    EK_BINARY_ROWS(p, x, y, out, a, b, (take_max ? a > b : a < b) ? a : b);
}

void ek_maximum(const ek_binary_t *p, const int8_t *x, const int8_t *y, int8_t *out) {
    ek_select(p, x, y, 1, out);
}

void ek_minimum(const ek_binary_t *p, const int8_t *x, const int8_t *y, int8_t *out) {
    ek_select(p, x, y, 0, out);
}

static inline int8_t ek_prelu_one(int32_t v, int32_t alpha, const ek_binary_t *p) {
    return v >= 0 ? ek_requantize(v, p->mult[0], p->shift[0], p->zo, -128, 127)
                  : ek_requantize(v * alpha, p->mult[1], p->shift[1], p->zo, -128, 127);
}

void ek_prelu(const ek_binary_t *p, const int8_t *x, const int8_t *alpha, int8_t *out) {
    EK_BINARY_ROWS(p, x, alpha, out, v, a, ek_prelu_one(v - p->zx, a, p));
}

/* TFLite's int8 DIV (reference_ops::DivElementwise), twin of int8_elementwise.divide. */
static int32_t ek_clz(uint32_t x) {
    int32_t n = 32;
    while (x) {
        x >>= 1;
        n--;
    }
    return n;
}

static int32_t ek_saturating_lshift(int32_t x, int32_t exponent) {
    int32_t threshold = (int32_t)((1u << (31 - exponent)) - 1);
    if (x > threshold) return INT32_MAX;
    if (x < -threshold) return INT32_MIN;
    return (int32_t)((uint32_t)x << exponent);
}

/* GetReciprocal(x, 31): 1 / x ~= r * 2^(shift - 31), gemmlowp's Newton-Raphson in Q2.29. */
static int32_t ek_reciprocal(int32_t x, int32_t *shift) {
    int32_t headroom_plus_one = ek_clz((uint32_t)x);
    *shift = 31 - headroom_plus_one;
    int32_t a = (int32_t)(((uint32_t)x << headroom_plus_one) - (1u << 31));
    int64_t sum = (int64_t)a + INT32_MAX;
    int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    int32_t r = 1515870810 + ek_srdhm(half_denominator, -1010580540);
    for (int i = 0; i < 3; i++) {
        int32_t one_minus = (1 << 29) - ek_srdhm(half_denominator, r);
        r = r + ek_saturating_lshift(ek_srdhm(r, one_minus), 2);
    }
    return ek_saturating_lshift(r, 1);
}

/* gemmlowp's RoundingDivideByPOT as tflite-micro's host build runs it, also for exponents past
 * 31 (undefined in C; x86 takes shift counts mod 64 and mod 32): int8_elementwise's twin. */
static int32_t ek_host_rdbpot(int32_t x, int32_t exponent) {
    int32_t mask = (int32_t)(uint32_t)(((uint64_t)1 << (exponent & 63)) - 1);
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> (exponent & 31)) + ((x & mask) > threshold ? 1 : 0);
}

static int8_t ek_divide(int32_t v1, int32_t v2, const ek_binary_t *p) {
    if (v2 == 0) return (int8_t)(v1 > 0 ? p->hi : v1 < 0 ? p->lo : ek_clamp(p->zo, p->lo, p->hi));
    if (v2 < 0) {
        v1 = -v1;
        v2 = -v2;
    }
    int32_t inverse_shift;
    int32_t inverse = ek_reciprocal(v2, &inverse_shift);
    int32_t headroom = ek_clz((uint32_t)(v1 >= 0 ? v1 : ~v1)) - 1;
    int32_t quotient = ek_srdhm((int32_t)((uint32_t)v1 << headroom), inverse);
    int32_t exponent = inverse_shift + headroom - p->shift[0];
    return (int8_t)ek_clamp(ek_host_rdbpot(ek_srdhm(quotient, p->mult[0]), exponent) + p->zo,
                            p->lo, p->hi);
}

void ek_div(const ek_binary_t *p, const int8_t *x, const int8_t *y, int8_t *out) {
    EK_BINARY_ROWS(p, x, y, out, a, b, ek_divide(a - p->zx, b - p->zy, p));
}
