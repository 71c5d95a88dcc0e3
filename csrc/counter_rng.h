// Counter-based 32-bit RNG shared by the CPU and CUDA kernels.
//
// Mirrors lumos_megatron/ops/counter_rng.py bit for bit: the tube-mask pattern of a sample is a
// pure function of (stream, period, num_masked), so the reference, the C++ kernel and the CUDA
// kernel agree exactly and no RNG state has to travel with a batch.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define LUMOS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LUMOS_HOST_DEVICE inline
#endif

namespace lumos {

// The "lowbias32" bijection on 32 bits (xorshift-multiply, two rounds).
LUMOS_HOST_DEVICE uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// Folds a non-negative int64 stream id into the 32-bit base of its keys.
LUMOS_HOST_DEVICE uint32_t key_base(int64_t stream) {
  const uint64_t s = static_cast<uint64_t>(stream);
  return mix32(mix32(static_cast<uint32_t>(s)) ^ static_cast<uint32_t>(s >> 32));
}

// Key of pattern position j; distinct for distinct j because mix32 is a bijection.
LUMOS_HOST_DEVICE uint32_t pattern_key(uint32_t base, uint32_t j) { return mix32(base ^ j); }

}  // namespace lumos
