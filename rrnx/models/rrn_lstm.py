"""The LSTM of eqs. (1)-(4) over a time-major packed layout, with a hand-written backward.

torch's CPU LSTM on a PackedSequence slices its input per time step, and autograd turns every
slice into a zero-filled input-sized gradient: quadratic in the sequence length (12 of 15 s of a
Netflix-scale user batch went there). Here the input-to-gate product is one large matmul over all
rows, the recurrence updates preallocated buffers in place, and backpropagation through time
writes each step's gate gradients into one (R, 4H) buffer, so the weight gradients are again
single large matmuls. Gate order and parameters are nn.LSTM's (i, f, g, o), so an nn.LSTM module
holds the weights and checkpoints stay interchangeable.
"""

from __future__ import annotations

import torch
from torch import nn


class PackedLSTMFunction(torch.autograd.Function):
    """h_t for every packed row; inputs: xg (R, 4H) = W_ih x_t + b, w_hh (4H, H), sizes (T,) list."""

    @staticmethod
    def forward(ctx, xg: torch.Tensor, w_hh: torch.Tensor, sizes: list) -> torch.Tensor:
        n_rows, hidden = xg.shape[0], w_hh.shape[1]
        gates = torch.empty(n_rows, 4 * hidden)  # activated i, f, g, o of eqs. (1)-(2)
        cells = torch.empty(n_rows, hidden)  # c_t, eq. (3)
        states = torch.empty(n_rows, hidden)  # h_t, eq. (4)
        h = c = torch.zeros(sizes[0] if sizes else 0, hidden)
        w_t, offset = w_hh.t(), 0
        for size in sizes:
            rows = slice(offset, offset + size)
            g = torch.addmm(xg[rows], h[:size], w_t, out=gates[rows])  # (bs, 4H)
            g[:, : 2 * hidden].sigmoid_()
            g[:, 2 * hidden: 3 * hidden].tanh_()
            g[:, 3 * hidden:].sigmoid_()
            i, f, gg, o = g.split(hidden, 1)
            c = torch.mul(f, c[:size], out=cells[rows]).addcmul_(i, gg)  # eq. (3)
            h = torch.tanh(c, out=states[rows]).mul_(o)  # eq. (4)
            offset += size
        ctx.sizes = sizes
        ctx.save_for_backward(w_hh, gates, cells, states)
        return states

    @staticmethod
    def backward(ctx, d_states: torch.Tensor):
        w_hh, gates, cells, states = ctx.saved_tensors
        sizes, hidden = ctx.sizes, w_hh.shape[1]
        starts = [0]
        for size in sizes[:-1]:
            starts.append(starts[-1] + size)
        d_gates = torch.empty_like(gates)  # pre-activation gate gradients (R, 4H)
        dh_next = torch.zeros(sizes[0], hidden)
        dc_next = torch.zeros(sizes[0], hidden)
        d_states = d_states.contiguous()
        for t in range(len(sizes) - 1, -1, -1):
            size, rows = sizes[t], slice(starts[t], starts[t] + sizes[t])
            dh = d_states[rows] + dh_next[:size]
            i, f, gg, o = gates[rows].split(hidden, 1)
            tanh_c = torch.tanh(cells[rows])
            dc = (dh * o).mul_(1 - tanh_c * tanh_c).add_(dc_next[:size])
            di, df, dg, do = d_gates[rows].split(hidden, 1)
            torch.mul(dc * gg, i * (1 - i), out=di)
            if t > 0:
                torch.mul(dc * cells[starts[t - 1]: starts[t - 1] + size], f * (1 - f), out=df)
            else:
                df.zero_()  # c_0 = 0
            torch.mul(dc * i, 1 - gg * gg, out=dg)
            torch.mul(dh * tanh_c, o * (1 - o), out=do)
            dc_next[:size] = dc * f
            torch.mm(d_gates[rows], w_hh, out=dh_next[:size])
        previous = torch.zeros_like(states)  # h_{t-1} of each row (0 at t = 0)
        for t in range(1, len(sizes)):
            previous[starts[t]: starts[t] + sizes[t]] = states[starts[t - 1]: starts[t - 1] + sizes[t]]
        d_w_hh = d_gates.t() @ previous  # (4H, H), one matmul over all rows
        return d_gates, d_w_hh, None


def packed_lstm(lstm: nn.LSTM, data: torch.Tensor, batch_sizes: torch.Tensor) -> torch.Tensor:
    """Hidden states of every packed row (R, H) of `data` (R, E), layer by layer with lstm's weights."""
    sizes = batch_sizes.tolist()
    out = data
    for layer in range(lstm.num_layers):
        w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
        bias = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
        xg = torch.addmm(bias, out, w_ih.t())  # (R, 4H): eq. (1)-(2)'s input part for all steps at once
        out = PackedLSTMFunction.apply(xg, w_hh, sizes)
    return out
