"""`rrnx bench`: how long an RRN epoch takes at the paper's Netflix 6-month scale, and how far that
is from the floor set by the floating-point work an epoch must do.

Data: rrnx's synthetic generator at a Table 1 preset (netflix-6m: 311k users, 17.7k items,
13.7M training ratings over 183 days), bucketed at 1 day (users) / 7 days (items) as in Table 3's
best row (netflix-full: 2 months both sides, the paper's). Figures: data preparation (generation,
split, bucketing), the user phase, the item phase and evaluation of each epoch, peak resident memory,
an analytic count of an epoch's FLOPs next to this machine's measured matmul rate (the FLOP floor),
and the bytes of the per-rating row gathers next to a measured gather rate (the memory floor).
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from rrnx.data.datamodule import TemporalDataModule
from rrnx.data.synthetic import PRESET_SPLITS, generate_preset, is_cached
from rrnx.models.rrn import RRN
from rrnx.training import CpuThreads, fit_model


def peak_memory_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


class PhaseClock(Callback):
    """Per-epoch phase seconds (from the model) and evaluation seconds."""

    def __init__(self):
        self.epochs: list[dict] = []

    def on_train_epoch_start(self, trainer, model):
        self.device = model.device  # where it trained: Lightning moves the model back to the CPU after fit
        synchronize(model.device)
        self._epoch_start = time.perf_counter()

    def on_validation_epoch_start(self, trainer, model):
        self._eval_start = time.perf_counter()
        self._phases = dict(model._phase_seconds)

    def on_validation_epoch_end(self, trainer, model):
        self.epochs.append({"user_phase_s": self._phases["user"], "item_phase_s": self._phases["item"],
                            "eval_s": time.perf_counter() - self._eval_start,
                            "wall_s": time.perf_counter() - self._epoch_start,  # the whole epoch, clock to clock
                            "val_rmse": float(trainer.callback_metrics["val/rmse"])})


@dataclass
class Shapes:
    users: int
    items: int
    ratings: int  # training ratings
    user_rows: int  # active user steps
    item_rows: int
    eval_ratings: int


def side_flops(rows: int, ratings: int, hp) -> float:
    """Forward FLOPs of one side over `rows` steps holding `ratings` ratings: eq. (5) embedding
    (EmbeddingBag multiply-adds, context columns), eq. (6) LSTM gates (eqs. 1-4), eq. (7) projection."""
    E, H, D = hp.embed_dim, hp.hidden, hp.dynamic_dim
    lstm = 0
    for layer in range(hp.layers):
        lstm += 2 * 4 * H * ((E if layer == 0 else H) + H) + 12 * H  # gate matmuls + gate nonlinearities/cell
    return rows * (lstm + 2 * 3 * E + 2 * H * D) + ratings * 2 * E


def epoch_flops(shapes: Shapes, hp) -> dict:
    """One epoch: each phase = this side forward + backward (~2x forward), the other side's cache
    (forward), the ratings' dot products (eq. 7) forward + backward; evaluation = one item forward
    (the user states are those cached for the item phase) and the validation dot products."""
    dot = 2 * (hp.dynamic_dim + hp.dim)
    user_fwd = side_flops(shapes.user_rows, shapes.ratings, hp)
    item_fwd = side_flops(shapes.item_rows, shapes.ratings, hp)
    user_phase = 3 * user_fwd + item_fwd + 3 * shapes.ratings * dot
    item_phase = 3 * item_fwd + user_fwd + 3 * shapes.ratings * dot
    evaluation = item_fwd + shapes.eval_ratings * dot
    return {"user_phase": user_phase, "item_phase": item_phase, "eval": evaluation,
            "epoch": user_phase + item_phase + evaluation}


def epoch_gather_bytes(shapes: Shapes, hp) -> dict:
    """Bytes the per-rating gathers of one epoch must move, counting each gathered row once (read) and
    each scattered gradient row once: per rating of a side's forward, its row of the EmbeddingBag
    (E floats) with its index and weight (12 bytes); with gradients, that row's gradient again; the
    eq. (7) dot products: both sides' states (D floats) and factors (k floats) and three indices
    (24 bytes), with gradients the own side's state and factor rows again. The LSTM's rows are the
    FLOP floor's, not counted here."""
    E, D, k = 4 * hp.embed_dim + 12, 4 * hp.dynamic_dim, 4 * hp.dim
    dot = 2 * D + 2 * k + 24
    phase = shapes.ratings * (2 * E + E + dot + D + k)  # own side fwd + bwd, the other side's cache, the dots
    evaluation = shapes.ratings * E + shapes.eval_ratings * dot
    return {"user_phase": phase, "item_phase": phase, "eval": evaluation, "epoch": 2 * phase + evaluation}


