/** Binds a gateway to a Node HTTP or HTTPS server (the only place that knows about sockets). */
import { createServer, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import type { Gateway } from "./gateway.js";

export interface ListeningGateway {
  server: Server;
  url: string;
  port: number;
  /** Stops at once: every connection is closed, streams in flight are broken off. */
  close(): Promise<void>;
  /**
   * Stops gracefully: no new connections, new requests on open ones get 503, requests in flight may finish until
   * `timeoutMs` (or `cutNow`), then the rest are cut (streams with an in-band error event). See Gateway.drain.
   */
  drain(timeoutMs: number, cutNow?: AbortSignal): Promise<{ cut: number }>;
}

export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

/** TLS on the listener: PEM certificate chain and private key (see loadTlsFiles in the CLI for the checks). */
export interface ListenerTls {
  cert: Buffer;
  key: Buffer;
}

export async function listenGateway(
  gateway: Gateway,
  opts: { host?: string; port?: number; tls?: ListenerTls | undefined } = {},
): Promise<ListeningGateway> {
  const host = opts.host ?? "127.0.0.1";
  const serverOptions = { keepAliveTimeout: 65_000, requestTimeout: 120_000 };
  const server: Server =
    opts.tls !== undefined
      ? createHttpsServer({ ...serverOptions, cert: opts.tls.cert, key: opts.tls.key }, gateway.handle)
      : createServer(serverOptions, gateway.handle);
  // Long streams must not be cut by the server's idle socket timeout; the gateway enforces its own stall timeout.
  server.timeout = 0;
  // `Expect: 100-continue`: a body over the limit is refused before the client sends it.
  server.on("checkContinue", gateway.handleExpectContinue);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    // A deep accept queue: thousands of clients connecting at once must queue, not be refused (capped by somaxconn).
    server.listen({ port: opts.port ?? 0, host, backlog: 4096 }, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(":") ? `[${host}]` : host;
  const closed = new Promise<void>((resolve) => server.once("close", () => resolve()));
  return {
    server,
    port,
    url: `${opts.tls !== undefined ? "https" : "http"}://${urlHost}:${port}`,
    close: async () => {
      if (server.listening) server.close();
      server.closeAllConnections();
      await closed;
    },
    drain: async (timeoutMs, cutNow) => {
      const draining = gateway.drain(timeoutMs, cutNow);
      if (server.listening) server.close();
      // Keep-alive connections that fall idle while others finish are closed as they do.
      server.closeIdleConnections();
      const idleSweep = setInterval(() => server.closeIdleConnections(), 100);
      try {
        return await draining;
      } finally {
        clearInterval(idleSweep);
        server.closeAllConnections();
        await closed;
      }
    },
  };
}
