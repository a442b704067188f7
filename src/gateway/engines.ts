/**
 * Engine adapters: how to ask each model server whether it is ready and how full its queue is, with cheap probes only
 * (never a real completion). See shared/GATEWAY.md for where each engine exposes what.
 */
import type { EngineKind } from "./config.js";

/** Sums every sample of each metric name in Prometheus text format (label sets are added together). */
export function parsePrometheusText(text: string): Map<string, number> {
  const sums = new Map<string, number>();
  for (const rawLine of text.split("\n")) {
    const line = rawLine.trim();
    if (line === "" || line.startsWith("#")) continue;
    let nameEnd = line.indexOf("{");
    let rest: string;
    if (nameEnd >= 0) {
      const close = line.lastIndexOf("}");
      if (close < nameEnd) continue;
      rest = line.slice(close + 1).trim();
    } else {
      nameEnd = line.search(/\s/);
      if (nameEnd < 0) continue;
      rest = line.slice(nameEnd).trim();
    }
    const name = line.slice(0, nameEnd);
    const value = Number(rest.split(/\s+/)[0]);
    if (!Number.isFinite(value)) continue;
    sums.set(name, (sums.get(name) ?? 0) + value);
  }
  return sums;
}

/** What a probe learned. Fields absent when the engine does not report them. */
export interface EngineLoad {
  waiting?: number;
  running?: number;
  cacheUsage?: number;
  failedTotal?: number;
}

export interface HealthVerdict {
  ready: boolean;
  /** Ready, but cannot take more work now (llama.cpp with no free slot). */
  saturated?: boolean;
  detail?: string;
}

export interface EngineAdapter {
  kind: EngineKind;
  /** Path on the backend's own origin for the readiness probe. */
  healthPath: string;
  /** Reads the probe answer. */
  judgeHealth(status: number, body: string): HealthVerdict;
  /** Path on the backend's origin for Prometheus metrics, or undefined when only an explicit metricsUrl works. */
  defaultMetricsPath?: string;
  parseLoad(metrics: Map<string, number>): EngineLoad;
}

const first = (m: Map<string, number>, ...names: string[]): number | undefined => {
  for (const n of names) {
    const v = m.get(n);
    if (v !== undefined) return v;
  }
  return undefined;
};

const defined = (load: EngineLoad): EngineLoad =>
  Object.fromEntries(Object.entries(load).filter(([, v]) => v !== undefined)) as EngineLoad;

const vllmLike = (kind: EngineKind): EngineAdapter => ({
  kind,
  healthPath: "/health",
  judgeHealth: (status) => ({ ready: status === 200 }),
  defaultMetricsPath: "/metrics",
  parseLoad: (m) =>
    defined({
      waiting: first(m, "vllm:num_requests_waiting"),
      running: first(m, "vllm:num_requests_running"),
      cacheUsage: first(m, "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    }),
});

const adapters: Record<EngineKind, EngineAdapter> = {
  vllm: vllmLike("vllm"),
  "vllm-ascend": vllmLike("vllm-ascend"),
  mindie: {
    kind: "mindie",
    // /v2/health/ready answers 200 only when the model is loaded; /health/timed-N exercises inference (not cheap).
    healthPath: "/v2/health/ready",
    judgeHealth: (status) => ({ ready: status === 200 }),
    // Metrics live on the management port only (MIES_SERVICE_MONITOR_MODE=1): needs an explicit metricsUrl.
    parseLoad: (m) =>
      defined({
        waiting: first(m, "num_requests_waiting"),
        running: first(m, "num_requests_running"),
        failedTotal: first(m, "request_failed_total"),
      }),
  },
  llamacpp: {
    kind: "llamacpp",
    healthPath: "/health",
    // 503 means loading, or (older servers) no free slot: the latter is load, not sickness.
    judgeHealth: (status, body) => {
      if (status === 200) return { ready: true };
      if (status === 503 && /no slot/i.test(body)) return { ready: true, saturated: true, detail: "no free slot" };
      return { ready: false, detail: status === 503 ? "loading" : `status ${status}` };
    },
    defaultMetricsPath: "/metrics",
    parseLoad: (m) =>
      defined({
        waiting: first(m, "llamacpp:requests_deferred"),
        running: first(m, "llamacpp:requests_processing"),
        cacheUsage: first(m, "llamacpp:kv_cache_usage_ratio"),
      }),
  },
  "openai-generic": {
    kind: "openai-generic",
    healthPath: "/v1/models",
    judgeHealth: (status) => ({ ready: status === 200 }),
    parseLoad: () => ({}),
  },
};

export function engineAdapter(kind: EngineKind): EngineAdapter {
  return adapters[kind];
}
