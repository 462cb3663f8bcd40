#include "sutra/engine/batch_plan.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

#include "sutra/error.h"

namespace sutra::engine {
namespace {

void check_lengths(const int32_t* lengths, int64_t n) {
  SUTRA_CHECK(n >= 0, "the number of sequences", ">= 0", n);
  for (int64_t i = 0; i < n; ++i) {
    if (lengths[i] < 1) {
      throw std::invalid_argument("every sequence length must be >= 1, got " +
                                  std::to_string(lengths[i]) + " at lengths[" + std::to_string(i) +
                                  "]");
    }
  }
}

/// Indices of `lengths` longest first; equal lengths keep their input order.
std::vector<int32_t> longest_first(const int32_t* lengths, int64_t n) {
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [lengths](int32_t a, int32_t b) { return lengths[a] > lengths[b]; });
  return order;
}

/// Consecutive runs of the longest-first order, each within the sequence and token caps, as few
/// as the caps allow (filling greedily gives the fewest for caps that only grow with a run).
std::vector<std::vector<int32_t>> fill_to_caps(const std::vector<int32_t>& order,
                                               const int32_t* lengths, const BatchPlanParams& p) {
  std::vector<std::vector<int32_t>> groups;
  std::vector<int32_t> current;
  int64_t real_tokens = 0;
  const bool count_real = p.packing == Packing::kAlways;
  for (int32_t index : order) {
    if (!current.empty()) {
      const int64_t rows = static_cast<int64_t>(current.size()) + 1;
      const int64_t cost = count_real ? real_tokens + lengths[index]
                                      : rows * static_cast<int64_t>(lengths[current.front()]);
      if (rows > p.max_sequences || cost > p.max_tokens) {
        groups.push_back(std::move(current));
        current.clear();
        real_tokens = 0;
      }
    }
    current.push_back(index);
    real_tokens += lengths[index];
  }
  if (!current.empty()) groups.push_back(std::move(current));
  return groups;
}

/// Modelled cost of one pass over `rows` sequences holding `tokens` tokens, the longest `longest`.
double pass_cost(int64_t rows, int64_t tokens, int64_t longest, const BatchPlanParams& p) {
  const double padded = static_cast<double>(rows) * static_cast<double>(longest);
  const double packed = static_cast<double>(tokens) * (1.0 + p.packing_overhead);
  switch (p.packing) {
    case Packing::kNever:
      return padded;
    case Packing::kAlways:
      return packed;
    case Packing::kWhenItPays:
      return rows > 1 ? std::min(padded, packed) : padded;
  }
  return padded;
}

/// An optimal partition of one longest-first run into passes, minimizing the sum of
/// pass_cost_tokens + the pass's modelled cost. Cuts fall only where the length changes (a run of
/// equal lengths never gains from a cut), so the search is over d distinct lengths, O(d^2).
std::vector<std::vector<int32_t>> split_run(const std::vector<int32_t>& run, const int32_t* lengths,
                                            const BatchPlanParams& p) {
  std::vector<size_t> bounds = {0};
  for (size_t k = 1; k < run.size(); ++k) {
    if (lengths[run[k]] != lengths[run[k - 1]]) bounds.push_back(k);
  }
  bounds.push_back(run.size());
  std::vector<int64_t> prefix(run.size() + 1, 0);
  for (size_t k = 0; k < run.size(); ++k) prefix[k + 1] = prefix[k] + lengths[run[k]];

  const size_t m = bounds.size();
  std::vector<double> best(m, std::numeric_limits<double>::infinity());
  std::vector<size_t> cut(m, 0);
  best[0] = 0.0;
  for (size_t j = 1; j < m; ++j) {
    for (size_t i = 0; i < j; ++i) {
      const int64_t rows = static_cast<int64_t>(bounds[j] - bounds[i]);
      const int64_t tokens = prefix[bounds[j]] - prefix[bounds[i]];
      const double cost =
          best[i] + p.pass_cost_tokens + pass_cost(rows, tokens, lengths[run[bounds[i]]], p);
      if (cost < best[j]) {  // strict: on a tie the longer pass (fewer passes) wins
        best[j] = cost;
        cut[j] = i;
      }
    }
  }
  std::vector<std::vector<int32_t>> passes;
  for (size_t j = m - 1; j > 0; j = cut[j]) {
    passes.emplace_back(run.begin() + static_cast<std::ptrdiff_t>(bounds[cut[j]]),
                        run.begin() + static_cast<std::ptrdiff_t>(bounds[j]));
  }
  std::reverse(passes.begin(), passes.end());
  return passes;
}

PlannedPass make_pass(std::vector<int32_t> order, const int32_t* lengths,
                      const BatchPlanParams& p) {
  PlannedPass pass;
  std::vector<int32_t> own(order.size());
  for (size_t k = 0; k < order.size(); ++k) own[k] = lengths[order[k]];
  switch (p.packing) {
    case Packing::kNever:
      pass.packed = false;
      break;
    case Packing::kAlways:
      pass.packed = true;
      break;
    case Packing::kWhenItPays:
      pass.packed = packing_pays(own.data(), static_cast<int64_t>(own.size()), p.packing_overhead);
      break;
  }
  if (pass.packed && p.attention_rows) {
    AttentionRows rows = plan_attention_rows(own.data(), static_cast<int64_t>(own.size()), 0);
    std::vector<int32_t> laid_out(order.size());
    for (size_t k = 0; k < order.size(); ++k) laid_out[k] = order[rows.order[k]];
    order = std::move(laid_out);
    pass.cu_rowlens.assign(1, 0);
    for (int32_t length : rows.row_lengths)
      pass.cu_rowlens.push_back(pass.cu_rowlens.back() + length);
  }
  pass.cu_seqlens.assign(1, 0);
  for (int32_t index : order) {
    pass.cu_seqlens.push_back(pass.cu_seqlens.back() + lengths[index]);
    pass.max_seqlen = std::max(pass.max_seqlen, lengths[index]);
  }
  pass.order = std::move(order);
  return pass;
}

void check_gather(const PlannedPass& pass, const int32_t* cu_seqlens, int64_t num_sequences) {
  for (size_t k = 0; k < pass.order.size(); ++k) {
    const int32_t index = pass.order[k];
    SUTRA_CHECK(index >= 0 && index < num_sequences, "pass.order",
                "indices of cu_seqlens' " + std::to_string(num_sequences) + " sequences", index);
    const int32_t length = cu_seqlens[index + 1] - cu_seqlens[index];
    const int32_t planned = pass.cu_seqlens[k + 1] - pass.cu_seqlens[k];
    SUTRA_CHECK(length == planned, ("the length of sequence " + std::to_string(index)).c_str(),
                "the planned " + std::to_string(planned) + " (cu_seqlens is not the one planned)",
                length);
  }
}

}  // namespace

