// Sliding-window (+ sink) causal attention on the CPU, forward and backward, computing exactly the visible pairs.
//
// Rule (as lmask.schedule.visible): query i sees key j iff j <= i and (i - j < window or j < sinks).
// Layout: q, k, v are [B, H, T, D] with unit stride over D (any other strides); out, dq, dk, dv are [B, T, H, D]
// (the layout the model wants back, so no transpose copy); lse (log-sum-exp of each query's scores) is [B, H, T].
//
// Why a kernel of our own: for small windows every general path computes far more pairs than the window needs
// (tiles of 16..64 queries) and pays a pass over memory per op. Here each query's w scores live in a small
// per-thread buffer, the keys and values it reads stay in L1 (the next query reuses w - 1 of them), and q, k, v,
// out are each read or written once: the work is O(T·w·D) and the traffic the memory floor.
//
// Determinism: a fixed loop order per (batch, head); threads split the forward by (batch, position chunk) and the
// backward by (batch, head) ranges, never one row's sums, so the result does not depend on the thread count.
//
// Two algorithms share this file (one build, one set of SIMD helpers): the per-query band kernel above, for windows
// up to a few hundred keys, and the tiled kernel at the end (``tiled``), GEMM tiles for long windows and full causal
// attention.

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

// The BLAS torch links (MKL on x86 wheels), for the tiled path's GEMMs. Weak: where torch brings no Fortran sgemm
// the kernel still loads and ``tiled_supported`` says no. MKL's per-thread setting keeps each GEMM on the calling
// thread inside the parallel region: nested, MKL would fork again (4 threads on 2 cores) and split sums differently
// with the thread count.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc) __attribute__((weak));
extern "C" int MKL_Set_Num_Threads_Local(int n) __attribute__((weak));  // MKL's C entry (by value)

namespace {

template <typename T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t d = 0; d < n; ++d) acc += a[d] * b[d];
  return acc;
}

template <typename T>
inline void axpy(T alpha, const T* __restrict x, T* __restrict y, int64_t n) {
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) y[d] += alpha * x[d];
}

// exp(x) for x <= 0 in float, written so the compiler vectorizes a loop of it (libm's expf is a call per value):
// Cephes' range reduction x = n·ln2 + r and degree-6 polynomial, about 1 ulp; inputs below -87 clamp there
// (exp(-87) ~ 1.6e-38, against a row sum >= 1).
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(float));
  return y * two_n;
}
inline double exp_nonpositive(double x) { return std::exp(x); }

// p[i] = exp(s[i] - shift) in place; returns their sum.
template <typename T>
inline T exp_shifted(T* __restrict s, int64_t n, T shift) {
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < n; ++i) {
    s[i] = exp_nonpositive(s[i] - shift);
    sum += s[i];
  }
  return sum;
}

template <typename T>
struct View {  // a [B, H, T, D] tensor's data and strides (D stride 1)
  T* data;
  int64_t sb, sh, st;
  T* row(int64_t b, int64_t h, int64_t t) const { return data + b * sb + h * sh + t * st; }
};

template <typename T>
View<T> bhtd(const at::Tensor& x) {  // x is [B, H, T, D]
  return {x.data_ptr<T>(), x.stride(0), x.stride(1), x.stride(2)};
}

template <typename T>
View<T> bthd(const at::Tensor& x) {  // x is [B, T, H, D], seen as [B, H, T, D]
  return {x.data_ptr<T>(), x.stride(0), x.stride(2), x.stride(1)};
}

// The visible keys of query t: sinks [0, n_sink) then the window [lo, t].
struct Keys {
  int64_t n_sink, lo, count;
};

inline Keys keys_of(int64_t t, int64_t window, int64_t sinks) {
  const int64_t lo = std::max<int64_t>(0, t - window + 1);
  const int64_t n_sink = std::min(sinks, lo);
  return {n_sink, lo, n_sink + t - lo + 1};
}

inline int64_t key_at(const Keys& ks, int64_t i) { return i < ks.n_sink ? i : ks.lo + (i - ks.n_sink); }

constexpr int64_t kQueryChunk = 256;  // forward work item: queries of one (batch, head)

