/**
 * A fake OpenAI-compatible model server (vLLM-style /health and /metrics) that can misbehave on demand: refuse
 * connections, answer 500 or 429, stall before the first byte or mid-stream, cut a stream, or answer slowly.
 * Used by the gateway tests and the gateway benchmark.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

export type FixtureFault =
  | "none"
  | "refuse"
  | "status500"
  | "status429"
  | "stallBeforeFirstByte"
  | "stallAfterHeaders"
  | "stallMidStream"
  | "cutMidStream"
  | "endWithoutDone"
  | "cutMidBody"
  | "unhealthy";

export interface FixtureBehaviour {
  fault: FixtureFault;
  /** Stream events sent before a mid-stream fault (and the number of content chunks otherwise). */
  chunks: number;
  /** Delay between stream chunks, ms (slow answers). */
  chunkDelayMs: number;
  /** Delay before the answer starts, ms. */
  firstByteDelayMs: number;
  /** Seconds for the Retry-After header of a 429. */
  retryAfterS: number;
  /** Reported as vllm:num_requests_waiting. */
  waiting: number;
  /** API key the fixture requires (Authorization: Bearer), if any. */
  requireKey?: string;
  /** Bytes of padding per content chunk (bench: realistic chunk sizes). */
  padding: number;
  /** Keep a record of each request (tests); off for benchmarks, where it would grow without bound. */
  record: boolean;
  /**
   * A streaming answer given verbatim: each string is written as one chunk (chunkDelayMs apart), then the answer
   * ends. Replaces the generated events, so tests can send any byte sequence (line ends, splits, odd [DONE] forms).
   */
  rawStream?: string[];
  /** usage.total_tokens reported by answers (default: chunks + 1). */
  usageTotal?: number;
  /** Streaming chat/completions: a final usage chunk before [DONE] (as with stream_options.include_usage). */
  streamUsage?: boolean;
}

export interface FixtureRequestRecord {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

const defaults: FixtureBehaviour = {
  fault: "none",
  chunks: 3,
  chunkDelayMs: 0,
  firstByteDelayMs: 0,
  retryAfterS: 1,
  waiting: 0,
  padding: 0,
  record: true,
};

export class FixtureBackend {
  behaviour: FixtureBehaviour = { ...defaults };
  /** Completion/embedding requests received, including failed ones. */
  requests: FixtureRequestRecord[] = [];
  running = 0;
  private server: Server;
  private sockets = new Set<Socket>();
  private timers = new Set<NodeJS.Timeout>();
  private listening = false;
  port = 0;

  private constructor(readonly name: string) {
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.keepAliveTimeout = 60_000;
    this.server.on("connection", (s: Socket) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
  }

  static async start(name: string, behaviour: Partial<FixtureBehaviour> = {}, port = 0): Promise<FixtureBackend> {
    const f = new FixtureBackend(name);
    f.behaviour = { ...defaults, ...behaviour };
    f.port = port;
    await f.listen();
    if (f.behaviour.fault === "refuse") await f.stopListening();
    return f;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get completions(): number {
    return this.requests.length;
  }

  /** Changes behaviour; "refuse" closes the port (connections are refused), anything else reopens it. */
  async set(behaviour: Partial<FixtureBehaviour>): Promise<void> {
    this.behaviour = { ...this.behaviour, ...behaviour };
    if (this.behaviour.fault === "refuse") await this.stopListening();
    else if (!this.listening) await this.listen();
  }

  async reset(): Promise<void> {
    this.behaviour = { ...defaults };
    await this.set({});
    this.requests = [];
  }

  private listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(this.port, "127.0.0.1", () => {
        this.server.off("error", reject);
        this.port = (this.server.address() as AddressInfo).port;
        this.listening = true;
        resolve();
      });
    });
  }

