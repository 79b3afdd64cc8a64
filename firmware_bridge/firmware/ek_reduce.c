/* int8 reductions over axes as tflite-micro computes MEAN, SUM and REDUCE_MAX, bit-exact with
 * edgekit's runtime (edgekit/ops/reduce.py). */
#include "ek_arith.h"
#include "ek_kernels.h"

/* The input offset of index i of a group of axes (sizes dims, input strides strides). */
static int32_t ek_reduce_offset(int32_t i, int32_t rank, const int32_t *dims,
                                const int32_t *strides) {
    int32_t off = 0;
    for (int32_t d = rank - 1; d >= 0; d--) {
        off += (i % dims[d]) * strides[d];
        i /= dims[d];
    }
    return off;
}

void ek_reduce_sum_i8(const ek_reduce_t *p, const int8_t *x, int8_t *y) {
    for (int32_t o = 0; o < p->n_out; o++) {
        const int8_t *base = x + ek_reduce_offset(o, p->out_rank, p->out_dims, p->out_strides);
        int32_t acc = 0;
        for (int32_t r = 0; r < p->n_red; r++)
            acc += base[ek_reduce_offset(r, p->red_rank, p->red_dims, p->red_strides)];
        y[o] = ek_requantize(acc - p->offset, p->mult, p->shift, p->zo, -128, 127);
    }
}

void ek_reduce_max_i8(const ek_reduce_t *p, const int8_t *x, int8_t *y) {
    for (int32_t o = 0; o < p->n_out; o++) {
        const int8_t *base = x + ek_reduce_offset(o, p->out_rank, p->out_dims, p->out_strides);
        int8_t m = -128;
        for (int32_t r = 0; r < p->n_red; r++) {
            int8_t v = base[ek_reduce_offset(r, p->red_rank, p->red_dims, p->red_strides)];
            if (v > m) m = v;
        }
        y[o] = m;
    }
}

/* --- log-softmax: gemmlowp's fixed point, the twin of edgekit/runtime/kernels/log_softmax.py */

/* SaturatingRoundingMultiplyByPOT: x * 2^e, saturating up, rounding down. */
static int32_t ek_pot(int32_t x, int e) {
    if (e == 0) return x;
    if (e < 0) return ek_rdbpot(x, -e);
    int32_t threshold = (int32_t)((1LL << (31 - e)) - 1);
    if (x > threshold) return INT32_MAX;
    if (x < -threshold) return INT32_MIN;
    return (int32_t)((uint32_t)x << e);
}

static int32_t ek_saturate(int64_t v) {
    return v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : (int32_t)v;
}

static int32_t ek_half_sum(int32_t a, int32_t b) {
    int64_t s = (int64_t)a + b;
    return (int32_t)((s + (s >= 0 ? 1 : -1)) / 2);
}

static int ek_clz32(uint32_t v) {
    int n = 32;
    while (v) { v >>= 1; n--; }
    return n;
}

static int32_t ek_exp_on_negative(int32_t a, int integer_bits) {
    static const int32_t mults[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535,
                                     720401, 242};
    int fractional = 31 - integer_bits;
    int32_t quarter = (int32_t)1 << (fractional - 2);
    int32_t a_mod = (a & (quarter - 1)) - quarter;
    int32_t x = ek_pot(a_mod, integer_bits) + (1 << 28);
    int32_t x2 = ek_srdhm(x, x), x3 = ek_srdhm(x2, x), x4 = ek_srdhm(x2, x2);
    int32_t poly = ek_pot(ek_srdhm(ek_pot(x4, -2) + x3, 715827883) + x2, -1);
    int32_t result = 1895147668 + ek_srdhm(1895147668, x + poly);
    int32_t remainder = a_mod - a;
    for (int k = 0; k < 7; k++) {
        int exponent = k - 2;
        if (integer_bits > exponent && (remainder & ((int32_t)1 << (fractional + exponent))))
            result = ek_srdhm(result, mults[k]);
    }
    if (integer_bits > 5 && a < -((int32_t)1 << (36 - integer_bits))) result = 0;
    if (a == 0) result = INT32_MAX;
    return result;
}

