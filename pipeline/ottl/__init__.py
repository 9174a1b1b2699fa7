"""The OpenTelemetry Transformation Language (OTTL): parsed with lark, compiled once into
Python closures, run on encoded payloads that decode only what the statements touch.

Used by the ``transform`` and ``filter`` processors; plugins add functions through the
``register_ottl_functions`` hook (see :mod:`pipeline.hookspecs`).
"""

from pipeline.ottl.compiler import (
    Condition,
    Functions,
    OTTLCompileError,
    Param,
    Statement,
    StatementError,
    compile_conditions,
    compile_statements,
    default_functions,
)
from pipeline.ottl.grammar import OTTLSyntaxError
from pipeline.ottl.values import OTTLRuntimeError

__all__ = [
    "Condition",
    "Functions",
    "OTTLCompileError",
    "OTTLRuntimeError",
    "OTTLSyntaxError",
    "Param",
    "Statement",
    "StatementError",
    "compile_conditions",
    "compile_statements",
    "default_functions",
]
