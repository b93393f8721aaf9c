// OpenMP kernels of pack3d / unpack3d (index math: csrc/include/packops/pack.h).
//
// One task per (batch item, packed channel c). For every row y the task
// gathers the nine zero-padded rows of U it needs (channels c-1..c+1, rows
// y-1..y+1) into small buffers, straight from the unpacked tensor (pack) or
// the input (unpack), and then produces the d output rows (o, c, y) from them:
// 27 shifted row AXPYs per output row, which the compiler vectorises. The
// space-to-depth copy (pack) and the un-shuffled conv output (unpack) never
// exist; rows are gathered / scattered with stride r.
//
// Backward, same tasks: grad_x row (c, y) gathers the gradient rows of the
// 9*d outputs that read U(c, y) (the transposed conv); the weight and bias
// gradients are per-task partial sums in double, reduced in task order after
// the parallel loop, so they do not depend on the thread count.
#include "pack.h"

#include "dispatch.h"

#include <algorithm>
#include <vector>

#include "packops/common.h"
#include "packops/pack.h"

namespace packops {
namespace cpu {
namespace {

// Below this many output elements, threads cost more than they save.
constexpr int64_t kParallelGrain = 1 << 14;

// Where the packed volumes live. U: the conv input, V: the conv output, both
// [Cu or d*Cu, h, w] per batch item. A row of either starts at *_row() and
// steps *_step() elements per column.
template <bool UNPACK> struct Layout {
  int64_t Cu, h, w, r;
  int64_t u_row(int64_t c, int64_t y) const {
    return UNPACK ? packed_offset(c, y, 0, h, w) : unpacked_offset(c, y, 0, h, w, r);
  }
  int64_t u_step() const { return UNPACK ? 1 : r; }
  int64_t v_row(int64_t q, int64_t y) const {
    return UNPACK ? unpacked_offset(q, y, 0, h, w, r) : packed_offset(q, y, 0, h, w);
  }
  int64_t v_step() const { return UNPACK ? r : 1; }
};

// Nine zero-padded U rows around (c, y): row(i, j)[x + 1] = U(c+i-1, y+j-1, x),
// and [0] / [w+1] are the zero padding. valid(i, j) is false where the whole
// row lies outside the volume (then its taps are skipped).
template <typename A> struct Neighbourhood {
  int64_t w;
  std::vector<A> buf;
  bool ok[9];
  explicit Neighbourhood(int64_t w_) : w(w_), buf(9 * (w_ + 2), A(0)) {}
  A* row(int i, int j) { return buf.data() + (i * 3 + j) * (w + 2); }
  bool valid(int i, int j) const { return ok[i * 3 + j]; }

  template <typename T, bool UNPACK>
  void gather(const T* ub, const Layout<UNPACK>& L, int64_t c, int64_t y) {
    const int64_t step = L.u_step();
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) {
        const int64_t cc = c + i - 1, yy = y + j - 1;
        ok[i * 3 + j] = cc >= 0 && cc < L.Cu && yy >= 0 && yy < L.h;
        if (!ok[i * 3 + j]) continue;
        const T* src = ub + L.u_row(cc, yy);
        A* dst = row(i, j) + 1;
        for (int64_t x = 0; x < w; ++x) dst[x] = A(src[x * step]);
      }
    }
  }
};

// ---------------------------------------------------------------- forward
template <typename T, bool UNPACK>
void forward(const T* in, const T* weight, const T* bias, T* out, int64_t B,
             const Layout<UNPACK>& L, int64_t d) {
  using A = typename AccType<T>::type;
  const int64_t Cu = L.Cu, h = L.h, w = L.w;
  const int64_t u_batch = Cu * h * w, v_batch = d * Cu * h * w;
  std::vector<A> wt(d * kTaps), bs(d);
  for (int64_t k = 0; k < d * kTaps; ++k) wt[k] = A(weight[k]);
  for (int64_t o = 0; o < d; ++o) bs[o] = A(bias[o]);
#pragma omp parallel if (B * v_batch > kParallelGrain)
  {
    Neighbourhood<A> nb(w);
    std::vector<A> acc(w);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < B * Cu; ++task) {
      run_vectorized([&] {
        const int64_t b = task / Cu, c = task % Cu;
        const T* ub = in + b * u_batch;
        T* vb = out + b * v_batch;
        for (int64_t y = 0; y < h; ++y) {
          nb.gather(ub, L, c, y);
          for (int64_t o = 0; o < d; ++o) {
            std::fill(acc.begin(), acc.end(), bs[o]);
            for (int i = 0; i < 3; ++i) {
              for (int j = 0; j < 3; ++j) {
                if (!nb.valid(i, j)) continue;
                const A* src = nb.row(i, j);  // src[x + l] = U(.., x + l - 1)
                for (int l = 0; l < 3; ++l) {
                  const A wv = wt[tap_index(o, i, j, l)];
                  for (int64_t x = 0; x < w; ++x) acc[x] += wv * src[x + l];
                }
              }
            }
            T* dst = vb + L.v_row(o * Cu + c, y);
            const int64_t step = L.v_step();
            for (int64_t x = 0; x < w; ++x) dst[x * step] = T(acc[x]);
          }
        }
    
      });
    }
  }
}