template <typename T>
void forward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out, at::Tensor& lse,
                  int64_t window, int64_t sinks, double scale_d) {
  const int64_t B = q.size(0), H = q.size(1), T_ = q.size(2), D = q.size(3);
  const T scale = static_cast<T>(scale_d);
  const auto Q = bhtd<T>(q), K = bhtd<T>(k), V = bhtd<T>(v), O = bthd<T>(out);
  T* L = lse.data_ptr<T>();
  const int64_t chunks = (T_ + kQueryChunk - 1) / kQueryChunk;
  at::parallel_for(0, B * H * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> s(window + sinks), acc(D);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t bh = item / chunks, b = bh / H, h = bh % H;
      const int64_t t0 = (item % chunks) * kQueryChunk, t1 = std::min(T_, t0 + kQueryChunk);
      for (int64_t t = t0; t < t1; ++t) {
        const T* qt = Q.row(b, h, t);
        const Keys ks = keys_of(t, window, sinks);
        T m = -INFINITY;
        for (int64_t i = 0; i < ks.count; ++i) {
          s[i] = scale * dot(qt, K.row(b, h, key_at(ks, i)), D);
          m = std::max(m, s[i]);
        }
        const T sum = exp_shifted(s.data(), ks.count, m);
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t i = 0; i < ks.count; ++i) axpy(s[i], V.row(b, h, key_at(ks, i)), acc.data(), D);
        T* ot = O.row(b, h, t);
        const T inv = T(1) / sum;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) ot[d] = acc[d] * inv;
        L[bh * T_ + t] = m + std::log(sum);
      }
    }
  });
}

template <typename T>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& out, const at::Tensor& lse, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv,
                   int64_t window, int64_t sinks, double scale_d) {
  const int64_t B = q.size(0), H = q.size(1), T_ = q.size(2), D = q.size(3);
  const T scale = static_cast<T>(scale_d);
  const auto Q = bhtd<T>(q), K = bhtd<T>(k), V = bhtd<T>(v);
  const auto O = bthd<T>(out), dO = bthd<T>(grad_out), dQ = bthd<T>(dq), dK = bthd<T>(dk), dV = bthd<T>(dv);
  const T* L = lse.data_ptr<T>();
  // One (batch, head) per work item: dK and dV rows collect from every query that sees them, in query order.
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> p(window + sinks), ds(window + sinks), acc(D);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      for (int64_t t = 0; t < T_; ++t) {
        // Key t is first seen by query t (distance 0 is always visible): start its gradient rows here.
        std::fill(dK.row(b, h, t), dK.row(b, h, t) + D, T(0));
        std::fill(dV.row(b, h, t), dV.row(b, h, t) + D, T(0));
        const T* qt = Q.row(b, h, t);
        const T* gt = dO.row(b, h, t);
        const T delta = dot(gt, O.row(b, h, t), D);  // rowsum(dO ∘ O)
        const Keys ks = keys_of(t, window, sinks);
        for (int64_t i = 0; i < ks.count; ++i) {
          const int64_t j = key_at(ks, i);
          p[i] = scale * dot(qt, K.row(b, h, j), D);
          ds[i] = dot(gt, V.row(b, h, j), D);
        }
        exp_shifted(p.data(), ks.count, L[bh * T_ + t]);
#pragma omp simd
        for (int64_t i = 0; i < ks.count; ++i) ds[i] = p[i] * (ds[i] - delta) * scale;
        std::fill(acc.begin(), acc.end(), T(0));
        for (int64_t i = 0; i < ks.count; ++i) {
          const int64_t j = key_at(ks, i);
          axpy(p[i], gt, dV.row(b, h, j), D);
          axpy(ds[i], K.row(b, h, j), acc.data(), D);
          axpy(ds[i], qt, dK.row(b, h, j), D);
        }
        std::copy(acc.begin(), acc.end(), dQ.row(b, h, t));
      }
    }
  });
}

