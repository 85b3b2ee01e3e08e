"""RRN's states and predictions: the state cache, causal predictions at any time (Section 3.3) and
the update without re-training (Section 4.5, `advance`).

RRNStates is a mixin of RRN (model.py); it uses the model's networks (`_net`, `_hidden`,
`_factors`), its hyperparameters and the attached training data (`_sides`, `_test_start`), and
keeps `_state_cache` (per side: the version of the weights it was computed from, the state before
each training row, the final states) and `_advanced` (what advance() fed).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from rrnx.distributed import all_gather_rows, process_group_share
from rrnx.errors import RrnxError
from rrnx.models.rrn.base_model import base_scores, side_base
from rrnx.models.rrn.lstm import resolve_kernel
from rrnx.models.rrn.sequences import (SideTensors, entity_ratings, extended_side, gather, ratings_frame_arrays,
                                       row_budget_batches, take_rows)
from rrnx.models.sparse import ranges


def shift_rows_down_(table: torch.Tensor, chunk: int = 1 << 20) -> torch.Tensor:
    """table[1:] = table[:-1] in place (row 0 keeps its value), from the end one chunk at a time, so
    that no second (n, D) table is alive: at Netflix-full scale the user side's is 0.8 GiB."""
    end = len(table)
    while end > 1:
        start = max(end - chunk, 1)
        table[start:end] = table[start - 1:end - 1].clone()  # the source rows are not yet overwritten
        end = start
    return table


