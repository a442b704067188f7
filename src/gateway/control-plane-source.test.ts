import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { isNewerSet, watchBackends, type BackendSet, type BackendWatch } from "./control-plane-source.js";

const token = "t0ken-for-tests";

function setOf(version: number, epoch: string, urls: string[]): BackendSet {
  return {
    version,
    epoch,
    services: [
      {
        name: "chargpt",
        aliases: [],
        pools: [{ name: "local-ascend", priority: 0, queueThreshold: 16 }],
        backends: urls.map((url, i) => ({
          id: `chargpt/local-ascend/r${i}`,
          url,
          pool: "local-ascend",
          engine: "vllm",
          state: "ready" as const,
          model: "chargpt",
        })),
      },
    ],
  };
}

/** A stand-in control plane: answers the contract's long poll from `state.set`. */
class FakeControlPlane {
  set: BackendSet;
  server: Server | null = null;
  port = 0;
  calls: string[] = [];
  private waiters: Array<() => void> = [];

  constructor(set: BackendSet) {
    this.set = set;
  }

  async start(port = 0): Promise<void> {
    const server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", () => resolve()));
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = null;
    for (const w of this.waiters.splice(0)) w();
    if (s) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
  }

  publish(set: BackendSet): void {
    this.set = set;
    for (const w of this.waiters.splice(0)) w();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.calls.push(req.url ?? "");
    if (req.headers.authorization !== `Bearer ${token}`) {
      res.writeHead(401).end(JSON.stringify({ error: "token" }));
      return;
    }
    const url = new URL(req.url ?? "/", "http://x");
    const since = url.searchParams.get("since");
    const epoch = url.searchParams.get("epoch");
    if (since !== null && Number(since) === this.set.version && epoch === this.set.epoch) {
      const wait = Number(url.searchParams.get("wait") ?? 25) * 1000;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, wait);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    if (this.server === null) {
      res.destroy();
      return;
    }
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(this.set));
  }
}

