"""The workflow processor's trace store in C (``_tracewire.c``); the Python twin is
:class:`plugins.workflowprocessor.store.PythonTraceStore` and the C store's driver
:class:`plugins.workflowprocessor.native.NativeTraceStore`, which builds the configuration
tuples once (``FactsConfig``, ``StampConfig`` there: named tuples, accepted as tuples). Malformed
input raises ``ValueError``; arguments of the wrong shape ``TypeError``."""

from collections.abc import Callable, Iterator, MutableMapping, Sequence
from typing import Any, overload

GroupKey = tuple[bytes, bytes, bytes, bytes]
RootFacts = tuple[bool, str, str, str, tuple[str, ...]]
Stamp = tuple[tuple[str, str, str, str, str], bytes]

class Trace:
    """One held trace: its state and its spans (one chunk per ingest, no Python object per
    span). ``spans``, ``groups``, ``ids`` and ``parents`` are new lists on each read."""

    last_seen: float
    queued_at: float
    queued_first: float
    nbytes: int
    root_index: int
    root_present: tuple[str, ...]
    root: RootFacts | None
    agent_id: str
    tool_calls: int
    root_extra: bytes  # appended to the span at root_index after its stamp (b"": nothing)
    roots: int  # parentless spans (the one at root_index is the trace's root)
    # the other parentless spans (ascending indexes) of a workflow with several, and what is
    # appended to each after its stamp (set at release)
    others: tuple[int, ...]
    others_extra: bytes
    def __init__(
        self, last_seen: float, queued_at: float, queued_first: float, nbytes: int = ...
    ) -> None: ...
    @property
    def spans(self) -> list[bytes]: ...
    @property
    def groups(self) -> list[GroupKey]: ...
    @property
    def ids(self) -> list[bytes]: ...
    @property
    def parents(self) -> list[bytes]: ...
    def add(
        self, spans: list[bytes], groups: list[GroupKey], ids: list[bytes], parents: list[bytes], /
    ) -> None: ...
    def __len__(self) -> int: ...

class LateMemory:
    """The late-span memory (trace id -> stamp, or ``None`` for a trace that is not a
    workflow), at most ``size`` entries, the least recently remembered dropped first (as an
    ``OrderedDict`` trimmed to ``size`` after each release); written by :func:`release`."""

    size: int
    def __init__(self, size: int) -> None: ...
    def __contains__(self, key: object, /) -> bool: ...
    def __getitem__(self, key: bytes, /) -> Stamp | None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[bytes]: ...
    def get(self, key: bytes, default: Any = None, /) -> Stamp | None: ...
    def move_to_end(self, key: bytes, /) -> None: ...
    def items(self) -> list[tuple[bytes, Stamp | None]]: ...

# ingest's apply mode: (held, released, now, outcome, present_by_mask, not_workflow,
# span_overhead, chunk_overhead, trace_overhead, classify_failure)
Apply = tuple[
    MutableMapping[bytes, Trace],
    MutableMapping[bytes, Stamp | None] | LateMemory,
    float,
    Callable[[str, str, str, int, str], str],
    list[tuple[str, ...]],
    RootFacts,
    int,
    int,
    int,
    Callable[[bytes, bytes | None], bytes],
]

class IngestConfig:
    """What ingest reads in the special spans, read once: the tool-call markers, the agent
    marker (of the agent's name) and ``agent_id_marker`` (of its id; ``b""``: none), the
    facts (17 bytes: keys, tool values, workflow prefix) and the execution markers (at most
    32; ``b""`` matches every span)."""

    def __init__(
        self,
        tool_a: bytes,
        tool_b: bytes,
        agent_marker: bytes,
        facts: tuple[bytes, ...],
        execs: tuple[bytes, ...] | None = ...,
        agent_id_marker: bytes = ...,
    ) -> None: ...

def looks_like_run_id(value: bytes, /) -> bool:
    """``plugins._agentdialects.looks_like_run_id`` of a value's UTF-8 bytes (UUID-, ULID- or
    long-hex-shaped: a per-run id, never a label); the agent ingest finds obeys it."""

@overload
def ingest(
    raw: bytes,
    interned: dict[GroupKey, GroupKey],
    config: IngestConfig,
    apply: Apply,
    now: float = ...,
    /,
) -> Any:
    """Apply mode with a configuration read once (``IngestConfig``): as below. ``now``, when
    given, stands for apply's (which is then not read: the tuple can be built once). The
    configuration remembers the group it interned last: a request with the same group
    reuses it without making its bytes, if ``interned`` still maps it to itself."""

@overload
def ingest(
    raw: bytes,
    interned: dict[GroupKey, GroupKey],
    tool_a: bytes,
    tool_b: bytes,
    agent_marker: bytes,
    facts: tuple[bytes, ...] | None = ...,
    apply: Apply | None = ...,
    execs: tuple[bytes, ...] | None = ...,
    /,
) -> Any:
    """Without ``facts``: per trace (trace_id, spans, groups, ids, parents, nbytes,
    specials). With ``facts``, each entry also carries what the special spans say. With
    ``apply``: the entries applied to the held traces; returns (leftovers, added_bytes,
    added_spans), or ``None`` when a span belongs to a released trace. With ``execs`` (the
    execution markers, at most 32; ``b""`` matches every span): (leftovers, added_bytes,
    added_spans, candidates), candidates the (trace_id, index) of the applied spans holding
    one, for the traces whose root is not a workflow."""

@overload
def expire(
    held: MutableMapping[bytes, Trace], now: float, wait: float, max_wait: float, /
) -> list[tuple[bytes, Trace, str]]:
    """The due traces taken out of ``held``, in order, with their reasons."""

@overload
def expire(
    held: MutableMapping[bytes, Trace],
    now: float,
    wait: float,
    max_wait: float,
    max_spans: int,
    /,
) -> list[list[tuple[bytes, Trace, str]]]:
    """The same in consecutive parts of about ``max_spans`` spans, as
    :func:`plugins.workflowprocessor.rules.parts` cuts them (none when nothing is due)."""

def release(
    batch: list[tuple[bytes, Trace, str]],
    cfg: tuple[Any, ...],
    tails: dict[tuple[str, ...], bytes],
    pending_released: dict[str, list[int]],
    pending_outcomes: dict[str, int],
    lru: MutableMapping[bytes, Stamp | None] | LateMemory,
    lru_size: int,
    markers: tuple[bytes, ...],
    suffix_for: Callable[[bytes, Stamp], bytes],
    /,
) -> tuple[bytes, int, int]:
    """Released traces counted, stamped, remembered and assembled: (request, spans, bytes)."""

def assemble(
    entries: list[tuple[Any, ...]],
    markers: tuple[bytes, ...],
    suffix_for: Callable[[bytes, Any], bytes],
    /,
) -> bytes:
    """An encoded request from (spans, groups, suffix, stamp) entries."""

def max_depth(ids: Sequence[bytes], parents: Sequence[bytes], cap: int, /) -> int:
    """Depth of the span tree, as :func:`plugins.workflowprocessor.rules.max_depth`."""
