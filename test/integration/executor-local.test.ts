import type { PoolSpec } from "../../src/core/spec.js";
import { LocalExecutor } from "../../src/executors/local/local.js";
import { executorConformance } from "./executor-conformance.js";

const pool: PoolSpec = {
  name: "local-ascend",
  executor: "local",
  accelerator: { vendor: "ascend", model: "910B" },
  nodes: 2,
  devicesPerNode: 2,
};

executorConformance({
  name: "local",
  executor: () => new LocalExecutor(),
  pool,
  nodes: ["local-ascend-0", "local-ascend-1"],
  python: "/usr/bin/python3",
});
