// The LSTM of eqs. (1)-(4) over a time-major packed layout, the cell fused: rrnx/models/rrn/fused.py
// builds this file with torch.utils.cpp_extension at first use. Also the backward of eq. (5)'s rating
// embedding (`bag_backward`), eq. (7)'s per-rating inner products (`pair_dots`) and the per-rating gather
// of a batch (`gather_ratings`), at the end.
//
// Per step, each thread takes a range of the step's rows (at::parallel_for: torch's own OpenMP runtime
// and thread count) and computes the recurrent product W_hh h_{t-1} of its rows (an MKL matmul), then,
// in ONE pass over its rows of the (bs, 4H) gate block, the four gate nonlinearities, eq. (3)'s cell
// update, eq. (4)'s output and every factor of the gate gradients that does not depend on the
// recurrence. The backward step is one pass too, then the step's two matmuls on the same rows. Gate
// order and parameters are nn.LSTM's (i, f, g, o).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

// Rows per thread chunk: a (row, 4H) block with H = 40 is ~100 ns of work; smaller steps run on one thread.
constexpr int64_t kGrainRows = 256;
// Per-rating loops prefetch the randomly placed rows they will read this many ratings ahead.
constexpr int64_t kAhead = 16;

// e^x in float without a libm call, so that the row loops vectorise: Cephes's expf (2^n p(r),
// |r| <= ln2 / 2, relative error ~1e-7), clamped to float's range. It vectorises only with
// -fno-trapping-math (fused.py's flags): otherwise GCC keeps floor and the int conversion scalar.
inline float exp_approx(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);  // a NaN stays NaN (fmin would drop it)
  float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float z = r * r;
  float p = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r
             + 1.6666665459e-1f) * r + 5.0000001201e-1f;
  p = p * z + r + 1.0f;
  // 2^n; the builtin (GCC >= 11, clang >= 9), not C++20's std::bit_cast: torch < 2.13 builds extensions as
  // C++17: std::bit_cast failed to compile under torch 2.11 on the H200 machine
  return p * __builtin_bit_cast(float, (static_cast<int32_t>(n) + 127) << 23);
}

inline float exp_of(float x) { return exp_approx(x); }
inline double exp_of(double x) { return std::exp(x); }  // double: gradcheck's precision, not speed

template <typename T>
inline T sigmoid(T x) { return T(1) / (T(1) + exp_of(-x)); }

template <typename T>
inline T tanh_of(T x) { return T(2) / (T(1) + exp_of(T(-2) * x)) - T(1); }  // = tanh x

// One forward step over local rows [begin, end): gates (bs, 4H) hold the pre-activations without
// the bias, which is added here (bias (4H,) = b_ih + b_hh: one pass over the block less than a
// broadcast bias in the input matmul, which writes the whole (R, 4H) block once more); c_prev
// (bs', H) the cells of step t-1 (FIRST: c_0 = 0). Writes c (cells), h (states) and, with GRAD,
// turns the gate block into the factors d(gate pre-activation) / d(c or h) and writes f and
// o (1 - tanh^2 c) = dh -> dc, so that the backward step is products only.
template <typename T, bool FIRST, bool GRAD>
void forward_rows(T* gates, const T* bias, const T* c_prev, T* c, T* h, T* forget, T* dc_factor, int64_t begin,
                  int64_t end, int64_t H) {
  for (int64_t r = begin; r < end; ++r) {
    T* g = gates + (r - begin) * 4 * H;  // gates: the block of row `begin`
    const T* cp = FIRST ? nullptr : c_prev + r * H;
    T* cr = c + r * H;
    T* hr = h + r * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      T i = sigmoid(g[j] + bias[j]), f = sigmoid(g[H + j] + bias[H + j]);
      T gg = tanh_of(g[2 * H + j] + bias[2 * H + j]), o = sigmoid(g[3 * H + j] + bias[3 * H + j]);
      T previous = FIRST ? T(0) : cp[j];
      T cell = f * previous + i * gg;  // eq. (3)
      T tc = tanh_of(cell);
      cr[j] = cell;
      hr[j] = o * tc;  // eq. (4)
      if (GRAD) {
        g[j] = i * (T(1) - i) * gg;            // dc -> d z_i
        g[H + j] = f * (T(1) - f) * previous;  // dc -> d z_f
        g[2 * H + j] = i * (T(1) - gg * gg);   // dc -> d z_g
        g[3 * H + j] = o * (T(1) - o) * tc;    // dh -> d z_o
        forget[r * H + j] = f;
        dc_factor[r * H + j] = o * (T(1) - tc * tc);
      }
    }
  }
}