// --------------------------------------------------------------- backward
template <typename T, bool UNPACK>
void backward(const T* grad, const T* in, const T* weight, T* grad_in, T* grad_w, T* grad_b,
              int64_t B, const Layout<UNPACK>& L, int64_t d) {
  using A = typename AccType<T>::type;
  const int64_t Cu = L.Cu, h = L.h, w = L.w;
  const int64_t u_batch = Cu * h * w, v_batch = d * Cu * h * w;
  const bool need_w = grad_w != nullptr || grad_b != nullptr;
  const int64_t ntasks = B * Cu;
  std::vector<A> wt(d * kTaps);
  for (int64_t k = 0; k < d * kTaps; ++k) wt[k] = A(weight[k]);
  // partial[task][o][slot]: this task's share of dL/dw (27 slots) and dL/db.
  std::vector<double> partial(need_w ? ntasks * d * kGradSlots : 0, 0.0);
  const int64_t vstep = L.v_step();
#pragma omp parallel if (B * v_batch > kParallelGrain)
  {
    Neighbourhood<A> nb(w);
    std::vector<A> grow(w + 2, A(0));  // one gradient row, zero-padded like the U rows
    std::vector<A> acc(w);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < ntasks; ++task) {
      run_vectorized([&] {
        const int64_t b = task / Cu, c = task % Cu;
        const T* ub = in + b * u_batch;
        const T* gb = grad + b * v_batch;
        double* part = need_w ? partial.data() + task * d * kGradSlots : nullptr;
        // grow[x + 1] = dL/dV(q, yy, x)
        auto load_grad_row = [&](int64_t q, int64_t yy) {
          const T* src = gb + L.v_row(q, yy);
          for (int64_t x = 0; x < w; ++x) grow[x + 1] = A(src[x * vstep]);
        };
        for (int64_t y = 0; y < h; ++y) {
          // ---- dL/dw, dL/db: output row (o, c, y) against its nine U rows
          if (need_w) {
            nb.gather(ub, L, c, y);
            for (int64_t o = 0; o < d; ++o) {
              load_grad_row(o * Cu + c, y);
              const A* g = grow.data() + 1;
              double* po = part + o * kGradSlots;
              A gsum = 0;
              for (int64_t x = 0; x < w; ++x) gsum += g[x];
              po[kTaps] += double(gsum);
              for (int i = 0; i < 3; ++i) {
                for (int j = 0; j < 3; ++j) {
                  if (!nb.valid(i, j)) continue;
                  const A* src = nb.row(i, j);
                  for (int l = 0; l < 3; ++l) {
                    A s = 0;
                    for (int64_t x = 0; x < w; ++x) s += g[x] * src[x + l];
                    po[i * 9 + j * 3 + l] += double(s);
                  }
                }
              }
            }
          }
          // ---- dL/dU(c, y, x) = sum w(o,i,j,l) dL/dV(o, c-i+1, y-j+1, x-l+1)
          if (grad_in) {
            std::fill(acc.begin(), acc.end(), A(0));
            for (int64_t o = 0; o < d; ++o) {
              for (int i = 0; i < 3; ++i) {
                const int64_t cc = c - i + 1;
                if (cc < 0 || cc >= Cu) continue;
                for (int j = 0; j < 3; ++j) {
                  const int64_t yy = y - j + 1;
                  if (yy < 0 || yy >= h) continue;
                  load_grad_row(o * Cu + cc, yy);
                  for (int l = 0; l < 3; ++l) {
                    // dL/dV(.., x - l + 1) = grow[x - l + 2]; the pads are zero
                    const A wv = wt[tap_index(o, i, j, l)];
                    const A* g = grow.data() + 2 - l;
                    for (int64_t x = 0; x < w; ++x) acc[x] += wv * g[x];
                  }
                }
              }
            }
            T* dst = grad_in + b * u_batch + L.u_row(c, y);
            const int64_t ustep = L.u_step();
            for (int64_t x = 0; x < w; ++x) dst[x * ustep] = T(acc[x]);
          }
        }
    
      });
    }
  }
  if (!need_w) return;
  // Fixed-order reduction over tasks: deterministic.
  for (int64_t o = 0; o < d; ++o) {
    for (int s = 0; s < kGradSlots; ++s) {
      double total = 0.0;
      for (int64_t t = 0; t < ntasks; ++t) total += partial[(t * d + o) * kGradSlots + s];
      if (s < kTaps && grad_w) grad_w[o * kTaps + s] = T(total);
      if (s == kTaps && grad_b) grad_b[o] = T(total);
    }
  }
}

}  // namespace

