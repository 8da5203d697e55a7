// The live page: polls /api/live every report interval and draws it.
// Every outside text (process, place, ISP) is set with textContent, never
// as markup. Sorting and filtering live in the URL's hash (#sort=tx_bytes&
// asc=1&q=text), so a view can be linked to and reloads keep it.
"use strict";

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
function human(bytes) {
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) { value /= 1024; unit++; }
  return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}
const rate = (bytes) => bytes == null ? "–" : `${human(bytes)}/s`;

const $ = (id) => document.getElementById(id);
let last = null;        // the previous document, for per-IP rates
let rates = new Map();  // remote_ip -> [tx/s, rx/s]
let rows = [];
let timer = null;

function view() {
  const params = new URLSearchParams(location.hash.slice(1));
  return { sort: params.get("sort") || "tx_bytes", asc: params.get("asc") === "1", q: params.get("q") || "" };
}

function setView(next) {
  const params = new URLSearchParams();
  params.set("sort", next.sort);
  if (next.asc) params.set("asc", "1");
  if (next.q) params.set("q", next.q);
  history.replaceState(null, "", "#" + params.toString());
  draw();
}

function place(row) {
  return [row.country, row.province, row.city].filter((l) => l && l !== "Unknown").join(" ") || "Unknown";
}

function value(row, key) {
  switch (key) {
    case "place": return place(row);
    case "process": return row.process || "";
    case "tx_rate": return (rates.get(row.remote_ip) || [-1, -1])[0];
    case "rx_rate": return (rates.get(row.remote_ip) || [-1, -1])[1];
    default: return row[key];
  }
}

function cell(text, cls, exact) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  if (exact != null) td.title = `${exact} bytes`;
  return td;
}

function drawRows() {
  const v = view();
  const q = v.q.toLowerCase();
  const shown = rows.filter((r) => !q || [r.remote_ip, place(r), r.isp, r.process || ""].some((t) => String(t).toLowerCase().includes(q)));
  shown.sort((a, b) => {
    const x = value(a, v.sort), y = value(b, v.sort);
    const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
    return v.asc ? order : -order;
  });
  const body = $("rows");
  body.replaceChildren(...shown.map((r) => {
    const tr = document.createElement("tr");
    const [txr, rxr] = rates.get(r.remote_ip) || [null, null];
    tr.append(cell(r.remote_ip), cell(place(r)), cell(r.isp), cell(r.process == null ? "(unknown)" : r.process),
      cell(rate(txr), "num tx"), cell(rate(rxr), "num rx"), cell(human(r.tx_bytes), "num tx", r.tx_bytes), cell(human(r.rx_bytes), "num rx", r.rx_bytes));
    tr.dataset.ip = r.remote_ip;
    return tr;
  }));
  $("count").textContent = `${shown.length} of ${rows.length} shown`;
  for (const th of document.querySelectorAll("th[data-key]")) {
    th.classList.toggle("sorted", th.dataset.key === v.sort);
    th.classList.toggle("asc", th.dataset.key === v.sort && v.asc);
  }
  if ($("filter").value !== v.q) $("filter").value = v.q;
}

function drawChart(doc) {
  const svg = $("chart");
  // Each report's bytes over the time since the one before (the first: one interval).
  const points = doc.history.map((p, i) => {
    const seconds = i === 0 ? doc.interval_seconds : Math.max((p[0] - doc.history[i - 1][0]) / 1000, 0.001);
    return [p[0], p[1] / seconds, p[2] / seconds];
  });
  const end = doc.now * 1000, start = end - 15 * 60 * 1000;
  const max = Math.max(1, ...points.map((p) => Math.max(p[1], p[2])));
  const line = (index, cls) => {
    const poly = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    poly.setAttribute("class", cls);
    poly.setAttribute("points", points.filter((p) => p[0] >= start)
      .map((p) => `${((p[0] - start) / (end - start) * 600).toFixed(1)},${(160 - p[index] / max * 150).toFixed(1)}`).join(" "));
    return poly;
  };
  svg.replaceChildren(line(1, "tx"), line(2, "rx"));
  $("chart-max").textContent = `max ${rate(max)}`;
  const latest = points[points.length - 1];
  $("tx-rate").textContent = rate(latest ? latest[1] : null);
  $("rx-rate").textContent = rate(latest ? latest[2] : null);
}

function draw() {
  if (last) drawRows();
}

function show(doc) {
  if (last) {
    const seconds = Math.max(doc.now - last.now, 0.001);
    const before = new Map(last.top.map((r) => [r.remote_ip, r]));
    rates = new Map(doc.top.map((r) => {
      const b = before.get(r.remote_ip);
      return [r.remote_ip, b ? [(r.tx_bytes - b.tx_bytes) / seconds, (r.rx_bytes - b.rx_bytes) / seconds] : [null, null]];
    }));
  }
  last = doc;
  rows = doc.top;
  document.title = `${doc.host || "host"} · ip_traffic_monitor_cli`;
  $("host").textContent = doc.host || "ip_traffic_monitor_cli";
  $("about").textContent = `${doc.backend} · ${doc.tracked_ips} remote IPs · v${doc.version}`;
  $("tx-total").textContent = human(doc.tx_bytes);
  $("rx-total").textContent = human(doc.rx_bytes);
  $("tx-period").textContent = human(doc.period.tx_bytes);
  $("rx-period").textContent = human(doc.period.rx_bytes);
  const late = doc.report_age_seconds == null || doc.report_age_seconds > 3 * doc.interval_seconds;
  const status = $("status");
  status.hidden = doc.up && !late;
  status.textContent = !doc.up ? `backend ${doc.backend} is DOWN: nothing is being counted`
    : `reports are late: the last came ${doc.report_age_seconds == null ? "never" : Math.round(doc.report_age_seconds) + " s ago"}`;
  drawChart(doc);
  drawRows();
}

async function poll() {
  clearTimeout(timer);
  let interval = 2;
  try {
    const reply = await fetch("/api/live?top=1000", { cache: "no-store" });
    const doc = await reply.json();
    interval = doc.interval_seconds || 2;
    show(doc);
  } catch (e) {
    const status = $("status");
    status.hidden = false;
    status.textContent = "the monitor does not answer";
  }
  timer = setTimeout(poll, interval * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const th of document.querySelectorAll("th[data-key]")) {
    th.addEventListener("click", () => {
      const v = view();
      setView({ ...v, sort: th.dataset.key, asc: v.sort === th.dataset.key ? !v.asc : false });
    });
  }
  $("filter").addEventListener("input", (e) => setView({ ...view(), q: e.target.value }));
  window.addEventListener("hashchange", draw);
  poll();
});
