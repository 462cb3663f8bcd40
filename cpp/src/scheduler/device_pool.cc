// DevicePool (sutra/scheduler/device_pool.h). One mutex guards the whole pool's bookkeeping:
// queues, health, counters. It is held only for bookkeeping, never across an engine call, a
// probe or the completion of a future (whose callbacks may take the GIL), so no lock order with
// anything outside the pool exists.
#include "sutra/scheduler/device_pool.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace sutra::scheduler {

const char* strategy_name(Strategy strategy) {
  switch (strategy) {
    case Strategy::kRoundRobin:
      return "round_robin";
    case Strategy::kLeastLoaded:
      return "least_loaded";
    case Strategy::kPerformanceBased:
      return "performance_based";
    case Strategy::kRandom:
      return "random";
  }
  return "unknown";
}

Strategy strategy_from_name(const std::string& name) {
  for (Strategy s : {Strategy::kRoundRobin, Strategy::kLeastLoaded, Strategy::kPerformanceBased,
                     Strategy::kRandom}) {
    if (name == strategy_name(s)) return s;
  }
  SUTRA_CHECK(false, "strategy",
              "'round_robin', 'least_loaded', 'performance_based' or 'random'", "'" + name + "'");
  return Strategy::kLeastLoaded;
}

namespace {

// Latencies kept for the percentiles: the latest requests, so that a long-running pool reports
// its present and not its warm-up.
constexpr size_t kLatencyWindow = 4096;

struct Request {
  std::vector<int32_t> ids;
  std::vector<int32_t> cu_seqlens;
  int64_t batch = 0;
  int64_t dim = 0;
  std::shared_ptr<std::vector<float>> rows;
  int64_t jobs_left = 0;
  bool finished = false;  // completed, failed or cancelled: its remaining jobs are dropped
  Promise<Embeddings> promise;
  Clock::time_point submitted;
};

struct Job {
  std::shared_ptr<Request> request;
  int64_t first_sequence = 0;
  int64_t sequences = 0;
  int64_t first_token = 0;
  int64_t tokens = 0;
  std::vector<int32_t> cu_seqlens;  // of its sequences, from 0
  // Bumped each time the job is handed to a worker; a worker keeps its result only if the
  // number is still the one it started with (a timeout has not handed the job on meanwhile).
  uint64_t attempt = 0;
  bool done = false;
  int failed_attempts = 0;
  std::vector<int> failed_workers;  // indices, in order, for the final message
  std::string last_error;
};

using JobPtr = std::shared_ptr<Job>;

struct Worker {
  int index = 0;
  int device = 0;
  std::shared_ptr<Engine> engine;
  std::deque<JobPtr> queue;
  int64_t queued_tokens = 0;
  JobPtr running;  // null when idle or when its running job was handed on after a timeout
  Clock::time_point running_since;  // start of the encode() call in progress (in_call)
  bool in_call = false;  // inside encode(), timed out or not
  bool healthy = true;
  bool probe_due = false;
  Clock::time_point next_probe;
  std::condition_variable wake;
  std::thread thread;
  // Measured.
  double busy_seconds = 0;
  int64_t batches = 0;
  int64_t tokens = 0;
  int64_t failures = 0;
  double seconds = 0;                 // inside encode() for the kept batches
  double seconds_per_token_ema = -1;  // negative: no batch measured yet
};

// A future to complete once the pool's lock is released.
struct Completion {
  std::shared_ptr<Request> request;
  std::exception_ptr error;  // null: the rows are complete
};

std::string device_list(const std::vector<int>& devices) {
  std::string text;
  for (size_t i = 0; i < devices.size(); ++i) {
    if (i > 0) text += i + 1 == devices.size() ? " and " : ", ";
    text += std::to_string(devices[i]);
  }
  return text;
}

}  // namespace

struct DevicePool::Impl {
  DevicePoolOptions options;
  int64_t dim = 0;
  std::vector<std::unique_ptr<Worker>> workers;
  Clock::time_point started = Clock::now();

  mutable std::mutex mutex;
  std::condition_variable room;          // submitters waiting for queue room
  std::condition_variable health_wake;   // the health thread
  std::thread health_thread;
  bool stopping = false;
  bool health_stop = false;
  bool joined = false;
  std::mutex join_mutex;  // one shutdown() joins; a concurrent one waits for it
  int64_t queued_jobs = 0;   // in worker queues
  int64_t running_jobs = 0;  // in calls whose result will be kept
  size_t next_round_robin = 0;
  std::mt19937_64 random;