// W_ih x of the n rows of x (R, E) from `row`, into g (n, 4H), with the bits the same rows of one (R, 4H)
// product have: MKL's sgemm gives a row the same bits whatever the number of rows M except below 4 rows
// (measured with torch 2.13 on AVX-512: rows 1-3 take another kernel), so a smaller block is cut from a
// product over 4 rows around it (over all of x when it has fewer).
void input_part(torch::Tensor g, const torch::Tensor& x, int64_t row, int64_t n, const torch::Tensor& w_it) {
  constexpr int64_t kSameBitsRows = 4;
  if (n >= kSameBitsRows) {
    at::mm_out(g, x.narrow(0, row, n), w_it);
    return;
  }
  const int64_t m = std::min<int64_t>(kSameBitsRows, x.size(0)), start = std::min(row, x.size(0) - m);
  g.copy_(at::mm(x.narrow(0, start, m), w_it).narrow(0, row - start, n));
}

// One forward step: each thread takes one range of the step's rows and does all of the step's work on
// them, the recurrent product W_hh h_{t-1} of its rows (one single-threaded MKL call inside the parallel
// region) and then the cell, so a step opens one parallel region, not two (with OMP_WAIT_POLICY=PASSIVE,
// rrnx's thread policy, each region wakes sleeping threads), and the rows the matmul wrote are still in
// this core's cache when the cell reads them. w_t: W_hh^T (H, 4H), detached (worker threads keep
// autograd's default grad mode); h_prev: the (size, H) states of step t - 1's first rows (FIRST: none).
// Without GRAD (the no-grad passes: state caches, evaluation) nothing keeps the gate block, so `gates` is a
// scratch block (first, 4H) reused by every step, and each thread first writes the input part W_ih x_t of
// its rows there (x: all rows, detached; offset: the step's first row; w_it: W_ih^T (E, 4H)): no (R, 4H)
// block is written to memory and read back. At 200k rows a fresh one is 128 MB, and where freed memory
// goes back to the system its pages fault on first touch: over the bench's user steps the pass that wrote
// it took 1.58x as long as this one there, 1.22x in training, which keeps freed memory (docs/benchmarks.md,
// "The no-grad passes").
template <typename T, bool FIRST, bool GRAD>
void forward_step(const torch::Tensor& gates, const torch::Tensor& x, int64_t offset, const torch::Tensor& w_it,
                  const torch::Tensor& h_prev, const torch::Tensor& w_t, const T* bias, const T* c_prev, T* c, T* h,
                  T* forget, T* dc_factor, int64_t size, int64_t H) {
  at::parallel_for(0, size, kGrainRows, [&](int64_t begin, int64_t end) {
    auto g = gates.narrow(0, begin, end - begin);
    if (!GRAD) input_part(g, x, offset + begin, end - begin, w_it);
    if (!FIRST) g.addmm_(h_prev.narrow(0, begin, end - begin), w_t);
    forward_rows<T, FIRST, GRAD>(g.data_ptr<T>(), bias, c_prev, c, h, forget, dc_factor, begin, end, H);
  });
}

// One backward step over local rows [begin, end): dh = dL/dh_t (its own rating gradient + the
// recurrence's, dh_next), dc = dc_next + dh o (1 - tanh^2 c); the gate gradients are the saved
// factors times dc (i, f, g) or dh (o); dc_next becomes dc f, for step t - 1. The gate gradients
// are also added to d_bias (4H,), this thread's own accumulator, while they are in registers.
template <typename T>
void backward_rows(const T* factors, const T* forget, const T* dc_factor, const T* d_states, const T* dh_next,
                   T* dc_next, T* d_gates, T* d_bias, int64_t begin, int64_t end, int64_t H) {
  for (int64_t r = begin; r < end; ++r) {
    const T* fac = factors + r * 4 * H;
    T* dg = d_gates + r * 4 * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      T dh = d_states[r * H + j] + dh_next[r * H + j];
      T dc = dc_next[r * H + j] + dh * dc_factor[r * H + j];
      dg[j] = fac[j] * dc;
      dg[H + j] = fac[H + j] * dc;
      dg[2 * H + j] = fac[2 * H + j] * dc;
      dg[3 * H + j] = fac[3 * H + j] * dh;
      dc_next[r * H + j] = dc * forget[r * H + j];
      d_bias[j] += dg[j];
      d_bias[H + j] += dg[H + j];
      d_bias[2 * H + j] += dg[2 * H + j];
      d_bias[3 * H + j] += dg[3 * H + j];
    }
  }
}

std::vector<int64_t> step_sizes(const torch::Tensor& batch_sizes) {
  TORCH_CHECK(batch_sizes.device().is_cpu() && batch_sizes.scalar_type() == torch::kInt64,
              "batch_sizes must be a CPU int64 tensor");
  auto sizes = batch_sizes.contiguous();
  return std::vector<int64_t>(sizes.data_ptr<int64_t>(), sizes.data_ptr<int64_t>() + sizes.numel());
}