int64_t pack_workspace_elems(int64_t, Stream) { return 0; }

Status pack_forward(DType dt, bool unpack, const void* x, const void* weight, const void* bias,
                    void* out, int64_t B, int64_t C, int64_t H, int64_t W, int64_t d, int64_t r,
                    Stream) {
  if (unpack ? (d * C) % (r * r) != 0 : (H % r != 0 || W % r != 0)) return Status::kInvalidShape;
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T *xp = static_cast<const T*>(x), *wp = static_cast<const T*>(weight),
            *bp = static_cast<const T*>(bias);
    T* op = static_cast<T*>(out);
    if (unpack)
      forward<T, true>(xp, wp, bp, op, B, Layout<true>{C, H, W, r}, d);
    else
      forward<T, false>(xp, wp, bp, op, B, Layout<false>{C * r * r, H / r, W / r, r}, d);
  });
}

Status pack_backward(DType dt, bool unpack, const void* grad, const void* x, const void* weight,
                     void* grad_x, void* grad_w, void* grad_b, void*, int64_t B, int64_t C,
                     int64_t H, int64_t W, int64_t d, int64_t r, Stream) {
  if (unpack ? (d * C) % (r * r) != 0 : (H % r != 0 || W % r != 0)) return Status::kInvalidShape;
  return dispatch(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T *gp = static_cast<const T*>(grad), *xp = static_cast<const T*>(x),
            *wp = static_cast<const T*>(weight);
    T *gx = static_cast<T*>(grad_x), *gw = static_cast<T*>(grad_w), *gb = static_cast<T*>(grad_b);
    if (unpack)
      backward<T, true>(gp, xp, wp, gx, gw, gb, B, Layout<true>{C, H, W, r}, d);
    else
      backward<T, false>(gp, xp, wp, gx, gw, gb, B, Layout<false>{C * r * r, H / r, W / r, r}, d);
  });
}

}  // namespace cpu
}  // namespace packops
