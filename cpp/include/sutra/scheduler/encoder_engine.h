// The GPU engine as a scheduler Engine: one GpuEncoder (one device) behind one worker. Plain
// C++, so a CPU-only build compiles it against the engine's stub (which raises when built).
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "sutra/engine/encoder.h"
#include "sutra/scheduler/device_pool.h"

namespace sutra::scheduler {

class EncoderEngine : public Engine {
 public:
  explicit EncoderEngine(std::shared_ptr<engine::GpuEncoder> encoder)
      : encoder_(std::move(encoder)) {}

  int device() const { return encoder_->device(); }
  int64_t output_dim() const override { return encoder_->output_dim(); }
  void encode(const int32_t* ids, const int32_t* cu_seqlens, int64_t batch, float* out) override {
    encoder_->encode(ids, cu_seqlens, batch, nullptr, 0, out, nullptr, nullptr, {});
  }
  /// One one-token sequence through the whole forward pass: exercises the device, the kernels
  /// and cuBLASLt for the price of a tiny launch. Token id 0 is in every vocabulary.
  void probe() override {
    const int32_t ids[1] = {0};
    const int32_t cu_seqlens[2] = {0, 1};
    std::vector<float> row(static_cast<size_t>(encoder_->output_dim()));
    encoder_->encode(ids, cu_seqlens, 1, nullptr, 0, row.data(), nullptr, nullptr, {});
  }

 private:
  std::shared_ptr<engine::GpuEncoder> encoder_;
};

}  // namespace sutra::scheduler