// h_t of every packed row (R, H) and, with grad, what the backward needs: the gate factors (R, 4H),
// f (R, H) and dh -> dc (R, H). x (R, E), w_ih (4H, E), bias (4H,) = b_ih + b_hh, w_hh (4H, H).
std::vector<torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& w_ih, const torch::Tensor& bias,
                                   const torch::Tensor& w_hh, const torch::Tensor& batch_sizes, bool grad) {
  TORCH_CHECK(x.device().is_cpu(), "the fused LSTM cell runs on the CPU");
  const auto sizes = step_sizes(batch_sizes);
  const int64_t n_rows = x.size(0), H = w_hh.size(1), first = sizes.empty() ? 0 : sizes[0];
  // (R, 4H): eqs. (1)-(2)'s input part, all steps (bias: below); without grad a (first, 4H) scratch block
  auto gates = grad ? at::mm(x, w_ih.t()).contiguous() : torch::empty({first, 4 * H}, x.options());
  auto x_in = x.detach();  // detached, as w_it and w_t: the worker threads' matmuls read them
  auto w_it = w_ih.detach().t();  // (E, 4H)
  auto b = bias.contiguous();
  auto states = torch::empty({n_rows, H}, x.options());
  auto forget = grad ? torch::empty({n_rows, H}, x.options()) : torch::empty({0}, x.options());
  auto dc_factor = grad ? torch::empty({n_rows, H}, x.options()) : torch::empty({0}, x.options());
  // c_t is needed only by step t + 1: two alternating (first, H) buffers, not (R, H)
  auto cells = torch::empty({2, first, H}, x.options());
  auto w_t = w_hh.detach().t();  // (H, 4H)
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rrnx_lstm_forward", [&] {
    int64_t offset = 0, previous = 0;
    for (size_t t = 0; t < sizes.size(); ++t) {
      const int64_t size = sizes[t];
      auto g = gates.narrow(0, grad ? offset : 0, size);  // + W_hh h_{t-1} (h_0 = 0), in forward_step
      auto h_prev = states.narrow(0, previous, size);
      scalar_t* c = cells[t % 2].data_ptr<scalar_t>();
      const scalar_t* c_prev = cells[(t + 1) % 2].data_ptr<scalar_t>();
      scalar_t* h = states.data_ptr<scalar_t>() + offset * H;
      scalar_t* fp = grad ? forget.data_ptr<scalar_t>() + offset * H : nullptr;
      scalar_t* dp = grad ? dc_factor.data_ptr<scalar_t>() + offset * H : nullptr;
      const scalar_t* bp = b.data_ptr<scalar_t>();
      auto step = t == 0 ? (grad ? forward_step<scalar_t, true, true> : forward_step<scalar_t, true, false>)
                         : (grad ? forward_step<scalar_t, false, true> : forward_step<scalar_t, false, false>);
      step(g, x_in, offset, w_it, h_prev, w_t, bp, c_prev, c, h, fp, dp, size, H);
      previous = offset;
      offset += size;
    }
  });
  return {states, grad ? gates : torch::empty({0}, x.options()), forget, dc_factor};
}