#if defined(__AVX2__) && defined(__FMA__)
// The float path for D a multiple of 8, in AVX2 + FMA. Per query, scores come 8 keys at a time (8 independent
// FMA chains over D, then one 8x8 transpose-add), so no pair pays a horizontal sum of its own; the weighted sum
// of value rows keeps D / 8 accumulators in registers. D = 32 and 64 (the model's head sizes) are compile-time
// constants so the loops unroll; other multiples of 8 take the same code with D at run time.
namespace avx2 {

inline __m256 exp_nonpositive(__m256 x) {  // the vector form of ::exp_nonpositive(float)
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

inline float hsum(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(_mm_hadd_ps(s, s));
}

inline __m256 hsum8(const __m256* a) {  // lane u = sum of a[u]'s lanes
  const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
}

// s[i] = scale · (x · row(key i)) for the query's visible keys.
template <int64_t DC>
inline void scores(const float* x, const float* base, int64_t st, const Keys& ks, float scale, float* s,
                   int64_t D_) {
  const int64_t D = DC ? DC : D_;
  const __m256 sc = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= ks.count; i += 8) {
    const float* r[8];
    for (int u = 0; u < 8; ++u) r[u] = base + key_at(ks, i + u) * st;
    __m256 acc[8];
    for (int u = 0; u < 8; ++u) acc[u] = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; d += 8) {
      const __m256 xd = _mm256_loadu_ps(x + d);
      for (int u = 0; u < 8; ++u) acc[u] = _mm256_fmadd_ps(xd, _mm256_loadu_ps(r[u] + d), acc[u]);
    }
    _mm256_storeu_ps(s + i, _mm256_mul_ps(hsum8(acc), sc));
  }
  for (; i < ks.count; ++i) {
    const float* r = base + key_at(ks, i) * st;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t d = 0; d < D; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(x + d), _mm256_loadu_ps(r + d), acc);
    s[i] = scale * hsum(acc);
  }
}

// out[0, D) (+)= scale · Σ_i w[i] · row(i), 64 columns (8 registers) at a time; row(i) is the i-th row's address.
template <int64_t DC, typename Row>
inline void weighted_sum(const float* w, int64_t n, Row row, float scale, float* out, bool accumulate, int64_t D_) {
  const int64_t D = DC ? DC : D_;
  const __m256 sc = _mm256_set1_ps(scale);
  for (int64_t c = 0; c < D; c += 64) {
    const int nv = static_cast<int>(std::min<int64_t>(8, (D - c) / 8));
    __m256 acc[8];
    for (int u = 0; u < 8; ++u) acc[u] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; ++i) {
      const __m256 wi = _mm256_set1_ps(w[i]);
      const float* r = row(i) + c;
      for (int u = 0; u < nv; ++u) acc[u] = _mm256_fmadd_ps(wi, _mm256_loadu_ps(r + 8 * u), acc[u]);
    }
    float* o = out + c;
    for (int u = 0; u < nv; ++u) {
      const __m256 add = _mm256_mul_ps(acc[u], sc);
      _mm256_storeu_ps(o + 8 * u, accumulate ? _mm256_add_ps(_mm256_loadu_ps(o + 8 * u), add) : add);
    }
  }
}

// out = scale · Σ_i w[i] · row(key i) over a query's visible keys.
template <int64_t DC>
inline void weighted_rows(const float* w, const float* base, int64_t st, const Keys& ks, float scale, float* out,
                          int64_t D_) {
  weighted_sum<DC>(w, ks.count, [&](int64_t i) { return base + key_at(ks, i) * st; }, scale, out, false, D_);
}

// s[0, n) = exp(s - shift); returns the sum.
inline float exp_shifted(float* s, int64_t n, float shift) {
  const __m256 sh = _mm256_set1_ps(shift);
  __m256 sum = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(s + i), sh));
    _mm256_storeu_ps(s + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  float total = hsum(sum);
  for (; i < n; ++i) {
    s[i] = ::exp_nonpositive(s[i] - shift);
    total += s[i];
  }
  return total;
}

inline void prefetch_row(const float* row, int64_t D) {
  for (int64_t d = 0; d < D; d += 16) _mm_prefetch(reinterpret_cast<const char*>(row + d), _MM_HINT_T0);
}

