#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "sutra/kernels/activation.h"

namespace sutra::bindings {

void bind_ops(pybind11::module_& m);   // ops_bindings.cc: windows, aggregation, pooling, quantize
void bind_cuda(pybind11::module_& m);  // cuda_bindings.cc: device queries and the smoke op
void bind_attention(pybind11::module_& m);  // attention_bindings.cc: flash attention forward
void bind_engine(pybind11::module_& m);     // engine_bindings.cc: the batch planner
void bind_kernels(pybind11::module_& m);    // kernel_bindings.cc: the engine's kernels, for tests
void bind_encoder(pybind11::module_& m);    // encoder_bindings.cc: the GPU engine
void bind_tokenizer(pybind11::module_& m);  // tokenizer_bindings.cc: the WordPiece tokenizer
void bind_scheduler(pybind11::module_& m);  // scheduler_bindings.cc: the device pool

/// The Activation an activation name ("gelu", "gelu_tanh", "relu", "tanh", "sigmoid",
/// "identity") means; a ValueError naming `what` and the allowed names otherwise.
Activation parse_activation(const std::string& name, const char* what);  // encoder_bindings.cc

}  // namespace sutra::bindings