  private stopListening(): Promise<void> {
    if (!this.listening) return Promise.resolve();
    this.listening = false;
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
    });
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.stopListening();
  }

  private later(ms: number, fn: () => void): void {
    if (ms <= 0) {
      fn();
      return;
    }
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => this.answer(req, res, Buffer.concat(chunks)));
  }

  private answer(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    const b = this.behaviour;
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    const json = (status: number, value: unknown, headers: Record<string, string> = {}): void => {
      const text = JSON.stringify(value);
      res.writeHead(status, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(text),
        ...headers,
      });
      res.end(text);
    };
    if (b.requireKey !== undefined && req.headers.authorization !== `Bearer ${b.requireKey}`) {
      json(401, { error: { message: "bad key", type: "auth" } });
      return;
    }
    if (req.method === "GET" && path === "/health") {
      res.writeHead(b.fault === "unhealthy" ? 503 : 200).end();
      return;
    }
    if (req.method === "GET" && path === "/metrics") {
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4" });
      res.end(
        [
          "# HELP vllm:num_requests_running Number of requests in model execution batches.",
          "# TYPE vllm:num_requests_running gauge",
          `vllm:num_requests_running{model_name="fixture"} ${this.running}`,
          "# TYPE vllm:num_requests_waiting gauge",
          `vllm:num_requests_waiting{model_name="fixture"} ${b.waiting}`,
          `vllm:kv_cache_usage_perc{model_name="fixture"} 0.25`,
          "",
        ].join("\n"),
      );
      return;
    }
    if (req.method === "GET" && path === "/v1/models") {
      json(200, { object: "list", data: [{ id: "fixture", object: "model", owned_by: this.name }] });
      return;
    }
    if (
      req.method !== "POST" ||
      !["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"].includes(path)
    ) {
      json(404, { error: { message: `no route ${path}` } });
      return;
    }
    if (b.record) this.requests.push({ method: req.method, path, headers: { ...req.headers }, body });
    switch (b.fault) {
      case "status500":
        json(500, { error: { message: `${this.name} exploded`, type: "internal" } });
        return;
      case "status429":
        json(
          429,
          { error: { message: `${this.name} is busy`, type: "rate_limit" } },
          { "retry-after": String(b.retryAfterS) },
        );
        return;
      case "stallBeforeFirstByte":
        return; // accepts and never answers; the socket closes when the client gives up
      default:
        break;
    }
    let parsed: { stream?: boolean; model?: string; encoding_format?: string } = {};
    try {
      parsed = JSON.parse(body.toString("utf8")) as typeof parsed;
    } catch {
      json(400, { error: { message: "bad json" } });
      return;
    }
    this.running++;
    let counted = true;
    const done = (): void => {
      if (counted) this.running--;
      counted = false;
    };
    res.on("close", done);
    this.later(b.firstByteDelayMs, () => {
      if (res.destroyed) return;
      if (path === "/v1/embeddings") {
        json(200, {
          object: "list",
          data: [
            {
              object: "embedding",
              index: 0,
              embedding:
                parsed.encoding_format === "base64"
                  ? Buffer.from(new Float32Array([0.5, 0.25, 0.125]).buffer).toString("base64")
                  : [0.5, 0.25, 0.125],
            },
          ],
          model: parsed.model,
          usage: { prompt_tokens: 1, total_tokens: 1 },
          fixture_backend: this.name,
        });
        return;
      }
      if (parsed.stream === true) this.stream(req, res, path, parsed.model ?? "fixture");
      else this.complete(res, path, parsed.model ?? "fixture");
    });
  }

  private text(i: number): string {
    return `${this.name}-tok${i} ${"x".repeat(this.behaviour.padding)}`;
  }

  private complete(res: ServerResponse, path: string, model: string): void {
    const b = this.behaviour;
    const content = Array.from({ length: b.chunks }, (_, i) => this.text(i)).join("");
    const chat = path === "/v1/chat/completions";
    const total = b.usageTotal ?? b.chunks + 1;
    const value =
      path === "/v1/responses"
        ? this.responseObject(model, content, "completed")
        : {
            id: `cmpl-${this.name}`,
            object: chat ? "chat.completion" : "text_completion",
            created: 1,
            model,
            choices: [
              chat
                ? { index: 0, message: { role: "assistant", content }, finish_reason: "stop" }
                : { index: 0, text: content, finish_reason: "stop" },
            ],
            usage: { prompt_tokens: 1, completion_tokens: total - 1, total_tokens: total },
            fixture_backend: this.name,
            unknown_field_kept: { nested: [1, 2, 3] },
          };
    const text = JSON.stringify(value);
    if (b.fault === "cutMidBody") {
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.write(text.slice(0, Math.floor(text.length / 2)));
      this.later(5, () => res.socket?.destroy());
      return;
    }
    if (b.fault === "stallAfterHeaders" || b.fault === "stallMidStream") {
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      if (b.fault === "stallMidStream") res.write(text.slice(0, 10));
      return;
    }
    this.later(b.chunkDelayMs * b.chunks, () => {
      if (res.destroyed) return;
      res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.end(text);
    });
  }

  private stream(_req: IncomingMessage, res: ServerResponse, path: string, model: string): void {
    const b = this.behaviour;
    const chat = path === "/v1/chat/completions";
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    if (b.fault === "stallAfterHeaders") return;
    if (b.rawStream !== undefined) {
      const raw = b.rawStream;
      let k = 0;
      const nextRaw = (): void => {
        if (res.destroyed) return;
        if (k === raw.length) {
          res.end();
          return;
        }
        res.write(raw[k++]!);
        this.later(b.chunkDelayMs, nextRaw);
      };
      nextRaw();
      return;
    }
    const responsesApi = path === "/v1/responses";
    const event = (i: number): string => {
      if (responsesApi) {
        return `event: response.output_text.delta\ndata: ${JSON.stringify({
          type: "response.output_text.delta",
          sequence_number: i + 1,
          item_id: "msg_1",
          output_index: 0,
          content_index: 0,
          delta: this.text(i),
        })}\n\n`;
      }
      const choice = chat ? { index: 0, delta: { content: this.text(i) } } : { index: 0, text: this.text(i) };
      return `data: ${JSON.stringify({
        id: `cmpl-${this.name}`,
        object: chat ? "chat.completion.chunk" : "text_completion",
        created: 1,
        model,
        choices: [choice],
        fixture_backend: this.name,
        unknown_field_kept: true,
      })}\n\n`;
    };
    let i = 0;
    if (responsesApi) {
      res.write(
        `event: response.created\ndata: ${JSON.stringify({ type: "response.created", sequence_number: 0, response: this.responseObject(model, "", "in_progress") })}\n\n`,
      );
    }
    const next = (): void => {
      if (res.destroyed) return;
      if (i < b.chunks) {
        const ev = event(i);
        if (i === b.chunks - 1 && b.fault === "cutMidStream") {
          // Half an event, then the connection drops.
          res.write(ev.slice(0, Math.floor(ev.length / 2)));
          this.later(5, () => res.socket?.destroy());
          return;
        }
        res.write(ev);
        i++;
        if (i === b.chunks - 1 && b.fault === "stallMidStream") return; // stays silent forever
        this.later(b.chunkDelayMs, next);
        return;
      }
      if (b.fault === "endWithoutDone") {
        res.end();
        return;
      }
      if (responsesApi) {
        // The Responses API ends with a terminal event, not [DONE].
        const content = Array.from({ length: b.chunks }, (_, k) => this.text(k)).join("");
        res.end(
          `event: response.completed\ndata: ${JSON.stringify({ type: "response.completed", sequence_number: b.chunks + 1, response: this.responseObject(model, content, "completed") })}\n\n`,
        );
        return;
      }
      if (b.streamUsage === true) {
        const total = b.usageTotal ?? b.chunks + 1;
        res.write(
          `data: ${JSON.stringify({ id: `cmpl-${this.name}`, object: chat ? "chat.completion.chunk" : "text_completion", created: 1, model, choices: [], usage: { prompt_tokens: 1, completion_tokens: total - 1, total_tokens: total } })}\n\n`,
        );
      }
      res.end("data: [DONE]\n\n");
    };
    next();
  }

  /** A Responses API object (POST /v1/responses). */
  private responseObject(model: string, text: string, status: "in_progress" | "completed"): Record<string, unknown> {
    const total = this.behaviour.usageTotal ?? this.behaviour.chunks + 1;
    return {
      id: `resp_${this.name}`,
      object: "response",
      created_at: 1,
      status,
      model,
      output:
        status === "completed"
          ? [
              {
                type: "message",
                id: "msg_1",
                status: "completed",
                role: "assistant",
                content: [{ type: "output_text", text, annotations: [] }],
              },
            ]
          : [],
      usage: status === "completed" ? { input_tokens: 1, output_tokens: total - 1, total_tokens: total } : null,
      fixture_backend: this.name,
    };
  }
}
