# One image for all five services: `openautoglm serve SERVICE` picks which one runs.
# CPU torch by default; for GPU trainers build with
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OPENAUTOGLM_HOST=0.0.0.0 \
    OPENAUTOGLM_PORT=50051 \
    OPENAUTOGLM_DATA_DIR=/data \
    OPENAUTOGLM_HEALTH_PORT=50052 \
    OTEL_PYTHON_GRPC_EXCLUDED_SERVICES=grpc.health.v1.Health

WORKDIR /app
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY services ./services
COPY gateway ./gateway
RUN pip install .

RUN useradd --create-home --uid 10001 autoglm && mkdir -p /data && chown autoglm /data
USER autoglm
VOLUME ["/data"]
# 50051: the API (TLS; the mesh's certificates are mounted at OPENAUTOGLM_TLS_DIR).
# 50052: the standard health check alone, in plaintext, for probes.
# 8443: the gateway's API as JSON over HTTPS (OPENAUTOGLM_HTTP_PORT; the compose file and k8s set it).
EXPOSE 50051 8443
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["openautoglm", "health", "127.0.0.1:50052"]
ENTRYPOINT ["openautoglm", "serve"]
CMD ["gateway"]
