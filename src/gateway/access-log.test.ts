/**
 * The JSON access log (access-log.ts): pino-shaped lines, written in batches to a real file, line-aligned pieces of
 * at most PIPE_BUF bytes for pipes, and a bound on what waits when the reader stops (lines dropped and counted,
 * never unbounded memory).
 */
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { AccessLog, pipeChunk } from "./access-log.js";

const dir = mkdtempSync(join(tmpdir(), "sy-access-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function lines(file: string): Array<Record<string, unknown>> {
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe("AccessLog", () => {
  it("writes pino-shaped lines in batches: after flushMs, or at once when flushBytes gather", async () => {
    const file = join(dir, "a.log");
    const fd = openSync(file, "w", 0o600);
    const log = new AccessLog(fd, { flushMs: 100, flushBytes: 4096, bindings: { worker: 2 } });
    log.request({ reqId: "r1", path: '/v1/"odd"\n', status: 200, ms: 1.5 });
    expect(readFileSync(file, "utf8")).toBe("");
    await sleep(250);
    const [first] = lines(file);
    expect(first).toMatchObject({
      level: 30,
      pid: process.pid,
      worker: 2,
      reqId: "r1",
      path: '/v1/"odd"\n',
      msg: "request",
    });
    expect(typeof first!.time).toBe("number");
    expect(typeof first!.hostname).toBe("string");
    for (let i = 0; i < 60; i++) log.request({ reqId: `b${i}`, pad: "x".repeat(100) });
    await sleep(50); // well before flushMs: only the size can have started this write
    expect(lines(file).length).toBeGreaterThan(1);
    log.close();
    expect(lines(file).map((l) => l.reqId)).toEqual(["r1", ...Array.from({ length: 60 }, (_, i) => `b${i}`)]);
    closeSync(fd);
  });

  it("past maxPendingBytes drops lines and says how many in the next line written", async () => {
    const file = join(dir, "b.log");
    const fd = openSync(file, "w", 0o600);
    const log = new AccessLog(fd, { flushMs: 10_000, flushBytes: 1 << 30, maxPendingBytes: 2000 });
    for (let i = 0; i < 50; i++) log.request({ reqId: `r${i}`, pad: "y".repeat(100) });
    log.flushSync();
    log.request({ reqId: "after" });
    log.close();
    const got = lines(file);
    const kept = got.filter((l) => l.reqId !== "after").length;
    expect(kept).toBeGreaterThan(5);
    expect(kept).toBeLessThan(50);
    expect(got.at(-1)).toMatchObject({ reqId: "after", droppedBefore: 50 - kept });
    closeSync(fd);
  });

  it("cuts what goes to a pipe at line ends, each piece at most 4096 bytes (a longer line goes alone)", () => {
    const line = (n: number) => `${"z".repeat(n - 1)}\n`;
    const text = line(1000) + line(1000) + line(1000) + line(1000) + line(1000);
    expect(pipeChunk(text)).toBe(line(1000).repeat(4));
    expect(pipeChunk(line(5000) + line(10))).toBe(line(5000));
    expect(pipeChunk(line(10) + line(5000))).toBe(line(10));
    // Bytes, not characters: 1400 three-byte characters are 4200 bytes.
    const wide = `${"€".repeat(1400)}\n`;
    expect(pipeChunk(line(10) + wide)).toBe(line(10));
    expect(pipeChunk("short\nno end")).toBe("short\nno end");
  });
});
