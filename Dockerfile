# The gateway as a container: installs the package and runs it as a non-root user on
# configs/gateway.yaml (mount your own at /etc/pipeline/gateway.yaml, or pass --config).
FROM python:3.11-slim AS build
# a C compiler for the optional accelerators (plugins/_native); the wheel carries them.
# libnghttp2-dev: the OTLP receiver's native gRPC server (plugins/_native/_h2server.c)
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev libnghttp2-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md hatch_build.py ./
COPY pipeline ./pipeline
COPY plugins ./plugins
COPY configs ./configs
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin pipeline \
    && apt-get update && apt-get install -y --no-install-recommends libnghttp2-14 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY configs /etc/pipeline
# The configs listen on localhost unless these say otherwise. A container is reached through
# its own network interface (published ports, a Kubernetes Service), never its loopback, so the
# image listens on every interface of the container: restrict who can reach it at the network
# level, and use TLS and an authenticator (docs/security.md) when it is reachable beyond that.
ENV OTLP_GRPC_ENDPOINT=0.0.0.0:4317 \
    OTLP_HTTP_ENDPOINT=0.0.0.0:4318 \
    PROMETHEUS_EXPORTER_ENDPOINT=0.0.0.0:8889 \
    HEALTH_CHECK_ENDPOINT=0.0.0.0:13133 \
    PIPELINE_TELEMETRY_ADDRESS=0.0.0.0:8888 \
    JAEGER_THRIFT_HTTP_ENDPOINT=0.0.0.0:14268 \
    JAEGER_THRIFT_COMPACT_ENDPOINT=0.0.0.0:6831 \
    JAEGER_THRIFT_BINARY_ENDPOINT=0.0.0.0:6832
USER 10001
# OTLP gRPC, OTLP HTTP, own metrics, Prometheus exporter, health check,
# Jaeger thrift_http, Jaeger thrift_compact / thrift_binary (UDP)
EXPOSE 4317 4318 8888 8889 13133 14268 6831/udp 6832/udp
# Liveness from the health_check extension (configs/gateway.yaml enables it on 13133);
# load balancers should use /ready instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:13133/live', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["pipeline"]
CMD ["run", "--config", "/etc/pipeline/gateway.yaml"]
