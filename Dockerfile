# syntax=docker/dockerfile:1
# One image for every process of the platform: the Dagster code location (webserver, daemon and run
# pods use it: `dagster api grpc ...`, `dagster api execute_run ...`), the Kafka lander (`recon land`)
# and the partner API (`recon api`, the default command).
#
# Two stages: `build` has pip and the build tools and installs the project and its pinned
# dependencies (constraints.txt) into a virtualenv; `runtime` gets only that virtualenv and the source
# tree (sql/ and expectations/ are read from it), and runs as an unprivileged user (uid 10001).
# The base image is pinned to a Python patch release; pin its digest too in your registry mirror
# (FROM python:3.11.14-slim-bookworm@sha256:...). Checked statically by tests/unit/test_deploy_artifacts.py
# (and hadolint when installed); no image is built in CI here (no Docker engine).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies first (a layer that changes only with pyproject.toml / constraints.txt) ...
COPY pyproject.toml constraints.txt README.md ./
RUN mkdir -p reconciliation_pipeline partner_api \
    && touch reconciliation_pipeline/__init__.py partner_api/__init__.py \
    && pip install -c constraints.txt . \
    && pip uninstall -y recon-platform
# ... then the code, installed in place (the source tree is the package: sql/ and expectations/ beside it).
COPY reconciliation_pipeline ./reconciliation_pipeline
COPY partner_api ./partner_api
COPY sql ./sql
COPY expectations ./expectations
COPY workspace.yaml ./
RUN pip install --no-deps -c constraints.txt -e . \
    && python -m compileall -q reconciliation_pipeline partner_api

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="recon" \
      org.opencontainers.image.description="Payment reconciliation: Dagster code location, Kafka lander, partner API" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 recon \
    && useradd --system --uid 10001 --gid recon --home-dir /app --no-create-home --shell /usr/sbin/nologin recon \
    && mkdir -p /data /opt/dagster/dagster_home \
    && chown recon:recon /data /opt/dagster/dagster_home
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECON_DATA_DIR=/data \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    RECON_LOG_FORMAT=json
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["recon"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
