"""The LSTM of eqs. (1)-(4) over a time-major packed layout, with a hand-written backward.

torch's CPU LSTM on a PackedSequence slices its input per time step, and autograd turns every
slice into a zero-filled input-sized gradient: quadratic in the sequence length (12 of 15 s of a
Netflix-scale user batch went there). Here the input-to-gate product is one large matmul over all
rows, the recurrence updates preallocated buffers in place, and backpropagation through time
writes each step's gate gradients into one (R, 4H) buffer, so the weight gradients are again
single large matmuls. Gate order and parameters are nn.LSTM's (i, f, g, o), so an nn.LSTM module
holds the weights and checkpoints stay interchangeable.

Kernels (`packed_lstm(..., kernel)`, RRN's `lstm_kernel`): "torch" is PackedLSTMFunction below, in
torch ops; "fused" is FusedPackedLSTMFunction, the same recurrence with the cell compiled
(lstm_cell.cpp, built by fused.py): one pass over a step's gate block forward and one backward;
"cudnn" is nn.LSTM on the PackedSequence (cuDNN on a GPU).
"""

from __future__ import annotations

import torch
from torch import nn

from rrnx.models.rrn.fused import fused_cell


class PackedLSTMFunction(torch.autograd.Function):
    """h_t for every packed row; inputs: x (R, E), w_ih (4H, E), bias (4H,) (b_ih + b_hh), w_hh (4H, H),
    all with the gates in the order (i, f, o, g) and the g rows doubled (tanh z = 2 sigmoid(2 z) - 1: one sigmoid over all four gates;
    torch's CPU tanh is several times slower than its sigmoid), sizes (T,) list. The input part of
    the gates, W_ih x_t + b, is one matmul over all rows, written straight into the gate buffer.

    The machine is memory-bound on these (bs, 4H) blocks, so every factor of the gate gradients that
    does not depend on the recurrence is computed in the forward step, while its block is in cache;
    the backward step is then a handful of in-place products and one matmul."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor, w_hh: torch.Tensor,
                sizes: list, track: bool = True) -> torch.Tensor:
        n_rows, hidden = x.shape[0], w_hh.shape[1]
        grad = track and any(ctx.needs_input_grad[:4])  # see packed_lstm's `track`
        # (R, 4H): eqs. (1)-(2)'s input part for all steps at once; becomes the activated i, f, o, g in place
        gates = torch.addmm(bias, x, w_ih.t())
        like = {"dtype": x.dtype, "device": x.device}
        cells = torch.empty(n_rows, hidden, **like)  # c_t, eq. (3)
        states = torch.empty(n_rows, hidden, **like)  # h_t, eq. (4)
        tanh_c = torch.empty(sizes[0] if sizes else 0, hidden, **like)
        if grad:  # d_gates = [dc, dc, dh, dc] * factor, dc = dh * dc_factor + dc_{t+1} f_{t+1}
            factor = torch.empty_like(gates)
            dc_factor = torch.empty(n_rows, hidden, **like)
        w_t, offset, h, c = w_hh.t(), 0, None, None
        for size in sizes:
            rows = slice(offset, offset + size)
            g = gates[rows]  # (bs, 4H), contiguous
            if h is not None:
                g.addmm_(h[:size], w_t)  # + W_hh h_{t-1} (h_0 = 0: nothing to add at t = 0)
            g.sigmoid_()  # one pass over the whole block; the g columns hold 2 z
            i, f, o, gg = g.split(hidden, 1)
            if grad:
                fac = factor[rows]
                torch.mul(g, g, out=fac)
                torch.sub(g, fac, out=fac)  # s (1 - s) of every gate; (1 - tanh^2) / 4 on the g columns
                fi, ff, fo, fg = fac.split(hidden, 1)
                fg.mul_(i).mul_(2)  # d c / d (2 z_g) = i (1 - g^2) / 2
            gg.mul_(2).sub_(1)  # g = tanh z_g
            if c is None:  # c_0 = 0
                c = torch.mul(i, gg, out=cells[rows])
            else:
                c_prev = c[:size]
                if grad:
                    ff.mul_(c_prev)
                c = torch.mul(f, c_prev, out=cells[rows]).addcmul_(i, gg)  # eq. (3)
            tc = torch.mul(c, 2, out=tanh_c[:size]).sigmoid_().mul_(2).sub_(1)  # tanh c (CPU tanh is slow)
            h = torch.mul(tc, o, out=states[rows])  # eq. (4)
            if grad:
                if offset == 0:
                    ff.zero_()  # c_0 = 0
                fi.mul_(gg)
                fo.mul_(tc)
                torch.mul(tc, tc, out=dc_factor[rows]).neg_().add_(1).mul_(o)
            offset += size
        ctx.sizes = sizes
        if grad:
            ctx.save_for_backward(x, w_ih, w_hh, gates, factor, dc_factor, states)
        return states

    @staticmethod
    def backward(ctx, d_states: torch.Tensor):
        x, w_ih, w_hh, gates, d_gates, dc_factor, states = ctx.saved_tensors  # d_gates: the factors, filled in place
        sizes, hidden = ctx.sizes, w_hh.shape[1]
        first = sizes[0] if sizes else 0
        starts = [0]
        for size in sizes[:-1]:
            starts.append(starts[-1] + size)
        dh_next = torch.zeros(first, hidden, dtype=x.dtype, device=x.device)
        dc_next = torch.zeros(first, hidden, dtype=x.dtype, device=x.device)
        d_states = d_states.contiguous()
        for t in range(len(sizes) - 1, -1, -1):
            size, rows = sizes[t], slice(starts[t], starts[t] + sizes[t])
            dh = torch.add(d_states[rows], dh_next[:size])
            dc = torch.addcmul(dc_next[:size], dh, dc_factor[rows])
            dg = d_gates[rows]
            dg[:, : 2 * hidden].view(size, 2, hidden).mul_(dc[:, None])
            dg[:, 2 * hidden: 3 * hidden].mul_(dh)
            dg[:, 3 * hidden:].mul_(dc)
            if t > 0:
                torch.mul(dc, gates[rows, hidden: 2 * hidden], out=dc_next[:size])
                torch.mm(dg, w_hh, out=dh_next[:size])
        return (*_weight_gradients(ctx, d_gates, x, w_ih, states, sizes), None, None)


def _gate_order(hidden: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.LSTM's (i, f, g, o) rows -> (i, f, o, g), the three sigmoid gates side by side, and the row
    scale (2 on the g rows) PackedLSTMFunction expects."""
    order = torch.cat([torch.arange(2 * hidden), torch.arange(3 * hidden, 4 * hidden),
                       torch.arange(2 * hidden, 3 * hidden)]).to(device)
    scale = torch.ones(4 * hidden, 1, device=device)
    scale[3 * hidden:] = 2
    return order, scale


