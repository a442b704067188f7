/**
 * The shared view of several gateway workers, with the primary's and the workers' parts wired in one process (the
 * IPC channel replaced by function calls): RPM leases never let N workers admit more than the key's limit, TPM
 * spends reach every worker, and passive health is decided once for all workers.
 */
import { afterEach, describe, expect, it } from "vitest";
import { LimitAuthority, WorkerLimiter, type ToPrimary, type ToWorker } from "./cluster.js";
import { compileServices } from "./config.js";
import { Gateway } from "./gateway.js";
import { chat, post } from "./testing/harness.js";
import { FixtureBackend } from "./testing/fixture-backend.js";
import { listenGateway, type ListeningGateway } from "./server.js";
import type { HealthEvent } from "./backends.js";

type Body<T> = T extends unknown ? Omit<T, "sy"> : never;

/** N worker limiters talking to one authority, each message delivered on a later tick like IPC. */
function wire(n: number): { authority: LimitAuthority; workers: WorkerLimiter[]; sent: string[] } {
  const authority = new LimitAuthority(() => n);
  const sent: string[] = [];
  const workers: WorkerLimiter[] = [];
  for (let i = 0; i < n; i++) {
    const w: WorkerLimiter = new WorkerLimiter((m: Body<ToPrimary>) => {
      sent.push(m.t);
      setImmediate(() => {
        const now = Date.now();
        if (m.t === "lease") {
          const answer = authority.lease(m.key, m.rpm, now);
          setImmediate(() => w.onMessage({ sy: "gw", t: "lease", req: m.req, ...answer } as ToWorker));
        } else if (m.t === "return") {
          authority.giveBack(m.key, m.rpm, m.n, now);
        } else if (m.t === "spend") {
          for (const [key, tpm, tokens] of m.spends) {
            const balance = authority.spend(key, tpm, tokens, now);
            for (const other of workers) other.onMessage({ sy: "gw", t: "tpm", key, balance, at: now });
          }
        }
      });
    }, n);
    workers.push(w);
  }
  return { authority, workers, sent };
}

describe("limits across gateway workers", () => {
  let closeAll: Array<() => void> = [];
  afterEach(() => {
    for (const c of closeAll) c();
    closeAll = [];
  });

  it("a key limited to R requests per minute gets R across 3 workers, not 3R, and most admissions need no IPC", async () => {
    const { workers, sent } = wire(3);
    closeAll = workers.map((w) => () => w.close());
    const R = 30;
    let ok = 0;
    const refusals: number[] = [];
    // 150 requests spread round-robin over the workers, concurrently (so leases are asked for while others wait).
    const results = await Promise.all(
      Array.from({ length: 150 }, (_, i) => workers[i % 3]!.admit("k1", { rpm: R }, Date.now())),
    );
    for (const r of results) {
      if (r === undefined) ok++;
      else refusals.push(r.retryAfterS);
    }
    expect(ok).toBeGreaterThanOrEqual(R - 1);
    expect(ok).toBeLessThanOrEqual(R + 1); // + what refills during the test
    expect(refusals.length).toBe(150 - ok);
    expect(Math.min(...refusals)).toBeGreaterThanOrEqual(1);
    // Leases: the admitted requests did not each cost a round trip to the primary.
    expect(sent.filter((t) => t === "lease").length).toBeLessThan(ok);
  });

  it("tokens spent on one worker close the key on the others (TPM)", async () => {
    const { workers } = wire(2);
    closeAll = workers.map((w) => () => w.close());
    const limits = { tpm: 1000 };
    expect(await workers[1]!.admit("k2", limits, Date.now())).toBeUndefined();
    expect(await workers[0]!.admit("k2", limits, Date.now())).toBeUndefined();
    workers[0]!.spend("k2", limits, 1500, Date.now());
    // The spend reaches the primary within a flush period (20 ms), and its balance reaches worker 1.
    await new Promise((r) => setTimeout(r, 80));
    const refused = await workers[1]!.admit("k2", limits, Date.now());
    expect(refused).toMatchObject({ limit: "tpm" });
    // 500 tokens of debt at 1000/min: about 30 s until the balance is positive again.
    expect(refused!.retryAfterS).toBeGreaterThanOrEqual(29);
    expect(refused!.retryAfterS).toBeLessThanOrEqual(31);
  });

  it("a worker whose primary does not answer falls back to its share of the limit", async () => {
    const w = new WorkerLimiter(() => undefined, 2);
    closeAll = [() => w.close()];
    const started = Date.now();
    const first = await w.admit("k3", { rpm: 4 }, Date.now());
    expect(first).toBeUndefined();
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900); // it waited for the lease, then decided alone
    expect(await w.admit("k3", { rpm: 4 }, Date.now())).toBeUndefined();
    expect(await w.admit("k3", { rpm: 4 }, Date.now())).toMatchObject({ limit: "rpm" }); // 4 / 2 workers
  }, 15_000);
});

describe("backend health across gateway workers", () => {
  let fixtures: FixtureBackend[] = [];
  let listening: ListeningGateway[] = [];
  let gateways: Gateway[] = [];
  afterEach(async () => {
    for (const l of listening) await l.close();
    for (const g of gateways) await g.close();
    for (const f of fixtures) await f.close();
    fixtures = [];
    listening = [];
    gateways = [];
  });

  it("failures seen by different workers add up: the backend is ejected on every worker after ejectAfterFailures in all", async () => {
    const bad = await FixtureBackend.start("bad", { fault: "status500" });
    const good = await FixtureBackend.start("good");
    fixtures = [bad, good];
    const config = compileServices({
      gateway: { ejectAfterFailures: 3, ejectCooldownMs: 60_000, maxAttempts: 2 },
      services: [
        {
          model: "m",
          aliases: [],
          pools: [
            {
              name: "p",
              backends: [
                { id: "bad", url: bad.url, engine: "vllm" },
                { id: "good", url: good.url, engine: "vllm" },
              ],
            },
          ],
        },
      ],
    });
    const primary = new Gateway(config);
    const workers: Gateway[] = [];
    const deliver = (id: string, ev: HealthEvent): void => {
      const state = primary.applyHealthEvent(id, ev);
      if (state !== undefined) for (const w of workers) w.applyHealthState(id, state);
    };
    for (let i = 0; i < 2; i++) workers.push(new Gateway(config, { onHealthEvent: deliver }));
    gateways = [primary, ...workers];
    listening = await Promise.all(workers.map((w) => listenGateway(w, { port: 0 })));
    // Worker 0 sees two failures of "bad", worker 1 one: three in all.
    let badHits = 0;
    for (let i = 0; i < 12 && badHits < 3; i++) {
      const before = bad.completions;
      const r = await post(`${listening[i % 2]!.url}/v1/chat/completions`, chat());
      expect(r.status).toBe(200); // retried on "good"
      badHits += bad.completions - before;
    }
    expect(badHits).toBe(3);
    for (const g of [primary, ...workers]) expect(g.backend("bad")!.state).toBe("ejected");
    // No worker sends "bad" anything more.
    const before = bad.completions;
    for (let i = 0; i < 6; i++) await post(`${listening[i % 2]!.url}/v1/chat/completions`, chat());
    expect(bad.completions).toBe(before);
  });
});
