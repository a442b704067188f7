/**
 * Bodies over maxBodyBytes: the client must read the 413, never a reset connection, whatever way it uploads. The
 * uploads come from another process (a real client on its own event loop), 50 MB each, several times per mode.
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FixtureBackend } from "./testing/fixture-backend.js";
import { chat, post, startHarness, type Harness } from "./testing/harness.js";

const run = promisify(execFile);

/** Uploads `mb` MB to `url` in the given mode, `times` times in a row; prints one line per upload. */
const CLIENT = `
import http from "node:http";
const [url, mode, mb, times] = process.argv.slice(1);
const body = Buffer.alloc(Number(mb) * 1024 * 1024, 0x61);
function once() {
  return new Promise((resolve) => {
    const headers = { "content-type": "application/json" };
    if (mode !== "chunked") headers["content-length"] = String(body.length);
    if (mode === "expect") headers.expect = "100-continue";
    const req = http.request(url, { method: "POST", headers }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode, code: JSON.parse(text).error?.code }));
      res.on("error", (e) => resolve({ error: e.code ?? e.message }));
    });
    req.on("error", (e) => resolve({ error: e.code ?? e.message }));
    const send = () => {
      let off = 0;
      const pump = () => {
        while (off < body.length) {
          const piece = body.subarray(off, off + 1024 * 1024);
          off += piece.length;
          if (!req.write(piece)) return void req.once("drain", pump);
        }
        req.end();
      };
      pump();
    };
    if (mode === "expect") req.on("continue", send);
    else send();
  });
}
for (let i = 0; i < Number(times); i++) console.log(JSON.stringify(await once()));
`;

describe("request bodies over the limit", () => {
  let a: FixtureBackend;
  let h: Harness;

  beforeAll(async () => {
    a = await FixtureBackend.start("a");
    h = await startHarness({ main: [a] });
  });
  afterAll(async () => {
    await h.close();
    await a.close();
  });

  for (const mode of ["content-length", "chunked", "expect"]) {
    it(`a 50 MB upload (${mode}) gets 413 every time, never a broken connection`, async () => {
      const { stdout } = await run(
        process.execPath,
        ["--input-type=module", "-e", CLIENT, `${h.url}/v1/chat/completions`, mode, "50", "5"],
        { timeout: 60_000 },
      );
      const results = stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as unknown);
      expect(results).toEqual(Array.from({ length: 5 }, () => ({ status: 413, code: "request_too_large" })));
      expect(a.requests).toHaveLength(0);
    }, 90_000);
  }

  it("serves the next request normally after refusing one", async () => {
    const res = await post(`${h.url}/v1/chat/completions`, chat());
    expect(res.status).toBe(200);
  });
});
