# The NegGen worker image: the package installed, a Prefect process worker as its command.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false

WORKDIR /opt/neggen
# torch's CPU build first: an unpinned resolve would pull the multi-GB CUDA build
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY neggen ./neggen
COPY neggen_core ./neggen_core
COPY tasks ./tasks
COPY flows ./flows
COPY configs ./configs
COPY prefect.yaml ./
# the Dask task runner and s3:// artifacts by default; `--build-arg EXTRAS=ray,s3` for Ray
ARG EXTRAS=dask,s3
RUN pip install ".[${EXTRAS}]"

# Artifacts and the LLM response cache live on the shared volume mounted here.
VOLUME ["/data"]
CMD ["prefect", "worker", "start", "--pool", "neggen-pool", "--type", "process"]
