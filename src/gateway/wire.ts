/**
 * The gateway's upstream HTTP/1.1 client: keep-alive connections to one backend, a request written as one string, the
 * answer parsed straight off the socket (status line, headers, then Content-Length, chunked or close-delimited body).
 *
 * Why not undici: measured per proxied request on this project's bench (bench/gateway/cpu.ts, docs/benchmarks.md),
 * undici's dispatch (request validation, its wasm llhttp, pool bookkeeping, a corked writev per request) cost about
 * as much CPU as the whole rest of the gateway; a proxy with this client in its place spent about half. Only what a
 * proxy to an inference engine needs is here: no pipelining, no redirects, no upgrade, no request body streaming (the
 * gateway holds the whole body before it picks a backend). undici still does the cold paths (health probes, metrics).
 *
 * Errors carry a `code`: the socket's own (ECONNREFUSED, ECONNRESET, ...) or one of {@link WireErrorCode}. A request
 * written on a kept-alive connection that the backend closed while it sat idle (the keep-alive race: nothing of an
 * answer came back) is sent again once on a fresh connection; any other failure is the caller's to retry.
 */
import net from "node:net";
import tls from "node:tls";
import { UpstreamBody, type BodyFlow, type UpstreamResponse } from "./upstream.js";

export type WireErrorCode =
  /** No connection within the connect timeout. */
  | "WIRE_CONNECT_TIMEOUT"
  /** The backend closed the connection before its answer was complete. */
  | "WIRE_CLOSED"
  /** The answer is not HTTP/1.x as this client reads it (bad status line, header, chunk size, or too large a head). */
  | "WIRE_PROTOCOL"
  /** A header of the request cannot be sent (a CR, LF or NUL in it, or a character beyond latin1). */
  | "WIRE_BAD_HEADER";

export class WireError extends Error {
  constructor(
    readonly code: WireErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "WireError";
  }
}

export interface WireOptions {
  connectTimeoutMs: number;
  /** An idle connection is closed after this long (or the backend's `Keep-Alive: timeout=N` less a second). */
  keepAliveMs?: number;
  /** For https origins. */
  tls?: { ca?: string | Buffer; rejectUnauthorized?: boolean };
}

/** A response head (status line and headers) larger than this is refused. */
const MAX_HEAD_BYTES = 64 * 1024;
/** Idle connections kept per backend beyond which a finished one is closed. */
const MAX_IDLE = 1024;
/** A request whose head and body together are at most this long goes out as one string (one write). */
const ONE_WRITE_LIMIT = 16 * 1024;
const SWEEP_MS = 1000;
const CRLF2 = Buffer.from("\r\n\r\n");
const BAD_HEADER_VALUE = /[\r\n\0\u0100-\uffff]/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

type BodyMode = "length" | "chunked" | "close" | "none";
const enum Chunk {
  Size,
  Data,
  DataEnd,
  Trailers,
}

/** One request and its answer. The call's promise settles with the head; the body is then consumed from it. */
export class WireCall implements BodyFlow {
  /** Why the call was aborted (a timeout, the client leaving, ...), if it was. */
  abortReason: Error | undefined;
  readonly response: Promise<UpstreamResponse>;
  /** @internal */ resolveHead!: (r: UpstreamResponse) => void;
  /** @internal */ rejectHead!: (err: Error) => void;
  /** @internal */ body: UpstreamBody | undefined;
  /** @internal */ conn: WireConn | undefined;
  /** @internal */ resent = false;
  /** @internal */ settled = false;

  constructor(
    /** @internal */ readonly head: string,
    /** @internal */ readonly payload: Buffer,
    /** @internal */ readonly isHead: boolean,
  ) {
    this.response = new Promise<UpstreamResponse>((resolve, reject) => {
      this.resolveHead = resolve;
      this.rejectHead = reject;
    });
  }

  abort(reason: Error): void {
    if (this.abortReason !== undefined || this.settled) return;
    this.abortReason = reason;
    const conn = this.conn;
    if (conn !== undefined) {
      conn.detach();
      conn.socket.destroy();
    }
    this.fail(reason);
  }

