import type { AttemptRecord, JobRecord, RankRecord } from "../store/port.js";
import type { SupervisorContext } from "./context.js";
import { FaultModel } from "./fault-model.js";

/**
 * A pool's declared fault model (cluster YAML `faultModel`) acting on the real ranks of attempts on that pool: an
 * unstable fleet played on a stable machine. Chaos, not detection: what it does is found by the detectors like any
 * other fault.
 */
export class PoolFaults {
  private readonly models = new Map<string, FaultModel>();
  private readonly lastDraw = new Map<string, number>();

  constructor(private readonly ctx: SupervisorContext) {}

  async inject(job: JobRecord, attempt: AttemptRecord, ranks: RankRecord[]): Promise<void> {
    const pool = this.ctx.pool(attempt.pool);
    if (!pool?.faultModel) return;
    let model = this.models.get(pool.name);
    if (!model) this.models.set(pool.name, (model = new FaultModel(pool)));
    const now = this.ctx.now();
    const key = `${job.id}/${attempt.n}`;
    const last = this.lastDraw.get(key) ?? now;
    this.lastDraw.set(key, now);
    const live = ranks.filter((r) => r.exitedAt === null);
    const fault = model.draw(now - last, live.length);
    if (!fault || live.length === 0) return;
    const rank = live[model.pickRank(live.length)]!;
    if (this.ctx.executor.signalRank(rank, fault.kind === "kill" ? "SIGKILL" : "SIGSTOP")) {
      await this.ctx.event(job.id, "chaos", `fault model: ${fault.why} hits rank ${rank.rank} on ${rank.node}`, {
        rank: rank.rank,
        node: rank.node,
        kind: fault.kind,
      });
    }
  }
}
