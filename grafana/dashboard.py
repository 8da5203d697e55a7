#!/usr/bin/env python3
"""Writes grafana/grafana.json, the dashboard of ip_traffic_monitor_cli.

The dashboard is generated so that every query is built from the same few
pieces (the selectors every query honours, the exact increase over the
range, the process label) and cannot drift apart; `tests/grafana.rs` checks
that the committed JSON is what this script writes, and evaluates every
query with promtool on a synthetic fleet.

    python3 grafana/dashboard.py > grafana/grafana.json

Rows, each answering one question:
  At a glance        how much this billing period, in the range, right now; is it up
  Top talkers        who used the bandwidth in the range (chosen once for the range)
  Where              by country, province, city and ISP (every counted byte)
  Processes          which local processes
  Fleet              per host
  Per IP (collapsed) graphs of the top talkers only
  Health             backend, reports, memory, CPU, scrapes
"""

import json

DS = {"type": "prometheus", "uid": "${datasource}"}
TX_COLOR = "#F2994A"  # upload, everywhere
RX_COLOR = "#5794F2"  # download, everywhere

HOST = 'job=~"$job",instance=~"$instance"'
PLACE = 'country=~"$country",province=~"$province",isp=~"$isp"'
FROM = "${__from:date:seconds}"


def sel(metric, place=True):
    return f"{metric}{{{HOST},{PLACE}}}" if place else f"{metric}{{{HOST}}}"


def inc(metric, place=True):
    """Bytes counted in the range, per series, never negative.

    Exact (the counter at the end minus the counter at the start, 0 for a
    series that began inside the range) unless the counter was reset in the
    range (a monitor without --state restarted): then Prometheus' increase(),
    which counts the bytes on both sides of the reset (extrapolated to the
    range's edges).
    """
    s = sel(metric, place)
    return f"(({s} - ({s} @ {FROM} or {s} * 0)) unless resets({s}[$__range]) > 0 or increase({s}[$__range]))"


def with_process(expr):
    """Adds the `process` label of the IP's last owner, "(unknown)" if none."""
    info = sel("ip_traffic_remote_process_info", place=False)
    return (
        f"({expr} * on (instance, remote_ip) group_left (process) {info}"
        f' or on (instance, remote_ip) label_replace({expr}, "process", "(unknown)", "", ""))'
    )


def when_no_place_filter(expr):
    """`expr` only while the place variables select every place: bytes that
    have no place of their own (IPs without a series) belong to none."""
    every = f"count({sel('ip_traffic_location_tx_bytes_total', place=False)})"
    chosen = f"count({sel('ip_traffic_location_tx_bytes_total')})"
    return f"({expr} and on () ({chosen} == {every}))"


LOC_TX = inc("ip_traffic_location_tx_bytes_total")
LOC_RX = inc("ip_traffic_location_rx_bytes_total")
IP_TX = inc("ip_traffic_tx_bytes_total")
IP_RX = inc("ip_traffic_rx_bytes_total")
IP_TOTAL = f"({IP_TX} + {IP_RX})"
HOST_TOTAL = f"sum by (instance) ({LOC_TX} + {LOC_RX})"
IP_KEYS = "instance, remote_ip, country, province, city, isp"


def top_talkers(expr):
    """`expr` for the $top_k IPs of the range by TX + RX, chosen once."""
    return f"(sum by ({IP_KEYS}, process) ({with_process(expr)}) and on (instance, remote_ip) topk($top_k, sum by (instance, remote_ip) ({IP_TOTAL})))"


def by_ip_graph(metric):
    """Rates of the $top_k IPs of the whole range only (chosen at its end)."""
    s = sel(metric)
    tx_at_end = f"increase({sel('ip_traffic_tx_bytes_total')}[$__range] @ end())"
    rx_at_end = f"increase({sel('ip_traffic_rx_bytes_total')}[$__range] @ end())"
    chosen = f"topk($top_k, sum by (instance, remote_ip) ({tx_at_end} + {rx_at_end}))"
    return f"rate({s}[$__rate_interval]) and on (instance, remote_ip) {chosen}"


class Layout:
    def __init__(self):
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1

    def id(self):
        self.next_id += 1
        return self.next_id - 1

    def place(self, w, h):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def new_row(self):
        self.x, self.y, self.row_h = 0, self.y + self.row_h, 0


