"""rrnx: Recurrent Recommender Networks (Wu, Ahmed, Beutel, Smola, Jing; WSDM 2017) and the
baselines they are measured against, on strict train-on-the-past, predict-the-future splits."""

__version__ = "0.1.0"
