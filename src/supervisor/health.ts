import path from "node:path";
import {
  gradeProbeRun,
  headline,
  type HealthFinding,
  type HealthThresholds,
  type HealthVerdict,
  type NodeHealthStatus,
} from "../core/health.js";
import type { PoolSpec } from "../core/spec.js";
import type { JobRecord, NodeHealthRecord } from "../store/port.js";
import { packageRoot } from "../paths.js";
import type { SupervisorContext } from "./context.js";
import type { Inventory } from "./inventory.js";

/** The probe the hosts run (stdlib Python): it prints the tools' raw outputs, the server grades them. */
export const healthProbePath = path.join(packageRoot, "agent", "health_probe.py");

/** What a probe is run for: says so in events and in `nodes describe`. */
export type ProbeTrigger = "preflight" | "periodic" | "incident" | "manual";

export interface HealthSettings {
  preflight: boolean;
  intervalSeconds: number;
  afterIncident: boolean;
  timeoutSeconds: number;
  thresholds: HealthThresholds;
}

/** A pool's probe settings with the defaults: on for Slurm pools (real hosts), off for local pools (docs/health.md). */
export function healthSettings(pool: PoolSpec): HealthSettings {
  const h = pool.health;
  const real = pool.executor !== "local";
  return {
    preflight: h?.preflight ?? real,
    intervalSeconds: h?.intervalSeconds ?? (real ? 300 : 0),
    afterIncident: h?.afterIncident ?? real,
    timeoutSeconds: h?.timeoutSeconds ?? 20,
    thresholds: {
      minFreeDiskMiB: h?.minFreeDiskMiB ?? 1024,
      minFreeMemoryMiB: h?.minFreeMemoryMiB ?? 256,
      ...(h?.maxGpuTemperatureC !== undefined ? { maxGpuTemperatureC: h.maxGpuTemperatureC } : {}),
      ...(h?.maxNpuTemperatureC !== undefined ? { maxNpuTemperatureC: h.maxNpuTemperatureC } : {}),
    },
  };
}

/** Causes after which the culprit's host is not probed: the program's own fault, or a host that is gone. */
const noProbeAfter: ReadonlySet<string> = new Set(["software", "numerical", "oom", "host"]);

/** A finding as one phrase: "device: GPU 1 (...): 2 uncorrected ECC error(s) since boot". */
export function findingText(f: HealthFinding): string {
  return `${f.cause}: ${f.message}`;
}

/** Findings worth saying (fatal and degraded), at most `max`. */
function notable(findings: readonly HealthFinding[], max = 8): HealthFinding[] {
  return findings.filter((f) => f.grade !== "info").slice(0, max);
}

export interface ProbeResult extends HealthVerdict {
  node: string;
  probedAt: number;
}

/**
 * Node health probes (core/health.ts grades, agent/health_probe.py runs on the hosts through the executor's
 * runOnNodes): pre-flight before an attempt is placed (a host with a fatal finding is left out and cordoned), periodic
 * on every host of a pool, and on the culprit's host after an incident. Every probe is recorded (`nodes`,
 * `nodes describe`); a status change is a `node.health` event; a fatal finding cordons the node with the finding as
 * reason (Slurm: drained with it); a degraded one is a strike, once per episode.
 */
export class NodeHealth {
  private readonly lastPeriodic = new Map<string, number>();
  private readonly periodicRunning = new Set<string>();
  private readonly background = new Set<Promise<void>>();

  constructor(
    private readonly ctx: SupervisorContext,
    private readonly inventory: Inventory,
  ) {}

  /** Whether this pool's hosts can be probed at all (the executor runs commands on them). */
  private canProbe(): boolean {
    return typeof this.ctx.executor.runOnNodes === "function";
  }

  private python(pool: PoolSpec): string {
    return pool.executor === "slurm"
      ? (pool.slurm?.agentPython ?? "python3")
      : process.env.SWITCHYARD_PYTHON || "python3";
  }