// dL/d(gate pre-activations) (R, 4H) from dL/dh_t of every row, by backpropagation through time, and
// the two weight gradients that need the steps apart: d W_hh (4H, H), step t's gate gradients times the
// states of step t - 1 (the first `size` rows of that step in the packed layout: no gather), and d bias
// (4H,). As in the forward, each thread does a step's whole work on its range of rows in one parallel
// region: the row pass, then dh_{t-1} = dg_t W_hh for its rows and dg_t^T h_{t-1} added to its own
// d W_hh accumulator (single-threaded MKL calls; the bias sums are added by the row pass). The per-thread
// accumulators are added in thread order at the end: the result depends on the thread count, not on
// the run.
std::vector<torch::Tensor> backward(const torch::Tensor& d_states_in, const torch::Tensor& factors,
                                    const torch::Tensor& forget, const torch::Tensor& dc_factor,
                                    const torch::Tensor& w_hh_in, const torch::Tensor& states_in,
                                    const torch::Tensor& batch_sizes) {
  const auto sizes = step_sizes(batch_sizes);
  const int64_t H = w_hh_in.size(1), first = sizes.empty() ? 0 : sizes[0];
  // detached: the worker threads' matmuls must not record autograd history (their grad mode is the default)
  auto d_states = d_states_in.contiguous(), w_hh = w_hh_in.detach(), states = states_in.detach();
  auto d_gates = torch::empty_like(factors);
  auto dh_next = torch::zeros({first, H}, factors.options());  // rows past a step's size stay 0
  auto dc_next = torch::zeros({first, H}, factors.options());
  const int64_t threads = at::get_num_threads();
  auto bias_parts = torch::zeros({threads, 4 * H}, factors.options());  // one accumulator per thread
  auto w_parts = torch::zeros({threads, 4 * H, H}, factors.options());
  std::vector<torch::Tensor> w_part;  // thread i's (4H, H) view, made once
  for (int64_t i = 0; i < threads; ++i) w_part.push_back(w_parts[i]);
  std::vector<int64_t> starts(sizes.size(), 0);
  for (size_t t = 1; t < sizes.size(); ++t) starts[t] = starts[t - 1] + sizes[t - 1];
  AT_DISPATCH_FLOATING_TYPES(factors.scalar_type(), "rrnx_lstm_backward", [&] {
    for (int64_t t = static_cast<int64_t>(sizes.size()) - 1; t >= 0; --t) {
      const int64_t size = sizes[t], offset = starts[t] * H;
      const scalar_t* fac = factors.data_ptr<scalar_t>() + offset * 4;
      const scalar_t* fp = forget.data_ptr<scalar_t>() + offset;
      const scalar_t* dp = dc_factor.data_ptr<scalar_t>() + offset;
      const scalar_t* ds = d_states.data_ptr<scalar_t>() + offset;
      const scalar_t* dh = dh_next.data_ptr<scalar_t>();
      scalar_t* dc = dc_next.data_ptr<scalar_t>();
      scalar_t* dg = d_gates.data_ptr<scalar_t>() + offset * 4;
      scalar_t* parts = bias_parts.data_ptr<scalar_t>();
      at::parallel_for(0, size, kGrainRows, [&](int64_t begin, int64_t end) {
        const int64_t thread = at::get_thread_num();
        backward_rows<scalar_t>(fac, fp, dp, ds, dh, dc, dg, parts + thread * 4 * H, begin, end, H);
        if (t > 0) {  // (this thread's dh_next rows were read above, for step t; now step t - 1's)
          auto step = d_gates.narrow(0, starts[t] + begin, end - begin);  // (n, 4H)
          w_part[thread].addmm_(step.t(), states.narrow(0, starts[t - 1] + begin, end - begin));  // dg^T h_{t-1}
          auto dh_rows = dh_next.narrow(0, begin, end - begin);
          at::mm_out(dh_rows, step, w_hh);  // W_hh^T dg -> dh_{t-1}
        }
      });
    }
  });
  return {d_gates, w_parts.sum(0), bias_parts.sum(0)};
}

// out (n_out, E): row index[k] gains w[k] * source[source_index[k]] for every k, in k order (w = 1 without
// weights). torch's CPU kernels for this (EmbeddingBag's backward: one BLAS axpy call per rating, 40 floats
// each, the call overhead most of the time; index_add_ of a materialised (N, E) product) are slower; this is
// one vectorised loop. With T threads each owns a contiguous range of out's rows and scans all k: no two
// threads write one row, and every row sums in k order whatever T is (the result does not depend on it).
// BIAS: source's last column is a bias added to the product (pair_dots' `bias`): out's last column gains w[k].
template <typename T, bool BIAS>
void add_rows(const T* source, const int64_t* source_index, const T* weights, const int64_t* index, T* out,
              int64_t n, int64_t low, int64_t high, int64_t E) {
  for (int64_t k = 0; k < n; ++k) {
    const int64_t row = index[k];
    if (row < low || row >= high) continue;
    // either side may be the randomly placed one (bag_backward: the target): both ends of each row, as
    // pair_dots, and only for rows this thread owns: a prefetch-for-write of another thread's row pulls its
    // cache line away from the core writing it (RatingBag's backward ran 3x slower on 2 threads than on 1)
    if (k + kAhead < n && index[k + kAhead] >= low && index[k + kAhead] < high) {
      const T* from_next = source + (source_index ? source_index[k + kAhead] : k + kAhead) * E;
      T* target_next = out + index[k + kAhead] * E;
      __builtin_prefetch(from_next);
      __builtin_prefetch(from_next + E - 1);
      __builtin_prefetch(target_next, 1);
      __builtin_prefetch(target_next + E - 1, 1);
    }
    const T w = weights ? weights[k] : T(1);
    const T* from = source + (source_index ? source_index[k] : k) * E;
    T* target = out + row * E;
    const int64_t width = BIAS ? E - 1 : E;
#pragma omp simd
    for (int64_t j = 0; j < width; ++j) target[j] += w * from[j];
    if (BIAS) target[E - 1] += w;
  }
}