  pause(): void {
    this.conn?.socket.pause();
  }

  resume(): void {
    this.conn?.socket.resume();
  }

  /** @internal The body is whole. */
  finish(): void {
    if (this.settled) return;
    this.settled = true;
    this.body!.finish();
  }

  /** @internal The call ends with an error: before the head (the promise rejects) or in the body. */
  fail(err: Error): void {
    if (this.settled) return;
    this.settled = true;
    if (this.body === undefined) this.rejectHead(err);
    else this.body.fail(err);
  }
}

/** One connection: at most one call on it at a time. */
class WireConn {
  call: WireCall | undefined;
  /** Calls answered on it so far (0: fresh, never proven to work). */
  served = 0;
  idleSince = 0;
  idleLimitMs: number;
  keepAlive = true;
  /** Bytes of the current answer received (0: the backend sent nothing, the keep-alive race applies). */
  received = 0;
  private head: Buffer | undefined;
  private mode: BodyMode = "none";
  private remaining = 0;
  private chunkState = Chunk.Size;
  private line = "";

  constructor(
    readonly pool: WirePool,
    readonly socket: net.Socket,
  ) {
    this.idleLimitMs = pool.keepAliveMs;
    socket.on("data", (d: Buffer) => this.onData(d));
    socket.on("end", () => this.onClose(undefined));
    socket.on("close", () => this.onClose(undefined));
    socket.on("error", (err) => this.onClose(err));
  }

  start(call: WireCall): void {
    this.call = call;
    call.conn = this;
    this.received = 0;
    this.head = undefined;
    this.mode = "none";
    const s = this.socket;
    if (call.head.length + call.payload.length <= ONE_WRITE_LIMIT) {
      s.write(call.payload.length === 0 ? call.head : call.head + call.payload.toString("latin1"), "latin1");
    } else {
      s.cork();
      s.write(call.head, "latin1");
      s.write(call.payload);
      process.nextTick(() => s.uncork());
    }
  }

  private onData(d: Buffer): void {
    const call = this.call;
    if (call === undefined) {
      // Bytes nobody asked for (an idle connection, or after an aborted call): the stream is out of step.
      this.socket.destroy();
      return;
    }
    this.received += d.length;
    let at = 0;
    if (call.body === undefined) {
      const buf: Buffer = this.head === undefined ? d : Buffer.concat([this.head, d]);
      const end = buf.indexOf(CRLF2);
      if (end < 0) {
        if (buf.length > MAX_HEAD_BYTES) this.protocolError(`response head larger than ${MAX_HEAD_BYTES} bytes`);
        else this.head = buf;
        return;
      }
      this.head = undefined;
      const rest = end + 4;
      if (!this.parseHead(call, buf.toString("latin1", 0, end))) {
        // An interim 1xx answer: the real one follows.
        if (rest < buf.length) this.onData(buf.subarray(rest));
        return;
      }
      if (this.call !== call) return;
      d = buf;
      at = rest;
    }
    this.onBody(call, d, at);
  }

