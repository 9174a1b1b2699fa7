"""The fuzz targets: every entry point that reads untrusted bytes, one row of :data:`TARGETS`.

A target's ``setup`` imports what it needs and returns its one-input function: it takes any
bytes, raises nothing for input the code under test handles as documented (the C scanners'
``ValueError``, the decoders' ``PermanentError``/``ThriftDecodeError``/``ValueError``), and raises
(an ``AssertionError`` or the unexpected exception itself) when a property is broken: a C path
that disagrees with its Python twin, an error type nobody catches, a result that does not
re-encode. Sanitizer reports and crashes end the process.

The same functions run three ways: under atheris with libFuzzer and the sanitized C modules
(``tests/fuzz/run.py``, from ``scripts/native_check.sh``), and in plain pytest, which replays the
seed corpus and every past finding (``tests/fuzz/test_corpus.py``). Only the standard library is
imported here at module level, so atheris instruments what ``setup`` imports.

Adding a target is one row: a C function that takes bytes and raises ``ValueError`` for malformed
input needs no code (``c_entry("_module", "function")``); anything else names its setup.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import re
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

OneInput = Callable[[bytes], None]


@dataclass(frozen=True)
class Target:
    name: str
    setup: Callable[[], OneInput]
    # drives the C accelerators: fuzzed on their sanitized, coverage-instrumented build
    native: bool = False
    # Python modules (prefixes) whose coverage guides the fuzzer, for the Python decoders
    instrument: tuple[str, ...] = ()
    max_len: int = 8192
    # tests/fuzz/test_corpus.py checks that replaying the corpus leaves no objects behind
    # (off where the code under test keeps bounded state that takes thousands of calls to fill)
    leak_check: bool = True
    # executions of a deterministic run (CI): about 10 s of this target on the 2-core machine
    runs: int = 2000


# -- helpers --------------------------------------------------------------------------------------
def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Runs a coroutine that never waits (the components' ``consume`` of one payload) to its
    end without an event loop: one step."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("the coroutine waited: it cannot be driven in one step")


@contextlib.contextmanager
def native_env(on: bool) -> Iterator[None]:
    """``PIPELINE_NATIVE`` as the components read it when created."""
    old = os.environ.get("PIPELINE_NATIVE")
    os.environ["PIPELINE_NATIVE"] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["PIPELINE_NATIVE"]
        else:
            os.environ["PIPELINE_NATIVE"] = old


def outcome(call: Callable[[], Any], refused: tuple[type[BaseException], ...]) -> Any:
    """``("ok", result)`` or ``("refused", error)`` when ``call`` raises one of ``refused``."""
    try:
        return ("ok", call())
    except refused as exc:
        return ("refused", exc)


# what the C walks say of a field number 0 (_otlpvalid: "field number 0", _tracewire: "bad field
# tag"): protobuf's parser lets some through (inside an unterminated group, even in a full
# parse); the C walks refuse them wherever they are, as the wire format says
FIELD_NUMBER_0 = re.compile(r"field number$|bad field tag$")


def assert_twins_agree(native: Any, python: Any) -> None:
    """Two outcomes: the same result, or both refused, or C refused a field number 0 that
    protobuf let through."""
    if native[0] == python[0] == "refused":
        return
    if native[0] == "refused" and FIELD_NUMBER_0.search(str(native[1])):
        return
    assert native == python


def connector_outcome(
    make: Callable[[], Any], native: bool, data: bytes, state: Callable[[Any], Any]
) -> tuple[type[BaseException] | None, Any]:
    """A connector made on one path (``native``) consumes the request: the type of the error it
    raised (the Python path's, whatever it is: the same on both) and its ``state``."""
    from pipeline import Traces

    with native_env(native):
        conn = make()
    assert (conn._scanner is not None) == native
    try:
        drive(conn.consume(Traces(data)))
        error = None
    except Exception as exc:
        error = type(exc)
    return error, state(conn)


def c_entry(module: str, function: str, *args: Any) -> Callable[[], OneInput]:
    """The setup of a C function taking the input (and ``args``) that may raise ``ValueError``
    and nothing else."""

    def setup() -> OneInput:
        from plugins._native import load

        mod = load(module)
        if mod is None:
            raise RuntimeError(f"plugins._native.{module} is not built")
        fn = getattr(mod, function)

        def one(data: bytes) -> None:
            with contextlib.suppress(ValueError):
                fn(data, *args)

        return one

    return setup


def require(module: str) -> Any:
    from plugins._native import load

    mod = load(module)
    if mod is None:
        raise RuntimeError(f"plugins._native.{module} is not built")
    return mod


# -- C: the receivers' edge check (_otlpvalid) ----------------------------------------------------
def otlpvalid() -> OneInput:
    """``validate_traces`` / ``_metrics`` / ``_logs`` on the same input, each against its twins
    (the Python walk: the same verdict, count and message; the twin, protobuf's full parse and
    the ids read from the decoded request: the same verdict and count but for the one
    difference on purpose, a field number 0 inside an unknown group); what the check accepts,
    protobuf's full parse accepts too, and it counts what the decoded request holds."""
    require("_otlpvalid")
    from pipeline.pdata import PAYLOAD_TYPES, Signal
    from tests.plugins._native.test_otlpvalid import both, requests

    def one(data: bytes) -> None:
        for kind in ("traces", "metrics", "logs"):
            verdict, result = both(kind, data)
            if verdict == "ok":
                decoded = requests()[kind].FromString(data)
                assert result == PAYLOAD_TYPES[Signal(kind)]._count_message(decoded)

    return one


# -- C: the workflow processor's trace walk (_tracewire) ------------------------------------------
def tracewire_ingest() -> OneInput:
    """``ingest`` against the Python path's parsers: the same groups, ids, flags and sizes, and
    ``ValueError`` exactly where they raise ``DecodeError``."""
    require("_tracewire")
    from google.protobuf.message import DecodeError

    from tests.plugins._native.test_tracewire import native_ingest, reference_ingest

    def one(data: bytes) -> None:
        native = outcome(lambda: native_ingest(data), (ValueError,))
        python = outcome(lambda: reference_ingest(data), (DecodeError,))
        assert_twins_agree(native, python)

    return one


def workflow() -> OneInput:
    """The workflow processor on both paths (ingest, the facts, held traces, release and
    assembly, late spans): the request twice, then again after the release; identical bytes out
    and identical counts, or a refusal on both."""
    require("_tracewire")
    from google.protobuf.message import DecodeError

    from plugins.workflowprocessor import native as native_module
    from plugins.workflowprocessor import store as store_module
    from tests.plugins._native.test_tracewire import run

    same_accounting = {  # as the test's fixture: both paths count held bytes alike
        "NATIVE_SPAN_OVERHEAD": store_module.SPAN_OVERHEAD,
        "NATIVE_CHUNK_OVERHEAD": 0,
        "NATIVE_TRACE_OVERHEAD": store_module.TRACE_OVERHEAD,
    }

    def one(data: bytes) -> None:
        with mock.patch.multiple(native_module, **same_accounting):
            # a refusal: ValueError from C, DecodeError from protobuf (both paths decode some
            # spans with it: the failed tool calls C hands to the classifier)
            refused = (ValueError, DecodeError)
            native = outcome(lambda: drive(run(True, [data, data], [data])), refused)
            python = outcome(lambda: drive(run(False, [data, data], [data])), refused)
        assert_twins_agree(native, python)

    return one


# -- C: the agentmetrics connector's scanner (_agentscan) -----------------------------------------
MEMORY_OPS_BYTES = 1 + 2 * 512  # the size byte, then 512 (operation, key) pairs


def agentscan() -> OneInput:
    """The connector on both paths: no crash, and for every request a full parse accepts the
    same series, buckets, windows and A2A producers (the test's comparison). A request a full
    parse refuses (a key that is not UTF-8, say) is refused by the Python path as a whole
    while the scanner reads only the fields it needs: such requests are for the receivers to
    refuse (issue 13, validation at the edge)."""
    require("_agentscan")
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from pipeline import Kind, Traces
    from pipeline.telemetry import SelfTelemetry
    from plugins.agentmetricsconnector.config import AgentMetricsConfig
    from plugins.agentmetricsconnector.connector import AgentMetricsConnector
    from tests.plugins._agent_support import Capture, settings
    from tests.plugins._native.test_agentscan import T0, memory_ops, root_memory_ops, state

    cfg = AgentMetricsConfig(sla={"default": "5s"}, aggregation_cardinality_limit=0)
    # one self-telemetry for every connector an input makes (~6): a SelfTelemetry reads
    # /proc/self/stat (psutil, for its process collector) when made, which was half the
    # target's time, more under ASan (the corpus leak check took ~131 s of its 300)
    telemetry = SelfTelemetry()

    def make() -> Any:
        return AgentMetricsConnector(
            settings(Kind.CONNECTOR, "agentmetrics", telemetry), cfg, Capture()
        )

    def twice(native: bool, data: bytes) -> tuple[list[type[BaseException] | None], Any]:
        # twice: the second time, the spans the Python side remembers by their shape (a
        # tool-call layer, a parent link) are read from its memo, and the C scanner packs the
        # traces made of them only (the join's common case: settled by settle_simple), failed
        # layers too (learned by shape and exception type) beside the failed spans that give
        # the join no layer (read in Python without touching their trace)
        with native_env(native):
            conn = make()
        assert (conn._scanner is not None) == native
        errors: list[type[BaseException] | None] = []
        for _ in range(2):
            try:
                drive(conn.consume(Traces(data)))
                errors.append(None)
            except Exception as exc:
                errors.append(type(exc))
        return errors, state(conn)

    def packed(data: bytes) -> None:
        # the join's common case takes packed records from scan only, but settle_simple is a
        # method: any record string is refused cleanly or settled, never read out of bounds
        with native_env(True):
            conn = make()
        scanner = conn._scanner
        # small memories (the oldest dropped), the twin's memory of failed parents
        scanner.configure_settle(size=4, keys_size=4, ttl=0.0, marked=collections.OrderedDict(),
                                 marked_size=4, marked_ttl=0.0, classify=str,
                                 timeouts=frozenset(), recoverable=frozenset())  # fmt: skip
        scanner.settle_simple([], 0.0)
        # series 0: an id-less layer; 1: a framework layer with a call id; 2: an MCP client
        # layer with a JSON-RPC id (the id-keyed join: ids from the ids string)
        conn._learn(_FuzzShape(b"r", b"s", b"x"), (0, "t", "", False, "", False, "", -1, -1))
        conn._learn(_FuzzShape(b"r", b"s", b"y"), (0, "t", "", False, "", False, "", 0, -1))
        conn._learn(_FuzzShape(b"r", b"s", b"z"), (1, "u", "", True, "h", True, "", -1, 1))
        # series 3: a failed layer (learned by shape and exception type: its message after its
        # ids, flag 4; settle_simple leaves such a trace to the joiner)
        conn._learn(_FuzzShape(b"r", b"s", b"w"),
                    (0, "t", "", False, "", False, "", 0, -1, True, "e", "E"))  # fmt: skip
        cut = len(data) - len(data) % 40
        trace = data[:16].ljust(16, b"\0")
        for records, ids in ((data[:cut], data[cut:]), (data[: min(cut, 40)], data[40:])):
            try:
                scanner.settle_simple([(trace, records, 1, ids)], 0.0)
            except ValueError:
                pass
            # settle_packed (a packed trace held with failures): any record string (kinds,
            # flags, series, ids and messages) refused cleanly or settled
            try:
                scanner.settle_packed([(trace, records, 1, ids)], [], 0.0, [])
            except (ValueError, TypeError):
                pass
        scanner.take_calls()

    def failures(data: bytes) -> None:
        # take_failures: a failed span's status message, exception type and message as the
        # Python side's full decode of that span gives them (the fallback item at its offset)
        from opentelemetry.proto.trace.v1.trace_pb2 import Span

        from plugins._agentconv import exception_type
        from plugins.agentmetricsconnector.connector import exception_message

        with native_env(True):
            scanner = make()._scanner
        try:
            _, fallback, _, _ = scanner.scan(data)
        except ValueError:
            return
        ends = {item[0]: item[1] for item in fallback if len(item) > 4}
        for start, facts in (scanner.take_failures() or {}).items():
            span = Span.FromString(data[start : ends[start]])
            assert span.status.code == 2
            assert facts == (span.status.message, exception_type(span), exception_message(span))

    def joined(data: bytes) -> None:
        # settle_layers (a held trace of Layer and Failure objects settled in C) against the
        # Python settle: random layers, failures and links drawn from the input, the same
        # calls, errors_total label sets and memories
        from tests.plugins.test_agentmetrics_join_native import assert_joiners_agree

        with native_env(True):
            conn = make()
        assert_joiners_agree(random.Random(data), 3, conn)
        # the same through the scanner's loop over the entries due (settle_due), which must
        # refuse what is not a list of (trace, entry) pairs of the joiner's cleanly
        with native_env(True):
            conn = make()
        assert_joiners_agree(random.Random(data), 3, conn, count=False)
        # packed layers (failed ones with their message) held with failures: settle_packed
        with native_env(True):
            conn = make()
        assert_joiners_agree(random.Random(data), 3, conn, count=False, pack=True)
        scanner, trace = conn._scanner, data[:16]
        for due in ([(trace, None)], [None], [(trace,)], [(trace, object())], [(b"", data)]):
            try:
                scanner.settle_due(due, {trace: 0}, 0, 0.0, [])
            except (TypeError, KeyError, AttributeError):
                pass
            try:  # (the settle loop over a pending of such entries)
                pending = dict(x for x in due if isinstance(x, tuple) and len(x) == 2)
                scanner.settle_front(pending, data[0] % 3 if data else 0, 0.0, len(data) % 2, [])
            except (TypeError, KeyError, AttributeError):
                pass

    def held(data: bytes) -> None:
        # hold_packed (a request's Packed items held in C) against its twin: random items,
        # hostile ones among them, on random pending traces drawn from the input
        from tests.plugins.test_agentmetrics_join_native import assert_holds_agree

        assert_holds_agree(random.Random(data), 2)

    kept: list[Any] = []  # (parts: its connector)

    def parts(data: bytes) -> None:
        # scan() of a merged payload's parts (read where they are): the input cut into parts at
        # points drawn from it (empty parts too); parts whose framing is whole each scan as
        # their concatenation, others are refused with ValueError, never read past their end
        # (one scanner for every input: a scan changes nothing the next one reads but the A2A
        # producer cache, emptied before each; a connector costs more than the scans)
        if not kept:
            with native_env(True):
                kept.append(make())
        conn = kept[0]
        scanner = conn._scanner
        conn._producers.clear()
        rng = random.Random(data[:64])
        # half of the time at the boundaries of top-level fields (the parts of a merge), else
        # anywhere (a field cut between two parts)
        ends = _field_ends(data) if rng.random() < 0.5 else None
        cuts = sorted(
            rng.choice(ends) if ends else rng.randrange(len(data) + 1)
            for _ in range(rng.randrange(1, 5))
        )
        pieces = tuple(data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True))
        try:
            got = (scanner.scan(pieces), scanner.take_failures(), scanner.take_roots(),
                   scanner.take_late())  # fmt: skip
        except ValueError:
            return
        conn._producers.clear()
        assert got == (scanner.scan(data), scanner.take_failures(), scanner.take_roots(),
                       scanner.take_late())  # fmt: skip

    def one(data: bytes) -> None:
        with mock.patch.object(time, "time_ns", lambda: T0):
            fast, slow = (twice(on, data) for on in (True, False))
            parts(data)
            packed(data)
            joined(data)
            held(data)
        # the joiner's memories in C (Memory) against the trimmed OrderedDict: the input's
        # first 512 operations (a memory holds at most 8 keys; a longer run of operations
        # finds nothing more, and made the corpus's leak check take minutes)
        memory_ops(data[:MEMORY_OPS_BYTES])
        # the connector's memory of roots in C (RootMemory, raw trace ids) against its twin
        root_memory_ops(data[:MEMORY_OPS_BYTES])
        try:
            ExportTraceServiceRequest.FromString(data)
        except DecodeError:
            return
        assert fast == slow
        failures(data)

    return one


