import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";
import OpenAI from "openai";
import pino from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/cli/client.js";
import { followControlPlane } from "../../src/gateway/control-plane.js";
import type { BackendSet } from "../../src/gateway/control-plane-source.js";
import { Gateway } from "../../src/gateway/gateway.js";
import { listenGateway, type ListeningGateway } from "../../src/gateway/server.js";
import { packageRoot, pythonSdkDir } from "../../src/paths.js";
import { readToken } from "../../src/server/config.js";
import type { EventRecord } from "../../src/store/port.js";
import { ServerProcess, sleep, tempHome, waitFor, writeCluster } from "./harness.js";

/**
 * From checkpoint to served model (issue 14): a service with `model: { fromJob: trainer }` serves the newest
 * checkpoint of the training job whose manifest verifies, never a torn one, and rolls its replicas onto a newer one
 * one at a time (new replica ready and in the backend set, then the old one drains and stops), while a gateway that
 * follows the control plane carries a streaming load from the official `openai` client: 0 failed requests.
 *
 * The model server is the stand-in engine (plain Node): its stream names the checkpoint folder it was given.
 */
const fixture = path.join(packageRoot, "src", "gateway", "testing", "replica-fixture.mjs");
const MODEL = "chargpt-served";

/** Writes a checkpoint with the real SDK (manifest last, atomic rename); `corrupt` rots a byte afterwards. */
function writeCheckpoint(root: string, step: number, corrupt = false): string {
  const script = `
import os, sys
sys.path.insert(0, ${JSON.stringify(pythonSdkDir)})
import switchyard
with switchyard.checkpoint(${step}, root=${JSON.stringify(root)}) as d:
    open(os.path.join(d, "state.pt"), "wb").write(b"weights at step %d" % ${step})
if ${corrupt ? "True" : "False"}:
    with open(os.path.join(${JSON.stringify(root)}, "step-%08d" % ${step}, "state.pt"), "r+b") as f:
        f.write(b"X")
`;
  execFileSync("python3", ["-c", script]);
  return path.join(root, `step-${String(step).padStart(8, "0")}`);
}

interface Described {
  replicas: Array<{ jobId: string; slot: string; state: string; checkpointStep: number | null }>;
}

/**
 * With room for a successor beside each replica (3 nodes for 2 replicas), the successor is ready before its
 * predecessor drains (surge); in a full pool (2 nodes), a predecessor drains first while the other replica serves.
 */
