// MPNet's relative-position buckets: the one implementation, used by the ONNX graph builder (a
// table through the bindings) and by the attention API (the kernel's bucket map).
#pragma once

#include <cstdint>

namespace sutra {

/// transformers' MPNetEncoder.compute_position_bias calls relative_position_bucket with these
/// defaults whatever the config says; relative_attention_num_buckets only sizes the table.
constexpr int kMpnetNumBuckets = 32;
constexpr int kMpnetMaxDistance = 128;

/// Bucket of `relative_position` = key - query, as transformers'
/// MPNetEncoder.relative_position_bucket computes it: T5-style and bidirectional (half the
/// buckets per sign), exact below num_buckets / 4, logarithmic up to max_distance, the last
/// bucket beyond. The log branch is evaluated in float32 and truncated, like torch, so the
/// boundaries fall on the same distances. Throws std::invalid_argument unless num_buckets is an
/// even number >= 4 and max_distance > num_buckets / 4.
int mpnet_relative_bucket(int64_t relative_position, int num_buckets = kMpnetNumBuckets,
                          int max_distance = kMpnetMaxDistance);

/// out[d + max_relative] = mpnet_relative_bucket(d) for d in [-max_relative, max_relative]:
/// 2 * max_relative + 1 entries. max_relative >= 0.
void mpnet_bucket_table(int64_t max_relative, int num_buckets, int max_distance, int32_t* out);

}  // namespace sutra