def _field_ends(data: bytes) -> list[int]:
    """Where each top-level field of ``data`` ends (its start too: 0), as far as its framing
    reads (varint tags and lengths, fixed widths)."""
    ends = [0]
    at = 0

    def varint() -> int:
        nonlocal at
        value = shift = 0
        while at < len(data) and shift < 64:
            b = data[at]
            at += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value
        raise ValueError

    try:
        while at < len(data):
            wire = varint() & 7
            if wire == 0:
                varint()
            elif wire in (1, 5):
                at += 8 if wire == 1 else 4
            elif wire == 2:
                at += varint()
            else:
                break
            if at > len(data):
                break
            ends.append(at)
    except ValueError:
        pass
    return ends


class _FuzzShape:
    """A shape as the connector's ``_learn`` reads it (the C scanner's key of a reading)."""

    def __init__(self, resource: bytes, scope: bytes, shape: bytes) -> None:
        self.where = (resource, scope, shape)


# -- C: the spanmetrics connector's scanner (_spanscan) -------------------------------------------
def spanscan() -> OneInput:
    """The connector on both paths (dimensions, exemplars, seconds): the same outcome, the same
    series in the same order, sums equal to 1e-9."""
    require("_spanscan")
    from pipeline import Kind
    from pipeline.telemetry import SelfTelemetry
    from plugins.spanmetricsconnector.config import SpanMetricsConfig
    from plugins.spanmetricsconnector.connector import SpanMetricsConnector
    from tests.plugins._agent_support import Capture, settings
    from tests.plugins._native.test_spanscan import CONFIGS, T0, assert_same, state

    cfg = SpanMetricsConfig.model_validate(
        {"metrics_flush_interval": "0s", **CONFIGS["dimensions+exemplars+seconds"]}
    )

    telemetry = SelfTelemetry()  # one for every connector made (see agentscan)

    def make() -> Any:
        return SpanMetricsConnector(
            settings(Kind.CONNECTOR, "spanmetrics", telemetry), cfg, Capture()
        )

    def one(data: bytes) -> None:
        with mock.patch.object(time, "time_ns", lambda: T0):
            (fast_error, fast), (slow_error, slow) = (
                connector_outcome(make, on, data, state) for on in (True, False)
            )
        assert fast_error == slow_error
        assert_same(fast, slow)

    return one


