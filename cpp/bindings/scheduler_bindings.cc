// Bindings of the scheduler (sutra/scheduler/device_pool.h): engines that call back into Python
// or run the GPU engine, the pool, and its futures. Translation only.
//
// The GIL and the pool's threads: the pool never holds one of its own locks while it takes the
// GIL (a Python engine takes it inside encode()/probe(), with no pool lock held; a done callback
// runs after the future's lock is released). So a Python thread may hold the GIL while it waits
// for a pool lock (stats()), but must release it whenever it waits for the workers: in submit()
// (backpressure), in result()/exception() and in shutdown() and the destructor (joins), since a
// worker that runs Python needs the GIL to finish.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/typing.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings.h"
#include "numpy_checks.h"
#include "sutra/engine/encoder.h"
#include "sutra/error.h"
#include "sutra/scheduler/device_pool.h"
#include "sutra/scheduler/encoder_engine.h"

namespace sutra::bindings {
namespace {

using scheduler::DevicePool;
using scheduler::Embeddings;
using scheduler::Future;

/// A Python object that may be let go on any thread: its reference is dropped under the GIL.
struct GilObject {
  explicit GilObject(py::object o) : object(std::move(o)) {}
  GilObject(const GilObject&) = delete;
  GilObject& operator=(const GilObject&) = delete;
  ~GilObject() {
    if (!object) return;
    if (!Py_IsInitialized()) {  // interpreter gone: leaking beats touching it
      object.release();
      return;
    }
    py::gil_scoped_acquire gil;
    object = py::object();
  }
  py::object object;
};

/// "ValueError: message", formatted while the GIL is held (the exception needs it).
std::string describe_python_error(const py::error_already_set& e) {
  return std::string(py::str(e.type().attr("__name__"))) + ": " + std::string(py::str(e.value()));
}

/// A worker that runs Python: encode(ids int32 [T], cu_seqlens int32 [B + 1]) -> float32
/// [B, D], probe() -> None. Called on the worker's thread, which takes the GIL only for the call.
class PythonEngine : public scheduler::Engine {
 public:
  PythonEngine(py::object encode, int64_t dim, py::object probe)
      : encode_(std::make_unique<GilObject>(std::move(encode))),
        probe_(std::make_unique<GilObject>(std::move(probe))),
        dim_(dim) {}

  int64_t output_dim() const override { return dim_; }

  void encode(const int32_t* ids, const int32_t* cu_seqlens, int64_t batch, float* out) override {
    py::gil_scoped_acquire gil;
    try {
      // Copies: the callable may keep its arguments past the call, and the pool's buffers do
      // not live that long.
      const int64_t tokens = cu_seqlens[batch];
      py::array_t<int32_t> ids_array(static_cast<py::ssize_t>(tokens));
      py::array_t<int32_t> cu_array(static_cast<py::ssize_t>(batch + 1));
      std::memcpy(ids_array.mutable_data(), ids, static_cast<size_t>(tokens) * sizeof(int32_t));
      std::memcpy(cu_array.mutable_data(), cu_seqlens,
                  static_cast<size_t>(batch + 1) * sizeof(int32_t));
      py::object result = encode_->object(ids_array, cu_array);
      const std::string shape =
          "(" + std::to_string(batch) + ", " + std::to_string(dim_) + ") (sequences, output_dim)";
      auto rows = require_array<float>(result, "the worker's encode() result", {batch, dim_},
                                       shape.c_str());
      std::memcpy(out, rows.data(), static_cast<size_t>(batch * dim_) * sizeof(float));
    } catch (py::error_already_set& e) {
      throw Error(describe_python_error(e));
    }
  }

  void probe() override {
    py::gil_scoped_acquire gil;
    if (probe_->object.is_none()) return;
    try {
      probe_->object();
    } catch (py::error_already_set& e) {
      throw Error(describe_python_error(e));
    }
  }