// out (n_out, E) += the sums above, in place; source (n_source, E), source_index and index (N,) any integer
// type, weights (N,) or empty (all 1). bias: out's last column gains the weight alone (the gradient of
// pair_dots' bias columns).
void add_row_sums(torch::Tensor& out, const torch::Tensor& source_in, const torch::Tensor& source_index_in,
                  const torch::Tensor& weights_in, const torch::Tensor& index_in, bool bias) {
  TORCH_CHECK(source_in.device().is_cpu() && source_in.dim() == 2, "row_sums: a 2-D CPU source");
  auto source = source_in.contiguous();
  auto index = index_in.to(torch::kInt64).contiguous();
  auto source_index = source_index_in.to(torch::kInt64).contiguous();
  const bool identity = source_index.numel() == 0;  // source row k for rating k (pair_dots' saved rows)
  TORCH_CHECK(identity ? source.size(0) == index.numel() : index.numel() == source_index.numel(),
              "row_sums: one source row per index");
  const bool weighted = weights_in.numel() > 0;
  auto weights = weighted ? weights_in.to(source.scalar_type()).contiguous() : weights_in;
  TORCH_CHECK(!weighted || weights.numel() == index.numel(), "row_sums: one weight per index");
  TORCH_CHECK(!bias || source.size(1) > 0, "row_sums: a bias column needs a non-empty row");
  TORCH_CHECK(out.device().is_cpu() && out.dim() == 2 && out.is_contiguous() && out.size(1) == source.size(1)
              && out.scalar_type() == source.scalar_type(), "row_sums: out must be a contiguous (n_out, E) table");
  const int64_t E = source.size(1), n = index.numel(), n_out = out.size(0);
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_out));
  AT_DISPATCH_FLOATING_TYPES(source.scalar_type(), "rrnx_row_sums", [&] {
    const scalar_t* wp = weighted ? weights.data_ptr<scalar_t>() : nullptr;
    const int64_t* sp = identity ? nullptr : source_index.data_ptr<int64_t>();
    at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
      for (int64_t part = begin; part < end; ++part) {
        const int64_t low = n_out * part / parts, high = n_out * (part + 1) / parts;
        if (bias) add_rows<scalar_t, true>(source.data_ptr<scalar_t>(), sp, wp, index.data_ptr<int64_t>(),
                                           out.data_ptr<scalar_t>(), n, low, high, E);
        else add_rows<scalar_t, false>(source.data_ptr<scalar_t>(), sp, wp, index.data_ptr<int64_t>(),
                                       out.data_ptr<scalar_t>(), n, low, high, E);
      }
    });
  });
}

torch::Tensor row_sums(const torch::Tensor& source, const torch::Tensor& source_index, const torch::Tensor& weights,
                       const torch::Tensor& index, int64_t n_out, bool bias) {
  TORCH_CHECK(source.dim() == 2, "row_sums: a 2-D CPU source");
  auto out = torch::zeros({n_out, source.size(1)}, source.options());
  add_row_sums(out, source, source_index, weights, index, bias);
  return out;
}

// dL/dW_embed of eq. (5)'s x_t columns (EmbeddingBag, mode sum, per-rating weights): table row index[n]
// gains weights[n] * grad[bag[n]] for every rating n. grad (bags, E), index and bag (N,), weights (N,) or
// empty (all 1); returns (n_table, E).
torch::Tensor bag_backward(const torch::Tensor& grad, const torch::Tensor& index, const torch::Tensor& bag,
                           const torch::Tensor& weights, int64_t n_table) {
  return row_sums(grad, bag, weights, index, n_table, false);
}

// The same gradient added into `table` (n_table, E) in place: a batch trained in parts sums its parts'
// gradients into the weight's .grad without a zeroed table and a table-sized add per part.
void bag_backward_into(torch::Tensor table, const torch::Tensor& grad, const torch::Tensor& index,
                       const torch::Tensor& bag, const torch::Tensor& weights) {
  add_row_sums(table, grad, bag, weights, index, false);
}