  /** Reads a head; false for an interim (1xx) one. Resolves the call's head promise. */
  private parseHead(call: WireCall, text: string): boolean {
    const eol = text.indexOf("\r\n");
    const statusLine = eol < 0 ? text : text.slice(0, eol);
    const m = /^HTTP\/1\.([01]) (\d{3})(?: |$)/.exec(statusLine);
    if (m === null) {
      this.protocolError(`bad status line ${JSON.stringify(statusLine.slice(0, 80))}`);
      return true;
    }
    const statusCode = Number(m[2]);
    const headers: Record<string, string | string[] | undefined> = {};
    if (eol >= 0) {
      for (const line of text.slice(eol + 2).split("\r\n")) {
        const colon = line.indexOf(":");
        const name = colon > 0 ? line.slice(0, colon) : "";
        if (!TOKEN.test(name)) {
          this.protocolError(`bad header line ${JSON.stringify(line.slice(0, 80))}`);
          return true;
        }
        const key = name.toLowerCase();
        const value = line.slice(colon + 1).trim();
        const had = headers[key];
        if (had === undefined) headers[key] = key === "set-cookie" ? [value] : value;
        else if (Array.isArray(had)) had.push(value);
        else headers[key] = [had, value];
      }
    }
    if (statusCode >= 100 && statusCode < 200) {
      if (statusCode === 101)
        this.protocolError("the backend switched protocols (101), which a proxied call never asks for");
      return statusCode === 101;
    }
    const connection = String(headers.connection ?? "").toLowerCase();
    this.keepAlive = m[1] === "1" ? !connection.includes("close") : connection.includes("keep-alive");
    const ka = headers["keep-alive"];
    if (typeof ka === "string") {
      const t = /timeout=(\d+)/i.exec(ka);
      if (t !== null) this.idleLimitMs = Math.min(this.pool.keepAliveMs, Math.max(0, Number(t[1]) * 1000 - 1000));
    }
    const te = headers["transfer-encoding"];
    const cl = headers["content-length"];
    if (call.isHead || statusCode === 204 || statusCode === 304) {
      this.mode = "none";
    } else if (te !== undefined) {
      const codings = String(te).toLowerCase().split(",");
      if (codings[codings.length - 1]!.trim() === "chunked") {
        this.mode = "chunked";
        this.chunkState = Chunk.Size;
        this.line = "";
      } else {
        this.mode = "close";
      }
      // A length beside a transfer coding is ignored (RFC 9112 6.3), and the connection is not reused after it.
      if (cl !== undefined) this.keepAlive = false;
    } else if (cl !== undefined) {
      const values = Array.isArray(cl) ? cl : String(cl).split(",");
      const n = values[0]!.trim();
      if (!/^\d{1,15}$/.test(n) || values.some((v) => v.trim() !== n)) {
        this.protocolError(`bad content-length ${JSON.stringify(String(cl).slice(0, 40))}`);
        return true;
      }
      this.remaining = Number(n);
      this.mode = this.remaining === 0 ? "none" : "length";
    } else {
      this.mode = "close";
    }
    if (this.mode === "close") this.keepAlive = false;
    call.body = new UpstreamBody(call);
    call.resolveHead({ statusCode, headers, body: call.body });
    if (this.mode === "none") this.complete(call);
    return true;
  }

  private onBody(call: WireCall, d: Buffer, at: number): void {
    const body = call.body!;
    switch (this.mode) {
      case "none":
        if (at < d.length) this.protocolError("bytes after the end of the answer");
        return;
      case "close":
        if (at < d.length) body.push(at === 0 ? d : d.subarray(at));
        return;
      case "length": {
        const left = d.length - at;
        if (left <= 0) return;
        if (left > this.remaining) {
          this.protocolError("more bytes than the answer's content-length");
          return;
        }
        this.remaining -= left;
        body.push(at === 0 ? d : d.subarray(at));
        if (this.remaining === 0) this.complete(call);
        return;
      }
      case "chunked":
        this.onChunked(call, body, d, at);
        return;
    }
  }

