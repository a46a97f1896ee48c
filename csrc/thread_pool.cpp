#include "thread_pool.h"

#if !defined(_WIN32)
#include <pthread.h>
#endif

#include <algorithm>
#include <atomic>
#include <exception>
#include <new>

namespace jepa {

namespace {

std::atomic<ThreadPool*> g_pool{nullptr};
std::mutex g_create_mu;

#if !defined(_WIN32)
std::once_flag g_atfork_once;

void after_fork_in_child() {
  // The parent's workers do not exist in the child and its mutexes may be held by threads that are
  // gone: leak the old pool (never touch it again) and let instance() build a fresh one.
  g_pool.store(nullptr, std::memory_order_relaxed);
  new (&g_create_mu) std::mutex();
}
#endif

}  // namespace

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

ThreadPool& ThreadPool::instance() {
  ThreadPool* p = g_pool.load(std::memory_order_acquire);
  if (p != nullptr) return *p;
#if !defined(_WIN32)
  std::call_once(g_atfork_once, [] { pthread_atfork(nullptr, nullptr, &after_fork_in_child); });
#endif
  std::lock_guard<std::mutex> lock(g_create_mu);
  p = g_pool.load(std::memory_order_acquire);
  if (p == nullptr) {
    // Intentionally leaked: destroying it at exit would join threads during interpreter teardown.
    p = new ThreadPool();
    g_pool.store(p, std::memory_order_release);
  }
  return *p;
}

void ThreadPool::grow(int workers) {
  // Called with run_mu_ held; threads_ is only touched under run_mu_.
  while (static_cast<int>(threads_.size()) < workers) {
    const int index = static_cast<int>(threads_.size()) + 1;
    std::uint64_t start_generation = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      start_generation = generation_;  // the worker waits for the next generation, not this one
    }
    threads_.emplace_back([this, index, start_generation] { worker_loop(index, start_generation); });
  }
}

void ThreadPool::worker_loop(int index, std::uint64_t seen) {
  for (;;) {
    const std::function<void(int)>* job = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_work_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (index > active_ || !open_) continue;  // not invited, or the caller already finished the job
      job = job_;
      ++running_;
      ++joined_;
    }
    try {
      (*job)(index);
    } catch (...) {
      // Jobs are plain arithmetic and do not throw; never let an exception kill the process.
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--running_ == 0) cv_done_.notify_one();
    }
  }
}

int ThreadPool::run(int participants, const std::function<void(int)>& job) {
  participants = std::min(participants, kMaxThreads);
  if (participants <= 1) {
    job(0);
    return 1;
  }
  std::unique_lock<std::mutex> run_lock(run_mu_, std::try_to_lock);
  if (!run_lock.owns_lock()) {  // another thread is using the pool: do the work here, alone
    job(0);
    return 1;
  }
  const int workers = participants - 1;
  grow(workers);
  {
    std::lock_guard<std::mutex> lock(mu_);
    job_ = &job;
    active_ = workers;
    open_ = true;
    running_ = 0;
    joined_ = 0;
    ++generation_;
  }
  cv_work_.notify_all();
  std::exception_ptr error;
  try {
    job(0);
  } catch (...) {
    error = std::current_exception();
  }
  int joined = 0;
  {
    // The caller has claimed or finished all work: close the generation so late wakers skip it, then
    // wait for the workers inside the job (they hold a pointer to `job`, which lives in our frame).
    std::unique_lock<std::mutex> lock(mu_);
    open_ = false;
    cv_done_.wait(lock, [&] { return running_ == 0; });
    job_ = nullptr;
    joined = joined_;
  }
  if (error) std::rethrow_exception(error);
  return 1 + joined;
}

}  // namespace jepa