// Eq. (7)'s two inner products for every rating n, in one pass and without (N, D) temporaries:
//   out[n] = <a[ia[n]], b[ib[n]]> + <c[ic[n]], d[id[n]]>
// a: this side's projected states (rows, D), c: its stationary factors (entities, k), both with gradients;
// b, d: the other side's cached states and factors, frozen in the phase. Index tensors (N,) int64.
// BIAS (RRN's dynamic_bias): the states' last column is each side's dynamic bias, added, not multiplied:
//   out[n] = <a[ia[n], :D-1], b[ib[n], :D-1]> + a[ia[n], D-1] + b[ib[n], D-1] + <c[ic[n]], d[id[n]]>
template <typename T, bool BIAS>
void pair_dots_rows(const T* a, const int64_t* ia, const T* b, const int64_t* ib, const T* c, const int64_t* ic,
                    const T* d, const int64_t* id, T* out, T* saved, int64_t begin, int64_t end, int64_t D,
                    int64_t K) {
  for (int64_t n = begin; n < end; ++n) {
    if (n + kAhead < end) {  // the other side's rows are random: ask for them early (a row of 20 floats
      const T* bn = b + ib[n + kAhead] * D;  // spans two cache lines unless aligned: both ends)
      const T* dn = d + id[n + kAhead] * K;
      __builtin_prefetch(bn);
      __builtin_prefetch(bn + D - 1);
      __builtin_prefetch(dn);
      __builtin_prefetch(dn + K - 1);
    }
    const T* ar = a + ia[n] * D;
    const T* br = b + ib[n] * D;
    const T* cr = c + ic[n] * K;
    const T* dr = d + id[n] * K;
    const int64_t width = BIAS ? D - 1 : D;
    T dynamic = 0, stationary = 0;
#pragma omp simd reduction(+ : dynamic)
    for (int64_t j = 0; j < width; ++j) dynamic += ar[j] * br[j];
    if (BIAS) dynamic = dynamic + ar[D - 1] + br[D - 1];
#pragma omp simd reduction(+ : stationary)
    for (int64_t j = 0; j < K; ++j) stationary += cr[j] * dr[j];
    out[n] = dynamic + stationary;
    if (saved)  // the other side's row, for the backward to read in order instead of at random
      for (int64_t j = 0; j < D; ++j) saved[n * D + j] = br[j];
  }
}

void check_table(const torch::Tensor& rows, const torch::Tensor& index, const char* name) {
  TORCH_CHECK(rows.device().is_cpu() && rows.dim() == 2, "pair_dots: ", name, " must be a 2-D CPU tensor");
  TORCH_CHECK(index.scalar_type() == torch::kInt64 && index.dim() == 1, "pair_dots: ", name,
              "'s index must be 1-D int64");
}

// Returns out (N,) and, with `save`, the other side's row of every rating (N, D) in rating order: written
// while the row is in cache, it lets the backward's row sums read in order what it would read at random
// (at Netflix-full scale the item phase's b is the 845 MB user-state cache).
std::vector<torch::Tensor> pair_dots(const torch::Tensor& a_in, const torch::Tensor& ia_in, const torch::Tensor& b_in,
                                     const torch::Tensor& ib_in, const torch::Tensor& c_in, const torch::Tensor& ic_in,
                                     const torch::Tensor& d_in, const torch::Tensor& id_in, bool bias, bool save) {
  check_table(a_in, ia_in, "a"); check_table(b_in, ib_in, "b"); check_table(c_in, ic_in, "c");
  check_table(d_in, id_in, "d");
  auto a = a_in.contiguous(), b = b_in.contiguous(), c = c_in.contiguous(), d = d_in.contiguous();
  auto ia = ia_in.contiguous(), ib = ib_in.contiguous(), ic = ic_in.contiguous(), id = id_in.contiguous();
  const int64_t n = ia.numel(), D = a.size(1), K = c.size(1);
  TORCH_CHECK(b.size(1) == D && d.size(1) == K && ib.numel() == n && ic.numel() == n && id.numel() == n,
              "pair_dots: mismatched widths or index lengths");
  TORCH_CHECK(!bias || D > 0, "pair_dots: a bias column needs a non-empty state row");
  auto out = torch::empty({n}, a.options());
  auto saved = save ? torch::empty({n, D}, a.options()) : torch::empty({0, D}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "rrnx_pair_dots", [&] {
    at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
      auto rows = bias ? pair_dots_rows<scalar_t, true> : pair_dots_rows<scalar_t, false>;
      rows(a.data_ptr<scalar_t>(), ia.data_ptr<int64_t>(), b.data_ptr<scalar_t>(), ib.data_ptr<int64_t>(),
           c.data_ptr<scalar_t>(), ic.data_ptr<int64_t>(), d.data_ptr<scalar_t>(), id.data_ptr<int64_t>(),
           out.data_ptr<scalar_t>(), save ? saved.data_ptr<scalar_t>() : nullptr, begin, end, D, K);
    });
  });
  return {out, saved};
}

