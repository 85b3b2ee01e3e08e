"""RRN's tensor layout: per-side step sequences as torch CSR, gathered and packed without Python loops.

One side (users or items) is a CSR over entities -> active steps ("rows") -> ratings, the layout
of rrnx.data.steps.StepSequences. A batch of entities is gathered into:
  rows     (R,) the global rows of the batch's entities, entity-major and in time order,
  ratings  (N,) the global ratings of those rows, row-major,
and packed time-major for torch's LSTM (PackedSequence) by index arithmetic alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd
import torch

from rrnx.data.steps import Granularity, StepSequences, build_sequences, standardized_tau
from rrnx.models.sparse import ranges

SIDES = ("user", "item")
OTHER_SIDE = {"user": "item", "item": "user"}


@dataclass
class SideTensors:
    """One side's sequences as tensors (see StepSequences for the meaning of each array)."""

    side: str
    granularity: Granularity
    tau_mean: float
    tau_std: float
    offsets: torch.Tensor  # (n_entities + 1,) int64
    step: torch.Tensor  # (n_active,) int64 global step index of each row
    features: torch.Tensor  # (n_active, 3) float32: [1_newbie, tau_t, tau_{t-1}] of eq. (5)
    rating_offsets: torch.Tensor  # (n_active + 1,) int64
    other: torch.Tensor  # (n_ratings,) int32 (int64 past 2^31) other-side index of each rating: take_index
    value: torch.Tensor  # (n_ratings,) float32 rating
    other_row: torch.Tensor | None = None  # (n_ratings,) int32 or int64 row on the OTHER side holding this rating
    base: torch.Tensor | None = None  # (n_ratings,) float32 a base model's prediction of each rating (advance())

    @property
    def n_entities(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_active(self) -> int:
        return len(self.step)

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]  # (n_entities,)

    def tau_of_step(self, step: np.ndarray) -> np.ndarray:
        return standardized_tau(self.granularity, step, self.tau_mean, self.tau_std)

    def to(self, device: torch.device) -> "SideTensors":
        """These sequences with every tensor on `device` (the model's: a GPU run gathers there)."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)


def side_tensors(seq: StepSequences) -> SideTensors:
    features = np.stack([seq.newbie, seq.tau, seq.prev_tau], axis=1).astype(np.float32)  # (n_active, 3)
    return SideTensors(seq.side, seq.granularity, seq.tau_mean, seq.tau_std,
                       torch.as_tensor(seq.offsets), torch.as_tensor(seq.step), torch.as_tensor(features),
                       torch.as_tensor(seq.rating_offsets), torch.as_tensor(seq.other),
                       torch.as_tensor(seq.value), None if seq.other_row is None else torch.as_tensor(seq.other_row))


def training_sides(data) -> dict[str, SideTensors]:
    """Both sides of a TemporalDataModule's training data, each rating knowing its row on the other
    side (so the other side's state before that row can be looked up in a cache)."""
    return {"user": side_tensors(data.user_steps), "item": side_tensors(data.item_steps)}


def extended_side(train_side: SideTensors, user, item, rating, timestamp, n_entities: int) -> SideTensors:
    """Training ratings plus newly observed ones as one side's sequences, on the training wallclock
    scale (tau keeps the training mean and deviation). Used by RRN.advance (Section 4.5)."""
    side = train_side.side
    entity, other = (user, item) if side == "user" else (item, user)
    seq, _ = build_sequences(side, entity, other, rating.astype(np.float32), timestamp, n_entities,
                             train_side.granularity)
    tau = train_side.tau_of_step(seq.step)
    first = seq.newbie > 0
    prev_tau = np.where(first, tau, np.roll(tau, 1)).astype(np.float32)
    features = np.stack([seq.newbie, tau, prev_tau], axis=1).astype(np.float32)
    return SideTensors(side, train_side.granularity, train_side.tau_mean, train_side.tau_std,
                       torch.as_tensor(seq.offsets), torch.as_tensor(seq.step), torch.as_tensor(features),
                       torch.as_tensor(seq.rating_offsets), torch.as_tensor(seq.other), torch.as_tensor(seq.value))


@dataclass
class RowBatch:
    """A batch of entities with their rows and ratings (local = position inside this batch)."""

    entities: torch.Tensor  # (B,) entity indices
    lengths: torch.Tensor  # (B,) rows per entity
    rows: torch.Tensor  # (R,) global row ids, entity-major, time order
    row_entity: torch.Tensor  # (R,) local entity of each row
    position: torch.Tensor  # (R,) position of the row in its entity's sequence (0 = first active step)
    ratings: torch.Tensor | None  # (N,) global rating ids (None: gather's ids=False)
    rating_row: torch.Tensor | None  # (N,) local row of each rating (None: gather's ids=False)
    rating_entity: torch.Tensor | None  # (N,) local entity of each rating (None: gather's ids=False)
    bag_offsets: torch.Tensor  # (R,) start of each row's ratings in `ratings` (EmbeddingBag offsets)
    ratings_per_row: torch.Tensor  # (R,)
    other: torch.Tensor  # (N,) int64 other-side index of each rating (side.other, widened once per batch)
    value: torch.Tensor  # (N,) float32 each rating's value
    other_row: torch.Tensor | None = None  # (N,) int64 each rating's row on the other side (gather's other_rows)
    rating_count: torch.Tensor | None = None  # (N,) float32 ratings_per_row of each rating's row (compiled gather)
    sliced: "RowBatch | None" = None  # the ratings in slices of the other side's table (sliced_ratings)

    @property
    def last_row(self) -> torch.Tensor:
        return torch.cumsum(self.lengths, 0) - 1  # (B,) local row of each entity's last active step


def gather(side: SideTensors, entities: torch.Tensor, cell=None, other_rows: bool = False,
           ids: bool = True) -> RowBatch:
    """The rows and ratings of `entities` (B,). cell: the compiled extension (lstm_cell.cpp), whose
    `gather_ratings` writes every per-rating array in one pass over the ratings (CPU); None: torch ops, the
    same values. other_rows: also each rating's row on the other side (side.other_row, training only).
    ids=False, with the cell: without each rating's id, local row and local entity (None), which the
    no-grad LSTM pass does not read (24 of the 40 bytes it writes per rating)."""
    starts = take_rows(side.offsets, entities)
    lengths = take_rows(side.offsets, entities + 1) - starts  # (B,)
    rows = ranges(starts, lengths)  # (R,)
    device = entities.device
    row_entity = torch.repeat_interleave(torch.arange(len(entities), device=device), lengths, output_size=len(rows))
    position = torch.arange(len(rows), device=device) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths,
                                                                                lengths, output_size=len(rows))
    r_starts = take_rows(side.rating_offsets, rows)
    r_lengths = take_rows(side.rating_offsets, rows + 1) - r_starts  # (R,)
    bag_offsets = torch.cumsum(r_lengths, 0) - r_lengths
    if cell is not None and device.type == "cpu":
        n = int(bag_offsets[-1] + r_lengths[-1]) if len(rows) else 0
        other_row = side.other_row if other_rows else torch.empty(0, dtype=torch.int64)
        ratings, rating_row, rating_entity, other, value, count, other_row = cell.gather_ratings(
            side.rating_offsets, rows, row_entity, bag_offsets, n, side.other, side.value, other_row, ids)  # (N,) each
        if not ids:
            ratings = rating_row = rating_entity = None
        return RowBatch(entities, lengths, rows, row_entity, position, ratings, rating_row, rating_entity,
                        bag_offsets, r_lengths, other, value, other_row if other_rows else None, count)
    ratings = ranges(r_starts, r_lengths)  # (N,)
    rating_row = torch.repeat_interleave(torch.arange(len(rows), device=device), r_lengths, output_size=len(ratings))
    return RowBatch(entities, lengths, rows, row_entity, position, ratings, rating_row,
                    take_rows(row_entity, rating_row), bag_offsets, r_lengths, take_index(side.other, ratings),
                    take_rows(side.value, ratings), take_index(side.other_row, ratings) if other_rows else None)


