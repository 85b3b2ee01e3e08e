"""Surprise's classic algorithms as rrnx models (Hug, "Surprise: A Python library for recommender
systems", JOSS 2020): BaselineOnly (Koren 2010), SVD (Funk 2006; Koren, Bell & Volinsky 2009),
SVD++ (Koren, KDD 2008) and KNNBaseline (Koren 2010, eq. 3).

Each wrapper is an rrnx `RatingModel`: rrnx builds the split and hands the model the training
rows; the model fits the Surprise algorithm on them once, in its first training step (Surprise
runs its own epochs), and predicts every validation and test row with it. Ids given to Surprise
are rrnx's contiguous user/item indices, so a row whose user or item has no training rating gets
Surprise's own fallback (the global mean). Timestamps are ignored: these are static models.

Later trainer epochs change nothing (their validation RMSE repeats the first), so a recipe
wants `trainer.max_epochs: 1` for them; `rrnx compare` runs them with the shared recipe anyway.
The fitted algorithm is pickled into the Lightning checkpoint (`on_save_checkpoint`), so
`rrnx test`, `predict` and reports reload it like any model.
"""

from __future__ import annotations

import pickle

import numpy as np
import torch
from torch import nn

from rrnx.data.batches import Batches, one_batch
from rrnx.models.base import TRAIN_LOSS, RatingModel

CHECKPOINT_KEY = "surprise_algorithm"


class SurpriseModel(RatingModel):
    """Shared wrapper; subclasses say which algorithm to build from their hyperparameters."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False  # Surprise trains itself
        # 1 once fitted; a parameter so the (no-op) optimizer has something to hold and counts steps
        self.fitted = nn.Parameter(torch.zeros(()), requires_grad=False)
        self.algorithm = None

    def build(self):
        raise NotImplementedError

    def train_loader(self, data) -> Batches:
        return one_batch(data.triples("train"))  # Surprise fits on the whole training set

    def training_step(self, batch: dict, batch_idx: int) -> None:
        if self.algorithm is None:
            self.algorithm = self.fit_surprise(batch)
            self.fitted.fill_(1.0)
        self.optimizers().step()  # a no-op that counts the step: Lightning checkpoints by global step
        mse = ((self.predict_ratings(batch) - batch["rating"].float()) ** 2).mean()
        self.log(TRAIN_LOSS, mse, prog_bar=True, batch_size=len(batch["rating"]))

    def fit_surprise(self, batch: dict):
        from surprise import Dataset, Reader

        import pandas as pd

        frame = pd.DataFrame({"user": batch["user"].numpy(), "item": batch["item"].numpy(),
                              "rating": batch["rating"].numpy().astype(np.float64)})
        low, high = (float(v) for v in self.rating_range)
        trainset = Dataset.load_from_df(frame, Reader(rating_scale=(low, high))).build_full_trainset()
        algorithm = self.build()
        algorithm.fit(trainset)
        return algorithm

    def predict_ratings(self, batch: dict) -> torch.Tensor:
        if self.algorithm is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: train it (rrnx fit) or load a checkpoint")
        predict = self.algorithm.predict
        estimates = [predict(u, i).est for u, i in zip(batch["user"].tolist(), batch["item"].tolist())]
        return torch.tensor(estimates, dtype=torch.float32)  # (B,)

    def configure_optimizers(self):
        # Surprise fits in training_step; this optimizer only advances Lightning's step count
        return torch.optim.SGD([self.fitted], lr=0.0)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = pickle.dumps(self.algorithm)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.algorithm = pickle.loads(checkpoint[CHECKPOINT_KEY])

    def num_parameters(self) -> int:
        """The fitted algorithm's learned arrays (biases, factors, similarities), not its training data."""
        if self.algorithm is None:
            return 0
        learned = [v for k, v in vars(self.algorithm).items() if isinstance(v, np.ndarray) and k != "trainset"]
        return int(sum(v.size for v in learned))