// RRN's per-rating gather (sequences.gather) in one pass: for a batch's rows (R,) (global row ids, entity-major)
// with the local entity of each row_entity (R,) and where each row's ratings start in the output, out_start
// (R,), every rating of every row in order: its global id, local row and local entity (N,) int64, its
// other-side index (N,) int64 from `other` (int32 or int64), its value (N,) from `value`, its row's rating
// count (N,) float (eq. (5)'s input_norm) and, when `other_row` is defined, its row on the other side (N,)
// int64. Without `ids` (the no-grad passes, which need none of them) the ids, local rows and local entities
// are not written (empty). The torch ops this replaces (a ranges construction, two repeat_interleaves, four
// index_selects and two widenings) each make a pass over N.
template <typename I, typename J>
void gather_rows(const int64_t* rating_offsets, const int64_t* rows, const int64_t* row_entity,
                 const int64_t* out_start, const I* other, const float* value, const J* other_row,
                 int64_t* ratings, int64_t* rating_row, int64_t* rating_entity, int64_t* other_out,
                 float* value_out, float* count_out, int64_t* other_row_out, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const int64_t first = rating_offsets[rows[r]], count = rating_offsets[rows[r] + 1] - first;
    const int64_t o = out_start[r], entity = row_entity[r];
    if (ratings)
      for (int64_t j = 0; j < count; ++j) {
        ratings[o + j] = first + j;
        rating_row[o + j] = r;
        rating_entity[o + j] = entity;
      }
    for (int64_t j = 0; j < count; ++j) {
      other_out[o + j] = static_cast<int64_t>(other[first + j]);
      value_out[o + j] = value[first + j];
      count_out[o + j] = static_cast<float>(count);
    }
    if (other_row_out)
      for (int64_t j = 0; j < count; ++j) other_row_out[o + j] = static_cast<int64_t>(other_row[first + j]);
  }
}

std::vector<torch::Tensor> gather_ratings(const torch::Tensor& rating_offsets, const torch::Tensor& rows,
                                          const torch::Tensor& row_entity, const torch::Tensor& out_start,
                                          int64_t n, const torch::Tensor& other, const torch::Tensor& value,
                                          const torch::Tensor& other_row, bool ids) {
  for (const auto* t : {&rating_offsets, &rows, &row_entity, &out_start})
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == torch::kInt64 && t->dim() == 1 && t->is_contiguous(),
                "gather_ratings: offsets, rows, row entities and output starts must be contiguous 1-D CPU int64");
  TORCH_CHECK(row_entity.numel() == rows.numel() && out_start.numel() == rows.numel(),
              "gather_ratings: one entity and one output start per row");
  TORCH_CHECK(value.scalar_type() == torch::kFloat32 && value.is_contiguous() && other.is_contiguous(),
              "gather_ratings: contiguous other indices and float32 values");
  const bool with_other_row = other_row.defined() && other_row.numel() > 0;
  const auto long_options = rows.options();
  const int64_t n_ids = ids ? n : 0;
  auto ratings = torch::empty({n_ids}, long_options), rating_row = torch::empty({n_ids}, long_options);
  auto rating_entity = torch::empty({n_ids}, long_options), other_out = torch::empty({n}, long_options);
  auto value_out = torch::empty({n}, value.options()), count_out = torch::empty({n}, value.options());
  auto other_row_out = with_other_row ? torch::empty({n}, long_options) : torch::empty({0}, long_options);
  auto run = [&](auto* other_ptr, auto* other_row_ptr) {
    at::parallel_for(0, rows.numel(), kGrainRows, [&](int64_t begin, int64_t end) {
      gather_rows(rating_offsets.data_ptr<int64_t>(), rows.data_ptr<int64_t>(), row_entity.data_ptr<int64_t>(),
                  out_start.data_ptr<int64_t>(), other_ptr, value.data_ptr<float>(), other_row_ptr,
                  ids ? ratings.data_ptr<int64_t>() : nullptr, ids ? rating_row.data_ptr<int64_t>() : nullptr,
                  ids ? rating_entity.data_ptr<int64_t>() : nullptr,
                  other_out.data_ptr<int64_t>(), value_out.data_ptr<float>(), count_out.data_ptr<float>(),
                  with_other_row ? other_row_out.data_ptr<int64_t>() : nullptr, begin, end);
    });
  };
  auto with_other = [&](auto* other_row_ptr) {
    if (other.scalar_type() == torch::kInt32) run(other.data_ptr<int32_t>(), other_row_ptr);
    else if (other.scalar_type() == torch::kInt64) run(other.data_ptr<int64_t>(), other_row_ptr);
    else TORCH_CHECK(false, "gather_ratings: other indices must be int32 or int64");
  };
  if (!with_other_row) with_other(static_cast<const int32_t*>(nullptr));
  else {
    TORCH_CHECK(other_row.is_contiguous() && other_row.numel() == other.numel(),
                "gather_ratings: one contiguous other row per rating");
    if (other_row.scalar_type() == torch::kInt32) with_other(other_row.data_ptr<int32_t>());
    else if (other_row.scalar_type() == torch::kInt64) with_other(other_row.data_ptr<int64_t>());
    else TORCH_CHECK(false, "gather_ratings: other rows must be int32 or int64");
  }
  return {ratings, rating_row, rating_entity, other_out, value_out, count_out, other_row_out};
}

