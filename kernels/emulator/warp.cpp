// Warp collectives as rendezvous: each lane named by the mask deposits its operands and waits; the
// last to arrive computes every lane's result (following the PTX ISA's definitions and fragment
// layouts) and releases the others. Faults name the lane responsible.
//
// The mask must name exactly the lanes that call: a lane outside it, a lane that does not exist,
// or a lane that exits or waits elsewhere (reported when nothing else can run) is a fault. Lanes
// of a warp may wait at different collectives at once (divergent branches); a lane that calls a
// collective other than the one the lanes of its mask wait at is a fault (mismatched).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include "runtime.hpp"

namespace realm_emu {

const char* op_name(Op op, unsigned tag) {
  static const char* const kLdmatrix[] = {"ldmatrix.x1", "ldmatrix.x2", "ldmatrix.x4",
                                          "ldmatrix.x1.trans", "ldmatrix.x2.trans",
                                          "ldmatrix.x4.trans"};
  switch (op) {
    case Op::shfl_idx: return "__shfl_sync";
    case Op::shfl_xor: return "__shfl_xor_sync";
    case Op::shfl_down: return "__shfl_down_sync";
    case Op::shfl_up: return "__shfl_up_sync";
    case Op::ballot: return "__ballot_sync";
    case Op::any: return "__any_sync";
    case Op::all: return "__all_sync";
    case Op::ldmatrix: return kLdmatrix[(tag & 8 ? 3 : 0) + (tag & 7) / 2];
    case Op::mma_f16: return "mma.m16n8k16.f16";
    case Op::mma_bf16: return "mma.m16n8k16.bf16";
  }
  return "?";
}

namespace {

Warp& warp_of(Launch& L, const Fiber& f) { return L.warps[f.index / 32]; }
const Fiber& lane_fiber(const Launch& L, const Warp& w, unsigned lane) {
  return L.fibers[static_cast<size_t>(&w - L.warps.data()) * 32 + lane];
}

// The running lane joins collective `op` (the pending one with the same mask, or a new one) after
// checking its mask, and returns the collective and its operand slot.
std::pair<Collective&, LaneIo&> enter(Launch& L, Fiber& f, Op op, unsigned mask, unsigned tag,
                                      Loc loc) {
  Warp& w = warp_of(L, f);
  const unsigned lane = f.index % 32;
  const char* name = op_name(op, tag);
  const char* file = short_path(loc.file_name());
  char lanes[160];
  if (!(mask >> lane & 1u)) {
    fail(f, "%s (%s:%u) with mask %#010x, which does not include the calling lane %u", name, file,
         loc.line(), mask, lane);
  }
  if (mask & ~w.exists) {
    lanes_text(mask & ~w.exists, lanes, sizeof lanes);
    fail(f, "%s (%s:%u) with mask %#010x names lanes %s, which this block's warp does not have",
         name, file, loc.line(), mask, lanes);
  }
  for (unsigned i = 0; i < w.pending; ++i) {
    Collective& c = w.waits[i];
    if (c.mask == mask && c.op == op && c.tag == tag) return {c, w.lane[lane]};
    // Lanes this call needs wait at a collective that needs this lane: neither can complete.
    if ((c.arrived & mask) && (c.mask >> lane & 1u)) {
      lanes_text(c.arrived, lanes, sizeof lanes);
      fail(f,
           "mismatched warp collective: this lane calls %s (%s:%u) with mask %#010x while lane(s) %s "
           "of its warp wait at %s (%s:%u) with mask %#010x",
           name, file, loc.line(), mask, lanes, op_name(c.op, c.tag), short_path(c.site.file_name()),
           c.site.line(), c.mask);
    }
  }
  Collective& c = w.waits[w.pending++];
  c = {mask, 0, op, tag, loc};
  return {c, w.lane[lane]};
}

// The running lane has deposited its operands: the last lane computes, the others wait for it.
void arrive(Launch& L, Fiber& f, Collective& c, Loc loc,
            void (*compute)(const Launch&, Warp&, const Collective&)) {
  Warp& w = warp_of(L, f);
  const unsigned lane = f.index % 32;
  c.arrived |= 1u << lane;
  if (c.arrived != c.mask) {
    block_on(L, f, State::collective, loc);
    return;
  }
  compute(L, w, c);
  const unsigned mask = c.mask;
  c = w.waits[--w.pending];
  for (unsigned l = 0; l < 32; ++l) {
    if (l != lane && (mask >> l & 1u)) wake(L, L.fibers[f.index - lane + l]);
  }
}

// shfl.sync with CUDA's segment operand c = ((32 - width) << 8) | clamp (clamp 0 for .up, 31
// otherwise), following the PTX ISA pseudocode; a source outside the segment yields the lane's
// own value.
void compute_shuffle(const Launch& L, Warp& w, const Collective& c) {
  for (unsigned l = 0; l < 32; ++l) {
    if (!(c.mask >> l & 1u)) continue;
    LaneIo& io = w.lane[l];
    const int lane = static_cast<int>(l);
    const int seg = 32 - io.width;  // the lane bits that select the segment
    const int clamp = c.op == Op::shfl_up ? 0 : 31;
    const int max_lane = (lane & seg) | (clamp & ~seg), min_lane = lane & seg;
    long long j = lane;
    bool ok = false;
    switch (c.op) {
      case Op::shfl_up: j = lane - static_cast<long long>(io.b); ok = j >= max_lane; break;
      case Op::shfl_down: j = lane + static_cast<long long>(io.b); ok = j <= max_lane; break;
      case Op::shfl_xor: j = lane ^ io.b; ok = j <= max_lane; break;
      default: j = min_lane | (io.b & 31 & ~seg); ok = j <= max_lane; break;
    }
    if (!ok || j < 0 || j > 31) j = lane;
    if (!(c.mask >> j & 1u)) {
      fail(lane_fiber(L, w, l), "%s (%s:%u) with mask %#010x: lane %u reads lane %lld, which is not in the mask",
           op_name(c.op, c.tag), short_path(c.site.file_name()), c.site.line(), c.mask, l, j);
    }
    io.result = w.lane[j].value;
  }
}

void compute_vote(const Launch&, Warp& w, const Collective& c) {
  unsigned ballot = 0;
  for (unsigned l = 0; l < 32; ++l) {
    if ((c.mask >> l & 1u) && w.lane[l].pred) ballot |= 1u << l;
  }
  const unsigned r = c.op == Op::ballot ? ballot
                     : c.op == Op::any  ? (ballot != 0)
                                        : (ballot == c.mask);
  for (unsigned l = 0; l < 32; ++l) {
    if (c.mask >> l & 1u) w.lane[l].result = r;
  }
}

// ldmatrix.m8n8.b16: lane 8i+r supplies row r of matrix i; lane l receives in register i the
// elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1) of matrix i (of its transpose with .trans), the
// lower column in the low half.
void compute_ldmatrix(const Launch& L, Warp& w, const Collective& c) {
  const unsigned count = c.tag & 7;
  const bool trans = (c.tag & 8) != 0;
  uint16_t m[4][8][8];
  for (unsigned i = 0; i < count; ++i) {
    for (unsigned r = 0; r < 8; ++r) {
      const LaneIo& src = w.lane[8 * i + r];
      const unsigned char* state = shadow_of(reinterpret_cast<const void*>(src.row));
      for (int k = 0; k < 16; ++k) {
        if (state[k] != kWritten) {
          fail_shared(lane_fiber(L, w, 8 * i + r),
                      state[k] == kUnwritten ? SharedFault::unwritten : SharedFault::in_flight_read,
                      src.row, 16, src.row_begin, src.row_end);
        }
      }
      std::memcpy(m[i][r], reinterpret_cast<const void*>(src.row), 16);
    }
  }
  for (unsigned l = 0; l < 32; ++l) {
    const unsigned g = l / 4, c = 2 * (l % 4);
    for (unsigned i = 0; i < count; ++i) {
      const uint32_t lo = trans ? m[i][c][g] : m[i][g][c];
      const uint32_t hi = trans ? m[i][c + 1][g] : m[i][g][c + 1];
      w.lane[l].out[i] = lo | hi << 16;
    }
  }
}

float half_bits(uint32_t bits) { return __half2float(__ushort_as_half(static_cast<unsigned short>(bits))); }
float bf16_bits(uint32_t bits) {
  return __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(bits)));
}

