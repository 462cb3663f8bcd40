#include "sutra/relative_position.h"

#include <cmath>
#include <cstdlib>

#include "sutra/error.h"

namespace sutra {
namespace {

void check_bucket_params(int num_buckets, int max_distance) {
  SUTRA_CHECK(num_buckets >= 4 && num_buckets % 2 == 0, "num_buckets", "an even number >= 4",
              num_buckets);
  SUTRA_CHECK(max_distance > num_buckets / 4, "max_distance",
              "> num_buckets / 4 = " + std::to_string(num_buckets / 4), max_distance);
}

int bucket_unchecked(int64_t relative_position, int num_buckets, int max_distance) {
  const int half = num_buckets / 2;
  // n = query - key: keys after the query (relative_position > 0) get the lower half.
  const int64_t n = -relative_position;
  const int sign_offset = n < 0 ? half : 0;
  const int64_t distance = std::llabs(n);
  const int max_exact = half / 2;
  if (distance < max_exact) return sign_offset + static_cast<int>(distance);
  // float32 throughout, as torch evaluates log(n.float() / max_exact) / log(...) * (...).
  const float ratio = static_cast<float>(distance) / static_cast<float>(max_exact);
  const float span = static_cast<float>(std::log(static_cast<double>(max_distance) / max_exact));
  const float scaled = std::log(ratio) / span * static_cast<float>(half - max_exact);
  int large = max_exact + static_cast<int>(scaled);  // truncation, like .to(torch.long)
  if (large > half - 1) large = half - 1;
  return sign_offset + large;
}

}  // namespace

int mpnet_relative_bucket(int64_t relative_position, int num_buckets, int max_distance) {
  check_bucket_params(num_buckets, max_distance);
  return bucket_unchecked(relative_position, num_buckets, max_distance);
}

void mpnet_bucket_table(int64_t max_relative, int num_buckets, int max_distance, int32_t* out) {
  check_bucket_params(num_buckets, max_distance);
  SUTRA_CHECK(max_relative >= 0, "max_relative", ">= 0", max_relative);
  for (int64_t d = -max_relative; d <= max_relative; ++d) {
    out[d + max_relative] = bucket_unchecked(d, num_buckets, max_distance);
  }
}

}  // namespace sutra