L = Layout()


def target(expr, ref, legend="", instant=True, table=False):
    return {
        "datasource": DS,
        "expr": expr,
        "refId": ref,
        "legendFormat": legend,
        "instant": instant,
        "range": not instant,
        "format": "table" if table else "time_series",
    }


def fixed(color):
    return {"mode": "fixed", "fixedColor": color}


def thresholds(*steps):
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def row(title, collapsed=False, panels=None):
    L.new_row()
    r = {"id": L.id(), "type": "row", "title": title, "collapsed": collapsed, "gridPos": L.place(24, 1), "panels": panels or []}
    L.new_row()
    return r


def stat(title, desc, expr, unit, color=None, w=3, h=4, legend="", steps=None, mappings=None, text_mode=None):
    panel = {
        "id": L.id(),
        "type": "stat",
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": L.place(w, h),
        "targets": [target(expr, "A", legend)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "color": fixed(color) if color else {"mode": "thresholds"},
                "thresholds": steps or thresholds(("text", None)),
                "mappings": mappings or [],
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value" if color or steps else "none",
            "graphMode": "none",
            "textMode": text_mode or "auto",
            "justifyMode": "auto",
        },
    }
    return panel


def table(title, desc, targets, columns, w=12, h=9, sort_by=None):
    """A table of instant queries merged on their labels; `columns` renames
    each query's value column (`Value #A` → name) and gives its unit."""
    overrides = []
    renames = {}
    for ref, (name, unit, color) in columns.items():
        renames[f"Value #{ref}"] = name
        props = [{"id": "unit", "value": unit}]
        if color:
            props.append({"id": "color", "value": fixed(color)})
            props.append({"id": "custom.cellOptions", "value": {"type": "color-text"}})
        overrides.append({"matcher": {"id": "byName", "options": name}, "properties": props})
    return {
        "id": L.id(),
        "type": "table",
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": L.place(w, h),
        "targets": targets,
        "transformations": [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True, "job": True}, "renameByName": renames}},
            {"id": "sortBy", "options": {"sort": [{"field": sort_by or list(renames.values())[0], "desc": True}]}},
        ],
        "fieldConfig": {"defaults": {"unit": "none", "thresholds": thresholds(("text", None))}, "overrides": overrides},
        "options": {"showHeader": True, "cellHeight": "sm"},
    }


def timeseries(title, desc, targets, unit, colors=None, w=12, h=8):
    overrides = [
        {"matcher": {"id": "byFrameRefID", "options": ref}, "properties": [{"id": "color", "value": fixed(c)}]}
        for ref, c in (colors or {}).items()
    ]
    return {
        "id": L.id(),
        "type": "timeseries",
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": L.place(w, h),
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "color": {"mode": "palette-classic"},
                "thresholds": thresholds(("text", None)),
                "custom": {"drawStyle": "line", "fillOpacity": 10, "lineWidth": 1, "spanNulls": False},
            },
            "overrides": overrides,
        },
        "options": {"legend": {"displayMode": "table", "placement": "right", "calcs": ["mean", "max"]}, "tooltip": {"mode": "multi"}},
    }


UP_DOWN = [
    {"type": "value", "options": {"1": {"text": "UP", "color": "green", "index": 0}, "0": {"text": "DOWN", "color": "red", "index": 1}}},
    {"type": "special", "options": {"match": "null", "result": {"text": "DOWN", "color": "red", "index": 2}}},
]

panels = []

