// Declarations of the lumos_megatron._C kernels. Semantics are specified (and implemented in
// pure PyTorch) in lumos_megatron/ops/{tube_mask,chunked_ce}.py; bindings.cpp dispatches on device.
#pragma once

#include <tuple>

#include <ATen/core/Tensor.h>

namespace lumos {

using TensorTriple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Argument checks shared by the CPU and CUDA paths (TORCH_CHECK → Python ValueError/RuntimeError).
void check_tube_mask_args(const at::Tensor& tokens, const at::Tensor& labels,
                          const at::Tensor& content, const at::Tensor& period,
                          const at::Tensor& num_masked, const at::Tensor& stream);
// Per-sample checks on host values: 0 <= num_masked <= period < 2^31, stream >= 0.
void check_tube_mask_values(const int64_t* period, const int64_t* num_masked,
                            const int64_t* stream, int64_t batch);
void check_ce_args(const at::Tensor& logits, const at::Tensor& target);
void check_ce_backward_args(const at::Tensor& logits, const at::Tensor& lse,
                            const at::Tensor& target, const at::Tensor& grad);
// Rows must be unit-stride along V; any row stride is fine (a row slice of a bigger logits).
at::Tensor unit_stride_rows(const at::Tensor& t);

TensorTriple tube_mask_apply_cpu(const at::Tensor& tokens, const at::Tensor& labels,
                                 const at::Tensor& content, const at::Tensor& period,
                                 const at::Tensor& num_masked, const at::Tensor& stream,
                                 int64_t mask_id, int64_t ignore_index);
TensorTriple ce_chunk_forward_cpu(const at::Tensor& logits, const at::Tensor& target);
at::Tensor ce_chunk_backward_cpu_(at::Tensor logits, const at::Tensor& lse,
                                  const at::Tensor& target, const at::Tensor& grad);

#ifdef WITH_CUDA
TensorTriple tube_mask_apply_cuda(const at::Tensor& tokens, const at::Tensor& labels,
                                  const at::Tensor& content, const at::Tensor& period,
                                  const at::Tensor& num_masked, const at::Tensor& stream,
                                  int64_t mask_id, int64_t ignore_index);
TensorTriple ce_chunk_forward_cuda(const at::Tensor& logits, const at::Tensor& target);
at::Tensor ce_chunk_backward_cuda_(at::Tensor logits, const at::Tensor& lse,
                                   const at::Tensor& target, const at::Tensor& grad);
#endif

}  // namespace lumos
