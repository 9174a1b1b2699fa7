# The gateway as a container: installs the package and runs it as a non-root user on
# configs/gateway.yaml (mount your own at /etc/pipeline/gateway.yaml, or pass --config).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY plugins ./plugins
COPY configs ./configs
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin pipeline
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY configs /etc/pipeline
USER 10001
# OTLP gRPC, OTLP HTTP, own metrics, Prometheus exporter, health check,
# Jaeger thrift_http, Jaeger thrift_compact / thrift_binary (UDP)
EXPOSE 4317 4318 8888 8889 13133 14268 6831/udp 6832/udp
ENTRYPOINT ["pipeline"]
CMD ["run", "--config", "/etc/pipeline/gateway.yaml"]