class SurpriseBaseline(SurpriseModel):
    """`surprise-baseline`: surprise.BaselineOnly, mu + b_u + b_i.

    Args:
        method: `als` (Surprise's default) or `sgd`.
        reg_u, reg_i: ALS regularisation of user and item biases (Surprise: 15, 10).
        n_epochs: ALS sweeps (Surprise: 10).
    """

    search_space = {"model.reg_u": {"low": 0.1, "high": 100.0, "log": True},
                    "model.reg_i": {"low": 0.1, "high": 100.0, "log": True}}

    def __init__(self, n_users: int, n_items: int, method: str = "als", reg_u: float = 15.0, reg_i: float = 10.0,
                 n_epochs: int = 10):
        super().__init__()
        self.save_hyperparameters()

    def build(self):
        from surprise import BaselineOnly

        hp = self.hparams
        return BaselineOnly(bsl_options={"method": hp.method, "reg_u": hp.reg_u, "reg_i": hp.reg_i,
                                         "n_epochs": hp.n_epochs}, verbose=False)


class SurpriseSVD(SurpriseModel):
    """`surprise-svd`: surprise.SVD, biased matrix factorisation by per-rating SGD.

    Args (Surprise's defaults): n_factors 100, n_epochs 20, lr_all 0.005, reg_all 0.02,
        init_std_dev 0.1, biased True; seed is Surprise's random_state.
    """

    search_space = {"model.n_factors": [10, 20, 50, 100, 200],
                    "model.reg_all": {"low": 0.003, "high": 0.3, "log": True},
                    "model.lr_all": {"low": 0.001, "high": 0.02, "log": True}}

    def __init__(self, n_users: int, n_items: int, n_factors: int = 100, n_epochs: int = 20, lr_all: float = 0.005,
                 reg_all: float = 0.02, init_std_dev: float = 0.1, biased: bool = True, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()

    def build(self):
        from surprise import SVD

        hp = self.hparams
        return SVD(n_factors=hp.n_factors, n_epochs=hp.n_epochs, lr_all=hp.lr_all, reg_all=hp.reg_all,
                   init_std_dev=hp.init_std_dev, biased=hp.biased, random_state=hp.seed)


class SurpriseSVDpp(SurpriseModel):
    """`surprise-svdpp`: surprise.SVDpp, SVD with implicit feedback (the items each user rated).

    Args (Surprise's defaults): n_factors 20, n_epochs 20, lr_all 0.007, reg_all 0.02,
        init_std_dev 0.1; seed is Surprise's random_state.
    """

    search_space = {"model.n_factors": [10, 20, 50],
                    "model.reg_all": {"low": 0.003, "high": 0.3, "log": True},
                    "model.lr_all": {"low": 0.001, "high": 0.02, "log": True}}

    def __init__(self, n_users: int, n_items: int, n_factors: int = 20, n_epochs: int = 20, lr_all: float = 0.007,
                 reg_all: float = 0.02, init_std_dev: float = 0.1, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()

    def build(self):
        from surprise import SVDpp

        hp = self.hparams
        return SVDpp(n_factors=hp.n_factors, n_epochs=hp.n_epochs, lr_all=hp.lr_all, reg_all=hp.reg_all,
                     init_std_dev=hp.init_std_dev, random_state=hp.seed, cache_ratings=True)


class SurpriseKNN(SurpriseModel):
    """`surprise-knn`: surprise.KNNBaseline, neighbourhood model on top of baseline estimates.

    Args:
        k, min_k: neighbours used at most / at least (Surprise: 40, 1).
        similarity: `pearson_baseline` (Koren's shrunk baseline correlation), `msd`, `cosine` or `pearson`.
        user_based: False (default here; Surprise's default is True) compares items, whose number
            is small on every rrnx set, so the similarity matrix stays small.
        shrinkage: shrinkage of pearson_baseline (Surprise: 100).
    """

    search_space = {"model.k": {"low": 10, "high": 100, "step": 10},
                    "model.shrinkage": {"low": 1.0, "high": 300.0, "log": True}}

    def __init__(self, n_users: int, n_items: int, k: int = 40, min_k: int = 1, similarity: str = "pearson_baseline",
                 user_based: bool = False, shrinkage: float = 100.0):
        super().__init__()
        self.save_hyperparameters()

    def build(self):
        from surprise import KNNBaseline

        hp = self.hparams
        sim = {"name": hp.similarity, "user_based": hp.user_based, "shrinkage": hp.shrinkage}
        return KNNBaseline(k=hp.k, min_k=hp.min_k, sim_options=sim, verbose=False)
