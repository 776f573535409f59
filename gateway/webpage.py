"""The on-site page's HTML, rendered from plain data: the health snapshot (the
JSON of `gateway status --json`), the recent history, log lines and, for the
check form, `gateway check`'s problems. No script at all; the status page
reloads itself every 30 s. Every value is escaped."""

from __future__ import annotations

import time
from html import escape

from gateway.plot import line_plot

STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:60em;padding:0 .6em;color:#212529}
h1{font-size:1.3em;margin:.5em 0}h2{font-size:1.1em;margin:1.2em 0 .3em;border-bottom:1px solid #dee2e6}
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.15em .4em;border-bottom:1px solid #f1f3f5}
.ok{color:#2b8a3e}.bad{color:#c92a2a;font-weight:600}.warn{color:#e67700}.muted{color:#868e96}
.sensor{border:1px solid #dee2e6;border-radius:6px;padding:.3em .6em;margin:.6em 0}
pre,textarea{font:13px/1.35 ui-monospace,monospace}pre{white-space:pre-wrap;margin:0}
textarea{width:100%;box-sizing:border-box}.hit{background:#fff3bf}nav a{margin-right:1em}
"""

# Per kind, the values plotted and in which order (the first found wins a plot).
PLOTTED = {
    "beacon": ("count",),
    "river_level": ("water_level", "distance"),
    "snow_depth": ("snow_depth", "snowfall_24h", "distance"),
    "environment": ("air_temperature",),
}


def _page(title: str, body: str, refresh: bool = False) -> str:
    meta = '<meta http-equiv="refresh" content="30">' if refresh else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">{meta}'
            f'<title>{escape(title)}</title><style>{STYLE}</style></head><body>'
            f'<nav><a href="/">status</a><a href="/check">check a config</a></nav>{body}</body></html>')


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _state(state: str, detail: str | None) -> str:
    css = "ok" if state == "ok" else "bad"
    reason = f' <span class="reason">{escape(detail)}</span>' if detail and state != "ok" else ""
    return f'<span class="state {css}">{escape(state)}</span>{reason}'


def plot_series(kind: str, history: dict[str, list[tuple[float, str, float]]], step: float = 60.0) -> dict[str, list]:
    """The series a kind's plot shows. Beacons: adverts heard and beacons seen, per `step` seconds."""
    if kind == "beacon":
        counts: dict[float, float] = {}
        devices: dict[float, set] = {}
        for t, device, v in history.get("count", []):
            bucket = t // step * step if step > 0 else t
            counts[bucket] = counts.get(bucket, 0) + v
            devices.setdefault(bucket, set()).add(device)
        return {"adverts": sorted(counts.items()), "beacons": sorted((t, len(d)) for t, d in devices.items())}
    names = [n for n in PLOTTED.get(kind, ()) if n in history] or list(history)[:1]
    if kind == "river_level" and "water_level" in names:
        names = ["water_level"]  # distance falls as the water rises: one line reads better
    if kind == "snow_depth" and "snow_depth" in names:
        names = [n for n in names if n != "distance"]
    return {n: [(t, v) for t, _, v in history[n]] for n in names}


def _values_table(reading: dict | None) -> str:
    if not reading:
        return '<p class="muted">no reading yet</p>'
    rows = "".join(f'<tr data-value="{escape(name)}"><th>{escape(name)}</th><td class="num">{escape(str(v["value"]))}'
                   f'</td><td>{escape(v.get("unit") or "")}</td></tr>' for name, v in reading["values"].items())
    quality = reading.get("quality", "ok")
    q = f'<span class="{"ok" if quality == "ok" else "bad"}">{escape(quality)}</span>'
    err = f' {escape(reading["error"])}' if reading.get("error") else ""
    device = f' · device {escape(reading["device"])}' if reading.get("device") else ""
    return (f'<p data-id="{escape(str(reading.get("id")))}">last reading <span class="observed">{escape(reading["observed_at"])}</span>{device} · quality {q}'
            f'{err}</p><table class="values">{rows}</table>')


def _sensor(sid: str, s: dict, plot: str) -> str:
    return (f'<section class="sensor" id="sensor-{escape(sid)}" data-sensor="{escape(sid)}">'
            f'<h3>{escape(sid)} <small class="muted">{escape(s.get("driver") or "")}</small></h3>'
            f'<p>{_state(s["state"], s.get("detail"))} · reads {s.get("reads", 0)}, errors '
            f'{s.get("read_errors", 0)} · age {_age(s.get("age_s"))}</p>'
            f'{_values_table(s.get("last_reading"))}{plot}</section>')


def _uplinks(uplinks: dict) -> str:
    if not uplinks:
        return '<p class="muted">no uplinks: readings stay in the buffer</p>'
    rows = []
    for name, u in uplinks.items():
        conn = '<span class="ok">connected</span>' if u["connected"] else '<span class="bad">not connected</span>'
        error = u.get("last_error")
        rows.append(f'<tr data-uplink="{escape(name)}"><td>{escape(name)}</td><td>{escape(u.get("type") or "")}</td>'
                    f'<td>{conn}</td><td class="pending">{u["pending"]}</td>'
                    f'<td>{_age(u.get("oldest_pending_age_s"))}</td><td>{u["dead_letters"]}</td>'
                    f'<td class="reason">{escape(error) if error else ""}</td></tr>')
    return ("<table><tr><th>uplink</th><th>type</th><th>state</th><th>pending</th><th>oldest pending</th>"
            f"<th>dead letters</th><th>last error</th></tr>{''.join(rows)}</table>")


def _logs(lines: list[dict]) -> str:
    if not lines:
        return '<p class="muted">no log lines yet</p>'
    css = {"warning": "warn", "error": "bad", "critical": "bad"}
    return "<pre class=\"logs\">" + "\n".join(
        f'<span class="{css.get(x["level"], "")}">{escape(x["at"])} {escape(x["line"])}</span>' for x in lines) + "</pre>"


def status_page(snap: dict, plots: dict[str, str], log_lines: list[dict]) -> str:
    health = ('<span class="ok">healthy</span>' if snap.get("healthy", True) else
              '<span class="bad">not healthy: ' + escape("; ".join(snap.get("problems", []))) + "</span>")
    clock = snap.get("clock", {})
    clock_text = ('<span class="ok">synchronised</span>' if clock.get("synced") else
                  '<span class="bad">not synchronised</span>: readings are flagged and corrected once it is')
    buf = snap.get("buffer", {})
    sensors = "".join(_sensor(sid, s, plots.get(sid, "")) for sid, s in snap.get("sensors", {}).items())
    body = (f'<h1>{escape(snap.get("gateway", "gateway"))}</h1>'
            f'<p>{health} · up {_age(snap.get("uptime_s"))} · clock <span class="clock">{clock_text}</span></p>'
            f'<h2>Sensors</h2>{sensors or "<p class=muted>no sensors configured</p>"}'
            f'<h2>Uplinks</h2>{_uplinks(snap.get("uplinks", {}))}'
            f'<h2>Buffer</h2><p class="buffer">{buf.get("readings", 0)} readings kept, '
            f'{buf.get("evictions", 0)} evicted because it was full</p>'
            f'<h2>Recent log</h2>{_logs(log_lines)}'
            f'<p class="muted">page made {time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}; '
            f'reloads every 30 s</p>')
    return _page(f'{snap.get("gateway", "gateway")}: status', body, refresh=True)


def sensor_plot(sid: str, kind: str, history: dict, lines: list[tuple[str, float]], now: float,
                span: float, step: float = 60.0) -> str:
    series = plot_series(kind, history, step)
    unit = "" if kind == "beacon" else "m" if kind in ("river_level", "snow_depth") else ""
    title = f"{sid}: last 24 h" + (" (stage lines dashed)" if lines else "")
    return line_plot(series, start=now - span, end=now, unit=unit, lines=lines, title=title)


def check_page(text: str = "", problems: list[str] | None = None, warnings: list[str] = ()) -> str:
    """The form, and after a check its verdict with the pasted lines, numbered, the bad ones marked."""
    result = ""
    if problems is not None:
        bad = {_line_of(p) for p in [*problems, *warnings]}
        listing = "\n".join(f'<span class="{"hit" if i in bad else ""}">{i:4d}  {escape(line)}</span>'
                            for i, line in enumerate(text.splitlines(), 1))
        verdict = ('<p class="ok verdict">valid: <code>gateway check</code> finds no problem</p>' if not problems else
                   f'<p class="bad verdict">{len(problems)} problem{"s" if len(problems) > 1 else ""}</p>'
                   '<pre class="problems">' + "\n".join(escape(p) for p in problems) + "</pre>")
        if warnings:
            verdict += ('<p class="warn">warnings (may hold on the Pi, not here):</p><pre class="warnings">'
                        + "\n".join(escape(w) for w in warnings) + "</pre>")
        result = f"{verdict}<h2>The pasted config</h2><pre class=\"listing\">{listing}</pre>"
    body = ('<h1>Check a config</h1><p>Paste a gateway.yaml: it is checked as <code>gateway check</code> does, '
            'on this gateway (its drivers, its files), and not applied.</p>'
            f'<form method="post" action="/check"><textarea name="config" rows="18">{escape(text)}</textarea>'
            f'<p><button type="submit">check</button></p></form>{result}')
    return _page("check a config", body)


def _line_of(problem: str) -> int | None:
    parts = problem.split(":", 2)
    return int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else None
