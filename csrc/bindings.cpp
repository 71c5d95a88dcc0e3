// Python bindings of lumos_megatron._C. Each op dispatches on the device of its main tensor:
// CPU kernels are always built; CUDA kernels only when the extension was compiled WITH_CUDA.
// The Python front (lumos_megatron/ops) validates arguments first and falls back to the
// pure-PyTorch references when this module is missing.
// torch/csrc/utils/pybind.h (pybind11 + the at::Tensor casters) rather than torch/extension.h:
// the latter pulls in the whole C++ frontend (nn, optim, ...) and triples this file's build time.
#include <torch/csrc/utils/pybind.h>

#include "lumos_ops.h"

namespace lumos {
namespace {

#ifdef WITH_CUDA
constexpr bool kHasCuda = true;
#else
constexpr bool kHasCuda = false;
#endif

[[noreturn]] void no_cuda(const char* op) {
  TORCH_CHECK(false, op, ": lumos_megatron._C was built without CUDA kernels; reinstall with a "
                         "CUDA build of torch and CUDA_HOME set, or use the reference (LUMOS_NO_EXT=1)");
}

void check_device(const at::Tensor& t, const char* op) {
  TORCH_CHECK(t.device().is_cpu() || t.device().is_cuda(), op, ": unsupported device ",
              t.device());
}

TensorTriple tube_mask_apply(const at::Tensor& tokens, const at::Tensor& labels,
                             const at::Tensor& content, const at::Tensor& period,
                             const at::Tensor& num_masked, const at::Tensor& stream,
                             int64_t mask_id, int64_t ignore_index) {
  check_device(tokens, "tube_mask_apply");
  if (tokens.is_cuda()) {
#ifdef WITH_CUDA
    return tube_mask_apply_cuda(tokens, labels, content, period, num_masked, stream, mask_id,
                                ignore_index);
#else
    no_cuda("tube_mask_apply");
#endif
  }
  return tube_mask_apply_cpu(tokens, labels, content, period.cpu(), num_masked.cpu(),
                             stream.cpu(), mask_id, ignore_index);
}

TensorTriple ce_chunk_forward(const at::Tensor& logits, const at::Tensor& target) {
  check_device(logits, "ce_chunk_forward");
  if (logits.is_cuda()) {
#ifdef WITH_CUDA
    return ce_chunk_forward_cuda(logits, target);
#else
    no_cuda("ce_chunk_forward");
#endif
  }
  return ce_chunk_forward_cpu(logits, target);
}

at::Tensor ce_chunk_backward_(at::Tensor logits, const at::Tensor& lse, const at::Tensor& target,
                              const at::Tensor& grad) {
  check_device(logits, "ce_chunk_backward_");
  if (logits.is_cuda()) {
#ifdef WITH_CUDA
    return ce_chunk_backward_cuda_(logits, lse, target, grad);
#else
    no_cuda("ce_chunk_backward_");
#endif
  }
  return ce_chunk_backward_cpu_(logits, lse, target, grad);
}

}  // namespace
}  // namespace lumos

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "lumos_megatron C++/CUDA kernels (see lumos_megatron/ops for semantics and references)";
  m.def("has_cuda", [] { return lumos::kHasCuda; }, "Whether the CUDA kernels were compiled in.");
  m.def("tube_mask_apply", &lumos::tube_mask_apply, "Temporal tube mask (out of place).",
        py::arg("tokens"), py::arg("labels"), py::arg("content"), py::arg("period"),
        py::arg("num_masked"), py::arg("stream"), py::arg("mask_id"), py::arg("ignore_index"));
  m.def("ce_chunk_forward", &lumos::ce_chunk_forward,
        "(row_max, sum_exp, target_logit) of a logits chunk, single-pass online log-sum-exp.",
        py::arg("logits"), py::arg("target"));
  m.def("ce_chunk_backward_", &lumos::ce_chunk_backward_,
        "In-place softmax-minus-one-hot times grad of a logits chunk.", py::arg("logits"),
        py::arg("lse"), py::arg("target"), py::arg("grad"));
}