class FusedPackedLSTMFunction(torch.autograd.Function):
    """PackedLSTMFunction's computation with the cell fused (lstm_cell.cpp): one pass over each step's
    gate block in the forward and one in the backward, in nn.LSTM's gate order (i, f, g, o); inputs
    x (R, E), w_ih (4H, E), bias (4H,) (b_ih + b_hh), w_hh (4H, H), batch_sizes (T,) CPU int64."""

    @staticmethod
    def forward(ctx, x, w_ih, bias, w_hh, batch_sizes, cell, track=True):
        grad = track and any(ctx.needs_input_grad[:4])  # see packed_lstm's `track`
        states, factors, forget, dc_factor = cell.forward(x.contiguous(), w_ih, bias, w_hh, batch_sizes, grad)
        ctx.cell = cell
        if grad:
            ctx.save_for_backward(x, w_ih, w_hh, batch_sizes, factors, forget, dc_factor, states)
        return states  # (R, H)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_states):
        x, w_ih, w_hh, batch_sizes, factors, forget, dc_factor, states = ctx.saved_tensors
        # (R, 4H), (4H, H), (4H,): the cell sums d W_hh step by step and d bias in its row passes
        d_gates, d_w_hh, d_bias = ctx.cell.backward(d_states, factors, forget, dc_factor, w_hh, states, batch_sizes)
        d_x, d_w_ih = _input_gradients(ctx, d_gates, x, w_ih)
        return d_x, d_w_ih, d_bias if ctx.needs_input_grad[2] else None, d_w_hh, None, None, None


