import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // One temporary folder per run (TMPDIR for the workers and all they start), removed at the end: no test leaks
    // into /tmp (test/global-setup.ts).
    globalSetup: ["test/global-setup.ts"],
    reporters: ["default"],
    // `vitest run --project unit` is the quick loop (pure code and in-process servers, seconds): its files run side by
    // side. `--project integration` starts real processes (PyTorch ranks, the server, Slurm on the shared testbed,
    // Chromium): on 2 cores they must not run side by side, and they start only after every unit file is done
    // (sequence.groupOrder), so no unit file competes with a timing-sensitive real job.
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          include: ["src/**/*.test.ts", "sdk/**/*.test.ts"],
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: "integration",
          include: ["test/**/*.test.ts"],
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
