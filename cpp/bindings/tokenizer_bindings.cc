// Bindings of the native WordPiece tokenizer (sutra/tokenizer/wordpiece.h), and the translation
// of Hugging Face tokenizers' output (Encoding objects) into the same flat arrays. Translation
// only: the texts' UTF-8 is copied out while the GIL is held, the tokenization runs without it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "bindings.h"
#include "numpy_checks.h"
#include "sutra/tokenizer/wordpiece.h"

namespace sutra::bindings {
namespace {

using tokenizer::AddedToken;
using tokenizer::EncodeResult;
using tokenizer::WordPieceParams;
using tokenizer::WordPieceTokenizer;

/// One buffer holding every text's UTF-8, so that no Python object is touched without the GIL.
struct TextBuffer {
  std::string bytes;
  std::vector<size_t> offsets{0};

  std::vector<std::string_view> views() const {
    std::vector<std::string_view> out(offsets.size() - 1);
    for (size_t i = 0; i + 1 < offsets.size(); ++i) {
      out[i] = std::string_view(bytes.data() + offsets[i], offsets[i + 1] - offsets[i]);
    }
    return out;
  }
};

TextBuffer copy_texts(const py::sequence& texts) {
  if (PyUnicode_Check(texts.ptr())) {  // a str is a sequence too: of one-character texts
    throw py::value_error("texts must be a list of str, got one str");
  }
  TextBuffer buffer;
  const py::ssize_t count = py::len(texts);
  buffer.offsets.reserve(static_cast<size_t>(count) + 1);
  for (py::ssize_t i = 0; i < count; ++i) {
    py::object item = texts[i];
    if (!PyUnicode_Check(item.ptr())) {
      throw py::value_error("texts must be a list of str, got " +
                            std::string(py::str(py::type::handle_of(item).attr("__name__"))) +
                            " at index " + std::to_string(i));
    }
    Py_ssize_t size = 0;
    const char* data = PyUnicode_AsUTF8AndSize(item.ptr(), &size);
    if (data == nullptr) throw py::error_already_set();  // e.g. a lone surrogate
    buffer.bytes.append(data, static_cast<size_t>(size));
    buffer.offsets.push_back(buffer.bytes.size());
  }
  return buffer;
}


/// The `ids` list of one item of flatten_token_ids's input: the item itself when it is a list,
/// else its `ids` attribute (a tokenizers.Encoding's), which must be a list.
py::object id_list(const py::handle& item, py::ssize_t index) {
  if (PyList_Check(item.ptr())) return py::reinterpret_borrow<py::object>(item);
  PyObject* ids = PyObject_GetAttrString(item.ptr(), "ids");
  if (ids == nullptr || !PyList_Check(ids)) {
    Py_XDECREF(ids);
    PyErr_Clear();
    throw py::type_error("sequences[" + std::to_string(index) +
                         "] must be a list of token ids or have an 'ids' list "
                         "(a tokenizers.Encoding), got " +
                         std::string(py::str(py::type::handle_of(item).attr("__name__"))));
  }
  return py::reinterpret_steal<py::object>(ids);
}

/// Every sequence's ids in one int32 array, cut as TextTokenizer.truncate cuts (the first
/// max_tokens - num_suffix_special ids and the last num_suffix_special). One C loop in place of
/// a Python step per token: on the pipelined path (tokenizers one chunk ahead of the GPU) this
/// runs on a worker thread holding the GIL, and every microsecond of it is one the tokenizer's
/// next batch call may wait for.
py::tuple flatten_token_ids(const py::sequence& sequences, std::optional<int64_t> max_tokens,
                            int64_t num_suffix_special) {
  if (max_tokens && (*max_tokens < num_suffix_special || *max_tokens < 1)) {
    throw py::value_error("max_tokens must be >= 1 and >= num_suffix_special (" +
                          std::to_string(num_suffix_special) + "), got " +
                          std::to_string(*max_tokens));
  }
  if (num_suffix_special < 0) {
    throw py::value_error("num_suffix_special must be >= 0, got " +
                          std::to_string(num_suffix_special));
  }
  const py::ssize_t count = py::len(sequences);
  std::vector<py::object> lists;
  lists.reserve(static_cast<size_t>(count));
  std::vector<int32_t> cu(static_cast<size_t>(count) + 1, 0);
  auto* cut = new std::vector<uint8_t>(static_cast<size_t>(count), 0);
  py::capsule cut_owner(cut, [](void* p) { delete static_cast<std::vector<uint8_t>*>(p); });
  int64_t total = 0;
  for (py::ssize_t i = 0; i < count; ++i) {
    lists.push_back(id_list(sequences[i], i));
    int64_t length = PyList_GET_SIZE(lists.back().ptr());
    if (max_tokens && length > *max_tokens) {
      length = *max_tokens;
      (*cut)[static_cast<size_t>(i)] = 1;
    }
    total += length;
    if (total > std::numeric_limits<int32_t>::max()) {
      throw py::value_error("the sequences hold more than 2^31 - 1 tokens in all");
    }
    cu[static_cast<size_t>(i) + 1] = static_cast<int32_t>(total);
  }
  std::vector<int32_t> ids(static_cast<size_t>(total));
  for (py::ssize_t i = 0; i < count; ++i) {
    PyObject* list = lists[static_cast<size_t>(i)].ptr();
    const py::ssize_t length = PyList_GET_SIZE(list);
    const py::ssize_t kept = cu[static_cast<size_t>(i) + 1] - cu[static_cast<size_t>(i)];
    const py::ssize_t suffix = (*cut)[static_cast<size_t>(i)] ? num_suffix_special : 0;
    int32_t* out = ids.data() + cu[static_cast<size_t>(i)];
    for (py::ssize_t k = 0; k < kept; ++k) {
      // The head of the list, then (when cut) its last `suffix` ids.
      const py::ssize_t source = k < kept - suffix ? k : length - (kept - k);
      const long value = PyLong_AsLong(PyList_GET_ITEM(list, source));
      if (value < 0 || value > std::numeric_limits<int32_t>::max()) {
        if (PyErr_Occurred()) PyErr_Clear();
        throw py::value_error("sequences[" + std::to_string(i) + "][" + std::to_string(source) +
                              "] is not a token id (an int in [0, 2^31 - 1])");
      }
      out[k] = static_cast<int32_t>(value);
    }
  }
  py::array cut_array(py::dtype::of<bool>(), {count}, {}, cut->data(), cut_owner);
  return py::make_tuple(to_numpy(std::move(ids), {static_cast<py::ssize_t>(total)}),
                        to_numpy(std::move(cu), {count + 1}), cut_array);
}

}  // namespace

void bind_tokenizer(py::module_& m) {
  py::class_<WordPieceTokenizer>(m, "WordPieceTokenizer",
                                 "BERT normalizer + BERT pre-tokenizer + WordPiece + special "
                                 "tokens, equal to Hugging Face tokenizers on the same "
                                 "tokenizer.json (sutra.native_tokenizer builds it from one).")
      .def(py::init([](std::vector<std::pair<std::string, int32_t>> vocab, std::string unk_token,
                       std::string continuing_subword_prefix, int max_input_chars_per_word,
                       bool clean_text, bool handle_chinese_chars,
                       std::optional<bool> strip_accents, bool lowercase,
                       std::vector<std::tuple<std::string, int32_t, bool>> added_tokens,
                       std::vector<int32_t> prefix_ids, std::vector<int32_t> suffix_ids) {
             WordPieceParams params;
             params.vocab = std::move(vocab);
             params.unk_token = std::move(unk_token);
             params.continuing_subword_prefix = std::move(continuing_subword_prefix);
             params.max_input_chars_per_word = max_input_chars_per_word;
             params.clean_text = clean_text;
             params.handle_chinese_chars = handle_chinese_chars;
             params.strip_accents = strip_accents;
             params.lowercase = lowercase;
             for (auto& [content, id, normalized] : added_tokens) {
               params.added_tokens.push_back(AddedToken{std::move(content), id, normalized});
             }
             params.prefix_ids = std::move(prefix_ids);
             params.suffix_ids = std::move(suffix_ids);
             py::gil_scoped_release release;  // hashing the vocabulary
             return new WordPieceTokenizer(std::move(params));
           }),
           py::arg("vocab"), py::kw_only(), py::arg("unk_token"),
           py::arg("continuing_subword_prefix") = "##", py::arg("max_input_chars_per_word") = 100,
           py::arg("clean_text") = true, py::arg("handle_chinese_chars") = true,
           py::arg("strip_accents") = py::none(), py::arg("lowercase") = true,
           py::arg("added_tokens") = std::vector<std::tuple<std::string, int32_t, bool>>{},
           py::arg("prefix_ids") = std::vector<int32_t>{},
           py::arg("suffix_ids") = std::vector<int32_t>{},
           "vocab: [(token, id)]; added_tokens: [(content, id, normalized)]; prefix_ids and\n"
           "suffix_ids: the post-processor's special tokens around one sequence ([CLS], [SEP]).\n"
           "strip_accents None means 'as lowercase'.")
      .def(
          "encode_batch",
          [](const WordPieceTokenizer& self, const py::sequence& texts,
             std::optional<int64_t> max_tokens, int num_threads) {
            const TextBuffer buffer = copy_texts(texts);
            EncodeResult result;
            {
              py::gil_scoped_release release;
              result = self.encode_batch(buffer.views(), max_tokens.value_or(-1), num_threads);
            }
            const auto count = static_cast<py::ssize_t>(result.cut.size());
            const auto tokens = static_cast<py::ssize_t>(result.ids.size());
            auto* cut = new std::vector<uint8_t>(std::move(result.cut));
            py::capsule cut_owner(cut,
                                  [](void* p) { delete static_cast<std::vector<uint8_t>*>(p); });
            py::array cut_array(py::dtype::of<bool>(), {count}, {}, cut->data(), cut_owner);
            return py::make_tuple(to_numpy(std::move(result.ids), {tokens}),
                                  to_numpy(std::move(result.cu_seqlens), {count + 1}), cut_array);
          },
          py::arg("texts"), py::arg("max_tokens") = py::none(), py::arg("num_threads") = 0,
          "texts: list[str] -> (ids int32 [T], cu_seqlens int32 [B + 1], cut bool [B]).\n"
          "Text i is ids[cu_seqlens[i]:cu_seqlens[i + 1]] with its special tokens; with\n"
          "max_tokens (>= the number of special tokens) a longer text keeps its special tokens\n"
          "and its first max_tokens - specials pieces, and cut[i] is True. num_threads 0: one\n"
          "per logical core (the calling thread is one of them). An empty list gives T = 0 and\n"
          "cu_seqlens [0]. The GIL is released while tokenizing.")
      .def(
          "encode_with_offsets",
          [](const WordPieceTokenizer& self, const py::handle& text) {
            if (!PyUnicode_Check(text.ptr())) {
              throw py::type_error(
                  "text must be a str, got " +
                  std::string(py::str(py::type::handle_of(text).attr("__name__"))));
            }
            Py_ssize_t size = 0;
            const char* data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
            if (data == nullptr) throw py::error_already_set();  // e.g. a lone surrogate
            std::vector<int32_t> ids;
            std::vector<int32_t> offsets;
            {
              // The UTF-8 buffer belongs to `text`, which the caller's reference keeps alive.
              py::gil_scoped_release release;
              self.encode_with_offsets(std::string_view(data, static_cast<size_t>(size)), ids,
                                       offsets);
            }
            const auto tokens = static_cast<py::ssize_t>(ids.size());
            return py::make_tuple(to_numpy(std::move(ids), {tokens}),
                                  to_numpy(std::move(offsets), {tokens, py::ssize_t{2}}));
          },
          py::arg("text"),
          "text: str -> (ids int32 [n], offsets int32 [n, 2]) without special tokens or\n"
          "truncation, as tokenizers' encode(text, add_special_tokens=False): offsets[k] is\n"
          "token k's [start, end) in str indices of text, equal to Encoding.offsets. An empty\n"
          "text gives n = 0. The GIL is released while tokenizing.")
      .def_property_readonly("num_special_tokens", &WordPieceTokenizer::num_special_tokens)
      .def_property_readonly("unk_id", &WordPieceTokenizer::unk_id)
      .def_property_readonly_static(
          "unicode_version", [](py::handle) { return WordPieceTokenizer::unicode_version(); },
          "Unicode version of the character tables (Python unicodedata's when generated).");

  m.def("flatten_token_ids", &flatten_token_ids, py::arg("sequences"),
        py::arg("max_tokens") = py::none(), py::arg("num_suffix_special") = 1,
        "sequences: list of token-id lists or of tokenizers.Encoding -> (ids int32 [T],\n"
        "cu_seqlens int32 [B + 1], cut bool [B]), the layout of WordPieceTokenizer.encode_batch.\n"
        "With max_tokens a longer sequence keeps its first max_tokens - num_suffix_special ids\n"
        "and its last num_suffix_special (its special tokens), and cut[i] is True.");
}

}  // namespace sutra::bindings
