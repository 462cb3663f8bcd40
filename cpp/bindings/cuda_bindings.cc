// Bindings of cuda_info.h. Safe to call on any machine: queries answer "0 devices" without a
// driver or GPU, device work raises SutraError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/typing.h>

#include <vector>

#include "bindings.h"
#include "numpy_checks.h"
#include "sutra/cuda_info.h"

namespace sutra::bindings {

void bind_cuda(py::module_& m) {
  m.def(
      "cuda_device_count",
      [] {
        py::gil_scoped_release release;  // the first call loads and initializes the driver
        return cuda_device_count();
      },
      "Number of visible CUDA devices; 0 without CUDA in this build, a driver or a GPU.");

  m.def(
      "cuda_devices",
      []() -> py::typing::List<py::typing::Dict<py::str, py::object>> {
        std::vector<DeviceInfo> devices;
        {
          py::gil_scoped_release release;
          devices = cuda_devices();
        }
        py::typing::List<py::typing::Dict<py::str, py::object>> out;
        for (const DeviceInfo& d : devices) {
          py::typing::Dict<py::str, py::object> info;
          info["index"] = d.index;
          info["name"] = d.name;
          info["major"] = d.major;
          info["minor"] = d.minor;
          info["total_memory"] = d.total_memory;
          info["multiprocessors"] = d.multiprocessors;
          out.append(info);
        }
        return out;
      },
      "One dict per visible device: {'index', 'name', 'major', 'minor' (compute capability),\n"
      "'total_memory' (bytes), 'multiprocessors'}; [] when there is none.");

  m.def(
      "cuda_driver_version",
      [] {
        py::gil_scoped_release release;
        return cuda_driver_version();
      },
      "CUDA version the driver supports (1000 * major + 10 * minor), 0 without driver or CUDA.");

  m.def(
      "cuda_l2_normalize_rows",
      [](ArrayArg<float> x, int device) {
        auto in = require_array<float>(x.object, "x", {-1, -1}, "(n, d)");
        py::array_t<float> out({in.shape(0), in.shape(1)});
        {
          py::gil_scoped_release release;
          cuda_l2_normalize_rows(in.data(), in.shape(0), in.shape(1), out.mutable_data(), device);
        }
        return out;
      },
      py::arg("x"), py::arg("device") = 0,
      "Smoke test of the GPU path: rows of float32 [n, d] x divided by max(||row||, 1e-12),\n"
      "computed on `device`. Raises SutraError without CUDA support or GPU, ValueError for a bad\n"
      "device index.");
}

}  // namespace sutra::bindings
