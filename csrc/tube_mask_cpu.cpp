// Temporal tube mask, CPU kernel (OpenMP over samples). Reference: ops/tube_mask.py.
//
// For a sample with period p > 0 the k-th content position is masked iff pattern[k % p], where
// pattern marks the num_masked positions j < p with the smallest counter-RNG keys. The pattern
// repeats every p content positions, i.e. the same spatial positions are masked in every frame.
#include <algorithm>
#include <cstdint>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>

#include "counter_rng.h"
#include "lumos_ops.h"

namespace lumos {

void check_tube_mask_args(const at::Tensor& tokens, const at::Tensor& labels,
                          const at::Tensor& content, const at::Tensor& period,
                          const at::Tensor& num_masked, const at::Tensor& stream) {
  TORCH_CHECK_VALUE(tokens.dim() == 2, "tube_mask_apply: tokens must be [B, L], got ",
                    tokens.sizes());
  TORCH_CHECK_VALUE(labels.sizes() == tokens.sizes() && content.sizes() == tokens.sizes(),
                    "tube_mask_apply: tokens ", tokens.sizes(), ", labels ", labels.sizes(),
                    " and content ", content.sizes(), " must have the same shape");
  TORCH_CHECK_TYPE(tokens.scalar_type() == at::kLong && labels.scalar_type() == at::kLong,
                   "tube_mask_apply: tokens and labels must be int64");
  TORCH_CHECK_TYPE(content.scalar_type() == at::kBool, "tube_mask_apply: content must be bool");
  TORCH_CHECK_VALUE(labels.device() == tokens.device() && content.device() == tokens.device(),
                    "tube_mask_apply: tokens, labels and content must be on one device");
  const int64_t batch = tokens.size(0);
  for (const at::Tensor* t : {&period, &num_masked, &stream}) {
    TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == batch && t->scalar_type() == at::kLong,
                      "tube_mask_apply: period, num_masked and stream must be int64 [B=", batch,
                      "], got ", t->sizes(), " ", t->scalar_type());
  }
}

void check_tube_mask_values(const int64_t* period, const int64_t* num_masked,
                            const int64_t* stream, int64_t batch) {
  for (int64_t b = 0; b < batch; ++b) {
    // Keys index positions with 32-bit counters, so a period must fit in 32 bits.
    TORCH_CHECK_VALUE(period[b] >= 0 && period[b] <= INT32_MAX, "tube_mask_apply: sample ", b,
                      " has period ", period[b], " (must be in [0, 2^31))");
    TORCH_CHECK_VALUE(num_masked[b] >= 0 && num_masked[b] <= period[b], "tube_mask_apply: sample ",
                      b, " has num_masked ", num_masked[b], " outside [0, period=", period[b], "]");
    TORCH_CHECK_VALUE(stream[b] >= 0, "tube_mask_apply: sample ", b, " has negative stream ",
                      stream[b]);
  }
}

namespace {

// pattern[j] = 1 for the num_masked positions with the smallest keys. Keys are distinct, so
// "key <= the num_masked-th smallest key" selects exactly num_masked positions.
std::vector<uint8_t> sample_pattern(int64_t stream, int64_t period, int64_t num_masked) {
  const uint32_t base = key_base(stream);
  std::vector<uint32_t> keys(period);
  for (int64_t j = 0; j < period; ++j) keys[j] = pattern_key(base, static_cast<uint32_t>(j));
  std::vector<uint32_t> sorted(keys);
  std::nth_element(sorted.begin(), sorted.begin() + (num_masked - 1), sorted.end());
  const uint32_t threshold = sorted[num_masked - 1];
  std::vector<uint8_t> pattern(period);
  for (int64_t j = 0; j < period; ++j) pattern[j] = keys[j] <= threshold;
  return pattern;
}

}  // namespace

TensorTriple tube_mask_apply_cpu(const at::Tensor& tokens, const at::Tensor& labels,
                                 const at::Tensor& content, const at::Tensor& period,
                                 const at::Tensor& num_masked, const at::Tensor& stream,
                                 int64_t mask_id, int64_t ignore_index) {
  check_tube_mask_args(tokens, labels, content, period, num_masked, stream);
  const at::Tensor tok = tokens.contiguous(), lab = labels.contiguous();
  const at::Tensor con = content.contiguous();
  const at::Tensor per = period.contiguous(), cnt = num_masked.contiguous();
  const at::Tensor str = stream.contiguous();
  const int64_t batch = tok.size(0), length = tok.size(1);
  const int64_t* per_p = per.data_ptr<int64_t>();
  const int64_t* cnt_p = cnt.data_ptr<int64_t>();
  const int64_t* str_p = str.data_ptr<int64_t>();
  // Validate before the parallel region: exceptions must not escape an OpenMP thread.
  check_tube_mask_values(per_p, cnt_p, str_p, batch);

  at::Tensor tok_out = at::empty_like(tok), lab_out = at::empty_like(lab);
  at::Tensor masked = at::empty_like(con);
  const int64_t* tok_in = tok.data_ptr<int64_t>();
  const int64_t* lab_in = lab.data_ptr<int64_t>();
  const bool* con_in = con.data_ptr<bool>();
  int64_t* tok_o = tok_out.data_ptr<int64_t>();
  int64_t* lab_o = lab_out.data_ptr<int64_t>();
  bool* msk_o = masked.data_ptr<bool>();

  // One sample per iteration; dynamic schedule because periods (pattern cost) differ per sample.
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads()) \
    if (batch > 1 && batch * length > 16384)
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t off = b * length;
    std::copy(tok_in + off, tok_in + off + length, tok_o + off);
    std::copy(lab_in + off, lab_in + off + length, lab_o + off);
    std::fill(msk_o + off, msk_o + off + length, false);
    const int64_t p = per_p[b], nm = cnt_p[b];
    if (p == 0 || nm == 0) continue;
    const std::vector<uint8_t> pattern = sample_pattern(str_p[b], p, nm);
    int64_t j = 0;  // index in the pattern of the next content position (k % p, kept incrementally)
    for (int64_t i = off; i < off + length; ++i) {
      if (!con_in[i]) continue;
      if (pattern[j]) {
        tok_o[i] = mask_id;
        msk_o[i] = true;
      } else {
        lab_o[i] = ignore_index;
      }
      j = (j + 1 == p) ? 0 : j + 1;
    }
  }
  return {tok_out, lab_out, masked};
}

}  // namespace lumos
