/**
 * CORS for browser clients, opt-in: only origins listed in the services file (`gateway.cors.origins`) or with
 * `--cors-origin` may call the API from a web page. A listed origin is echoed back (with `Vary: Origin`); `*` allows
 * any origin and is sent as `*`. The gateway never sends `Access-Control-Allow-Credentials`: its API keys are bearer
 * tokens in the Authorization header, which a page sends explicitly, so cookies are never needed and `*` can never
 * be combined with credentials. Preflights (OPTIONS) are answered by the gateway itself, before authentication, and
 * an upstream's own access-control-* headers are dropped (vLLM sends `*` by default).
 */
import type { IncomingMessage, ServerResponse } from "node:http";

export interface CorsSettings {
  /** Exact origins (`https://app.example.com`, scheme://host[:port]) or `*` for any. */
  origins: string[];
  /** How long a browser may cache a preflight answer, seconds (default 600). */
  maxAgeS?: number | undefined;
}

const ORIGIN_RE = /^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?$|^https?:\/\/\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/;

/** Why an origin entry is not usable, or undefined when it is. */
export function badOrigin(origin: string): string | undefined {
  if (origin === "*") return undefined;
  if (!ORIGIN_RE.test(origin)) {
    return `"${origin}" is not an origin: write scheme://host[:port] with no path or trailing slash (e.g. https://app.example.com), or * for any`;
  }
  return undefined;
}

const ALLOW_METHODS = "GET, POST, OPTIONS";
const DEFAULT_ALLOW_HEADERS = "authorization, content-type, x-request-id";
/** Request headers a preflight may ask for: header names only, bounded. */
const REQUEST_HEADERS_RE = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+(\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$/;
const EXPOSE_HEADERS = "x-switchyard-backend, x-request-id, retry-after";

export class Cors {
  private readonly any: boolean;
  private readonly origins: Set<string>;
  private readonly maxAge: string;

  constructor(settings: CorsSettings) {
    for (const o of settings.origins) {
      const why = badOrigin(o);
      if (why !== undefined) throw new Error(`cors origin ${why}`);
    }
    this.any = settings.origins.includes("*");
    this.origins = new Set(settings.origins.map((o) => o.toLowerCase()));
    this.maxAge = String(Math.max(0, Math.min(86_400, Math.round(settings.maxAgeS ?? 600))));
  }

  /** The Access-Control-Allow-Origin value for a request's Origin header, or undefined when it is not allowed. */
  allowOrigin(origin: string | undefined): string | undefined {
    if (origin === undefined) return undefined;
    if (this.any) return "*";
    return this.origins.has(origin.toLowerCase()) ? origin : undefined;
  }

  /** Adds the CORS headers of an actual (non-preflight) request to `res`, when its origin is allowed. */
  decorate(req: IncomingMessage, res: ServerResponse): void {
    const allow = this.allowOrigin(req.headers.origin);
    if (allow === undefined) return;
    res.setHeader("access-control-allow-origin", allow);
    if (allow !== "*") res.setHeader("vary", "Origin");
    res.setHeader("access-control-expose-headers", EXPOSE_HEADERS);
  }

  /** Answers a preflight (OPTIONS): 204 with the allowances, or 403 naming the origin when it is not listed. */
  preflight(req: IncomingMessage, res: ServerResponse): "allowed" | "refused" {
    const origin = req.headers.origin;
    const allow = this.allowOrigin(origin);
    if (allow === undefined) {
      const body = JSON.stringify({
        error: {
          message: `origin ${origin === undefined ? "(none)" : JSON.stringify(origin.slice(0, 200))} is not allowed by this gateway's CORS origins; add it to gateway.cors.origins in the services file or pass --cors-origin`,
          type: "invalid_request_error",
          code: "cors_origin_not_allowed",
          param: null,
        },
      });
      res.writeHead(403, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
      res.end(body);
      return "refused";
    }
    const asked = req.headers["access-control-request-headers"];
    const headers =
      typeof asked === "string" && asked.length <= 1024 && REQUEST_HEADERS_RE.test(asked.trim())
        ? asked.trim().toLowerCase()
        : DEFAULT_ALLOW_HEADERS;
    res.writeHead(204, {
      "access-control-allow-origin": allow,
      ...(allow !== "*" && { vary: "Origin" }),
      "access-control-allow-methods": ALLOW_METHODS,
      "access-control-allow-headers": headers,
      "access-control-max-age": this.maxAge,
      "content-length": 0,
    });
    res.end();
    return "allowed";
  }
}
