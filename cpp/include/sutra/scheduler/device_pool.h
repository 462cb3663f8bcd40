// DevicePool: the scheduler over several devices. One worker thread per Engine (a device may
// have several), each owning its engine from its first call to its last and its own job queue;
// a bounded number of queued jobs across the pool (a full pool blocks the submitter); routing by
// strategy when a job is queued; a failing or hung worker marked unhealthy, its jobs retried on
// other workers, probed on its own thread and re-admitted when the probe passes; statistics
// measured on the workers.
//
// submit() takes a batch of sequences as flat arrays (ids [T], cu_seqlens [B + 1]), splits it
// into jobs of whole sequences bounded by a token budget, and returns a future of the [B, D]
// float32 rows in input order. Every job's rows are written exactly once: a result that comes
// back after its job was given to another worker (a timeout) is discarded.
//
// Plain C++: no Python, no CUDA. Engines that call into Python or CUDA live with the bindings
// and the engine (sutra/scheduler/encoder_engine.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "sutra/error.h"
#include "sutra/scheduler/thread_pool.h"

namespace sutra::scheduler {

/// What a worker runs. Called only from its worker's thread (one engine per worker), so an
/// implementation needs no locking of its own unless it is shared between workers.
class Engine {
 public:
  virtual ~Engine() = default;
  /// Width of the rows encode() writes.
  virtual int64_t output_dim() const = 0;
  /// Writes [batch, output_dim()] float32 rows to `out`, one per sequence of ids / cu_seqlens
  /// (cu_seqlens[0] == 0, batch + 1 entries). Throws on failure: the worker is then unhealthy.
  virtual void encode(const int32_t* ids, const int32_t* cu_seqlens, int64_t batch, float* out) = 0;
  /// A cheap health check run before an unhealthy worker is re-admitted; throws on failure.
  virtual void probe() = 0;
};

enum class Strategy : int {
  kRoundRobin = 0,        // the next healthy worker in turn
  kLeastLoaded = 1,       // fewest queued + running tokens (not jobs)
  kPerformanceBased = 2,  // least expected finish time from measured seconds per token
  kRandom = 3,            // uniform over healthy workers, from a seeded generator
};

const char* strategy_name(Strategy strategy);
/// "round_robin", "least_loaded", "performance_based" or "random"; std::invalid_argument else.
Strategy strategy_from_name(const std::string& name);

/// One worker of a pool: the device it reports and the engine its thread owns.
struct PoolWorker {
  int device = 0;
  std::shared_ptr<Engine> engine;
};

struct DevicePoolOptions {
  Strategy strategy = Strategy::kLeastLoaded;
  // Further attempts of a job after its first failure, each on another worker when one is
  // healthy; then the request fails.
  int max_retries = 3;
  // Jobs waiting in worker queues across the pool (running ones not counted) before submit()
  // blocks. Retries and jobs moved off an unhealthy worker do not wait for room (the threads
  // that move them must never block), so the count can pass this briefly.
  int64_t queue_capacity = 256;
  // Seconds between probes of an unhealthy worker.
  double health_check_interval = 30.0;
  // Seconds a job may run before its worker counts as failed (0: no limit).
  double job_timeout = 0.0;
  // Seed of the random strategy.
  uint64_t seed = 0;
  // Weight of the newest batch in each worker's moving average of seconds per token.
  double performance_smoothing = 0.3;
};

/// A request's result: [rows, dim] float32, row-major, shared so that handing it on copies
/// nothing.
struct Embeddings {
  std::shared_ptr<std::vector<float>> values;
  int64_t rows = 0;
  int64_t dim = 0;
};

struct WorkerStats {
  int device = 0;
  bool healthy = true;
  double busy_fraction = 0;  // seconds inside encode() / wall seconds since the pool started
  int64_t queued_jobs = 0;
  int64_t queued_tokens = 0;
  int64_t batches = 0;    // jobs it completed (results kept)
  int64_t tokens = 0;     // tokens of those jobs
  int64_t failures = 0;   // encode() calls that threw or ran past the timeout
  double seconds_per_token = 0;  // mean over the completed jobs (0 before the first)
};

struct PoolStats {
  int64_t requests = 0;    // completed with a result
  int64_t embeddings = 0;  // rows of those
  int64_t tokens = 0;      // tokens of those
  int64_t retries = 0;     // jobs sent again after a worker failure
  int64_t failures = 0;    // requests that failed (not counting cancelled ones)
  double latency_mean_s = 0;  // submit to result, over the latest completed requests
  double latency_p50_s = 0;
  double latency_p99_s = 0;
  double throughput_per_s = 0;  // embeddings / wall_s
  double wall_s = 0;            // since the pool started
  std::vector<WorkerStats> devices;
};

/// The future of a request that shutdown(cancel_pending = true) took off the queues, or that
/// was waiting for room when the pool shut down.
class Cancelled : public Error {
 public:
  using Error::Error;
};

class DevicePool {
 public:
  /// Starts one thread per worker and a health thread. Throws std::invalid_argument for no
  /// workers, a null engine, engines of different output widths or bad options.
  DevicePool(std::vector<PoolWorker> workers, const DevicePoolOptions& options);
  /// shutdown(false): finishes what is queued, then joins.
  ~DevicePool();
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;

  /// Queues `batch` sequences (ids [tokens], cu_seqlens [batch + 1], starting at 0, nondecreasing,
  /// ending at `tokens`) as jobs of whole sequences, at most max_job_tokens tokens (a longer
  /// sequence is a job of its own) and max_job_sequences sequences each (0: no such bound; both
  /// 0: one job). The arrays are copied, so the caller may reuse them
  /// at once. Blocks while the pool's queues are full. Throws std::invalid_argument for bad
  /// arrays, sutra::Error when the pool is shut down or no worker is healthy. The future fails
  /// with sutra::Error when a job exhausts its retries or no healthy worker is left for it, and
  /// with Cancelled when shutdown took it off the queue.
  Future<Embeddings> submit(const int32_t* ids, int64_t tokens, const int32_t* cu_seqlens,
                            int64_t batch, int64_t max_job_tokens,
                            int64_t max_job_sequences = 0);

  PoolStats stats() const;
  /// Stops taking requests; with cancel_pending the queued jobs are cancelled (their requests
  /// fail with Cancelled), without it they run. Joins every thread, so it waits for calls that
  /// are running (a hung engine call included). Idempotent.
  void shutdown(bool cancel_pending);

  Strategy strategy() const;
  int num_workers() const;
  int64_t output_dim() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sutra::scheduler
