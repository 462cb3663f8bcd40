// Device arrays from Python as checked views: data pointer, shape, element strides, dtype and
// device index, read zero copy from DLPack (__dlpack__ / __dlpack_device__) or from
// __cuda_array_interface__ (versions 2 and 3). Nothing here touches the GPU, so the argument
// checks run (and are tested) on machines without one.
//
// Every error is a ValueError whose message starts with the argument's name.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sutra::bindings {

namespace py = pybind11;

/// The DLPack ABI, declared from the DLPack specification (dlpack.h, v0.8 and later; the
/// unversioned DLManagedTensor that a "dltensor" capsule holds). Layout only.
namespace dlpack {

enum DLDeviceType : int32_t {
  kDLCPU = 1,
  kDLCUDA = 2,
  kDLCUDAHost = 3,
  kDLCUDAManaged = 13,
};

enum DLDataTypeCode : uint8_t {
  kDLInt = 0,
  kDLUInt = 1,
  kDLFloat = 2,
  kDLBfloat = 4,
};

struct DLDevice {
  int32_t device_type;  // DLDeviceType
  int32_t device_id;
};

struct DLDataType {
  uint8_t code;  // DLDataTypeCode
  uint8_t bits;
  uint16_t lanes;
};

struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;    // [ndim]
  int64_t* strides;  // [ndim] in elements; null for a compact row-major tensor
  uint64_t byte_offset;
};

struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);  // may be null
};

static_assert(sizeof(DLDevice) == 8 && sizeof(DLDataType) == 4, "DLPack ABI");
static_assert(sizeof(void*) != 8 || sizeof(DLTensor) == 48, "DLPack ABI");

}  // namespace dlpack

/// DLPack's stream argument for a consumer that runs on `stream` (a cudaStream_t as an integer):
/// 1 is the legacy default stream (0 is not allowed); 2 (per-thread default) and stream pointers
/// are the values themselves.
inline int64_t dlpack_stream_of(uintptr_t stream) {
  return stream == 0 ? 1 : static_cast<int64_t>(stream);
}

enum class DType { kFloat16, kBFloat16, kFloat32, kInt32, kInt64, kUint8 };

inline const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
    case DType::kFloat32:
      return "float32";
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
    case DType::kUint8:
      return "uint8";
  }
  return "?";
}

inline int64_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
    case DType::kBFloat16:
      return 2;
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kInt64:
      return 8;
    case DType::kUint8:
      return 1;
  }
  return 1;
}

/// Python's repr of a tuple of ints: "(2, 8, 2, 64)", "(3,)", "()".
inline std::string tuple_text(const std::vector<int64_t>& values) {
  std::string text = "(";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(values[i]);
  }
  return text + (values.size() == 1 ? ",)" : ")");
}

/// A view of one device array argument. DLPack is preferred when the object reports a CUDA device
/// through __dlpack_device__ (torch's bfloat16 tensors have no __cuda_array_interface__); the
/// exported tensor is then owned by the view and released (its deleter called) when the view is
/// destroyed. Destroy views with the GIL held: a producer's deleter may need it.
class DeviceTensor {
 public:
  /// Reads `obj`, called `name` in errors. `dlpack_stream` is what a DLPack producer is passed as
  /// `__dlpack__(stream=...)`: the stream the consumer runs on in DLPack's convention (1 for the
  /// legacy default stream, else the cudaStream_t as an integer), so that the producer orders its
  /// pending work on the array before it; or -1 when the consumer runs on the producer's own
  /// current stream and no synchronization is needed (DLPack's "no sync"; it saves the producer
  /// an event per array). For __cuda_array_interface__, ordering is the caller's: its `stream`
  /// field is only recorded.
  DeviceTensor(py::handle obj, std::string name, int64_t dlpack_stream) : name_(std::move(name)) {
    // A throwing constructor runs no destructor: release what was exported so far here.
    try {
      read(obj, dlpack_stream);
    } catch (py::error_already_set& e) {
      release();
      // A producer's own error (a BufferError from __dlpack__, a missing key): reported under
      // the argument's name. KeyboardInterrupt and the like pass through as they are.
      if (!e.matches(PyExc_Exception)) throw;
      throw py::value_error(name_ + " must be a readable device array, but reading it through " +
                            protocol() + " raised " + first_paragraph(e.what()));
    } catch (py::cast_error&) {
      release();
      throw py::value_error(name_ + " must be a readable device array, but a field of its " +
                            protocol() + " has the wrong type (typestr str, shape and strides " +
                            "tuples of ints, data (int, bool), version and stream ints)");
    } catch (...) {
      release();
      throw;
    }
  }
  ~DeviceTensor() { release(); }
  DeviceTensor(DeviceTensor&& other) noexcept
      : name_(std::move(other.name_)),
        type_name_(std::move(other.type_name_)),
        managed_(std::exchange(other.managed_, nullptr)),
        data_(other.data_),
        shape_(std::move(other.shape_)),
        strides_(std::move(other.strides_)),
        dtype_(other.dtype_),
        device_(other.device_),
        readonly_(other.readonly_),
        from_dlpack_(other.from_dlpack_),
        cai_stream_(other.cai_stream_) {}
  DeviceTensor& operator=(DeviceTensor&&) = delete;
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;