inline float max_of(const float* s, int64_t n) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(s + i));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float r = *std::max_element(lanes, lanes + 8);
  for (; i < n; ++i) r = std::max(r, s[i]);
  return r;
}

// Work order. Rows of all heads at one position are adjacent in memory ([B, T, H, D], or the model's [B, T, 3, H, D]
// before the split), so the walk goes through positions in order; within a block of a few positions it takes one
// head at a time, so the next query of that head finds its key rows in L1. That walk jumps H·D floats per step,
// which the hardware prefetcher does not follow: the same head's rows one block ahead are prefetched by hand.
// Block sizes measured at T = 3072, 12 heads x 64, forward and backward side by side: 1 (no prefetch needed, the
// walk is sequential) was fastest up to w = 8, 2 and 4 beat 1 by 10 % at w = 64, all within noise at w = 16..32.
inline int64_t query_block(int64_t window) { return window <= 8 ? 1 : window <= 16 ? 2 : 4; }

template <int64_t DC>
void forward_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out, at::Tensor& lse,
                  int64_t window, int64_t sinks, float scale) {
  const int64_t B = q.size(0), H = q.size(1), T_ = q.size(2), D = q.size(3);
  const auto Q = bhtd<float>(q), K = bhtd<float>(k), V = bhtd<float>(v), O = bthd<float>(out);
  float* L = lse.data_ptr<float>();
  const int64_t block = query_block(window), chunk = 32;  // chunk: positions per work item, a multiple of block
  const int64_t chunks = (T_ + chunk - 1) / chunk;
  at::parallel_for(0, B * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> s(window + sinks);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / chunks, t0 = (item % chunks) * chunk, t1 = std::min(T_, t0 + chunk);
      for (int64_t tb = t0; tb < t1; tb += block) {
        for (int64_t h = 0; h < H; ++h) {
          const float* kb = K.row(b, h, 0);
          const float* vb = V.row(b, h, 0);
          for (int64_t t = tb; t < std::min(t1, tb + block); ++t) {
            if (t + block < T_) {
              for (const auto* X : {&Q, &K, &V, &O}) prefetch_row(X->row(b, h, t + block), D);
            }
            const Keys ks = keys_of(t, window, sinks);
            scores<DC>(Q.row(b, h, t), kb, K.st, ks, scale, s.data(), D);
            const float m = max_of(s.data(), ks.count);
            const float sum = exp_shifted(s.data(), ks.count, m);
            weighted_rows<DC>(s.data(), vb, V.st, ks, 1.0f / sum, O.row(b, h, t), D);
            L[(b * H + h) * T_ + t] = m + std::log(sum);
          }
        }
      }
    }
  });
}

// Flash-style, in tiles of kBackwardTile queries of one (batch, head). Per query: p (recomputed from the saved
// log-sum-exp), dS = p ∘ (dP − rowsum(dO ∘ O)) and dQ, as in the forward. Then per key that the tile's queries see,
// dV and dK sum over those queries in registers and touch the key's gradient rows once per tile (a row update per
// pair, two loads and a store per 8 floats, cost more than the rest of the backward together). Each thread owns a
// range of (batch, head) pairs, so no two threads write one row; it walks them tile-major, so consecutive tiles sit
// side by side in memory ([B, T, H, D]). Against the per-pair row updates it replaced: 40 instead of 75-88
// core-cycles per pair with all data in cache (1 thread, T = 512, one head); at T = 3072, 12 heads x 64, 2 threads,
// w = 16 took 19.2 instead of 22.2 ms and w = 64 39.7 instead of 48.3 (best of 15, both builds in one process).
// Tiles of 16, 32 and 64 queries were within noise of each other; the prefetch is worth ~20 % at w = 16.
constexpr int64_t kBackwardTile = 32;

