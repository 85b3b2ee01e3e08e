"""rrnx plugin: a deep autoencoder for collaborative filtering (Kuchaiev & Ginsburg, 2017)."""

from rrnx_deepautoencoder.model import DeepAutoencoder

__all__ = ["DeepAutoencoder"]
__version__ = "0.1.0"
