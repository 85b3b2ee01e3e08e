"""`python tests/ddp_fit.py RECIPE OUT [--section.key=value ...]`: rrnx.run.fit for tests/test_ddp.py, with
callbacks a command line cannot add. Lightning's DDP launcher runs this file again for every other rank,
so each rank saves the weights it ends training with (OUT/weights-rank{R}.pt) and its strategy's class name
(OUT/weights-rank{R}.strategy); RRNX_TEST_KILL_AT_EPOCH=E
makes rank 0 die as epoch E begins (after epoch E-1's checkpoints). Rank 0 prints metrics.json's content."""

import json
import os
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from rrnx.recipe import apply_overrides, load_recipe, parse_overrides
from rrnx.run import fit


class SaveWeights(Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer, model) -> None:
        torch.save(model.state_dict(), self.out / f"weights-rank{trainer.global_rank}.pt")
        (self.out / f"weights-rank{trainer.global_rank}.strategy").write_text(type(trainer.strategy).__name__)


class KillAt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, model) -> None:
        if trainer.current_epoch == self.epoch and trainer.global_rank == 0:
            raise RuntimeError(f"killed as epoch {self.epoch} began")


if __name__ == "__main__":
    recipe_path, out = sys.argv[1], Path(sys.argv[2])
    kill = os.environ.get("RRNX_TEST_KILL_AT_EPOCH")
    callbacks = [SaveWeights(out)] + ([KillAt(int(kill))] if kill else [])
    if recipe_path == "--resume":
        metrics = fit({}, out, resume=True, quiet=True, callbacks=callbacks)
    else:
        recipe = apply_overrides(load_recipe(recipe_path), parse_overrides(sys.argv[3:]))
        metrics = fit(recipe, out, quiet=True, callbacks=callbacks)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        print(json.dumps(metrics))