template <int64_t DC>
void backward_impl(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                   const at::Tensor& out, const at::Tensor& lse, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv,
                   int64_t window, int64_t sinks, float scale) {
  const int64_t H = q.size(1), T_ = q.size(2), D = q.size(3);
  const auto Q = bhtd<float>(q), K = bhtd<float>(k), V = bhtd<float>(v);
  const auto O = bthd<float>(out), dO = bthd<float>(grad_out), dQ = bthd<float>(dq), dK = bthd<float>(dk),
             dV = bthd<float>(dv);
  const float* L = lse.data_ptr<float>();
  const int64_t width = window + sinks, tile = kBackwardTile;  // width: the most keys one query sees
  at::parallel_for(0, q.size(0) * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> P(tile * width), S(tile * width), cp(tile), cs(tile);
    std::vector<Keys> ks(tile);
    for (int64_t t0 = 0; t0 < T_; t0 += tile) {
      const int64_t t1 = std::min(T_, t0 + tile);
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        const float* kb = K.row(b, h, 0);
        const float* vb = V.row(b, h, 0);
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t r = t - t0;
          float* p = P.data() + r * width;
          float* ds = S.data() + r * width;
          const float* qt = Q.row(b, h, t);
          const float* gt = dO.row(b, h, t);
          // The next work unit's row for this position: the next head's (adjacent in memory), or after the last
          // head the first one's in the next tile. Rows are H·D floats apart, a stride no hardware prefetcher follows.
          const int64_t bn = bh + 1 < end ? bh + 1 : begin, tn = bh + 1 < end ? t : t + tile;
          if (tn < T_) {
            for (const auto* X : {&Q, &K, &V, &O, &dO}) prefetch_row(X->row(bn / H, bn % H, tn), D);
          }
          ks[r] = keys_of(t, window, sinks);
          const int64_t n = ks[r].count;
          const float delta = dot(gt, O.row(b, h, t), D);  // rowsum(dO ∘ O)
          scores<DC>(qt, kb, K.st, ks[r], scale, p, D);
          scores<DC>(gt, vb, V.st, ks[r], 1.0f, ds, D);
          exp_shifted(p, n, L[bh * T_ + t]);
          for (int64_t i = 0; i < n; ++i) ds[i] = p[i] * (ds[i] - delta);
          weighted_rows<DC>(ds, kb, K.st, ks[r], scale, dQ.row(b, h, t), D);
        }
        // The tile's keys: sinks below the first query's window, then [lo, t1). Key j is seen by queries
        // [max(t0, j), last] of the tile; rows of keys before t0 already hold earlier tiles' sums.
        const int64_t lo = std::max<int64_t>(0, t0 - window + 1);
        for (int64_t j = 0; j < t1; ++j) {
          if (j >= std::min(sinks, lo) && j < lo) j = lo;  // skip the keys no query of the tile sees
          const int64_t first = std::max(t0, j), last = j < sinks ? t1 - 1 : std::min(t1 - 1, j + window - 1);
          const int64_t n = last - first + 1;
          for (int64_t t = first; t <= last; ++t) {
            const Keys& kt = ks[t - t0];
            const int64_t i = j < kt.lo ? j : kt.n_sink + (j - kt.lo);  // j's place in query t's key list
            cp[t - first] = P[(t - t0) * width + i];
            cs[t - first] = S[(t - t0) * width + i];
          }
          // n consecutive positions' rows from `first`, summed into key j's rows (added to earlier tiles' sums)
          const float* g0 = dO.row(b, h, first);
          const float* q0 = Q.row(b, h, first);
          weighted_sum<DC>(cp.data(), n, [&](int64_t i) { return g0 + i * dO.st; }, 1.0f, dV.row(b, h, j), j < t0, D);
          weighted_sum<DC>(cs.data(), n, [&](int64_t i) { return q0 + i * Q.st; }, scale, dK.row(b, h, j), j < t0, D);
        }
      }
    }
  });
}

// ---- Tiled path: long windows and full causal attention, on BLAS tiles --------------------------------------------
//
// For windows of hundreds of keys the per-query loops above lose to GEMM: a tile of queries against a block of keys
// is one sgemm. This is flash attention's structure (scores of a query tile against key blocks, online softmax,
// recomputation from the log-sum-exp in the backward) with the key range of each query tile cut exactly to what its
// window sees: key blocks end at the tile's last query, so only the diagonal tile computes masked pairs (SDPA's CPU
// kernel walks fixed 512-key blocks and computes 1.5x the causal pairs at T = 1024). No sinks: windows with sink
// keys take the other paths.
//
// Determinism: threads split the forward by (batch, head, query tile) and the backward by (batch, head), and each
// item runs its GEMMs in a fixed order on one thread, so the result does not depend on the thread count.

