import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { missing } from "../../test/requirements.js";
import { CliError, ExitCode, makeClient, type ApiClient } from "../cli/client.js";
import { homePaths, readToken } from "./config.js";
import { HomeLockedError, lockHolder } from "./lock.js";
import { startServer, type RunningServer } from "./main.js";
import { SpecError } from "../core/spec-errors.js";

/** The real server in-process (real SQLite, real local executor, real HTTP) over a temporary home. */

const tempHome = (tag: string) => mkdtempSync(path.join(os.tmpdir(), `sy-srv-${tag}-`));
const mode = (file: string) => statSync(file).mode & 0o777;
const noOpenssl = () =>
  missing(
    "openssl (to make a test certificate)",
    spawnSync("openssl", ["version"]).status === 0,
    "apt-get install openssl",
  );

async function start(home: string, extra: Partial<Parameters<typeof startServer>[0]> = {}): Promise<RunningServer> {
  return startServer({ home, host: "127.0.0.1", port: 0, version: "test", ...extra });
}

function jobYaml(name: string, home: string): string {
  return [`name: ${name}`, 'command: ["/bin/sh", "-c", "exit 0"]', `workdir: ${JSON.stringify(home)}`].join("\n");
}

describe("state folder modes", () => {
  it("makes the home 0700 and every file in it 0600, fixing an older world-readable home", async () => {
    const home = tempHome("modes");
    chmodSync(home, 0o755);
    // A home as an older version left it: a world-readable database (with WAL files), log and job folder.
    const old = new Database(path.join(home, "switchyard.db"));
    old.pragma("journal_mode = WAL");
    old.exec("CREATE TABLE t (x); INSERT INTO t VALUES (1)");
    for (const f of ["switchyard.db", "switchyard.db-wal", "switchyard.db-shm"]) chmodSync(path.join(home, f), 0o644);
    writeFileSync(path.join(home, "server.log"), "old log\n", { mode: 0o644 });
    mkdirSync(path.join(home, "jobs", "a"), { recursive: true, mode: 0o755 });
    writeFileSync(path.join(home, "jobs", "a", "rank-0.log"), "x", { mode: 0o664 });
    old.close();

    const server = await start(home);
    try {
      expect(mode(home)).toBe(0o700);
      for (const f of [
        "switchyard.db",
        "switchyard.db-wal",
        "switchyard.db-shm",
        "token",
        "server.json",
        "server.lock",
      ]) {
        expect(mode(path.join(home, f)), f).toBe(0o600);
      }
      expect(mode(path.join(home, "server.log"))).toBe(0o600);
      expect(mode(path.join(home, "jobs"))).toBe(0o700);
      expect(mode(path.join(home, "jobs", "a"))).toBe(0o700);
      expect(mode(path.join(home, "jobs", "a", "rank-0.log"))).toBe(0o600);
    } finally {
      await server.close();
    }
  });

  it("a fresh home: the database is never world-readable, not even its -wal and -shm files", async () => {
    const home = path.join(tempHome("fresh"), "home");
    const server = await start(home);
    try {
      expect(mode(home)).toBe(0o700);
      for (const f of ["switchyard.db", "switchyard.db-wal", "switchyard.db-shm", "token"]) {
        expect(mode(path.join(home, f)), f).toBe(0o600);
      }
      expect(readToken(home)?.length).toBeGreaterThanOrEqual(32);
    } finally {
      await server.close();
    }
  });
});

describe("one server per home", () => {
  it("a second server on the same home is refused while the first lives; after it closes, a new one starts", async () => {
    const home = tempHome("lock");
    const first = await start(home);
    const infoBefore = readFileSync(homePaths(home).serverInfo, "utf8");
    try {
      const err = await start(home).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(HomeLockedError);
      expect((err as HomeLockedError).holderPid).toBe(process.pid);
      expect((err as Error).message).toContain(`pid ${process.pid}`);
      // The loser touched nothing: the winner's server.json is intact and still answers.
      expect(readFileSync(homePaths(home).serverInfo, "utf8")).toBe(infoBefore);
      const health = await makeClient(first.info.url, readToken(home)).get<{ ok: boolean }>("/api/health");
      expect(health.ok).toBe(true);
    } finally {
      await first.close();
    }
    expect(existsSync(homePaths(home).serverInfo)).toBe(false);
    const second = await start(home);
    expect(lockHolder(home)).toBe(process.pid);
    await second.close();
  });
});