def gather_rate(hp, rows: int = 4_000_000, table_rows: int = 300_000, repeats: int = 5,
                device: torch.device | str = "cpu") -> float:
    """Measured bytes/s of a row gather shaped like the EmbeddingBag's: `rows` random rows of a
    (table_rows, embed_dim) float32 table (the bytes of the gathered rows per second)."""
    table = torch.randn(table_rows, hp.embed_dim, device=device)
    index = torch.randint(0, table_rows, (rows,), device=device)
    out = table.index_select(0, index)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.index_select(table, 0, index, out=out)
    synchronize(device)
    return out.numel() * 4 * repeats / (time.perf_counter() - start)


def matmul_rate(hp, batch: int = 8192, repeats: int = 20, device: torch.device | str = "cpu") -> float:
    """Measured FLOP/s of a float32 matmul shaped like the LSTM's gate product, on `device` (one probe)."""
    x = torch.randn(batch, hp.embed_dim + hp.hidden, device=device)
    w = torch.randn(hp.embed_dim + hp.hidden, 4 * hp.hidden, device=device)
    torch.mm(x, w)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(x, w)
    synchronize(device)
    seconds = (time.perf_counter() - start) / repeats
    return 2 * batch * x.shape[1] * w.shape[1] / seconds


PROBES = 5  # matmul probes per bench; the floor uses the fastest (see matmul_rates)


def matmul_rates(hp, probes: int = PROBES, device: torch.device | str = "cpu") -> list[float]:
    """`probes` runs of matmul_rate back to back, in order. One probe lasts about 40 ms on a 2-core CPU, and
    on a shared machine one process's probes spread widely (59-86 GFLOP/s on one machine, 139-380 on
    another: docs/benchmarks.md, "The floor's probe", has the command): the floor takes the fastest, the
    machine's rate when nothing slowed it; the first is the single probe the floor used before."""
    return [matmul_rate(hp, device=device) for _ in range(probes)]


def prepare(preset: str, user_granularity: str, item_granularity: str, seed: int, say,
            cache_dir: Path | None = None) -> tuple:
    """The preset's data, split and bucketed, and the seconds each part took. With `cache_dir`, through
    rrnx's caches, as `rrnx fit` on `format: synthetic`: the split and buckets are read back from the
    prepared-data cache when an earlier run stored them (the table is then not even read); else the
    generated table is read from the synthetic-data cache (or generated and written there), split,
    bucketed, and the result stored for the next run."""
    settings = dict(format="synthetic", synthetic={"preset": preset, "seed": seed}, seed=seed,
                    user_granularity=user_granularity, item_granularity=item_granularity, **PRESET_SPLITS[preset])
    if cache_dir is None:
        data, timings = _prepare_uncached(preset, seed, say, settings)
    else:
        data, timings = _prepare_cached(preset, seed, say, settings, cache_dir)
    timings["peak_memory_gb"] = peak_memory_gb()
    return data, timings


def _prepare_uncached(preset: str, seed: int, say, settings: dict) -> tuple:
    start = time.perf_counter()
    table, _ = generate_preset(preset, seed=seed)
    timings = {"generation_s": time.perf_counter() - start}
    say(f"generated {len(table):,} ratings ({preset}) in {timings['generation_s']:.1f} s")
    holder = [table]  # the data module takes the only reference and frees the table once split
    del table
    data = TemporalDataModule.from_owned_table(holder, **settings)  # no cache file
    timings["split_s"], timings["bucketing_s"] = data.prepare_seconds["split"], data.prepare_seconds["bucketing"]
    return data, timings


