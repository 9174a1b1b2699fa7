"""Where each worker of a ``--workers`` gateway waits (``python -m benchmarks.workers --probe
DIR``), and what keeps its event loop from turning.

In each worker process (``benchmarks/_probe_site/sitecustomize.py`` calls :func:`install` when
``PIPELINE_WORKERS_PROBE`` names a folder and the process is a worker):

* every wait of the event loop's selector (``EpollSelector.select`` asked to wait) is timed and
  filed under what the worker held as it began: client requests in progress (the ``Router``'s
  count), consume requests in flight to its siblings, parts queued behind them;
* every callback of the loop that ran over 2 ms is timed, by name (a task by its coroutine);
* the client requests the ``Router`` took and the consumes of the pipelines they caused, by
  kind: ``own`` (a client request's own part at once), ``joined`` (own parts of one turn,
  :class:`pipeline.workers._Joiner`), ``sibling`` (a sibling's part or the parts of one read,
  with the own parts they took along) and the parts those held.

A JSON line a second goes to ``DIR/<pid>.jsonl``; ``python -m benchmarks.workers_probe DIR``
sums them up per worker (:func:`summarize`). Measurement only: the probe adds a few
microseconds a loop turn, the same in every run it is in.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import selectors
import sys
import time
from typing import Any

LONG_CALLBACK = 0.002  # seconds: callbacks longer than this are named


def _state() -> str:
    """What this worker holds: client requests in progress, consume requests in flight to its
    siblings, parts queued for them."""
    workers = sys.modules.get("pipeline.workers")
    ctx = workers.current() if workers is not None else None
    if ctx is None:
        return "no worker"
    busy = sum(j.busy for j in ctx._joiners.values())
    flight = sum(p._proto.consuming if p._proto is not None else 0 for p in ctx._peers.values())
    queued = any(p._queued for p in ctx._peers.values())
    if busy == 0:
        return "no client request in progress"
    if queued:
        return "clients waiting, parts queued behind the hand-overs in flight"
    if flight:
        return "clients waiting, hand-overs in flight, nothing queued"
    return "clients in progress, nothing in flight"


def _callback_name(handle: Any) -> str:
    callback = handle._callback
    owner = getattr(callback, "__self__", None)
    get_coro = getattr(owner, "get_coro", None)
    if get_coro is not None:
        return f"task {getattr(get_coro(), '__qualname__', '?')}"
    return str(getattr(callback, "__qualname__", repr(callback)))[:80]


def install(folder: str) -> None:
    """Time this process's event loop waits and long callbacks into ``folder``."""
    import asyncio.events

    os.makedirs(folder, exist_ok=True)
    out = open(os.path.join(folder, f"{os.getpid()}.jsonl"), "a")  # noqa: SIM115 (for the process's life)
    worker = os.environ.get("PIPELINE_WORKER", "").split("/")[0]
    period: dict[str, Any] = {"start": time.monotonic(), "waits": collections.Counter()}
    callbacks: collections.Counter[str] = collections.Counter()
    longest: dict[str, float] = {}
    select = selectors.EpollSelector.select
    run = asyncio.events.Handle._run
    counts: collections.Counter[str] = collections.Counter()
    patched: list[bool] = []

    def count_consumes() -> None:
        """Count the Router's client requests and the consumes of the pipelines, once
        ``pipeline.workers`` is imported."""
        workers = sys.modules.get("pipeline.workers")
        if workers is None:
            return
        patched.append(True)
        router_consume = workers.Router.consume
        local = workers.Router._local
        joined = workers._consume_joined
        take_joined = workers.WorkerContext._take_joined
        one = workers.WorkerContext._consume
        hand_over = workers.WorkerContext.hand_over

        async def counted_consume(self: Any, data: Any) -> None:
            counts["requests"] += 1
            counts["spans_in"] += data.item_count()
            await router_consume(self, data)

        def counted_hand_over(
            self: Any, owner: int, signal: Any, pipelines: Any, raw: bytes, n: Any
        ) -> Any:
            if n is None:  # the whole request: counted here, the probe's own decode
                n = workers.payload_type(signal)(raw).item_count()
            counts[f"spans_to_{owner}"] += n
            return hand_over(self, owner, signal, pipelines, raw, n)

        async def counted_local(self: Any, data: Any, joiner: Any) -> None:
            if joiner is None or not (joiner.parts or joiner.busy > 1):
                counts["own"] += 1
                counts["own_parts"] += 1
            await local(self, data, joiner)

        def counted_joined(consumer: Any, payload: Any, done: Any) -> Any:
            counts["sibling" if period.get("sibling") else "joined"] += 1
            counts["sibling_parts" if period.get("sibling") else "joined_parts"] += len(done)
            return joined(consumer, payload, done)

        def counted_take_joined(self: Any, *args: Any) -> None:
            period["sibling"] = True
            try:
                take_joined(self, *args)
            finally:
                period["sibling"] = False

        async def counted_one(self: Any, key: str, body: bytes) -> None:
            counts["sibling"] += 1
            counts["sibling_parts"] += 1
            await one(self, key, body)

        workers.Router.consume = counted_consume
        workers.Router._local = counted_local
        workers._consume_joined = counted_joined
        workers.WorkerContext._take_joined = counted_take_joined
        workers.WorkerContext._consume = counted_one
        workers.WorkerContext.hand_over = counted_hand_over

    def timed_select(self: Any, timeout: float | None = None) -> Any:
        if not patched:
            count_consumes()
        state = _state() if timeout is None or timeout > 0 else None
        began = time.perf_counter()
        ready = select(self, timeout)
        if state is not None:
            period["waits"][state] += time.perf_counter() - began
        now = time.monotonic()
        if now - period["start"] >= 1.0:
            record = {
                "worker": worker,
                "pid": os.getpid(),
                "time": time.time(),
                "seconds": now - period["start"],
                "waits": dict(period["waits"]),
                "callbacks": {k: [v, longest[k]] for k, v in callbacks.items()},
                "counts": dict(counts),
            }
            counts.clear()
            out.write(json.dumps(record) + "\n")
            out.flush()
            period["start"] = now
            period["waits"] = collections.Counter()
            callbacks.clear()
            longest.clear()
        return ready

    def timed_run(self: Any) -> None:
        began = time.perf_counter()
        run(self)
        took = time.perf_counter() - began
        if took > LONG_CALLBACK:
            name = _callback_name(self)
            callbacks[name] += took
            longest[name] = max(longest.get(name, 0.0), took)

    selectors.EpollSelector.select = timed_select  # type: ignore[method-assign]
    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]