// The coarse end of measured tensor-core accumulation (Fasi et al. 2021, V100/A100): the terms
// (the accumulator and 8 exact products) are aligned to the largest of them, every bit below its
// 24th is truncated, the aligned terms are added exactly, and the sum is truncated to f32.
// Products of 16-bit floats are exact in double, and so is the sum of the aligned terms.
float truncating_sum(const double (&terms)[9]) {
  int top = INT_MIN;
  for (double t : terms) {
    if (!std::isfinite(t)) {  // inf or NaN: the IEEE sum, as the hardware propagates them
      double s = 0;
      for (double u : terms) s += u;
      return static_cast<float>(s);
    }
    if (t != 0) top = std::max(top, std::ilogb(t));
  }
  if (top == INT_MIN) return 0.0f;
  const double quantum = std::ldexp(1.0, top - 23);
  double sum = 0;
  for (double t : terms) sum += std::trunc(t / quantum) * quantum;
  float f = static_cast<float>(sum);  // round to nearest, then toward zero if it rounded away
  if (std::fabs(static_cast<double>(f)) > std::fabs(sum)) f = std::nextafter(f, 0.0f);
  return f;
}

// mma.m16n8k16.row.col, groupID g = lane / 4, t = lane % 4:
//   a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..], a[3] = A[g+8][2t+8..]
//   b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]
//   c/d = {C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]}
// Products of 16-bit inputs are exact in f32; they are summed in k order, then added to C.
// With mma_model 1 the sum is the truncating model of docs/emulator.md instead.
void compute_mma(const Launch& L, Warp& w, const Collective& c) {
  float (*const convert)(uint32_t) = c.op == Op::mma_f16 ? half_bits : bf16_bits;
  float A[16][16], B[16][8], C[16][8];
  for (unsigned l = 0; l < 32; ++l) {
    const uint32_t* in = w.lane[l].in;
    const unsigned g = l / 4, t = 2 * (l % 4);
    for (unsigned h = 0; h < 2; ++h) {
      A[g][t + h] = convert(in[0] >> 16 * h & 0xffffu);
      A[g + 8][t + h] = convert(in[1] >> 16 * h & 0xffffu);
      A[g][t + 8 + h] = convert(in[2] >> 16 * h & 0xffffu);
      A[g + 8][t + 8 + h] = convert(in[3] >> 16 * h & 0xffffu);
      B[t + h][g] = convert(in[4] >> 16 * h & 0xffffu);
      B[t + 8 + h][g] = convert(in[5] >> 16 * h & 0xffffu);
      C[g][t + h] = __uint_as_float(in[6 + h]);
      C[g + 8][t + h] = __uint_as_float(in[8 + h]);
    }
  }
  for (unsigned l = 0; l < 32; ++l) {
    const unsigned g = l / 4, t = 2 * (l % 4);
    const unsigned rows[4] = {g, g, g + 8, g + 8}, cols[4] = {t, t + 1, t, t + 1};
    for (unsigned i = 0; i < 4; ++i) {
      float d;
      if (L.mma_model == 1) {
        d = C[rows[i]][cols[i]];
        for (unsigned k0 = 0; k0 < 16; k0 += 8) {
          double terms[9] = {d};
          for (unsigned k = 0; k < 8; ++k)
            terms[k + 1] = static_cast<double>(A[rows[i]][k0 + k]) * B[k0 + k][cols[i]];
          d = truncating_sum(terms);
        }
      } else {
        float sum = 0.0f;
        for (unsigned k = 0; k < 16; ++k) sum += A[rows[i]][k] * B[k][cols[i]];
        d = sum + C[rows[i]][cols[i]];
      }
      w.lane[l].out[i] = __float_as_uint(d);
    }
  }
}

}  // namespace

