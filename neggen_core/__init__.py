"""NegGen core: pure stage functions, config, artifact store. Never imports Prefect."""

import os

# MKL's strict reproducibility mode: matrix products give the same bits whatever the number of
# threads (a training run on 1 worker x 2 threads equals one on 2 workers x 1 thread). It must be
# set before MKL's first call; its cost on this project's products was not measurable.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"
