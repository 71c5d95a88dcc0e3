// Temporal tube mask, CUDA kernels. Reference and contract: lumos_megatron/ops/tube_mask.py.
//
// Two launches: (1) the per-sample pattern, each position ranked by counting the sample's keys
// that are smaller (keys are recomputed tile by tile into shared memory, so no key array is
// stored); (2) one block per sample walks its row tile by tile, numbering content positions
// with a block-wide prefix count (warp ballots + per-warp totals) and masking pattern[k % p].
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "counter_rng.h"
#include "lumos_ops.h"

namespace lumos {
namespace {

constexpr int kPatternThreads = 256;
constexpr int kApplyThreads = 512;
constexpr int kWarps = kApplyThreads / 32;

// grid = (ceil(max_period / kPatternThreads), B). pattern is [B, max_period] bytes.
__global__ void tube_pattern_kernel(const int64_t* __restrict__ period,
                                    const int64_t* __restrict__ num_masked,
                                    const int64_t* __restrict__ stream,
                                    uint8_t* __restrict__ pattern, int64_t max_period) {
  __shared__ uint32_t tile[kPatternThreads];
  const int64_t b = blockIdx.y;
  const int64_t p = period[b], nm = num_masked[b];
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kPatternThreads;
  // Uniform per block, so returning early cannot strand a __syncthreads below.
  if (nm == 0 || first >= p) return;
  const int64_t j = first + threadIdx.x;
  const uint32_t base = key_base(stream[b]);
  const uint32_t key = pattern_key(base, static_cast<uint32_t>(j));
  int64_t rank = 0;
  for (int64_t t0 = 0; t0 < p; t0 += kPatternThreads) {
    const int64_t i = t0 + threadIdx.x;
    if (i < p) tile[threadIdx.x] = pattern_key(base, static_cast<uint32_t>(i));
    __syncthreads();
    const int count = static_cast<int>(min(static_cast<int64_t>(kPatternThreads), p - t0));
    for (int k = 0; k < count; ++k) rank += tile[k] < key;
    __syncthreads();
  }
  if (j < p) pattern[b * max_period + j] = rank < nm;  // keys distinct: exactly nm ranks < nm
}

// grid = B, block = kApplyThreads.
__global__ void tube_apply_kernel(const int64_t* __restrict__ tokens,
                                  const int64_t* __restrict__ labels,
                                  const bool* __restrict__ content,
                                  const int64_t* __restrict__ period,
                                  const int64_t* __restrict__ num_masked,
                                  const uint8_t* __restrict__ pattern, int64_t max_period,
                                  int64_t length, int64_t mask_id, int64_t ignore_index,
                                  int64_t* __restrict__ tokens_out,
                                  int64_t* __restrict__ labels_out, bool* __restrict__ masked_out) {
  __shared__ int warp_count[kWarps];
  const int64_t b = blockIdx.x;
  const int64_t p = period[b];
  const bool active = p > 0 && num_masked[b] > 0;
  const uint8_t* pat = pattern + b * max_period;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int64_t carry = 0;  // content positions in earlier tiles; identical in every thread
  for (int64_t t0 = 0; t0 < length; t0 += kApplyThreads) {
    const int64_t i = t0 + threadIdx.x;
    const int64_t idx = b * length + i;
    const bool inside = i < length;
    const bool is_content = inside && active && content[idx];
    const unsigned ballot = __ballot_sync(0xffffffffu, is_content);
    const int before_in_warp = __popc(ballot & ((1u << lane) - 1u));
    if (lane == 0) warp_count[warp] = __popc(ballot);
    __syncthreads();
    int before = before_in_warp, total = 0;
    for (int w = 0; w < kWarps; ++w) {
      const int c = warp_count[w];
      before += (w < warp) ? c : 0;
      total += c;
    }
    __syncthreads();  // warp_count is overwritten by the next tile
    if (inside) {
      int64_t tok = tokens[idx], lab = labels[idx];
      bool masked = false;
      if (is_content) {
        if (pat[(carry + before) % p]) {
          tok = mask_id;
          masked = true;
        } else {
          lab = ignore_index;
        }
      }
      tokens_out[idx] = tok;
      labels_out[idx] = lab;
      masked_out[idx] = masked;
    }
    carry += total;
  }
}

}  // namespace

TensorTriple tube_mask_apply_cuda(const at::Tensor& tokens, const at::Tensor& labels,
                                  const at::Tensor& content, const at::Tensor& period,
                                  const at::Tensor& num_masked, const at::Tensor& stream,
                                  int64_t mask_id, int64_t ignore_index) {
  check_tube_mask_args(tokens, labels, content, period, num_masked, stream);
  const c10::cuda::CUDAGuard guard(tokens.device());
  // Per-sample values are checked on the host; the largest period sizes the pattern scratch.
  const at::Tensor per_h = period.cpu().contiguous(), cnt_h = num_masked.cpu().contiguous();
  const at::Tensor str_h = stream.cpu().contiguous();
  const int64_t batch = tokens.size(0), length = tokens.size(1);
  check_tube_mask_values(per_h.data_ptr<int64_t>(), cnt_h.data_ptr<int64_t>(),
                         str_h.data_ptr<int64_t>(), batch);
  TORCH_CHECK_VALUE(batch <= 65535, "tube_mask_apply: batch ", batch, " exceeds 65535 (grid.y)");
  const int64_t* per_p = per_h.data_ptr<int64_t>();
  const int64_t max_period = batch ? *std::max_element(per_p, per_p + batch) : 0;

  const at::Tensor tok = tokens.contiguous(), lab = labels.contiguous();
  const at::Tensor con = content.contiguous();
  at::Tensor tok_out = at::empty_like(tok), lab_out = at::empty_like(lab);
  at::Tensor masked = at::empty_like(con);
  if (batch == 0 || length == 0) return {tok_out, lab_out, masked};

  const at::Tensor per_d = per_h.to(tokens.device()), cnt_d = cnt_h.to(tokens.device());
  const at::Tensor str_d = str_h.to(tokens.device());
  at::Tensor pattern =
      at::empty({batch, std::max<int64_t>(max_period, 1)}, tok.options().dtype(at::kByte));
  const cudaStream_t cuda_stream = c10::cuda::getCurrentCUDAStream();
  if (max_period > 0) {
    const dim3 grid(static_cast<unsigned>((max_period + kPatternThreads - 1) / kPatternThreads),
                    static_cast<unsigned>(batch));
    tube_pattern_kernel<<<grid, kPatternThreads, 0, cuda_stream>>>(
        per_d.data_ptr<int64_t>(), cnt_d.data_ptr<int64_t>(), str_d.data_ptr<int64_t>(),
        pattern.data_ptr<uint8_t>(), max_period);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  tube_apply_kernel<<<static_cast<unsigned>(batch), kApplyThreads, 0, cuda_stream>>>(
      tok.data_ptr<int64_t>(), lab.data_ptr<int64_t>(), con.data_ptr<bool>(),
      per_d.data_ptr<int64_t>(), cnt_d.data_ptr<int64_t>(), pattern.data_ptr<uint8_t>(),
      pattern.size(1), length, mask_id, ignore_index, tok_out.data_ptr<int64_t>(),
      lab_out.data_ptr<int64_t>(), masked.data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {tok_out, lab_out, masked};
}

}  // namespace lumos
