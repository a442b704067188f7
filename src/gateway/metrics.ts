/** Prometheus metrics of the gateway, in a registry of its own (never the global one). */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { BackendState, type Backend } from "./backends.js";

const latencyBuckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export class GatewayMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<"service" | "backend" | "status" | "result">;
  readonly errors: Counter<"service" | "backend" | "reason">;
  readonly retries: Counter<"service" | "reason">;
  readonly failovers: Counter<"service" | "from_pool" | "to_pool">;
  readonly spillovers: Counter<"service" | "to_pool">;
  readonly saved: Counter<"service" | "stream">;
  readonly ttft: Histogram<"backend">;
  readonly latency: Histogram<"backend">;
  readonly rejected: Counter<"reason">;

  constructor(backends: () => Iterable<Backend>) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: "switchyard_gateway_requests_total",
      help:
        "Requests answered, by service, the backend that answered (or 'none'), the HTTP status sent to the client, " +
        "and result: complete, incomplete (the answer broke off after it started: cut, stall, truncated, shutdown) " +
        "or client_closed",
      labelNames: ["service", "backend", "status", "result"],
      registers,
    });
    this.errors = new Counter({
      name: "switchyard_gateway_upstream_errors_total",
      help:
        "Failed upstream attempts by reason (connect, status_5xx, status_429, ttft_timeout, timeout, stall, cut, " +
        "truncated, ...), before the first byte reached the client (then retried) or after it (mid-answer)",
      labelNames: ["service", "backend", "reason"],
      registers,
    });
    this.retries = new Counter({
      name: "switchyard_gateway_retries_total",
      help: "Attempts retried on another backend before the first byte reached the client",
      labelNames: ["service", "reason"],
      registers,
    });
    this.failovers = new Counter({
      name: "switchyard_gateway_failovers_total",
      help: "Requests answered by a pool other than the one first tried, after a failure",
      labelNames: ["service", "from_pool", "to_pool"],
      registers,
    });
    this.spillovers = new Counter({
      name: "switchyard_gateway_spillovers_total",
      help: "Requests sent to a lower-priority pool because every better pool was saturated",
      labelNames: ["service", "to_pool"],
      registers,
    });
    this.saved = new Counter({
      name: "switchyard_gateway_saved_total",
      help:
        "Requests saved by failover: at least one attempt failed before the first byte reached the client and another " +
        "backend then answered the whole of it (status < 500); stream=true ones are the streams caught",
      labelNames: ["service", "stream"],
      registers,
    });
    this.rejected = new Counter({
      name: "switchyard_gateway_rejected_total",
      help: "Requests refused by the gateway itself (auth, rate limit, size, unknown model, bad request)",
      labelNames: ["reason"],
      registers,
    });
    this.ttft = new Histogram({
      name: "switchyard_gateway_ttft_seconds",
      help: "Time from request to the first byte sent to the client, per backend",
      labelNames: ["backend"],
      buckets: latencyBuckets,
      registers,
    });
    this.latency = new Histogram({
      name: "switchyard_gateway_request_duration_seconds",
      help: "Time from request to the end of the answer, per backend",
      labelNames: ["backend"],
      buckets: latencyBuckets,
      registers,
    });
    const states = Object.values(BackendState);
    new Gauge({
      name: "switchyard_gateway_backend_state",
      help: "1 for the backend's current state (healthy, half-open, ejected, down, draining)",
      labelNames: ["backend", "service", "pool", "state"],
      registers,
      // Gateway workers (`--workers N`) mirror one state: summed over workers it would read N.
      aggregator: "max",
      collect() {
        this.reset();
        const now = Date.now();
        for (const b of backends()) {
          const current = b.state(now);
          for (const s of states)
            this.set({ backend: b.id, service: b.service, pool: b.pool.name, state: s }, s === current ? 1 : 0);
        }
      },
    });
    new Gauge({
      name: "switchyard_gateway_backend_in_flight",
      help: "Requests in flight to the backend through this gateway",
      labelNames: ["backend"],
      registers,
      collect() {
        this.reset();
        for (const b of backends()) this.set({ backend: b.id }, b.inFlight);
      },
    });
    new Gauge({
      name: "switchyard_gateway_backend_queue_waiting",
      help: "Requests waiting in the engine's own queue, from its metrics (0 where the engine reports none)",
      labelNames: ["backend"],
      registers,
      aggregator: "max",
      collect() {
        this.reset();
        for (const b of backends()) this.set({ backend: b.id }, b.waiting);
      },
    });
  }
}