uint64_t shuffle(Op op, unsigned mask, uint64_t value, unsigned bytes, int b, int width, Loc loc) {
  Launch& L = *tl_launch;
  Fiber& f = *tl_fiber;
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    fail(f, "%s (%s:%u): width %d is not a power of two in 1..32", op_name(op, bytes),
         short_path(loc.file_name()), loc.line(), width);
  }
  auto [c, io] = enter(L, f, op, mask, bytes, loc);
  io.value = value;
  io.b = b;
  io.width = width;
  arrive(L, f, c, loc, compute_shuffle);
  return io.result;
}

unsigned vote(Op op, unsigned mask, bool pred, Loc loc) {
  Launch& L = *tl_launch;
  Fiber& f = *tl_fiber;
  auto [c, io] = enter(L, f, op, mask, 0, loc);
  io.pred = pred;
  arrive(L, f, c, loc, compute_vote);
  return static_cast<unsigned>(io.result);
}

void ldmatrix(unsigned count, bool trans, uint32_t* r, uintptr_t row, uintptr_t begin,
              uintptr_t end, Loc loc) {
  Launch& L = *tl_launch;
  Fiber& f = *tl_fiber;
  const unsigned tag = count | (trans ? 8u : 0u);
  auto [c, io] = enter(L, f, Op::ldmatrix, ~0u, tag, loc);
  // Only lanes 0-7 (x1), 0-15 (x2) or all (x4) supply a row; the others' addresses are ignored.
  if (f.index % 32 < 8 * count) {
    if (out_of_bounds(row, 16, begin, end)) {
      fail_shared(f, SharedFault::out_of_bounds, row, 16, begin, end);
    }
    if (row % 16 != 0) {
      fail(f, "%s (%s:%u): the row address this lane supplies is not 16-byte aligned",
           op_name(Op::ldmatrix, tag), short_path(loc.file_name()), loc.line());
    }
  }
  io.row = row;
  io.row_begin = begin;
  io.row_end = end;
  arrive(L, f, c, loc, compute_ldmatrix);
  std::memcpy(r, io.out, count * sizeof(uint32_t));
}

void mma_m16n8k16(Op op, float* d, const uint32_t* a, const uint32_t* b, const float* c, Loc loc) {
  Launch& L = *tl_launch;
  Fiber& f = *tl_fiber;
  auto [coll, io] = enter(L, f, op, ~0u, 0, loc);
  std::memcpy(io.in, a, 4 * sizeof(uint32_t));
  std::memcpy(io.in + 4, b, 2 * sizeof(uint32_t));
  std::memcpy(io.in + 6, c, 4 * sizeof(float));
  arrive(L, f, coll, loc, compute_mma);
  std::memcpy(d, io.out, 4 * sizeof(float));
}

}  // namespace realm_emu
