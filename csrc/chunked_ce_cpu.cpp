// Per-chunk kernels of the vocab-parallel chunked cross-entropy, CPU (OpenMP over rows).
// Reference and contract: lumos_megatron/ops/chunked_ce.py. All maths in fp32.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include "lumos_ops.h"

namespace lumos {

void check_ce_args(const at::Tensor& logits, const at::Tensor& target) {
  TORCH_CHECK_VALUE(logits.dim() == 2, "ce_chunk: logits must be [n, V], got ", logits.sizes());
  TORCH_CHECK_VALUE(target.dim() == 1 && target.size(0) == logits.size(0),
                    "ce_chunk: target must be [n=", logits.size(0), "], got ", target.sizes());
  TORCH_CHECK_TYPE(target.scalar_type() == at::kLong, "ce_chunk: target must be int64");
  TORCH_CHECK_VALUE(target.device() == logits.device(), "ce_chunk: target on ", target.device(),
                    ", logits on ", logits.device());
}

void check_ce_backward_args(const at::Tensor& logits, const at::Tensor& lse,
                            const at::Tensor& target, const at::Tensor& grad) {
  check_ce_args(logits, target);
  const int64_t n = logits.size(0);
  TORCH_CHECK_VALUE(lse.dim() == 1 && lse.size(0) == n && lse.scalar_type() == at::kFloat &&
                        grad.dim() == 1 && grad.size(0) == n && grad.scalar_type() == at::kFloat,
                    "ce_chunk_backward_: lse and grad must be float32 [n=", n, "]");
  TORCH_CHECK_VALUE(lse.device() == logits.device() && grad.device() == logits.device(),
                    "ce_chunk_backward_: lse and grad must be on ", logits.device());
}

at::Tensor unit_stride_rows(const at::Tensor& t) {
  return (t.size(1) <= 1 || t.stride(1) == 1) ? t : t.contiguous();
}

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int64_t kBlock = 256;  // forward: elements converted to fp32 per step (stays in L1)
constexpr int kLanes = 8;        // independent accumulators: two SSE / one AVX register

inline float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

inline int32_t float_to_bits(float f) {
  int32_t i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}

// exp(x) to ~1 ulp for x <= 88; 0 below -87.3 (where expf leaves the normal range) and for -inf.
// std::exp does not vectorize without -ffast-math, which we avoid because the online max/rescale
// logic relies on IEEE inf semantics; this branch-free form vectorizes (with -fno-trapping-math,
// which lets the compiler turn the clamps and the select into vector min/max/blend).
inline float exp_approx(float x) {
  const bool underflow = x < -87.3f;
  x = std::min(std::max(x, -87.3f), 88.0f);
  // Round x*log2(e) to the nearest integer n with the 1.5*2^23 trick (exact for |n| < 2^22);
  // the low mantissa bits of t then hold n.
  const float t = x * 1.44269504088896341f + 12582912.0f;
  const float n = t - 12582912.0f;
  const int32_t ni = float_to_bits(t) - 0x4B400000;
  // r = x - n*ln2 in two parts (the high part is exact in fp32), |r| <= ln2/2.
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  // Degree-6 minimax polynomial of exp on [-ln2/2, ln2/2] (Cephes expf coefficients).
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * (r * r) + r + 1.0f;
  const float result = y * bits_to_float((ni + 127) << 23);
  return underflow ? 0.0f : result;
}

// Single pass over one row: per block of kBlock logits (converted to fp32 in an L1 buffer), the
// block max, a rescale of the running sum if the max grew, then the block's exp-sum. Max and sum
// run in kLanes independent lanes (vectorizable, and each lane adds only kBlock / kLanes terms in
// fp32); lanes and blocks are summed in double so the result does not drift with V (a plain
// 64k-term fp32 running sum loses ~1e-5 relative).
template <typename scalar_t>
void forward_row(const scalar_t* x, int64_t vocab, float* row_max, float* sum_exp) {
  alignas(64) float buf[kBlock];
  float m = kNegInf;
  double s = 0.0;
  for (int64_t j0 = 0; j0 < vocab; j0 += kBlock) {
    const int64_t len = std::min(kBlock, vocab - j0);
    const int64_t padded = (len + kLanes - 1) / kLanes * kLanes;
    for (int64_t k = 0; k < len; ++k) buf[k] = static_cast<float>(x[j0 + k]);
    for (int64_t k = len; k < padded; ++k) buf[k] = kNegInf;  // neutral for max, exp(-inf) = 0
    float lane[kLanes];
    std::fill(lane, lane + kLanes, kNegInf);
    for (int64_t k = 0; k < padded; k += kLanes) {
      for (int l = 0; l < kLanes; ++l) lane[l] = lane[l] < buf[k + l] ? buf[k + l] : lane[l];
    }
    const float bm = *std::max_element(lane, lane + kLanes);
    if (bm == kNegInf) continue;  // all -inf: contributes exp(-inf) = 0, and -inf - -inf is nan
    if (bm > m) {
      s *= std::exp(static_cast<double>(m) - static_cast<double>(bm));  // m = -inf: s = 0 anyway
      m = bm;
    }
    std::fill(lane, lane + kLanes, 0.0f);
    for (int64_t k = 0; k < padded; k += kLanes) {
      for (int l = 0; l < kLanes; ++l) lane[l] += exp_approx(buf[k + l] - m);
    }
    for (int l = 0; l < kLanes; ++l) s += lane[l];
  }
  *row_max = m;
  *sum_exp = static_cast<float>(s);
}

template <typename scalar_t>
void backward_row(scalar_t* x, int64_t vocab, float lse, int64_t target, float grad) {
  const bool has_target = target >= 0 && target < vocab;
  const float x_target = has_target ? static_cast<float>(x[target]) : 0.0f;
#pragma omp simd
  for (int64_t j = 0; j < vocab; ++j) {
    x[j] = static_cast<scalar_t>(exp_approx(static_cast<float>(x[j]) - lse) * grad);
  }
  // The one-hot term, from the saved input: (p - 1) * g rounds differently from p*g - g.
  if (has_target) x[target] = static_cast<scalar_t>((exp_approx(x_target - lse) - 1.0f) * grad);
}

// OpenMP over rows. (Pragmas cannot sit inside the AT_DISPATCH macro argument, hence functions.)
// Small chunks stay on the calling thread: a parallel region costs more than it saves there.
constexpr int64_t kParallelElements = 32768;

template <typename scalar_t>
void forward_rows(const scalar_t* base, int64_t n, int64_t vocab, int64_t row_stride,
                  const int64_t* target, float* row_max, float* sum_exp, float* target_logit) {
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads()) \
    if (n > 1 && n * vocab > kParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    const scalar_t* row = base + i * row_stride;
    forward_row(row, vocab, row_max + i, sum_exp + i);
    const int64_t t = target[i];
    target_logit[i] = (t >= 0 && t < vocab) ? static_cast<float>(row[t]) : 0.0f;
  }
}