  // Statistics.
  int64_t requests = 0, embeddings = 0, tokens = 0, retries = 0, failed_requests = 0;
  std::vector<double> latencies;  // ring of kLatencyWindow
  size_t latency_next = 0;

  bool any_healthy() const {
    for (const auto& w : workers) {
      if (w->healthy) return true;
    }
    return false;
  }

  std::string health_summary() const {
    std::string text;
    for (const auto& w : workers) {
      if (!text.empty()) text += ", ";
      text += "device " + std::to_string(w->device) + (w->healthy ? " healthy" : " unhealthy");
    }
    return text;
  }

  // The worker for `job` among the healthy ones, preferring those that have not failed it;
  // null when none is healthy.
  Worker* route(const Job& job) {
    std::vector<Worker*> candidates;
    for (const auto& w : workers) {
      const bool failed_it = std::find(job.failed_workers.begin(), job.failed_workers.end(),
                                       w->index) != job.failed_workers.end();
      if (w->healthy && !failed_it) candidates.push_back(w.get());
    }
    if (candidates.empty()) {  // every healthy worker failed it once: try them again
      for (const auto& w : workers) {
        if (w->healthy) candidates.push_back(w.get());
      }
    }
    if (candidates.empty()) return nullptr;
    auto load = [](const Worker* w) {
      return w->queued_tokens + (w->running ? w->running->tokens : 0);
    };
    switch (options.strategy) {
      case Strategy::kRoundRobin: {
        // The first candidate at or after the cursor, cyclically.
        const size_t n = workers.size();
        Worker* best = nullptr;
        size_t best_distance = n;
        for (Worker* w : candidates) {
          const size_t distance = (static_cast<size_t>(w->index) + n - next_round_robin % n) % n;
          if (distance < best_distance) best = w, best_distance = distance;
        }
        next_round_robin = static_cast<size_t>(best->index) + 1;
        return best;
      }
      case Strategy::kLeastLoaded: {
        Worker* best = candidates.front();
        for (Worker* w : candidates) {
          if (load(w) < load(best)) best = w;
        }
        return best;
      }
      case Strategy::kPerformanceBased: {
        // A worker never measured goes first (least loaded among them), so that every worker
        // gets a measurement; then least expected finish time.
        Worker* best = nullptr;
        for (Worker* w : candidates) {
          if (w->seconds_per_token_ema < 0 && (!best || load(w) < load(best))) best = w;
        }
        if (best) return best;
        double best_finish = std::numeric_limits<double>::infinity();
        for (Worker* w : candidates) {
          const double finish =
              static_cast<double>(load(w) + job.tokens) * w->seconds_per_token_ema;
          if (finish < best_finish) best = w, best_finish = finish;
        }
        return best;
      }
      case Strategy::kRandom: {
        std::uniform_int_distribution<size_t> pick(0, candidates.size() - 1);
        return candidates[pick(random)];
      }
    }
    return candidates.front();
  }

  void enqueue(Worker& w, JobPtr job) {
    w.queued_tokens += job->tokens;
    w.queue.push_back(std::move(job));
    ++queued_jobs;
    w.wake.notify_one();
  }

  void fail_request(const std::shared_ptr<Request>& request, std::exception_ptr error,
                    bool count_failure, std::vector<Completion>& out) {
    if (request->finished) return;
    request->finished = true;
    if (count_failure) ++failed_requests;
    out.push_back({request, std::move(error)});
  }

  // Routes `job` or, with no healthy worker, fails its request.
  void dispatch(JobPtr job, std::vector<Completion>& out) {
    if (job->request->finished) return;
    Worker* w = route(*job);
    if (w == nullptr) {
      std::string message = "no healthy device to run sequences [" +
                            std::to_string(job->first_sequence) + ", " +
                            std::to_string(job->first_sequence + job->sequences) + ") (" +
                            health_summary() + ")";
      if (!job->last_error.empty()) message += "; last error: " + job->last_error;
      fail_request(job->request, std::make_exception_ptr(Error(message)), true, out);
      return;
    }
    enqueue(*w, std::move(job));
  }

