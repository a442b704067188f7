import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Command } from "commander";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { registerServeCommand, startServe, type RunningServe } from "../../src/cli/commands/serve.js";
import { isSameProcessAlive } from "../../src/executors/local/procfs.js";
import { packageRoot } from "../../src/paths.js";
import type { ServerInfo } from "../../src/server/config.js";
import type { EventRecord, RankRecord } from "../../src/store/port.js";
import { exampleDir, hasTorch, rankProcessPid, sleep, waitFor } from "./harness.js";

/**
 * End to end (issue 4 part 5, issue 14): `switchyard serve` deploys one replica of examples/chargpt/serve.py on each
 * of two local pools on the home's server (which supervises them as jobs) and runs a gateway that follows the server's
 * backend set; during a streaming load the preferred pool's replica is SIGKILLed. Every request must end either
 * complete (`[DONE]`, every token) or with an explicit error; the replica must be restarted and back in the set, and
 * traffic must return to the preferred pool. No training run: serve.py falls back to random weights.
 */

const MODEL = "chargpt";
const PREFERRED = "local-ascend";
const FALLBACK = "local-nvidia";
const MAX_TOKENS = 30;
const REQUESTS = 30;
const SPACING_MS = 330; // 30 requests over ~10 s
const KILL_AT_MS = 2_500;

type Outcome = "ok" | "error-event" | "http-error" | "broken" | "truncated";

interface Result {
  i: number;
  startedAt: number;
  endedAt: number;
  backend: string;
  outcome: Outcome;
  text: string;
  detail: string;
}

/** One streaming completion through the gateway, read as SSE events and classified. */
async function streamOnce(url: string, i: number): Promise<Result> {
  const startedAt = Date.now();
  const base = { i, startedAt, backend: "", text: "", detail: "" };
  let res: Response;
  try {
    res = await fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: MODEL, prompt: "The old king ", max_tokens: MAX_TOKENS, stream: true, seed: i }),
    });
  } catch (err) {
    return { ...base, endedAt: Date.now(), outcome: "broken", detail: String(err) };
  }
  const backend = res.headers.get("x-switchyard-backend") ?? "";
  if (res.status !== 200) {
    return {
      ...base,
      backend,
      endedAt: Date.now(),
      outcome: "http-error",
      detail: `${res.status} ${await res.text()}`,
    };
  }
  let raw = "";
  try {
    const decoder = new TextDecoder();
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>)
      raw += decoder.decode(chunk, { stream: true });
  } catch (err) {
    return {
      ...base,
      backend,
      endedAt: Date.now(),
      outcome: "broken",
      detail: `${String(err)} after ${raw.length} bytes`,
    };
  }
  let text = "";
  let done = false;
  let error = "";
  let finish: string | null = null;
  for (const event of raw.split("\n\n")) {
    const data = event.startsWith("data: ") ? event.slice(6) : "";
    if (data === "") continue;
    if (data === "[DONE]") {
      done = true;
      continue;
    }
    const obj = JSON.parse(data) as {
      error?: { code: string };
      choices?: Array<{ text: string; finish_reason: string | null }>;
    };
    if (obj.error !== undefined) error = obj.error.code;
    for (const c of obj.choices ?? []) {
      text += c.text;
      finish = c.finish_reason ?? finish;
    }
  }
  const endedAt = Date.now();
  if (error !== "" && !done) return { ...base, backend, endedAt, outcome: "error-event", text, detail: error };
  if (done && error === "" && finish === "length")
    return { ...base, backend, endedAt, outcome: "ok", text, detail: "" };
  return {
    ...base,
    backend,
    endedAt,
    outcome: "truncated",
    text,
    detail: `done=${done} error=${error} finish=${finish}`,
  };
}

/** Backend ids of replicas are `<service>/<pool>-<index>/<job id>`. */
const poolOf = (backend: string): string => (backend.split("/")[1] ?? "").replace(/-\d+$/, "");

describe("switchyard serve CLI", () => {
  it("--check validates the shipped example without launching anything", async () => {
    const program = new Command("switchyard").exitOverride();
    registerServeCommand(program);
    let out = "";
    const spy = vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
      out += String(chunk);
      return true;
    });
    try {
      await program.parseAsync(
        ["serve", path.join(packageRoot, "examples", "gateway", "serve-chargpt.yaml"), "--check"],
        { from: "user" },
      );
    } finally {
      spy.mockRestore();
    }
    expect(out).toMatch(
      /serve-chargpt\.yaml: OK — 1 service\(s\), replicas: 1 for chargpt on local-ascend, 1 for chargpt on local-nvidia/,
    );
    await expect(
      program.parseAsync(["serve", path.join(packageRoot, "examples", "gateway", "production.yaml"), "--check"], {
        from: "user",
      }),
    ).rejects.toThrow(/MINDIE_API_KEY|no pool has a replicas/);
  });
});