  private onChunked(call: WireCall, body: UpstreamBody, d: Buffer, at: number): void {
    while (at < d.length && this.call === call) {
      switch (this.chunkState) {
        case Chunk.Size:
        case Chunk.Trailers: {
          const nl = d.indexOf(10, at);
          const part = d.toString("latin1", at, nl < 0 ? d.length : nl);
          if (this.line.length + part.length > 4096) {
            this.protocolError("chunk size or trailer line longer than 4096 bytes");
            return;
          }
          this.line += part;
          if (nl < 0) return;
          at = nl + 1;
          const line = this.line.endsWith("\r") ? this.line.slice(0, -1) : this.line;
          this.line = "";
          if (this.chunkState === Chunk.Trailers) {
            if (line === "") {
              if (at < d.length) {
                this.protocolError("bytes after the end of the answer");
                return;
              }
              this.complete(call);
              return;
            }
            continue;
          }
          const semi = line.indexOf(";");
          const hex = (semi < 0 ? line : line.slice(0, semi)).trim();
          if (!/^[0-9a-fA-F]{1,12}$/.test(hex)) {
            this.protocolError(`bad chunk size ${JSON.stringify(hex.slice(0, 20))}`);
            return;
          }
          this.remaining = parseInt(hex, 16);
          this.chunkState = this.remaining === 0 ? Chunk.Trailers : Chunk.Data;
          break;
        }
        case Chunk.Data: {
          const take = Math.min(this.remaining, d.length - at);
          this.remaining -= take;
          body.push(at === 0 && take === d.length ? d : d.subarray(at, at + take));
          at += take;
          if (this.remaining === 0) this.chunkState = Chunk.DataEnd;
          break;
        }
        case Chunk.DataEnd: {
          // The CRLF after a chunk's data (it may come split across reads).
          const c = d[at]!;
          at++;
          if (c === 10) this.chunkState = Chunk.Size;
          else if (c !== 13) {
            this.protocolError("chunk data not followed by CRLF");
            return;
          }
          break;
        }
      }
    }
  }

  /** The answer is whole: the connection goes back to the pool (or closes), then the body ends. */
  private complete(call: WireCall): void {
    this.detach();
    this.served++;
    this.pool.release(this);
    call.finish();
  }

  /** Unlinks the current call from this connection; returns it. */
  detach(): WireCall | undefined {
    const call = this.call;
    this.call = undefined;
    if (call !== undefined) call.conn = undefined;
    return call;
  }

  private protocolError(message: string): void {
    const call = this.detach();
    this.socket.destroy();
    call?.fail(new WireError("WIRE_PROTOCOL", `${this.pool.origin}: ${message}`));
  }

  private onClose(err: Error | undefined): void {
    this.pool.forget(this);
    const call = this.detach();
    if (call === undefined) return;
    if (!this.socket.destroyed) this.socket.destroy();
    if (this.mode === "close" && call.body !== undefined && err === undefined) {
      call.finish();
      return;
    }
    if (this.received === 0 && this.served > 0 && !call.resent && call.abortReason === undefined) {
      // The keep-alive race: the backend closed this idle connection as the request went out. Nothing came back, so
      // nothing of the answer is lost: send it once more on a fresh connection.
      call.resent = true;
      this.pool.connectFor(call);
      return;
    }
    call.fail(err ?? new WireError("WIRE_CLOSED", `${this.pool.origin}: the backend closed the connection mid-answer`));
  }
}