  // `w` failed `job` (which it no longer holds): retry elsewhere or fail the request.
  void retry(JobPtr job, const Worker& w, const std::string& error, std::vector<Completion>& out) {
    job->failed_attempts += 1;
    job->failed_workers.push_back(w.index);
    job->last_error = "device " + std::to_string(w.device) + ": " + error;
    if (job->request->finished) return;
    if (job->failed_attempts > options.max_retries) {
      std::vector<int> devices;
      for (int index : job->failed_workers) devices.push_back(workers[index]->device);
      const std::string message =
          "sequences [" + std::to_string(job->first_sequence) + ", " +
          std::to_string(job->first_sequence + job->sequences) + ") failed " +
          std::to_string(job->failed_attempts) + " times (max_retries=" +
          std::to_string(options.max_retries) + ") on devices " + device_list(devices) +
          "; last error: " + job->last_error;
      fail_request(job->request, std::make_exception_ptr(Error(message)), true, out);
      return;
    }
    if (any_healthy()) ++retries;
    dispatch(std::move(job), out);
  }

  // Marks `w` unhealthy and moves its queued jobs to the healthy workers (not as retries: they
  // were never tried).
  void mark_unhealthy(Worker& w, std::vector<Completion>& out) {
    w.failures += 1;
    if (w.healthy) {
      w.healthy = false;
      w.next_probe = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(
                                            options.health_check_interval));
      health_wake.notify_all();
    }
    std::deque<JobPtr> moved;
    moved.swap(w.queue);
    queued_jobs -= static_cast<int64_t>(moved.size());
    w.queued_tokens = 0;
    for (JobPtr& job : moved) dispatch(std::move(job), out);
    room.notify_all();
  }

  void record_latency(double seconds) {
    if (latencies.size() < kLatencyWindow) {
      latencies.push_back(seconds);
    } else {
      latencies[latency_next] = seconds;
    }
    latency_next = (latency_next + 1) % kLatencyWindow;
  }

  // A job's rows are in: the request is complete when it was its last job.
  void job_done(Job& job, std::vector<Completion>& out) {
    job.done = true;
    Request& r = *job.request;
    if (r.finished) return;
    if (--r.jobs_left == 0) {
      r.finished = true;
      ++requests;
      embeddings += r.batch;
      tokens += static_cast<int64_t>(r.ids.size());
      record_latency(seconds_between(r.submitted, Clock::now()));
      out.push_back({job.request, nullptr});
    }
  }

  void complete(std::vector<Completion>& completions) {
    for (Completion& c : completions) {
      if (c.error) {
        c.request->promise.set_exception(c.error);
      } else {
        c.request->promise.set_value({c.request->rows, c.request->batch, c.request->dim});
      }
    }
    completions.clear();
  }

  // Shutting down and nothing left that could still need a worker: a retry only comes from a
  // job in a queue or a call in progress, so no thread may leave before both are gone.
  bool drained() const { return stopping && queued_jobs == 0 && running_jobs == 0; }

  void notify_if_drained() {
    if (!drained()) return;
    for (auto& w : workers) w->wake.notify_all();
  }

  void worker_loop(Worker& w) {
    std::vector<Completion> completions;
    std::vector<float> rows;
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      notify_if_drained();
      w.wake.wait(lock, [&] {
        return drained() || (w.healthy && !w.queue.empty()) ||
               (!w.healthy && w.probe_due && !stopping);
      });
      if (!w.healthy && w.probe_due && !stopping) {
        w.probe_due = false;  // probe time is not busy time: in_call stays false
        lock.unlock();
        bool ok = true;
        try {
          w.engine->probe();
        } catch (...) {
          ok = false;
        }
        lock.lock();
        if (ok && !w.healthy) {
          w.healthy = true;
          room.notify_all();
        }
        continue;
      }
      if (w.healthy && !w.queue.empty()) {
        JobPtr job = std::move(w.queue.front());
        w.queue.pop_front();
        w.queued_tokens -= job->tokens;
        --queued_jobs;
        room.notify_one();
        if (job->request->finished) continue;  // its request failed or was cancelled
        const uint64_t attempt = ++job->attempt;
        w.running = job;
        w.running_since = Clock::now();
        w.in_call = true;
        ++running_jobs;
        if (options.job_timeout > 0) health_wake.notify_all();
        const Request& r = *job->request;
        const int32_t* ids = r.ids.data() + job->first_token;
        lock.unlock();

        rows.resize(static_cast<size_t>(job->sequences * dim));
        std::string error;
        try {
          w.engine->encode(ids, job->cu_seqlens.data(), job->sequences, rows.data());
        } catch (const std::exception& e) {
          error = e.what();
          if (error.empty()) error = "engine failed (no message)";
        } catch (...) {
          error = "engine failed with an exception that is not a std::exception";
        }
        const Clock::time_point end = Clock::now();

        lock.lock();
        const double elapsed = seconds_between(w.running_since, end);
        w.busy_seconds += elapsed;
        w.in_call = false;
        if (job->attempt != attempt || job->done) continue;  // timed out: handed on already
        w.running = nullptr;
        --running_jobs;
        if (!error.empty()) {
          mark_unhealthy(w, completions);
          retry(job, w, error, completions);
        } else {
          w.batches += 1;
          w.tokens += job->tokens;
          w.seconds += elapsed;
          const double per_token = elapsed / static_cast<double>(std::max<int64_t>(job->tokens, 1));
          w.seconds_per_token_ema =
              w.seconds_per_token_ema < 0
                  ? per_token
                  : options.performance_smoothing * per_token +
                        (1 - options.performance_smoothing) * w.seconds_per_token_ema;
          if (!job->request->finished) {
            std::memcpy(job->request->rows->data() + job->first_sequence * dim, rows.data(),
                        rows.size() * sizeof(float));
          }
          job_done(*job, completions);
        }
        if (!completions.empty()) {
          lock.unlock();
          complete(completions);
          lock.lock();
        }
        continue;
      }
      if (drained()) break;
    }
    lock.unlock();
    // The engine goes with its thread (CTranslate2's finalize): a GPU engine frees its device
    // memory on the thread that used it. The pool keeps no other reference.
    w.engine.reset();
  }

  void health_loop() {
    std::vector<Completion> completions;
    std::unique_lock<std::mutex> lock(mutex);
    while (!health_stop) {
      const Clock::time_point now = Clock::now();
      Clock::time_point wake_at = Clock::time_point::max();
      for (auto& w : workers) {
        if (options.job_timeout > 0 && w->running) {
          const Clock::time_point deadline =
              w->running_since + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(options.job_timeout));
          if (now >= deadline) {
            // The call is left to return on its own; its result is then discarded.
            JobPtr job = std::move(w->running);
            w->running = nullptr;
            --running_jobs;
            ++job->attempt;
            mark_unhealthy(*w, completions);
            retry(std::move(job), *w,
                  "timed out after " + detail::to_text(options.job_timeout) + " s",
                  completions);
            notify_if_drained();
          } else {
            wake_at = std::min(wake_at, deadline);
          }
        }
        if (!w->healthy && !stopping) {
          if (now >= w->next_probe) {
            w->probe_due = true;
            w->next_probe = now + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(
                                          options.health_check_interval));
            w->wake.notify_all();
          }
          wake_at = std::min(wake_at, w->next_probe);
        }
      }
      if (!completions.empty()) {
        lock.unlock();
        complete(completions);
        lock.lock();
        continue;
      }
      if (wake_at == Clock::time_point::max()) {
        health_wake.wait(lock);
      } else {
        health_wake.wait_until(lock, wake_at);
      }
    }
  }

  bool on_own_thread() const {
    const std::thread::id self = std::this_thread::get_id();
    if (health_thread.get_id() == self) return true;
    for (const auto& w : workers) {
      if (w->thread.get_id() == self) return true;
    }
    return false;
  }

  // DevicePool::shutdown, for any thread but the pool's own.
  void stop(bool cancel_pending) {
    std::vector<Completion> completions;
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (joined) return;
      stopping = true;
      if (cancel_pending) {
        for (auto& w : workers) {
          for (JobPtr& job : w->queue) {
            fail_request(job->request,
                         std::make_exception_ptr(Cancelled(
                             "the DevicePool shut down before this request ran (cancel_pending)")),
                         false, completions);
          }
          queued_jobs -= static_cast<int64_t>(w->queue.size());
          w->queue.clear();
          w->queued_tokens = 0;
        }
      }
      for (auto& w : workers) w->wake.notify_all();
      room.notify_all();
      health_wake.notify_all();
    }
    complete(completions);
    std::lock_guard<std::mutex> join_lock(join_mutex);
    for (auto& w : workers) {
      if (w->thread.joinable()) w->thread.join();
    }
    {
      std::lock_guard<std::mutex> lock(mutex);
      health_stop = true;
      health_wake.notify_all();
    }
    if (health_thread.joinable()) health_thread.join();
    std::lock_guard<std::mutex> lock(mutex);
    joined = true;
  }
};

