// Bindings of the native WordPiece tokenizer (sutra/tokenizer/wordpiece.h). Translation only:
// the texts' UTF-8 is copied out while the GIL is held, the tokenization runs without it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
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
}

}  // namespace sutra::bindings
