"""The console's pages, rendered on the server as HTML with no script and no external asset
(the CSP allows neither). Every value shown is escaped."""

from __future__ import annotations

import json
import re
import time
from html import escape
from typing import Any

from mailmoat.console.history import refused_total
from mailmoat.limits import CONSOLE_CHART_HEIGHT, CONSOLE_CHART_WIDTH, CONSOLE_TOP_OFFENDERS

CSS = b"""body{font:14px system-ui,sans-serif;margin:0;color:#222}
nav{background:#234;padding:.5em 1em}nav a,nav button{color:#fff;margin-right:1em}
nav form{display:inline}nav button{background:none;border:0;cursor:pointer;font:inherit}
main{padding:1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .5em;
text-align:left}.err{color:#a00}.ok{color:#060}svg{background:#f8f8f8;border:1px solid #ccc}
.point{fill:#070}.acc{stroke:#070;fill:none;stroke-width:2}.ref{stroke:#b00;fill:none;stroke-width:2}
pre{background:#f4f4f4;padding:1em;overflow:auto}
"""

SECRET_WORDS = frozenset({"password", "passwd", "secret", "token", "key"})
"""A setting is secret when one of the words of its name (split at "_") is one of these:
tls_key and bind_password_file are, max_keys is not."""
_MASK = "********"
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/?#@]*):[^\s]*@")
"""`scheme://user:password@`: the password (up to the last "@", so one with an unquoted "@"
or "/" in it is masked whole, and at worst some host is masked too)."""

PAGES = (
    ("/", "Overview"),
    ("/offenders", "Top offenders"),
    ("/bans", "Bans"),
    ("/directory", "Directory"),
    ("/transactions", "Transactions"),
    ("/config", "Configuration"),
)


def layout(title: str, body: str, csrf: str = "", refresh: int = 0) -> bytes:
    nav = ""
    if csrf:
        links = "".join(f'<a href="{p}">{escape(t)}</a>' for p, t in PAGES)
        nav = (
            f"<nav>{links}<form method=post action=/logout>{hidden(csrf)}"
            "<button type=submit>Log out</button></form></nav>"
        )
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>mailmoat: {escape(title)}</title>{meta}"
        '<link rel=stylesheet href="/console.css"></head>'
        f"<body>{nav}<main><h1>{escape(title)}</h1>{body}</main></body></html>"
    ).encode()


def hidden(csrf: str) -> str:
    return f'<input type=hidden name=csrf_token value="{escape(csrf)}">'


def login_form(message: str = "") -> bytes:
    note = f"<p class=err role=alert>{escape(message)}</p>" if message else ""
    return layout(
        "Log in",
        f"{note}<form method=post action=/login>"
        "<p><label>User <input name=username autocomplete=username required></label></p>"
        "<p><label>Password <input name=password type=password"
        " autocomplete=current-password required></label></p>"
        "<p><button type=submit>Log in</button></p></form>",
    )


def table(head: list[str], rows: list[list[Any]], ident: str = "") -> str:
    id_attr = f" id={ident}" if ident else ""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{id_attr}><tr>{th}</tr>{body}</table>"


def chart(series: list[tuple[int, int, int]]) -> str:
    """Accepted (green) and refused (red) per minute as an inline SVG polyline each."""
    width, height = CONSOLE_CHART_WIDTH, CONSOLE_CHART_HEIGHT
    top = max([1] + [max(a, r) for _, a, r in series])
    step = width / max(1, len(series) - 1)

    def points(col: int) -> str:
        return " ".join(
            f"{i * step:.1f},{height - row[col] * (height - 10) / top:.1f}"
            for i, row in enumerate(series)
        )

    dots = "".join(
        f'<circle class=point cx="{i * step:.1f}" cy="{height - a * (height - 10) / top:.1f}"'
        f' r="2" data-minute="{m}" data-accepted="{a}" data-refused="{r}"/>'
        for i, (m, a, r) in enumerate(series)
    )
    return (
        f'<svg id=chart role=img viewBox="0 0 {width} {height}" width={width} height={height}'
        f' aria-label="messages accepted and refused per minute, peak {top}">'
        f'<polyline class=acc points="{points(1)}"/><polyline class=ref points="{points(2)}"/>'
        f"{dots}</svg><p>Per minute, last hour (peak {top}): "
        "<span class=ok>accepted</span>, <span class=err>refused</span></p>"
    )


def overview(doc: dict[str, Any], series: list[tuple[int, int, int]], csrf: str) -> bytes:
    gauges, counters = doc.get("gauges", {}), doc.get("counters", {})
    processes = [[escape(str(doc.get("pid"))), "supervisor" if "workers" in doc else "gateway",
                  gauges.get("connections.active", ""), gauges.get("sessions", "")]]  # fmt: skip
    for w in doc.get("workers", []):
        processes.append([escape(str(w.get("pid"))), "worker", "", w.get("sessions", "")])
    stress = "on" if gauges.get("stress.active") else "off"
    reasons = sorted(
        ((k, v) for k, v in counters.items() if k.startswith(("refused.", "rejected."))),
        key=lambda kv: -kv[1],
    )
    body = (
        f"<p>Stress mode: <strong id=stress>{stress}</strong>. Uptime {doc.get('uptime', 0):.0f}"
        f" s. Accepted {counters.get('messages.accepted', 0)}, refused"
        f" {refused_total(counters)}.</p>"
        + chart(series)
        + "<h2>Processes</h2>"
        + table(["pid", "role", "connections", "sessions"], processes, "processes")
        + "<h2>Refusals by reason</h2>"
        + table(["reason", "count"], [[escape(k), v] for k, v in reasons], "reasons")
    )
    return layout("Overview", body, csrf, refresh=10)


