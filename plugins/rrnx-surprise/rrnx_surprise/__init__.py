"""rrnx plugin: Surprise's BaselineOnly, SVD, SVD++ and KNNBaseline as rrnx models."""

from rrnx_surprise.model import SurpriseBaseline, SurpriseKNN, SurpriseSVD, SurpriseSVDpp

__all__ = ["SurpriseBaseline", "SurpriseKNN", "SurpriseSVD", "SurpriseSVDpp"]
__version__ = "0.1.0"
