import { createHash, timingSafeEqual } from "node:crypto";
import os from "node:os";
import type { MiddlewareHandler } from "hono";
import { getCookie, setCookie } from "hono/cookie";

/**
 * The server's front door (docs/security.md). Every request passes, in order:
 * 1. Host: the `Host` header must name this server (loopback names or the configured host, with the bound port), so a
 *    DNS-rebound name (evil.example resolving to 127.0.0.1) is refused before anything is served.
 * 2. Origin: a browser's `Origin` (and `Sec-Fetch-Site`) must be this server's own, so no other web page can act.
 * 3. Token: every route except the dashboard's static files needs the home's token, as `Authorization: Bearer` (the
 *    CLI) or as the HttpOnly, SameSite=Strict cookie the dashboard gets by opening `/?token=...` once (Jupyter's way:
 *    the answer sets the cookie and redirects to the same URL without the token).
 * 4. Content type: a request that can change state (anything but GET/HEAD) must be `application/json`, which no
 *    cross-origin "simple" request (form, text/plain, no-cors fetch) can send.
 */
export interface GuardOptions {
  token: string;
  /** Accepted `Host` values (lowercase `name:port`), known once the server listens (port 0 picks one). */
  allowedHosts: () => ReadonlySet<string>;
  /** Served over TLS: the cookie is `Secure` and origins are https. */
  tls: boolean;
  /** GET paths that load without the token (the dashboard's static files). */
  publicPaths: ReadonlySet<string>;
  /** Called with a one-line reason for every refused request (never with a secret). */
  onReject?: (line: string) => void;
}

const safeMethods = new Set(["GET", "HEAD"]);

/** The cookie's name: per home (a hash of its token), since browsers share cookies across ports of one host. */
export function cookieName(token: string): string {
  return `switchyard-${sha256(token).subarray(0, 6).toString("hex")}`;
}

export function guard(opts: GuardOptions): MiddlewareHandler {
  const expected = sha256(opts.token);
  const cookie = cookieName(opts.token);
  const tokenMatches = (given: string | undefined): boolean =>
    given !== undefined && given.length > 0 && timingSafeEqual(sha256(given), expected);

  return async (c, next) => {
    const method = c.req.method;
    const path = c.req.path;
    const reject = (status: 401 | 403 | 415, reason: string, fix: string) => {
      opts.onReject?.(`refused ${method} ${path}: ${reason}`);
      return c.json({ error: `${reason} (fix: ${fix})` }, status);
    };

    const host = (c.req.header("host") ?? "").toLowerCase();
    const hosts = opts.allowedHosts();
    if (!hosts.has(host)) {
      return reject(
        403,
        `Host ${JSON.stringify(host)} is not this server's address`,
        "address the server as 127.0.0.1, localhost or the host it was started with, or start it with --allow-host <name>",
      );
    }
    const isPublic = safeMethods.has(method) && opts.publicPaths.has(path);
    const queryToken = c.req.query("token");
    if (isPublic && queryToken !== undefined) {
      if (!tokenMatches(queryToken)) {
        return reject(401, "wrong token in the dashboard URL", "open the URL `switchyard dashboard` prints");
      }
      // Keep the token in an HttpOnly cookie and take it out of the address bar (and the history) at once.
      setCookie(c, cookie, opts.token, { httpOnly: true, sameSite: "Strict", path: "/", secure: opts.tls });
      const url = new URL(c.req.url);
      url.searchParams.delete("token");
      c.header("cache-control", "no-store");
      return c.redirect(`${url.pathname}${url.search}${url.hash}`, 303);
    }
    if (!isPublic) {
      const origin = c.req.header("origin");
      if (origin !== undefined && !originAllowed(origin, hosts, opts.tls)) {
        return reject(
          403,
          `cross-origin request from ${JSON.stringify(origin)}`,
          "call the API from the CLI or the dashboard this server serves",
        );
      }
      const fetchSite = c.req.header("sec-fetch-site");
      if (fetchSite === "cross-site" || fetchSite === "same-site") {
        return reject(
          403,
          `cross-site request (Sec-Fetch-Site: ${fetchSite})`,
          "open the dashboard this server serves",
        );
      }
      const auth = c.req.header("authorization");
      const bearer = auth?.startsWith("Bearer ") ? auth.slice("Bearer ".length) : undefined;
      if (!tokenMatches(bearer) && !tokenMatches(getCookie(c, cookie))) {
        return reject(
          401,
          "missing or wrong API token",
          "send Authorization: Bearer <the token in SWITCHYARD_HOME/token>, or open the URL `switchyard dashboard` prints",
        );
      }
    }
    if (!safeMethods.has(method)) {
      const type = (c.req.header("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
      if (type !== "application/json") {
        return reject(
          415,
          `${method} ${path} needs a JSON body (Content-Type: application/json), got ${JSON.stringify(type || "none")}`,
          "send the body as JSON with Content-Type: application/json",
        );
      }
    }
    await next();
  };
}

function originAllowed(origin: string, hosts: ReadonlySet<string>, tls: boolean): boolean {
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false; // "null" (sandboxed frames, file://) and anything malformed
  }
  if (url.protocol !== (tls ? "https:" : "http:")) return false;
  const port = url.port || (tls ? "443" : "80");
  return hosts.has(`${url.hostname.toLowerCase()}:${port}`);
}

function sha256(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

const wildcards = new Set(["0.0.0.0", "::", "[::]", ""]);

export function isWildcard(host: string): boolean {
  return wildcards.has(host);
}

/** `name` as it appears in a Host header: IPv6 literals in brackets, lowercase. */
export function hostName(name: string): string {
  const lower = name.toLowerCase();
  return lower.includes(":") && !lower.startsWith("[") ? `[${lower}]` : lower;
}

/**
 * The Host header values a server bound to `host:port` answers: the loopback names, the bound host, any extra names
 * (--allow-host) and, when bound to a wildcard address, this machine's hostname and interface addresses. Each with the
 * port; on the scheme's default port also without it.
 */
export function allowedHostValues(
  host: string,
  port: number,
  tls: boolean,
  extra: readonly string[] = [],
): Set<string> {
  const names = new Set(["127.0.0.1", "localhost", "[::1]", ...extra.map(hostName)]);
  if (isWildcard(host)) {
    names.add(os.hostname().toLowerCase());
    for (const addrs of Object.values(os.networkInterfaces())) {
      for (const a of addrs ?? []) if (a.scopeid === undefined || a.scopeid === 0) names.add(hostName(a.address));
    }
  } else {
    names.add(hostName(host));
  }
  const out = new Set<string>();
  const defaultPort = tls ? 443 : 80;
  for (const n of names) {
    out.add(`${n}:${port}`);
    if (port === defaultPort) out.add(n);
  }
  return out;
}