DevicePool::DevicePool(std::vector<PoolWorker> workers, const DevicePoolOptions& options)
    : impl_(std::make_unique<Impl>()) {
  SUTRA_CHECK(!workers.empty(), "workers", "at least one worker", 0);
  SUTRA_CHECK(options.max_retries >= 0, "max_retries", ">= 0", options.max_retries);
  SUTRA_CHECK(options.queue_capacity >= 1, "queue_capacity", ">= 1", options.queue_capacity);
  SUTRA_CHECK(options.health_check_interval > 0, "health_check_interval", "> 0 seconds",
              options.health_check_interval);
  SUTRA_CHECK(options.job_timeout >= 0, "job_timeout", ">= 0 seconds (0: no limit)",
              options.job_timeout);
  SUTRA_CHECK(options.performance_smoothing > 0 && options.performance_smoothing <= 1,
              "performance_smoothing", "in (0, 1]", options.performance_smoothing);
  Impl& p = *impl_;
  p.options = options;
  p.random.seed(options.seed);
  for (size_t i = 0; i < workers.size(); ++i) {
    const std::string name = "workers[" + std::to_string(i) + "]";
    SUTRA_CHECK(workers[i].engine != nullptr, name.c_str(), "an engine", "null");
    const int64_t dim = workers[i].engine->output_dim();
    SUTRA_CHECK(dim > 0, (name + " output_dim").c_str(), "> 0", dim);
    if (i == 0) p.dim = dim;
    SUTRA_CHECK(dim == p.dim, (name + " output_dim").c_str(),
                "the output_dim of workers[0] (" + std::to_string(p.dim) + ")", dim);
    auto w = std::make_unique<Worker>();
    w->index = static_cast<int>(i);
    w->device = workers[i].device;
    w->engine = std::move(workers[i].engine);
    p.workers.push_back(std::move(w));
  }
  for (auto& w : p.workers) {
    Worker* raw = w.get();
    raw->thread = std::thread([&p, raw] { p.worker_loop(*raw); });
  }
  p.health_thread = std::thread([&p] { p.health_loop(); });
}