  const std::string& name() const { return name_; }
  uintptr_t data() const { return data_; }  // byte_offset included
  int ndim() const { return static_cast<int>(shape_.size()); }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t shape(int axis) const { return shape_[static_cast<size_t>(axis)]; }
  const std::vector<int64_t>& strides() const { return strides_; }  // elements
  int64_t stride(int axis) const { return strides_[static_cast<size_t>(axis)]; }
  DType dtype() const { return dtype_; }
  const char* dtype_text() const { return dtype_name(dtype_); }
  int device() const { return device_; }
  /// __cuda_array_interface__'s read-only flag; unversioned DLPack has none (false).
  bool readonly() const { return readonly_; }
  /// __cuda_array_interface__ v3's stream field: -1 when absent or None.
  int64_t cai_stream() const { return cai_stream_; }
  const char* protocol() const { return from_dlpack_ ? "DLPack" : "__cuda_array_interface__"; }
  std::string shape_text() const { return tuple_text(shape_); }
  std::string strides_text() const { return tuple_text(strides_); }
  std::string device_text() const { return "cuda:" + std::to_string(device_); }

  /// Row-major without gaps. Axes of size 1 are skipped: their stride is never multiplied by a
  /// nonzero index, and torch's DLPack export rewrites it to 1.
  bool is_c_contiguous() const {
    int64_t expected = 1;
    for (int axis = ndim() - 1; axis >= 0; --axis) {
      if (shape(axis) != 1 && stride(axis) != expected) return false;
      expected *= shape(axis);
    }
    return true;
  }

 private:
  void read(py::handle obj, int64_t dlpack_stream) {
    type_name_ = py::str(py::type::handle_of(obj).attr("__name__"));
    if (dlpack_stream == -1 && is_torch_tensor(obj)) {
      read_torch(obj);
      return;
    }
    std::string where;
    if (py::hasattr(obj, "__dlpack__") && py::hasattr(obj, "__dlpack_device__")) {
      from_dlpack_ = true;
      const py::sequence device = sequence(obj.attr("__dlpack_device__")(), "__dlpack_device__()");
      const int device_type = device[0].cast<int>();
      if (device_type == dlpack::kDLCUDA) {
        read_dlpack(obj, dlpack_stream);
        return;
      }
      from_dlpack_ = false;
      where = " on DLPack device type " + std::to_string(device_type) +
              (device_type == dlpack::kDLCPU ? " (CPU)" : "");
    }
    // Looked up only now: torch builds the dict on every access.
    if (!py::hasattr(obj, "__cuda_array_interface__")) {
      throw py::value_error(name_ +
                            " must be a CUDA device array (an object with __dlpack__ or "
                            "__cuda_array_interface__ on a CUDA device), got " +
                            type_name_ + where);
    }
    read_cai(obj);
  }

  // torch.Tensor.__dlpack__ and __dlpack_device__ are Python wrappers that cost several
  // microseconds each per array on a GPU host (device queries, stream objects), four to six
  // arrays a call. When nothing needs ordering (the kernel runs on torch's current stream),
  // torch.utils.dlpack.to_dlpack, the C function behind them, exports the same tensor; the
  // wrapper's checks that matter here are made first.
  static bool is_torch_tensor(py::handle obj) {
    static PyObject* tensor_type = nullptr;  // torch.Tensor, once torch is imported
    if (tensor_type == nullptr) {
      PyObject* torch = PyImport_GetModule(py::str("torch").ptr());  // new ref or null
      if (torch == nullptr) {
        PyErr_Clear();
        return false;
      }
      tensor_type = PyObject_GetAttrString(torch, "Tensor");  // kept for the process
      Py_DECREF(torch);
      if (tensor_type == nullptr) {
        PyErr_Clear();
        return false;
      }
    }
    return PyObject_IsInstance(obj.ptr(), tensor_type) == 1;
  }

