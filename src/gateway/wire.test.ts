/**
 * wire.ts, the gateway's upstream HTTP/1.1 client, against real sockets: raw `net` servers that answer with exactly
 * the bytes each case needs (split anywhere, closed early, malformed), and node:http and node:https servers for the
 * ordinary cases. Every failure must surface as an error with a code the gateway classifies; none may end a body as
 * if it were complete.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { readBodyLimited } from "./upstream.js";
import { WirePool, type WireError } from "./wire.js";

const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

/** A raw server: `onRequest` gets each whole request head (and its socket) and writes what the case needs. */
async function rawServer(
  onRequest: (socket: net.Socket, head: string, n: number) => void,
): Promise<{ url: string; connections: () => number }> {
  let connections = 0;
  let n = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => undefined);
    let buf = "";
    socket.on("data", (d) => {
      buf += d.toString("latin1");
      for (;;) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buf.slice(0, end);
        const len = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + len) return;
        buf = buf.slice(end + 4 + len);
        onRequest(socket, head, ++n);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  closers.push(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, connections: () => connections };
}

function pool(url: string, keepAliveMs = 30_000): WirePool {
  const p = new WirePool(url, { connectTimeoutMs: 2000, keepAliveMs });
  closers.push(() => p.destroy());
  return p;
}

async function send(p: WirePool, body = "{}", headers: Record<string, string | string[]> = {}) {
  const call = p.request(
    "POST",
    "/v1/chat/completions",
    { "content-type": "application/json", ...headers },
    Buffer.from(body),
  );
  const res = await call.response;
  const text = (await readBodyLimited(res.body, 1 << 20)).toString("utf8");
  return { status: res.statusCode, headers: res.headers, text };
}

