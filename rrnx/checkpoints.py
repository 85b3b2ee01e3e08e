"""The one way rrnx loads a model from a checkpoint file (a run's best.ckpt for `rrnx test`, predict,
update and reports; a PMF run's factors for RRN's pre-train)."""

from __future__ import annotations

from pathlib import Path

from rrnx.errors import RrnxError


def load_model(cls: type, path: Path):
    """`cls` (a RatingModel subclass) rebuilt from the checkpoint at `path`, on the CPU, in eval mode.

    torch.load runs with weights_only=True, explicitly: a checkpoint holds tensors and plain types
    only, so loading one never runs code from the file. A missing, truncated or foreign file (another
    model's, not a checkpoint at all) is a one-line RrnxError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise RrnxError(f"{path}: no such checkpoint file")
    try:
        model = cls.load_from_checkpoint(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/zip/pickle errors, or a state dict of another shape: all mean "cannot load"
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise RrnxError(f"{path}: not a loadable {cls.__name__} checkpoint ({type(exc).__name__}"
                        f"{': ' + reason if reason else ''})") from None
    return model.eval()
