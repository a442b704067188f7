import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { allowedHostValues, cookieName, guard } from "./security.js";

const token = "t0ken-for-tests-0123456789abcdef";
const port = 4321;
const host = `127.0.0.1:${port}`;

function app(opts: { tls?: boolean; rejects?: string[] } = {}) {
  const a = new Hono();
  a.use(
    "*",
    guard({
      token,
      allowedHosts: () => allowedHostValues("127.0.0.1", port, opts.tls === true),
      tls: opts.tls === true,
      publicPaths: new Set(["/", "/app.js"]),
      onReject: (line) => opts.rejects?.push(line),
    }),
  );
  a.get("/", (c) => c.text("index"));
  a.get("/app.js", (c) => c.text("js"));
  a.get("/api/jobs", (c) => c.json([]));
  a.post("/api/jobs", (c) => c.json({ id: "made" }, 201));
  return a;
}

const auth = { authorization: `Bearer ${token}` };

describe("Host header (DNS rebinding)", () => {
  it("answers the bound address and the loopback names with the bound port", async () => {
    for (const h of [host, `localhost:${port}`, `[::1]:${port}`, `LOCALHOST:${port}`]) {
      const res = await app().request("/api/jobs", { headers: { host: h, ...auth } });
      expect(res.status, h).toBe(200);
    }
  });

  it("refuses a foreign name, another port, and no Host at all, on static files too", async () => {
    const rejects: string[] = [];
    for (const h of [`evil.example:${port}`, "127.0.0.1:1", "127.0.0.1", ""]) {
      for (const p of ["/api/jobs", "/"]) {
        const res = await app({ rejects }).request(p, { headers: { host: h, ...auth } });
        expect(res.status, `${h} ${p}`).toBe(403);
      }
    }
    expect(rejects[0]).toContain('Host "evil.example:4321" is not this server');
  });

  it("a server bound to every address also answers its hostname; --allow-host adds names", () => {
    const hosts = allowedHostValues("0.0.0.0", 8443, true, ["gpu01.lab.example"]);
    expect(hosts.has("gpu01.lab.example:8443")).toBe(true);
    expect(hosts.has("127.0.0.1:8443")).toBe(true);
    expect(hosts.has("0.0.0.0:8443")).toBe(false);
    expect(allowedHostValues("10.0.0.5", 443, true).has("10.0.0.5")).toBe(true);
  });
});

describe("Origin", () => {
  it("refuses another origin (another port of the same host included) and the opaque origin", async () => {
    const rejects: string[] = [];
    for (const origin of ["http://127.0.0.1:9999", "http://evil.example", "null", `https://${host}`]) {
      const res = await app({ rejects }).request("/api/jobs", {
        method: "POST",
        headers: { host, origin, "content-type": "application/json", ...auth },
        body: "{}",
      });
      expect(res.status, origin).toBe(403);
    }
    expect(rejects[0]).toContain("cross-origin request");
  });

  it("accepts the server's own origin, and refuses Sec-Fetch-Site cross-site/same-site", async () => {
    const own = await app().request("/api/jobs", {
      method: "POST",
      headers: { host, origin: `http://${host}`, "content-type": "application/json", ...auth },
      body: "{}",
    });
    expect(own.status).toBe(201);
    for (const site of ["cross-site", "same-site"]) {
      const res = await app().request("/api/jobs", { headers: { host, "sec-fetch-site": site, ...auth } });
      expect(res.status, site).toBe(403);
    }
  });
});

describe("token", () => {
  it("every API route needs it; static dashboard files do not", async () => {
    expect((await app().request("/api/jobs", { headers: { host } })).status).toBe(401);
    expect((await app().request("/api/jobs", { headers: { host, authorization: "Bearer wrong" } })).status).toBe(401);
    expect((await app().request("/api/jobs", { headers: { host, authorization: token } })).status).toBe(401);
    expect((await app().request("/api/nope", { headers: { host } })).status).toBe(401);
    expect((await app().request("/api/jobs", { headers: { host, ...auth } })).status).toBe(200);
    expect((await app().request("/", { headers: { host } })).status).toBe(200);
    expect((await app().request("/app.js", { headers: { host } })).status).toBe(200);
  });

  it("the token is never taken from the query on an API route", async () => {
    const res = await app().request(`/api/jobs?token=${token}`, { headers: { host } });
    expect(res.status).toBe(401);
  });

  it("/?token= sets an HttpOnly SameSite=Strict cookie and redirects to the URL without the token", async () => {
    const res = await app().request(`/?token=${encodeURIComponent(token)}&view=x`, { headers: { host } });
    expect(res.status).toBe(303);
    expect(res.headers.get("location")).toBe("/?view=x");
    const cookie = res.headers.get("set-cookie") ?? "";
    expect(cookie).toMatch(new RegExp(`^${cookieName(token)}=`));
    expect(cookie).toContain("HttpOnly");
    expect(cookie).toContain("SameSite=Strict");
    expect(cookie).toContain("Path=/");
    expect(cookie).not.toContain("Secure");
    const secure = await app({ tls: true }).request(`/?token=${token}`, { headers: { host } });
    expect(secure.headers.get("set-cookie")).toContain("Secure");
  });

  it("the cookie then authenticates API calls; a wrong token in the URL sets nothing", async () => {
    const cookie = `${cookieName(token)}=${token}`;
    expect((await app().request("/api/jobs", { headers: { host, cookie } })).status).toBe(200);
    expect((await app().request("/api/jobs", { headers: { host, cookie: `${cookieName(token)}=x` } })).status).toBe(
      401,
    );
    const wrong = await app().request("/?token=wrong", { headers: { host } });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get("set-cookie")).toBeNull();
  });

  it("each home has its own cookie name (browsers share cookies across the ports of a host)", () => {
    expect(cookieName(token)).not.toBe(cookieName("another-home-token-0123456789"));
  });
});

describe("content type", () => {
  it("a state-changing request must be application/json: text/plain, forms and no body get 415", async () => {
    for (const type of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", null]) {
      const res = await app().request("/api/jobs", {
        method: "POST",
        headers: { host, ...auth, ...(type ? { "content-type": type } : {}) },
        body: type ? '{"yaml":"x","file":"y"}' : undefined,
      });
      expect(res.status, String(type)).toBe(415);
      expect(((await res.json()) as { error: string }).error).toContain("Content-Type: application/json");
    }
    const ok = await app().request("/api/jobs", {
      method: "POST",
      headers: { host, ...auth, "content-type": "application/json; charset=utf-8" },
      body: "{}",
    });
    expect(ok.status).toBe(201);
  });
});