bool packing_pays(const int32_t* lengths, int64_t n, double overhead) {
  if (n < 2) return false;
  int64_t total = 0;
  int32_t longest = 0;
  for (int64_t i = 0; i < n; ++i) {
    total += lengths[i];
    longest = std::max(longest, lengths[i]);
  }
  return static_cast<double>(total) * (1.0 + overhead) <
         static_cast<double>(n) * static_cast<double>(longest);
}

AttentionRows plan_attention_rows(const int32_t* lengths, int64_t n, int64_t capacity) {
  check_lengths(lengths, n);
  AttentionRows out;
  if (n == 0) return out;
  const int64_t longest = *std::max_element(lengths, lengths + n);
  capacity = std::max(capacity, longest);
  std::vector<std::vector<int32_t>> rows;
  std::vector<int64_t> room;
  for (int32_t position : longest_first(lengths, n)) {
    size_t r = 0;
    while (r < rows.size() && lengths[position] > room[r]) ++r;
    if (r == rows.size()) {
      rows.emplace_back();
      room.push_back(capacity);
    }
    rows[r].push_back(position);
    room[r] -= lengths[position];
  }
  for (size_t r = 0; r < rows.size(); ++r) {
    out.order.insert(out.order.end(), rows[r].begin(), rows[r].end());
    out.row_lengths.push_back(static_cast<int32_t>(capacity - room[r]));
  }
  return out;
}

std::vector<PlannedPass> plan_batches(const int32_t* lengths, int64_t n, const BatchPlanParams& p) {
  SUTRA_CHECK(p.max_sequences >= 1, "max_sequences", ">= 1", p.max_sequences);
  SUTRA_CHECK(p.max_tokens >= 1, "max_tokens", ">= 1", p.max_tokens);
  SUTRA_CHECK(p.packing_overhead >= 0.0, "packing_overhead", ">= 0", p.packing_overhead);
  check_lengths(lengths, n);
  std::vector<PlannedPass> passes;
  for (std::vector<int32_t>& run : fill_to_caps(longest_first(lengths, n), lengths, p)) {
    if (p.pass_cost_tokens < 0.0) {
      passes.push_back(make_pass(std::move(run), lengths, p));
      continue;
    }
    for (std::vector<int32_t>& part : split_run(run, lengths, p)) {
      passes.push_back(make_pass(std::move(part), lengths, p));
    }
  }
  return passes;
}

void gather_padded(const PlannedPass& pass, const int32_t* ids, const int32_t* cu_seqlens,
                   int64_t num_sequences, int64_t pad_id, int64_t* input_ids,
                   int64_t* attention_mask) {
  check_gather(pass, cu_seqlens, num_sequences);
  const int64_t width = pass.max_seqlen;
  for (size_t k = 0; k < pass.order.size(); ++k) {
    const int32_t* source = ids + cu_seqlens[pass.order[k]];
    const int64_t length = pass.cu_seqlens[k + 1] - pass.cu_seqlens[k];
    int64_t* row = input_ids + static_cast<int64_t>(k) * width;
    int64_t* mask = attention_mask + static_cast<int64_t>(k) * width;
    std::copy(source, source + length, row);
    std::fill(row + length, row + width, pad_id);
    std::fill(mask, mask + length, int64_t{1});
    std::fill(mask + length, mask + width, int64_t{0});
  }
}

void gather_packed(const PlannedPass& pass, const int32_t* ids, const int32_t* cu_seqlens,
                   int64_t num_sequences, int64_t* input_ids) {
  check_gather(pass, cu_seqlens, num_sequences);
  for (size_t k = 0; k < pass.order.size(); ++k) {
    const int32_t* source = ids + cu_seqlens[pass.order[k]];
    std::copy(source, source + (pass.cu_seqlens[k + 1] - pass.cu_seqlens[k]),
              input_ids + pass.cu_seqlens[k]);
  }
}

}  // namespace sutra::engine
