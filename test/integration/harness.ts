import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll } from "vitest";
import { makeClient, type ApiClient } from "../../src/cli/client.js";
import { findPython } from "../../src/executors/python.js";
import { childPids } from "../../src/executors/local/procfs.js";
import { packageRoot } from "../../src/paths.js";
import { readToken, type ServerInfo } from "../../src/server/config.js";
import type { EventRecord, RankRecord, StepSample } from "../../src/store/port.js";
import { missing } from "../requirements.js";

/** Integration tests drive a real server process (built dist/) over a temporary SWITCHYARD_HOME. */

export const torchPython = findPython();
export const hasTorch = !missing(
  "a Python that can import torch",
  torchPython?.hasTorch === true,
  `install Debian's python3-torch or set SWITCHYARD_PYTHON (tried ${torchPython?.tried.join(", ") ?? "python3"})`,
);

export const exampleDir = path.join(packageRoot, "examples", "chargpt");

export function tempHome(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), `sy-${prefix}-`));
}

export function writeCluster(home: string, yaml?: string): string {
  const file = path.join(home, "cluster.yaml");
  writeFileSync(
    file,
    yaml ??
      [
        "pools:",
        "  - name: unstable",
        "    accelerator: { vendor: ascend, model: 910B }",
        "    nodes: 2",
        "    devicesPerNode: 2",
        "  - name: reliable",
        "    accelerator: { vendor: nvidia, model: H20 }",
        "    nodes: 1",
        "    devicesPerNode: 2",
      ].join("\n"),
  );
  return file;
}

export class ServerProcess {
  child: ChildProcess | null = null;
  info: ServerInfo | null = null;
  /** What the server printed (stdout and stderr). */
  output = "";

  constructor(
    readonly home: string,
    readonly clusterFile: string,
  ) {}

  async start(): Promise<ApiClient> {
    const infoFile = path.join(this.home, "server.json");
    const before = readInfo(infoFile)?.startedAt ?? 0;
    this.child = spawn(
      process.execPath,
      [
        path.join(packageRoot, "bin", "switchyard.js"),
        "server",
        "--home",
        this.home,
        "--cluster",
        this.clusterFile,
        "--port",
        "0",
      ],
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, SWITCHYARD_HOME: this.home } },
    );
    this.output = "";
    this.child.stdout?.on("data", (d: Buffer) => (this.output += d.toString()));
    this.child.stderr?.on("data", (d: Buffer) => (this.output += d.toString()));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const info = readInfo(infoFile);
      if (info && info.startedAt > before && info.pid === this.child.pid) {
        this.info = info;
        return makeClient(info.url, readToken(this.home));
      }
      if (this.child.exitCode !== null) break;
      await sleep(100);
    }
    throw new Error(`server did not start:\n${this.output}`);
  }

  /** The dashboard's URL with the token (the server answers it with a cookie and a redirect to the bare URL). */
  dashboardUrl(): string {
    return `${this.info!.url}/?token=${encodeURIComponent(readToken(this.home) ?? "")}`;
  }

  /** SIGKILL: the control plane dies at an arbitrary instant. */
  kill9(): void {
    this.child?.kill("SIGKILL");
  }

  async stop(): Promise<void> {
    if (this.child && this.child.exitCode === null) {
      this.child.kill("SIGTERM");
      await new Promise((r) => this.child?.once("exit", r));
    }
  }
}