describe("API over HTTP", () => {
  const home = tempHome("api");
  let server: RunningServer;
  let client: ApiClient;
  let token: string;
  const raw = (p: string, init: RequestInit = {}) =>
    fetch(`${server.info.url}${p}`, {
      ...init,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...init.headers },
    });

  beforeAll(async () => {
    server = await start(home);
    token = readToken(home)!;
    client = makeClient(server.info.url, token);
  });
  afterAll(() => server.close());

  const jobCount = async () => (await client.get<unknown[]>("/api/jobs")).length;

  it("the same Idempotency-Key twice gives the first job (201, then 200), and one job only", async () => {
    const before = await jobCount();
    const body = JSON.stringify({ yaml: jobYaml("idem", home), file: path.join(home, "idem.yaml") });
    const headers = { "idempotency-key": "key-1" };
    const first = await raw("/api/jobs", { method: "POST", body, headers });
    const second = await raw("/api/jobs", { method: "POST", body, headers });
    expect(first.status).toBe(201);
    expect(second.status).toBe(200);
    expect(((await second.json()) as { id: string }).id).toBe(((await first.json()) as { id: string }).id);
    expect(await jobCount()).toBe(before + 1);
  });

  it("five concurrent submissions with one key make one job", async () => {
    const before = await jobCount();
    const body = JSON.stringify({ yaml: jobYaml("idem5", home), file: path.join(home, "idem5.yaml") });
    const answers = await Promise.all(
      Array.from({ length: 5 }, () => raw("/api/jobs", { method: "POST", body, headers: { "idempotency-key": "k5" } })),
    );
    const ids = await Promise.all(answers.map(async (r) => ((await r.json()) as { id: string }).id));
    expect(new Set(ids).size).toBe(1);
    expect(answers.map((r) => r.status).sort()).toEqual([200, 200, 200, 200, 201]);
    expect(await jobCount()).toBe(before + 1);
  });

  it("a key reused for a different spec is refused (422), and a malformed key is 400", async () => {
    const file = path.join(home, "a.yaml");
    await client.post("/api/jobs", { yaml: jobYaml("reuse-a", home), file }, { "idempotency-key": "reuse" });
    const err = await client
      .post("/api/jobs", { yaml: jobYaml("reuse-b", home), file }, { "idempotency-key": "reuse" })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    expect((err as CliError).message).toContain("was used for a different request");
    const bad = await raw("/api/jobs", {
      method: "POST",
      body: JSON.stringify({ yaml: jobYaml("badkey", home), file }),
      headers: { "idempotency-key": "has space" },
    });
    expect(bad.status).toBe(400);
  });

  it("the CLI client resubmits once when the connection is cut after the request, and gets the one job made", async () => {
    // A proxy that passes the first submission to the server, then cuts the client's connection without an answer.
    let cuts = 0;
    const keys: string[] = [];
    const proxy = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        keys.push(String(req.headers["idempotency-key"]));
        const upstream = http.request(
          `${server.info.url}${req.url}`,
          { method: req.method, headers: { ...req.headers, host: new URL(server.info.url).host } },
          (up) => {
            const body: Buffer[] = [];
            up.on("data", (c: Buffer) => body.push(c));
            up.on("end", () => {
              if (req.url === "/api/jobs" && cuts++ === 0) {
                req.socket.destroy(); // the job exists now; the client never hears of it
                return;
              }
              res.writeHead(up.statusCode ?? 500, { "content-type": "application/json" });
              res.end(Buffer.concat(body));
            });
          },
        );
        upstream.end(Buffer.concat(chunks));
      });
    });
    await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
    try {
      const before = await jobCount();
      const viaProxy = makeClient(`http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, token);
      const job = await viaProxy.post<{ id: string; name: string }>("/api/jobs", {
        yaml: jobYaml("cut", home),
        file: path.join(home, "cut.yaml"),
      });
      expect(job.name).toBe("cut");
      expect(cuts).toBe(2);
      expect(keys).toHaveLength(2);
      expect(keys[0]).toMatch(/^[0-9a-f-]{36}$/);
      expect(keys[1]).toBe(keys[0]);
      expect(await jobCount()).toBe(before + 1);
    } finally {
      proxy.closeAllConnections();
      await new Promise((r) => proxy.close(r));
    }
  });

  it("a YAML alias error is a 400 naming file:line, and exit 2 in the CLI", async () => {
    const file = path.join(home, "alias.yaml");
    const yaml = ["name: alias", "command: *missing", "workdir: /tmp"].join("\n");
    const res = await raw("/api/jobs", { method: "POST", body: JSON.stringify({ yaml, file }) });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: string }).error).toContain(`${file}:2:10: invalid YAML: Unresolved alias`);
    const bomb = ["name: bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]"];
    for (const n of ["b", "c", "d", "e"]) {
      const prev = bomb[bomb.length - 1]!.split(":")[0]!;
      bomb.push(`${n}: &${n} [${Array(10).fill(`*${prev}`).join(", ")}]`);
    }
    const err = await client.post("/api/jobs", { yaml: bomb.join("\n"), file }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    expect((err as CliError).message).toMatch(new RegExp(`^${file}:\\d+:\\d+: invalid YAML: Excessive alias count`));
  });

  it("a body over the limit is 413, which the CLI reports as bad input naming the limit (not unreachable)", async () => {
    const err = await client
      .post("/api/jobs", { yaml: "x".repeat(1.5 * (1 << 20)), file: "big.yaml" })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    expect((err as CliError).message).toContain("over the server's limit of 1 MiB");
  });

  it("cordoning an unknown node is 404 naming the node and `switchyard nodes`", async () => {
    const res = await raw("/api/nodes/no-such-node/cordon", { method: "POST", body: "{}" });
    expect(res.status).toBe(404);
    const err = await client.post("/api/nodes/no-such-node/cordon", {}).catch((e: unknown) => e);
    expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    expect((err as CliError).message).toContain('no node named "no-such-node"');
    expect((err as CliError).message).toContain("switchyard nodes");
  });

  it("the client fails over a wrong token with bad input, not a crash", async () => {
    const err = await makeClient(server.info.url, "not-the-token-000000")
      .get("/api/jobs")
      .catch((e: unknown) => e);
    expect((err as CliError).exitCode).toBe(ExitCode.Usage);
    expect((err as CliError).message).toContain("missing or wrong API token");
  });
});

describe("beyond loopback", () => {
  const servers: RunningServer[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.close();
  });

  it("plain HTTP on a non-loopback address logs a loud warning; local clients use loopback", async () => {
    const home = tempHome("wild");
    const log: string[] = [];
    const server = await start(home, { host: "0.0.0.0", log: (m) => log.push(m) });
    servers.push(server);
    expect(log.some((l) => l.startsWith("WARNING: serving on 0.0.0.0 over plain HTTP"))).toBe(true);
    expect(server.info.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const health = await makeClient(server.info.url, readToken(home)).get<{ ok: boolean }>("/api/health");
    expect(health.ok).toBe(true);
  });

  it.skipIf(noOpenssl())(
    "--tls-cert/--tls-key serve HTTPS (no warning); the client trusts the server's own certificate",
    async () => {
      const home = tempHome("tls");
      const cert = path.join(home, "..", `${path.basename(home)}-cert.pem`);
      const key = path.join(home, "..", `${path.basename(home)}-key.pem`);
      execFileSync(
        "openssl",
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"].concat([
          "-addext",
          "subjectAltName=IP:127.0.0.1,DNS:localhost",
          "-keyout",
          key,
          "-out",
          cert,
        ]),
        { stdio: "ignore" },
      );
      const log: string[] = [];
      const server = await start(home, { host: "127.0.0.1", tls: { cert, key }, log: (m) => log.push(m) });
      servers.push(server);
      expect(server.info.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      expect(server.info.tlsCert).toBe(cert);
      expect(log.some((l) => l.includes("WARNING"))).toBe(false);
      const client = makeClient(server.info.url, readToken(home), { ca: readFileSync(cert) });
      expect((await client.get<{ ok: boolean }>("/api/health")).ok).toBe(true);
      // Plain HTTP to the TLS port gets no API answer.
      const plain = await fetch(server.info.url.replace("https:", "http:") + "/api/health").catch((e: unknown) => e);
      expect(plain instanceof Response && plain.ok).toBe(false);
    },
  );

  it("a missing TLS key file is a clear error naming the file and the option", async () => {
    const home = tempHome("tlsbad");
    const err = await start(home, { tls: { cert: "/nonexistent/c.pem", key: "/nonexistent/k.pem" } }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SpecError);
    expect((err as Error).message).toBe(
      "/nonexistent/c.pem: the TLS cert does not exist (fix: pass a readable PEM file to --tls-cert)",
    );
    // The failed start released the home's lock.
    servers.push(await start(home));
  });
});
