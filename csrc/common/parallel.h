// rnncore: OpenMP helpers with a single-threaded fallback when built without OpenMP.
//
// Threads are always an explicit argument (`nthreads`), never a global: a kernel runs its
// parallel regions with exactly the count it is given.
#pragma once

#include <algorithm>
#include <atomic>
#include <thread>

#include "common/defs.h"

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "common/cpu.h"
#if RNNCORE_X86_SIMD
#include <immintrin.h>
#endif

namespace rnncore {

inline int thread_id() {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

inline int num_threads_in_region() {
#if defined(_OPENMP)
  return omp_get_num_threads();
#else
  return 1;
#endif
}

inline bool openmp_enabled() {
#if defined(_OPENMP)
  return true;
#else
  return false;
#endif
}

// The largest thread count any entry point accepts: max(256, 4 x the processors). A team far
// beyond the machine only makes threads wait for each other, and libgomp itself gives way in
// the tens of thousands (it aborts or crashes creating the team), so a larger count is a
// mistake to report, not a request to honour; 256 still lets a test oversubscribe a small
// machine. The bindings and rnncore/_threads.py check every count against it.
inline int thread_limit() {
  static const int limit = [] {
    const unsigned procs = std::min(std::thread::hardware_concurrency(), 1u << 20);
    return std::max(256, 4 * static_cast<int>(procs));
  }();
  return limit;
}

// Split [0, n) into `parts` near-equal chunks whose boundaries are multiples of `align`
// (except the last); returns chunk `k` as [begin, end). Some chunks may be empty.
inline void split_range(index_t n, int parts, int k, index_t align, index_t* begin, index_t* end) {
  const index_t blocks = (n + align - 1) / align;
  const index_t per = blocks / parts, extra = blocks % parts;
  const index_t b0 = k * per + (k < extra ? k : extra);
  const index_t b1 = b0 + per + (k < extra ? 1 : 0);
  *begin = b0 * align < n ? b0 * align : n;
  *end = b1 * align < n ? b1 * align : n;
}

// Threads worth using for `work` units (multiply-adds, elements, ...) when each thread
// should get at least `min_per_thread` of them: work / min_per_thread, clamped to
// [1, nthreads]. The one place that turns a size into a thread count; each kernel family
// names its own minimum beside its code.
inline int threads_for(double work, double min_per_thread, int nthreads) {
  if (nthreads <= 1 || !(work >= 2.0 * min_per_thread)) return 1;
  const double useful = work / min_per_thread;
  return useful >= static_cast<double>(nthreads) ? nthreads : static_cast<int>(useful);
}

// A barrier for the threads of one parallel region that meet once per time step. A step of
// a batch-1 recurrence takes a few microseconds, and OpenMP's general barrier (which also
// runs pending tasks and falls back to futexes) costs a sizeable part of that; this one is
// a counter and a generation number on separate cache lines. Waiters spin with a pause;
// after kSpins polls (tens of microseconds) they yield the CPU between polls, so a partner
// that was descheduled on a busy machine does not cost a whole time slice of spinning.
// Every thread of the team must call wait() the same number of times; n is the team size.
class StepBarrier {
 public:
  explicit StepBarrier(int n) : n_(n) {}
  StepBarrier(const StepBarrier&) = delete;
  StepBarrier& operator=(const StepBarrier&) = delete;

  // Call inside the parallel region: waits here when the region's team has the size this
  // barrier was made for, else (OpenMP gave a smaller team) at OpenMP's own barrier.
  void wait_in_region() {
    if (num_threads_in_region() == n_) {
      wait();
    } else {
#pragma omp barrier
    }
  }

  void wait() {
    if (n_ <= 1) return;
    const unsigned gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);        // reset before anyone can see the new generation
      gen_.store(gen + 1, std::memory_order_release);  // publishes every thread's writes of this step
      return;
    }
    for (int polls = 0; gen_.load(std::memory_order_acquire) == gen; ++polls) {
      if (polls < kSpins) pause();
      else std::this_thread::yield();
    }
  }

 private:
  static constexpr int kSpins = 1 << 14;
  static void pause() {
#if RNNCORE_X86_SIMD
    _mm_pause();
#endif
  }
  alignas(64) std::atomic<int> count_{0};
  alignas(64) std::atomic<unsigned> gen_{0};
  alignas(64) const int n_;
};

// Flush denormals to zero in the calling thread for the lifetime of the guard (x86 MXCSR
// FTZ|DAZ): a recurrence that decays towards zero would otherwise crawl through denormal
// arithmetic. The previous mode is restored on exit, so the Python thread that ran a kernel
// (OpenMP's thread 0) sees no change in numpy's behaviour afterwards.
class FlushToZeroGuard {
 public:
  FlushToZeroGuard() {
#if RNNCORE_X86_SIMD
    saved_ = _mm_getcsr();
    _mm_setcsr(saved_ | 0x8040u);
#endif
  }
  ~FlushToZeroGuard() {
#if RNNCORE_X86_SIMD
    _mm_setcsr(saved_);
#endif
  }
  FlushToZeroGuard(const FlushToZeroGuard&) = delete;
  FlushToZeroGuard& operator=(const FlushToZeroGuard&) = delete;

 private:
  unsigned saved_ = 0;
};

// One parallel region of nt threads for a time loop: each thread runs body(team, barrier)
// once, with denormals flushed to zero; `team` is the region's real size (OpenMP may give
// fewer than nt) and `barrier` meets once per step (StepBarrier::wait_in_region). `body`
// must not throw.
// With nt == 1 outside any parallel region no region is opened at all (body runs in the
// calling thread, whose thread_id() is 0): a one-thread call pays no team wake-up.
template <typename F>
void run_team(int nt, const F& body) {
  StepBarrier barrier(nt);
#if defined(_OPENMP)
  const bool nested = omp_in_parallel() != 0;
#else
  const bool nested = false;
#endif
  if (nt <= 1 && !nested) {
    FlushToZeroGuard ftz;
    body(1, barrier);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    FlushToZeroGuard ftz;
    body(num_threads_in_region(), barrier);
  }
}

}  // namespace rnncore