# ---- At a glance ----------------------------------------------------------
panels.append(row("At a glance"))
panels += [
    stat("Upload this billing period", "Every byte sent since the billing period began (local midnight of --billing-day), IPs without a series of their own included, summed over the selected hosts. Goes on across restarts with --state.",
         f"sum({sel('ip_traffic_period_tx_bytes', place=False)})", "bytes", TX_COLOR, w=4),
    stat("Download this billing period", "Every byte received since the billing period began, summed over the selected hosts.",
         f"sum({sel('ip_traffic_period_rx_bytes', place=False)})", "bytes", RX_COLOR, w=4),
    stat("Billing period began", "When the current billing period began (the earliest of the selected hosts).",
         f"min({sel('ip_traffic_period_start_timestamp_seconds', place=False)}) * 1000", "dateTimeAsIso", w=4),
    stat("Upload in range", "Every byte sent in the selected time range to the selected places: exact from the counters at the range's start and end; a counter reset in the range (a monitor without --state restarted) is counted on both sides.",
         f"sum({LOC_TX})", "bytes", TX_COLOR),
    stat("Download in range", "Every byte received in the selected time range from the selected places (exact; resets counted on both sides).",
         f"sum({LOC_RX})", "bytes", RX_COLOR),
    stat("Upload rate now", "Bytes sent per second, over the last rate interval.",
         f"sum(rate({sel('ip_traffic_location_tx_bytes_total')}[$__rate_interval]))", "binBps", TX_COLOR),
    stat("Download rate now", "Bytes received per second, over the last rate interval.",
         f"sum(rate({sel('ip_traffic_location_rx_bytes_total')}[$__rate_interval]))", "binBps", RX_COLOR),
    stat("Monitor", "UP when Prometheus reaches the exporter and its backend is counting; DOWN when either is not (a dead exporter, a dead or stalled backend).",
         f"min by (instance) (({sel('ip_traffic_monitor_backend_up', place=False)} and on (instance, job) {sel('up', place=False)} == 1) or on (instance, job) {sel('up', place=False)})",
         "none", w=24, h=3, legend="{{instance}}", steps=thresholds(("red", None), ("green", 1)), mappings=UP_DOWN, text_mode="value_and_name"),
]

# ---- Top talkers ----------------------------------------------------------
panels.append(row("Top talkers (the selected range)"))
panels.append(table(
    "Top talkers",
    "The $top_k remote IPs of the range by bytes sent plus received, chosen once for the whole range: their place, ISP and last local process ('(unknown)' if none was seen), bytes each way, and their share of all the bytes of their host in the range (IPs without a series of their own included in that whole).",
    [
        target(top_talkers(IP_TX), "A", table=True),
        target(top_talkers(IP_RX), "B", table=True),
        target(top_talkers(IP_TOTAL), "C", table=True),
        target(f"{top_talkers(IP_TOTAL)} / on (instance) group_left {HOST_TOTAL}", "D", table=True),
    ],
    {"A": ("TX", "bytes", TX_COLOR), "B": ("RX", "bytes", RX_COLOR), "C": ("Total", "bytes", None), "D": ("Share of host", "percentunit", None)},
    w=24, h=12, sort_by="Total",
))

# ---- Where ------------------------------------------------------------------
panels.append(row("Where (every counted byte)"))


def by_labels(title, labels, desc):
    return table(
        title, desc,
        [target(f"sum by ({labels}) ({LOC_TX})", "A", table=True), target(f"sum by ({labels}) ({LOC_RX})", "B", table=True)],
        {"A": ("TX", "bytes", TX_COLOR), "B": ("RX", "bytes", RX_COLOR)},
        w=12, h=9,
    )


panels += [
    by_labels("By country", "country", "Bytes each way in the range per country, from the location totals: every counted byte in exactly one place, IPs without a series included ('Unknown' where no database knows the address)."),
    by_labels("By province", "country, province", "Bytes each way in the range per province (every counted byte)."),
    by_labels("By city", "country, province, city", "Bytes each way in the range per city (every counted byte)."),
    by_labels("By ISP", "isp", "Bytes each way in the range per ISP (every counted byte)."),
]

# ---- Processes --------------------------------------------------------------
panels.append(row("Processes"))
UNSERIED = "(IPs without a series)"


def by_process(metric_ip, metric_unexported):
    unexported = when_no_place_filter(f'label_replace(sum by (instance) ({inc(metric_unexported, place=False)}), "process", "{UNSERIED}", "", "")')
    return f"sum by (process) ({with_process(inc(metric_ip))} or {unexported})"


panels.append(table(
    "By process",
    f"Bytes each way in the range per local process (the last one seen talking to each IP); '(unknown)' for IPs whose process was never seen, '{UNSERIED}' for the bytes of IPs below the export threshold (shown while no place filter is set), so the table adds up to all traffic.",
    [target(by_process("ip_traffic_tx_bytes_total", "ip_traffic_unexported_tx_bytes_total"), "A", table=True),
     target(by_process("ip_traffic_rx_bytes_total", "ip_traffic_unexported_rx_bytes_total"), "B", table=True)],
    {"A": ("TX", "bytes", TX_COLOR), "B": ("RX", "bytes", RX_COLOR)},
    w=24, h=8,
))

