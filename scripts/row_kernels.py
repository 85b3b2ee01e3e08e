"""Times the per-rating kernels RRN replaced, torch's against rrnx's, back to back in one process
(docs/benchmarks.md, "The rating embedding's backward, the gate bias, the gathers' backward" and
"Eq. (7) in one compiled pass"):

    python scripts/row_kernels.py [--threads 1]

1. eq. (5)'s rating embedding: EmbeddingBag (sum, per-rating weights) weight gradient, torch's CPU
   backward against the compiled `bag_backward` (RatingBag), on a user-phase-shaped batch (the user
   network's 16,667-row item table, 240k rows, 313k ratings) and an item-phase-shaped one (the item
   network's 272,943-row user table, 20k rows, 1M ratings); E = 40.
2. a gather that carries gradients, 313k sorted indices into 240k rows of 21 floats: F.embedding's
   backward against take_rows' (_TakeRows, one index_add_).
3. the forward gathers (index_select) of an epoch's largest shapes, each against a plain copy of a tensor
   of its output's size: how far the gathers are from the machine's copy speed.
4. eq. (7)'s two inner products per rating with their gradients, torch ops (four row gathers, two products,
   two scatters) against the compiled `pair_dots` (PairDots): a 6-month user-phase part (1M ratings of
   130k rows; the other side's 365k item states and 16,667 item factors) and a Netflix-full item-phase part
   (2M ratings of 60k rows; the other side's 10.6M user states and 470k user factors); D = k = 20.
5. the backward's row sums for this side's states (da of PairDots), the other side's rows read at random
   from its table against the same rows read in rating order as PairDots' forward saves them: 1M ratings
   into 4,096 rows, from tables of 10,556,426 (Netflix full's user states), 514,420 and 470,234 rows;
   D = 20 ("The per-rating gather in one compiled pass").
6. the state cache's write of 200k projected rows (20 floats) into the (10,556,426, 20) table, entities in
   runs of 20 rows: index_copy_ at the rows in packed order against the rows put in local order first
   (an index_select) and written as runs ("The per-rating gather in one compiled pass").
Best of 5 after a warm-up; the largest difference of the two gradients is printed with each pair.
"""

from __future__ import annotations

import argparse
import time

import torch

from rrnx.models.rrn.fused import fused_cell
from rrnx.models.rrn.sequences import PairDots, RatingBag, take_rows