  /**
   * Probes the nodes of a pool at once (one runOnNodes), grades each, records it and acts on it. A probe that could
   * not be run at all (the executor refused) is logged and returns no results: it proves nothing against the hosts.
   */
  async probe(
    pool: PoolSpec,
    nodes: readonly string[],
    trigger: ProbeTrigger,
    opts: { jobId?: string | null; jobDir?: string; checkpointDirs?: readonly string[] } = {},
  ): Promise<ProbeResult[]> {
    if (nodes.length === 0 || !this.ctx.executor.runOnNodes) return [];
    const settings = healthSettings(pool);
    const argv = [
      this.python(pool),
      healthProbePath,
      "--home",
      this.ctx.home,
      "--tool-timeout",
      String(Math.max(1, Math.min(8, settings.timeoutSeconds / 2))),
      ...[...new Set(opts.checkpointDirs ?? [])].slice(0, 16).flatMap((d) => ["--checkpoint-dir", d]),
    ];
    let runs;
    try {
      runs = await this.ctx.executor.runOnNodes(pool, nodes, argv, {
        timeoutMs: settings.timeoutSeconds * 1000,
        maxOutputBytes: 1 << 20,
        ...(opts.jobDir ? { jobDir: opts.jobDir } : {}),
      });
    } catch (err) {
      this.ctx.log(`health probe (${trigger}) of ${nodes.join(",")}: ${(err as Error).message}`);
      return [];
    }
    const results: ProbeResult[] = [];
    for (const run of runs) {
      const verdict = gradeProbeRun(run, settings.thresholds);
      const result: ProbeResult = { ...verdict, node: run.node, probedAt: this.ctx.now() };
      results.push(result);
      await this.act(pool, result, trigger, opts.jobId ?? null);
    }
    return results;
  }

  /** Records a node's probe and acts on it: event on a change, cordon on fatal, strike on a new degraded episode. */
  private async act(pool: PoolSpec, r: ProbeResult, trigger: ProbeTrigger, jobId: string | null): Promise<void> {
    const { store } = this.ctx;
    const [previous] = await store.listNodeHealth({ node: r.node });
    await store.setNodeHealth({
      node: r.node,
      probedAt: r.probedAt,
      status: r.status,
      trigger,
      findings: r.findings,
      excerpt: r.excerpt,
    });
    const top = headline(r.findings);
    const changed = previous ? previous.status !== r.status : r.status !== "ok";
    if (changed || (r.status !== "ok" && r.status !== "unknown" && trigger !== "periodic")) {
      const said = top ? `: ${findingText(top)}` : r.status === "unknown" ? `: ${r.findings[0]?.message ?? ""}` : "";
      await this.ctx.event(jobId, "node.health", `${r.node} ${r.status} (${trigger} probe)${said}`, {
        node: r.node,
        pool: pool.name,
        status: r.status,
        previous: previous?.status ?? null,
        trigger,
        findings: notable(r.findings),
      });
    }
    const node = (await store.listNodes()).find((n) => n.name === r.node);
    if (!node) return;
    if (r.status === "fatal" && top && !node.cordoned) {
      const reason = `health probe: ${findingText(top)}`;
      await store.updateNode(node.name, { cordoned: true, reason });
      await this.inventory.tellManager(node.name, node.pool, true, reason);
      await this.ctx.event(
        jobId,
        "node.cordoned",
        `cordoned ${node.name}: ${trigger} probe found ${findingText(top)}`,
        {
          node: node.name,
          trigger,
          finding: top,
        },
      );
    } else if (r.status === "degraded" && top) {
      const before = previous?.status === "degraded" ? headline(previous.findings) : null;
      if (!before || before.message !== top.message) {
        await store.addStrike({ node: node.name, t: r.probedAt, jobId, incidentId: null, cause: top.cause });
      }
    }
  }