# ---- Fleet ------------------------------------------------------------------
panels.append(row("Fleet (per host)"))
panels.append(table(
    "Traffic per host",
    "Bytes each way in the range per host (every counted byte of the selected places), this billing period's totals, and the backend.",
    [target(f"sum by (instance) ({LOC_TX})", "A", table=True), target(f"sum by (instance) ({LOC_RX})", "B", table=True),
     target(f"sum by (instance) ({sel('ip_traffic_period_tx_bytes', place=False)})", "C", table=True),
     target(f"sum by (instance) ({sel('ip_traffic_period_rx_bytes', place=False)})", "D", table=True)],
    {"A": ("TX in range", "bytes", TX_COLOR), "B": ("RX in range", "bytes", RX_COLOR), "C": ("TX this period", "bytes", TX_COLOR), "D": ("RX this period", "bytes", RX_COLOR)},
    w=12, h=9, sort_by="TX in range",
))
panels.append(timeseries(
    "Rate per host",
    "Bytes per second each way per host (every counted byte of the selected places).",
    [target(f"sum by (instance) (rate({sel('ip_traffic_location_tx_bytes_total')}[$__rate_interval]))", "A", "TX {{instance}}", instant=False),
     target(f"sum by (instance) (rate({sel('ip_traffic_location_rx_bytes_total')}[$__rate_interval]))", "B", "RX {{instance}}", instant=False)],
    "binBps", {"A": TX_COLOR, "B": RX_COLOR}, w=12, h=9,
))

# ---- Per IP (collapsed) -------------------------------------------------------
per_ip = [
    timeseries("Upload rate of the top talkers", "Bytes per second sent to each of the range's $top_k top talkers (chosen once, by TX + RX over the whole range).",
               [target(by_ip_graph("ip_traffic_tx_bytes_total"), "A", "{{remote_ip}} ({{instance}})", instant=False)], "binBps"),
    timeseries("Download rate of the top talkers", "Bytes per second received from each of the range's $top_k top talkers.",
               [target(by_ip_graph("ip_traffic_rx_bytes_total"), "A", "{{remote_ip}} ({{instance}})", instant=False)], "binBps"),
]
panels.append(row("Per IP (top talkers)", collapsed=True, panels=per_ip))

# ---- Health -----------------------------------------------------------------
panels.append(row("Health"))
H = lambda m: sel(m, place=False)
panels += [
    stat("Backend up", "1 while the backend counts (UP), 0 when it died or stalled (DOWN); per host.", H("ip_traffic_monitor_backend_up"), "none",
         w=4, legend="{{instance}}", steps=thresholds(("red", None), ("green", 1)), mappings=UP_DOWN, text_mode="value_and_name"),
    stat("Report age", "Seconds since the backend's last complete report; a few sampling intervals at most while it is healthy.",
         f"time() - {H('ip_traffic_monitor_last_report_timestamp_seconds')}", "s", w=4, legend="{{instance}}",
         steps=thresholds(("green", None), ("orange", 30), ("red", 120))),
    stat("Backend restarts", "Restarts of the backend in the range.", f"increase({H('ip_traffic_monitor_backend_restarts_total')}[$__range])", "none",
         w=4, legend="{{instance}}", steps=thresholds(("green", None), ("orange", 1))),
    stat("Folded IPs", "Remote IPs dropped by the --max-ips cap in the range (their bytes stay in the totals).", f"increase({H('ip_traffic_monitor_folded_ips_total')}[$__range])", "none",
         w=4, legend="{{instance}}", steps=thresholds(("green", None), ("orange", 1))),
    stat("Location lookup errors", "Lookups that failed in the range (a damaged database).", f"increase({H('ip_traffic_monitor_location_lookup_errors_total')}[$__range])", "none",
         w=4, legend="{{instance}}", steps=thresholds(("green", None), ("red", 1))),
    stat("Unreadable backend lines", "Backend output lines that could not be read, in the range.", f"increase({H('ip_traffic_monitor_parse_errors_total')}[$__range])", "none",
         w=4, legend="{{instance}}", steps=thresholds(("green", None), ("red", 1))),
    stat("Missed probe runs", "bpftrace: probe runs the kernel skipped (packets possibly not counted), in the range.", f"increase({H('ip_traffic_monitor_missed_probe_runs_total')}[$__range])", "none",
         w=4, legend="{{instance}}", steps=thresholds(("green", None), ("orange", 1))),
    stat("Unattributed bytes", "Bytes counted on no remote IP (full maps or sets), in the range; they are in every total.", f"increase({H('ip_traffic_monitor_unattributed_bytes_total')}[$__range])", "bytes",
         w=4, legend="{{instance}}", steps=thresholds(("green", None), ("orange", 1))),
]
panels.append(table(
    "Version and backend",
    "Each host's monitor version and backend.",
    [target(f"max by (instance, version, backend) ({H('ip_traffic_monitor_build_info')})", "A", table=True)],
    {"A": ("Running", "none", None)}, w=8, h=6,
))
panels.append(timeseries("Memory", "Resident memory of each monitor process.", [target(f"{H('process_resident_memory_bytes')}", "A", "{{instance}}", instant=False)], "bytes", w=8, h=6))
panels.append(timeseries("CPU", "CPU seconds per second used by each monitor process (the kernel's counting is not in it).",
                         [target(f"rate({H('process_cpu_seconds_total')}[$__rate_interval])", "A", "{{instance}}", instant=False)], "percentunit", w=8, h=6))