// A stable partition of the ratings by where they read the other side's tables: the order (N,) int64 that
// lists first every rating whose key (its row of a (n_keys, ...) table, keys (N,) int64 in [0, n_keys)) lies in
// the table's first of `blocks` equal slices, then the second slice's, and so on; within a slice, in their
// given order. One counting pass and one scatter. Read in this order, a phase's random reads of a table far
// larger than the cache (the item phase's 845 MB user-state cache at Netflix-full scale) stay inside one
// cache-sized slice at a time (PairDots and RatingBag's backward, sequences.py's sliced_ratings).
torch::Tensor partition_order(const torch::Tensor& keys_in, int64_t n_keys, int64_t blocks) {
  TORCH_CHECK(keys_in.device().is_cpu() && keys_in.dim() == 1, "partition_order: 1-D CPU keys");
  TORCH_CHECK(n_keys > 0 && blocks > 0, "partition_order: n_keys and blocks must be positive");
  auto keys = keys_in.to(torch::kInt64).contiguous();
  const int64_t n = keys.numel();
  const int64_t* k = keys.data_ptr<int64_t>();
  auto order = torch::empty({n}, keys.options());
  int64_t* out = order.data_ptr<int64_t>();
  std::vector<int64_t> start(blocks + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(k[i] >= 0 && k[i] < n_keys, "partition_order: key ", k[i], " outside [0, ", n_keys, ")");
    ++start[k[i] * blocks / n_keys + 1];
  }
  for (int64_t b = 0; b < blocks; ++b) start[b + 1] += start[b];
  for (int64_t i = 0; i < n; ++i) out[start[k[i] * blocks / n_keys]++] = i;
  return order;
}

// Every tensor of `tensors` (each (N,) int64 or float32, contiguous) taken in `order` (N,) int64: out[k] =
// tensor[order[k]], all in one pass over the order. partition_order's orders read each tensor in as many
// sequential streams as there are slices, more than the hardware prefetcher follows: index_select then waits
// on each cache line; this asks for the lines kAhead ratings early.
std::vector<torch::Tensor> take_in_order(const torch::Tensor& order_in, const std::vector<torch::Tensor>& tensors) {
  auto order = order_in.to(torch::kInt64).contiguous();
  const int64_t n = order.numel();
  std::vector<const int64_t*> longs_in;
  std::vector<int64_t*> longs_out;
  std::vector<const float*> floats_in;
  std::vector<float*> floats_out;
  std::vector<torch::Tensor> out;
  for (const auto& t : tensors) {
    TORCH_CHECK(t.device().is_cpu() && t.dim() == 1 && t.is_contiguous() && t.numel() == n,
                "take_in_order: contiguous 1-D CPU tensors of the order's length");
    out.push_back(torch::empty_like(t));
    if (t.scalar_type() == torch::kInt64) {
      longs_in.push_back(t.data_ptr<int64_t>());
      longs_out.push_back(out.back().data_ptr<int64_t>());
    } else {
      TORCH_CHECK(t.scalar_type() == torch::kFloat32, "take_in_order: int64 or float32 tensors");
      floats_in.push_back(t.data_ptr<float>());
      floats_out.push_back(out.back().data_ptr<float>());
    }
  }
  const int64_t* o = order.data_ptr<int64_t>();
  at::parallel_for(0, n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      if (k + kAhead < end) {
        const int64_t ahead = o[k + kAhead];
        for (const int64_t* t : longs_in) __builtin_prefetch(t + ahead);
        for (const float* t : floats_in) __builtin_prefetch(t + ahead);
      }
      const int64_t from = o[k];
      TORCH_CHECK(from >= 0 && from < n, "take_in_order: order entry ", from, " outside [0, ", n, ")");
      for (size_t j = 0; j < longs_in.size(); ++j) longs_out[j][k] = longs_in[j][from];
      for (size_t j = 0; j < floats_in.size(); ++j) floats_out[j][k] = floats_in[j][from];
    }
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused packed LSTM forward");
  m.def("backward", &backward, "fused packed LSTM backward: d gates, d W_hh, d bias");
  m.def("bag_backward", &bag_backward, "EmbeddingBag (sum, per-rating weights) weight gradient");
  m.def("bag_backward_into", &bag_backward_into, "bag_backward added into an existing gradient, in place");
  m.def("pair_dots", &pair_dots, "eq. (7)'s two inner products per rating");
  m.def("gather_ratings", &gather_ratings, "every rating of a batch's rows: ids, rows, entities, others, values");
  m.def("partition_order", &partition_order, "a stable order of the ratings by slice of the table they read");
  m.def("take_in_order", &take_in_order, "tensors taken in an order, in one pass (partition_order's orders)");
  m.def("row_sums", &row_sums, "out[index[k]] += w[k] * source[source_index[k]]: pair_dots' gradients");
}