def best_ms(step, repeats: int = 5) -> float:
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def gradient(forward, table: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    leaf = table.detach().requires_grad_()
    (result,) = torch.autograd.grad(forward(leaf), leaf, grad)
    return result


def bag_pair(cell, n_table: int, n_rows: int, n_ratings: int, generator: torch.Generator) -> str:
    table = torch.randn(n_table, 40, generator=generator)
    index = torch.randint(0, n_table, (n_ratings,), generator=generator)  # (N,) the other entity
    extra = torch.randint(0, n_rows, (n_ratings - n_rows,), generator=generator)
    bag = torch.cat([torch.arange(n_rows), extra]).sort()[0]  # (N,) every row has a rating
    counts = torch.bincount(bag, minlength=n_rows)
    offsets = torch.cumsum(counts, 0) - counts  # (R,)
    weights = torch.rand(n_ratings, generator=generator)
    grad = torch.randn(n_rows, 40, generator=generator)

    def torch_bag(w):
        return torch.nn.functional.embedding_bag(index, w, offsets, mode="sum", per_sample_weights=weights)

    def rrnx_bag(w):
        return RatingBag.apply(w, index, offsets, bag, weights, cell)

    ms = [best_ms(lambda f=f: gradient(f, table, grad)) for f in (torch_bag, rrnx_bag)]
    diff = (gradient(torch_bag, table, grad) - gradient(rrnx_bag, table, grad)).abs().max().item()
    return (f"rating embedding, {n_table:,}-row table, {n_rows:,} rows, {n_ratings:,} ratings: torch {ms[0]:.1f} ms, "
            f"rrnx {ms[1]:.1f} ms ({ms[0] / ms[1]:.1f}x); max difference {diff:.1e}")


def gather_pair(generator: torch.Generator) -> str:
    table = torch.randn(240_000 + 1, 21, generator=generator)
    index = torch.randint(0, len(table), (313_000,), generator=generator).sort()[0]  # (N,) sorted
    grad = torch.randn(len(index), 21, generator=generator)
    embedding = lambda t: torch.nn.functional.embedding(index, t)  # noqa: E731
    ours = lambda t: take_rows(t, index)  # noqa: E731
    ms = [best_ms(lambda f=f: gradient(f, table, grad)) for f in (embedding, ours)]
    diff = (gradient(embedding, table, grad) - gradient(ours, table, grad)).abs().max().item()
    return (f"gather with gradients, {len(index):,} sorted rows of 21 floats: F.embedding {ms[0]:.1f} ms, "
            f"take_rows {ms[1]:.1f} ms ({ms[0] / ms[1]:.1f}x); max difference {diff:.1e}")


def gather_against_copy(n_table: int, width: int, n: int, sort: bool, generator: torch.Generator) -> str:
    """index_select of n rows of `width` (1: a 1-D index table, as gather()'s offsets) against copying n rows."""
    shape = (n_table, width) if width > 1 else (n_table,)
    table = torch.randn(shape, generator=generator)
    index = torch.randint(0, n_table, (n,), generator=generator)  # (n,)
    index = index.sort()[0] if sort else index
    out = torch.empty((n, *shape[1:]))
    source = torch.randn(out.shape, generator=generator)
    ms = [best_ms(lambda: torch.index_select(table, 0, index, out=out)), best_ms(lambda: out.copy_(source))]
    return (f"gather {n:,} {'sorted' if sort else 'random'} rows of {width} floats from {n_table:,}: "
            f"index_select {ms[0]:.1f} ms, copy of the output's size {ms[1]:.1f} ms ({ms[0] / ms[1]:.2f}x)")


def pair_dots_pair(cell, n_rows: int, n_entities: int, n_other_rows: int, n_other: int, n_ratings: int,
                   generator: torch.Generator) -> str:
    """Eq. (7) forward + backward of both this side's tables: torch ops against PairDots."""
    ia = torch.randint(0, n_rows + 1, (n_ratings,), generator=generator).sort()[0]  # (N,) the row before, sorted
    ic = (ia * n_entities // (n_rows + 1)).clamp(max=n_entities - 1)  # (N,) its entity, sorted
    ib = torch.randint(0, n_other_rows, (n_ratings,), generator=generator)  # (N,) the other side's row, random
    id_ = torch.randint(0, n_other, (n_ratings,), generator=generator)  # (N,) the other entity
    states, factors = torch.randn(n_rows + 1, 20, generator=generator), torch.randn(n_entities, 20, generator=generator)
    other_states, other_factors = (torch.randn(n_other_rows, 20, generator=generator),
                                   torch.randn(n_other, 20, generator=generator))
    grad = torch.randn(n_ratings, generator=generator)

    def torch_ops(a, c):
        return ((take_rows(a, ia) * other_states.index_select(0, ib)).sum(-1)
                + (take_rows(c, ic) * other_factors.index_select(0, id_)).sum(-1))

    def rrnx_pair(a, c):
        return PairDots.apply(a, ia, other_states, ib, c, ic, other_factors, id_, cell, False)

    def both(f):
        a, c = states.detach().requires_grad_(), factors.detach().requires_grad_()
        return torch.autograd.grad(f(a, c), (a, c), grad)

    ms = [best_ms(lambda f=f: both(f)) for f in (torch_ops, rrnx_pair)]
    diff = max((x - y).abs().max().item() for x, y in zip(both(torch_ops), both(rrnx_pair)))
    return (f"eq. (7), {n_ratings:,} ratings of {n_rows:,} rows, other side {n_other_rows:,} states and {n_other:,} "
            f"factors: torch {ms[0]:.1f} ms, rrnx {ms[1]:.1f} ms ({ms[0] / ms[1]:.1f}x); max difference {diff:.1e}")


def saved_rows_pair(cell, n_other_rows: int, generator: torch.Generator) -> str:
    """da's row sums: the other side's rows at random against the same rows in rating order (saved)."""
    n, n_rows = 1_000_000, 4096
    ia = torch.randint(0, n_rows, (n,), generator=generator).sort()[0]  # (N,) this side's row, sorted
    ib = torch.randint(0, n_other_rows, (n,), generator=generator)  # (N,) the other side's row, random
    other, grad = torch.randn(n_other_rows, 20, generator=generator), torch.randn(n, generator=generator)
    saved = other.index_select(0, ib)  # (N, D) what PairDots' forward writes
    ms = [best_ms(lambda: cell.row_sums(other, ib, grad, ia, n_rows, False)),
          best_ms(lambda: cell.row_sums(saved, ib.new_empty(0), grad, ia, n_rows, False))]
    diff = (cell.row_sums(other, ib, grad, ia, n_rows, False)
            - cell.row_sums(saved, ib.new_empty(0), grad, ia, n_rows, False)).abs().max().item()
    return (f"row sums of {n:,} ratings from {n_other_rows:,} other rows: at random {ms[0]:.1f} ms, saved in order "
            f"{ms[1]:.1f} ms ({ms[0] / ms[1]:.1f}x); max difference {diff:.1e}")


def cache_write_pair(generator: torch.Generator) -> str:
    """The state cache's index_copy_: at packed-order rows against local order (runs) after a permute."""
    table, n = torch.zeros(10_556_426, 20), 200_000
    starts = torch.randperm(len(table) // 20, generator=generator)[:n // 20] * 20  # entities of 20 rows each
    rows = (starts[:, None] + torch.arange(20)).reshape(-1)  # (R,) local order: one run per entity
    packed_position = torch.randperm(n, generator=generator)  # (R,) where local row r sits in packed order
    unpacked = torch.empty_like(packed_position).index_copy_(0, packed_position, torch.arange(n))
    projected = torch.randn(n, 20, generator=generator)  # (R, D) in packed order
    ms = [best_ms(lambda: table.index_copy_(0, rows.index_select(0, unpacked), projected)),
          best_ms(lambda: table.index_copy_(0, rows, projected.index_select(0, packed_position)))]
    return (f"state cache write of {n:,} rows: packed order {ms[0]:.1f} ms, local order {ms[1]:.1f} ms "
            f"({ms[0] / ms[1]:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cell = fused_cell(required=True)
    generator = torch.Generator().manual_seed(0)
    print(f"{args.threads} threads (forward + backward each)")
    print(bag_pair(cell, 16_667, 240_000, 313_000, generator))
    print(bag_pair(cell, 272_943, 20_000, 1_000_000, generator))
    print(gather_pair(generator))
    print("forward gathers of an epoch's shapes against a plain copy")
    for n_table, width, n, sort in ((365_013, 20, 1_000_232, True), (16_667, 20, 1_000_232, False),
                                    (523_660, 40, 523_660, False), (12_434_398, 1, 6_729_431, True)):
        print(gather_against_copy(n_table, width, n, sort, generator))
    print(pair_dots_pair(cell, 130_000, 4096, 365_013, 16_667, 1_000_000, generator))
    print(pair_dots_pair(cell, 60_000, 512, 10_556_426, 470_234, 2_000_000, generator))
    for n_other_rows in (10_556_426, 514_420, 470_234):
        print(saved_rows_pair(cell, n_other_rows, generator))
    print(cache_write_pair(generator))


if __name__ == "__main__":
    main()
