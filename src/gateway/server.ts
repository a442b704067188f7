/** Binds a gateway to a Node HTTP server (the only place that knows about sockets). */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Gateway } from "./gateway.js";

export interface ListeningGateway {
  server: Server;
  url: string;
  port: number;
  close(): Promise<void>;
}

export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

export async function listenGateway(
  gateway: Gateway,
  opts: { host?: string; port?: number } = {},
): Promise<ListeningGateway> {
  const host = opts.host ?? "127.0.0.1";
  const server = createServer({ keepAliveTimeout: 65_000, requestTimeout: 120_000 }, gateway.handle);
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
  return {
    server,
    port,
    url: `http://${urlHost}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
