/**
 * The floor of a proxy written in Node on this machine: raw `net` sockets on both legs, a request head found with
 * indexOf, its content-length read with one regex, the body handed to a kept-alive upstream connection as one
 * string, the answer's head and body sent back as one string. No routing, no failover, no stream integrity, no
 * metrics, no log, no header checks, no chunked encoding: it is NOT a usable proxy, only the lower bound any Node
 * gateway pays for two HTTP legs (bench/gateway/cpu.ts --floor; ANALYSIS.md). Good only for the bench's fixed
 * request (POST with a content-length, answered with a content-length).
 *
 *   node dist/bench-gateway/bench/gateway/floor.js LISTEN_PORT BACKEND_PORT
 */
import net from "node:net";

const [port, backendPort] = process.argv.slice(2).map(Number);
if (!port || !backendPort) throw new Error("usage: floor.js LISTEN_PORT BACKEND_PORT");

const idle: net.Socket[] = [];
const CONTENT_LENGTH = /\r\ncontent-length: *(\d+)/i;

function upstream(cb: (s: net.Socket) => void): void {
  const s = idle.pop();
  if (s !== undefined) return cb(s);
  const u = net.connect({ port: backendPort!, host: "127.0.0.1", noDelay: true }, () => cb(u));
  u.on("error", () => undefined);
}

/** Reads one answer off `u` and writes it to `client` as one string. */
function relay(u: net.Socket, client: net.Socket): void {
  let buf: Buffer | undefined;
  const onData = (d: Buffer): void => {
    buf = buf === undefined ? d : Buffer.concat([buf, d]);
    const end = buf.indexOf("\r\n\r\n");
    if (end < 0) return;
    const head = buf.toString("latin1", 0, end);
    const len = Number(CONTENT_LENGTH.exec(head)?.[1] ?? 0);
    if (buf.length < end + 4 + len) return;
    u.removeListener("data", onData);
    idle.push(u);
    const status = head.slice(9, 12);
    client.write(
      `HTTP/1.1 ${status} OK\r\ncontent-type: application/json\r\ncontent-length: ${len}\r\n\r\n` +
        buf.toString("latin1", end + 4, end + 4 + len),
      "latin1",
    );
  };
  u.on("data", onData);
}

net
  .createServer({ noDelay: true }, (c) => {
    let buf: Buffer | undefined;
    c.on("error", () => undefined);
    c.on("data", (d: Buffer) => {
      buf = buf === undefined ? d : Buffer.concat([buf, d]);
      for (;;) {
        const end: number = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head: string = buf.toString("latin1", 0, end);
        const len = Number(CONTENT_LENGTH.exec(head)?.[1] ?? 0);
        if (buf.length < end + 4 + len) return;
        const body = buf.toString("latin1", end + 4, end + 4 + len);
        buf = buf.length > end + 4 + len ? buf.subarray(end + 4 + len) : undefined;
        const path = head.slice(head.indexOf(" ") + 1, head.indexOf(" ", head.indexOf(" ") + 1));
        if (path === "/healthz" || path === "/health") {
          c.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        } else {
          upstream((u) => {
            relay(u, c);
            u.write(
              `POST ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: ${len}\r\n\r\n` +
                body,
              "latin1",
            );
          });
        }
        if (buf === undefined) return;
      }
    });
  })
  .listen(port, "127.0.0.1");
