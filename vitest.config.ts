import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Integration tests start real multi-process PyTorch jobs; on 2 cores they must not run side by side.
    fileParallelism: false,
    reporters: ["default"],
    // `vitest run --project unit` is the quick loop (pure code and in-process servers, seconds);
    // `--project integration` starts real processes: PyTorch ranks, the server, Chromium.
    projects: [
      { extends: true, test: { name: "unit", include: ["src/**/*.test.ts", "sdk/**/*.test.ts"] } },
      { extends: true, test: { name: "integration", include: ["test/**/*.test.ts"] } },
    ],
  },
});
