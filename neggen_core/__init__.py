"""NegGen core: pure stage functions, config, artifact store. Never imports Prefect."""

__version__ = "0.1.0"
