/**
 * One upstream HTTP exchange on undici's dispatch API: no Readable stream and no AbortSignal per request (both cost
 * more CPU than the proxying itself at a few thousand requests per second). Body events that arrive before the
 * consumer is attached are queued, so nothing is lost between the response head and `consume()`.
 */
import type { IncomingHttpHeaders } from "node:http";
import type { Dispatcher } from "undici";

export interface BodySink {
  data(chunk: Buffer): void;
  end(): void;
  error(err: Error): void;
}

export class UpstreamBody {
  private sink: BodySink | undefined;
  /** Events before consume(); allocated only when one comes that early. */
  private queued: Array<{ kind: "data"; chunk: Buffer } | { kind: "end" } | { kind: "error"; err: Error }> | undefined;
  constructor(private readonly call: UpstreamCall) {}

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
    this.call.controller?.pause();
  }

  resume(): void {
    this.call.controller?.resume();
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

/**
 * The call is its own dispatch handler: its methods live on the prototype, so a request allocates no handler object
 * and no closures for undici's callbacks.
 */
export class UpstreamCall implements Dispatcher.DispatchHandler {
  controller: Dispatcher.DispatchController | undefined;
  /** Why the call was aborted (a timeout, the client leaving, ...), if it was. */
  abortReason: Error | undefined;
  readonly response: Promise<UpstreamResponse>;
  private resolve!: (r: UpstreamResponse) => void;
  private reject!: (err: Error) => void;
  private body: UpstreamBody | undefined;

  constructor(dispatcher: Dispatcher, opts: Dispatcher.DispatchOptions) {
    this.response = new Promise<UpstreamResponse>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    dispatcher.dispatch(opts, this);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.abortReason !== undefined) controller.abort(this.abortReason);
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    this.body = new UpstreamBody(this);
    this.resolve({ statusCode, headers, body: this.body });
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.body?.push(chunk);
  }

  onResponseEnd(): void {
    this.body?.finish();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.body === undefined) this.reject(err);
    else this.body.fail(err);
  }

  abort(reason: Error): void {
    if (this.abortReason !== undefined) return;
    this.abortReason = reason;
    this.controller?.abort(reason);
  }
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
