"""The ``agentmetrics`` connector's span scanner in C (``_agentscan.c``); the pure-Python twin
is the connector's own reading of spans (``plugins/agentmetricsconnector/connector.py``). Built
once per connector from its configuration; :meth:`Scanner.scan` raises ``ValueError`` on a
malformed request."""

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

NKEYS: int

# a span left to Python: (start, end, resource_start, resource_end, scope_start, scope_end),
# and with ``shape_keys`` configured also (shape | None, trace_id, span_id, parent_span_id,
# start_ns, end_ns); with ``join_shapes`` also a trace's packed spans (trace_id, records,
# layers, ids): see "the join's common case" in the C source and ``Packed`` in calls.py
Fallback = tuple[Any, ...]

class Memory:
    """A joiner's bounded memory (key -> value, at most ``size`` entries, the least recently
    put dropped first) in C: what its ``OrderedDict`` trimmed to ``size`` after each put holds,
    in the same order (the recency memory of ``_recency.h``, shared with ``_tracewire``'s
    ``LateMemory``). Keys are bytes, str, int, None or tuples of them (else ``TypeError``),
    each held packed as one bytes object of its encoding (no tuple, no reference to the
    objects it was made of): ``items``, ``keys``, iteration and ``popitem`` give back keys
    equal to those put, not the same objects."""

    size: int  # set: the oldest dropped beyond it
    def __init__(self, size: int) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, key: object, /) -> bool: ...
    def __getitem__(self, key: object, /) -> Any: ...
    def __setitem__(self, key: object, value: Any, /) -> None: ...
    def __delitem__(self, key: object, /) -> None: ...
    def __iter__(self) -> Iterator[Any]: ...
    def get(self, key: object, default: Any = None, /) -> Any: ...
    def move_to_end(self, key: object, /) -> None: ...
    def popitem(self, last: bool = True) -> tuple[Any, Any]: ...
    def prune(self, now: float, /) -> None:
        """The oldest entries whose expiry (the value's first item) is not after ``now``
        dropped, up to the first that is."""
    def clear(self) -> None: ...
    def items(self) -> list[tuple[Any, Any]]: ...
    def keys(self) -> list[Any]: ...

class RootMemory:
    """The connector's memory of workflow roots in C (trace id -> (workflow type, agent id), at
    most ``size`` entries, the least recently put dropped first): what the twin
    (``connector.py`` ``RootMemory``, an ``OrderedDict`` trimmed to ``size`` after each put)
    holds, in the same order. Keyed by the raw trace id (bytes, else ``TypeError``): a 16-byte
    id is held in the table's node, no Python object per entry; ``items`` and ``keys`` give the
    ids back as new bytes objects."""

    size: int  # set: the oldest dropped beyond it
    def __init__(self, size: int) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, trace_id: object, /) -> bool: ...
    def get(self, trace_id: bytes, default: Any = None, /) -> Any: ...
    def put(self, trace_id: bytes, value: Any, /) -> None:
        """``trace_id`` -> ``value`` as the newest entry (the oldest dropped beyond ``size``;
        with ``size`` 0 nothing is kept)."""
    def clear(self) -> None: ...
    def items(self) -> list[tuple[bytes, Any]]: ...
    def keys(self) -> list[bytes]: ...

def hold_packed(
    items: list[Any],
    start: int,
    pending: OrderedDict[bytes, Any],
    deadline: float,
    grown: list[bytes],
    links_only: list[Any] | None,
    entry: type,
    max_items: int,
    /,
) -> int:
    """The twin of calls.py ``hold_packed`` (``CallJoiner.add``'s holding of a request's Packed
    items): from ``items[start]`` on, a Packed item of a trace not in ``pending`` makes its
    ``entry`` (deadline, [item], (), (), True, its layers - 1: the class's slots written as its
    dataclass ``__init__`` writes them) put at the end of ``pending``, its trace appended to
    ``grown`` when its layers exceed ``max_items``; one of no layer of a trace not held goes to
    ``links_only`` (``None``: dropped); a packed entry takes the item (its trace appended to
    ``grown``, ``extra`` grown by its layers - 1). Stops at the first item it leaves to the
    joiner (not a Packed item with a bytes trace and an int count, a trace held unpacked or not
    by an ``entry``, ``pending`` not a dict or an OrderedDict): its index, or ``len(items)``.
    ``TypeError`` when ``entry`` is not a slots class of those six attributes."""

