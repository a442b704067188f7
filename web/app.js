// The dashboard: plain modules over the same HTTP API the CLI uses; it polls, so it needs no server push.
const colors = {
  productive: "#1f8a4c",
  degraded: "#b5651d",
  lost: "#c8372d",
  detection: "#e08a1e",
  restart: "#8e5bd6",
  checkpoint: "#2f6fde",
  starting: "#9aa5b1",
  queued: "#c9d1da",
  waiting: "#f0c419",
  finishing: "#5d6b79",
};
// The API token never reaches this script: the server traded `/?token=...` for an HttpOnly cookie that the browser
// sends with these same-origin requests (docs/security.md).
async function api(path) {
  const res = await fetch(path, { credentials: "same-origin" });
  if (res.status === 401) {
    throw new Error("not signed in: open the URL that `switchyard dashboard` (or `switchyard up`) prints");
  }
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "-")));
  return node;
};
const secs = (ms) => (ms == null ? "-" : `${(ms / 1000).toFixed(1)}s`);
// Landing view: the running job's page (else the latest job's), following whichever job runs now, until the user
// picks one (a click, or a #<job> link), which pins it.
let selected = location.hash.slice(1) || null;
let pinned = selected !== null;
let chart = null;

/** The job to land on: the newest that is not finished, else the newest (the API lists newest first). */
function landingJob(jobs) {
  const finished = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);
  return jobs.find((j) => !finished.has(j.state)) ?? jobs[0] ?? null;
}

/** Incident numbers as users see them: #1 is the job's first (the store's ids are global across jobs). */
function incidentNumbers(incidents) {
  const ids = incidents.map((i) => i.id).sort((a, b) => a - b);
  return new Map(ids.map((id, n) => [id, n + 1]));
}

async function refreshLists() {
  const [jobs, nodes, health] = await Promise.all([api("/api/jobs"), api("/api/nodes"), api("/api/health")]);
  document.getElementById("server").textContent = `v${health.version}`;
  const tbody = document.querySelector("#jobs tbody");
  tbody.replaceChildren(
    ...jobs.map((j) => {
      const row = el(
        "tr",
        { "data-job": j.id, class: j.id === selected ? "selected" : "" },
        el("td", {}, j.id),
        el("td", { class: `state-${j.state}` }, j.state),
        el("td", {}, j.last ? `${j.last.step}${j.steps ? `/${j.steps}` : ""}` : "-"),
        el("td", {}, j.last?.loss != null ? j.last.loss.toFixed(4) : "-"),
        el("td", {}, j.restarts),
      );
      row.addEventListener("click", () => select(j.id, true));
      return row;
    }),
  );
  document.getElementById("job-empty").hidden = jobs.length > 0;
  const landing = landingJob(jobs);
  if (!pinned && landing && landing.id !== selected) select(landing.id, false);
  document
    .querySelector("#nodes tbody")
    .replaceChildren(
      ...nodes.map((n) =>
        el(
          "tr",
          {},
          el("td", {}, n.name),
          el("td", {}, n.pool),
          el("td", { class: n.cordoned ? "cordoned" : "" }, n.cordoned ? "cordoned" : "ready"),
          healthCell(n.health),
          el("td", {}, n.strikes),
          el("td", { class: "finding" }, headline(n.health)?.message ?? n.reason ?? "-"),
        ),
      ),
    );
}