static int32_t ek_one_over_one_plus_x(int32_t a) {
    int32_t half_denominator = ek_half_sum(a, INT32_MAX);
    int32_t x = 1515870810 + ek_srdhm(half_denominator, -1010580540);
    for (int i = 0; i < 3; i++)
        x = x + ek_pot(ek_srdhm(x, (1 << 29) - ek_srdhm(half_denominator, x)), 2);
    return ek_pot(x, 1);
}

static int32_t ek_log_x_ge_1(int32_t value, int input_bits, int output_bits) {
    int accum_bits = output_bits + 1;
    const int32_t log_2 = 1488522236, sqrt_sqrt_half = 1805811301, sqrt_half = 1518500250;
    const int32_t alpha_n = 117049297, alpha_d = 127690142, alpha_i = 1057819769,
                  alpha_f = 638450708;
    int32_t shifted_quarter = ek_pot(536870912, -accum_bits);
    int a_headroom_plus_1 = ek_clz32((uint32_t)value);
    int32_t r_a = ek_pot(ek_srdhm(ek_pot(value, a_headroom_plus_1 - 1), sqrt_half), 1);
    int32_t a_pow_2 = ek_saturate((int64_t)ek_pot(input_bits - a_headroom_plus_1,
                                                  31 - accum_bits) + shifted_quarter);
    int32_t z_b = ek_srdhm(value, sqrt_half);
    int b_headroom = ek_clz32((uint32_t)z_b) - 1;
    int32_t r_b = ek_pot(value, b_headroom);
    int32_t b_pow_2 = ek_saturate((int64_t)ek_pot(input_bits - b_headroom, 31 - accum_bits)
                                  - shifted_quarter);
    int32_t r = r_a < r_b ? r_a : r_b;
    int32_t pow_2 = a_pow_2 > b_pow_2 ? a_pow_2 : b_pow_2;
    int32_t p = ek_half_sum(r, sqrt_sqrt_half);
    int32_t q = 2 * (r - sqrt_sqrt_half);
    int32_t common_sq = ek_srdhm(q, q);
    int32_t num = ek_srdhm(q, r) + ek_srdhm(ek_srdhm(q, common_sq), alpha_n);
    int32_t denom_minus_one = ek_srdhm(p, alpha_i + q + ek_srdhm(alpha_d, common_sq))
                              + ek_srdhm(alpha_f, q);
    int32_t recip = ek_one_over_one_plus_x(denom_minus_one);
    int32_t scaled = ek_srdhm(pow_2, log_2) + ek_srdhm(ek_pot(num, -accum_bits), recip);
    return ek_pot(scaled, accum_bits - output_bits);
}

void ek_log_softmax_i8(const ek_log_softmax_t *p, const int8_t *x, int8_t *y) {
    const int32_t n = p->n, inner = p->inner;
    for (int32_t o = 0; o < p->outer; o++) {
        for (int32_t i = 0; i < inner; i++) {
            const int8_t *row = x + o * n * inner + i;
            int8_t *dst = y + o * n * inner + i;
            int32_t peak = -128;
            for (int32_t a = 0; a < n; a++)
                if (row[a * inner] > peak) peak = row[a * inner];
            int32_t total = 0;
            for (int32_t a = 0; a < n; a++) {
                int32_t diff = row[a * inner] - peak;
                if (diff >= p->diff_min)
                    total += ek_pot(ek_exp_on_negative(ek_mbqm(diff, p->mult, p->left_shift), 5),
                                    -12);
            }
            int32_t log_sum = ek_log_x_ge_1(total, 12, 5);
            int32_t bound = ek_mbqm(log_sum + INT32_MIN, p->reverse_mult, p->reverse_shift);
            if (bound < p->diff_min - 1) bound = p->diff_min - 1;
            for (int32_t a = 0; a < n; a++) {
                int32_t diff = row[a * inner] - peak;
                if (diff > bound) {
                    int32_t scaled = ek_mbqm(diff, p->mult, p->left_shift);
                    dst[a * inner] = (int8_t)ek_clamp(ek_rdbpot(scaled - log_sum, 22) + 127,
                                                      -128, 127);
                } else {
                    dst[a * inner] = -128;
                }
            }
        }
    }
}
