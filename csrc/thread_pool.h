// A small persistent thread pool for the CPU ops of jepa._C (no OpenMP: torch ships its own OpenMP
// runtime and a second one in the same process oversubscribes the cores).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace jepa {

class ThreadPool {
 public:
  // The process-wide pool (re-created in a forked child: the parent's worker threads do not exist there).
  static ThreadPool& instance();

  // Runs job(participant) on up to `participants` threads, the calling thread being participant 0,
  // and returns when every participant that started has returned. Jobs must split their work
  // dynamically (e.g. an atomic chunk counter) because fewer participants may run than asked for:
  // a worker that wakes up only after the caller has finished the job does not join (so a slow
  // wake-up or a busy core never delays the caller), and when another thread is already using the
  // pool the caller runs the job alone instead of waiting. Returns the number of participants that ran.
  int run(int participants, const std::function<void(int)>& job);

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  static constexpr int kMaxThreads = 256;

 private:
  ThreadPool() = default;
  ~ThreadPool() = default;  // never destroyed: see instance()
  void grow(int workers);
  void worker_loop(int index, std::uint64_t seen_generation);

  std::mutex run_mu_;  // one parallel region at a time
  std::mutex mu_;
  std::condition_variable cv_work_;
  std::condition_variable cv_done_;
  std::vector<std::thread> threads_;
  const std::function<void(int)>* job_ = nullptr;
  std::uint64_t generation_ = 0;
  int active_ = 0;     // workers (1-based indices) invited to the current generation
  bool open_ = false;  // whether invited workers may still join the current generation
  int running_ = 0;    // workers of the current generation inside job_
  int joined_ = 0;     // workers that joined the current generation
};

// Number of hardware threads (at least 1).
int hardware_threads();

}  // namespace jepa