template <typename scalar_t>
void backward_rows(scalar_t* base, int64_t n, int64_t vocab, int64_t row_stride, const float* lse,
                   const int64_t* target, const float* grad) {
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads()) \
    if (n > 1 && n * vocab > kParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    backward_row(base + i * row_stride, vocab, lse[i], target[i], grad[i]);
  }
}


}  // namespace

TensorTriple ce_chunk_forward_cpu(const at::Tensor& logits, const at::Tensor& target) {
  check_ce_args(logits, target);
  const at::Tensor x = unit_stride_rows(logits);
  const at::Tensor tgt = target.contiguous();
  const int64_t n = x.size(0), vocab = x.size(1), row_stride = x.stride(0);
  const auto f32 = x.options().dtype(at::kFloat);
  at::Tensor row_max = at::empty({n}, f32), sum_exp = at::empty({n}, f32);
  at::Tensor target_logit = at::empty({n}, f32);
  float* max_p = row_max.data_ptr<float>();
  float* sum_p = sum_exp.data_ptr<float>();
  float* tl_p = target_logit.data_ptr<float>();
  const int64_t* t_p = tgt.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "ce_chunk_forward",
                                  [&] {
    forward_rows(x.data_ptr<scalar_t>(), n, vocab, row_stride, t_p, max_p, sum_p, tl_p);
  });
  return {row_max, sum_exp, target_logit};
}

at::Tensor ce_chunk_backward_cpu_(at::Tensor logits, const at::Tensor& lse,
                                  const at::Tensor& target, const at::Tensor& grad) {
  check_ce_backward_args(logits, lse, target, grad);
  const int64_t n = logits.size(0);
  // In place: work on unit-stride rows, then copy back if logits had to be made contiguous.
  at::Tensor x = unit_stride_rows(logits);
  const at::Tensor lse_c = lse.contiguous(), grad_c = grad.contiguous();
  const at::Tensor tgt = target.contiguous();
  const int64_t vocab = x.size(1), row_stride = x.stride(0);
  const float* lse_p = lse_c.data_ptr<float>();
  const float* g_p = grad_c.data_ptr<float>();
  const int64_t* t_p = tgt.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "ce_chunk_backward_",
                                  [&] {
    backward_rows(x.data_ptr<scalar_t>(), n, vocab, row_stride, lse_p, t_p, g_p);
  });
  if (!x.is_same(logits)) logits.copy_(x);
  return logits;
}

}  // namespace lumos