namespace tiled {

// Row-major C[M, N] = alpha · op(A) · op(B) + beta · C, through the column-major BLAS (C^T = op(B)^T · op(A)^T).
inline void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
  const char a_t = tb ? 'T' : 'N', b_t = ta ? 'T' : 'N';
  sgemm_(&a_t, &b_t, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
}

// Tiles of 32-128 queries against key blocks of 128-512 ran within noise of each other at T = 1024, 4 heads x 32,
// fwd + bwd (16-17 ms against SDPA's 21-23 in the same process).
constexpr int64_t kQueryTile = 64, kKeyBlock = 256;  // lmask.flops.TILED_QUERY_TILE mirrors the first

// Runs f(begin, end) over [0, n) on torch's threads with BLAS single-threaded inside each.
template <typename F>
void parallel_blas(int64_t n, F&& f) {
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    const int before = MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : 0;
    f(begin, end);
    if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(before);
  });
}

// The keys query t sees inside the key block [n0, n1): [c0, c1) in block columns (empty when c0 >= c1).
inline void visible_cols(int64_t t, int64_t window, int64_t n0, int64_t n1, int64_t& c0, int64_t& c1) {
  c0 = std::max<int64_t>(0, t - window + 1 - n0);
  c1 = std::min<int64_t>(n1, t + 1) - n0;
}

void forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out, at::Tensor& lse,
             int64_t window, float scale) {
  const int64_t B = q.size(0), H = q.size(1), T_ = q.size(2), D = q.size(3);
  const auto Q = bhtd<float>(q), K = bhtd<float>(k), V = bhtd<float>(v), O = bthd<float>(out);
  float* L = lse.data_ptr<float>();
  const int64_t tiles = (T_ + kQueryTile - 1) / kQueryTile;
  parallel_blas(B * H * tiles, [&](int64_t begin, int64_t end) {
    std::vector<float> S(kQueryTile * kKeyBlock), acc(kQueryTile * D), m(kQueryTile), l(kQueryTile);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t bh = item / tiles, b = bh / H, h = bh % H;
      const int64_t t0 = (item % tiles) * kQueryTile, t1 = std::min(T_, t0 + kQueryTile), nq = t1 - t0;
      const int64_t lo = std::max<int64_t>(0, t0 - window + 1);
      std::fill(m.begin(), m.end(), -INFINITY);
      std::fill(l.begin(), l.end(), 0.0f);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t n0 = lo; n0 < t1; n0 += kKeyBlock) {
        const int64_t n1 = std::min(t1, n0 + kKeyBlock), nk = n1 - n0;
        gemm(false, true, nq, nk, D, scale, Q.row(b, h, t0), Q.st, K.row(b, h, n0), K.st, 0.0f, S.data(), nk);
        for (int64_t r = 0; r < nq; ++r) {
          float* s = S.data() + r * nk;
          int64_t c0, c1;
          visible_cols(t0 + r, window, n0, n1, c0, c1);
          if (c0 >= c1) {
            std::fill(s, s + nk, 0.0f);
            continue;
          }
          const float mx = std::max(m[r], max_of(s + c0, c1 - c0));
          const float alpha = m[r] == -INFINITY ? 0.0f : ::exp_nonpositive(m[r] - mx);
          std::fill(s, s + c0, 0.0f);
          std::fill(s + c1, s + nk, 0.0f);
          l[r] = l[r] * alpha + exp_shifted(s + c0, c1 - c0, mx);
          m[r] = mx;
          float* a = acc.data() + r * D;
          if (alpha != 1.0f) {
            for (int64_t d = 0; d < D; ++d) a[d] *= alpha;
          }
        }
        gemm(false, false, nq, D, nk, 1.0f, S.data(), nk, V.row(b, h, n0), V.st, 1.0f, acc.data(), D);
      }
      for (int64_t r = 0; r < nq; ++r) {
        const float inv = 1.0f / l[r];
        float* o = O.row(b, h, t0 + r);
        const float* a = acc.data() + r * D;
        for (int64_t d = 0; d < D; ++d) o[d] = a[d] * inv;
        L[bh * T_ + t0 + r] = m[r] + std::log(l[r]);
      }
    }
  });
}

