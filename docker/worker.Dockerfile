# The streaming worker: base dependencies only (kafka-python, crc32c, prometheus-client, numpy,
# LiteRT, msgspec, cryptography for bundle signatures). No TensorFlow: see docs/architecture.md,
# "Dependency rule". Also runs the operator tools (worker/programs/: fraud-replay, `fraud-worker
# create-topics` / `tail-alerts` / `reconcile`), which need nothing more. training/ is not copied:
# nothing here imports it (fraud-train is the trainer image's job, and its script in this image
# would fail at import).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker/ worker/
RUN pip install . && rm -rf /src

# A fixed non-root uid, so a models volume shared with the trainer image has one owner.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent fraud \
    && mkdir -p /models && chown fraud:fraud /models
USER 10001:10001
WORKDIR /home/fraud

# In a container the metrics server must listen beyond loopback to be scraped.
ENV FRAUD_MODELS_DIR=/models FRAUD_METRICS_HOST=0.0.0.0 FRAUD_METRICS_PORT=9108
EXPOSE 9108
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]

ENTRYPOINT ["fraud-worker"]
CMD []
