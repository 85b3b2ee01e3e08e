"""Packaging that pyproject.toml cannot express: the wheel carries the top-level recipes/ and sweeps/
folders (their only copy) as rrnx/_shipped/recipes and rrnx/_shipped/sweeps, siblings as in the
repository, so `rrnx fit NAME` and `rrnx sweep NAME` find them on any install (rrnx.packaged), and
the MovieTweetings 100K snapshot (MIT) ships with its LICENSE and citation (rrnx/datasets/)."""

from setuptools import find_packages, setup

SHIPPED = {"rrnx._shipped.recipes": "recipes", "rrnx._shipped.sweeps": "sweeps"}

DATASETS = "rrnx.datasets"  # a data folder: one subfolder per data set, no code

setup(
    packages=find_packages(include=["rrnx*"]) + [DATASETS, *SHIPPED],
    package_dir=SHIPPED,
    # the fused LSTM cell's C++ source, compiled at first use (rrnx/models/rrn/fused.py)
    package_data={DATASETS: ["*/*"], "rrnx.models.rrn": ["*.cpp"], **{name: ["*.yaml"] for name in SHIPPED}},
)