function readInfo(file: string): ServerInfo | null {
  try {
    return JSON.parse(readFileSync(file, "utf8")) as ServerInfo;
  } catch {
    return null;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface JobView {
  id: string;
  state: string;
  restarts: number;
  reason: string | null;
  last: StepSample | null;
  attempts: Array<{ n: number; resumeStep: number | null; resumeFrom: string | null; pool: string; nodes: string[] }>;
  incidents: Array<{ cause: string; culpritRank: number | null; culpritNode: string | null; summary: string }>;
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | null | undefined | false>,
  timeoutMs = 120_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(150);
  }
}

export async function job(client: ApiClient, id: string): Promise<JobView> {
  return client.get<JobView>(`/api/jobs/${id}`);
}

export async function waitForStep(client: ApiClient, id: string, step: number): Promise<JobView> {
  return waitFor(`job ${id} to reach step ${step}`, async () => {
    const j = await job(client, id);
    if (["FAILED", "CANCELLED", "SUCCEEDED"].includes(j.state) && (j.last?.step ?? 0) < step) {
      throw new Error(`job ended ${j.state} (${j.reason}) before step ${step}`);
    }
    return (j.last?.step ?? 0) >= step ? j : null;
  });
}

export async function waitForEnd(client: ApiClient, id: string, timeoutMs = 180_000): Promise<JobView> {
  return waitFor(
    `job ${id} to end`,
    async () => {
      const j = await job(client, id);
      return ["FAILED", "CANCELLED", "SUCCEEDED"].includes(j.state) ? j : null;
    },
    timeoutMs,
  );
}

export async function events(client: ApiClient, id: string): Promise<EventRecord[]> {
  return client.get<EventRecord[]>(`/api/jobs/${id}/events`);
}

export async function ranks(client: ApiClient, id: string): Promise<RankRecord[]> {
  return (await client.get<{ ranks: RankRecord[] }>(`/api/jobs/${id}/ranks`)).ranks;
}

/** The training process of a rank (the child of its wrapper shell). */
export function rankProcessPid(rank: RankRecord): number {
  const child = childPids(rank.pid!)[0];
  if (child === undefined) throw new Error(`rank ${rank.rank} has no running process`);
  return child;
}

export async function submit(client: ApiClient, dir: string, name: string, yaml: string): Promise<string> {
  const file = path.join(dir, `${name}.yaml`);
  writeFileSync(file, yaml);
  const res = await client.post<{ id: string }>("/api/jobs", { yaml, file });
  return res.id;
}

/** The `final_loss` the example prints on a fixed held-out batch, from rank 0's log of the last attempt. */
export async function finalLoss(client: ApiClient, id: string): Promise<number> {
  const { text } = await client.get<{ text: string }>(`/api/jobs/${id}/logs?rank=0`);
  const m = /final_loss (\S+)/.exec(text);
  if (!m) throw new Error(`no final_loss in rank 0's log:\n${text.slice(-2000)}`);
  return Number(m[1]);
}

export function chargptJob(opts: {
  name: string;
  home: string;
  steps: number;
  ckptEvery: number;
  extra?: string[];
  pools?: string[];
}): string {
  mkdirSync(opts.home, { recursive: true }); // the workdir: the server refuses one that does not exist
  const args = [
    "--steps",
    String(opts.steps),
    "--ckpt-every",
    String(opts.ckptEvery),
    "--eval-final",
    "--batch",
    "8",
    ...(opts.extra ?? []),
  ];
  return [
    `name: ${opts.name}`,
    `pools: [${(opts.pools ?? ["unstable", "reliable"]).join(", ")}]`,
    "nodes: 1",
    "procsPerNode: 2",
    `command: ${JSON.stringify(["{python}", path.join(exampleDir, "train.py"), ...args])}`,
    `workdir: ${JSON.stringify(opts.home)}`,
    `steps: ${opts.steps}`,
    "checkpoint: { dir: ckpt, keep: 3 }",
    "recovery: { maxRestarts: 4, backoffSeconds: 0.2, strikesBeforeCordon: 2, graceSeconds: 2 }",
  ].join("\n");
}

export interface ServerContext {
  home: string;
  server: ServerProcess;
  /** Set once the server is up; a test that restarts the server assigns the new one. */
  client: ApiClient;
}

/** A real server over a fresh home for the enclosing describe block: started before its tests, stopped after. */
export function useServer(prefix: string): ServerContext {
  const home = tempHome(prefix);
  const ctx: ServerContext = {
    home,
    server: new ServerProcess(home, writeCluster(home)),
    client: makeClient("", null),
  };
  beforeAll(async () => {
    ctx.client = await ctx.server.start();
  }, 60_000);
  afterAll(() => ctx.server.stop());
  return ctx;
}
