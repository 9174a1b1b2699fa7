"""Every ``otlp`` exporter test runs on both gRPC clients: the native one
(plugins/otlpexporter/native_sender.py) and grpcio's (plugins/otlpexporter/sender.py)."""

from __future__ import annotations

from tests.plugins._native_support import both_paths

grpc_client = both_paths(
    "_h2server", disable=lambda mp: mp.setenv("PIPELINE_GRPC_CLIENT", "grpcio")
)
