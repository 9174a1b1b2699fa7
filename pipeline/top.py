"""``pipeline top``: the console's live per-component view in a terminal, read from a running
gateway's ``console`` extension (``GET /api/state``), for servers without a browser."""

from __future__ import annotations

import json
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from typing import Any, TextIO

COLUMNS = ("IN/s", "OUT/s", "REFUSED/s", "DROPPED/s", "FAILED/s", "QUEUE")
_STATUS = {
    "recoverable_error": "RECOVERING",
    "permanent_error": "FAILED",
    "fatal_error": "FATAL",
    "none": "-",
}


class TopError(Exception):
    """The console cannot be read (not reachable, refused, not a console)."""


def fetch_state(
    url: str, token: str | None = None, context: ssl.SSLContext | None = None, timeout: float = 5
) -> dict[str, Any]:
    """The console's whole state (``/api/state``)."""
    request = urllib.request.Request(url.rstrip("/") + "/api/state")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            data = json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise TopError(
                f"{url}: the console refused the request (401): give its token with "
                "--token or --token-file"
            ) from None
        raise TopError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TopError(
            f"cannot reach the console at {url}: {reason} (is the console extension in "
            "service.extensions, and its endpoint this one?)"
        ) from None
    except ValueError as exc:
        raise TopError(f"{url}: the answer is not the console's JSON: {exc}") from None
    if not isinstance(data, dict) or "components" not in data:
        raise TopError(f"{url}: the answer is not the console's state")
    return data


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    a = abs(value)
    if a >= 1e9:
        return f"{value / 1e9:.2f}G"
    if a >= 1e6:
        return f"{value / 1e6:.2f}M"
    if a >= 1e4:
        return f"{value / 1e3:.1f}k"
    if a >= 100 or float(value).is_integer():
        return f"{value:.0f}"
    return f"{value:.1f}"


def _uptime(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    days, rest = divmod(seconds, 86400)
    return (f"{days}d " if days else "") + time.strftime("%H:%M:%S", time.gmtime(rest))


def render(state: dict[str, Any], url: str, width: int = 120) -> list[str]:
    """The lines of one frame."""
    lines = [
        f"pipeline top - {url} - up {_uptime(state['time'] - state['start_time'])} - "
        f"config #{state['generation']} - "
        f"{time.strftime('%H:%M:%S', time.localtime(state['time']))}",
        "",
    ]
    comps = [c for c in state["components"] if c["kind"] != "extension"]
    name_w = max([len("COMPONENT"), *(len(c["instance"]) for c in comps)])
    name_w = min(name_w, max(width - 80, 24))
    header = f"{'COMPONENT':<{name_w}}  {'STATUS':<10}" + "".join(f"{h:>10}" for h in COLUMNS)
    lines.append(header)
    errors = []
    for c in comps:
        rates = c.get("rates") or {}
        queue = c.get("queue")
        q = f"{queue['size']}/{queue['capacity']}" if queue else ""
        status = "FAILING" if c.get("failing") else _STATUS.get(c["status"], c["status"])
        name = c["instance"]
        if len(name) > name_w:
            name = name[: name_w - 1] + "~"
        cells = [
            _num(rates.get("in")),
            _num(rates.get("out")),
            _num(rates.get("refused")),
            _num(rates.get("dropped")),
            _num(rates.get("failed")),
            q,
        ]
        lines.append(f"{name:<{name_w}}  {status:<10}" + "".join(f"{x:>10}" for x in cells))
        message = c.get("last_error") if c.get("failing") else None
        if message is None and c.get("health") in ("error", "warning"):
            message = c.get("status_error")
        if message:
            errors.append(f"  {c['instance']}: {message}")
    if errors:
        lines += ["", "errors:", *errors]
    for held in state.get("held") or []:
        lines += [
            "",
            f"{held['processor']}: {held['traces']} traces held ({held['spans']} spans, "
            f"{held['bytes'] / 1048576:.1f} MiB; max {held['max_traces']})",
        ]
    workflows = state.get("workflows") or []
    per_second = [h["workflows_per_second"] for h in state.get("held") or []]
    if any(r is not None for r in per_second):
        failed = sum(1 for w in workflows if w["outcome"] != "success")
        lines.append(
            f"workflows: {sum(r or 0 for r in per_second) * 60:.0f}/min; of the last "
            f"{len(workflows)}, {failed} not successful"
        )
    reloads = state.get("reloads") or []
    if reloads:
        last = reloads[-1]
        lines.append(
            f"last reload: {time.strftime('%H:%M:%S', time.localtime(last['time']))} "
            f"({last['trigger']}) {last['result']}, config #{last['generation']}"
            + (f": {last['errors'][0]}" if last["errors"] else "")
        )
    return [line[:width] for line in lines]


def run(
    url: str,
    token: str | None = None,
    interval: float = 2.0,
    once: bool = False,
    context: ssl.SSLContext | None = None,
    out: TextIO | None = None,
    width: int | None = None,
) -> int:
    """Show frames until interrupted (``once``: one frame, after a refresh so the rates are
    measured). Returns the exit status."""
    out = out or sys.stdout
    try:
        state = fetch_state(url, token, context)
        if once:
            time.sleep(max(interval, state.get("refresh_interval", 1.0)))
            state = fetch_state(url, token, context)
            columns = width or shutil.get_terminal_size().columns
            out.write("\n".join(render(state, url, columns)) + "\n")
            return 0
        while True:
            columns = width or shutil.get_terminal_size().columns
            out.write("\x1b[H\x1b[2J" + "\n".join(render(state, url, columns)) + "\n")
            out.flush()
            time.sleep(interval)
            state = fetch_state(url, token, context)
    except TopError as exc:
        print(f"pipeline top: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