/** "30s", "5m", "2h": how long ago a probe ran. */
function ago(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

/** The finding that speaks for a node's health: the first fatal one, else the first degraded one. */
function headline(health) {
  const findings = health?.findings ?? [];
  return findings.find((f) => f.grade === "fatal") ?? findings.find((f) => f.grade === "degraded") ?? null;
}

/** A node's last health probe: status and age; every finding in the tooltip. */
function healthCell(health) {
  if (!health) return el("td", {}, "-");
  const title = health.findings.map((f) => `${f.grade} ${f.cause} (${f.source}): ${f.message}`).join("\n");
  return el(
    "td",
    { class: `health-${health.status}`, title: `${health.trigger} probe\n${title}` },
    `${health.status} (${ago(Date.now() - health.probedAt)} ago)`,
  );
}

function select(id, pin) {
  selected = id;
  if (pin) {
    pinned = true;
    location.hash = id;
  }
  if (chart) {
    chart.destroy();
    chart = null;
  }
  void refreshJob();
  void refreshLists();
}

async function refreshJob() {
  if (!selected) return;
  const id = encodeURIComponent(selected);
  const [job, steps, report, events] = await Promise.all([
    api(`/api/jobs/${id}`),
    api(`/api/jobs/${id}/steps?rank=0`),
    api(`/api/jobs/${id}/report`),
    api(`/api/jobs/${id}/events`),
  ]);
  document.getElementById("job-title").textContent = job.id;
  document.getElementById("job-summary").textContent =
    `${job.state}${job.reason ? ` (${job.reason})` : ""} · ${job.attempts.length} attempt(s) · ${job.restarts} restart(s) · ` +
    `goodput ${(report.ledger.goodput * 100).toFixed(1)}%` +
    grayDegradedNote(report.ledger);
  drawLoss(steps);
  drawLedger(report.ledger);
  const a = report.advice;
  // Drills (switchyard chaos) cost time in the ledger but are left out of the MTBF.
  const drills = a.injectedLeftOut ? ` (${a.injectedLeftOut} injected fault(s) not counted)` : "";
  document.getElementById("advice").textContent =
    (a.mtbfMs == null
      ? `Advisor: no failure yet${drills ? ` but injected ones${drills}` : ""}.`
      : `Advisor: measured MTBF ${secs(a.mtbfMs)}${drills}, checkpoint save ${secs(a.saveMs)}; Young ${secs(a.youngMs)}, Daly ${secs(a.dalyMs)}, in use ${secs(a.intervalInUseMs)}.`) +
    (a.ifInjectedWereReal
      ? ` Had the injected faults been real: MTBF ${secs(a.ifInjectedWereReal.mtbfMs)}, Daly ${secs(a.ifInjectedWereReal.dalyMs)}.`
      : "");
  const costs = new Map(report.ledger.incidents.map((i) => [i.id, i]));
  const numbers = incidentNumbers(job.incidents);
  document
    .querySelector("#incidents tbody")
    .replaceChildren(
      ...job.incidents.flatMap((i) => [
        el(
          "tr",
          {},
          el("td", {}, `#${numbers.get(i.id)}`),
          el("td", {}, costs.get(i.id)?.injected ? `${i.cause} (injected)` : i.cause),
          el("td", {}, `rank ${i.culpritRank ?? "-"} on ${i.culpritNode ?? "-"}`),
          el("td", {}, secs(costs.get(i.id)?.detectionMs)),
          el("td", {}, costs.get(i.id)?.stepsLost ?? "-"),
          el("td", {}, i.summary),
        ),
        ...grayEvidenceRows(i, costs.get(i.id)),
      ]),
    );
  document
    .getElementById("events")
    .replaceChildren(
      ...events.slice(-200).map((e) => el("li", {}, `${new Date(e.t).toLocaleTimeString()} ${e.kind}: ${e.message}`)),
    );
}

// ---- Gray failures (slow link, slow chip): the job's degraded time and each slowdown incident's measured evidence.

/** " · degraded 12.3s (4.1%)" when the ledger charged degraded time to the job, else "". */
function grayDegradedNote(ledger) {
  const ms = ledger.totals.degraded ?? 0;
  if (ms <= 0) return "";
  return ` · degraded ${secs(ms)} (${((100 * ms) / Math.max(1, ledger.wallMs)).toFixed(1)}% of the wall time)`;
}

/**
 * Under a slowdown incident, one row with what was measured: the slowdown (recent against baseline step time), the
 * degraded time charged to it, the network probe's table (pair -> Gbit/s, the slow pairs marked, the threshold) and
 * the compute table (rank -> compute time per step against the expected). None for other incidents.
 */
function grayEvidenceRows(incident, cost) {
  const ev = incident.evidence ?? {};
  if (!ev.slowdown && !ev.network && !ev.straggler) return [];
  const box = el("div", { class: "gray-evidence" });
  const s = ev.slowdown;
  const lines = [];
  if (s) {
    lines.push(
      `slowdown ${Number(s.factor).toFixed(2)}x: step ${Number(s.recentStepS).toFixed(2)}s against a baseline of ` +
        `${Number(s.baselineStepS).toFixed(2)}s`,
    );
  }
  if (cost) lines.push(`degraded time charged: ${secs(cost.degradedMs)}`);
  if (ev.decision?.sentence) lines.push(`decision: ${ev.decision.sentence}`);
  for (const line of lines) box.append(el("p", {}, line));
  const net = ev.network;
  if (net?.table?.length) {
    const slow = new Set(
      net.table
        .filter((p) => net.culprits?.includes(p.from) || net.culprits?.includes(p.to))
        .map((p) => `${p.from}->${p.to}`),
    );
    box.append(
      el("p", {}, `network probe: ${net.kind}${net.culprits?.length ? ` (${net.culprits.join(", ")})` : ""}`),
      el(
        "table",
        { class: "gray-network" },
        el("thead", {}, el("tr", {}, el("th", {}, "pair"), el("th", {}, "Gbit/s"))),
        el(
          "tbody",
          {},
          ...net.table.map((p) =>
            el(
              "tr",
              { class: slow.has(`${p.from}->${p.to}`) ? "gray-slow" : "" },
              el("td", {}, `${p.from} -> ${p.to}`),
              el("td", {}, p.gbitS == null ? (p.error ?? "failed") : Number(p.gbitS).toFixed(3)),
            ),
          ),
        ),
      ),
    );
    if (net.evidence) box.append(el("p", { class: "gray-expected" }, net.evidence));
  }
  const st = ev.straggler;
  if (st?.table?.length) {
    const slowRanks = new Set(st.slowRanks ?? []);
    box.append(
      el(
        "p",
        {},
        `compute time per step (expected ${st.expectedS == null ? "-" : `${Number(st.expectedS).toFixed(3)}s`})`,
      ),
      el(
        "table",
        { class: "gray-compute" },
        el("thead", {}, el("tr", {}, el("th", {}, "rank"), el("th", {}, "host"), el("th", {}, "compute s/step"))),
        el(
          "tbody",
          {},
          ...st.table.map((r) =>
            el(
              "tr",
              { class: slowRanks.has(r.rank) ? "gray-slow" : "" },
              el("td", {}, r.rank),
              el("td", {}, r.node),
              el("td", {}, Number(r.computeS).toFixed(3)),
            ),
          ),
        ),
      ),
    );
  }
  return [el("tr", { class: "gray-evidence-row" }, el("td", { colspan: "6" }, box))];
}

function drawLoss(steps) {
  // One series per attempt, so a rollback shows as a line restarting from the checkpoint's step.
  const attempts = [...new Set(steps.map((s) => s.attempt))];
  const xs = [...new Set(steps.map((s) => s.step))].sort((a, b) => a - b);
  const series = attempts.map((a) => {
    const byStep = new Map(steps.filter((s) => s.attempt === a).map((s) => [s.step, s.loss]));
    return xs.map((x) => byStep.get(x) ?? null);
  });
  const data = [xs, ...series];
  const host = document.getElementById("loss-chart");
  if (chart && chart.series.length === attempts.length + 1) {
    chart.setData(data);
    return;
  }
  if (chart) chart.destroy();
  const palette = ["#2f6fde", "#c8372d", "#1f8a4c", "#8e5bd6", "#e08a1e", "#5d6b79"];
  chart = new uPlot(
    {
      width: Math.max(320, host.clientWidth),
      height: 240,
      title: "loss by step (one line per attempt)",
      scales: { x: { time: false } },
      series: [
        { label: "step" },
        ...attempts.map((a, i) => ({ label: `attempt ${a}`, stroke: palette[i % palette.length], width: 1.5 })),
      ],
    },
    data,
    host,
  );
}

function drawLedger(ledger) {
  const bar = document.getElementById("ledger");
  const parts = Object.entries(ledger.totals).filter(([, v]) => v > 0);
  bar.replaceChildren(
    ...parts.map(([k, v]) =>
      el("div", {
        style: `width:${(100 * v) / Math.max(1, ledger.wallMs)}%;background:${colors[k] ?? "#999"}`,
        title: `${k}: ${secs(v)}`,
      }),
    ),
  );
  const legend = el(
    "div",
    { class: "legend" },
    ...parts.map(([k, v]) => {
      const item = el("span", {}, `${k} ${secs(v)}`);
      item.prepend(el("i", { style: `background:${colors[k] ?? "#999"}` }));
      return item;
    }),
  );
  if (bar.nextElementSibling?.classList.contains("legend")) bar.nextElementSibling.replaceWith(legend);
  else bar.after(legend);
}

// ---- Services (issue 14): services, their replicas, which pool does what, the serving ledger -------------------

const servingColors = { serving: "#1f8a4c", starting: "#9aa5b1", down: "#c8372d" };

async function refreshServices() {
  const [services, pools, ledger] = await Promise.all([
    api("/api/services"),
    api("/api/services/pools"),
    api("/api/services/ledger"),
  ]);
  document.getElementById("services-empty").hidden = services.length > 0;
  document.querySelector("#services tbody").replaceChildren(...services.map(serviceRow));
  const described = await Promise.all(services.map((s) => api(`/api/services/${encodeURIComponent(s.name)}`)));
  const replicas = described.flatMap((d) => d.replicas.filter((r) => r.state !== "stopped"));
  document.querySelector("#replicas").hidden = replicas.length === 0;
  document.querySelector("#replicas tbody").replaceChildren(...replicas.map(replicaRow));
  document.querySelector("#pools tbody").replaceChildren(...pools.map(poolRow));
  drawServingLedger(ledger.pools);
  drawRequestsLedger(ledger.requests ?? [], ledger.saved ?? []);
}

function serviceRow(s) {
  return el(
    "tr",
    { "data-service": s.name },
    el("td", {}, s.name),
    el("td", { class: `service-${s.state}`, title: s.note ?? "" }, s.state),
    el("td", {}, `${s.ready}/${s.desired}`),
    el(
      "td",
      {},
      s.pools
        .filter((p) => p.desired > 0 || p.backends > 0)
        .map((p) => `${p.name} ${p.ready}/${p.desired}`)
        .join(", "),
    ),
    el(
      "td",
      {},
      s.target ? `step ${s.target.step} of ${s.target.jobId}` : s.fromJob ? `none of ${s.fromJob} yet` : "-",
    ),
  );
}

function replicaRow(r) {
  const row = el(
    "tr",
    { "data-job": r.jobId, title: r.jobId },
    el("td", {}, `${r.service}/${r.slot}`),
    el("td", {}, r.runningPool ?? r.pool),
    el("td", {}, r.node ?? "-"),
    el("td", { class: `replica-${r.state}` }, r.state),
    el("td", {}, r.checkpointStep ?? "-"),
    el("td", {}, r.restarts),
  );
  // A replica is a job of the supervisor: its page shows its attempts, incidents and events.
  row.addEventListener("click", () => select(r.jobId, true));
  return row;
}

function poolRow(p) {
  const side = (names, nodes) => (names.length > 0 ? `${names.join(", ")} (${nodes.join(", ")})` : "-");
  return el(
    "tr",
    { "data-pool": p.pool },
    el("td", {}, `${p.pool} (${p.vendor})`),
    el("td", {}, p.cordoned > 0 ? `${p.nodes}, ${p.cordoned} cordoned` : p.nodes),
    el("td", {}, side(p.training, p.trainingNodes)),
    el("td", {}, side(p.serving, p.servingNodes)),
  );
}

function drawServingLedger(rows) {
  const host = document.getElementById("serving-ledger");
  host.replaceChildren(
    ...rows.map((r) => {
      const total = Math.max(1e-9, r.serving + r.starting + r.down);
      const parts = ["serving", "starting", "down"].filter((k) => r[k] > 0);
      const bar = el(
        "div",
        { class: "ledger" },
        ...parts.map((k) =>
          el("div", {
            style: `width:${(100 * r[k]) / total}%;background:${servingColors[k]}`,
            title: `${k}: ${r[k].toFixed(1)} replica-s`,
          }),
        ),
      );
      const legend = el(
        "div",
        { class: "legend" },
        ...parts.map((k) => {
          const item = el("span", {}, `${k} ${r[k].toFixed(1)}s`);
          item.prepend(el("i", { style: `background:${servingColors[k]}` }));
          return item;
        }),
      );
      return el("div", { "data-pool": r.pool }, el("strong", {}, r.pool), bar, legend);
    }),
  );
}

// ---- Gateway traffic (issue 14): what the gateways that follow this server report, per service -------------------

const trafficCharts = new Map();
const fmt = (v, digits = 0) => (v == null ? "-" : Number(v).toFixed(digits));
const msText = (v) => (v == null ? "-" : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(0)} ms`);

async function refreshTraffic() {
  const traffic = await api("/api/services/traffic?since=15m");
  const now = Date.now();
  document.getElementById("traffic-gateways").textContent =
    traffic.gateways.length === 0
      ? ""
      : `· ${traffic.gateways
          .map((g) => `${g.gateway} (last report ${Math.max(0, Math.round((now - g.lastReportAt) / 1000))}s ago)`)
          .join(", ")}`;
  // Refused by the gateways themselves (auth, rate limit, size, unknown model): no service to count them under.
  const refused = Object.entries(traffic.rejected).filter(([, v]) => v > 0);
  const rejectedLine = document.getElementById("traffic-rejected");
  rejectedLine.hidden = refused.length === 0;
  rejectedLine.textContent = `refused by the gateways (15 min): ${refused.map(([k, v]) => `${k} ${fmt(v)}`).join(", ")}`;
  document.getElementById("traffic-empty").hidden = traffic.services.length > 0 || refused.length > 0;
  const host = document.getElementById("traffic");
  const seen = new Set();
  for (const s of traffic.services) {
    seen.add(s.service);
    let block = host.querySelector(`[data-traffic-service="${CSS.escape(s.service)}"]`);
    if (!block) {
      block = el(
        "div",
        { class: "traffic-service", "data-traffic-service": s.service },
        el("h3", {}, s.service),
        el("div", { class: "traffic-totals" }),
        el(
          "div",
          { class: "traffic-charts" },
          el("div", { class: "chart-rps", "aria-label": "requests per second" }),
          el("div", { class: "chart-ttft", "aria-label": "time to first token p50 and p99" }),
          el("div", { class: "chart-errors", "aria-label": "errors per second by reason" }),
        ),
      );
      host.append(block);
    }
    // req/s over the last minute (the totals are over the whole 15 minutes).
    const lastMinute = s.points.filter((p) => p.t >= now - 60_000);
    const rps = lastMinute.reduce((n, p) => n + p.requests, 0) / 60;
    drawTrafficTotals(block.querySelector(".traffic-totals"), s.totals, rps);
    drawTrafficCharts(block, s);
  }
  for (const block of [...host.children]) {
    const name = block.getAttribute("data-traffic-service");
    if (!seen.has(name)) {
      for (const c of trafficCharts.get(name) ?? []) c?.destroy();
      trafficCharts.delete(name);
      block.remove();
    }
  }
}

/** The window's totals: requests, req/s, TTFT, failed and cut, failovers, saved, streams caught, errors by reason. */
function drawTrafficTotals(host, t, rps) {
  const item = (key, label, value, title = "") => el("span", { "data-k": key, title }, `${label} `, el("b", {}, value));
  const errors = Object.entries(t.errors)
    .sort(([, a], [, b]) => b - a)
    .map(([k, v]) => `${k} ${fmt(v)}`)
    .join(", ");
  host.replaceChildren(
    item("requests", "requests (15 min)", fmt(t.requests)),
    item("rps", "req/s (last minute)", fmt(rps, 2)),
    item("ttft", "TTFT p50/p99", `${msText(t.ttftP50Ms)} / ${msText(t.ttftP99Ms)}`, "streaming answers"),
    item("failed", "failed", fmt(t.failed), "the client got a 5xx or an answer cut mid-way"),
    item("cut", "streams cut", fmt(t.cut), "broke mid-answer: the client got an in-band error, never a silent cut"),
    item("caught", "caught", fmt(t.caught), "broke before the first byte and answered by another backend"),
    item("saved", "saved by failover", fmt(t.saved), "a backend failed, another answered"),
    item("failovers", "failovers", fmt(t.failovers), "answered by another pool after a failure"),
    item("errors", "errors", errors || "none", "upstream errors by reason"),
  );
}

const errorPalette = ["#c8372d", "#e08a1e", "#8e5bd6", "#5d6b79", "#b5651d", "#2f6fde"];

function drawTrafficCharts(block, s) {
  const xs = s.points.map((p) => p.t / 1000);
  const step = Math.max(1, xs.length > 1 ? xs[1] - xs[0] : 1);
  const reasons = [...new Set(s.points.flatMap((p) => Object.keys(p.errors)))].sort();
  const specs = [
    {
      host: block.querySelector(".chart-rps"),
      title: "requests/s",
      series: [
        { label: "req/s", stroke: "#2f6fde" },
        { label: "failed/s", stroke: "#c8372d" },
      ],
      data: [s.points.map((p) => p.reqPerS), s.points.map((p) => p.failed / step)],
    },
    {
      host: block.querySelector(".chart-ttft"),
      title: "TTFT (ms)",
      series: [
        { label: "p50", stroke: "#1f8a4c" },
        { label: "p99", stroke: "#e08a1e" },
      ],
      data: [s.points.map((p) => p.ttftP50Ms), s.points.map((p) => p.ttftP99Ms)],
    },
    {
      host: block.querySelector(".chart-errors"),
      title: "upstream errors/s by reason",
      series: reasons.map((r, i) => ({ label: r, stroke: errorPalette[i % errorPalette.length] })),
      data: reasons.map((r) => s.points.map((p) => (p.errors[r] ?? 0) / step)),
    },
  ];
  const charts = trafficCharts.get(s.service) ?? [];
  specs.forEach((spec, i) => {
    const data = [xs, ...spec.data];
    const existing = charts[i];
    if (existing && existing.series.length === spec.series.length + 1) {
      existing.setData(data);
      return;
    }
    existing?.destroy();
    charts[i] = new uPlot(
      {
        width: Math.max(240, spec.host.clientWidth),
        height: 180,
        title: spec.title,
        series: [{}, ...spec.series.map((x) => ({ ...x, width: 1.5, spanGaps: true, points: { size: 4 } }))],
        axes: [{}, { size: 50 }],
      },
      data,
      spec.host,
    );
  });
  trafficCharts.set(s.service, charts);
}

/** Requests answered and failed per service and pool, saved by failover per service (the serving ledger's second half). */
function drawRequestsLedger(requests, saved) {
  const table = document.getElementById("requests-ledger");
  table.hidden = requests.length === 0 && saved.length === 0;
  document.getElementById("requests-ledger-note").hidden = table.hidden;
  const savedBy = new Map(saved.map((s) => [s.service, s]));
  const services = [...new Set([...requests.map((r) => r.service), ...savedBy.keys()])];
  const rows = [];
  for (const svc of services) {
    const mine = requests.filter((r) => r.service === svc);
    for (const r of mine) {
      rows.push(
        el(
          "tr",
          { "data-service": svc, "data-pool": r.pool },
          el("td", {}, svc),
          el("td", {}, r.pool),
          el("td", {}, r.answered),
          el("td", { title: `${r.incomplete} cut mid-answer` }, r.failed),
          el("td", {}, ""),
        ),
      );
    }
    const s = savedBy.get(svc);
    rows.push(
      el(
        "tr",
        { "data-service": svc, class: "total" },
        el("td", {}, svc),
        el("td", {}, "all pools"),
        el(
          "td",
          {},
          mine.reduce((n, r) => n + r.answered, 0),
        ),
        el(
          "td",
          {},
          mine.reduce((n, r) => n + r.failed, 0),
        ),
        el(
          "td",
          { title: `retries ${s?.retries ?? 0}, failovers to another pool ${s?.failovers ?? 0}` },
          s?.saved ?? 0,
        ),
      ),
    );
  }
  table.querySelector("tbody").replaceChildren(...rows);
}

async function loop() {
  try {
    await Promise.all([refreshLists(), refreshJob(), refreshServices(), refreshTraffic()]);
  } catch (err) {
    document.getElementById("server").textContent = String(err);
  }
  setTimeout(loop, 2000);
}
void loop();
window.addEventListener("hashchange", () => {
  const id = location.hash.slice(1);
  if (id && id !== selected) select(id, true);
});