# -- C: tail_sampling's facts and redaction's prefilter (_tailscan) -------------------------------
def tailscan() -> OneInput:
    """``trace_facts`` on the input's spans (the spans of the request when its framing parses,
    else the input cut in three) and ``find_patterns`` on the input (and on the input repeated
    past 4 KiB, where the C scan skips by windows) with the table of the redaction processor's
    GenAI defaults plus a blocked value, each against its Python twin: the same facts (``None``
    included), the same mask; ``decide_request`` on the input as a request (every policy op,
    with and without the tool check, first match or not) against its twin."""
    mod = require("_tailscan")
    from pipeline import Kind, Signal
    from pipeline._wire import ShallowTraces
    from plugins.redactionprocessor.config import RedactionConfig
    from plugins.redactionprocessor.prefilter import find_patterns_python
    from plugins.redactionprocessor.processor import RedactionProcessor
    from plugins.tailsamplingprocessor.config import TailSamplingConfig
    from plugins.tailsamplingprocessor.policies import (
        ERROR_TYPE,
        TOOL_MARKERS,
        compile_program,
        fact_keys,
        tool_check,
    )
    from plugins.tailsamplingprocessor.scan import Facts, decide_request_python, trace_facts_python
    from tests.plugins._agent_support import Capture, settings

    keys = (b"workflow.outcome", b"workflow.id", b"workflow.type")
    cfg = RedactionConfig.model_validate(
        {"allow_all_keys": True, "blocked_values": ["4[0-9]{12}(?:[0-9]{3})?"],
         "summary": "debug", "ignored_keys": ["password"], "genai_content": {"action": "mask"}}
    )  # fmt: skip
    tables = []
    for signal in (Signal.TRACES, Signal.LOGS):
        proc = RedactionProcessor(settings(Kind.PROCESSOR, "redaction"), cfg, signal, Capture())
        assert proc._prefilter is not None
        tables.append(proc._prefilter.table)

    sampling = TailSamplingConfig.model_validate({"policies": [
        {"name": "o", "type": "workflow_outcome", "workflow_outcome": {"outcomes": ["failed"]}},
        {"name": "s", "type": "workflow_sla",
         "workflow_sla": {"default": "1s", "objectives": {"support": "0.5s"}}},
        {"name": "t", "type": "tool_call_failed"},
        {"name": "u", "type": "workflow_usage", "workflow_usage": {"min_tokens": 10}},
        {"name": "e", "type": "status_code", "status_code": {"status_codes": ["ERROR", "OK"]}},
        {"name": "l", "type": "latency", "latency": {"threshold_ms": 1, "upper_threshold_ms": 9}},
        {"name": "c", "type": "span_count", "span_count": {"min_spans": 2}},
        {"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 40}},
        {"name": "d", "type": "drop", "drop": {"drop_sub_policy": [
            {"name": "d1", "type": "always_sample"}, {"name": "d2", "type": "tool_call_failed"}]}},
    ]})  # fmt: skip
    names = fact_keys(sampling.policies)
    program = compile_program(sampling.policies, {k: i for i, k in enumerate(names)})
    assert program is not None
    needles = tuple(k.encode() for k in names)
    tools = (None, tool_check(sampling.policies))

    def one(data: bytes) -> None:
        for tool in tools:
            for first in (False, True):
                args = (data, needles, ERROR_TYPE, TOOL_MARKERS, program, first, tool)
                assert mod.decide_request(*args) == decide_request_python(*args)
        try:
            msg = ShallowTraces.FromString(data)
            spans = [
                bytes(s) for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans
            ]
        except Exception:
            third = len(data) // 3
            spans = [data[:third], data[third : 2 * third], data[2 * third :]]
        native = mod.trace_facts(spans, keys, b"error.type")
        assert (None if native is None else Facts._make(native)) == trace_facts_python(
            spans, keys, b"error.type"
        )
        # from 4 KiB on, the C scan moves by windows (its skip table): the input repeated
        long = data * (4096 // len(data) + 1) if data else b""
        for table in tables:
            assert mod.find_patterns(data, table) == find_patterns_python(data, table)
            assert mod.find_patterns(long, table) == find_patterns_python(long, table)

    return one


# -- C: HTTP/2 sessions on libnghttp2 (_h2server) -------------------------------------------------
def pieces(data: bytes) -> list[bytes]:
    """The input in three reads, so frames are split across ``feed`` calls."""
    third = len(data) // 3
    return [data[:third], data[third : 2 * third], data[2 * third :]]


def h2_server() -> OneInput:
    """A server session fed the client's bytes in three reads, every completed call answered
    (OK, an error with message and details, a bare 415 in turn) as the native gRPC server does:
    ``ValueError`` (a protocol error) is the only refusal; the calls are well formed and the
    request data held stays within its bound."""
    h2 = require("_h2server")
    max_buffered = 1 << 15

    def one(data: bytes) -> None:
        s = h2.Session(
            max_message=1 << 12,
            max_concurrent_streams=8,
            stream_window=65535,
            connection_window=1 << 16,
            max_buffered=max_buffered,
        )
        n = 0
        for piece in pieces(data):
            try:
                calls = s.feed(piece)
            except ValueError:
                s.data_to_send()  # the GOAWAY saying why
                assert s.want_io() is False
                return
            for stream_id, path, content_type, encoding, flag, body in calls:
                assert isinstance(stream_id, int) and stream_id > 0 and stream_id % 2 == 1
                assert isinstance(path, str) and isinstance(content_type, str)
                assert isinstance(encoding, str)
                if flag == h2.TOO_LARGE:
                    assert isinstance(body, int) and body > 1 << 12  # the bytes received
                elif flag == h2.FRAMING:
                    assert body is None  # not exactly one gRPC message
                else:
                    assert flag in (0, 1) and len(body) <= 1 << 12
                if n % 3 == 0:
                    s.respond(stream_id, 0, b"\x0a\x00")
                elif n % 3 == 1:
                    s.respond(stream_id, 14, b"busy %25", None, b"AAEC")
                else:
                    s.respond(stream_id, 0, http_status=415)
                n += 1
            assert 0 <= s.buffered <= max_buffered and s.open_streams >= 0
            s.data_to_send()
        s.goaway()
        s.data_to_send()

    return one


def h2_client() -> OneInput:
    """A client session with three calls open (one cancelled halfway) fed the server's bytes in
    three reads: ``ValueError`` is the only refusal; every call ends at most once, well formed."""
    h2 = require("_h2server")
    from tests.plugins._native.test_h2server import CLIENT_HEADERS

    def one(data: bytes) -> None:
        c = h2.ClientSession(stream_window=65535, connection_window=1 << 16)
        ids = [
            c.request(CLIENT_HEADERS, b"\x0a\x00", False),
            c.request(CLIENT_HEADERS, b"x" * 100, True),
            c.request(CLIENT_HEADERS, b"", False),
        ]
        c.data_to_send()
        ended: list[tuple[Any, ...]] = []
        for i, piece in enumerate(pieces(data)):
            try:
                ended += c.feed(piece)
            except ValueError:
                c.data_to_send()
                ended += c.take_done()
                assert c.usable() is False and c.want_io() is False
                break
            ended += c.take_done()
            if i == 1 and ids[2] not in [e[0] for e in ended]:
                c.cancel(ids[2])
            c.data_to_send()
            c.usable()
        for sid, http_status, grpc_status, message, details, body, rst in ended:
            assert sid in ids and isinstance(http_status, int) and isinstance(grpc_status, int)
            assert isinstance(message, bytes) and isinstance(rst, int)
            assert details is None or isinstance(details, bytes)
            assert isinstance(body, bytes | bytearray | memoryview)
        assert len({e[0] for e in ended}) == len(ended), ended
        assert 0 <= c.open_calls <= len(ids) - len(ended)

    return one


# -- Python decoders: OTLP ------------------------------------------------------------------------
def otlp_proto() -> OneInput:
    """The receivers' protobuf check of traces and metrics (``PermanentError`` only); what a full
    parse also accepts has the count the check gave."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from pipeline import Logs, Metrics, PermanentError, Traces

    kinds: list[tuple[Any, Any]] = [
        (Traces, ExportTraceServiceRequest),
        (Metrics, ExportMetricsServiceRequest),
        (Logs, ExportLogsServiceRequest),
    ]

    def one(data: bytes) -> None:
        for payload, request in kinds:
            try:
                n = payload._validate(data)
            except PermanentError:
                continue
            # what the receivers accept, every later stage can decode (issue 13: the edge check)
            full = request.FromString(data)
            assert n == payload._count_message(full)

    return one


def otlp_json() -> OneInput:
    """OTLP/JSON of traces and metrics (``plugins/_otlpjson.py``): ``PermanentError``
    only; what it accepts encodes back to JSON that parses to the same request."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from pipeline import PermanentError
    from plugins import _otlpjson as otlpjson

    def one(data: bytes) -> None:
        for request in (ExportTraceServiceRequest, ExportMetricsServiceRequest):
            try:
                message = otlpjson.parse(data, request())
            except PermanentError:
                continue
            again = otlpjson.parse(otlpjson.dumps(message), request())
            assert again.SerializeToString(deterministic=True) == message.SerializeToString(
                deterministic=True
            )

    return one


# -- the OTTL processors' lazy path ----------------------------------------------------------------
def ottl() -> OneInput:
    """``filter`` and ``transform`` on traces as they run in the processors, lazily (spans read
    from views and their bytes, decoded only when changed), against their twin: the same
    statements applied to the fully decoded request as pdata applies them. What the receivers'
    framing check lets through is either refused as corrupt data (a decoding error, which the
    engine's isolation drops; only when a full decode refuses it too) or gives exactly the
    twin's result; what a full decode refuses but the lazy path passes still has valid framing.
    """
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from pipeline import PermanentError, Traces
    from pipeline.ottl import compile_conditions, compile_statements
    from pipeline.ottl.runner import DATA_ERRORS, Filter, Group, filter_payload, transform

    _, conditions = compile_conditions(
        ['span.name == "health-check"', 'span.attributes["http.route"] == "/health"'], "traces"
    )
    _, statements = compile_statements(
        [
            'set(span.attributes["env"], "prod")',
            'set(span.attributes["n"], 1) where span.attributes["kind"] != nil',
        ],
        "traces",
    )
    filters = [Filter("span", conditions, "propagate")]
    groups = [Group("span", statements, [], "propagate")]

    def first(span: Any, key: str) -> Any:
        return next((kv for kv in span.attributes if kv.key == key), None)

    def put(span: Any, key: str, set_value: Callable[[Any], None]) -> None:
        kv = first(span, key)
        set_value((kv if kv is not None else span.attributes.add(key=key)).value)

    def twin(request: Any) -> Any:
        dropped = False
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                keep = []
                for span in ss.spans:
                    route = first(span, "http.route")
                    if span.name == "health-check" or (
                        route is not None
                        and route.value.WhichOneof("value") == "string_value"
                        and route.value.string_value == "/health"
                    ):
                        dropped = True
                        continue
                    keep.append(span)
                if len(keep) != len(ss.spans):
                    copies = [type(s).FromString(s.SerializeToString()) for s in keep]
                    del ss.spans[:]
                    ss.spans.extend(copies)
        if dropped:
            for rs in request.resource_spans:
                scopes = [s for s in rs.scope_spans if len(s.spans)]
                copies_s = [type(s).FromString(s.SerializeToString()) for s in scopes]
                del rs.scope_spans[:]
                rs.scope_spans.extend(copies_s)
            groups_ = [g for g in request.resource_spans if len(g.scope_spans)]
            copies_r = [type(g).FromString(g.SerializeToString()) for g in groups_]
            del request.resource_spans[:]
            request.resource_spans.extend(copies_r)
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    put(span, "env", lambda v: setattr(v, "string_value", "prod"))
                    kind = first(span, "kind")  # an empty value reads as nil, as in pdata
                    if kind is not None and kind.value.WhichOneof("value") is not None:
                        put(span, "n", lambda v: setattr(v, "int_value", 1))
        return request

    def one(data: bytes) -> None:
        try:
            Traces._validate(data)
        except PermanentError:
            return
        try:
            full = ExportTraceServiceRequest.FromString(data)
        except DecodeError:
            full = None
        try:
            kept, _ = filter_payload(Traces(data), filters, lambda *a: None)
            out = transform(kept, groups, lambda *a: None) if kept is not None else None
        except DATA_ERRORS:
            assert full is None, "the lazy path refused what a full decode accepts"
            return
        if out is not None:
            Traces(out.to_bytes()).validate()
        if full is None:
            return
        expected = twin(full)
        if out is None:
            assert not any(len(ss.spans) for rs in expected.resource_spans
                           for ss in rs.scope_spans)  # fmt: skip
            return
        assert ExportTraceServiceRequest.FromString(out.to_bytes()) == expected

    return one


# -- Python decoders: Jaeger Thrift ---------------------------------------------------------------
def jaeger(kind: str) -> Callable[[], OneInput]:
    def setup() -> OneInput:
        """An agent datagram (UDP) and a collector body (HTTP) in ``kind``: ``ThriftDecodeError``
        only, and what decodes translates to OTLP (or is refused with ``ValueError``, which the
        receiver answers as malformed) with the span count it reports. Decoded by thrift's C
        extension (the receivers' path) and by its pure-Python protocol (used where thrift was
        built without it; instrumented, it guides the fuzzer through the Thrift encoding). The
        two are not compared: they differ by design in strictness (a field of the wrong type is
        refused by one and skipped by the other; a string that is not UTF-8 is refused by one
        and decoded with replacement characters by the other)."""
        from pipeline import Traces
        from plugins._jaegerthrift import model
        from plugins._jaegerthrift.model import ThriftDecodeError, decode_batch, decode_emit_batch
        from plugins._jaegerthrift.translate import batch_to_request

        def decode(how: Callable[..., Any], data: bytes, accelerated: bool) -> Any:
            with mock.patch.object(model, "ACCELERATED", accelerated):
                return outcome(lambda: how(data, kind), (ThriftDecodeError,))

        def one(data: bytes) -> None:
            for how in (decode_emit_batch, decode_batch):
                for accelerated in {model.ACCELERATED, False}:
                    verdict, batch = decode(how, data, accelerated)
                    if verdict != "ok":
                        continue
                    try:
                        request, n = batch_to_request(batch)
                    except ValueError:
                        continue
                    payload = Traces.from_message(request)
                    assert payload.item_count() == n == len(batch.spans)
                    Traces(payload.to_bytes()).validate()

        return one

    return setup


# -- Python decoders: Prometheus scrapes ----------------------------------------------------------
def prometheus(content_type: str) -> Callable[[], OneInput]:
    def setup() -> OneInput:
        """A scrape body through the receiver's decoding (``decode_scrape``: ``ScrapeError``
        only) and the converter's finish (nothing), to a request that encodes."""
        from pipeline import Metrics
        from plugins.prometheusreceiver.convert import Converter, ScrapeError, Target
        from plugins.prometheusreceiver.receiver import decode_scrape

        target = Target(
            job="fuzz",
            instance="127.0.0.1:9100",
            url="http://127.0.0.1:9100/metrics",
            scheme="http",
            labels={"job": "fuzz", "instance": "127.0.0.1:9100"},
        )

        def one(data: bytes) -> None:
            converter = Converter(target, honor_labels=False, honor_timestamps=True)
            for _ in range(2):  # the second scrape sees the start times the first kept
                now = 1_700_000_000_000_000_000
                try:
                    request, samples = decode_scrape(converter, data, content_type, "utf-8", now)
                    up = True
                except ScrapeError:
                    (request, samples), up = converter.empty(), False
                converter.finish(request, now, up=up, duration=0.01, samples_scraped=samples)
                Metrics.from_message(request).to_bytes()

        return one

    return setup


def route() -> OneInput:
    """The routing between workers (``pipeline._route``): on what the receivers accept, the
    parts hold every span / resource exactly once, each at the worker its key names, and
    decode; on anything else it raises ``ValueError`` at most."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from pipeline import Logs, Metrics, PermanentError, Traces, _route

    def spans(data: bytes) -> list[bytes]:
        req = ExportTraceServiceRequest.FromString(data)
        return sorted(
            s.SerializeToString(deterministic=True)
            for rs in req.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        )

    from plugins._native import load

    native = load("_route")

    def twin(data: bytes, workers: int, dead: bytes | None = None) -> Any:
        """The C result and the Python twin's: the same, or both ValueError (``dead``: the
        dead workers, whose traces go to a live one)."""
        try:
            want = _route.split_traces_python(data, workers, None, 0, dead)
        except ValueError:
            want = ValueError
        if native is None:
            return want
        try:
            raw = (
                native.route_traces(data, workers)
                if dead is None
                else native.route_traces(data, workers, None, 0, 0, 0, dead)
            )
            got: Any = (
                ({} if raw < 0 else {raw: (data, None)})
                if isinstance(raw, int)
                else {o: (b, n) for o, b, n in raw}
            )
        except ValueError:
            got = ValueError
        assert got == want, (got, want)
        return got

    def twin_table(data: bytes, workers: int) -> None:
        """Routing by first arrival: the C table and the twin's give the same split and,
        unless the request is malformed, leave the same bytes (one bucket: full, hash mode)."""
        if native is None:
            return
        c_table = bytearray(_route.table_bytes(1))
        py_table = bytearray(c_table)
        owners = _route.OwnerTable(py_table, workers - 1, 5)
        want: Any
        try:
            want = _route.split_traces_python(data, workers, owners, 100)
        except ValueError:
            want = ValueError
        got: Any
        try:
            raw = native.route_traces(data, workers, c_table, workers - 1, 100, 5)
            got = (
                ({} if raw < 0 else {raw: (data, None)})
                if isinstance(raw, int)
                else {o: (b, n) for o, b, n in raw}
            )
        except ValueError:
            got = ValueError
        assert got == want, (got, want)
        if want is not ValueError:
            assert c_table == py_table
        if workers < 2 or want is ValueError:
            return
        # worker 0 dead: its traces adopted by worker 1 (the table as the first pass left it)
        dead = b"\x01" + bytes(workers - 1)
        owners = _route.OwnerTable(py_table, 1, 5)
        want = _route.split_traces_python(data, workers, owners, 101, dead)
        raw = native.route_traces(data, workers, c_table, 1, 101, 5, dead)
        got = (
            ({} if raw < 0 else {raw: (data, None)})
            if isinstance(raw, int)
            else {o: (b, n) for o, b, n in raw}
        )
        assert got == want, (got, want)
        assert 0 not in got
        assert c_table == py_table

    def one(data: bytes) -> None:
        for workers in (1, 2, 3):
            twin(data, workers)
            twin_table(data, workers)
            if workers > 1:
                got = twin(data, workers, bytes([0, 1, 0][:workers]))
                assert got is ValueError or 1 not in got
            try:
                Traces._validate(data)
            except PermanentError:
                with contextlib.suppress(ValueError):
                    _route.split_traces(data, workers)
            else:
                parts = _route.split_traces(data, workers)
                every: list[bytes] = []
                for owner, (raw, n) in parts.items():
                    mine = spans(raw)
                    assert n is None or n == len(mine)
                    for s in ExportTraceServiceRequest.FromString(raw).resource_spans:
                        for ss in s.scope_spans:
                            for span in ss.spans:
                                assert _route.trace_owner(span.trace_id, workers) == owner
                    every += mine
                assert sorted(every) == spans(data)
            try:
                Metrics._validate(data)
            except PermanentError:
                with contextlib.suppress(ValueError):
                    _route.split_metrics(data, workers)
            else:
                parts = _route.split_metrics(data, workers)
                total = ExportMetricsServiceRequest.FromString(data)
                got = []
                for owner, (raw, _) in parts.items():
                    assert owner in range(workers)
                    req = ExportMetricsServiceRequest.FromString(raw)
                    got += [rm.SerializeToString(deterministic=True) for rm in req.resource_metrics]
                want = sorted(
                    rm.SerializeToString(deterministic=True) for rm in total.resource_metrics
                )
                assert sorted(got) == want
            # log records: by trace id, those without one at the receiving worker
            local = workers - 1
            try:
                Logs._validate(data)
            except PermanentError:
                with contextlib.suppress(ValueError):
                    _route.split_logs(data, workers, local)
            else:
                parts = _route.split_logs(data, workers, local)
                every = []
                for owner, (raw, n) in parts.items():
                    req = ExportLogsServiceRequest.FromString(raw)
                    mine = [
                        lr
                        for rl in req.resource_logs
                        for sl in rl.scope_logs
                        for lr in sl.log_records
                    ]
                    assert n is None or n == len(mine)
                    for lr in mine:
                        tid = bytes(lr.trace_id)
                        want_owner = _route.trace_owner(tid, workers) if len(tid) == 16 else local
                        assert want_owner == owner
                    every += [lr.SerializeToString(deterministic=True) for lr in mine]
                total_logs = ExportLogsServiceRequest.FromString(data)
                assert sorted(every) == sorted(
                    lr.SerializeToString(deterministic=True)
                    for rl in total_logs.resource_logs
                    for sl in rl.scope_logs
                    for lr in sl.log_records
                )

    return one


def redaction_sanitize() -> OneInput:
    """``redaction``'s ``url_sanitizer`` and ``db_sanitizer`` (``sanitize.py``): every
    sanitizer takes any text (invalid UTF-8 kept as surrogates) without raising and sanitizing
    its result again changes nothing; through the processor, a client span carrying the text
    as its name, statement and URL (the database named by the first byte) gets exactly those
    results (the name: its database's sanitizer, then the URL sanitizer unless only ``*``
    segments would be left); a log record with the text as its body gets every family
    without attributes in turn."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from pipeline import Kind, Logs, Signal, Traces
    from pipeline.testing import create_settings
    from plugins.redactionprocessor.config import RedactionConfig
    from plugins.redactionprocessor.processor import RedactionProcessor
    from plugins.redactionprocessor.sanitize import (
        sanitize_json,
        sanitize_memcached,
        sanitize_redis,
        sanitize_sql,
        sanitize_url,
    )

    functions = [sanitize_sql, sanitize_redis, sanitize_memcached, sanitize_json, sanitize_url]
    systems = {"postgresql": sanitize_sql, "redis": sanitize_redis, "valkey": sanitize_redis,
               "memcached": sanitize_memcached, "mongodb": sanitize_json,
               "elasticsearch": sanitize_json, "opensearch": sanitize_json}  # fmt: skip
    families = ["sql", "redis", "valkey", "memcached", "mongo", "es", "opensearch"]
    config = RedactionConfig.model_validate({
        "allow_all_keys": True,
        "summary": "debug",
        "url_sanitizer": {"enabled": True, "attributes": ["url.full"]},
        "db_sanitizer": {
            name: {"enabled": True, "attributes": ["db.statement"]} for name in families
        },
    })  # fmt: skip
    got: list[Any] = []

    class Sink:
        mutates_data = False

        async def consume(self, data: Any) -> None:
            got.append(data)

    proc = RedactionProcessor(
        create_settings(Kind.PROCESSOR, "redaction"), config, Signal.TRACES, Sink()
    )
    logs_config = RedactionConfig.model_validate(
        {"db_sanitizer": {name: {"enabled": True} for name in families}}
    )
    logs_proc = RedactionProcessor(
        create_settings(Kind.PROCESSOR, "redaction"), logs_config, Signal.LOGS, Sink()
    )
    # the families in the Collector's order: sql, redis, valkey, memcached, mongo, opensearch, es
    body_chain = [sanitize_sql, sanitize_redis, sanitize_redis, sanitize_memcached,
                  sanitize_json, sanitize_json, sanitize_json]  # fmt: skip
    names = sorted(systems)

    def one(data: bytes) -> None:
        text = data.decode("utf-8", "surrogateescape")
        for fn in functions:
            out = fn(text)
            assert isinstance(out, str)
            assert fn(out) == out, (fn.__name__, text, out)
        value = data.decode("utf-8", "replace")
        system = names[data[0] % len(names)] if data else "postgresql"
        req = ExportTraceServiceRequest()
        span = req.resource_spans.add().scope_spans.add().spans.add(name=value, kind=3)
        for key, v in (("db.system", system), ("db.statement", value), ("url.full", value)):
            span.attributes.add(key=key).value.string_value = v
        got.clear()
        drive(proc.consume(Traces(req.SerializeToString())))
        (out,) = got
        span = out.message().resource_spans[0].scope_spans[0].spans[0]
        attrs = {kv.key: kv.value.string_value for kv in span.attributes}
        assert attrs["db.statement"] == systems[system](value)
        assert attrs["url.full"] == sanitize_url(value)
        name = systems[system](value)
        url_name = sanitize_url(name)
        if any(s not in ("", "*") for s in url_name.split("/")):
            name = url_name
        assert span.name == name, (value, span.name)
        logs = ExportLogsServiceRequest()
        logs.resource_logs.add().scope_logs.add().log_records.add().body.string_value = value
        got.clear()
        drive(logs_proc.consume(Logs(logs.SerializeToString())))
        (out,) = got
        body = value
        for fn in body_chain:
            body = fn(body)
        record = out.message().resource_logs[0].scope_logs[0].log_records[0]
        assert record.body.string_value == body, (value, record.body.string_value)

    return one


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("otlpvalid", otlpvalid, native=True, runs=30_000),
        Target("tracewire_ingest", tracewire_ingest, native=True, runs=50_000),
        # the processor's stamp tables fill over ~2,000 runs; ingest is leak-checked above
        Target("workflow", workflow, native=True, leak_check=False, runs=1_800),
        Target("agentscan", agentscan, native=True, runs=2_700),
        Target("spanscan", spanscan, native=True, runs=2_600),
        Target("h2_server", h2_server, native=True, runs=130_000),
        Target("h2_client", h2_client, native=True, runs=95_000),
        Target(
            "otlp_proto", otlp_proto, instrument=("pipeline.pdata", "pipeline._wire"), runs=750_000
        ),
        Target("ottl", ottl, instrument=("pipeline.ottl",), runs=30_000),
        Target("route", route, native=True, runs=60_000),
        Target("tailscan", tailscan, native=True, runs=20_000),
        Target(
            "redaction_sanitize",
            redaction_sanitize,
            instrument=("plugins.redactionprocessor.sanitize",),
            runs=8_000,
        ),
        Target(
            "otlp_json",
            otlp_json,
            instrument=("plugins.otlpreceiver.otlpjson", "google.protobuf.json_format"),
            runs=17_000,
        ),
        Target(
            "jaeger_binary",
            jaeger("binary"),
            instrument=("plugins._jaegerthrift", "thrift"),
            runs=7_000,
        ),
        Target(
            "jaeger_compact",
            jaeger("compact"),
            instrument=("plugins._jaegerthrift", "thrift"),
            runs=5_600,
        ),
        Target(
            "prometheus_text",
            prometheus("text/plain; version=0.0.4"),
            instrument=("prometheus_client", "plugins.prometheusreceiver"),
            runs=2_000,
        ),
        Target(
            "prometheus_openmetrics",
            prometheus("application/openmetrics-text; version=1.0.0"),
            instrument=("prometheus_client", "plugins.prometheusreceiver"),
            runs=5_000,
        ),
    ]
}