  /**
   * Pre-flight: the hosts an attempt is about to be placed on, probed at once. Those with a fatal finding are left
   * out (cordoned by the probe, so the next placement picks others) and said in the job's events. Returns them, and a
   * phrase for the attempt's event.
   */
  async preflight(
    job: JobRecord,
    poolName: string,
    nodes: readonly string[],
  ): Promise<{ excluded: Array<{ node: string; finding: HealthFinding }>; note: string | null }> {
    const pool = this.ctx.pool(poolName);
    if (!pool || !this.canProbe() || !healthSettings(pool).preflight) return { excluded: [], note: null };
    const results = await this.probe(pool, nodes, "preflight", {
      jobId: job.id,
      jobDir: path.join(this.ctx.home, "jobs", job.id),
      checkpointDirs: [job.spec.checkpoint.dir],
    });
    const excluded = results
      .filter((r) => r.status === "fatal")
      .map((r) => ({ node: r.node, finding: headline(r.findings)! }));
    if (excluded.length === 0) {
      const probed = results.filter((r) => r.status !== "unknown").length;
      return { excluded, note: results.length > 0 ? `pre-flight ok on ${probed} of ${nodes.length} host(s)` : null };
    }
    const note = `pre-flight left out ${excluded.map((e) => `${e.node} (${findingText(e.finding)})`).join(", ")}`;
    await this.ctx.event(job.id, "preflight.excluded", `${note}; placing the attempt again`, {
      pool: poolName,
      nodes: excluded.map((e) => e.node),
      findings: excluded.map((e) => ({ node: e.node, ...e.finding })),
    });
    return { excluded, note };
  }

  /**
   * Right after an incident: the culprit's host probed, so the incident says what the device said. Null when the
   * pool does not probe after incidents, the cause is the program's (or the host is gone), or the probe did not run.
   */
  async afterIncident(
    job: JobRecord,
    poolName: string,
    node: string | null,
    cause: string,
  ): Promise<{ status: NodeHealthStatus; probedAt: number; findings: HealthFinding[] } | null> {
    const pool = this.ctx.pool(poolName);
    if (!node || !pool || !this.canProbe() || noProbeAfter.has(cause) || !healthSettings(pool).afterIncident)
      return null;
    const [r] = await this.probe(pool, [node], "incident", {
      jobId: job.id,
      jobDir: path.join(this.ctx.home, "jobs", job.id),
      checkpointDirs: [job.spec.checkpoint.dir],
    });
    if (!r) return null;
    return { status: r.status, probedAt: r.probedAt, findings: r.findings.slice(0, 16) };
  }

  /**
   * Starts the periodic probe of each pool whose interval has passed (in the background: the loop never waits for
   * it). Every host that is not cordoned is probed, idle or busy.
   */
  periodicIfDue(jobs: readonly JobRecord[]): void {
    if (!this.canProbe()) return;
    const now = this.ctx.now();
    for (const pool of this.ctx.cluster.pools) {
      const every = healthSettings(pool).intervalSeconds;
      if (every <= 0 || this.periodicRunning.has(pool.name)) continue;
      const last = this.lastPeriodic.get(pool.name);
      if (last !== undefined && now - last < every * 1000) continue;
      this.lastPeriodic.set(pool.name, now);
      this.periodicRunning.add(pool.name);
      const checkpointDirs = jobs.filter((j) => j.spec.pools.length === 0 || j.spec.pools.includes(pool.name));
      const task = (async () => {
        try {
          const nodes = (await this.ctx.store.listNodes()).filter((n) => n.pool === pool.name && !n.cordoned);
          await this.probe(
            pool,
            nodes.map((n) => n.name),
            "periodic",
            { checkpointDirs: checkpointDirs.map((j) => j.spec.checkpoint.dir) },
          );
        } catch (err) {
          this.ctx.log(`periodic health probe of ${pool.name}: ${(err as Error).message}`);
        } finally {
          this.periodicRunning.delete(pool.name);
        }
      })();
      this.background.add(task);
      void task.finally(() => this.background.delete(task));
    }
  }

  /** Probes one node now (`nodes probe`). */
  async probeNode(name: string): Promise<ProbeResult> {
    const node = (await this.ctx.store.listNodes()).find((n) => n.name === name);
    if (!node) throw new Error(`no node named ${name}`);
    const pool = this.ctx.pool(node.pool);
    if (!pool || !this.canProbe()) throw new Error(`pool ${node.pool} cannot run commands on its nodes`);
    const [r] = await this.probe(pool, [name], "manual");
    if (!r) throw new Error(`the probe of ${name} could not be run (see the server log)`);
    return r;
  }

  /** Waits for background probes (the supervisor is stopping). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.background]);
  }
}

/** A node's health as `nodes` shows it: the latest probe without its raw excerpt (that is for `nodes describe`). */
export type NodeHealthSummary = Omit<NodeHealthRecord, "excerpt">;