class Scanner:
    def __init__(
        self,
        keys: tuple[bytes, ...],
        tool_operation: bytes,
        tool_method: bytes,
        workflow_prefix: bytes,
        tool_bounds: Sequence[float],
        http_bounds: Sequence[float],
        workflow_bounds: Sequence[float],
        a2a_bounds: Sequence[float],
        max_exemplars: int,
        recoverable: Iterable[str],
        llm_operations: Iterable[str],
        outcomes: tuple[str, ...],
        producers: OrderedDict[bytes, int] | Memory,
        cache_size: int,
        defer_keys: tuple[bytes, ...] = (),
        defer_names: tuple[bytes, ...] = (),
        defer_scopes: tuple[bytes, ...] = (),
        shape_keys: tuple[bytes, ...] = (),
        join_shapes: dict[tuple[bytes, bytes, bytes], int] | None = None,
        join_series: list[tuple[bool, str, str, str]] | None = None,
        join_settled: Memory | OrderedDict[Any, Any] | None = None,
        presence_keys: tuple[bytes, ...] = (),
        join_learned: list[tuple[Any, ...]] | None = None,
        join_keys: Memory | OrderedDict[Any, Any] | None = None,
        join_id_keys: tuple[bytes, ...] | None = None,
    ) -> None:
        """``producers``: the A2A producer cache (span id -> start), a dict or OrderedDict
        bounded by ``cache_size`` (the Python twin's), or a :class:`Memory` of ``cache_size``
        entries (the connector's: put into and read without a key object made per span).
        ``keys``: the attribute keys the scan reads, in the order of the ``K_`` enum of
        ``_agentscan.c`` (``_native_scanner`` in the connector); a workflow root's agent is read
        from ``workflow.agent.id``, ``gen_ai.agent.name`` and ``gen_ai.agent.id`` by
        ``plugins._agentconv.agent_label``'s rule, its type from ``workflow.type``,
        ``workflow.name`` and the span name by ``plugins._agentconv.workflow_type_of``'s.
        ``join_shapes`` maps (resource, scope, shape) to a learned series (a tool-call
        layer), -1 (a link, packed) or -2 (a span read in Python that gives the join at most a
        link: its trace may be packed all the same); a failed span's shape followed by an
        ``x`` entry of its exception type maps to a failed layer's series (packed with its
        message: record flag 4) or -3 (a failed span read in Python that gives the join a
        failure and no layer: its trace may be packed all the same), -4, -5 or -6 (a failed
        workflow root: the scanner counts its execution and hands over its failure as the
        ``Failure`` arguments (trace id, span id, parent, errors_total labels, exception type,
        start, end, status message, peer: True for -5), none for -6, a status report; when
        only Python can read it, it is left to Python as before); ``join_learned`` holds
        each series' reading (side, tool, tool type, mcp, server, retry, agent, call id key,
        JSON-RPC id key: indexes into ``join_id_keys``, -1 none; a failed layer's then failed,
        error type, exception type), ``join_keys`` the joiner's memory of settled call and
        JSON-RPC keys (the id-keyed join; off without them)."""
    def scan(
        self, request: bytes | tuple[bytes, ...], /
    ) -> tuple[
        list[tuple[int, tuple[str, ...], int, float, list[int] | None, list[Any] | None, int]],
        list[Fallback],
        list[tuple[bytes, list[bytes], int, bytes, bytes, str]],
        dict[tuple[str, str], list[float]],
    ]:
        """(series, fallback, consumers, workflows): see the docstring in the C source.
        ``request``: the encoded request, or a merged payload's parts (``encoded_parts()``)
        scanned where they are, every offset given into their concatenation."""
    def configure_settle(
        self,
        *,
        size: int,
        keys_size: int,
        ttl: float,
        marked: Memory | OrderedDict[Any, Any],
        marked_size: int,
        marked_ttl: float,
        classify: Callable[[str], str],
        timeouts: frozenset[str],
        recoverable: frozenset[str],
    ) -> None:
        """What the settle paths read on every call, given once (calls.py
        ``CallJoiner.configure_native``) and again when the joiner's memories change:
        ``join_settled``'s bound (``size``), ``join_keys``' (``keys_size``), their entries'
        time to live (a settled layer's or key's value is ``(now + ttl, None)``), ``marked``
        (the memory of failed parents: its bound, its marks' time to live), the error
        classifier and the error types that are timeouts and recoverable. A settle call before
        it raises ``RuntimeError``, as this one does during a settle call."""
    def settle_simple(self, packed: list[Any], now: float, /) -> int:
        """Settles a held trace of packed records (the join's common case) as the joiner's
        ``_settle``: its layers joined into calls (parent links, call ids, JSON-RPC ids within
        the trace), counted (take_calls); join_settled and join_keys updated (values
        ``(now + ttl, None)``, trimmed to ``size`` and ``keys_size``); -1 (nothing done) when it
        has ids and the id-keyed join is off, or a failed layer (the joiner unpacks the
        trace)."""
    def settle_layers(
        self,
        layers: list[Any],
        failures: list[Any],
        parents: dict[bytes, bytes],
        now: float,
        errors: list[Any],
        /,
    ) -> int:
        """Settles a held trace of Layer and Failure objects (calls.py) whose layers are each a
        call of its own (no session id, no call id or JSON-RPC key twice), failed or not, as
        the joiner's ``_settle``: its calls counted (take_calls), join_settled, join_keys
        and ``marked`` (the memory of failed parents, marks expiring at ``now + marked_ttl``)
        updated, the errors_total label sets appended to ``errors``; -1 (nothing done) for
        another trace."""
    def settle_packed(
        self,
        packed: list[Any],
        failures: list[Any],
        now: float,
        errors: list[Any],
        /,
    ) -> int:
        """Settles a held trace of packed records (the joiner's Packed items: layers, failed
        ones with their message, links, and its failures' parent links as records of kind 2)
        with its Failure objects as :meth:`settle_layers` settles the Layer objects and parent
        links the joiner would unpack them into (calls.py ``_unpack_into``): the same calls,
        errors_total label sets and memories; -1 (nothing done) for another trace."""
    def settle_due(
        self,
        due: list[tuple[bytes, Any]],
        pending: OrderedDict[bytes, Any],
        start: int,
        now: float,
        errors: list[Any],
        /,
    ) -> tuple[int, int]:
        """The joiner's loop over its entries due ((trace, entry) pairs, calls.py
        ``CallJoiner.settle``) from ``due[start]``: each trace taken out of ``pending`` and its
        entry settled by :meth:`settle_simple` when packed (:meth:`settle_packed` with
        failures), else :meth:`settle_layers` (``now`` and ``errors`` are theirs); stops at the
        first entry neither settles (nothing done for it but its removal from ``pending``) or
        at the end: (its index or ``len(due)``, the calls counted)."""
    def settle_front(
        self,
        pending: OrderedDict[bytes, Any],
        max_traces: int,
        now: float,
        everything: bool,
        errors: list[Any],
        /,
    ) -> tuple[Any | None, int, int]:
        """The joiner's settle loop (calls.py ``CallJoiner.settle``; calls.py ``settle_front`` is
        its twin): while ``pending`` holds an entry due at its front (every one with
        ``everything``; else the front one while more than ``max_traces`` are held, or while its
        deadline is not after ``now``), its trace is taken out of ``pending`` and the entry
        settled as :meth:`settle_due` settles it. Returns (the first entry neither settles, taken
        out of ``pending``, for the joiner to settle, or ``None`` when none is due any more; the
        calls counted; the entries settled before their deadline because more than
        ``max_traces`` were held, not counted with ``everything``)."""
    def take_calls(
        self,
    ) -> list[tuple[int, tuple[str, ...], int, float, list[int] | None, list[Any] | None, int]]:
        """The calls settle_simple and settle_layers counted since the last call, per series
        (as scan's)."""
    def take_failures(self) -> dict[int, tuple[str, str, str]] | None:
        """The last scan's failed spans left to Python (``shape_keys`` configured) whose status
        message, ``exception.type`` and ``exception.message`` are ASCII: by the span's start
        offset (the fallback tuple's first item), those three as a full decode gives them."""
    def take_roots(self) -> dict[int, tuple[str, str, str, str, float, str, str, str]] | None:
        """The failed workflow roots among the last scan's take_failures spans (not of kind
        server, producer or consumer) whose reading the scanner could make: by the span's start
        offset, (workflow type, agent id, outcome, complexity tier, duration, error type,
        severity, recoverable) as the connector's ``_workflow`` and ``_error_labels`` give
        them."""
    def forget_shapes(self) -> None:
        """To be called whenever a shape leaves ``join_shapes`` or maps to another series: the
        scanner remembers the shapes it found there (by their content) and forgets them then."""
    def put_roots(
        self,
        memory: RootMemory,
        others: list[tuple[int, bytes, tuple[str, str]]] | None = None,
        /,
    ) -> None:
        """Puts the workflow roots the last scan counted into ``memory``: ``trace id ->
        (workflow type, agent id)`` as they were counted (the connector's memory of roots, for
        the tokens of their traces' inference spans: ``_count_tokens``), in span order with
        ``others`` (the roots the Python side read in that request: (offset of the span in
        the request, trace id, value), by offset), each put after those before it; then
        forgets the scan's (a second call puts only ``others``). ``TypeError`` when ``memory``
        is not a :class:`RootMemory` or an item of ``others`` is not such a tuple (nothing
        put)."""
    def put_producers(self, items: list[tuple[bytes, int]], /) -> None:
        """Puts A2A producers read in Python ((span id, start) pairs) into ``producers`` as
        the scan puts its own: an id already there keeps its place (its start replaced, as an
        ``OrderedDict`` keeps it), the oldest dropped beyond ``cache_size`` (a ``Memory``: its
        own size). ``TypeError`` for an item that is not such a pair (those before it put)."""
    def take_late(self) -> int:
        """The layers the last scan dropped as late (their parent a settled layer)."""
    def span_attrs(
        self, request: bytes, start: int, end: int, first: bytes | None, second: bytes | None, /
    ) -> tuple[bytes | None, bytes | None]:
        """The encoded values of the attributes ``first`` and ``second`` (``None``: not asked)
        of the span ``request[start:end]`` as ``plugins._spanview.SpanView``'s attribute map
        gives them (the last entry of a key wins; an entry with another field than the key and
        the value is not in the map), ``None`` for a key the span does not have; reads nothing
        else of the span. Raises ``ValueError`` on a malformed span."""
