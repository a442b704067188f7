/**
 * The gateway's access log in JSON mode: one pino-shaped line per request (`{"level":30,"time":...,"pid":...,
 * "hostname":...,<record>,"msg":"request"}`), gathered in memory and written in batches, as nginx's
 * `access_log ... buffer=32k flush=...` does.
 *
 * Why not the pino logger the rest of the gateway uses: measured in bench/gateway/cpu.ts, pino with its asynchronous
 * destination cost about 5 us a line in isolation and far more inside the proxy (a threadpool write and its completion
 * every 8 KiB, the largest batch sonic-boom allows), against under 1 us for JSON.stringify into a batch. Warnings and
 * errors still go through pino; only the per-request line, the one written at tens of thousands a second, comes here.
 *
 * Writes never block the event loop: one asynchronous write at a time. To a pipe or socket (`| jq`, a log shipper)
 * every write is at most PIPE_BUF (4 KiB) and ends on a line end, so the lines of several gateway workers sharing the
 * pipe never interleave mid-line. A reader that stops reading cannot grow memory without bound: past `maxPendingBytes`
 * lines are dropped and counted, and the count is reported in the next line written.
 */
import { fstatSync, write, writeSync } from "node:fs";
import { hostname } from "node:os";

const PIPE_BUF = 4096;

export interface AccessLogOptions {
  /** Write when this much is gathered (default 32 KiB)... */
  flushBytes?: number;
  /** ...or this long after the first line of a batch (default 250 ms). */
  flushMs?: number;
  /** Lines beyond this much waiting (a reader that stopped) are dropped and counted (default 8 MiB). */
  maxPendingBytes?: number;
  /** Fields on every line after pid and hostname (a worker's slot). */
  bindings?: Record<string, unknown>;
}

export class AccessLog {
  private pending = "";
  /** Bytes of a write that went out only in part (or got EAGAIN): written first next time. */
  private carry: Buffer | undefined;
  private writing = false;
  private dropped = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly prefix: string;
  private readonly pipe: boolean;
  private readonly flushBytes: number;
  private readonly flushMs: number;
  private readonly maxPendingBytes: number;
  private readonly onExit = (): void => this.flushSync();

  constructor(
    private readonly fd: number,
    opts: AccessLogOptions = {},
  ) {
    const base = JSON.stringify({ pid: process.pid, hostname: hostname(), ...opts.bindings });
    this.prefix = `,${base.slice(1, -1)},`;
    let pipe = true;
    try {
      const st = fstatSync(fd);
      pipe = !st.isFile() && !st.isCharacterDevice();
    } catch {
      // Unknown: treat it as a pipe (the careful choice).
    }
    this.pipe = pipe;
    this.flushBytes = opts.flushBytes ?? 32 * 1024;
    this.flushMs = opts.flushMs ?? 250;
    this.maxPendingBytes = opts.maxPendingBytes ?? 8 * 1024 * 1024;
    process.on("exit", this.onExit);
  }

  /** One request's line. `rec` holds plain JSON values. */
  request(rec: Record<string, unknown>): void {
    if (this.pending.length >= this.maxPendingBytes) {
      this.dropped++;
      return;
    }
    let body = JSON.stringify(rec);
    if (this.dropped > 0) {
      body = `${body.slice(0, -1)},"droppedBefore":${this.dropped}}`;
      this.dropped = 0;
    }
    this.pending += `{"level":30,"time":${Date.now()}${this.prefix}${body.length > 2 ? `${body.slice(1, -1)},` : ""}"msg":"request"}\n`;
    if (this.pending.length >= this.flushBytes) this.flush();
    else if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.flush();
      }, this.flushMs);
      this.timer.unref();
    }
  }

  /** Starts writing what is gathered, unless a write is in progress (then it follows that one). */
  flush(): void {
    if (this.writing) return;
    let bytes = this.carry;
    this.carry = undefined;
    if (bytes === undefined) {
      if (this.pending.length === 0) return;
      const chunk = this.pipe ? pipeChunk(this.pending) : this.pending;
      this.pending = this.pending.slice(chunk.length);
      bytes = Buffer.from(chunk, "utf8");
    }
    this.writing = true;
    const out = bytes;
    write(this.fd, out, 0, out.length, null, (err, written) => {
      this.writing = false;
      if (err === null && written < out.length) {
        this.carry = out.subarray(written);
        this.flush();
      } else if (err?.code === "EAGAIN") {
        // A full non-blocking pipe: try the same bytes again shortly.
        this.carry = out;
        setTimeout(() => this.flush(), 10).unref();
      } else {
        // The log's reader is gone (EPIPE) or the disk is full: these lines are lost, the gateway goes on.
        if (err !== null) this.dropped += countLines(out);
        // What gathered meanwhile: written now if a batch is full or no timer will come for it.
        if (this.pending.length >= this.flushBytes || (this.pending.length > 0 && this.timer === undefined))
          this.flush();
      }
    });
  }

  /** Writes everything gathered now (at exit and when the gateway stops). */
  flushSync(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const parts: Buffer[] = [];
    if (this.carry !== undefined) parts.push(this.carry);
    this.carry = undefined;
    let rest = this.pending;
    this.pending = "";
    while (rest.length > 0) {
      const chunk = this.pipe ? pipeChunk(rest) : rest;
      parts.push(Buffer.from(chunk, "utf8"));
      rest = rest.slice(chunk.length);
    }
    for (let part of parts) {
      for (let tries = 0; part.length > 0 && tries < 1000; tries++) {
        try {
          part = part.subarray(writeSync(this.fd, part));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EAGAIN") return;
        }
      }
    }
  }

  close(): void {
    this.flushSync();
    process.removeListener("exit", this.onExit);
  }
}

/** The head of `text` to write to a pipe: at most PIPE_BUF bytes, ending on a line end (a longer line goes alone). */
export function pipeChunk(text: string): string {
  if (text.length <= PIPE_BUF / 3 || (text.length <= PIPE_BUF && Buffer.byteLength(text) <= PIPE_BUF)) return text;
  let end = 0;
  let bytes = 0;
  for (;;) {
    const nl = text.indexOf("\n", end);
    if (nl < 0) return end === 0 ? text : text.slice(0, end);
    const lineBytes = Buffer.byteLength(text.slice(end, nl + 1));
    if (end > 0 && bytes + lineBytes > PIPE_BUF) return text.slice(0, end);
    bytes += lineBytes;
    end = nl + 1;
  }
}

function countLines(b: Buffer): number {
  let n = 0;
  for (let i = b.indexOf(10); i >= 0; i = b.indexOf(10, i + 1)) n++;
  return n;
}
