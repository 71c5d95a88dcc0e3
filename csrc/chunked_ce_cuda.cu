// Per-chunk kernels of the vocab-parallel chunked cross-entropy, CUDA. One block per row.
// Reference and contract: lumos_megatron/ops/chunked_ce.py. All maths in fp32.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "lumos_ops.h"

namespace lumos {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Merge the log-sum-exp state (om, os) into (m, s). Two empty states (-inf, 0) stay empty; the
// guard avoids exp(-inf - -inf) = nan.
__device__ __forceinline__ void lse_merge(float& m, float& s, float om, float os) {
  const float nm = fmaxf(m, om);
  if (nm == -INFINITY) return;
  s = s * expf(m - nm) + os * expf(om - nm);
  m = nm;
}

// Single pass: every thread keeps an online (running max, rescaled sum) over its strided
// elements; the per-thread states are merged across the warp (shuffles) then across warps.
template <typename scalar_t>
__global__ void ce_forward_kernel(const scalar_t* __restrict__ logits, int64_t row_stride,
                                  int64_t vocab, const int64_t* __restrict__ target,
                                  float* __restrict__ row_max, float* __restrict__ sum_exp,
                                  float* __restrict__ target_logit) {
  __shared__ float warp_m[kWarps], warp_s[kWarps];
  const int64_t i = blockIdx.x;
  const scalar_t* row = logits + i * row_stride;
  float m = -INFINITY, s = 0.0f;
  for (int64_t j = threadIdx.x; j < vocab; j += kThreads) {
    const float x = static_cast<float>(row[j]);
    if (x > m) {
      s = s * expf(m - x) + 1.0f;  // m = -inf: s is 0 and exp(-inf) = 0
      m = x;
    } else if (x > -INFINITY) {  // -inf adds nothing (and would give nan while m is -inf)
      s += expf(x - m);
    }
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, m, offset);
    const float os = __shfl_xor_sync(0xffffffffu, s, offset);
    lse_merge(m, s, om, os);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    warp_m[warp] = m;
    warp_s[warp] = s;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float bm = warp_m[0], bs = warp_s[0];
    for (int w = 1; w < kWarps; ++w) lse_merge(bm, bs, warp_m[w], warp_s[w]);
    row_max[i] = bm;
    sum_exp[i] = bs;
    const int64_t t = target[i];
    target_logit[i] = (t >= 0 && t < vocab) ? static_cast<float>(row[t]) : 0.0f;
  }
}

// In place: logits[i, j] = (exp(logits[i, j] - lse[i]) - (j == target[i])) * grad[i].
template <typename scalar_t>
__global__ void ce_backward_kernel(scalar_t* __restrict__ logits, int64_t row_stride,
                                   int64_t vocab, const float* __restrict__ lse,
                                   const int64_t* __restrict__ target,
                                   const float* __restrict__ grad) {
  const int64_t i = blockIdx.x;
  scalar_t* row = logits + i * row_stride;
  const float row_lse = lse[i], g = grad[i];
  const int64_t t = target[i];
  for (int64_t j = threadIdx.x; j < vocab; j += kThreads) {
    const float p = expf(static_cast<float>(row[j]) - row_lse);
    row[j] = static_cast<scalar_t>((j == t ? p - 1.0f : p) * g);
  }
}


}  // namespace

TensorTriple ce_chunk_forward_cuda(const at::Tensor& logits, const at::Tensor& target) {
  check_ce_args(logits, target);
  const c10::cuda::CUDAGuard guard(logits.device());
  const at::Tensor x = unit_stride_rows(logits);
  const at::Tensor tgt = target.contiguous();
  const int64_t n = x.size(0), vocab = x.size(1);
  const auto f32 = x.options().dtype(at::kFloat);
  at::Tensor row_max = at::empty({n}, f32), sum_exp = at::empty({n}, f32);
  at::Tensor target_logit = at::empty({n}, f32);
  if (n == 0) return {row_max, sum_exp, target_logit};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "ce_chunk_forward",
                                  [&] {
    ce_forward_kernel<scalar_t><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
        x.data_ptr<scalar_t>(), x.stride(0), vocab, tgt.data_ptr<int64_t>(),
        row_max.data_ptr<float>(), sum_exp.data_ptr<float>(), target_logit.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {row_max, sum_exp, target_logit};
}

at::Tensor ce_chunk_backward_cuda_(at::Tensor logits, const at::Tensor& lse,
                                   const at::Tensor& target, const at::Tensor& grad) {
  check_ce_backward_args(logits, lse, target, grad);
  const int64_t n = logits.size(0);
  const c10::cuda::CUDAGuard guard(logits.device());
  at::Tensor x = unit_stride_rows(logits);
  const at::Tensor lse_c = lse.contiguous(), grad_c = grad.contiguous();
  const at::Tensor tgt = target.contiguous();
  if (n > 0 && x.size(1) > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(),
                                    "ce_chunk_backward_", [&] {
      ce_backward_kernel<scalar_t><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
          x.data_ptr<scalar_t>(), x.stride(0), x.size(1), lse_c.data_ptr<float>(),
          tgt.data_ptr<int64_t>(), grad_c.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  if (!x.is_same(logits)) logits.copy_(x);
  return logits;
}

}  // namespace lumos