 private:
  std::unique_ptr<GilObject> encode_;
  std::unique_ptr<GilObject> probe_;
  int64_t dim_;
};

/// What Python sees of PoolWorker: a device number and an engine not yet in a pool.
struct PyPoolWorker {
  scheduler::PoolWorker worker;
};

/// The pool as Python owns it: joins its threads with the GIL released.
struct PyDevicePool {
  std::unique_ptr<DevicePool> pool;
  ~PyDevicePool() {
    if (!pool) return;
    py::gil_scoped_release release;
    pool.reset();
  }
};

struct PyPoolFuture {
  Future<Embeddings> future;
  py::object result;  // the array, once made, so that result() returns the same object each time
};

[[noreturn]] void raise_timeout(double seconds) {
  PyErr_SetString(PyExc_TimeoutError, ("the request did not finish within " +
                                       detail::to_text(seconds) + " s")
                                          .c_str());
  throw py::error_already_set();
}

/// Waits with the GIL released; TimeoutError when `timeout` seconds pass first.
void wait_for(const PyPoolFuture& f, const std::optional<double>& timeout) {
  bool ready;
  {
    py::gil_scoped_release release;
    ready = f.future.wait_for(timeout ? std::max(*timeout, 0.0) : -1.0);
  }
  if (!ready) raise_timeout(*timeout);
}

py::array_t<float> future_result(PyPoolFuture& f, const std::optional<double>& timeout) {
  if (f.result) return py::reinterpret_borrow<py::array_t<float>>(f.result);
  wait_for(f, timeout);
  Embeddings e = f.future.get();  // rethrows the failure, translated by pybind11
  // The rows stay in the vector the workers wrote; the capsule keeps them alive.
  auto* owner = new std::shared_ptr<std::vector<float>>(e.values);
  py::capsule capsule(owner, [](void* p) {
    delete static_cast<std::shared_ptr<std::vector<float>>*>(p);
  });
  py::array_t<float> rows({static_cast<py::ssize_t>(e.rows), static_cast<py::ssize_t>(e.dim)},
                          (*owner)->data(), capsule);
  f.result = rows;
  return rows;
}

using StatsDict = py::typing::Dict<py::str, py::object>;
// encode(ids, cu_seqlens) -> rows, as PoolWorker.python takes it.
using EncodeFn =
    py::typing::Callable<py::array_t<float>(py::array_t<int32_t>, py::array_t<int32_t>)>;
using ProbeFn = py::typing::Optional<py::typing::Callable<void()>>;

StatsDict stats_dict(const scheduler::PoolStats& s) {
  StatsDict d;
  d["requests"] = s.requests;
  d["embeddings"] = s.embeddings;
  d["tokens"] = s.tokens;
  d["retries"] = s.retries;
  d["failures"] = s.failures;
  d["latency_mean_s"] = s.latency_mean_s;
  d["latency_p50_s"] = s.latency_p50_s;
  d["latency_p99_s"] = s.latency_p99_s;
  d["throughput_per_s"] = s.throughput_per_s;
  d["wall_s"] = s.wall_s;
  py::list devices;
  for (const scheduler::WorkerStats& w : s.devices) {
    py::dict x;
    x["device"] = w.device;
    x["healthy"] = w.healthy;
    x["busy_fraction"] = w.busy_fraction;
    x["queued_jobs"] = w.queued_jobs;
    x["queued_tokens"] = w.queued_tokens;
    x["batches"] = w.batches;
    x["tokens"] = w.tokens;
    x["failures"] = w.failures;
    x["seconds_per_token"] = w.seconds_per_token;
    devices.append(x);
  }
  d["devices"] = devices;
  return d;
}

}  // namespace

void bind_scheduler(py::module_& m) {
  // Cancelled (a subclass of sutra::Error) becomes concurrent.futures.CancelledError, which is
  // what futures-shaped Python code expects; registered after SutraError, so it is tried first.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const scheduler::Cancelled& e) {
      py::object cancelled = py::module_::import("concurrent.futures").attr("CancelledError");
      PyErr_SetString(cancelled.ptr(), e.what());
    }
  });

  py::class_<PyPoolWorker>(m, "PoolWorker", R"doc(A DevicePool worker: an engine and its device.

Made by PoolWorker.python (an engine written in Python) or PoolWorker.engine (a GpuEncoder).
Each worker gets its own thread in the pool; a device may have several workers.)doc")
      .def_static(
          "python",
          [](int device, EncodeFn encode, int64_t output_dim, ProbeFn probe) {
            SUTRA_CHECK(output_dim > 0, "output_dim", "> 0", output_dim);
            if (!probe.is_none() && !PyCallable_Check(probe.ptr())) {
              throw py::value_error("probe must be a callable or None, got " + describe(probe));
            }
            return PyPoolWorker{{device, std::make_shared<PythonEngine>(std::move(encode),
                                                                        output_dim,
                                                                        std::move(probe))}};
          },
          py::arg("device"), py::arg("encode"), py::arg("output_dim"),
          py::arg("probe") = py::none(),
          R"doc(A worker whose engine is Python code, called on the worker's thread with the GIL.

encode(ids int32 [T], cu_seqlens int32 [B + 1]) must return a C-contiguous float32 [B, D]
array (D = output_dim), one row per sequence (fresh copies of the pool's buffers are passed).
probe() -> None is the health check of an unhealthy worker (None: it passes). An exception in
either is a failure of this worker; its type and message reach the request's error.)doc")
      .def_static(
          "engine",
          [](std::shared_ptr<engine::GpuEncoder> encoder) {
            SUTRA_CHECK(encoder != nullptr, "encoder", "a GpuEncoder", "None");
            auto adapter = std::make_shared<scheduler::EncoderEngine>(encoder);
            const int device = adapter->device();
            return PyPoolWorker{{device, std::move(adapter)}};
          },
          py::arg("encoder"),
          "A worker running a GpuEncoder (on its device; encode() into the rows, probe() one\n"
          "one-token sequence). The encoder stays usable from Python; its calls are serialized.")
      .def_property_readonly("device", [](const PyPoolWorker& w) { return w.worker.device; })
      .def_property_readonly("output_dim",
                             [](const PyPoolWorker& w) { return w.worker.engine->output_dim(); });

  py::class_<PyPoolFuture>(m, "PoolFuture", R"doc(DevicePool.submit's result: float32 [B, D] rows.

Shaped like concurrent.futures.Future. A failed request raises SutraError (retries exhausted, no
healthy device) or concurrent.futures.CancelledError (shut down with cancel_pending).)doc")
      .def("done", [](const PyPoolFuture& f) { return f.future.done(); })
      .def("result", &future_result, py::arg("timeout") = py::none(),
           "The rows, float32 [B, D]; waits with the GIL released (timeout: seconds, None: no\n"
           "limit; TimeoutError when it passes). Raises the request's failure. The same array\n"
           "object each call.")
      .def(
          "exception",
          [](PyPoolFuture& f, std::optional<double> timeout) -> py::object {
            wait_for(f, timeout);
            std::exception_ptr error = f.future.exception();
            if (!error) return py::none();
            // Through a pybind11 function, so that the error is translated as result() would.
            py::cpp_function rethrow([error]() { std::rethrow_exception(error); });
            try {
              rethrow();
            } catch (py::error_already_set& e) {
              return e.value();
            }
            return py::none();
          },
          py::arg("timeout") = py::none(),
          "The exception the request failed with, or None; waits like result().")
      .def(
          "add_done_callback",
          [](py::object self, py::typing::Callable<void(py::object)> fn) {
            auto& f = self.cast<PyPoolFuture&>();
            // Holds the future's Python object and fn until the call; the pool thread that
            // completes the future takes the GIL for it. The tuple keeps self alive, so fn
            // receives this very object (the cycle ends once the callback has run).
            auto held = std::make_shared<GilObject>(py::make_tuple(self, std::move(fn)));
            f.future.add_done_callback([held] {
              py::gil_scoped_acquire gil;
              py::object call = std::move(held->object);
              try {
                call[py::int_(1)](call[py::int_(0)]);
              } catch (py::error_already_set& e) {
                // Printed, as concurrent.futures logs them: the pool thread has no caller.
                py::module_::import("traceback").attr("print_exception")(e.value());
              }
            });
          },
          py::arg("fn"),
          "Calls fn(future) once when the request is done: on the pool thread that finished it\n"
          "(with the GIL taken), or at once when it is done already. An exception in fn is\n"
          "printed, not raised. fn holds up that worker while it runs: hand the result on\n"
          "(loop.call_soon_threadsafe) rather than wait on the pool in it.");

  py::class_<PyDevicePool>(m, "DevicePool", R"doc(A scheduler over several workers (devices).

Each worker runs on its own thread; a request is split into jobs of whole sequences, each routed
to a worker by the strategy ('round_robin', 'least_loaded' by queued tokens,
'performance_based' on measured seconds per token, 'random' from seed). A failing worker (an
exception, or a job past job_timeout seconds, 0: none) is marked unhealthy, its jobs go to
others (up to max_retries further attempts each), and it is probed every
health_check_interval seconds until it passes. At most queue_capacity jobs wait in the queues;
submit() blocks beyond that.)doc")
      .def(py::init([](const std::vector<PyPoolWorker>& workers, const std::string& strategy,
                       int max_retries, int64_t queue_capacity, double health_check_interval,
                       double job_timeout, uint64_t seed) {
             scheduler::DevicePoolOptions options;
             options.strategy = scheduler::strategy_from_name(strategy);
             options.max_retries = max_retries;
             options.queue_capacity = queue_capacity;
             options.health_check_interval = health_check_interval;
             options.job_timeout = job_timeout;
             options.seed = seed;
             std::vector<scheduler::PoolWorker> core;
             for (const PyPoolWorker& w : workers) core.push_back(w.worker);
             auto pool = std::make_unique<PyDevicePool>();
             pool->pool = std::make_unique<DevicePool>(std::move(core), options);
             return pool;
           }),
           py::arg("workers"), py::kw_only(), py::arg("strategy") = "least_loaded",
           py::arg("max_retries") = 3, py::arg("queue_capacity") = 256,
           py::arg("health_check_interval") = 30.0, py::arg("job_timeout") = 0.0,
           py::arg("seed") = 0)
      .def(
          "submit",
          [](PyDevicePool& self, ArrayArg<int32_t> ids_arg, ArrayArg<int32_t> cu_arg,
             int64_t max_job_tokens, int64_t max_job_sequences) {
            auto ids = require_array<int32_t>(ids_arg.object, "ids", {-1}, "(tokens,)");
            auto cu = require_array<int32_t>(cu_arg.object, "cu_seqlens", {-1}, "(sequences + 1,)");
            if (cu.shape(0) < 1) {
              throw py::value_error(
                  "cu_seqlens must hold at least one value (0), got an empty array");
            }
            if (!self.pool) throw Error("submit on a DevicePool that is shut down");
            PyPoolFuture f;
            {
              py::gil_scoped_release release;  // backpressure may block until a worker is done
              f.future = self.pool->submit(ids.data(), ids.shape(0), cu.data(), cu.shape(0) - 1,
                                           max_job_tokens, max_job_sequences);
            }
            return f;
          },
          py::arg("ids"), py::arg("cu_seqlens"), py::kw_only(), py::arg("max_job_tokens") = 0,
          py::arg("max_job_sequences") = 0,
          R"doc(Queues the sequences of ids (int32 [T]) / cu_seqlens (int32 [B + 1], from 0 to T,
nondecreasing) and returns a PoolFuture of their float32 [B, D] rows in input order. Jobs hold
whole sequences, at most max_job_tokens tokens (a longer sequence alone) and max_job_sequences
sequences each (0: no such bound; both 0: one job).
The arrays are copied. Blocks (GIL released) while the queues are full. ValueError for bad
arrays; SutraError when no worker is healthy or the pool is shut down.)doc")
      .def("stats", [](const PyDevicePool& self) { return stats_dict(self.pool->stats()); },
           R"doc(Measured figures: requests, embeddings, tokens (of completed requests), retries,
failures (failed requests), latency_mean_s / latency_p50_s / latency_p99_s (submit to result,
latest 4096 requests), throughput_per_s (embeddings per wall second), wall_s, and devices: per
worker {device, healthy, busy_fraction (seconds in encode / wall seconds), queued_jobs,
queued_tokens, batches, tokens, failures, seconds_per_token (mean)}.)doc")
      .def(
          "shutdown",
          [](PyDevicePool& self, bool cancel_pending) {
            py::gil_scoped_release release;
            self.pool->shutdown(cancel_pending);
          },
          py::arg("cancel_pending") = false,
          "Stops taking requests; runs the queued jobs (or, with cancel_pending, fails their\n"
          "requests with CancelledError) and joins the threads, waiting for calls in progress.")
      .def("__enter__", [](py::object self) { return self.cast<PyDevicePool*>(); },
           py::return_value_policy::reference)
      .def("__exit__",
           [](PyDevicePool& self, py::args) {
             py::gil_scoped_release release;
             self.pool->shutdown(false);
           })
      .def_property_readonly("strategy",
                             [](const PyDevicePool& self) {
                               return scheduler::strategy_name(self.pool->strategy());
                             })
      .def_property_readonly("num_workers",
                             [](const PyDevicePool& self) { return self.pool->num_workers(); })
      .def_property_readonly("output_dim",
                             [](const PyDevicePool& self) { return self.pool->output_dim(); });
}

}  // namespace sutra::bindings