def _weight_gradients(ctx, d_gates, x, w_ih, states, sizes):
    """d_x, d_w_ih, d_bias, d_w_hh from the gate gradients of every row, each one matmul over all rows
    (the pure-torch cell; the fused one sums d_w_hh and d_bias itself)."""
    n_rows, first = d_gates.shape[0], (sizes[0] if sizes else 0)
    # h_{t-1} of every row past step 0, by index arithmetic (rows of step 0 have h_0 = 0)
    shift = torch.repeat_interleave(torch.as_tensor(sizes[:-1], dtype=torch.int64, device=x.device),
                                    torch.as_tensor(sizes[1:], dtype=torch.int64, device=x.device),
                                    output_size=n_rows - first)
    previous_states = states.index_select(0, torch.arange(first, n_rows, device=x.device) - shift)  # (R - first, H)
    d_w_hh = d_gates[first:].t() @ previous_states  # (4H, H)
    d_bias = d_gates.sum(0) if ctx.needs_input_grad[2] else None  # (4H,)
    return *_input_gradients(ctx, d_gates, x, w_ih), d_bias, d_w_hh


def _input_gradients(ctx, d_gates, x, w_ih):
    """d_x (R, E) and d_w_ih (4H, E) from the gate gradients of every row, one matmul each."""
    needs = ctx.needs_input_grad
    d_x = d_gates @ w_ih if needs[0] else None  # (R, E)
    d_w_ih = d_gates.t() @ x if needs[1] else None  # (4H, E)
    return d_x, d_w_ih


LSTM_KERNELS = ("auto", "fused", "torch", "cudnn")


def resolve_kernel(kernel: str, device: torch.device) -> tuple[str, object]:
    """What `kernel` runs on `device`, and the compiled extension when that is "fused" (else None): "auto" is
    cuDNN on CUDA and the fused cell on the CPU, "torch" (with one warning line) where it cannot be built."""
    cuda = torch.device(device).type == "cuda"
    if kernel == "auto":
        if cuda:
            return "cudnn", None
        cell = fused_cell(required=False)
        return ("fused", cell) if cell is not None else ("torch", None)
    if kernel == "fused":
        if cuda:
            raise ValueError("lstm_kernel 'fused' is the CPU cell; on CUDA use auto, cudnn or torch")
        return "fused", fused_cell(required=True)
    return kernel, None


def packed_lstm(lstm: nn.LSTM, data: torch.Tensor, batch_sizes: torch.Tensor, kernel: str = "auto") -> torch.Tensor:
    """Hidden states of every packed row (R, H) of `data` (R, E), layer by layer with lstm's weights.

    kernel: "fused" the compiled cell (CPU; an error when it cannot be built), "torch" the pure-torch
    PackedLSTMFunction, "cudnn" nn.LSTM itself on the PackedSequence (cuDNN's packed LSTM on a GPU;
    on the CPU its per-step slicing is quadratic in the length), "auto" cuDNN on CUDA and the fused
    cell on the CPU, falling back to "torch" with one warning line where it cannot be built."""
    kernel, cell = resolve_kernel(kernel, data.device)
    if kernel == "cudnn":
        packed = nn.utils.rnn.PackedSequence(data, batch_sizes.cpu())
        return lstm(packed)[0].data
    sizes = batch_sizes.cpu()
    out = data
    # needs_input_grad is True for the weights (parameters) even under no_grad: without `track` the no-grad
    # passes (state caches, evaluation) computed and stored the backward's factors for nothing
    track = torch.is_grad_enabled()
    if kernel == "fused":
        for layer in range(lstm.num_layers):
            w_ih, w_hh, bias = _layer_weights(lstm, layer)
            out = FusedPackedLSTMFunction.apply(out, w_ih, bias, w_hh, sizes, cell, track)
        return out
    order, scale = _gate_order(lstm.hidden_size, data.device)
    for layer in range(lstm.num_layers):
        w_ih, w_hh, bias = _layer_weights(lstm, layer)
        out = PackedLSTMFunction.apply(out, w_ih[order] * scale, bias[order] * scale[:, 0], w_hh[order] * scale,
                                       sizes.tolist(), track)
    return out


def _layer_weights(lstm: nn.LSTM, layer: int):
    bias = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
    return getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}"), bias
