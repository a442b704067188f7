import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Command } from "commander";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { registerServeCommand, startServe, type RunningServe } from "../../src/cli/commands/serve.js";
import { isSameProcessAlive } from "../../src/executors/local/procfs.js";
import type { ReplicaEvent } from "../../src/gateway/replicas.js";
import { packageRoot } from "../../src/paths.js";
import { exampleDir, hasTorch, sleep, waitFor } from "./harness.js";

/**
 * End to end (issue 4 part 5): `switchyard serve` runs one replica of examples/chargpt/serve.py on each of two local
 * pools behind the gateway; during a streaming load the preferred pool's replica is SIGKILLed. Every request must end
 * either complete (`[DONE]`, every token) or with an explicit error; the replica must be restarted and registered
 * again, and traffic must return to the preferred pool. No training run: serve.py falls back to random weights.
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

const poolOf = (backend: string): string => backend.split("/")[1] ?? "";

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
    let running: RunningServe | undefined;
    const events: ReplicaEvent[] = [];

    beforeAll(async () => {
      dir = mkdtempSync(path.join(tmpdir(), "sy-serve-"));
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
        runDir: path.join(dir, "run"),
        logLevel: "silent",
        pollMs: 200,
        onEvent: (e) => events.push(e),
      });
    });

    afterAll(async () => {
      const pids = running?.supervisor.replicas().map((r) => r.pid) ?? [];
      await running?.close();
      for (const pid of pids) if (pid !== null) expect(isSameProcessAlive(pid, null)).toBe(false);
      rmSync(dir, { recursive: true, force: true });
    });

    it("fails over without silent truncation, restarts the replica and returns traffic to the preferred pool", async () => {
      const r = running!;
      const t0 = Date.now();
      await waitFor(
        "both replicas ready",
        async () => r.supervisor.replicas().every((x) => x.state === "ready"),
        60_000,
      );
      const startup = Date.now() - t0;
      // Before the fault, the preferred pool takes the traffic.
      const warm = await streamOnce(r.http.url, -1);
      expect(warm).toMatchObject({ outcome: "ok", backend: `${MODEL}/${PREFERRED}/${PREFERRED}-0` });
      expect(warm.text).toHaveLength(MAX_TOKENS);

      const loadStart = Date.now();
      let killedAt = 0;
      const killer = (async () => {
        await sleep(KILL_AT_MS);
        killedAt = Date.now();
        expect(r.supervisor.signalReplica(`${PREFERRED}-0`, "SIGKILL")).toBe(true);
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

      // The supervisor saw the crash, unregistered the replica, restarted it and registered it again.
      const exited = events.find((e) => e.replica === `${PREFERRED}-0` && e.kind === "exited");
      expect(exited?.message).toMatch(/killed by SIGKILL/);
      const readyAgain = await waitFor(
        "the preferred replica to be ready again",
        async () => events.find((e) => e.replica === `${PREFERRED}-0` && e.kind === "ready" && e.t > killedAt),
        60_000,
      );
      // serve.py has no checkpoint here: each time it is ready, the console says it serves random weights.
      expect(events.filter((e) => e.replica === `${PREFERRED}-0`).map((e) => e.kind)).toEqual([
        "launched",
        "ready",
        "warning",
        "exited",
        "restart",
        "launched",
        "ready",
        "warning",
      ]);
      expect(events.find((e) => e.kind === "warning")?.message).toMatch(/serving RANDOMLY INITIALISED weights/);
      expect(r.supervisor.replicas().find((x) => x.replica === `${PREFERRED}-0`)).toMatchObject({
        pool: PREFERRED,
        attempt: 2,
        state: "ready",
      });

      // Failover: requests that started after the kill and before the replica was back went to the fallback pool.
      const during = results.filter((x) => x.startedAt > killedAt + 50 && x.startedAt < readyAgain.t);
      expect(during.length).toBeGreaterThan(0);
      for (const x of during)
        expect(x, summary.join(" ")).toMatchObject({ outcome: "ok", backend: `${MODEL}/${FALLBACK}/${FALLBACK}-0` });
      const firstFallback = results
        .filter((x) => x.startedAt >= killedAt && poolOf(x.backend) === FALLBACK && x.outcome === "ok")
        .sort((a, b) => a.startedAt - b.startedAt)[0];

      // Traffic returns: once the replica is registered again, the preferred pool takes new requests.
      const after = results.filter((x) => x.startedAt > readyAgain.t + 50);
      for (const x of after) expect(poolOf(x.backend)).toBe(PREFERRED);
      const tail = await Promise.all([0, 1, 2].map((k) => streamOnce(r.http.url, 100 + k)));
      for (const x of tail) expect(x).toMatchObject({ outcome: "ok", backend: `${MODEL}/${PREFERRED}/${PREFERRED}-0` });

      // In-flight counters come back to zero.
      await waitFor("in-flight counts to return to zero", async () => r.gateway.inFlight() === 0, 5_000);
      for (const b of r.gateway.backends()) expect(b.inFlight).toBe(0);

      console.log(
        [
          `serve e2e: replicas ready ${startup} ms after start; load ${REQUESTS} streams over ${loadEnd - loadStart} ms`,
          `kill at +${killedAt - loadStart} ms; crash seen (unregistered) ${exited!.t - killedAt} ms after the kill; ` +
            `re-registered ${readyAgain.t - killedAt} ms after the kill`,
          `outcomes: ok ${count("ok")}, explicit error events ${failed.length} (of ${inFlightAtKill} streams in flight at the kill), truncated ${count("truncated")}, ` +
            `served by ${PREFERRED} ${results.filter((x) => poolOf(x.backend) === PREFERRED).length}, ` +
            `by ${FALLBACK} ${results.filter((x) => poolOf(x.backend) === FALLBACK).length}; ` +
            `after re-registration ${after.length} load requests, all on ${PREFERRED}`,
          `first fallback answer: started ${firstFallback ? firstFallback.startedAt - killedAt : "-"} ms after the kill, ` +
            `done in ${firstFallback ? firstFallback.endedAt - firstFallback.startedAt : "-"} ms; ` +
            `streams: ${summary.join(" ")}`,
        ].join("\n"),
      );
    }, 120_000);
  },
);