def summarize(folder: str, busy_turns: float = 0.9) -> list[str]:
    """Per worker: the share of wall time its loop waited, by what it held, and the callbacks
    over 2 ms (their time and the longest), over the seconds it waited less than
    ``busy_turns`` of: idle seconds left out, the start-up and the backlog worked off after
    the load kept (the probe does not know the load's window)."""
    by_worker: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for path in glob.glob(os.path.join(folder, "*.jsonl")):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                by_worker[record["worker"]].append(record)
    lines = []
    for worker, records in sorted(by_worker.items()):
        busy = [r for r in records if sum(r["waits"].values()) < busy_turns * r["seconds"]]
        seconds = sum(r["seconds"] for r in busy)
        if not seconds:
            continue
        waits: collections.Counter[str] = collections.Counter()
        spent: collections.Counter[str] = collections.Counter()
        top: dict[str, float] = {}
        for r in busy:
            waits.update(r["waits"])
            for name, (total, most) in r["callbacks"].items():
                spent[name] += total
                top[name] = max(top.get(name, 0.0), most)
        lines.append(
            f"worker {worker}: {seconds:.1f} s under load, waiting "
            f"{sum(waits.values()) / seconds:.2f} of it"
        )
        lines += [f"  {v / seconds:.2f} {k}" for k, v in waits.most_common()]
        lines += [
            f"  callback {k}: {v:.2f} s, longest {top[k] * 1000:.1f} ms"
            for k, v in spent.most_common(6)
        ]
    # consumes of the pipelines a client request, every second of every worker (idle seconds
    # included: at a low rate most are)
    counts: collections.Counter[str] = collections.Counter()
    for records in by_worker.values():
        for r in records:
            counts.update(r.get("counts", {}))
    # spans each worker processed: those its clients sent it, less those it handed to a
    # sibling, plus those its siblings handed to it
    processed: dict[str, int] = {}
    for worker, records in by_worker.items():
        for r in records:
            c = r.get("counts", {})
            processed[worker] = processed.get(worker, 0) + c.get("spans_in", 0)
            for key, value in c.items():
                if key.startswith("spans_to_"):
                    processed[worker] = processed.get(worker, 0) - value
                    to = key[len("spans_to_") :]
                    processed[to] = processed.get(to, 0) + value
    if any(processed.values()):
        received = {
            w: sum(r.get("counts", {}).get("spans_in", 0) for r in rs)
            for w, rs in by_worker.items()
        }
        lines.append(
            "spans per worker (received / processed): "
            + ", ".join(
                f"worker {w} {received.get(w, 0):,} / {processed[w]:,}" for w in sorted(processed)
            )
        )
    if counts["requests"]:
        n = counts["requests"]
        kinds = ("own", "joined", "sibling")
        total = sum(counts[k] for k in kinds)
        lines.append(
            f"all workers: {n} client requests, {total / n:.2f} consumes a request ("
            + ", ".join(
                f"{k} {counts[k] / n:.2f} holding {counts[k + '_parts'] / max(counts[k], 1):.2f} "
                "parts"
                for k in kinds
            )
            + ")"
        )
    return lines


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print(folder)
        print("\n".join(summarize(folder)))
