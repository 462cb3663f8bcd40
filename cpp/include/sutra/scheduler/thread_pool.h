// The futures of the scheduler's thread pool (CTranslate2's shape): a promise that a worker
// thread fulfils once with a value or an exception, and a future that waits for it, with a
// timeout, or runs callbacks when it is done. std::future has neither timeouts that compose with
// callbacks nor done callbacks, and the Python facade needs both (an event loop is handed each
// result by a callback rather than by a thread blocked on the future).
//
// Plain C++: no Python, no CUDA.
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace sutra::scheduler {

using Clock = std::chrono::steady_clock;

/// Seconds between two points of the monotonic clock.
inline double seconds_between(Clock::time_point begin, Clock::time_point end) {
  return std::chrono::duration<double>(end - begin).count();
}

/// The part of a future's shared state that does not depend on the value type.
class FutureState {
 public:
  FutureState() = default;
  FutureState(const FutureState&) = delete;
  FutureState& operator=(const FutureState&) = delete;

  bool done() const;
  void wait() const;
  /// False when `seconds` passed first; a negative value waits without limit.
  bool wait_for(double seconds) const;
  /// Runs `callback` on the thread that completes the state, after the value or exception is
  /// stored and waiters are woken, or at once on this thread when it is done already. Each
  /// callback runs exactly once; an exception it throws is swallowed (there is no one to take it).
  void add_done_callback(std::function<void()> callback);
  /// The stored exception (null for a value); waits until done.
  std::exception_ptr error() const;

 protected:
  /// Stores the outcome (`store` runs under the lock) and runs the callbacks outside it; false
  /// (and nothing stored) when the state was completed before.
  bool complete(std::exception_ptr error, const std::function<void()>& store);

 private:
  mutable std::mutex mutex_;
  mutable std::condition_variable done_cv_;
  bool done_ = false;
  std::exception_ptr error_;
  std::vector<std::function<void()>> callbacks_;
};

template <typename T>
class SharedState : public FutureState {
 public:
  bool set_value(T value) {
    return complete(nullptr, [&] { value_.emplace(std::move(value)); });
  }
  bool set_exception(std::exception_ptr error) {
    return complete(std::move(error), [] {});
  }
  /// Waits, then returns the value or rethrows the exception.
  const T& get() const {
    if (std::exception_ptr e = error()) std::rethrow_exception(e);
    return *value_;  // written before done_ was set, under the same lock that error() took
  }

 private:
  std::optional<T> value_;
};

/// A handle on a result that a pool thread produces; copies share the one state.
template <typename T>
class Future {
 public:
  Future() = default;
  explicit Future(std::shared_ptr<SharedState<T>> state) : state_(std::move(state)) {}

  bool valid() const { return state_ != nullptr; }
  bool done() const { return state_->done(); }
  void wait() const { state_->wait(); }
  bool wait_for(double seconds) const { return state_->wait_for(seconds); }
  /// Waits; returns a copy of the value or rethrows the exception.
  T get() const { return state_->get(); }
  /// Waits; the exception, or null when there is a value.
  std::exception_ptr exception() const { return state_->error(); }
  void add_done_callback(std::function<void()> callback) const {
    state_->add_done_callback(std::move(callback));
  }

 private:
  std::shared_ptr<SharedState<T>> state_;
};

/// The producing side. Only the first set_value / set_exception counts (later ones return false),
/// so that a job racing a cancellation or a timeout cannot complete a request twice.
template <typename T>
class Promise {
 public:
  Promise() : state_(std::make_shared<SharedState<T>>()) {}
  Future<T> get_future() const { return Future<T>(state_); }
  bool set_value(T value) const { return state_->set_value(std::move(value)); }
  bool set_exception(std::exception_ptr error) const {
    return state_->set_exception(std::move(error));
  }
  bool done() const { return state_->done(); }

 private:
  std::shared_ptr<SharedState<T>> state_;
};

}  // namespace sutra::scheduler
