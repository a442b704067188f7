/**
 * An upstream answer's body as the gateway reads it (wire.ts parses it off the socket): no Readable stream per
 * request, which costs more CPU than the proxying itself at a few thousand requests per second. Body events that
 * arrive before the consumer is attached are queued, so nothing is lost between the response head and `consume()`.
 */

/** Flow control of the connection a body comes on. */
export interface BodyFlow {
  pause(): void;
  resume(): void;
}

export interface BodySink {
  data(chunk: Buffer): void;
  end(): void;
  error(err: Error): void;
}

export class UpstreamBody {
  private sink: BodySink | undefined;
  /** Events before consume(); allocated only when one comes that early. */
  private queued: Array<{ kind: "data"; chunk: Buffer } | { kind: "end" } | { kind: "error"; err: Error }> | undefined;
  constructor(private readonly flow: BodyFlow) {}

  consume(sink: BodySink): void {
    this.sink = sink;
    const queued = this.queued;
    if (queued === undefined) return;
    this.queued = undefined;
    for (const ev of queued) {
      if (ev.kind === "data") sink.data(ev.chunk);
      else if (ev.kind === "end") sink.end();
      else sink.error(ev.err);
    }
  }

  pause(): void {
    this.flow.pause();
  }

  resume(): void {
    this.flow.resume();
  }

  /** @internal */ push(chunk: Buffer): void {
    if (this.sink !== undefined) this.sink.data(chunk);
    else (this.queued ??= []).push({ kind: "data", chunk });
  }
  /** @internal */ finish(): void {
    if (this.sink !== undefined) this.sink.end();
    else (this.queued ??= []).push({ kind: "end" });
  }
  /** @internal */ fail(err: Error): void {
    if (this.sink !== undefined) this.sink.error(err);
    else (this.queued ??= []).push({ kind: "error", err });
  }
}

export interface UpstreamResponse {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: UpstreamBody;
}

/** Reads a whole body, keeping at most `limit` bytes. */
export function readBodyLimited(body: UpstreamBody, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    body.consume({
      data: (chunk) => {
        if (size + chunk.length <= limit) chunks.push(chunk);
        size += chunk.length;
      },
      end: () => resolve(Buffer.concat(chunks)),
      error: reject,
    });
  });
}