/** Keep-alive connections to one origin (scheme, host and port), no cap on how many are open at once. */
export class WirePool {
  readonly keepAliveMs: number;
  private readonly idle: WireConn[] = [];
  private readonly conns = new Set<WireConn>();
  private readonly host: string;
  private readonly port: number;
  private readonly hostHeader: string;
  private readonly secure: boolean;
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly origin: string,
    private readonly opts: WireOptions,
  ) {
    const u = new URL(origin);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error(`${origin}: not an http(s) URL`);
    this.secure = u.protocol === "https:";
    this.host = u.hostname.startsWith("[") ? u.hostname.slice(1, -1) : u.hostname;
    this.port = u.port === "" ? (this.secure ? 443 : 80) : Number(u.port);
    this.hostHeader = u.host;
    this.keepAliveMs = opts.keepAliveMs ?? 30_000;
  }

  /** Open connections (busy and idle). */
  get size(): number {
    return this.conns.size;
  }

  /** Sends one request; the body is sent with a content-length. Header names and values are checked, not trusted. */
  request(method: string, path: string, headers: Record<string, string | string[]>, body: Buffer): WireCall {
    let head = `${method} ${path} HTTP/1.1\r\nhost: ${this.hostHeader}\r\n`;
    let bad: string | undefined;
    for (const name in headers) {
      const v = headers[name]!;
      if (!TOKEN.test(name)) bad ??= name;
      if (typeof v === "string") {
        if (BAD_HEADER_VALUE.test(v)) bad ??= name;
        head += `${name}: ${v}\r\n`;
      } else {
        for (const one of v) {
          if (BAD_HEADER_VALUE.test(one)) bad ??= name;
          head += `${name}: ${one}\r\n`;
        }
      }
    }
    head += `content-length: ${body.length}\r\n\r\n`;
    const call = new WireCall(head, body, method === "HEAD");
    if (bad !== undefined || /[\s\0]/.test(path)) {
      call.fail(
        new WireError(
          "WIRE_BAD_HEADER",
          bad !== undefined ? `request header ${JSON.stringify(bad)} cannot be sent` : "request path cannot be sent",
        ),
      );
      return call;
    }
    if (this.closed) {
      call.fail(new WireError("WIRE_CLOSED", `${this.origin}: the pool is closed`));
      return call;
    }
    const conn = this.idle.pop();
    if (conn !== undefined) conn.start(call);
    else this.connectFor(call);
    return call;
  }

  /** @internal Opens a fresh connection for a call. */
  connectFor(call: WireCall): void {
    if (call.abortReason !== undefined) return;
    const socket = this.secure
      ? tls.connect({
          host: this.host,
          port: this.port,
          ...(net.isIP(this.host) === 0 && { servername: this.host }),
          ALPNProtocols: ["http/1.1"],
          ...(this.opts.tls?.ca !== undefined && { ca: this.opts.tls.ca }),
          ...(this.opts.tls?.rejectUnauthorized === false && { rejectUnauthorized: false }),
        })
      : net.connect({ host: this.host, port: this.port });
    socket.setNoDelay(true);
    const conn = new WireConn(this, socket);
    this.conns.add(conn);
    conn.call = call;
    call.conn = conn;
    const timer = setTimeout(() => {
      socket.destroy(
        new WireError("WIRE_CONNECT_TIMEOUT", `${this.origin}: no connection within ${this.opts.connectTimeoutMs} ms`),
      );
    }, this.opts.connectTimeoutMs);
    socket.once(this.secure ? "secureConnect" : "connect", () => {
      clearTimeout(timer);
      if (conn.call === call) conn.start(call);
    });
    socket.once("close", () => clearTimeout(timer));
  }

  /** @internal A connection whose answer is complete: kept for the next call, or closed. */
  release(conn: WireConn): void {
    if (this.closed || !conn.keepAlive || conn.idleLimitMs <= 0 || this.idle.length >= MAX_IDLE) {
      this.forget(conn);
      conn.socket.destroy();
      return;
    }
    conn.idleSince = Date.now();
    this.idle.push(conn);
    if (this.sweeper === undefined) {
      this.sweeper = setInterval(() => this.sweep(), SWEEP_MS);
      this.sweeper.unref();
    }
  }

  /** @internal A connection that closed or will: out of the idle list and the open set. */
  forget(conn: WireConn): void {
    this.conns.delete(conn);
    const i = this.idle.lastIndexOf(conn);
    if (i >= 0) this.idle.splice(i, 1);
  }

  private sweep(): void {
    const now = Date.now();
    for (const conn of this.idle.filter((c) => now - c.idleSince >= c.idleLimitMs)) {
      this.forget(conn);
      conn.socket.destroy();
    }
    if (this.idle.length === 0 && this.sweeper !== undefined) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  /** No new calls; idle connections close now, busy ones when their answer is complete. */
  close(): void {
    this.closed = true;
    for (const conn of this.idle.splice(0)) {
      this.conns.delete(conn);
      conn.socket.destroy();
    }
    if (this.sweeper !== undefined) clearInterval(this.sweeper);
    this.sweeper = undefined;
  }

  /** Every connection closes now; calls in flight fail. */
  destroy(): void {
    this.close();
    for (const conn of [...this.conns]) conn.socket.destroy();
    this.conns.clear();
  }
}
