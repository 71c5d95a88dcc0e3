// A fake CUDA device for a CPU-only PyTorch build, used by the planner (lumos_megatron.plan) to
// trace a training step on `cuda` FakeTensors. Nothing here touches memory: FakeTensorMode never
// allocates; what a CPU build lacks is the bookkeeping autograd and device guards need.
//
// 1. A device guard for DeviceType::CUDA (c10's FakeGuardImpl: device index bookkeeping only).
//    Without it, autograd's engine aborts the process when a backward runs on `cuda` tensors
//    ("PyTorch is not linked with support for cuda devices").
// 2. CUDA hooks whose hasCUDA() is true and that report one device. Without them the engine
//    refuses with "Cannot access accelerator device when none is available".
//
// The hooks are read once, early in `import torch`, so this library must be loaded before the
// interpreter starts (LD_PRELOAD); lumos_megatron.plan.fake_device builds it and starts the
// tracing workers with it.
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/core/impl/FakeGuardImpl.h>

namespace {

C10_REGISTER_GUARD_IMPL(CUDA, c10::impl::FakeGuardImpl<c10::DeviceType::CUDA>);

// The registry key must be "CUDAHooks": at::detail::getCUDAHooks() creates that name.
struct CUDAHooks final : at::CUDAHooksInterface {
  explicit CUDAHooks(at::CUDAHooksArgs) {}
  void init() const override {}
  bool hasCUDA() const override { return true; }
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return true; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
  c10::DeviceIndex deviceCount() const override { return 1; }
  int getNumGPUs() const override { return 1; }
  c10::DeviceIndex current_device() const override { return 0; }
  c10::DeviceIndex getCurrentDevice() const override { return 0; }
  void setCurrentDevice(c10::DeviceIndex) const override {}
  c10::DeviceIndex exchangeDevice(c10::DeviceIndex) const override { return 0; }
  c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex) const override { return 0; }
};

}  // namespace

namespace at {
REGISTER_CUDA_HOOKS(CUDAHooks);
}  // namespace at