describe.skipIf(!hasTorch)(
  "switchyard serve: char-GPT replicas on two pools, preferred replica killed under load",
  () => {
    let dir: string;
    let home: string;
    let running: RunningServe | undefined;
    const events: EventRecord[] = [];

    interface Described {
      replicas: Array<{ jobId: string; slot: string; state: string; attempt: number | null; restarts: number }>;
    }
    const replicas = async (): Promise<Described["replicas"]> =>
      (await running!.client.get<Described>(`/api/services/${MODEL}`)).replicas;
    const ranksOf = async (jobId: string): Promise<RankRecord[]> =>
      (await running!.client.get<{ ranks: RankRecord[] }>(`/api/jobs/${jobId}/ranks`)).ranks;

    beforeAll(async () => {
      dir = mkdtempSync(path.join(tmpdir(), "sy-serve-"));
      home = path.join(dir, "home");
      const command = (extra: string[]): string =>
        JSON.stringify([
          "{python}",
          path.join(exampleDir, "serve.py"),
          "--port",
          "{port}",
          "--host",
          "{host}",
          "--checkpoint",
          path.join(dir, "no-checkpoints-here"),
          "--token-delay",
          "0.03",
          ...extra,
        ]);
      const file = path.join(dir, "services.yaml");
      writeFileSync(
        file,
        [
          "gateway: { healthIntervalMs: 500, connectTimeoutMs: 1000, ttftTimeoutMs: 15000, stallTimeoutMs: 5000, ejectCooldownMs: 1000 }",
          "services:",
          `  - model: ${MODEL}`,
          "    pools:",
          `      - name: ${PREFERRED}`,
          `        replicas: { count: 1, engine: vllm-ascend, port: 18401, readyTimeoutS: 60, command: ${command([])}, recovery: { backoffSeconds: 0.5, strikesBeforeCordon: 2, graceSeconds: 2 } }`,
          `      - name: ${FALLBACK}`,
          `        replicas: { count: 1, engine: vllm, port: 18411, readyTimeoutS: 60, command: ${command([])} }`,
        ].join("\n"),
      );
      running = await startServe(file, {
        port: 0,
        host: "127.0.0.1",
        auth: false,
        home,
        logLevel: "silent",
        eventsMs: 100,
        onEvent: (e) => events.push(e),
      });
    }, 60_000);

    afterAll(async () => {
      const pids: number[] = [];
      for (const r of (await replicas().catch(() => [])) ?? []) {
        for (const rank of await ranksOf(r.jobId).catch(() => [])) if (rank.pid !== null) pids.push(rank.pid);
      }
      await running?.close();
      // Undeployed: every replica's process group has ended.
      for (const pid of pids) expect(isSameProcessAlive(pid, null)).toBe(false);
      // serve leaves the server up (`switchyard down`); the test stops it.
      const info = JSON.parse(readFileSync(path.join(home, "server.json"), "utf8")) as ServerInfo;
      process.kill(info.pid, "SIGTERM");
      await waitFor("the server to stop", async () => !isSameProcessAlive(info.pid, null), 20_000).catch(
        () => undefined,
      );
      rmSync(dir, { recursive: true, force: true });
    }, 90_000);

    it("fails over without silent truncation, restarts the replica and returns traffic to the preferred pool", async () => {
      const r = running!;
      const t0 = Date.now();
      await waitFor(
        "both replicas ready and routed",
        async () =>
          (await replicas()).filter((x) => x.state === "ready").length === 2 && r.gateway.backends().length === 2,
        90_000,
      );
      const startup = Date.now() - t0;
      const preferred = (await replicas()).find((x) => x.slot === `${PREFERRED}-0`)!;
      // Before the fault, the preferred pool takes the traffic.
      const warm = await streamOnce(r.http.url, -1);
      expect(warm.outcome).toBe("ok");
      expect(poolOf(warm.backend)).toBe(PREFERRED);
      expect(warm.text).toHaveLength(MAX_TOKENS);

      const loadStart = Date.now();
      let killedAt = 0;
      const killer = (async () => {
        await sleep(KILL_AT_MS);
        const [rank] = await ranksOf(preferred.jobId);
        killedAt = Date.now();
        process.kill(rankProcessPid(rank!), "SIGKILL");
      })();
      const results = await Promise.all(
        Array.from({ length: REQUESTS }, async (_, i) => {
          await sleep(i * SPACING_MS);
          return streamOnce(r.http.url, i);
        }),
      );
      await killer;
      const loadEnd = Date.now();

      const count = (o: Outcome): number => results.filter((x) => x.outcome === o).length;
      const summary = results.map((x) => `${x.i}:${x.outcome}@${poolOf(x.backend)}${x.detail ? `(${x.detail})` : ""}`);
      // Never a silent truncation, never a broken connection: each answer is whole, or says it is not.
      expect(count("truncated"), summary.join(" ")).toBe(0);
      expect(count("broken"), summary.join(" ")).toBe(0);
      expect(count("http-error"), summary.join(" ")).toBe(0);
      for (const x of results.filter((y) => y.outcome === "ok")) expect(x.text).toHaveLength(MAX_TOKENS);
      // Only streams the killed replica was in the middle of may fail, and they fail explicitly.
      const failed = results.filter((x) => x.outcome === "error-event");
      for (const x of failed) {
        expect(poolOf(x.backend)).toBe(PREFERRED);
        expect(x.startedAt).toBeLessThan(killedAt);
        expect(x.endedAt).toBeGreaterThanOrEqual(killedAt);
      }
      const inFlightAtKill = results.filter((x) => x.startedAt < killedAt && x.endedAt >= killedAt).length;
      expect(failed.length).toBeLessThanOrEqual(inFlightAtKill);

      // The server saw the crash (an incident, as for a training rank), restarted the replica, and it is back.
      const mine = (): EventRecord[] => events.filter((e) => e.jobId === preferred.jobId);
      const incident = await waitFor("the incident", async () => mine().find((e) => e.kind === "incident"), 20_000);
      expect(incident.message).toMatch(/killed/);
      const readyAgain = await waitFor(
        "the preferred replica to be ready again",
        async () => mine().find((e) => e.kind === "replica.ready" && e.t > killedAt),
        60_000,
      );
      // serve.py has no checkpoint here: each time it is ready, the console says it serves random weights.
      const kinds = mine()
        .map((e) => e.kind)
        .filter((k) => ["replica.ready", "replica.warning", "incident", "job.restarting"].includes(k));
      expect(kinds.slice(0, 2)).toEqual(["replica.ready", "replica.warning"]);
      expect(kinds.slice(2, 4)).toEqual(["incident", "job.restarting"]);
      expect(kinds.slice(4, 5)).toEqual(["replica.ready"]);
      expect(mine().find((e) => e.kind === "replica.warning")?.message).toMatch(/serving RANDOMLY INITIALISED weights/);
      expect((await replicas()).find((x) => x.slot === `${PREFERRED}-0`)).toMatchObject({
        jobId: preferred.jobId,
        attempt: 2,
        restarts: 1,
        state: "ready",
      });

      // Failover: requests that started after the kill and before the replica was back went to the fallback pool.
      const during = results.filter((x) => x.startedAt > killedAt + 50 && x.startedAt < readyAgain.t);
      expect(during.length).toBeGreaterThan(0);
      for (const x of during) {
        expect(x.outcome, summary.join(" ")).toBe("ok");
        expect(poolOf(x.backend), summary.join(" ")).toBe(FALLBACK);
      }
      const firstFallback = results
        .filter((x) => x.startedAt >= killedAt && poolOf(x.backend) === FALLBACK && x.outcome === "ok")
        .sort((a, b) => a.startedAt - b.startedAt)[0];

      // Traffic returns: once the replica is back in the gateway, the preferred pool takes new requests.
      await waitFor(
        "the gateway to route to the preferred replica again",
        async () => r.gateway.backends().some((b) => poolOf(b.id) === PREFERRED),
        10_000,
      );
      const tail = await Promise.all([0, 1, 2].map((k) => streamOnce(r.http.url, 100 + k)));
      for (const x of tail) {
        expect(x.outcome).toBe("ok");
        expect(poolOf(x.backend)).toBe(PREFERRED);
      }

      // In-flight counters come back to zero.
      await waitFor("in-flight counts to return to zero", async () => r.gateway.inFlight() === 0, 5_000);
      for (const b of r.gateway.backends()) expect(b.inFlight).toBe(0);

      console.log(
        [
          `serve e2e: replicas ready ${startup} ms after start; load ${REQUESTS} streams over ${loadEnd - loadStart} ms`,
          `kill at +${killedAt - loadStart} ms; incident recorded ${incident.t - killedAt} ms after the kill; ` +
            `ready again ${readyAgain.t - killedAt} ms after the kill`,
          `outcomes: ok ${count("ok")}, explicit error events ${failed.length} (of ${inFlightAtKill} streams in flight at the kill), truncated ${count("truncated")}, ` +
            `served by ${PREFERRED} ${results.filter((x) => poolOf(x.backend) === PREFERRED).length}, ` +
            `by ${FALLBACK} ${results.filter((x) => poolOf(x.backend) === FALLBACK).length}`,
          `first fallback answer: started ${firstFallback ? firstFallback.startedAt - killedAt : "-"} ms after the kill, ` +
            `done in ${firstFallback ? firstFallback.endedAt - firstFallback.startedAt : "-"} ms; ` +
            `streams: ${summary.join(" ")}`,
        ].join("\n"),
      );
    }, 180_000);
  },
);
