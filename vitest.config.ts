import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts", "sdk/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Integration tests start real multi-process PyTorch jobs; on 2 cores they must not run side by side.
    fileParallelism: false,
    reporters: ["default"],
  },
});
