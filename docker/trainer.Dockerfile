# The training job (fraud-train) with the training extra: TensorFlow, scikit-learn, matplotlib.
# Writes model bundles into /models, which the worker image reads.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker/ worker/
COPY training/ training/
RUN pip install '.[training]' && rm -rf /src

RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent fraud \
    && mkdir -p /models /data && chown fraud:fraud /models
USER 10001:10001
WORKDIR /tmp

ENTRYPOINT ["fraud-train"]
CMD ["--synthetic", "50000", "--fraud-rate", "0.01", "--models-dir", "/models"]