void backward(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
              const at::Tensor& out, const at::Tensor& lse, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv,
              int64_t window, float scale) {
  const int64_t H = q.size(1), T_ = q.size(2), D = q.size(3);
  const auto Q = bhtd<float>(q), K = bhtd<float>(k), V = bhtd<float>(v);
  const auto O = bthd<float>(out), dO = bthd<float>(grad_out), dQ = bthd<float>(dq), dK = bthd<float>(dk),
             dV = bthd<float>(dv);
  const float* L = lse.data_ptr<float>();
  parallel_blas(q.size(0) * H, [&](int64_t begin, int64_t end) {
    std::vector<float> P(kQueryTile * kKeyBlock), dP(kQueryTile * kKeyBlock), delta(kQueryTile);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      for (int64_t t = 0; t < T_; ++t) {
        std::fill(dK.row(b, h, t), dK.row(b, h, t) + D, 0.0f);
        std::fill(dV.row(b, h, t), dV.row(b, h, t) + D, 0.0f);
      }
      for (int64_t t0 = 0; t0 < T_; t0 += kQueryTile) {
        const int64_t t1 = std::min(T_, t0 + kQueryTile), nq = t1 - t0;
        const int64_t lo = std::max<int64_t>(0, t0 - window + 1);
        for (int64_t r = 0; r < nq; ++r) delta[r] = dot(dO.row(b, h, t0 + r), O.row(b, h, t0 + r), D);
        for (int64_t n0 = lo; n0 < t1; n0 += kKeyBlock) {
          const int64_t n1 = std::min(t1, n0 + kKeyBlock), nk = n1 - n0;
          gemm(false, true, nq, nk, D, scale, Q.row(b, h, t0), Q.st, K.row(b, h, n0), K.st, 0.0f, P.data(), nk);
          gemm(false, true, nq, nk, D, 1.0f, dO.row(b, h, t0), dO.st, V.row(b, h, n0), V.st, 0.0f, dP.data(), nk);
          for (int64_t r = 0; r < nq; ++r) {
            float* p = P.data() + r * nk;
            float* ds = dP.data() + r * nk;
            int64_t c0, c1;
            visible_cols(t0 + r, window, n0, n1, c0, c1);
            c1 = std::max(c0, c1);
            std::fill(p, p + c0, 0.0f);
            std::fill(p + c1, p + nk, 0.0f);
            exp_shifted(p + c0, c1 - c0, L[bh * T_ + t0 + r]);
            const float dl = delta[r];
#pragma omp simd
            for (int64_t i = 0; i < nk; ++i) ds[i] = p[i] * (ds[i] - dl);
          }
          gemm(true, false, nk, D, nq, 1.0f, P.data(), nk, dO.row(b, h, t0), dO.st, 1.0f, dV.row(b, h, n0), dV.st);
          gemm(false, false, nq, D, nk, scale, dP.data(), nk, K.row(b, h, n0), K.st, n0 == lo ? 0.0f : 1.0f,
               dQ.row(b, h, t0), dQ.st);
          gemm(true, false, nk, D, nq, scale, dP.data(), nk, Q.row(b, h, t0), Q.st, 1.0f, dK.row(b, h, n0), dK.st);
        }
      }
    }
  });
}

}  // namespace tiled

template <typename F>
void with_head_size(int64_t D, F&& f) {  // D as a compile-time constant where the model uses it
  if (D == 64) f(std::integral_constant<int64_t, 64>{});
  else if (D == 32) f(std::integral_constant<int64_t, 32>{});
  else f(std::integral_constant<int64_t, 0>{});
}

}  // namespace avx2
#define LMASK_HAVE_AVX2 1
#else
#define LMASK_HAVE_AVX2 0
#endif

