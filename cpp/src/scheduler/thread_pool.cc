#include "sutra/scheduler/thread_pool.h"

namespace sutra::scheduler {

bool FutureState::done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return done_;
}

void FutureState::wait() const {
  std::unique_lock<std::mutex> lock(mutex_);
  done_cv_.wait(lock, [&] { return done_; });
}

bool FutureState::wait_for(double seconds) const {
  std::unique_lock<std::mutex> lock(mutex_);
  if (seconds < 0) {
    done_cv_.wait(lock, [&] { return done_; });
    return true;
  }
  return done_cv_.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return done_; });
}

void FutureState::add_done_callback(std::function<void()> callback) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!done_) {
      callbacks_.push_back(std::move(callback));
      return;
    }
  }
  try {
    callback();
  } catch (...) {
  }
}

std::exception_ptr FutureState::error() const {
  std::unique_lock<std::mutex> lock(mutex_);
  done_cv_.wait(lock, [&] { return done_; });
  return error_;
}

bool FutureState::complete(std::exception_ptr error, const std::function<void()>& store) {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (done_) return false;
    store();
    error_ = std::move(error);
    done_ = true;
    callbacks.swap(callbacks_);
  }
  done_cv_.notify_all();
  // Outside the lock: a callback may look at this future (done(), get()) or take other locks
  // (the GIL, for a Python callback) without ordering against this mutex.
  for (auto& callback : callbacks) {
    try {
      callback();
    } catch (...) {
    }
  }
  return true;
}

}  // namespace sutra::scheduler
