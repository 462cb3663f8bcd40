// rotary_cos_sin_table (sutra/kernels/rotary.h): host code, in every build.
#include <cmath>
#include <vector>

#include "sutra/error.h"
#include "sutra/kernels/rotary.h"

namespace sutra {

void rotary_cos_sin_table(double theta, int head_dim, int64_t max_positions, float* out) {
  SUTRA_CHECK(theta > 0, "theta", "> 0", theta);
  SUTRA_CHECK(head_dim >= 2 && head_dim % 2 == 0, "head_dim", "even, >= 2", head_dim);
  SUTRA_CHECK(max_positions >= 1, "max_positions", ">= 1", max_positions);
  const int half = head_dim / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[static_cast<size_t>(i)] = 1.0f / powf(static_cast<float>(theta), exponent);
  }
  for (int64_t position = 0; position < max_positions; ++position) {
    for (int i = 0; i < half; ++i) {
      const float angle = static_cast<float>(position) * inv_freq[static_cast<size_t>(i)];
      float* pair = out + (position * half + i) * 2;
      pair[0] = static_cast<float>(std::cos(static_cast<double>(angle)));
      pair[1] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

}  // namespace sutra
