// rnncore: a 64-byte aligned, uninitialised, growable buffer for kernel workspaces.
//
// resize() only reallocates when the capacity is too small, so a workspace sized once per
// shape is reused by later calls without touching the allocator.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "common/defs.h"

namespace rnncore {

// Allocations made by AlignedBuffer in the calling thread since it started: a counter for
// tests and for objects that promise not to allocate per call (recurrent/stream.h compares it
// before and after each call). Per thread, so another model's work elsewhere never shows.
inline std::int64_t& buffer_allocations() {
  static thread_local std::int64_t count = 0;
  return count;
}

template <typename T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(index_t n) { resize(n); }
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept : data_(o.data_), size_(o.size_), capacity_(o.capacity_) {
    o.data_ = nullptr;
    o.size_ = o.capacity_ = 0;
  }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      std::free(data_);
      data_ = o.data_;
      size_ = o.size_;
      capacity_ = o.capacity_;
      o.data_ = nullptr;
      o.size_ = o.capacity_ = 0;
    }
    return *this;
  }

  // Contents are unspecified after a resize that grows the buffer.
  // A size whose byte count cannot be represented throws std::bad_alloc (never a short buffer).
  void resize(index_t n) {
    if (n > capacity_) {
      if (static_cast<std::size_t>(n) > (SIZE_MAX - 63) / sizeof(T)) throw std::bad_alloc();
      std::free(data_);
      data_ = nullptr;
      capacity_ = 0;
      const std::size_t bytes = ((static_cast<std::size_t>(n) * sizeof(T) + 63) / 64) * 64;
      void* p = std::aligned_alloc(64, bytes);
      if (p == nullptr) throw std::bad_alloc();
      data_ = static_cast<T*>(p);
      capacity_ = n;
      ++buffer_allocations();
    }
    size_ = n;
  }
  // Give the memory back (size and capacity 0).
  void release() {
    std::free(data_);
    data_ = nullptr;
    size_ = capacity_ = 0;
  }
  void zero() {
    if (size_ > 0) std::memset(data_, 0, static_cast<std::size_t>(size_) * sizeof(T));
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  index_t size() const { return size_; }
  T& operator[](index_t i) { return data_[i]; }
  const T& operator[](index_t i) const { return data_[i]; }

 private:
  T* data_ = nullptr;
  index_t size_ = 0;
  index_t capacity_ = 0;
};

}  // namespace rnncore
