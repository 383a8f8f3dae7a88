"""NeuroHorizon: probabilistic, autoregressive forecasting of neural population spiking."""

__version__ = "0.1.0"
