"""NeuroHorizon: probabilistic, autoregressive forecasting of neural population spiking.

Python entry points (the CLI `neurohorizon` wraps the same functions):

    from neurohorizon import Recording, load_data, load_run, forecast
"""

__version__ = "0.1.0"

__all__ = ["Recording", "load_data", "load_run", "forecast", "__version__"]


def __getattr__(name):  # lazy: importing the package must not pull in torch
    if name == "Recording":
        from neurohorizon.data.recording import Recording

        return Recording
    if name == "load_data":
        from neurohorizon.data.sources import load_data

        return load_data
    if name == "load_run":
        from neurohorizon.evaluation.loading import load_run

        return load_run
    if name == "forecast":
        from neurohorizon.evaluation.forecast import forecast

        return forecast
    raise AttributeError(f"module 'neurohorizon' has no attribute {name!r}")
