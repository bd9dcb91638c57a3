// A small fork-join thread pool: the calling thread plus (n - 1) workers run the tasks of one parallel region,
// claimed dynamically from an atomic counter. Workers spin briefly between regions (a training step issues
// a few dozen regions back to back) and then sleep on a condition variable.
#pragma once
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace sdl {

class Pool {
 public:
  explicit Pool(int threads) : n_(threads < 1 ? 1 : threads) {
    for (int t = 1; t < n_; t++) workers_.emplace_back([this, t] { loop(t); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
      gen_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int size() const { return n_; }

  // Runs f(task, thread) for task in [0, tasks); returns when all are done.
  template <class F>
  void run(int tasks, F&& f) {
    if (tasks <= 0) return;
    if (n_ == 1 || tasks == 1) {
      for (int i = 0; i < tasks; i++) f(i, 0);
      return;
    }
    struct Ctx { F* f; };
    Ctx ctx{&f};
    fn_ = [](void* c, int task, int thread) { (*static_cast<Ctx*>(c)->f)(task, thread); };
    ctx_ = &ctx;
    tasks_ = tasks;
    next_.store(0);
    region([&] { work(0); });
  }

  // Runs f(thread) once on every thread of the pool, the caller's included: for state each thread keeps of its own
  // (thread_locals), which no task-claiming region is sure to visit on every thread.
  template <class F>
  void each(F&& f) {
    if (n_ == 1) {
      f(0);
      return;
    }
    struct Ctx { F* f; };
    Ctx ctx{&f};
    fn_ = [](void* c, int, int thread) { (*static_cast<Ctx*>(c)->f)(thread); };
    ctx_ = &ctx;
    each_ = true;  // seen by the workers after the generation changes (region: its increment orders it before)
    region([&] { f(0); });
    each_ = false;
  }

  // Splits [0, n) into one contiguous slice per thread and runs f(begin, end, slice) on each. The slice index (not
  // the thread that happens to run it) names the caller's per-slice buffers, so partial sums are combined in the
  // same order every time: training is bit-for-bit reproducible whatever the scheduling (exact resume relies on it).
  template <class F>
  void range(long n, F&& f) {
    if (n <= 0) return;
    const int tasks = n < n_ ? (int)n : n_;
    const long per = (n + tasks - 1) / tasks;
    run(tasks, [&](int t, int) {
      long b = (long)t * per, e = b + per < n ? b + per : n;
      if (b < e) f(b, e, t);
    });
  }

  // Dynamic chunks (about chunksPerThread per thread, claimed as threads free up) for loops whose results do not
  // depend on which thread ran which chunk (each index writes only its own outputs): better load balance. f gets the
  // running thread's index for its scratch.
  template <class F>
  void rangeDynamic(long n, F&& f, int chunksPerThread = 4) {
    if (n <= 0) return;
    long chunks = (long)n_ * chunksPerThread;
    if (chunks > n) chunks = n;
    long step = (n + chunks - 1) / chunks;
    int tasks = (int)((n + step - 1) / step);
    run(tasks, [&](int t, int thread) {
      long b = (long)t * step, e = b + step < n ? b + step : n;
      f(b, e, thread);
    });
  }

 private:
  // One parallel region over fn_ and ctx_: the workers woken, `mine` run on this thread, then every worker waited for.
  template <class G>
  void region(G&& mine) {
    busy_.store(n_ - 1);
    {
      std::lock_guard<std::mutex> lk(mu_);
      gen_.fetch_add(1);
    }
    cv_.notify_all();
    mine();
    while (busy_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  }
  void work(int thread) {
    for (;;) {
      int t = next_.fetch_add(1);
      if (t >= tasks_) break;
      fn_(ctx_, t, thread);
    }
  }
  void loop(int thread) {
    // Generation 0 is the pool's start: a region begun before this thread first runs is still seen as new.
    unsigned long seen = 0;
    for (;;) {
      // Spin for a while before sleeping: the next region usually starts within microseconds.
      bool woke = false;
      for (int i = 0; i < 20000; i++) {
        if (gen_.load(std::memory_order_acquire) != seen) { woke = true; break; }
        if ((i & 63) == 63) std::this_thread::yield();
      }
      if (!woke) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return gen_.load() != seen; });
      }
      seen = gen_.load();
      if (stop_) return;
      if (each_)
        fn_(ctx_, 0, thread);
      else
        work(thread);
      busy_.fetch_sub(1, std::memory_order_release);
    }
  }

  int n_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<unsigned long> gen_{0};
  std::atomic<int> next_{0};
  std::atomic<int> busy_{0};
  int tasks_ = 0;
  void (*fn_)(void*, int, int) = nullptr;
  void* ctx_ = nullptr;
  bool stop_ = false;
  bool each_ = false;  // the region runs fn_ once per thread (each) rather than claiming tasks
};

}  // namespace sdl
