// Every cell type, and the one switch from a run-time CellKind to a cell type.
//
//   with_cell(kind, [&](auto tag) {
//     using Cell = typename decltype(tag)::template type<T>;
//     run<Cell>(...);
//   });
//
// Time loops are templates on the cell (cells/step.h says what a cell provides); they branch
// on the kind once, at their entry, through this.
#pragma once

#include <cctype>
#include <string>

#include "cells/gru.h"
#include "cells/lstm.h"
#include "cells/rnn.h"
#include "cells/step.h"

namespace rnncore {

template <template <typename> class C>
struct CellTag {
  template <typename T>
  using type = C<T>;
};

template <typename F>
decltype(auto) with_cell(CellKind kind, F&& f) {
  switch (kind) {
    case CellKind::LSTM: return f(CellTag<LSTMCell>{});
    case CellKind::GRU: return f(CellTag<GRUCell>{});
    case CellKind::RNNRelu: return f(CellTag<RNNReluCell>{});
    case CellKind::RNNTanh: break;
  }
  return f(CellTag<RNNTanhCell>{});
}

// "lstm", "gru", "rnn_tanh", "rnn_relu" in any case; false for anything else.
inline bool parse_cell_kind(const std::string& name, CellKind* kind) {
  std::string s(name);
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (s == "lstm") *kind = CellKind::LSTM;
  else if (s == "gru") *kind = CellKind::GRU;
  else if (s == "rnn_tanh") *kind = CellKind::RNNTanh;
  else if (s == "rnn_relu") *kind = CellKind::RNNRelu;
  else return false;
  return true;
}

inline const char* cell_kind_name(CellKind kind) {
  switch (kind) {
    case CellKind::LSTM: return "lstm";
    case CellKind::GRU: return "gru";
    case CellKind::RNNRelu: return "rnn_relu";
    case CellKind::RNNTanh: break;
  }
  return "rnn_tanh";
}

inline int gate_count(CellKind kind) {
  return with_cell(kind, [](auto tag) { return decltype(tag)::template type<float>::G; });
}

// The biases a cell adds per step, folded once: bias (G*H) = b_ih + b_hh on the first kHGates
// gates, b_ih alone on the rest (GRU's b_hn stays inside r * (W_hn h + b_hn): see b_hn_of).
// Either input may be null; returns false (bias untouched) when both are.
template <typename Cell, typename T>
bool fuse_biases(T* bias, const T* b_ih, const T* b_hh, index_t H) {
  if (b_ih == nullptr && b_hh == nullptr) return false;
  const index_t hh_cols = Cell::kHGates * H;
  for (index_t c = 0; c < Cell::G * H; ++c)
    bias[c] = (b_ih ? b_ih[c] : T(0)) + (b_hh && c < hh_cols ? b_hh[c] : T(0));
  return true;
}

// GRU's b_hn (the part of b_hh not folded by fuse_biases), or null.
template <typename Cell, typename T>
const T* b_hn_of(const T* b_hh, index_t H) {
  return (Cell::kSavesHn && b_hh != nullptr) ? b_hh + Cell::kHGates * H : nullptr;
}

}  // namespace rnncore