# The other side's state table above which a training batch reads it slice by slice (sliced_ratings); below,
# the table mostly stays in the cache and the reads are fast in rating order (docs/benchmarks.md,
# "Reading the other side's tables slice by slice").
LOCALITY_BYTES = 64 << 20
SLICE_BYTES = 8 << 20  # about one slice of the table, and of the tables it maps onto, in the last-level cache


def sliced_ratings(cell, batch: RowBatch, table: torch.Tensor, ratings: bool = False) -> RowBatch | None:
    """The batch's ratings in the order in which its per-rating work reads `table` (n_rows, D), the other
    side's states at `batch.other_row`: slice by slice (lstm_cell.cpp's partition_order, stable within a
    slice). A RowBatch whose per-rating fields other, other_row, value and rating_row (and with `ratings`,
    the rating ids) are in that order; its rows are the batch's. None when the table is small enough to read
    in rating order, or without the compiled cell or on a GPU. The other side's rows are entity-major, so a
    slice of them also holds a slice of its entities' factors, biases and rating-embedding rows: PairDots and
    RatingBag's backward read and write all of these in slices."""
    size = table.numel() * table.element_size()
    if cell is None or batch.other_row is None or table.device.type != "cpu" or size <= LOCALITY_BYTES:
        return None
    order = cell.partition_order(batch.other_row, table.shape[0], min(1024, -(-size // SLICE_BYTES)))  # (N,)
    fields = ["rating_row", "other", "other_row", "value"] + (["ratings"] if ratings else [])
    taken = dict(zip(fields, cell.take_in_order(order, [getattr(batch, f) for f in fields])))  # (N,) each
    return replace(batch, rating_entity=None, rating_count=None, **{"ratings": None, **taken})


@dataclass
class Packing:
    """Where each local row goes in a time-major PackedSequence, and its batch sizes."""

    packed_position: torch.Tensor  # (R,) index of local row r in PackedSequence.data
    unpacked: torch.Tensor  # (R,) local row at each packed index (inverse permutation)
    batch_sizes: torch.Tensor  # (T,) int64 on the batch's device, sequences alive at each time step
    sorted_entities: torch.Tensor  # (B,) local entities by decreasing length (the LSTM's batch order)


def pack(batch: RowBatch) -> Packing:
    """Sequences sorted by decreasing length: at time t the alive ones are the first batch_sizes[t],
    so row (entity of rank k, time t) lands at sum(batch_sizes[:t]) + k."""
    lengths = batch.lengths
    order = torch.argsort(lengths, descending=True, stable=True)  # (B,)
    rank = torch.empty_like(order).index_copy_(0, order, torch.arange(len(order), device=order.device))
    longest = int(lengths.max())  # one host read per batch (the LSTM's step count), never per step
    alive = torch.bincount(lengths, minlength=longest + 1).flip(0).cumsum(0).flip(0)[1:]  # (T,) len > t
    first_of_step = torch.cumsum(alive, 0) - alive  # (T,)
    packed_position = take_rows(first_of_step, batch.position) + take_rows(rank, batch.row_entity)  # (R,)
    unpacked = torch.empty_like(packed_position).index_copy_(
        0, packed_position, torch.arange(len(packed_position), device=packed_position.device))
    return Packing(packed_position, unpacked, alive, order)


class _Permute(torch.autograd.Function):
    """rows[order] where `order` is a permutation: the gradient is the inverse permutation, a plain
    gather (torch's indexing backward is an accumulating scatter, ~2x slower on (R, 40) rows)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return rows.index_select(0, order)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


class _TakeRows(torch.autograd.Function):
    """table[index] with the gradient summed into the table's rows by one index_add_ (CPU): torch's
    embedding backward sorts the indices first, slower on RRN's gathers, whose indices are sorted
    or nearly (each rating's row or entity; 1.4-1.7x for 313k rows of 21 floats: scripts/row_kernels.py)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.n_rows = table.shape[0]
        return table.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return grad.new_zeros(ctx.n_rows, grad.shape[1]).index_add_(0, index, grad), None


def take_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index] along the first dimension. torch's CPU advanced indexing is ~3x slower than
    index_select on row gathers (80 vs 29 ms for 376k random rows of 20 floats), more on 1-D ones (the
    CSR offsets: scripts/profile_recipe.py), and its backward is an accumulating scatter; a table with
    gradients goes through _TakeRows on the CPU and F.embedding (a deterministic backward) on a GPU."""
    if table.requires_grad and table.dim() == 2 and torch.is_grad_enabled():
        if table.is_cuda:
            return torch.nn.functional.embedding(index, table)
        return _TakeRows.apply(table, index)
    return table.index_select(0, index)


def take_index(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index] as int64, for the per-rating index tables (`other`, `other_row`), which are stored
    int32 where they fit (half the memory; rrnx.data.ordering.index_dtype) and index with int64."""
    return table.index_select(0, index).long()


class RatingBag(torch.autograd.Function):
    """Eq. (5)'s x_t product: EmbeddingBag (sum, per-rating weights) forward, its weight gradient from the
    compiled `bag_backward` (lstm_cell.cpp): torch's CPU backward makes one BLAS call per rating.
    weight (n_other, E), index / bag / weights (N,): the other entity, the bag (row) and the weight of
    each rating, bag non-decreasing; offsets (R,) the first rating of each bag. The weights take no
    gradient (they are data). into_grad: `weight` is a leaf whose gradient only .backward() wants (RRN's
    training, batch parts): when it already holds a dense .grad, the backward adds into that in place and
    returns none (autograd would add a fresh (n_other, E) table to it: one zeroed table and one table-sized
    add per part; at Netflix-full scale the item network's is 470k x 40). sliced: the same ratings' index, bag
    and weights in another order (sliced_ratings), in which the backward adds them into the gradient table
    (the same sums up to float rounding: a table row's ratings may be added in another order)."""

    @staticmethod
    def forward(ctx, weight, index, offsets, bag, weights, cell, into_grad=False, sliced=None):
        ctx.save_for_backward(*(sliced or (index, bag, weights)))
        ctx.cell, ctx.n_rows, ctx.weight = cell, weight.shape[0], weight if into_grad else None
        return torch.nn.functional.embedding_bag(index, weight, offsets, mode="sum", per_sample_weights=weights)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        index, bag, weights = ctx.saved_tensors
        table = ctx.weight.grad if ctx.weight is not None else None
        if table is not None and table.layout == torch.strided and table.is_contiguous():
            ctx.cell.bag_backward_into(table, grad, index, bag, weights)
            return None, None, None, None, None, None, None, None
        return ctx.cell.bag_backward(grad, index, bag, weights, ctx.n_rows), None, None, None, None, None, None, None


class PairDots(torch.autograd.Function):
    """Eq. (7)'s <own state, other state> + <own factors, other factors> of every rating from the compiled
    `pair_dots` (lstm_cell.cpp): one pass over the gathered rows, where torch ops write four (N, D) gathers
    and two (N, D) products, and their backward two more products and two scatters (the per-rating traffic
    that bounds a Netflix-full epoch). a (n_a, D) and c (n_c, k) take gradients (this side's states and
    factors); b (n_b, D) and d (n_d, k) are the other side's, frozen in the phase; ia, ib, ic, id (N,)
    int64 each rating's row of each table. `bias` (RRN's dynamic_bias): the states' last column is each
    side's dynamic bias, added to the product of the first D - 1 columns. When a takes a gradient, the forward
    also writes each rating's b row in rating order, (N, D), so that the backward's row sums read them in order
    rather than at random (at Netflix-full scale the item phase's b is the 845 MB user-state cache)."""

    @staticmethod
    def forward(ctx, a, ia, b, ib, c, ic, d, id_, cell, bias=False):
        save = ctx.needs_input_grad[0]  # b's rows, saved in rating order for da (pair_dots' `save`)
        out, saved = cell.pair_dots(a, ia, b, ib, c, ic, d, id_, bias, save)  # (N,), (N, D) or (0, D)
        ctx.save_for_backward(ia, saved if save else b, ib, ic, d, id_)
        ctx.cell, ctx.n_rows, ctx.bias, ctx.saved = cell, (a.shape[0], c.shape[0]), bias, save
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        ia, b, ib, ic, d, id_ = ctx.saved_tensors
        wants = ctx.needs_input_grad
        source_index = ib.new_empty(0) if ctx.saved else ib  # saved rows: row k belongs to rating k
        da = ctx.cell.row_sums(b, source_index, grad, ia, ctx.n_rows[0], ctx.bias) if wants[0] else None  # (n_a, D)
        dc = ctx.cell.row_sums(d, id_, grad, ic, ctx.n_rows[1], False) if wants[4] else None  # (n_c, k)
        return da, None, None, None, dc, None, None, None, None, None


def permute_rows(rows: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """rows[order], differentiable; `inverse` is order's inverse permutation."""
    return _Permute.apply(rows, order, inverse)


def length_sorted_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator | None) -> list:
    """Entity batches of similar sequence length (little LSTM work wasted on ragged tails), in random
    order when a generator is given; ties are broken at random so batches differ between epochs."""
    n, lengths = len(lengths), lengths.cpu()
    tiebreak = torch.rand(n, generator=generator) if generator is not None else torch.zeros(n)
    order = np.lexsort((tiebreak.numpy(), lengths.numpy()))  # by length, then random
    batches = list(torch.as_tensor(order).split(batch_size))
    if generator is not None:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def row_budget_batches(lengths: torch.Tensor, max_rows: int, ratings: torch.Tensor | None = None,
                       max_ratings: int | None = None) -> list:
    """Indices into `lengths`, sorted by length and cut into batches of about max_rows rows and, given
    each entity's rating count `ratings`, about max_ratings ratings (the no-grad passes: large batches
    keep the LSTM matmuls large; the rating budget bounds their per-rating intermediates)."""
    order = torch.argsort(lengths, stable=True)
    cut = torch.div(torch.cumsum(lengths[order], 0) - 1, max_rows, rounding_mode="floor")  # non-decreasing
    if ratings is not None and max_ratings is not None:
        by_ratings = torch.div(torch.cumsum(ratings[order], 0) - 1, max_ratings, rounding_mode="floor")
        cut = torch.maximum(cut, by_ratings)  # still non-decreasing: a batch ends at either budget
    counts = torch.bincount(cut)
    return list(order.split(counts[counts > 0].tolist()))


def entity_ratings(side: SideTensors, entities: torch.Tensor) -> torch.Tensor:
    """Training ratings of each of `entities`, (B,) int64."""
    first, end = take_rows(side.offsets, entities), take_rows(side.offsets, entities + 1)  # (B,) row ranges
    return take_rows(side.rating_offsets, end) - take_rows(side.rating_offsets, first)


def rating_bounded_parts(side: SideTensors, entities: torch.Tensor, max_ratings: int | None) -> list:
    """`entities` cut, in their order, into consecutive parts of at most about max_ratings training
    ratings (a part ends once it reaches the budget, so it holds at most max_ratings plus one entity's
    ratings); one part when the batch fits or max_ratings is None."""
    if max_ratings is None or len(entities) <= 1:
        return [entities]
    counts = entity_ratings(side, entities)  # (B,)
    if int(counts.sum()) <= max_ratings:
        return [entities]
    start = torch.cumsum(counts, 0) - counts  # (B,) ratings before each entity in the batch
    part = torch.div(start, max_ratings, rounding_mode="floor")  # (B,) non-decreasing
    sizes = torch.unique_consecutive(part, return_counts=True)[1]
    return list(entities.split(sizes.tolist()))


def ratings_frame_arrays(ratings: pd.DataFrame) -> tuple[np.ndarray, ...]:
    return (ratings["user_idx"].to_numpy(np.int64), ratings["item_idx"].to_numpy(np.int64),
            ratings["rating"].to_numpy(np.float32), ratings["timestamp"].to_numpy(np.int64))
