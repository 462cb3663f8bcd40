// CUDA resources with one owner each: the device guard, streams, events and buffers that device
// code and the engine use. Every CUDA call is checked (sutra::Error with the CUDA error string);
// destructors cannot throw, so they release without checking.
//
// Includes cuda_runtime.h: for cuda/ and the engine sources only. Nothing under cpp/include may
// include it, so that the public headers stay free of CUDA and a CPU-only build compiles them.
#pragma once

#include <cuda_runtime.h>

#include <chrono>
#include <cstddef>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include "common/check.cuh"
#include "sutra/error.h"

namespace sutra::cuda {

/// Makes `device` current for the scope and restores the caller's device after, so that an API
/// call on device 1 leaves the calling thread on the device it had.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int current = previous_;
    if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

/// An owned stream of the current device, created non-blocking: it does not synchronize with the
/// legacy default stream, which other libraries in the process may be using.
class Stream {
 public:
  Stream() {
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  }
  ~Stream() { reset(); }
  Stream(Stream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}
  Stream& operator=(Stream&& other) noexcept {
    if (this != &other) {
      reset();
      stream_ = std::exchange(other.stream_, nullptr);
    }
    return *this;
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  cudaStream_t get() const noexcept { return stream_; }
  void synchronize() const { check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

 private:
  void reset() noexcept {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    stream_ = nullptr;
  }

  cudaStream_t stream_ = nullptr;
};

/// An owned event of the current device. Without timing by default, the cheapest kind for
/// ordering work across streams; pass cudaEventDefault to time with elapsed_ms.
class Event {
 public:
  explicit Event(unsigned flags = cudaEventDisableTiming) {
    check(cudaEventCreateWithFlags(&event_, flags), "cudaEventCreateWithFlags");
  }
  ~Event() { reset(); }
  Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  Event& operator=(Event&& other) noexcept {
    if (this != &other) {
      reset();
      event_ = std::exchange(other.event_, nullptr);
    }
    return *this;
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  cudaEvent_t get() const noexcept { return event_; }
  /// Captures the work enqueued on `stream` so far.
  void record(cudaStream_t stream) { check(cudaEventRecord(event_, stream), "cudaEventRecord"); }
  /// Makes later work on `stream` wait, on the device, for the captured work; the host goes on.
  void enqueue_wait(cudaStream_t stream) const {
    check(cudaStreamWaitEvent(stream, event_, 0), "cudaStreamWaitEvent");
  }
  /// Blocks the host until the captured work is done.
  void synchronize() const { check(cudaEventSynchronize(event_), "cudaEventSynchronize"); }
  /// Blocks the host until the captured work is done, polling for at most `spin` first: work
  /// that ends within it pays no wake-up, and longer work is waited for in synchronize(),
  /// which for an event made with cudaEventBlockingSync sleeps instead of spinning on a core
  /// (the default with fewer CUDA contexts than cores), leaving it to threads that tokenize.
  void wait(std::chrono::microseconds spin) const {
    const auto until = std::chrono::steady_clock::now() + spin;
    while (std::chrono::steady_clock::now() < until) {
      if (query()) return;
    }
    synchronize();
  }
  /// True when the captured work is done (or nothing was recorded); never blocks.
  bool query() const {
    const cudaError_t status = cudaEventQuery(event_);
    if (status == cudaErrorNotReady) return false;
    check(status, "cudaEventQuery");
    return true;
  }
  /// Milliseconds from `start` to this event; both recorded with timing enabled, both done.
  float elapsed_ms(const Event& start) const {
    float ms = 0.0f;
    check(cudaEventElapsedTime(&ms, start.event_, event_), "cudaEventElapsedTime");
    return ms;
  }

 private:
  void reset() noexcept {
    if (event_ != nullptr) cudaEventDestroy(event_);
    event_ = nullptr;
  }

  cudaEvent_t event_ = nullptr;
};

/// An instantiated CUDA graph (cudaGraphExec_t); move-only.
class GraphExec {
 public:
  GraphExec() = default;
  /// Instantiates `graph`; the graph itself stays the caller's.
  explicit GraphExec(cudaGraph_t graph) {
    check(cudaGraphInstantiate(&exec_, graph, 0), "cudaGraphInstantiate");
  }
  ~GraphExec() { reset(); }
  GraphExec(GraphExec&& other) noexcept : exec_(std::exchange(other.exec_, nullptr)) {}
  GraphExec& operator=(GraphExec&& other) noexcept {
    if (this != &other) {
      reset();
      exec_ = std::exchange(other.exec_, nullptr);
    }
    return *this;
  }
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;

  void launch(cudaStream_t stream) const { check(cudaGraphLaunch(exec_, stream), "cudaGraphLaunch"); }

 private:
  void reset() noexcept {
    if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
    exec_ = nullptr;
  }

  cudaGraphExec_t exec_ = nullptr;
};

namespace detail {

struct DeviceMemory {
  static constexpr const char* kAllocate = "cudaMalloc";
  static cudaError_t allocate(void** ptr, size_t bytes) { return cudaMalloc(ptr, bytes); }
  static void release(void* ptr) noexcept { cudaFree(ptr); }
};

struct PinnedMemory {
  static constexpr const char* kAllocate = "cudaMallocHost";
  static cudaError_t allocate(void** ptr, size_t bytes) { return cudaMallocHost(ptr, bytes); }
  static void release(void* ptr) noexcept { cudaFreeHost(ptr); }
};

/// `count` elements of T from `Memory`, uninitialized; move-only. No constructors run, hence the
/// trivially copyable T.
template <typename T, typename Memory>
class OwnedBuffer {
  static_assert(std::is_trivially_copyable_v<T>, "buffers hold raw, uninitialized elements");

 public:
  OwnedBuffer() = default;
  explicit OwnedBuffer(size_t count) {
    SUTRA_CHECK(count <= std::numeric_limits<size_t>::max() / sizeof(T), "count",
                "at most SIZE_MAX / sizeof(T) elements", count);
    if (count == 0) return;
    void* ptr = nullptr;
    const size_t bytes = count * sizeof(T);
    const cudaError_t status = Memory::allocate(&ptr, bytes);
    if (status != cudaSuccess) {
      check(status,
            (std::string(Memory::kAllocate) + " of " + std::to_string(bytes) + " bytes").c_str());
    }
    ptr_ = static_cast<T*>(ptr);
    size_ = count;
  }
  ~OwnedBuffer() { reset(); }
  OwnedBuffer(OwnedBuffer&& other) noexcept
      : ptr_(std::exchange(other.ptr_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  OwnedBuffer& operator=(OwnedBuffer&& other) noexcept {
    if (this != &other) {
      reset();
      ptr_ = std::exchange(other.ptr_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  OwnedBuffer(const OwnedBuffer&) = delete;
  OwnedBuffer& operator=(const OwnedBuffer&) = delete;

  T* data() const noexcept { return ptr_; }
  size_t size() const noexcept { return size_; }  // elements
  size_t bytes() const noexcept { return size_ * sizeof(T); }
  bool empty() const noexcept { return size_ == 0; }

 private:
  void reset() noexcept {
    if (ptr_ != nullptr) Memory::release(ptr_);
    ptr_ = nullptr;
    size_ = 0;
  }

  T* ptr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace detail

/// `count` elements of T in device memory (cudaMalloc on the current device).
template <typename T>
using DeviceBuffer = detail::OwnedBuffer<T, detail::DeviceMemory>;

/// `count` elements of T in page-locked host memory (cudaMallocHost), for asynchronous copies.
template <typename T>
using PinnedBuffer = detail::OwnedBuffer<T, detail::PinnedMemory>;

}  // namespace sutra::cuda