bool use_avx2(const at::Tensor& q) {
  return LMASK_HAVE_AVX2 && q.scalar_type() == at::kFloat && q.size(3) % 8 == 0;
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.device().is_cpu(), "band_attention: CPU tensors only");
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(),
              "band_attention: q, k, v must share one [B, H, T, D] shape");
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "band_attention: q, k, v must share one dtype");
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1,
              "band_attention: the head dimension must be contiguous");
}

std::vector<at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window,
                                int64_t sinks, double scale) {
  check_inputs(q, k, v);
  TORCH_CHECK(window >= 1 && sinks >= 0, "band_attention: window >= 1 and sinks >= 0");
  const int64_t B = q.size(0), H = q.size(1), T_ = q.size(2), D = q.size(3);
  auto out = at::empty({B, T_, H, D}, q.options());
  auto lse = at::empty({B, H, T_}, q.options());
#if LMASK_HAVE_AVX2
  if (use_avx2(q)) {
    avx2::with_head_size(D, [&](auto dc) { avx2::forward_impl<dc()>(q, k, v, out, lse, window, sinks, scale); });
    return {out, lse};
  }
#endif
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "band_forward",
                             [&] { forward_impl<scalar_t>(q, k, v, out, lse, window, sinks, scale); });
  return {out, lse};
}

std::vector<at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                                 const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse, int64_t window,
                                 int64_t sinks, double scale) {
  check_inputs(q, k, v);
  auto g = grad_out.stride(3) == 1 ? grad_out : grad_out.contiguous();
  auto dq = at::empty_like(out, at::MemoryFormat::Contiguous);
  auto dk = at::empty_like(dq), dv = at::empty_like(dq);
#if LMASK_HAVE_AVX2
  if (use_avx2(q)) {
    avx2::with_head_size(q.size(3), [&](auto dc) {
      avx2::backward_impl<dc()>(g, q, k, v, out, lse, dq, dk, dv, window, sinks, scale);
    });
    return {dq, dk, dv};
  }
#endif
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "band_backward", [&] {
    backward_impl<scalar_t>(g, q, k, v, out, lse, dq, dk, dv, window, sinks, scale);
  });
  return {dq, dk, dv};
}

bool tiled_supported() { return LMASK_HAVE_AVX2 && sgemm_ != nullptr; }

void check_tiled(const at::Tensor& q, int64_t window) {
  TORCH_CHECK(tiled_supported() && q.scalar_type() == at::kFloat,
              "tiled_attention: float32, on an AVX2 build with torch's BLAS, only");
  TORCH_CHECK(window >= 1, "tiled_attention: window >= 1");
}

std::vector<at::Tensor> tiled_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t window,
                                      double scale) {
  check_inputs(q, k, v);
  check_tiled(q, window);
  const int64_t B = q.size(0), H = q.size(1), T_ = q.size(2), D = q.size(3);
  auto out = at::empty({B, T_, H, D}, q.options());
  auto lse = at::empty({B, H, T_}, q.options());
#if LMASK_HAVE_AVX2
  avx2::tiled::forward(q, k, v, out, lse, window, scale);
#endif
  return {out, lse};
}

std::vector<at::Tensor> tiled_backward(const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
                                       const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                       int64_t window, double scale) {
  check_inputs(q, k, v);
  check_tiled(q, window);
  auto g = grad_out.stride(3) == 1 ? grad_out : grad_out.contiguous();
  auto dq = at::empty_like(out, at::MemoryFormat::Contiguous);
  auto dk = at::empty_like(dq), dv = at::empty_like(dq);
#if LMASK_HAVE_AVX2
  avx2::tiled::backward(g, q, k, v, out, lse, dq, dk, dv, window, scale);
#endif
  return {dq, dk, dv};
}

}  // namespace

// torch.ops.lmask.band_forward / band_backward (per-query, small windows) and tiled_forward / tiled_backward (GEMM
// tiles, long windows and full causal); lmask.band wraps each pair in an autograd.Function.
TORCH_LIBRARY(lmask, m) {
  m.def("band_forward", &forward);
  m.def("band_backward", &backward);
  m.def("tiled_supported", &tiled_supported);
  m.def("tiled_forward", &tiled_forward);
  m.def("tiled_backward", &tiled_backward);
}