  void read_torch(py::handle obj) {
    from_dlpack_ = true;
    if (obj.attr("requires_grad").cast<bool>()) {
      throw py::value_error(name_ +
                            " must be a readable device array without autograd: it "
                            "requires grad, and flash_attention is forward only (pass it "
                            ".detach())");
    }
    if (obj.attr("is_conj")().cast<bool>()) {
      throw py::value_error(name_ + " must not have the conjugate bit set (call .resolve_conj())");
    }
    static PyObject* to_dlpack = nullptr;  // torch.utils.dlpack.to_dlpack, kept for the process
    if (to_dlpack == nullptr) {
      py::object function = py::module_::import("torch.utils.dlpack").attr("to_dlpack");
      to_dlpack = function.release().ptr();
    }
    PyObject* capsule = PyObject_CallOneArg(to_dlpack, obj.ptr());  // new reference
    if (capsule == nullptr) throw py::error_already_set();
    consume(py::reinterpret_steal<py::object>(capsule));
  }

  void read_dlpack(py::handle obj, int64_t dlpack_stream) {
    consume(obj.attr("__dlpack__")(py::arg("stream") = dlpack_stream));
  }

  void consume(py::object capsule) {
    if (!PyCapsule_IsValid(capsule.ptr(), "dltensor")) {
      throw py::value_error(name_ + "'s __dlpack__ must return a \"dltensor\" capsule, got " +
                            std::string(py::str(py::type::handle_of(capsule).attr("__name__"))));
    }
    auto* managed =
        static_cast<dlpack::DLManagedTensor*>(PyCapsule_GetPointer(capsule.ptr(), "dltensor"));
    if (managed == nullptr) throw py::error_already_set();
    // Consumed: from here the view owns the tensor, and the capsule's destructor leaves it alone.
    managed_ = managed;
    if (PyCapsule_SetName(capsule.ptr(), "used_dltensor") != 0) throw py::error_already_set();

    const dlpack::DLTensor& t = managed->dl_tensor;
    if (t.device.device_type != dlpack::kDLCUDA) {
      throw py::value_error(name_ + " must be a CUDA device array, got " + type_name_ +
                            " on DLPack device type " + std::to_string(t.device.device_type) +
                            (t.device.device_type == dlpack::kDLCPU ? " (CPU)" : ""));
    }
    device_ = t.device.device_id;
    dtype_ = dlpack_dtype(t.dtype);
    if (t.ndim < 0 || (t.ndim > 0 && t.shape == nullptr)) {
      throw py::value_error(name_ + " must export a shape through DLPack, got ndim " +
                            std::to_string(t.ndim) + " without one");
    }
    shape_.assign(t.shape, t.shape + t.ndim);
    if (t.strides != nullptr) {
      strides_.assign(t.strides, t.strides + t.ndim);
    } else {
      strides_ = compact_strides(shape_);
    }
    data_ = reinterpret_cast<uintptr_t>(t.data) + static_cast<uintptr_t>(t.byte_offset);
  }

  DType dlpack_dtype(const dlpack::DLDataType& dt) const {
    if (dt.lanes == 1) {
      if (dt.code == dlpack::kDLFloat && dt.bits == 16) return DType::kFloat16;
      if (dt.code == dlpack::kDLBfloat && dt.bits == 16) return DType::kBFloat16;
      if (dt.code == dlpack::kDLFloat && dt.bits == 32) return DType::kFloat32;
      if (dt.code == dlpack::kDLInt && dt.bits == 32) return DType::kInt32;
      if (dt.code == dlpack::kDLInt && dt.bits == 64) return DType::kInt64;
      if (dt.code == dlpack::kDLUInt && dt.bits == 8) return DType::kUint8;
    }
    throw py::value_error(name_ +
                          " must have one of the dtypes float16, bfloat16, float32, int32, "
                          "int64, uint8, got DLPack type code " +
                          std::to_string(dt.code) + " with " + std::to_string(dt.bits) +
                          " bits and " + std::to_string(dt.lanes) + " lanes");
  }