describe.each([
  { serveNodes: 3, surge: true },
  { serveNodes: 2, surge: false },
])(
  "rolling update onto a newer verified checkpoint under streaming load ($serveNodes nodes)",
  ({ serveNodes, surge }) => {
    const home = tempHome("rolling");
    const server = new ServerProcess(
      home,
      writeCluster(
        home,
        ["pools:", "  - name: train", "    nodes: 1", "  - name: serve", `    nodes: ${serveNodes}`].join("\n"),
      ),
    );
    let client: ApiClient;
    let gateway: Gateway;
    let http: ListeningGateway;
    const stop = new AbortController();
    let trainerId: string | undefined;

    beforeAll(async () => {
      client = await server.start();
      gateway = new Gateway(undefined, { logger: pino({ level: "silent" }) });
      http = await listenGateway(gateway, { port: 0 });
      gateway.startHealthChecks();
      followControlPlane({
        url: server.info!.url,
        token: readToken(home)!,
        cacheFile: path.join(home, "gateway", "backends.json"),
        logger: pino({ level: "silent" }),
        signal: stop.signal,
        apply: (list) => gateway.setBackends(list),
        watch: { minBackoffMs: 50, maxBackoffMs: 200, waitSeconds: 5 },
      });
    }, 30_000);

    afterAll(async () => {
      stop.abort();
      // Ranks outlive the server by design: the training job is cancelled, not left running.
      if (trainerId) await client.post(`/api/jobs/${trainerId}/cancel`).catch(() => undefined);
      await client.post(`/api/services/${MODEL}/undeploy`).catch(() => undefined);
      await waitFor("undeploy", async () => (await client.get<unknown[]>("/api/services")).length === 0, 30_000).catch(
        () => undefined,
      );
      await http?.close();
      await gateway?.close();
      await server.stop();
    }, 60_000);

    it("serves the newest verified checkpoint, skips a torn one, rolls one replica at a time with 0 failed requests", async () => {
      // The training job: its checkpoints are written below by the test with the SDK, as a training script would.
      const jobYaml = ["name: trainer", "pools: [train]", "command: [/bin/sleep, '600']"].join("\n");
      const jobFile = path.join(home, "trainer.yaml");
      writeFileSync(jobFile, jobYaml);
      const trainer = await client.post<{ id: string }>("/api/jobs", { yaml: jobYaml, file: jobFile });
      trainerId = trainer.id;
      const detail = await client.get<{ spec: { checkpoint: { dir: string } } }>(`/api/jobs/${trainer.id}`);
      const root = detail.spec.checkpoint.dir;
      writeCheckpoint(root, 10);

      const servicesYaml = [
        "services:",
        `  - model: ${MODEL}`,
        "    pools:",
        "      - name: serve",
        "        replicas:",
        "          count: 2",
        "          engine: vllm",
        "          model: { fromJob: trainer }",
        `          command: ["${process.execPath}", "${fixture}", --port, "{port}", --checkpoint, "{checkpoint}", --tokens, "8", --token-delay-ms, "60", --ready-after-ms, "500"]`,
        "          port: 18500",
        "          readyTimeoutS: 30",
        "          drainSeconds: 10",
      ].join("\n");
      const file = path.join(home, "services.yaml");
      writeFileSync(file, servicesYaml);
      await client.post("/api/services", { yaml: servicesYaml, file });
      const ready = async (step: number): Promise<boolean> => {
        const set = await client.get<BackendSet>("/api/services/backends");
        const b = set.services.flatMap((s) => s.backends);
        return b.length === 2 && b.every((x) => x.state === "ready" && x.checkpointStep === step);
      };
      await waitFor("two replicas serving step 10", () => ready(10), 30_000);
      await waitFor("the gateway to route to both", async () => gateway.backends().length === 2, 10_000);

      // Streaming load through the gateway with the official client, from now until the roll is over.
      const openai = new OpenAI({ baseURL: `${http.url}/v1`, apiKey: "unused", maxRetries: 0 });
      const failures: string[] = [];
      const served = new Map<string, number>();
      let requests = 0;
      let loading = true;
      const worker = async (): Promise<void> => {
        while (loading) {
          requests++;
          try {
            const stream = await openai.completions.create({ model: MODEL, prompt: "x", max_tokens: 8, stream: true });
            let text = "";
            let finished = false;
            for await (const chunk of stream) {
              text += chunk.choices[0]?.text ?? "";
              if (chunk.choices[0]?.finish_reason) finished = true;
            }
            const label = text.replace(/\.+$/, "");
            if (text.length !== label.length + 7) failures.push(`short answer "${text}"`);
            served.set(label, (served.get(label) ?? 0) + 1);
            void finished;
          } catch (err) {
            failures.push(String(err));
          }
        }
      };
      const workers = Array.from({ length: 4 }, () => worker());
      await sleep(1000);

      // A newer checkpoint that is torn (one byte rotted after the manifest was written): never served.
      writeCheckpoint(root, 20, true);
      await sleep(4000);
      const tornEvents = await client.get<EventRecord[]>("/api/events");
      expect(tornEvents.some((e) => e.kind === "replica.rolling")).toBe(false);
      expect(await ready(10)).toBe(true);

      // A newer checkpoint that verifies: the replicas roll onto it, one at a time.
      writeCheckpoint(root, 30);
      await waitFor("two replicas serving step 30", () => ready(30), 60_000);
      await waitFor(
        "the old replicas stopped",
        async () => {
          const d = await client.get<Described>(`/api/services/${MODEL}`);
          return d.replicas.filter((r) => r.state !== "stopped").length === 2;
        },
        30_000,
      );
      await sleep(500);
      loading = false;
      await Promise.all(workers);

      expect(failures, failures.slice(0, 5).join("\n")).toEqual([]);
      expect(served.get("step-00000010") ?? 0).toBeGreaterThan(0);
      expect(served.get("step-00000030") ?? 0).toBeGreaterThan(0);
      expect(served.has("step-00000020")).toBe(false);

      // One at a time: for each slot, its successor was ready before the old one drained, and the second slot's roll
      // began after the first slot's old replica stopped.
      const all = await client.get<EventRecord[]>("/api/events");
      const kinds = all
        .filter((e) => ["replica.rolling", "replica.ready", "replica.draining", "replica.stopped"].includes(e.kind))
        .map((e) => ({ kind: e.kind, job: e.jobId, t: e.t, id: e.id }));
      const rolls = kinds.filter((k) => k.kind === "replica.rolling");
      expect(rolls).toHaveLength(2);
      const stops = kinds.filter((k) => k.kind === "replica.stopped");
      expect(stops).toHaveLength(2);
      expect(stops[0]!.id).toBeLessThan(rolls[1]!.id);
      const drains = kinds.filter((k) => k.kind === "replica.draining");
      const readies = kinds.filter((k) => k.kind === "replica.ready");
      // Readiness events: 2 at deploy, then one per roll; with room, each before the drain of the replica it replaces,
      // in a full pool after it (the other replica served meanwhile).
      expect(readies).toHaveLength(4);
      if (surge) {
        expect(readies[2]!.id).toBeLessThan(drains[0]!.id);
        expect(readies[3]!.id).toBeLessThan(drains[1]!.id);
      } else {
        expect(readies[2]!.id, JSON.stringify(kinds)).toBeGreaterThan(stops[0]!.id);
        expect(readies[2]!.id).toBeLessThan(drains[1]!.id);
      }
      console.log(
        `rolling (${serveNodes} nodes): ${requests} streaming requests during the roll, ${failures.length} failed; served by step 10: ` +
          `${served.get("step-00000010") ?? 0}, by step 30: ${served.get("step-00000030") ?? 0}`,
      );
    }, 180_000);
  },
);