class RRNStates:
    """States and predictions of a trained RRN; see the module docstring for what it needs from RRN."""

    def _clear_states(self) -> None:
        self._state_cache = {}
        self._advanced = None

    # ------------------------------------------------------------------ states
    def _states_after_rows(self, side: str, seqs: SideTensors, entities: torch.Tensor):
        """Projected state after every row of `entities` (local CSR in the given order): (R, D), (K,).
        Plain no-grad tensors even inside Lightning's inference mode (they are reused in training)."""
        with torch.inference_mode(False), torch.no_grad():
            net = self._net(side)
            lengths = seqs.lengths[entities]  # (K,)
            local_start = torch.cumsum(lengths, 0) - lengths  # (K,)
            after = torch.empty(int(lengths.sum()), self._net(side).project.out_features,
                                device=lengths.device)  # (R, D)
            ratings = entity_ratings(seqs, entities)  # (K,)
            cell = resolve_kernel(self.hparams.lstm_kernel, lengths.device)[1]
            for chunk in row_budget_batches(lengths, self.hparams.eval_batch_rows, ratings,
                                            self.hparams.eval_batch_ratings):
                # the ratings' ids, rows and entities only for the step statistics (model.py's _step_stats)
                batch = gather(seqs, entities[chunk], cell, ids=bool(self.hparams.step_stats))
                hidden, packing = self._hidden(net, seqs, batch)  # (R_b, H) packed time-major
                rows = ranges(local_start[chunk], lengths[chunk])  # (R_b,) where each local row goes in `after`
                # projected, then put in local order: each entity's rows land as one run of `after` (the packed
                # order scatters them, and torch's index_copy_ took 2x as long on those rows)
                after.index_copy_(0, rows, net.project(hidden).index_select(0, packing.packed_position))
            return after, local_start

    def _states_after_all_rows(self, side: str, seqs: SideTensors) -> torch.Tensor:
        """Projected state after every row of the side, (n_active, D). Under DDP each rank computes the
        rows of a contiguous range of entities (about n_active / world_size rows) and the ranges are
        gathered, so the cache costs every rank its share, not the whole side."""
        share = process_group_share()
        if share.world_size == 1:
            return self._states_after_rows(side, seqs, torch.arange(seqs.n_entities, device=seqs.offsets.device))[0]
        wanted = torch.arange(share.world_size + 1, device=seqs.offsets.device) * seqs.n_active // share.world_size
        cuts = torch.searchsorted(seqs.offsets, wanted).tolist()  # first entity at or after each cut
        local, _ = self._states_after_rows(side, seqs, torch.arange(cuts[share.rank], cuts[share.rank + 1],
                                                                    device=seqs.offsets.device))
        with torch.inference_mode(False), torch.no_grad():
            return all_gather_rows(local, share.world_size)

    def _weights_version(self, side: str) -> tuple:
        """What one side's states are computed from besides the data: its network, factors and biases and
        the model's own buffers, each as (object, storage, in-place version). Every in-place change bumps
        a tensor's version: an optimizer step, load_state_dict, an edit under no_grad; so the cache follows
        any change of the weights, not only the optimizer steps of training_step."""
        tensors = [*self._net(side).parameters(), *self._stationary_params(side), *self.buffers(recurse=False)]
        return tuple((id(t), t.data_ptr(), t._version) for t in tensors)

    def _cached_states(self, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(state before each training row (n_active, D), final state (n_entities, D)) of one side,
        recomputed only when the weights it depends on changed."""
        cached = self._state_cache.get(side)
        version = self._weights_version(side)
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        self._state_cache.pop(side, None)  # a stale table is not needed for the new one: free it first
        seqs = self._sides[side]
        after = self._states_after_all_rows(side, seqs)  # (n_active, D)
        first = seqs.features[:, 0] > 0  # 1_newbie marks each entity's first row
        with torch.inference_mode(False), torch.no_grad():
            final = take_rows(after, seqs.offsets[1:] - 1)  # (n_entities, D)
            before = shift_rows_down_(after)  # (n_active, D): the state after the previous row ...
            before[first] = self._net(side).project.bias  # ... or the initial state for a first row
        self._state_cache[side] = (version, before, final)
        return before, final

    def _final_states(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._attached()
        if self._advanced is not None:
            return self._advanced["final"]["user"], self._advanced["final"]["item"]
        return self._cached_states("user")[1], self._cached_states("item")[1]

    @torch.no_grad()
    def predict_at(self, data, users: torch.Tensor, items: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        """Causal predictions at arbitrary times: each side's state after all its active steps strictly
        before the step the timestamp falls in (at/after the training end: after all training steps;
        after advance(), a query that precedes a rating fed in its own step is refused)."""
        self.attach(data)
        return self._scores_at(users, items, timestamps).float().clamp(self.rating_range[0], self.rating_range[1])

    def _scores_at(self, users, items, timestamps) -> torch.Tensor:
        """predict_at's scores before clamping, (Q,); the model must be attached."""
        # the queries' times are read on the host (step arithmetic in numpy); the ids index the states' device
        users, items, timestamps = (torch.as_tensor(x, dtype=torch.int64).cpu() for x in (users, items, timestamps))
        self._refuse_later_fed("user", users, timestamps)
        self._refuse_later_fed("item", items, timestamps)
        user_table, user_index = self._state_table_at("user", users, timestamps)  # (R_u + K_u, D + k), (Q,)
        item_table, item_index = self._state_table_at("item", items, timestamps)  # (R_i + K_i, D + k), (Q,)
        user_rows, item_rows = take_rows(user_table, user_index), take_rows(item_table, item_index)  # (Q, D + k) each
        users, items = users.to(user_rows.device), items.to(user_rows.device)
        if self.hparams.dynamic_bias:
            width = self.user_net.project.out_features
            pred = (self._dynamic_score(user_rows[:, :width], item_rows[:, :width])
                    + (user_rows[:, width:] * item_rows[:, width:]).sum(-1) + self.mean_offset)
        else:  # one dot over [W u_t + b, u_i] . [W m_t + b, m_j]: eq. (7) in a single pass
            pred = torch.einsum("qd,qd->q", user_rows, item_rows) + self.mean_offset
        if self.hparams.biases:
            pred = pred + take_rows(self.user_bias.weight, users)[:, 0] + take_rows(self.item_bias.weight, items)[:, 0]
        if self.base_model is not None:
            pred = pred + base_scores(self.base_model, users, items, timestamps).to(pred.device)
        return pred

    def _state_table_at(self, side: str, entities: torch.Tensor, timestamps: torch.Tensor):
        """Rows [dynamic state, stationary factors] of the entities queried (after each active step,
        then each one's initial state) and, per query, the row to use; no sort over the queries."""
        seqs = self._advanced["seqs"][side] if self._advanced is not None else self._sides[side]
        device = seqs.offsets.device
        entities, timestamps = entities.to(device), timestamps.to(device)
        present = torch.zeros(seqs.n_entities, dtype=torch.bool, device=device)
        present[entities] = True
        unique = torch.nonzero(present).squeeze(1)  # (K,)
        inverse = (torch.cumsum(present, 0) - 1)[entities]  # (Q,) position of each query's entity in unique
        after, local_start = self._states_after_rows(side, seqs, unique)  # (R, D), (K,)
        lengths = seqs.lengths[unique]
        row_step = seqs.step[ranges(seqs.offsets[unique], lengths)]  # (R,) entity-major, time order
        query_step = torch.as_tensor(seqs.granularity.step_of(timestamps.cpu().numpy()), device=device)  # (Q,)
        last_train_step = int(seqs.granularity.step_of(self._test_start - 1))
        query_step = torch.where(timestamps >= self._test_start, query_step.clamp(min=last_train_step + 1), query_step)
        low = int(min(row_step.min(), query_step.min()))
        span = int(max(row_step.max(), query_step.max())) - low + 1
        row_key = torch.repeat_interleave(torch.arange(len(unique), device=device), lengths) * span + (row_step - low)
        query_start = local_start[inverse]  # (Q,)
        before_count = torch.searchsorted(row_key, inverse * span + (query_step - low)) - query_start
        index = torch.where(before_count > 0, query_start + before_count - 1, len(after) + inverse)  # (Q,)
        factors = self._factors(side).weight[unique]  # (K, k)
        initial = self._net(side).project.bias.expand(len(unique), -1)  # (K, D): h_0 = 0
        table = torch.cat([torch.cat([after, factors.repeat_interleave(lengths, 0)], 1),
                           torch.cat([initial, factors], 1)])  # (R + K, D + k)
        return table, index

    # ------------------------------------------------------------------ update without re-training (Section 4.5)
    @torch.no_grad()
    def advance(self, data, ratings: pd.DataFrame) -> dict:
        """Feed newly observed ratings (user_idx, item_idx, rating, timestamp; after the training
        period) through the trained networks; predictions then use the advanced states. Repeated
        calls accumulate; `reset_states()` goes back to the training states."""
        self.attach(data)
        missing = {"user_idx", "item_idx", "rating", "timestamp"} - set(ratings.columns)
        if missing:
            raise RrnxError(f"advance: ratings lack the columns {', '.join(sorted(missing))}")
        if len(ratings) and int(ratings["timestamp"].min()) < self._test_start:
            raise RrnxError("advance: ratings must come after the training period (timestamp >= data.test_start)")
        previous = self._advanced["ratings"] if self._advanced is not None else ratings.iloc[:0]
        fed = pd.concat([previous, ratings[["user_idx", "item_idx", "rating", "timestamp"]]], ignore_index=True)
        train = data.split.train
        arrays = [np.concatenate([t, n]) for t, n in zip(ratings_frame_arrays(train), ratings_frame_arrays(fed))]
        user_final, item_final = (f.clone() for f in self._final_states())
        finals, seqs = {"user": user_final, "item": item_final}, {}
        for side, column in (("user", "user_idx"), ("item", "item_idx")):
            n = self.hparams.n_users if side == "user" else self.hparams.n_items
            seqs[side] = extended_side(self._sides[side], *arrays, n_entities=n).to(self.mean_offset.device)
            if self.base_model is not None:  # the base's prediction of every training and fed rating
                user, item, _, timestamp = arrays
                seqs[side] = replace(seqs[side], base=side_base(self.base_model, seqs[side], user, item, timestamp))
            touched = torch.as_tensor(np.unique(ratings[column].to_numpy(np.int64)), device=finals[side].device)
            if len(touched):
                after, local_start = self._states_after_rows(side, seqs[side], touched)
                finals[side][touched] = after[local_start + seqs[side].lengths[touched] - 1]
        self._advanced = {"ratings": fed, "seqs": seqs, "final": finals}
        return {"ratings": len(ratings), "users": int(ratings["user_idx"].nunique()),
                "items": int(ratings["item_idx"].nunique())}

    def _refuse_later_fed(self, side: str, entities: torch.Tensor, timestamps: torch.Tensor) -> None:
        """After advance(): a test-period query in the step that straddles test_start (the step grid
        starts at train_start) reads that step's row, which holds the step's fed ratings too; a query
        is refused when one of them is from its time or later, as the answer would use the future (a
        rating fed from 03-24 changed predictions at 03-22 by up to 0.30 in issue 13). Queries in later
        steps, and every query of `rrnx update --until` and the report, only see earlier ratings."""
        if self._advanced is None or len(self._advanced["ratings"]) == 0:
            return
        granularity = self._sides[side].granularity
        straddled = int(granularity.step_of(self._test_start - 1))
        fed = self._advanced["ratings"]
        fed_time = fed["timestamp"].to_numpy(np.int64)
        in_step = granularity.step_of(fed_time) == straddled
        latest = np.full(self._sides[side].n_entities, np.iinfo(np.int64).min)  # latest fed time in that step
        np.maximum.at(latest, fed[f"{side}_idx"].to_numpy(np.int64)[in_step], fed_time[in_step])
        times = timestamps.numpy()
        in_straddled = (times >= self._test_start) & (granularity.step_of(times) <= straddled)
        bad = in_straddled & (latest[entities.numpy()] >= times)  # (Q,) a fed rating of its step is not earlier
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            when = lambda ts: pd.Timestamp(int(ts), unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M")  # noqa: E731
            raise RrnxError(f"predict_at: {int(bad.sum()):,} queries (the first at {when(times[first])}, {side} "
                            f"{int(entities[first])}) precede ratings fed by advance() in their {side} step "
                            f"(up to {when(latest[int(entities[first])])}); their states would use the future: "
                            f"query after the fed ratings, or call reset_states()")

    def reset_states(self) -> None:
        """Forget what advance() fed: back to the states at the end of training."""
        self._advanced = None