def _prepare_cached(preset: str, seed: int, say, settings: dict, cache_dir: Path) -> tuple:
    generation_cached = is_cached({"preset": preset, "seed": seed}, cache_dir)
    data = TemporalDataModule(cache_dir=str(cache_dir), **settings)
    data.setup()
    seconds = data.prepare_seconds
    if data.prepared_cache == "read":
        say(f"read the split and bucketed data ({preset}) from the cache in {seconds['read']:.1f} s")
        return data, {"prepared_cache": "read", "prepared_read_s": seconds["read"]}
    say(f"{'read' if generation_cached else 'generated'} the {preset} table in {seconds['table']:.1f} s, "
        f"split and bucketed it in {seconds['split'] + seconds['bucketing']:.1f} s")
    return data, {"generation_s": seconds["table"], "generation_cached": generation_cached,
                  "split_s": seconds["split"], "bucketing_s": seconds["bucketing"],
                  "prepared_cache": data.prepared_cache, "prepared_write_s": seconds["write"]}


def synchronize(device) -> None:
    """Wait for queued kernels (CUDA runs them asynchronously: a clock must not stop before they end)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(preset: str = "netflix-6m", epochs: int = 1, threads: int | None = None,
              user_granularity: str = "1d", item_granularity: str = "7d", seed: int = 0,
              model_args: dict | None = None, accelerator: str = "auto", cache_dir: Path | None = None,
              say=print) -> dict:
    from rrnx.loggers import quiet_lightning

    quiet_lightning()
    policy = None
    if threads:
        torch.set_num_threads(threads)
    else:
        policy = CpuThreads()
    torch.manual_seed(seed)
    data, timings = prepare(preset, user_granularity, item_granularity, seed, say, cache_dir)
    model = RRN(data.n_users, data.n_items, **{"pretrain_epochs": 0, **(model_args or {})})
    model.set_data_stats(data.rating_range, data.rating_mean)
    timings.update(load_cell(model.hparams.lstm_kernel, accelerator))
    clock = PhaseClock()
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, accelerator=accelerator, devices=1,
                        callbacks=[clock, *([policy] if policy else [])])
    fit_model(trainer, model, data)
    shapes = Shapes(data.n_users, data.n_items, len(data.split.train), data.user_steps.n_active,
                    data.item_steps.n_active, len(data.split.val))
    flops = epoch_flops(shapes, model.hparams)
    rates = matmul_rates(model.hparams, device=clock.device)
    rate = max(rates)
    gathers = epoch_gather_bytes(shapes, model.hparams)
    bandwidth = gather_rate(model.hparams, device=clock.device)
    chosen = (policy.policy.history if policy else []) or [torch.get_num_threads()]
    used = (f"{chosen[0]} threads" if len(chosen) == 1 else "threads " + " -> ".join(map(str, chosen)))
    return {"preset": preset, "threads": used + (" (free cores)" if policy else ""),
            "granularity": f"{user_granularity}/{item_granularity}",
            "device": device_name(clock.device), "lstm_kernel": resolved_kernel(model.hparams.lstm_kernel, clock.device),
            "peak_device_memory_gb": (torch.cuda.max_memory_allocated(clock.device) / 2**30
                                      if clock.device.type == "cuda" else None),
            "shapes": shapes.__dict__, "data": timings, "epochs": clock.epochs, "flops": flops,
            "gather_bytes": gathers, "gather_bytes_per_s": bandwidth,
            "matmul_flops_per_s": rate, "matmul_probes_flops_per_s": rates, "peak_memory_gb": peak_memory_gb(),
            "hparams": dict(model.hparams)}


def load_cell(kernel: str, accelerator: str) -> dict:
    """Build or load the compiled cell before the clock starts: on a machine's first run the build (about a
    minute) would otherwise count in the user phase. {"cell_build_s": seconds} when it was built, else {}."""
    from rrnx.models.rrn.fused import is_built
    from rrnx.models.rrn.lstm import resolve_kernel

    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return {}  # the GPU runs cuDNN or torch's LSTM: nothing to build
    built, start = is_built(), time.perf_counter()
    ran, _ = resolve_kernel(kernel, torch.device("cpu"))  # as the phases will, building the cell if they use it
    return {"cell_build_s": time.perf_counter() - start} if ran == "fused" and not built else {}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    return "cpu"


def resolved_kernel(kernel: str, device: torch.device) -> str:
    """What lstm_kernel ran: auto is cuDNN on CUDA, the fused cell on the CPU unless it failed to build."""
    if kernel != "auto":
        return kernel
    if device.type == "cuda":
        return "cudnn"
    from rrnx.models.rrn.fused import fused_cell
    return "fused" if fused_cell() is not None else "torch (fused cell unavailable)"


def prepare_line(d: dict) -> str:
    """The report's `prepare` line: what was generated, read from a cache or computed, and its seconds."""
    if d.get("prepared_cache") == "read":
        return (f"split and bucketing read from the cache in {d['prepared_read_s']:.1f} s "
                "(prepared data: no table read, no split, no bucketing)" + cell_note(d))
    line = (f"generation {d['generation_s']:.1f} s{' (read from the cache)' if d.get('generation_cached') else ''}, "
            f"split {d['split_s']:.1f} s, bucketing {d['bucketing_s']:.1f} s")
    if d.get("prepared_cache") == "written":
        line += f"; prepared data written to the cache in {d['prepared_write_s']:.1f} s"
    elif d.get("prepared_cache") == "not written":
        line += "; the prepared data could not be cached"
    return line + cell_note(d)


