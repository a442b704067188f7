/** Helpers shared by the gateway benchmarks (run.ts: latency and throughput; cpu.ts: CPU per request). */
import { execFileSync } from "node:child_process";
import { createServer } from "node:net";
import { join } from "node:path";

export function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** A port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** Resolves once `url` answers at all (any status), polling every 50 ms; throws after `tries`. */
export async function waitHttp(url: string, tries = 100): Promise<void> {
  for (let i = 0; i < tries; i++) {
    try {
      const r = await fetch(url);
      await r.arrayBuffer();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`${url} did not come up`);
}

/** Compiles bench/gateway/proc.ts (backend, load generator) and what it imports to `outDir`. */
export function compileProc(root: string, outDir: string): void {
  execFileSync(
    join(root, "node_modules", ".bin", "tsc"),
    [
      "--outDir",
      outDir,
      "--rootDir",
      root,
      "--module",
      "NodeNext",
      "--moduleResolution",
      "NodeNext",
      "--target",
      "ES2022",
      "--strict",
      "--skipLibCheck",
      "--types",
      "node",
      "--declaration",
      "false",
      "--sourceMap",
      "false",
      join(root, "bench/gateway/proc.ts"),
      join(root, "bench/gateway/floor.ts"),
    ],
    { stdio: "inherit" },
  );
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}