def top_offenders(doc: dict[str, Any]) -> list[tuple[str, int]]:
    counts = doc.get("offenders", {})
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:CONSOLE_TOP_OFFENDERS]


def offenders(
    top: list[tuple[str, int]],
    scores: dict[str, tuple[int, int]],
    doc: dict[str, Any],
    listed: list[dict[str, Any]],
    csrf: str,
) -> bytes:
    """Addresses by refusals (since start) with their harvest scores, the bans with their time
    left, the strike and harvest counters."""
    rows = [[escape(a), n, *scores.get(a, ("", ""))] for a, n in top]
    banned = [
        [escape(str(e["target"])), escape(str(e["kind"])), f"{e['seconds']:.0f}"] for e in listed
    ]
    kinds = ("bans", "strikes", "harvest")
    counters = doc.get("counters", {})
    strikes = [[escape(k), v] for k, v in sorted(counters.items()) if k.startswith(kinds)]
    body = (
        "<h2>Addresses by refusals</h2>"
        + table(["address", "refusals", "harvest score", "its network's"], rows, "offenders")
        + "<h2>Banned now</h2>"
        + table(["address or network", "why", "seconds left"], banned, "banned")
        + "<h2>Strikes and harvest counts</h2>"
        + table(["counter", "count"], strikes)
    )
    return layout("Top offenders", body, csrf)


def bans(listed: list[dict[str, Any]], csrf: str, message: str = "") -> bytes:
    rows = []
    for e in listed:
        target = escape(str(e["target"]))
        remove = (
            f"<form method=post action=/bans/remove>{hidden(csrf)}"
            f'<input type=hidden name=address value="{target}">'
            f'<button type=submit aria-label="unban {target}">Remove</button></form>'
        )
        rows.append([target, escape(str(e["kind"])), f"{e['seconds']:.0f}", remove])
    note = f"<p role=status>{escape(message)}</p>" if message else ""
    body = (
        note + f"<form method=post action=/bans>{hidden(csrf)}"
        "<label>Address or network <input name=address required></label> "
        "<label>Seconds <input name=duration type=number min=1 value=3600></label> "
        "<button type=submit>Ban</button></form>"
        + table(["address or network", "kind", "seconds left", ""], rows, "bans")
    )
    return layout("Bans", body, csrf)


def directory(csrf: str, address: str = "", answer: tuple[str, str] | None = None) -> bytes:
    result = ""
    if answer is not None:
        result = (
            f"<p id=lookup><strong>{escape(address)}</strong>: {escape(answer[0])}"
            f" (source: {escape(answer[1])})</p>"
        )
    body = (
        "<form method=get action=/directory><label>Address <input name=address"
        f' value="{escape(address)}"></label> <button type=submit>Look up</button></form>' + result
    )
    return layout("Directory lookup", body, csrf)


def transactions(recent: list[dict[str, Any]], csrf: str, search: str = "") -> bytes:
    """The newest first; `search` keeps those whose client, sender, recipients or result
    contain it (case-insensitive)."""
    wanted = search.lower()
    rows = []
    for t in sorted(recent, key=lambda t: t.get("when", 0), reverse=True):
        fields = [str(t.get("client") or ""), str(t.get("sender") or ""),
                  " ".join(t.get("recipients") or []), str(t.get("result") or "")]  # fmt: skip
        if wanted and not any(wanted in f.lower() for f in fields):
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t.get("when", 0)))
        rows.append([when, *(escape(f) for f in fields), t.get("size") or ""])
    body = (
        "<form method=get action=/transactions><label>Search <input name=q"
        f' value="{escape(search)}"></label> <button type=submit>Search</button></form>'
        + table(
            ["when (UTC)", "client", "sender", "recipients", "result", "size"], rows, "transactions"
        )
    )
    return layout("Recent transactions", body, csrf)


def masked(value: Any, key: str = "") -> Any:
    """The settings with every value whose name says it is a secret replaced, and the password
    of every URL (in any setting) masked."""
    if isinstance(value, dict):
        return {k: masked(v, k) for k, v in value.items()}
    if value not in (None, "", []) and SECRET_WORDS.intersection(key.lower().split("_")):
        return _MASK
    if isinstance(value, list):
        return [masked(v) for v in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\1:{_MASK}@", value)
    return value


def configuration(settings: dict[str, Any], csrf: str) -> bytes:
    text = json.dumps(masked(settings), indent=2, default=str, sort_keys=True)
    return layout("Configuration in force", f"<pre id=config>{escape(text)}</pre>", csrf)