def cell_note(d: dict) -> str:
    return f"; the fused LSTM cell built in {d['cell_build_s']:.1f} s (before the clock)" if "cell_build_s" in d else ""


def format_report(result: dict) -> str:
    s, d, f, rate = result["shapes"], result["data"], result["flops"], result["matmul_flops_per_s"]
    gathers, bandwidth = result["gather_bytes"], result["gather_bytes_per_s"]
    lines = [f"rrnx bench: RRN on synthetic {result['preset']}, granularity {result['granularity']} (user/item), "
             f"{result['threads']}, {result['device']}, LSTM {result['lstm_kernel']}",
             f"  data        {s['users']:,} users, {s['items']:,} items, {s['ratings']:,} train ratings, "
             f"{s['user_rows']:,} user steps, {s['item_rows']:,} item steps, {s['eval_ratings']:,} val ratings",
             f"  prepare     {prepare_line(d)}"]
    for i, e in enumerate(result["epochs"]):
        total = e["user_phase_s"] + e["item_phase_s"]
        lines.append(f"  epoch {i}     user phase {e['user_phase_s']:.1f} s, item phase {e['item_phase_s']:.1f} s, "
                     f"both {total:.1f} s; evaluation {e['eval_s']:.1f} s (val RMSE {e['val_rmse']:.4f}); "
                     f"wall {e['wall_s']:.1f} s")
    floor = {k: v / rate for k, v in f.items()}
    probes = result.get("matmul_probes_flops_per_s") or [rate]
    single = f["epoch"] / probes[0]  # the floor of one probe, the definition before the fastest of several
    lines += [f"  work        {f['epoch'] / 1e9:,.1f} GFLOP per epoch (user phase {f['user_phase'] / 1e9:,.1f}, "
              f"item phase {f['item_phase'] / 1e9:,.1f}, evaluation {f['eval'] / 1e9:,.1f})",
              f"  machine     {rate / 1e9:,.1f} GFLOP/s measured float32 matmul (gate-shaped, {result['device']}; "
              f"the fastest of {len(probes)} probes: " + ", ".join(f"{r / 1e9:,.1f}" for r in probes) + ")",
              f"  floor       {floor['epoch']:.1f} s per epoch at that rate (user {floor['user_phase']:.1f} s, "
              f"item {floor['item_phase']:.1f} s, evaluation {floor['eval']:.1f} s); "
              + ", ".join(f"epoch {i} {(e['user_phase_s'] + e['item_phase_s']) / floor['epoch']:.2f}x it"
                          for i, e in enumerate(result["epochs"])) + " (both phases; at the first probe's rate, "
              + ", ".join(f"{(e['user_phase_s'] + e['item_phase_s']) / single:.2f}x" for e in result["epochs"]) + ")",
              f"  gathers     {gathers['epoch'] / 1e9:,.1f} GB of per-rating rows per epoch at {bandwidth / 1e9:,.1f} GB/s "
              f"measured (random {result['hparams']['embed_dim']}-float rows): memory floor "
              f"{gathers['epoch'] / bandwidth:.1f} s",
              f"  peak memory {result['peak_memory_gb']:.2f} GiB resident ({d['peak_memory_gb']:.2f} GiB by the end of preparation)"
              + (f", {result['peak_device_memory_gb']:.2f} GiB allocated on the GPU"
                 if result.get("peak_device_memory_gb") is not None else "")]
    return "\n".join(lines)