DevicePool::~DevicePool() {
  if (impl_->on_own_thread()) {
    // The last owner let go inside a done callback, on a pool thread, which cannot join itself:
    // a thread of its own finishes the shutdown (that callback's thread included) and frees it.
    Impl* impl = impl_.release();
    std::thread([impl] {
      impl->stop(false);
      delete impl;
    }).detach();
    return;
  }
  impl_->stop(false);
}

Future<Embeddings> DevicePool::submit(const int32_t* ids, int64_t tokens,
                                      const int32_t* cu_seqlens, int64_t batch,
                                      int64_t max_job_tokens, int64_t max_job_sequences) {
  SUTRA_CHECK(batch >= 0, "batch", ">= 0", batch);
  SUTRA_CHECK(tokens >= 0, "tokens", ">= 0", tokens);
  SUTRA_CHECK(max_job_tokens >= 0, "max_job_tokens", ">= 0 (0: no token bound)",
              max_job_tokens);
  SUTRA_CHECK(max_job_sequences >= 0, "max_job_sequences", ">= 0 (0: no sequence bound)",
              max_job_sequences);
  SUTRA_CHECK(cu_seqlens[0] == 0, "cu_seqlens[0]", "0", cu_seqlens[0]);
  for (int64_t b = 0; b < batch; ++b) {
    if (cu_seqlens[b + 1] < cu_seqlens[b]) {
      throw std::invalid_argument("cu_seqlens must be nondecreasing; it falls from " +
                                  std::to_string(cu_seqlens[b]) + " to " +
                                  std::to_string(cu_seqlens[b + 1]) + " at index " +
                                  std::to_string(b + 1));
    }
  }
  SUTRA_CHECK(cu_seqlens[batch] == tokens, "cu_seqlens[-1]",
              "the token count " + std::to_string(tokens), cu_seqlens[batch]);
  Impl& p = *impl_;

  auto request = std::make_shared<Request>();
  request->ids.assign(ids, ids + tokens);
  request->cu_seqlens.assign(cu_seqlens, cu_seqlens + batch + 1);
  request->batch = batch;
  request->dim = p.dim;
  request->rows = std::make_shared<std::vector<float>>(static_cast<size_t>(batch * p.dim));
  request->submitted = Clock::now();
  Future<Embeddings> future = request->promise.get_future();

  // Whole sequences, greedily, up to both budgets.
  std::vector<JobPtr> jobs;
  for (int64_t first = 0; first < batch;) {
    int64_t end = first + 1;
    while (end < batch && (max_job_sequences == 0 || end - first < max_job_sequences) &&
           (max_job_tokens == 0 || cu_seqlens[end + 1] - cu_seqlens[first] <= max_job_tokens)) {
      ++end;
    }
    auto job = std::make_shared<Job>();
    job->request = request;
    job->first_sequence = first;
    job->sequences = end - first;
    job->first_token = cu_seqlens[first];
    job->tokens = cu_seqlens[end] - cu_seqlens[first];
    job->cu_seqlens.resize(static_cast<size_t>(end - first + 1));
    for (int64_t b = first; b <= end; ++b) {
      job->cu_seqlens[b - first] = cu_seqlens[b] - cu_seqlens[first];
    }
    jobs.push_back(std::move(job));
    first = end;
  }
  request->jobs_left = static_cast<int64_t>(jobs.size());

  std::vector<Completion> completions;
  {
    std::unique_lock<std::mutex> lock(p.mutex);
    if (p.stopping) throw Error("submit on a DevicePool that is shut down");
    if (!p.any_healthy()) {
      throw Error("no healthy device to run the request (" + p.health_summary() + ")");
    }
    if (jobs.empty()) {
      request->finished = true;
      ++p.requests;
      p.record_latency(0);
      completions.push_back({request, nullptr});
    }
    for (JobPtr& job : jobs) {
      p.room.wait(lock, [&] {
        return p.stopping || request->finished || p.queued_jobs < p.options.queue_capacity;
      });
      if (request->finished) break;  // an earlier job of it failed meanwhile
      if (p.stopping) {
        p.fail_request(request,
                       std::make_exception_ptr(Cancelled(
                           "the DevicePool shut down while this request waited for queue room")),
                       false, completions);
        break;
      }
      p.dispatch(std::move(job), completions);
    }
  }
  p.complete(completions);
  return future;
}