panels.append(timeseries("Tracked IPs", "Remote IPs each monitor holds in memory.", [target(H("ip_traffic_monitor_tracked_ips"), "A", "{{instance}}", instant=False)], "none"))
panels.append(timeseries("Scrape duration", "How long Prometheus took to scrape each monitor (its job and instance only).",
                         [target(f"scrape_duration_seconds{{{HOST}}}", "A", "{{instance}}", instant=False)], "s"))


def variable(name, label, query, all_value=".*"):
    """`all_value` None: "All" stands for the values found (a regex of
    them), so `up` or `scrape_duration_seconds` of other jobs stay out."""
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"}, "definition": query,
        "refresh": 2, "multi": True, "includeAll": True, "allValue": all_value,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1, "hide": 0, "options": [],
    }


LOC = f"ip_traffic_location_tx_bytes_total{{{HOST}}}"
dashboard = {
    "__requires": [
        {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
        {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
    ],
    "title": "IP Traffic Monitor",
    "uid": "ip-traffic-monitor",
    "editable": True,
    "graphTooltip": 1,
    "schemaVersion": 39,
    "version": 2,
    "time": {"from": "now-6h", "to": "now"},
    "refresh": "1m",
    "tags": ["ip_traffic_monitor_cli", "network"],
    "description": "Per-remote-IP traffic from ip_traffic_monitor_cli: this billing period, the range and now; top talkers with place, ISP and process; by country, province, city, ISP, process and host; health. Needs Prometheus 2.33+ (@ modifiers).",
    "templating": {"list": [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus", "hide": 0, "current": {}, "options": [], "refresh": 1},
        variable("job", "Job", "label_values(ip_traffic_monitor_build_info, job)", all_value=None),
        variable("instance", "Instance", 'label_values(ip_traffic_monitor_build_info{job=~"$job"}, instance)', all_value=None),
        variable("country", "Country", f"label_values({LOC}, country)"),
        variable("province", "Province", f'label_values(ip_traffic_location_tx_bytes_total{{{HOST},country=~"$country"}}, province)'),
        variable("isp", "ISP", f'label_values(ip_traffic_location_tx_bytes_total{{{HOST},country=~"$country"}}, isp)'),
        {"name": "top_k", "label": "Top K", "type": "custom", "query": "10,20,50,100,200,500,1000",
         "current": {"selected": True, "text": "20", "value": "20"}, "multi": False, "includeAll": False, "hide": 0,
         "options": [{"selected": v == "20", "text": v, "value": v} for v in "10,20,50,100,200,500,1000".split(",")]},
    ]},
    "annotations": {"list": [
        {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
         "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"},
        {"name": "Monitor restarts", "datasource": DS, "enable": True, "iconColor": "red",
         "expr": f"changes({H('process_start_time_seconds')}[$__interval]) > 0", "step": "$__interval",
         "titleFormat": "ip_traffic_monitor_cli restarted", "textFormat": "{{instance}}", "useValueForTime": False},
    ]},
    "panels": panels,
}

print(json.dumps(dashboard, ensure_ascii=False, indent=2))
