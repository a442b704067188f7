/**
 * TLS on the gateway's listener: `--tls-cert/--tls-key` (PEM), checked before serving with errors that name the file
 * and the fix, then HTTPS with a self-signed certificate made here by Debian's openssl CLI.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CliError } from "../cli/client.js";
import { loadTlsFiles } from "../cli/commands/gateway.js";
import { compileServices } from "./config.js";
import { Gateway } from "./gateway.js";
import { listenGateway } from "./server.js";
import { FixtureBackend } from "./testing/fixture-backend.js";
import { selfSigned } from "./testing/self-signed.js";

const dir = mkdtempSync(join(tmpdir(), "sy-tls-"));
const cert = join(dir, "cert.pem");
const key = join(dir, "key.pem");
const otherKey = join(dir, "other-key.pem");

function cliError(fn: () => unknown): CliError {
  try {
    fn();
  } catch (err) {
    if (err instanceof CliError) return err;
    throw err;
  }
  throw new Error("no error");
}

describe("TLS on the listener", () => {
  beforeAll(() => {
    selfSigned(cert, key);
    selfSigned(join(dir, "other-cert.pem"), otherKey);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("refuses a missing, unreadable, non-PEM or mismatched pair, naming the file and the fix (exit 2)", () => {
    const alone = cliError(() => loadTlsFiles(cert, undefined));
    expect(alone.message).toBe("--tls-cert given without --tls-key");
    expect(alone.exitCode).toBe(2);
    const missing = cliError(() => loadTlsFiles(join(dir, "nope.pem"), key));
    expect(missing.message).toMatch(/--tls-cert .*nope\.pem does not exist \(ENOENT\)/);
    const notPem = join(dir, "not.pem");
    writeFileSync(notPem, "hello");
    expect(cliError(() => loadTlsFiles(notPem, key)).message).toMatch(/holds no PEM certificate/);
    expect(cliError(() => loadTlsFiles(cert, notPem)).message).toMatch(/--tls-key .*not\.pem holds no PEM private key/);
    const mismatch = cliError(() => loadTlsFiles(cert, otherKey));
    expect(mismatch.message).toMatch(/--tls-key .*other-key\.pem is not the private key of --tls-cert .*cert\.pem/);
    expect(mismatch.fix).toMatch(/openssl/);
    if (process.getuid?.() !== 0) {
      const locked = join(dir, "locked.pem");
      writeFileSync(locked, "x");
      chmodSync(locked, 0);
      expect(cliError(() => loadTlsFiles(cert, locked)).message).toMatch(/is not readable by this user \(EACCES\)/);
    }
  });

  it("serves HTTPS with the pair: a client trusting the certificate gets the answer; plain HTTP gets nothing", async () => {
    const tls = loadTlsFiles(cert, key)!;
    const backend = await FixtureBackend.start("a");
    const gw = new Gateway(
      compileServices({
        gateway: {},
        services: [
          {
            model: "m",
            aliases: [],
            pools: [{ name: "p", backends: [{ id: "a", url: backend.url, engine: "vllm" }] }],
          },
        ],
      }),
    );
    const http = await listenGateway(gw, { port: 0, tls });
    try {
      expect(http.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const agent = new Agent({ connect: { ca: tls.cert } });
      const res = await request(`${http.url}/v1/chat/completions`, {
        method: "POST",
        dispatcher: agent,
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] }),
      });
      expect(res.statusCode).toBe(200);
      expect(((await res.body.json()) as { fixture_backend: string }).fixture_backend).toBe("a");
      await agent.close();
      // Without trusting the self-signed certificate, the handshake fails.
      await expect(request(`${http.url}/healthz`)).rejects.toThrow(/self[- ]signed|certificate/i);
      // Plain HTTP to the TLS port gets no HTTP answer.
      await expect(request(`http://127.0.0.1:${http.port}/healthz`)).rejects.toThrow();
    } finally {
      await http.close();
      await gw.close();
      await backend.close();
    }
  });
});
