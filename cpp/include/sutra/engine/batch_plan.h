// The one batch planner: which sequences share a forward pass, in what layout, and (for the
// packed CPU graph) in which attention rows. Every backend plans its passes with it, from the
// sequence lengths alone (lengths = diff(cu_seqlens) of the flat token arrays).
#pragma once

#include <cstdint>
#include <vector>

namespace sutra::engine {

/// How a pass lays its sequences out.
enum class Packing : int {
  kNever = 0,       // every pass padded to its longest sequence
  kWhenItPays = 1,  // packed when the padding it saves outweighs what packing costs
  kAlways = 2,      // every pass packed (a padding-free engine)
};

struct BatchPlanParams {
  int64_t max_sequences = 32;  // most sequences in one pass, >= 1
  // Most tokens one pass computes, >= 1: rows x longest for passes that may run padded, the
  // real tokens with Packing::kAlways. A sequence longer than the budget gets a pass alone.
  int64_t max_tokens = 16384;
  // < 0: the fewest passes (each filled up to the caps, longest sequences first). >= 0: the fixed
  // cost of one more pass, in tokens of compute; a pass is then cut where that saves more padding
  // than it costs (an optimal partition of the length-sorted sequences).
  double pass_cost_tokens = -1.0;
  Packing packing = Packing::kNever;
  // A packed pass of T tokens is modelled to cost T * (1 + overhead) (its gathers and masks).
  double packing_overhead = 0.03;
  // Lay packed passes out in attention rows of whole sequences (the CPU packed graph attends
  // within rows; see plan_attention_rows) and fill PlannedPass::cu_rowlens.
  bool attention_rows = false;
};

struct PlannedPass {
  std::vector<int32_t> order;       // the input sequences of this pass, in their layout order
  std::vector<int32_t> cu_seqlens;  // [order.size() + 1]: offsets of the sequences in that order
  int32_t max_seqlen = 0;           // the longest sequence of the pass
  bool packed = false;              // packed (concatenated) rather than padded
  std::vector<int32_t> cu_rowlens;  // packed with attention rows: 0, then each row's end
  int64_t tokens() const { return cu_seqlens.empty() ? 0 : cu_seqlens.back(); }
  int64_t padded_tokens() const { return static_cast<int64_t>(order.size()) * max_seqlen; }
};

/// Plans the passes over `n` sequences of these lengths (each >= 1). Every index appears in
/// exactly one pass; passes come longest first. Throws std::invalid_argument for bad params.
std::vector<PlannedPass> plan_batches(const int32_t* lengths, int64_t n,
                                      const BatchPlanParams& params);

/// Whether one packed pass over sequences of these lengths is modelled to cost less than one
/// padded pass: n > 1 and sum * (1 + overhead) < n * longest.
bool packing_pays(const int32_t* lengths, int64_t n, double overhead);

struct AttentionRows {
  std::vector<int32_t> order;        // positions of the input, row after row
  std::vector<int32_t> row_lengths;  // tokens in each row, each <= the capacity
};

/// Bins sequences into attention rows, first fit, longest first. `capacity` is the most tokens
/// in a row; anything below the longest sequence (0 included) means the longest sequence's
/// length, the least that keeps attention cost near tokens x longest. Lengths >= 1.
AttentionRows plan_attention_rows(const int32_t* lengths, int64_t n, int64_t capacity);

/// The padded inputs of a pass: for each sequence of `pass.order`, its tokens from the flat
/// `ids` / `cu_seqlens` ([num_sequences + 1], of all the planned sequences), right-padded with
/// `pad_id` to pass.max_seqlen. input_ids and attention_mask are [order.size(), max_seqlen]
/// int64 (the ONNX graphs' type). Throws std::invalid_argument when cu_seqlens is not the one
/// the pass was planned from.
void gather_padded(const PlannedPass& pass, const int32_t* ids, const int32_t* cu_seqlens,
                   int64_t num_sequences, int64_t pad_id, int64_t* input_ids,
                   int64_t* attention_mask);

/// The packed input ids of a pass: the tokens of pass.order concatenated, [pass.tokens()].
void gather_packed(const PlannedPass& pass, const int32_t* ids, const int32_t* cu_seqlens,
                   int64_t num_sequences, int64_t* input_ids);

}  // namespace sutra::engine
