"""RRN: Recurrent Recommender Networks (Wu, Ahmed, Beutel, Smola, Jing; WSDM 2017).

model.py      the LightningModule: the networks, eqs. (5)-(8), alternating phases (training)
states.py     the state cache, causal predictions at any time (predict_at), advance (Section 4.5)
sequences.py  per-side CSR step sequences, batching and time-major packing
lstm.py       the packed LSTM of eq. (6) with hand-written backprop through time
pretrain.py   the stationary factors' pre-train (Section 4.1)
"""

from rrnx.models.rrn.model import RRN

__all__ = ["RRN"]
