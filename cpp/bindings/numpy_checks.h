// Argument checks at the Python boundary. Arrays are taken as they are or refused: no dtype
// conversion, no contiguous copy, so callers see the cost of a copy in their own code.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sutra::bindings {

namespace py = pybind11;

/// An array argument taken as the raw Python object, so that require_array can refuse it with a
/// ValueError naming the argument (pybind11's own conversion would copy, or raise TypeError).
/// Its only other job is to show as numpy.typing.NDArray[<dtype>] in signatures and stubs.
template <typename T>
struct ArrayArg {
  py::handle object;
};

/// "numpy.ndarray of dtype float64 with shape (3, 4), not C-contiguous" or "list".
inline std::string describe(py::handle obj) {
  if (!py::isinstance<py::array>(obj)) {
    return std::string(py::str(py::type::handle_of(obj).attr("__name__")));
  }
  auto arr = py::reinterpret_borrow<py::array>(obj);
  std::string shape = "(";
  for (py::ssize_t i = 0; i < arr.ndim(); ++i) {
    shape += std::to_string(arr.shape(i)) + (arr.ndim() == 1 || i + 1 < arr.ndim() ? "," : "");
    if (i + 1 < arr.ndim()) shape += " ";
  }
  shape += ")";
  std::string text = "numpy.ndarray of dtype " + std::string(py::str(arr.dtype())) +
                     " with shape " + shape;
  if (!(arr.flags() & py::array::c_style)) text += ", not C-contiguous";
  return text;
}

/// Returns `obj` as a C-contiguous, aligned, native-order array of T whose shape matches
/// `expected` (-1 = any size), or throws ValueError:
///   "embeddings must be a C-contiguous numpy.ndarray of dtype float32 with shape (n, d), got ..."
template <typename T>
py::array_t<T, py::array::c_style> require_array(py::handle obj, const char* name,
                                                 std::initializer_list<int64_t> expected,
                                                 const char* shape_text) {
  constexpr int kAligned = 0x0100;  // NPY_ARRAY_ALIGNED
  bool ok = py::isinstance<py::array_t<T>>(obj);  // an ndarray with T's dtype, native byte order
  if (ok) {
    auto arr = py::reinterpret_borrow<py::array>(obj);
    ok = (arr.flags() & py::array::c_style) && (arr.flags() & kAligned) &&
         arr.ndim() == static_cast<py::ssize_t>(expected.size());
    py::ssize_t axis = 0;
    for (int64_t size : expected) {
      if (!ok) break;
      ok = size < 0 || arr.shape(axis) == size;
      ++axis;
    }
  }
  if (!ok) {
    throw py::value_error(std::string(name) + " must be a C-contiguous numpy.ndarray of dtype " +
                          std::string(py::str(py::dtype::of<T>())) + " with shape " + shape_text +
                          ", got " + describe(obj));
  }
  return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(obj);
}

/// Hands a C++-owned vector to numpy without copying: the capsule that frees it is made right
/// after the move, so the memory is owned by exactly one object at every point.
template <typename T>
py::array_t<T> to_numpy(std::vector<T>&& values, std::vector<py::ssize_t> shape) {
  auto* owned = new std::vector<T>(std::move(values));
  py::capsule owner(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>(std::move(shape), owned->data(), owner);
}

}  // namespace sutra::bindings

namespace pybind11::detail {

template <typename T>
struct type_caster<sutra::bindings::ArrayArg<T>> {
  // Spelled as an output array: the argument is taken as it is, never converted.
  PYBIND11_TYPE_CASTER(sutra::bindings::ArrayArg<T>, const_name("numpy.typing.NDArray[") +
                                                         npy_format_descriptor<T>::name +
                                                         const_name("]"));
  bool load(handle src, bool /*convert*/) {
    value.object = src;
    return true;
  }
};

}  // namespace pybind11::detail

