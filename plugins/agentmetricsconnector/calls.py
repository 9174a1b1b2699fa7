"""Tool calls and failures counted once: the join of the layers that trace one call.

One tool call is often traced by several layers: a framework's tool span (pydantic-ai's
``execute_tool``), one or two MCP client spans (FastMCP's ``tools/call x``, the ``mcp`` SDK's
``MCP send tools/call x``) and the MCP server span in the server process, which may reach the
gateway in another request, or in another trace when the client does not propagate its
context. The connector turns each such span into a :class:`Layer` and each other failed span
into a :class:`Failure`, and hands them to a :class:`CallJoiner`, which holds them per trace
for a *join window* and then settles the trace:

* layers are joined into one call when one is the parent of another, when they share a
  ``gen_ai.tool.call.id``, or (MCP client and server sides) the same JSON-RPC request id with
  the same ``mcp.session.id`` (or, without a session id, within one trace) and tool name;
* the call is counted once (:class:`Call`), with the caller's (outermost layer's) duration,
  failed when any layer failed for another reason than a model-requested retry, as a *retry*
  when the only failing layer asked the model to retry (pydantic-ai's ``ModelRetry``);
* a failure counts once: a failed span is *propagated* (not counted) when a span below it
  failed too (or is a layer of a failed call): the error arose below it. "Below" follows the
  parent links the joiner knows in the trace: those of the failed spans, of the tool-call
  layers and of the other spans the connector reads in Python (agent runs, inference spans:
  every span a dialect recognises), so an agent run between a failed tool call and a failed
  workflow root carries the failure up even when its own status is not ERROR. A span that
  recorded an exception of its own whose type none of the failures below it has, above a
  span that did not fail (the failure below was handled), is a new failure, counted: a
  workflow that times out after one of its HTTP calls failed and was handled failed twice;
  an A2A client whose server failed (another exception type across the wire, no span
  between them) failed once. A client span failing with an error the remote peer answered
  (the dialect's ``peer_error_types``: a2a-sdk's JSON-RPC errors) is not counted: the failure
  arose at the peer, which counts it (a2a-sdk carries no trace context across, so the two
  sides are two traces); it still propagates to the spans above it. Of two failures of one
  trace with the same error type where one span's time holds the other's, only the inner one
  counts (a span that records an error it did not raise, beside the span that raised it).

A trace's entry is settled ``window`` seconds after its first span was seen (or earlier when
more than ``max_traces`` traces are held: the oldest goes first, counted, never lost), and all
of them at shutdown. Layers joined to a pending call from another trace (by session and request
id) are moved into that call's entry. A layer or failure arriving after its trace was settled
is matched against a bounded memory of settled span ids and keys: a late layer of a call
already counted is not counted again (``late_layers``), a failure below one already counted
marks nothing twice (its parent is remembered as propagated).

The module keeps no protobuf: the connector builds the records; everything here is plain
Python, so applying a request cannot fail half-way (the connector builds every record first).

The common case in C: with the C scanner, the layers and agent-run links of a trace that the
connector read before by their shape arrive packed (:data:`Packed`, one item per trace and
request) instead of one :class:`Layer` each, with the call ids and JSON-RPC ids the scanner read
from each span (never a session id: such a layer is read in Python), held by :func:`hold_packed`
(its C twin with the scanner: a packed trace's entry made without Python). The parent links of the
spans of its trace read in Python that give the join nothing else (inference spans, agent runs)
are kept in the entry as Packed items of one link each, in order. An entry made of packed items
only is settled by the scanner (``settle_simple``: the same grouping as :func:`_group` by parent
links, call ids and JSON-RPC ids within the trace, the same calls as :meth:`CallJoiner._call`,
counted per series in C, the same memories of settled layers and keys); a failure or a layer
read in Python arriving for its trace unpacks it into the layers and parent links it stands
for, in their order, and the join goes on as above: the results are those of the pure-Python
join.
The next most common case, a held trace of :class:`Layer` and :class:`Failure` objects whose
layers are each a call of their own (call ids and JSON-RPC ids, but no key twice and no session),
failed or not (a trace with a failure: its failures are read in Python, its failed layers
learned by shape and exception type packed with their message, and unpacked when a failure
arrives or settle_simple leaves them), is settled by the scanner too (``settle_layers``: the
same calls, ``errors_total`` label sets and memories as :meth:`CallJoiner._settle`); any other
trace by :meth:`CallJoiner._settle`.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

# the sides of a tool-call layer, from the caller inwards
FRAMEWORK = 0  # a framework's tool span (execute_tool, an OpenInference TOOL span...)
MCP_CLIENT = 1  # an MCP tools/call request sent
MCP_SERVER = 2  # an MCP tools/call request handled by the server

STATUS_SUCCESS = "success"
STATUS_ERROR = "error"
STATUS_RETRY = "retry"
NO_ERROR = "none"
OTHER = "_OTHER"
UNKNOWN = "unknown"


@dataclass(slots=True)
class Layer:
    """One span that traces a tool call."""

    trace_id: bytes
    span_id: bytes
    parent_id: bytes
    side: int
    tool: str = ""
    tool_type: str = ""  # gen_ai.tool.type when given ("function", "extension", ...)
    mcp: bool = False  # an MCP layer (or a framework span that says it called MCP)
    call_id: str = ""  # gen_ai.tool.call.id
    rpc_id: str = ""  # jsonrpc.request.id
    session: str = ""  # mcp.session.id
    server: str = ""  # client side: server.address[:port]; server side: service.name
    start: int = 0
    end: int = 0
    failed: bool = False
    retry: bool = False  # the failure is a model-requested retry (ModelRetry)
    error_type: str = ""  # error.type
    exception: str = ""  # the first exception event's exception.type
    message: str = ""  # the status message, else the exception event's message
    agent: str = ""


@dataclass(slots=True)
class Failure:
    """A failed span that is not a tool-call layer; ``labels`` are its ``errors_total``
    labels, decided when it was read."""

    trace_id: bytes
    span_id: bytes
    parent_id: bytes
    labels: tuple[tuple[str, str], ...]
    exception: str = ""  # the type of the exception the span recorded itself, if any
    start: int = 0
    end: int = 0
    message: str = ""  # the status message
    peer: bool = False  # the remote peer answered with this error: counted there, not here

    @property
    def types(self) -> tuple[str, ...]:
        """The error types this failure is known by (error_type label, exception type)."""
        return (self.labels[0][1], self.exception) if self.exception else (self.labels[0][1],)


@dataclass(slots=True)
class Call:
    """One tool call, settled."""

    tool: str
    server: str
    mcp: bool
    tool_type: str
    status: str
    error_type: str
    duration: float
    trace_id: bytes
    span_id: bytes
    layers: int
    agent: str


# The join's common case in C (``_agentscan.c``, "the join's common case"): the layers and
# links of one trace from one request whose shapes were read before and with nothing else of
# their trace in that request, packed as (trace id, records, layers, ids): RECORD bytes per
# record: kind (1 a layer, 0 a link), span id length, span id, parent length, parent, the ids
# the layer carries (bit 0 a call id, bit 1 a JSON-RPC id, bit 2: a failed layer and its
# message), start, end, and the layer's series (an index into the connector's table of learned
# layers: a failed layer's reading has its failure after the others); ``ids``
# holds those ids in record order, each as a 2-byte little-endian length and its UTF-8 text
# (call id first, the message last: it may be empty).
Packed = tuple[bytes, bytes, int, bytes]
RECORD = struct.Struct("<BB8sB8sBQQI")
CALL_ID = 1
RPC_ID = 2
FAILED = 4
FAILURE_LINK = 2  # a record's kind: the parent link of a failure held with Packed items


class NativeJoin(Protocol):
    """The C side of the join's common cases (``Scanner.settle_simple``, ``settle_layers``,
    ``settle_packed``, ``settle_due``, ``settle_front``: the joiner's settle loop): configured
    once (:meth:`CallJoiner.configure_native`: the memories' bounds and time to live, the memory
    of failed parents, the classifier and its tables), then each call given its own data only:
    the entry's, the settle's ``now`` (the memories' values are ``(now + ttl, None)``, a mark's
    expiry ``now + marked_ttl``) and the list its ``errors_total`` label sets are appended to."""

    def configure_settle(
        self,
        *,
        size: int,
        keys_size: int,
        ttl: float,
        marked: MemoryItems,
        marked_size: int,
        marked_ttl: float,
        classify: Callable[[str], str],
        timeouts: frozenset[str],
        recoverable: frozenset[str],
    ) -> None: ...
    def settle_simple(self, packed: list[Any], now: float, /) -> int: ...
    def settle_layers(
        self,
        layers: list[Any],
        failures: list[Failure],
        parents: dict[bytes, bytes],
        now: float,
        errors: list[tuple[tuple[str, str], ...]],
        /,
    ) -> int: ...
    def settle_packed(
        self,
        packed: list[Any],
        failures: list[Failure],
        now: float,
        errors: list[tuple[tuple[str, str], ...]],
        /,
    ) -> int: ...
    def settle_due(
        self,
        due: list[tuple[bytes, _Entry]],
        pending: collections.OrderedDict[bytes, _Entry],
        start: int,
        now: float,
        errors: list[tuple[tuple[str, str], ...]],
        /,
    ) -> tuple[int, int]: ...
    def settle_front(
        self,
        pending: collections.OrderedDict[bytes, _Entry],
        max_traces: int,
        now: float,
        everything: bool,
        errors: list[tuple[tuple[str, str], ...]],
        /,
    ) -> tuple[_Entry | None, int, int]: ...


def _settle_one(
    join: NativeJoin, entry: _Entry, now: float, errors: list[tuple[tuple[str, str], ...]]
) -> int:
    """One held entry settled as the scanner settles it: ``settle_simple`` when packed
    (``settle_packed`` when it has failures), else ``settle_layers``; its calls counted, or
    < 0 when it cannot be settled yet."""
    if entry.packed and entry.failures:
        return join.settle_packed(entry.layers, entry.failures, now, errors)
    if entry.packed:
        return join.settle_simple(entry.layers, now)
    return join.settle_layers(entry.layers, entry.failures, entry.parents, now, errors)


def settle_front(
    join: NativeJoin,
    pending: collections.OrderedDict[bytes, _Entry],
    max_traces: int,
    now: float,
    everything: bool,
    errors: list[tuple[tuple[str, str], ...]],
) -> tuple[_Entry | None, int, int]:
    """The twin of the scanner's ``settle_front`` (its loop in Python, through ``join``'s
    ``settle_simple``, ``settle_packed`` and ``settle_layers``): the joiner's settle loop. While
    ``pending`` holds an entry due at its front (every one with ``everything``; else the front
    one while more than ``max_traces`` are held, or while its deadline is not after ``now``), its
    trace is taken out of ``pending`` and the entry settled as :func:`settle_due` settles it.
    Returns (the first entry neither settles, taken out of ``pending``, for the joiner to
    settle, or ``None`` when none is due any more; the calls counted; the entries settled
    before their deadline because more than ``max_traces`` were held, not counted with
    ``everything``)."""
    calls = early = 0
    while pending:
        trace = next(iter(pending))
        entry = pending[trace]
        over = len(pending) > max_traces
        expired = everything or entry.deadline <= now
        if not (over or expired):
            break
        if over and not expired:
            early += 1
        del pending[trace]
        done = _settle_one(join, entry, now, errors)
        if done < 0:
            return entry, calls, early
        calls += done
    return None, calls, early


def settle_due(
    join: NativeJoin,
    due: list[tuple[bytes, _Entry]],
    pending: collections.OrderedDict[bytes, _Entry],
    start: int,
    now: float,
    errors: list[tuple[tuple[str, str], ...]],
) -> tuple[int, int]:
    """The twin of the scanner's ``settle_due`` (its loop in Python, through ``join``'s
    ``settle_simple`` and ``settle_layers``): from ``due[start]`` on, each trace taken out of
    ``pending`` and its entry settled by ``settle_simple`` when packed (``settle_packed`` when it
    has failures: the Layer objects and parent links its records stand for, as settle_layers
    settles them), else ``settle_layers``;
    stops at the first entry neither settles (nothing done for it but its removal from
    ``pending``) or at the end: (its index or ``len(due)``, the calls counted)."""
    calls = 0
    at = max(start, 0)
    while at < len(due):
        trace, entry = due[at]
        del pending[trace]
        done = _settle_one(join, entry, now, errors)
        if done < 0:
            break
        calls += done
        at += 1
    return at, calls


# A packed entry's failures and parents until it has some: one shared empty tuple instead of an
# empty list and dict of its own (~120 bytes less a held trace, 10,000 held at 100,000 spans/s).
# A packed entry's parents stay empty (its links are in its records); its failures become a
# list of its own when the first arrives; _unpack gives it its own list and dict. A write into
# it raises (it is a tuple): nothing is ever written into one shared.
NONE_YET: Any = ()


@dataclass(slots=True)
class _Entry:
    deadline: float
    layers: list[Any] = field(default_factory=list)  # Layer (or Packed while ``packed``)
    failures: list[Failure] = field(default_factory=list)  # (NONE_YET: packed, none yet)
    # span id -> parent span id (NONE_YET: packed)
    parents: dict[bytes, bytes] = field(default_factory=dict)
    # the entry holds Packed records only (nothing read in Python arrived for its trace); its
    # parents are in the records, unpacked when anything else arrives for it or it does not
    # settle as the common case
    packed: bool = False
    extra: int = 0  # the layers in its Packed records beyond one per record string


MAX_DEPTH = 512  # parent links followed up from one failure at most
MAX_ORIGINS = 64  # failures of one trace compared with each other at most
MAX_ENTRY_ITEMS = 10_000  # layers and failures one held trace takes before it is settled


class _Marks:
    """The spans of one trace entry with a failure below them, the error types of those
    failures, and whether the path down to one of them is made of failed spans only."""

    def __init__(self, entry: _Entry, memory: _Memory, now: float) -> None:
        self.parents = entry.parents
        # (trace, span) -> (error types below it, reached through failed spans only), kept
        # across entries (a failed parent may arrive after its child was settled)
        self.memory = memory
        self.now = now
        self.failed: set[bytes] = set()  # span ids of the entry's failed spans
        # this settle's marks (the memory is bounded: it may forget some before the end)
        self.marks: dict[tuple[bytes, bytes], tuple[frozenset[str], bool]] = {}

    def known(self, key: tuple[bytes, bytes]) -> tuple[frozenset[str], bool] | None:
        found = self.marks.get(key)
        return found if found is not None else self.memory.get(key)

    def above(self, trace: bytes, parent: bytes, types: tuple[str, ...]) -> None:
        """Marks ``parent`` and the spans above it (as far as the entry's links go)."""
        direct = True
        memory = self.memory
        items = memory.items  # (known() and Memory.add inline)
        marks = self.marks
        expiry = self.now + memory.ttl
        for _ in range(MAX_DEPTH):
            if not parent:
                return
            key = (trace, parent)
            known = marks.get(key)
            if known is None:
                found = items.get(key)
                if found is not None:
                    known = found[1]
            if known is not None and known[0].issuperset(types) and (known[1] or not direct):
                return  # marked so already, and everything above it by the same walk
            below = frozenset(types) if known is None else known[0] | frozenset(types)
            mark = (below, direct or (known is not None and known[1]))
            marks[key] = mark
            items[key] = (expiry, mark)
            items.move_to_end(key)
            while len(items) > memory.size:
                items.popitem(last=False)
            if direct:
                direct = parent in self.failed
            parent = self.parents.get(parent, b"")

    def propagated(self, failure: Failure) -> bool:
        """A failure below it, and no exception of its own (a type none below has, reached
        through a span that did not fail: the failure below was handled)."""
        known = self.known((failure.trace_id, failure.span_id))
        if known is None:
            return False
        below, direct = known
        own = failure.exception
        return not (own and own not in below and not direct)


class MemoryItems(Protocol):
    """What a memory keeps its entries in: the Python twin's ``OrderedDict`` (trimmed to the
    size after each put), or with the C scanner its ``_agentscan.Memory`` (which drops its
    oldest beyond its size itself): the same entries in the same order."""

    def __len__(self) -> int: ...
    def __contains__(self, key: object, /) -> bool: ...
    def __getitem__(self, key: object, /) -> tuple[float, Any]: ...
    def __setitem__(self, key: object, value: tuple[float, Any], /) -> None: ...
    def __iter__(self) -> Iterator[object]: ...
    def get(self, key: object, /) -> tuple[float, Any] | None: ...
    def move_to_end(self, key: object, /) -> None: ...
    def popitem(self, last: bool = ...) -> tuple[object, tuple[float, Any]]: ...
    def items(self) -> Iterable[tuple[object, tuple[float, Any]]]: ...


class _Memory:
    """A bounded, time-limited map of keys to values (oldest first out)."""

    def __init__(self, size: int, ttl: float) -> None:
        self._size = size
        self.ttl = ttl
        self.items: MemoryItems = collections.OrderedDict()

    @property
    def size(self) -> int:
        return self._size

    @size.setter
    def size(self, size: int) -> None:
        self._size = size
        if self.items.__class__ is not collections.OrderedDict:
            self.items.size = size  # type: ignore[attr-defined]  # (the C memory's own bound)

    def use(self, memory: Callable[[int], MemoryItems]) -> None:
        """Keeps the entries in ``memory(size)`` from now on (the C scanner's ``Memory``),
        those held so far moved over in order."""
        items = memory(self._size)
        for key, value in self.items.items():
            items[key] = value
        self.items = items

    def add(self, key: object, now: float, value: Any = None) -> None:
        items = self.items
        items[key] = (now + self.ttl, value)
        items.move_to_end(key)
        while len(items) > self.size:
            items.popitem(last=False)

    def get(self, key: object) -> Any:
        found = self.items.get(key)
        return None if found is None else found[1]

    def __contains__(self, key: object) -> bool:
        return key in self.items

    def prune(self, now: float) -> None:
        items = self.items
        if items.__class__ is not collections.OrderedDict:
            items.prune(now)  # type: ignore[attr-defined]  # (the C memory: the loop below)
            return
        while items:
            _key, (expiry, _value) = next(iter(items.items()))
            if expiry > now:
                break
            items.popitem(last=False)


def _inside_failed_call(failure: Failure, calls: list[tuple[int, int, set[str]]]) -> bool:
    """A failure within the time of a failed tool call of its trace that says the same (its
    status message or error type): a span of that call no dialect recognises (OpenLLMetry's
    MCP transport spans), not a failure of its own."""
    said = {failure.message, failure.labels[0][1]} - {"", OTHER}
    return any(
        start <= failure.start and failure.end <= end and not said.isdisjoint(what)
        for start, end, what in calls
    )


def _rpc_key(layer: Layer) -> tuple[str, ...] | None:
    """The key joining MCP client and server sides of one request across traces (with a
    session id) or within one trace (without)."""
    if not layer.rpc_id or layer.side == FRAMEWORK:
        return None
    scope = layer.session or layer.trace_id.hex()
    return (scope, layer.rpc_id, layer.tool)


def hold_packed(
    items: list[Any],
    start: int,
    pending: collections.OrderedDict[bytes, _Entry],
    deadline: float,
    grown: list[bytes],
    links_only: list[Packed] | None,
    entry: type[_Entry] = _Entry,
    max_items: int = MAX_ENTRY_ITEMS,
) -> int:
    """The Packed items of ``items`` from ``start`` on held as :meth:`CallJoiner.add` holds
    them (``_agentscan.hold_packed`` is its twin in C): a trace not in ``pending`` gets an
    ``entry`` (deadline, [item], NONE_YET, NONE_YET, packed, its layers - 1) put at its end,
    its trace appended to ``grown`` when it has more than ``max_items`` layers (settled with this
    request); an item of no layer of a trace not held goes to ``links_only`` (``None``:
    dropped); a packed entry takes the item (its trace appended to ``grown``). Stops at the
    first item that is not a Packed item, or whose trace is held unpacked: its index, or
    ``len(items)``."""
    for at in range(max(start, 0), len(items)):
        item = items[at]
        if item.__class__ is not tuple:
            return at
        trace, _records, count, _ids = item
        held = pending.get(trace)
        if held is None:
            if count:
                # (positional: deadline, layers, failures, parents, packed, extra)
                pending[trace] = entry(deadline, [item], NONE_YET, NONE_YET, True, count - 1)
                if count > max_items:
                    grown.append(trace)
            elif links_only is not None:  # (links only: kept for a trace held, as links are)
                links_only.append(item)
            continue
        if not held.packed:
            return at
        grown.append(trace)
        held.layers.append(item)
        held.extra += count - 1
    return len(items)


class HoldPacked(Protocol):
    """:func:`hold_packed`, or its C twin ``_agentscan.hold_packed``."""

    def __call__(
        self,
        items: list[Any],
        start: int,
        pending: collections.OrderedDict[bytes, _Entry],
        deadline: float,
        grown: list[bytes],
        links_only: list[Packed] | None,
        entry: type[_Entry],
        max_items: int,
        /,
    ) -> int: ...


class CallJoiner:
    """Holds tool-call layers and failures per trace for ``window`` seconds, then settles them
    into :class:`Call` s and counted failures (see the module docstring)."""

    def __init__(
        self, window: float, max_traces: int, classify: Callable[[str], str] | None = None
    ) -> None:
        self.window = window
        self.max_traces = max_traces
        self.classify = classify or (lambda text: "")
        self.pending: collections.OrderedDict[bytes, _Entry] = collections.OrderedDict()
        # (session, rpc id, tool) of pending MCP layers with a session -> their trace
        self._by_session: dict[tuple[str, ...], bytes] = {}
        memory = max(1024, 4 * max_traces)
        ttl = max(window * 6, 60.0)
        # settled span ids (trace, span) of layers, and their call and session keys
        self._settled_layers = _Memory(memory, ttl)
        self._settled_keys = _Memory(memory, ttl)
        # (trace, span) of spans known to have a failed child (their failure is propagated)
        self._failed_parents = _Memory(memory, ttl)
        self.late_layers = 0  # layers of a call already counted: not counted again
        self.early_settled = 0  # traces settled before their window because of max_traces
        # the join's common case in C: the scanner that packs (settles Packed entries), the
        # learned layers' readings (side, tool, tool type, mcp, server, retry, agent) by series,
        # and the calls it settled since the connector last counted them
        self.native: NativeJoin | None = None
        self.learned: list[tuple[Any, ...]] = []
        self.native_calls = 0
        # how add holds a request's Packed items (the C twin with the C scanner)
        self.hold: HoldPacked = hold_packed

    def __len__(self) -> int:
        return len(self.pending)

    def use_memory(self, memory: Callable[[int], MemoryItems]) -> None:
        """Keeps the memories of settled layers, settled keys and failed parents in
        ``memory(size)`` (the C scanner's ``Memory``, which its settle paths write directly)."""
        for held in (self._settled_layers, self._settled_keys, self._failed_parents):
            if held.items.__class__ is collections.OrderedDict:
                held.use(memory)
        self.configure_native()

    def use_native(self, native: NativeJoin) -> None:
        """Settles the join's common cases with ``native`` (the C scanner), configured here."""
        self.native = native
        self.configure_native()

    def configure_native(self) -> None:
        """Gives the C side what its settle paths read on every call (the memories' bounds and
        time to live, the memory of failed parents, the classifier and its tables): once, and
        again whenever the memories change (their kind, their bounds)."""
        native = self.native
        if native is None:
            return
        marked = self._failed_parents
        native.configure_settle(
            size=self._settled_layers.size,
            keys_size=self._settled_keys.size,
            ttl=self._settled_layers.ttl,
            marked=marked.items,
            marked_size=marked.size,
            marked_ttl=marked.ttl,
            classify=self.classify,
            timeouts=TIMEOUTS,
            recoverable=RECOVERABLE,
        )

    def settled_keys_memory(self) -> MemoryItems:
        """The memory of settled call and JSON-RPC keys (``("call", trace, call id)``,
        ``("rpc", scope, rpc id, tool)`` -> (expiry, None)), which the C side of the join's
        common case reads (late layers) and writes (``settle_simple``); its time to live is
        the memory of settled layers' (one ``value`` for both)."""
        return self._settled_keys.items

    def settled_memory(self) -> MemoryItems:
        """The memory of settled layers ((trace, span) -> (expiry, None)), which the C side of
        the join's common case reads (late layers) and writes (``settle_simple``)."""
        return self._settled_layers.items

    # -- input -------------------------------------------------------------------------------
    def add(
        self,
        layers: Iterable[Layer],
        failures: Iterable[Failure],
        now: float,
        links: Iterable[tuple[bytes, bytes, bytes]] = (),
    ) -> None:
        """Holds a request's layers and failures (plain appends: cannot fail half-way), and
        the parent links ``(trace, span, parent)`` of other spans of the traces held."""
        settled = self._settled_layers.items
        pending = self.pending
        deadline = now + self.window
        # the traces whose entry may have grown past MAX_ENTRY_ITEMS (checked below): every
        # trace of the request's items but those whose entry a Packed item made here with at
        # most MAX_ENTRY_ITEMS layers (nothing else adds to it unless its trace is here again)
        grown: list[bytes] = []
        # Packed links only of a trace not held: kept, as links are, when a failure of this
        # request makes its entry (its failed spans read in Python, the C scanner packed them)
        links_only: list[Packed] = []
        items: list[Any] = layers if isinstance(layers, list) else list(layers)
        hold = self.hold
        kept = links_only if failures else None  # (links only: kept when a failure came)
        at, end = 0, len(items)
        while at < end:
            layer = items[at]
            at += 1
            if layer.__class__ is tuple:  # Packed (the C scanner dropped its late layers)
                # held from here on by hold_packed (or its C twin, then the rest it leaves by
                # hold_packed), up to the first of a trace held unpacked, unpacked into it
                at = hold(items, at - 1, pending, deadline, grown, kept, _Entry, MAX_ENTRY_ITEMS)
                if at < end and hold is not hold_packed:
                    at = hold_packed(items, at, pending, deadline, grown, kept)
                if at >= end:
                    break
                layer = items[at]
                at += 1
                if layer.__class__ is tuple:
                    trace = layer[0]
                    grown.append(trace)
                    self._unpack_into(pending[trace], layer)
                    continue
            trace = layer.trace_id
            grown.append(trace)
            if (trace, layer.parent_id) in settled or (
                (layer.call_id or layer.rpc_id) and self._is_late(layer)
            ):
                self.late_layers += 1
                continue
            if not layer.session:  # (the common case: _entry inline)
                entry = pending.get(trace)
                if entry is None:
                    entry = pending[trace] = _Entry(deadline, [], [], {}, False, 0)
                elif entry.packed:
                    self._unpack(entry)
                entry.layers.append(layer)
                entry.parents[layer.span_id] = layer.parent_id
                continue
            if layer.session and layer.rpc_id:
                key = (layer.session, layer.rpc_id, layer.tool)
                other = self._by_session.get(key)
                if other is not None and other in self.pending:
                    trace = other  # joins the pending call of another trace
                else:
                    self._by_session[key] = trace
            entry = self._entry(trace, now)
            entry.layers.append(layer)
            if layer.trace_id == trace:
                entry.parents[layer.span_id] = layer.parent_id
        for failure in failures:
            trace = failure.trace_id
            entry = pending.get(trace)
            if entry is not None and entry.packed:
                span, parent = failure.span_id, failure.parent_id
                if len(span) <= 8 and len(parent) <= 8:
                    # kept packed (settle_packed): its parent link in order, as a Packed item
                    # of one record of kind 2 (set as it is when unpacked, even empty)
                    record = RECORD.pack(2, len(span), span, len(parent), parent, 0, 0, 0, 0)
                    entry.layers.append((trace, record, 0, b""))
                    entry.extra -= 1
                    if entry.failures:
                        entry.failures.append(failure)
                    else:  # (its first: NONE_YET until now)
                        entry.failures = [failure]
                    continue
            entry = self._entry(trace, now)
            entry.failures.append(failure)
            entry.parents[failure.span_id] = failure.parent_id
        for item in links_only:
            entry = pending.get(item[0])
            if entry is not None:  # (made by a failure: not packed)
                self._unpack_into(entry, item)
        for trace in {f.trace_id for f in failures}.union(grown):
            held = pending.get(trace)
            if (
                held is not None
                and len(held.layers) + held.extra + len(held.failures) > MAX_ENTRY_ITEMS
            ):
                held.deadline = now  # a huge trace is not held: settled with this request
                pending.move_to_end(trace, last=False)
        for trace, span, parent in links:
            held = pending.get(trace)
            if held is not None and parent:
                if held.packed:
                    if len(span) <= 8 and len(parent) <= 8:
                        # kept in order as a Packed item of one link (no layer: not counted
                        # as an item of the entry)
                        record = RECORD.pack(0, len(span), span, len(parent), parent, 0, 0, 0, 0)
                        held.layers.append((trace, record, 0, b""))
                        held.extra -= 1
                        continue
                    self._unpack(held)
                held.parents[span] = parent

    def _unpack(self, entry: _Entry) -> None:
        """A Packed entry as the layers and parents it holds (in their order)."""
        packed = entry.layers
        entry.layers = []
        entry.packed = False
        entry.extra = 0
        if not entry.parents:  # (NONE_YET: its own from now on)
            entry.parents = {}
        if not entry.failures:
            entry.failures = []
        for item in packed:
            self._unpack_into(entry, item)

    def _unpack_into(self, entry: _Entry, item: Packed) -> None:
        """Adds a Packed record string's layers and links to ``entry`` as :meth:`add` adds a
        request's (layers, then links)."""
        trace, records, _count, ids = item
        learned = self.learned
        links = []
        parents = entry.parents
        at = 0
        for kind, sn, span, pn, parent, flags, start, end, series in RECORD.iter_unpack(records):
            span = span[:sn]
            parent = parent[:pn]
            if kind == FAILURE_LINK:  # (a failure's parent link: an item of its own)
                parents[span] = parent
            elif kind:
                side, tool, tool_type, mcp, server, retry, agent = learned[series][:7]
                call = rpc = ""
                if flags & CALL_ID:
                    n = ids[at] | ids[at + 1] << 8
                    call = ids[at + 2 : at + 2 + n].decode()
                    at += 2 + n
                if flags & RPC_ID:
                    n = ids[at] | ids[at + 1] << 8
                    rpc = ids[at + 2 : at + 2 + n].decode()
                    at += 2 + n
                if flags & FAILED:  # (its message, and its failure by its series)
                    n = ids[at] | ids[at + 1] << 8
                    message = ids[at + 2 : at + 2 + n].decode()
                    at += 2 + n
                    failed, error_type, exc = learned[series][9:]
                    entry.layers.append(Layer(trace, span, parent, side, tool, tool_type, mcp,
                                              call, rpc, "", server, start, end, failed, retry,
                                              error_type, exc, message if failed else "",
                                              agent))  # fmt: skip
                    parents[span] = parent
                    continue
                entry.layers.append(Layer(trace, span, parent, side, tool, tool_type, mcp, call,
                                          rpc, "", server, start, end, False, retry, "", "", "",
                                          agent))  # fmt: skip
                parents[span] = parent
            else:
                links.append((span, parent))
        for span, parent in links:
            if parent:
                parents[span] = parent

    def _is_late(self, layer: Layer) -> bool:
        settled = self._settled_layers
        trace = layer.trace_id
        if (trace, layer.parent_id) in settled:
            return True
        if layer.call_id and ("call", trace, layer.call_id) in self._settled_keys:
            return True
        key = _rpc_key(layer)
        return key is not None and ("rpc", *key) in self._settled_keys

    def _entry(self, trace: bytes, now: float) -> _Entry:
        entry = self.pending.get(trace)
        if entry is None:
            entry = self.pending[trace] = _Entry(now + self.window)
        elif entry.packed:
            self._unpack(entry)
        return entry

    # -- output ------------------------------------------------------------------------------
    def settle(
        self, now: float, everything: bool = False
    ) -> tuple[list[Call], list[tuple[tuple[str, str], ...]]]:
        """The calls and the ``errors_total`` label sets of the traces whose window ended (all
        of them with ``everything``; the oldest beyond ``max_traces`` in any case)."""
        calls: list[Call] = []
        errors: list[tuple[tuple[str, str], ...]] = []
        pending = self.pending
        native = self.native
        if native is not None:  # the join's common case settled there (_settle's first step)
            max_traces = self.max_traces
            while True:
                # the entries due settled in one C call (settle_front: taken out of pending
                # from its front while due, each settled by settle_simple when packed, else
                # settle_layers) up to the first that is neither common case, settled here
                entry, done, early = native.settle_front(pending, max_traces, now, everything,
                                                         errors)  # fmt: skip
                self.native_calls += done
                self.early_settled += early
                if entry is None:
                    break
                if entry.packed:
                    self._unpack(entry)  # not the common case (settle_simple did nothing)
                    # layers that are calls of their own, failed or not, and failures (the
                    # traces with a failure): _settle in C; -1: nothing done, another case
                    done = native.settle_layers(entry.layers, entry.failures, entry.parents,
                                                now, errors)  # fmt: skip
                    if done >= 0:
                        self.native_calls += done
                        continue
                self._settle(entry, now, calls, errors)
        else:
            due: list[tuple[bytes, _Entry]] = []
            held = len(pending)
            if everything:
                due = list(pending.items())
            elif held <= self.max_traces:  # (none over the bound: due by their deadlines only)
                for item in pending.items():  # oldest first, up to the first not due
                    if item[1].deadline > now:
                        break
                    due.append(item)
            else:
                for trace, entry in pending.items():  # oldest first, up to the first not due
                    over = held > self.max_traces
                    if not (over or entry.deadline <= now):
                        break
                    if over and entry.deadline > now:
                        self.early_settled += 1
                    due.append((trace, entry))
                    held -= 1
            for trace, entry in due:
                del pending[trace]
                self._settle(entry, now, calls, errors)
        for memory in (self._settled_layers, self._settled_keys, self._failed_parents):
            memory.prune(now)
        if len(self._by_session) > 4 * max(len(pending), 256):
            self._by_session = {k: t for k, t in self._by_session.items() if t in pending}
        return calls, errors

    def _settle(
        self,
        entry: _Entry,
        now: float,
        calls: list[Call],
        errors: list[tuple[tuple[str, str], ...]],
    ) -> None:
        if entry.packed and not entry.failures:
            native = self.native
            if native is not None:
                count = native.settle_simple(entry.layers, now)
                if count >= 0:
                    self.native_calls += count
                    return
            self._unpack(entry)
        layers = entry.layers
        if not entry.failures and self._settle_simple(layers, now, calls):
            return
        groups = _group(layers)
        if not entry.failures and not any(x.failed for x in layers):
            # nothing failed: the calls, and the memory of their layers
            # (Memory.add inline: trimmed once at the end, which leaves the same keys)
            memory = self._settled_layers
            items = memory.items
            value = (now + memory.ttl, None)
            for group in groups:
                calls.append(self._call(group)[0])
                for layer in group:
                    key = (layer.trace_id, layer.span_id)
                    items[key] = value
                    items.move_to_end(key)
                    if layer.call_id or layer.rpc_id or layer.session:
                        self._remember_keys(layer, now)
            while len(items) > memory.size:
                items.popitem(last=False)
            return
        marks = _Marks(entry, self._failed_parents, now)
        marks.failed.update(x.span_id for x in layers if x.failed and not x.retry)
        marks.failed.update(f.span_id for f in entry.failures)
        failed_calls: list[tuple[int, int, set[str]]] = []  # (start, end, messages / types)
        settled = self._settled_layers
        for group in groups:
            call, labels = self._call(group)
            calls.append(call)
            if call.status == STATUS_ERROR:
                said = {x.message for x in group if x.message} | {call.error_type}
                failed_calls.append((min(x.start for x in group), max(x.end for x in group), said))
            for layer in group:
                settled.add((layer.trace_id, layer.span_id), now)
                if layer.call_id or layer.rpc_id or layer.session:
                    self._remember_keys(layer, now)
            if call.status == STATUS_ERROR:
                types = (call.error_type, *(x.exception for x in group if x.exception))
                for layer in group:
                    marks.above(layer.trace_id, layer.parent_id, types)
                if labels is not None:
                    errors.append(labels)
        # failures: every span above a failed one is marked first, then each failure counts
        # unless it is a propagation (see the module docstring)
        for failure in entry.failures:
            marks.above(failure.trace_id, failure.parent_id, failure.types)
        origins = [
            f
            for f in entry.failures
            if not (f.peer or marks.propagated(f)) and not _inside_failed_call(f, failed_calls)
        ]
        for failure in origins:
            # the same error recorded by a span whose time holds another's (OpenInference
            # records LangGraph's node and its model call as siblings): once, the inner one
            if len(origins) <= MAX_ORIGINS and any(
                other is not failure
                and other.labels[0] == failure.labels[0]
                and failure.start <= other.start
                and other.end <= failure.end
                and (other.start, other.end) != (failure.start, failure.end)
                for other in origins
            ):
                continue
            errors.append(failure.labels)

    def _settle_simple(self, layers: list[Layer], now: float, calls: list[Call]) -> bool:
        """The common trace: layers that did not fail, none with a join key or the parent of
        another: each is a call of its own. Settles them as the general path would
        (:func:`_group` gives one group per layer, :meth:`_call` its fast case), or returns
        ``False`` (nothing done) for any other trace."""
        if len(layers) == 1:
            x = layers[0]
            if x.failed or x.call_id or (x.rpc_id and x.side != FRAMEWORK):
                return False
        else:
            spans = set()
            for x in layers:
                if x.failed or x.call_id or (x.rpc_id and x.side != FRAMEWORK):
                    return False
                spans.add((x.trace_id, x.span_id))
            if len(spans) != len(layers):
                return False
            for x in layers:
                if (x.trace_id, x.parent_id) in spans:
                    return False
        memory = self._settled_layers
        items = memory.items
        value = (now + memory.ttl, None)
        for x in layers:
            calls.append(self._one_call(x)[0])
            key = (x.trace_id, x.span_id)
            items[key] = value
            items.move_to_end(key)
            if x.rpc_id or x.session:
                self._remember_keys(x, now)
        while len(items) > memory.size:
            items.popitem(last=False)
        return True

    def _remember_keys(self, layer: Layer, now: float) -> None:
        """A settled layer's call and JSON-RPC keys (a late layer with one is not counted
        again); its pending session key goes."""
        if layer.call_id:
            self._settled_keys.add(("call", layer.trace_id, layer.call_id), now)
        key = _rpc_key(layer)
        if key is not None:
            self._settled_keys.add(("rpc", *key), now)
        if layer.session and layer.rpc_id:
            self._by_session.pop((layer.session, layer.rpc_id, layer.tool), None)

    def _one_call(self, x: Layer) -> tuple[Call, tuple[tuple[str, str], ...] | None]:
        """The call of a group of one layer, and its ``errors_total`` labels when it failed:
        what the general case of :meth:`_call` gives for it, without its searches (the common
        case; ``settle_layers`` in C is its twin)."""
        mcp = x.mcp or x.side != FRAMEWORK
        labels: tuple[tuple[str, str], ...] | None = None
        if not x.failed:
            status, error_type = (STATUS_RETRY if x.retry else STATUS_SUCCESS), NO_ERROR
        elif not x.retry or self.classify(x.message) in TIMEOUTS:
            error_type = (
                (x.error_type if not x.retry else "")
                or (x.exception if not x.retry else "")
                or self.classify(x.message)
                or OTHER
            )
            status = STATUS_ERROR
            labels = (
                ("error_type", error_type),
                ("component", "mcp" if mcp else "tool"),
                ("severity", "error"),
                ("recoverable", "true" if error_type in RECOVERABLE else "false"),
            )
        else:  # a retry the model was asked for: not a failure
            status, error_type = STATUS_RETRY, NO_ERROR
        call = Call(
            tool=x.tool or UNKNOWN,
            server=(x.server or UNKNOWN) if mcp else "",
            mcp=mcp,
            tool_type="mcp" if mcp else (x.tool_type or "function"),
            status=status,
            error_type=error_type,
            duration=(x.end - x.start) / 1e9,
            trace_id=x.trace_id,
            span_id=x.span_id,
            layers=1,
            agent=x.agent,
        )
        return call, labels

    def _call(self, group: list[Layer]) -> tuple[Call, tuple[tuple[str, str], ...] | None]:
        if len(group) == 1:
            return self._one_call(group[0])
        ids = {(layer.trace_id, layer.span_id) for layer in group}
        # the caller: an outermost layer (its parent is not in the call), framework first
        outer = [layer for layer in group if (layer.trace_id, layer.parent_id) not in ids]
        caller = min(outer or group, key=lambda x: (x.side, x.start))
        ordered = sorted(group, key=lambda x: (x.side, x.start))
        tool = caller.tool or next((x.tool for x in ordered if x.tool), "") or UNKNOWN
        mcp = any(x.mcp or x.side != FRAMEWORK for x in group)
        server = next((x.server for x in ordered if x.side != MCP_SERVER and x.server), "")
        server = server or next((x.server for x in ordered if x.server), "") or UNKNOWN
        tool_type = "mcp" if mcp else (caller.tool_type or "function")
        agent = next((x.agent for x in ordered if x.agent), "")
        classify = self.classify
        # a retry the framework asks for because the tool timed out (pydantic-ai turns a tool
        # timeout into a retry prompt) is a failure of the tool; any other retry is not
        failing = [
            x for x in ordered if x.failed and (not x.retry or classify(x.message) in TIMEOUTS)
        ]
        labels = None
        if failing:
            status = STATUS_ERROR
            # a retry layer's error.type and exception name the retry, not the failure (a
            # processor upstream may have copied the exception type into error.type)
            error_type = (
                next((x.error_type for x in failing if x.error_type and not x.retry), "")
                or next((x.exception for x in failing if x.exception and not x.retry), "")
                or next((t for t in (classify(x.message) for x in failing) if t), "")
                or OTHER
            )
            labels = (
                ("error_type", error_type),
                ("component", "mcp" if mcp else "tool"),
                ("severity", "error"),
                ("recoverable", "true" if error_type in RECOVERABLE else "false"),
            )
        else:
            status = STATUS_RETRY if any(x.retry for x in group) else STATUS_SUCCESS
            error_type = NO_ERROR
        call = Call(
            tool=tool,
            server=server if mcp else "",
            mcp=mcp,
            tool_type=tool_type,
            status=status,
            error_type=error_type,
            duration=(caller.end - caller.start) / 1e9,
            trace_id=caller.trace_id,
            span_id=caller.span_id,
            layers=len(group),
            agent=agent,
        )
        return call, labels


TIMEOUTS = frozenset({"timeout", "cancelled"})
RECOVERABLE = frozenset(
    {"timeout", "rate_limited", "connection", "TimeoutError", "ConnectionError", "cancelled"}
)


def _group(layers: list[Layer]) -> list[list[Layer]]:
    """The layers of one trace entry grouped into calls (union-find over parent links, call
    ids and JSON-RPC keys), each group in arrival order."""
    n = len(layers)
    if n == 1:
        return [layers]
    if not any(x.call_id or (x.rpc_id and x.side != FRAMEWORK) for x in layers):
        # no join keys: only parent links can join them
        spans = {(x.trace_id, x.span_id) for x in layers}
        if len(spans) == n and not any((x.trace_id, x.parent_id) in spans for x in layers):
            return [[x] for x in layers]
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    by_span: dict[tuple[bytes, bytes], int] = {}
    by_key: dict[object, int] = {}
    for i, layer in enumerate(layers):
        by_span.setdefault((layer.trace_id, layer.span_id), i)
    for i, layer in enumerate(layers):
        j = by_span.get((layer.trace_id, layer.parent_id))
        if j is not None:
            union(i, j)
        keys: list[object] = []
        if layer.call_id:
            keys.append(("call", layer.trace_id, layer.call_id))
        key = _rpc_key(layer)
        if key is not None:
            keys.append(("rpc", *key))
            if layer.session:
                keys.append(("session", layer.session, layer.rpc_id, layer.tool))
        for k in keys:
            j = by_key.setdefault(k, i)
            if j != i:
                union(i, j)
    groups: dict[int, list[Layer]] = {}
    for i, layer in enumerate(layers):
        groups.setdefault(find(i), []).append(layer)
    return list(groups.values())