async function failure(promise: Promise<unknown>): Promise<WireError> {
  try {
    await promise;
  } catch (err) {
    return err as WireError;
  }
  throw new Error("expected a failure");
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("wire: answers", () => {
  it("reads a content-length answer and reuses the connection for the next call", async () => {
    const seen: string[] = [];
    const srv = http.createServer((req, res) => {
      let body = "";
      req.on("data", (d: Buffer) => (body += d.toString()));
      req.on("end", () => {
        seen.push(`${req.method} ${req.url} ${req.headers.host} ${req.headers["x-extra"]} ${body}`);
        res.setHeader("set-cookie", "a=1");
        res.setHeader("x-dup", ["1", "2"]);
        res.end(JSON.stringify({ echo: body }));
      });
    });
    let connections = 0;
    srv.on("connection", () => connections++);
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    closers.push(() => srv.close());
    srv.keepAliveTimeout = 5000;
    const url = `http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`;
    const p = pool(url);
    const a = await send(p, '{"n":1}', { "x-extra": "yes" });
    const b = await send(p, '{"n":2}', { "x-extra": ["one", "two"] });
    expect(a).toMatchObject({ status: 200, text: JSON.stringify({ echo: '{"n":1}' }) });
    expect(a.headers["set-cookie"]).toEqual(["a=1"]);
    expect(a.headers["x-dup"]).toEqual(["1", "2"]);
    expect(b.text).toBe(JSON.stringify({ echo: '{"n":2}' }));
    expect(seen[0]).toBe(`POST /v1/chat/completions ${url.slice(7)} yes {"n":1}`);
    expect(seen[1]).toBe(`POST /v1/chat/completions ${url.slice(7)} one, two {"n":2}`);
    expect(connections).toBe(1);
  });

  it("decodes a chunked answer however its bytes are split, trailers and chunk extensions included", async () => {
    const wire =
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-t: 1\r\n\r\n";
    for (const step of [1, 2, 3, 7, 1000]) {
      const srv = await rawServer((socket) => {
        // Write the answer in pieces of `step` bytes, each on its own tick.
        let i = 0;
        const next = (): void => {
          if (i >= wire.length) return;
          socket.write(wire.slice(i, i + step), "latin1");
          i += step;
          setImmediate(next);
        };
        next();
      });
      const p = pool(srv.url);
      expect((await send(p)).text, `step ${step}`).toBe("hello, world");
      // The connection is clean after the trailers: a second call on it works.
      expect((await send(p)).text).toBe("hello, world");
      expect(srv.connections()).toBe(1);
    }
  });

  it("reads a close-delimited answer to its end and does not reuse that connection", async () => {
    const srv = await rawServer((socket) => socket.end("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it"));
    const p = pool(srv.url);
    expect((await send(p)).text).toBe("all of it");
    expect((await send(p)).text).toBe("all of it");
    expect(srv.connections()).toBe(2);
  });

  it("skips an interim 100 Continue and reads the real answer", async () => {
    const srv = await rawServer((socket) =>
      socket.write("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"),
    );
    const res = await send(pool(srv.url));
    expect(res).toMatchObject({ status: 201, text: "ok" });
  });

  it("honours the backend's Keep-Alive timeout and 'connection: close'", async () => {
    const srv = await rawServer((socket, _head, n) =>
      socket.write(
        n === 1
          ? "HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\na"
          : "HTTP/1.1 200 OK\r\ncontent-length: 1\r\nkeep-alive: timeout=1\r\n\r\nb",
      ),
    );
    const p = pool(srv.url);
    expect((await send(p)).text).toBe("a");
    expect(p.size).toBe(0);
    expect((await send(p)).text).toBe("b");
    // timeout=1 means at most 0 s of idle reuse (a second's margin below the backend's): closed, not kept.
    expect(p.size).toBe(0);
    expect(srv.connections()).toBe(2);
  });
});

describe("wire: failures", () => {
  it("a body cut short is an error (WIRE_CLOSED), never a complete answer: content-length and chunked", async () => {
    for (const wire of [
      "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this",
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
      "HTTP/1.1 200 OK\r\ncontent-len",
    ]) {
      const srv = await rawServer((socket) => socket.end(wire));
      const err = await failure(send(pool(srv.url)));
      expect(err.code, wire).toBe("WIRE_CLOSED");
    }
  });

  it("malformed answers are WIRE_PROTOCOL errors, and an oversized head is refused", async () => {
    for (const wire of [
      "SPDY/3 200 OK\r\n\r\n",
      "HTTP/1.1 200 OK\r\nbad header line\r\n\r\n",
      "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\nhello",
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
      "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nabc",
      `HTTP/1.1 200 OK\r\nx-big: ${"a".repeat(70 * 1024)}`,
    ]) {
      const srv = await rawServer((socket) => socket.write(wire));
      const err = await failure(send(pool(srv.url)));
      expect(err.code, wire.slice(0, 60)).toBe("WIRE_PROTOCOL");
    }
  });

  it("refuses to send a header that would split the request (CR/LF) and sends nothing", async () => {
    const srv = await rawServer((socket) => socket.write("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"));
    const p = pool(srv.url);
    const err = await failure(send(p, "{}", { "x-evil": "a\r\nx-injected: 1" }));
    expect(err.code).toBe("WIRE_BAD_HEADER");
    expect(err.message).toContain("x-evil");
    await sleep(50);
    expect(srv.connections()).toBe(0);
  });

  it("a refused connection fails with the socket's code", async () => {
    const srv = await rawServer(() => undefined);
    const url = srv.url;
    closers.splice(0).forEach((c) => c());
    await sleep(20);
    const err = await failure(send(pool(url)));
    expect(err.code).toBe("ECONNREFUSED");
  });

  it("the keep-alive race: a request on a connection the backend just closed is sent once more, on a fresh one", async () => {
    // The backend answers the first request on a connection, then closes that connection when the next request
    // arrives on it, without a byte of answer (what a backend's idle timeout does as a request crosses it).
    const perSocket = new WeakMap<net.Socket, number>();
    const srv = await rawServer((socket) => {
      const k = (perSocket.get(socket) ?? 0) + 1;
      perSocket.set(socket, k);
      if (k === 1) socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
      else socket.destroy();
    });
    const p = pool(srv.url);
    expect((await send(p)).text).toBe("ok");
    expect((await send(p)).text).toBe("ok");
    expect(srv.connections()).toBe(2);
  });

  it("a fresh connection closed without an answer is not sent again (no retry loop)", async () => {
    const srv = await rawServer((socket) => socket.destroy());
    const err = await failure(send(pool(srv.url)));
    expect(err.code).toBe("WIRE_CLOSED");
    expect(srv.connections()).toBe(1);
  });

  it("abort mid-body fails the body with the reason and closes the connection; pause holds the bytes back", async () => {
    let serverSocket: net.Socket | undefined;
    const srv = await rawServer((socket) => {
      serverSocket = socket;
      socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n");
    });
    const p = pool(srv.url);
    const call = p.request("POST", "/", {}, Buffer.from("{}"));
    const res = await call.response;
    const got: string[] = [];
    const ended = new Promise<Error>((resolve) => {
      res.body.consume({
        data: (c) => got.push(c.toString()),
        end: () => resolve(new Error("ended as if complete")),
        error: resolve,
      });
    });
    await sleep(30);
    call.pause();
    serverSocket!.write("3\r\ntwo\r\n");
    await sleep(50);
    expect(got).toEqual(["one"]);
    call.resume();
    await sleep(50);
    expect(got).toEqual(["one", "two"]);
    const reason = new Error("client gone");
    call.abort(reason);
    expect(await ended).toBe(reason);
    expect(call.abortReason).toBe(reason);
    await sleep(30);
    expect(serverSocket!.destroyed || serverSocket!.readableEnded).toBe(true);
    expect(p.size).toBe(0);
  });

  it("an idle connection the backend closes leaves the pool; the next call opens a fresh one without error", async () => {
    const srv = await rawServer((socket) => {
      socket.write("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx");
      setTimeout(() => socket.end(), 20);
    });
    const p = pool(srv.url);
    expect((await send(p)).text).toBe("x");
    await sleep(80);
    expect(p.size).toBe(0);
    expect((await send(p)).text).toBe("x");
    expect(srv.connections()).toBe(2);
  });

  it("idle connections are closed after keepAliveMs", async () => {
    const srv = await rawServer((socket) => socket.write("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx"));
    const p = pool(srv.url, 50);
    await send(p);
    expect(p.size).toBe(1);
    await sleep(1300);
    expect(p.size).toBe(0);
  });
});

describe("wire: https backends", () => {
  const dir = mkdtempSync(join(tmpdir(), "sy-wire-tls-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("talks to an https backend whose certificate the given CA signs, and refuses it without", async () => {
    const cert = join(dir, "cert.pem");
    const key = join(dir, "key.pem");
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
      ],
      { stdio: "ignore" },
    );
    const srv = https.createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (_req, res) =>
      res.end("secure"),
    );
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    closers.push(() => srv.close());
    const url = `https://127.0.0.1:${(srv.address() as net.AddressInfo).port}`;
    const trusted = new WirePool(url, { connectTimeoutMs: 2000, tls: { ca: readFileSync(cert) } });
    closers.push(() => trusted.destroy());
    expect((await send(trusted)).text).toBe("secure");
    const untrusted = new WirePool(url, { connectTimeoutMs: 2000 });
    closers.push(() => untrusted.destroy());
    const err = await failure(send(untrusted));
    expect(err.code).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY|DEPTH_ZERO/);
  });
});