const until = async (what: string, cond: () => boolean, ms = 5000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe("watchBackends", () => {
  const stops: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const s of stops.splice(0).reverse()) await s();
  });

  function watch(url: string, cacheFile: string, updates: Array<{ set: BackendSet; source: string }>): BackendWatch {
    const ac = new AbortController();
    const w = watchBackends({
      url,
      token,
      cacheFile,
      onUpdate: (set, meta) => updates.push({ set, source: meta.source }),
      signal: ac.signal,
      waitSeconds: 2,
      minBackoffMs: 20,
      maxBackoffMs: 100,
    });
    stops.push(async () => {
      ac.abort();
      await w.done;
    });
    return w;
  }

  it("follows the server's set through the long poll and keeps it in a 0600 cache file", async () => {
    const cp = new FakeControlPlane(setOf(1, "e1", ["http://127.0.0.1:9001"]));
    await cp.start();
    stops.push(() => cp.stop());
    const dir = mkdtempSync(path.join(tmpdir(), "cps-"));
    const cacheFile = path.join(dir, "gw", "backends.json");
    const updates: Array<{ set: BackendSet; source: string }> = [];
    watch(`http://127.0.0.1:${cp.port}`, cacheFile, updates);
    await until("the first set", () => updates.length === 1);
    expect(updates[0]!.source).toBe("server");
    cp.publish(setOf(2, "e1", ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]));
    await until("the second set", () => updates.length === 2);
    expect(updates[1]!.set.services[0]!.backends.map((b) => b.url)).toEqual([
      "http://127.0.0.1:9001",
      "http://127.0.0.1:9002",
    ]);
    // The second call was a long poll from version 1 of epoch e1.
    expect(cp.calls.some((c) => c.includes("since=1") && c.includes("epoch=e1"))).toBe(true);
    const cached = JSON.parse(readFileSync(cacheFile, "utf8")) as BackendSet;
    expect(cached.version).toBe(2);
    expect(statSync(cacheFile).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(cacheFile)).mode & 0o777).toBe(0o700);
  });

  it("starts from the cache when the server is down at start, then takes the server's set when it comes up", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "cps-"));
    const cacheFile = path.join(dir, "backends.json");
    writeFileSync(cacheFile, JSON.stringify(setOf(7, "old", ["http://127.0.0.1:9007"])), { mode: 0o600 });
    // A port nobody listens on yet.
    const probe = new FakeControlPlane(setOf(0, "x", []));
    await probe.start();
    const port = probe.port;
    await probe.stop();
    const updates: Array<{ set: BackendSet; source: string }> = [];
    const w = watch(`http://127.0.0.1:${port}`, cacheFile, updates);
    await until("the cached set", () => updates.length === 1);
    expect(updates[0]!.source).toBe("cache");
    expect(updates[0]!.set.services[0]!.backends[0]!.url).toBe("http://127.0.0.1:9007");
    expect(w.source()).toBe("cache");
    // The server comes up with a set of a lower version but another epoch: its set is the truth.
    const cp = new FakeControlPlane(setOf(1, "new", ["http://127.0.0.1:9100"]));
    await cp.start(port);
    stops.push(() => cp.stop());
    await until("the server's set", () => updates.length === 2, 8000);
    expect(updates[1]!.source).toBe("server");
    expect(updates[1]!.set.services[0]!.backends[0]!.url).toBe("http://127.0.0.1:9100");
    expect(w.source()).toBe("server");
  });

  it("keeps the last set while the server restarts, then follows the restarted server", async () => {
    const cp = new FakeControlPlane(setOf(5, "a", ["http://127.0.0.1:9005"]));
    await cp.start();
    const port = cp.port;
    const dir = mkdtempSync(path.join(tmpdir(), "cps-"));
    const updates: Array<{ set: BackendSet; source: string }> = [];
    const w = watch(`http://127.0.0.1:${port}`, path.join(dir, "c.json"), updates);
    await until("the first set", () => updates.length === 1);
    await cp.stop(); // mid long-poll
    await new Promise((r) => setTimeout(r, 300));
    expect(updates).toHaveLength(1); // nothing dropped while it is away
    expect(w.current()?.version).toBe(5);
    const again = new FakeControlPlane(setOf(6, "b", ["http://127.0.0.1:9006"]));
    await again.start(port);
    stops.push(() => again.stop());
    await until("the restarted server's set", () => updates.length === 2, 8000);
    expect(updates[1]!.set.epoch).toBe("b");
    expect(updates[1]!.set.services[0]!.backends[0]!.url).toBe("http://127.0.0.1:9006");
  });

  it("never lets an older version of the same epoch undo a newer one", async () => {
    const cp = new FakeControlPlane(setOf(3, "e", ["http://127.0.0.1:9003"]));
    await cp.start();
    stops.push(() => cp.stop());
    const dir = mkdtempSync(path.join(tmpdir(), "cps-"));
    const updates: Array<{ set: BackendSet; source: string }> = [];
    watch(`http://127.0.0.1:${cp.port}`, path.join(dir, "c.json"), updates);
    await until("the first set", () => updates.length === 1);
    cp.publish(setOf(2, "e", ["http://127.0.0.1:9002"])); // a stale answer
    await new Promise((r) => setTimeout(r, 300));
    cp.publish(setOf(4, "e", ["http://127.0.0.1:9004"]));
    await until("version 4", () => updates.length === 2);
    expect(updates.map((u) => u.set.version)).toEqual([3, 4]);
  });

  it("orders sets by epoch, then version", () => {
    expect(isNewerSet({ version: 2, epoch: "a" }, null)).toBe(true);
    expect(isNewerSet({ version: 2, epoch: "a" }, { version: 1, epoch: "a" })).toBe(true);
    expect(isNewerSet({ version: 1, epoch: "a" }, { version: 1, epoch: "a" })).toBe(false);
    expect(isNewerSet({ version: 0, epoch: "a" }, { version: 1, epoch: "a" })).toBe(false);
    expect(isNewerSet({ version: 0, epoch: "b" }, { version: 9, epoch: "a" })).toBe(true);
  });

  it("keeps retrying with a wrong token and says why, serving the cache meanwhile", async () => {
    const cp = new FakeControlPlane(setOf(1, "e", ["http://127.0.0.1:9001"]));
    await cp.start();
    stops.push(() => cp.stop());
    const dir = mkdtempSync(path.join(tmpdir(), "cps-"));
    const cacheFile = path.join(dir, "c.json");
    writeFileSync(cacheFile, JSON.stringify(setOf(9, "z", ["http://127.0.0.1:9009"])), { mode: 0o600 });
    const warnings: string[] = [];
    const updates: BackendSet[] = [];
    const ac = new AbortController();
    const w = watchBackends({
      url: `http://127.0.0.1:${cp.port}`,
      token: "wrong",
      cacheFile,
      onUpdate: (set) => updates.push(set),
      logger: { info: () => undefined, warn: (_f, m) => warnings.push(m) },
      signal: ac.signal,
      minBackoffMs: 20,
      maxBackoffMs: 50,
    });
    await until("the cache", () => updates.length === 1);
    await until("a few retries", () => cp.calls.length >= 3);
    ac.abort();
    await w.done;
    expect(updates.map((u) => u.version)).toEqual([9]);
    expect(warnings.join("\n")).toMatch(/HTTP 401/);
    expect(warnings.join("\n")).not.toContain("wrong"); // the token is never logged
  });
});
