# The NegGen worker image: the package installed, a Prefect process worker as its command, run
# as an unprivileged user. Dependencies are installed before the code is copied, so that a code
# change rebuilds only the last layers.
FROM python:3.11-slim

# NEGGEN_HOME: where prefect.yaml's pull step runs the flow; NEGGEN_ARTIFACTS_ROOT: the
# deployments' default artifact root (`prefect deploy` run here), on the volume below
ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    NEGGEN_HOME=/opt/neggen \
    NEGGEN_ARTIFACTS_ROOT=/data/artifacts

WORKDIR /opt/neggen
# torch's CPU build first: an unpinned resolve would pull the multi-GB CUDA build
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
# the Dask task runner and s3:// artifacts by default; `--build-arg EXTRAS=ray,s3` for Ray
ARG EXTRAS=dask,s3
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
extras = [e for e in '${EXTRAS}'.split(',') if e]; \
print('\n'.join(p['dependencies'] + [d for e in extras for d in p['optional-dependencies'][e]]))" \
    > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY neggen ./neggen
COPY neggen_core ./neggen_core
COPY tasks ./tasks
COPY flows ./flows
COPY configs ./configs
COPY prefect.yaml ./
RUN pip install --no-deps .

# Artifacts and the LLM response cache live on the shared volume mounted here; compose mounts
# the user's own input read-only at /data/input.
RUN useradd --create-home --uid 10001 neggen && mkdir -p /data && chown neggen:neggen /data
USER neggen
VOLUME ["/data"]
CMD ["prefect", "worker", "start", "--pool", "neggen-pool", "--type", "process"]