PoolStats DevicePool::stats() const {
  const Impl& p = *impl_;
  std::lock_guard<std::mutex> lock(p.mutex);
  const Clock::time_point now = Clock::now();
  PoolStats s;
  s.wall_s = seconds_between(p.started, now);
  s.requests = p.requests;
  s.embeddings = p.embeddings;
  s.tokens = p.tokens;
  s.retries = p.retries;
  s.failures = p.failed_requests;
  s.throughput_per_s = s.wall_s > 0 ? static_cast<double>(p.embeddings) / s.wall_s : 0;
  if (!p.latencies.empty()) {
    std::vector<double> sorted = p.latencies;
    std::sort(sorted.begin(), sorted.end());
    double sum = 0;
    for (double v : sorted) sum += v;
    s.latency_mean_s = sum / static_cast<double>(sorted.size());
    // Nearest rank.
    auto rank = [&](double q) {
      const size_t k = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
      return sorted[std::min(sorted.size() - 1, k == 0 ? 0 : k - 1)];
    };
    s.latency_p50_s = rank(0.50);
    s.latency_p99_s = rank(0.99);
  }
  for (const auto& w : p.workers) {
    WorkerStats d;
    d.device = w->device;
    d.healthy = w->healthy;
    double busy = w->busy_seconds;
    if (w->in_call) busy += seconds_between(w->running_since, now);
    d.busy_fraction = s.wall_s > 0 ? std::clamp(busy / s.wall_s, 0.0, 1.0) : 0;
    d.queued_jobs = static_cast<int64_t>(w->queue.size());
    d.queued_tokens = w->queued_tokens;
    d.batches = w->batches;
    d.tokens = w->tokens;
    d.failures = w->failures;
    d.seconds_per_token = w->tokens > 0 ? w->seconds / static_cast<double>(w->tokens) : 0;
    s.devices.push_back(d);
  }
  return s;
}

void DevicePool::shutdown(bool cancel_pending) {
  if (impl_->on_own_thread()) {
    throw Error(
        "DevicePool.shutdown() called on one of the pool's own threads (from a done callback?): "
        "it would join itself");
  }
  impl_->stop(cancel_pending);
}

Strategy DevicePool::strategy() const { return impl_->options.strategy; }
int DevicePool::num_workers() const { return static_cast<int>(impl_->workers.size()); }
int64_t DevicePool::output_dim() const { return impl_->dim; }

}  // namespace sutra::scheduler
