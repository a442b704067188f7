/** Test harness: a gateway bound to 127.0.0.1 in front of fixture backends, plus raw HTTP helpers. */
import { request } from "undici";
import { Writable } from "node:stream";
import { pino } from "pino";
import { compileServices, type GatewaySettings } from "../config.js";
import { Gateway, type GatewayOptions } from "../gateway.js";
import { listenGateway, type ListeningGateway } from "../server.js";
import type { FixtureBackend } from "./fixture-backend.js";

export interface Harness {
  gateway: Gateway;
  http: ListeningGateway;
  url: string;
  logs: string[];
  close(): Promise<void>;
}

/** pools: pool name -> fixtures, in priority order. */
export async function startHarness(
  pools: Record<string, FixtureBackend[]>,
  settings: Partial<GatewaySettings> = {},
  opts: Omit<GatewayOptions, "settings" | "logger"> & {
    model?: string;
    aliases?: string[];
    queueThreshold?: number;
    /** Fixture name -> the model name it serves (servedModel in services YAML). */
    servedModels?: Record<string, string>;
  } = {},
): Promise<Harness> {
  const model = opts.model ?? "m";
  const config = compileServices({
    gateway: {},
    services: [
      {
        model,
        aliases: opts.aliases ?? [],
        pools: Object.entries(pools).map(([name, fixtures]) => ({
          name,
          ...(opts.queueThreshold !== undefined && { queueThreshold: opts.queueThreshold }),
          backends: fixtures.map((f) => ({
            id: f.name,
            url: f.url,
            engine: "vllm" as const,
            ...(opts.servedModels?.[f.name] !== undefined && { servedModel: opts.servedModels[f.name] }),
          })),
        })),
      },
    ],
  });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(chunk.toString("utf8"));
      cb();
    },
  });
  const gateway = new Gateway(config, { ...opts, settings, logger: pino({ level: "info" }, sink) });
  const http = await listenGateway(gateway, { host: "127.0.0.1", port: 0 });
  return {
    gateway,
    http,
    url: http.url,
    logs,
    close: async () => {
      await http.close();
      await gateway.close();
    },
  };
}

export interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** The connection broke before the answer was complete. */
  broken: boolean;
}

export async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<RawAnswer> {
  const res = await request(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  let text = "";
  let broken = false;
  try {
    for await (const chunk of res.body) text += (chunk as Buffer).toString("utf8");
  } catch {
    broken = true;
  }
  return { status: res.statusCode, headers: res.headers, body: text, broken };
}

export const chat = (model = "m", stream = false, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  model,
  stream,
  messages: [{ role: "user", content: "hi" }],
  ...extra,
});

/** Waits until the gateway has nothing in flight (finally blocks run just after the client sees the end). */
export async function settled(gateway: Gateway, timeoutMs = 2000): Promise<number> {
  const until = Date.now() + timeoutMs;
  while (gateway.inFlight() !== 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
  return gateway.inFlight();
}