  void read_cai(py::handle obj) {
    const py::object interface = obj.attr("__cuda_array_interface__");
    if (!py::isinstance<py::dict>(interface)) {
      throw py::value_error(name_ + "'s __cuda_array_interface__ must be a dict, got " +
                            std::string(py::str(py::type::handle_of(interface).attr("__name__"))));
    }
    const auto cai = py::reinterpret_borrow<py::dict>(interface);
    const py::object version = cai.contains("version") ? cai["version"] : py::object(py::none());
    if (!py::isinstance<py::int_>(version) ||
        !(version.cast<int>() == 2 || version.cast<int>() == 3)) {
      throw py::value_error(name_ + " must have __cuda_array_interface__ version 2 or 3, got " +
                            std::string(py::repr(version)));
    }
    if (cai.contains("mask") && !cai["mask"].is_none()) {
      throw py::value_error(name_ + " must not be a masked array (__cuda_array_interface__ mask)");
    }
    const std::string typestr = cai["typestr"].cast<std::string>();
    if (typestr == "<f2") {
      dtype_ = DType::kFloat16;
    } else if (typestr == "<f4") {
      dtype_ = DType::kFloat32;
    } else if (typestr == "<i4") {
      dtype_ = DType::kInt32;
    } else if (typestr == "<i8") {
      dtype_ = DType::kInt64;
    } else if (typestr == "|u1" || typestr == "<u1") {
      dtype_ = DType::kUint8;
    } else {
      throw py::value_error(name_ +
                            " must have one of the dtypes float16, float32, int32, int64, "
                            "uint8 (bfloat16 through DLPack), got typestr '" +
                            typestr + "'");
    }
    for (py::handle size : sequence(cai["shape"], "shape")) shape_.push_back(size.cast<int64_t>());
    for (int64_t size : shape_) {
      if (size < 0) {
        throw py::value_error(name_ + " must have sizes >= 0, got shape " + shape_text());
      }
    }
    const py::object strides = cai.contains("strides") ? cai["strides"] : py::object(py::none());
    if (strides.is_none()) {
      strides_ = compact_strides(shape_);
    } else {
      std::vector<int64_t> bytes;
      for (py::handle b : sequence(strides, "strides")) bytes.push_back(b.cast<int64_t>());
      const int64_t item = dtype_size(dtype_);
      bool whole = bytes.size() == shape_.size();
      for (int64_t b : bytes) whole = whole && b % item == 0;
      if (!whole) {
        throw py::value_error(name_ +
                              " must have one stride per axis in whole elements, got "
                              "byte strides " +
                              tuple_text(bytes) + " for shape " + shape_text() + " and itemsize " +
                              std::to_string(item));
      }
      for (int64_t b : bytes) strides_.push_back(b / item);
    }
    const py::sequence data = sequence(cai["data"], "data");
    if (data.size() != 2) {
      throw py::value_error(name_ +
                            "'s __cuda_array_interface__ data must be (pointer, "
                            "read_only), got " +
                            std::string(py::repr(data)));
    }
    data_ = data[0].cast<uintptr_t>();
    readonly_ = data[1].cast<bool>();
    if (cai.contains("stream") && !cai["stream"].is_none()) {
      cai_stream_ = cai["stream"].cast<int64_t>();
    }
    device_ = cai_device(obj);
  }

  // A field that must be a tuple or list (a py::sequence indexes any sequence safely).
  py::sequence sequence(const py::object& value, const char* field) const {
    if (!py::isinstance<py::sequence>(value) || py::isinstance<py::str>(value)) {
      throw py::value_error(name_ + "'s " + protocol() + " " + field + " must be a tuple, got " +
                            std::string(py::repr(value)));
    }
    return py::reinterpret_borrow<py::sequence>(value);
  }

  // pybind11's error text may append the traceback ("\n\nAt:\n..."): the message is enough.
  static std::string first_paragraph(const std::string& text) {
    return text.substr(0, text.find("\n\n"));
  }

  // The interface carries no device: CuPy exposes it as obj.device.id, torch as
  // obj.device.index; without either, device 0. The driver is not asked (cudaPointerGetAttributes)
  // so that the checks run without a GPU.
  static int cai_device(py::handle obj) {
    if (!py::hasattr(obj, "device")) return 0;
    const py::object device = obj.attr("device");
    for (const char* attr : {"id", "index"}) {
      if (py::hasattr(device, attr)) {
        const py::object index = device.attr(attr);
        if (py::isinstance<py::int_>(index)) return index.cast<int>();
      }
    }
    return 0;
  }

  static std::vector<int64_t> compact_strides(const std::vector<int64_t>& shape) {
    std::vector<int64_t> strides(shape.size());
    int64_t acc = 1;
    for (size_t i = shape.size(); i-- > 0;) {
      strides[i] = acc;
      acc *= shape[i];
    }
    return strides;
  }

  void release() noexcept {
    if (managed_ != nullptr && managed_->deleter != nullptr) managed_->deleter(managed_);
    managed_ = nullptr;
  }

  std::string name_;
  std::string type_name_;
  dlpack::DLManagedTensor* managed_ = nullptr;  // owned when read through DLPack
  uintptr_t data_ = 0;
  std::vector<int64_t> shape_;
  std::vector<int64_t> strides_;
  DType dtype_ = DType::kFloat16;
  int device_ = 0;
  bool readonly_ = false;
  bool from_dlpack_ = false;
  int64_t cai_stream_ = -1;
};

}  // namespace sutra::bindings
