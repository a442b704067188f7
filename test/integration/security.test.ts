import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { chromium, type Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ApiClient } from "../../src/cli/client.js";
import { packageRoot } from "../../src/paths.js";
import { readToken, type ServerInfo } from "../../src/server/config.js";
import { lockHolder } from "../../src/server/lock.js";
import { chromiumPath, noChromium } from "../requirements.js";
import { ServerProcess, sleep, tempHome, waitFor, writeCluster } from "./harness.js";

const bin = path.join(packageRoot, "bin", "switchyard.js");

/** A job whose command would leave `marker` behind: proof that a command ran. */
function markerJob(name: string, marker: string): { yaml: string; file: string } {
  return {
    yaml: [`name: ${name}`, `command: ["/bin/sh", "-c", ${JSON.stringify(`touch ${marker}`)}]`, "workdir: /tmp"].join(
      "\n",
    ),
    file: `/tmp/${name}.yaml`,
  };
}

describe.skipIf(noChromium)("a web page on another origin cannot run commands (real Chromium)", () => {
  const home = tempHome("csrf");
  const server = new ServerProcess(home, writeCluster(home));
  const marker = path.join(home, "pwned-marker");
  let client: ApiClient;
  let browser: Browser;
  let attacker: http.Server;
  let attackerPort = 0;

  beforeAll(async () => {
    client = await server.start();
    // The attacker's site: a page on another port of the same host (so same-site: a SameSite cookie alone would not
    // stop it) that fires the classic CSRF requests at the API: no-cors fetches (text/plain, none) and a text/plain
    // form, all with credentials.
    const target = server.info!.url;
    const spec = JSON.stringify(markerJob("pwned", marker));
    const page = `<!doctype html><html><body>
<form id="f" method="POST" action="${target}/api/jobs" enctype="text/plain" target="sink">
  <input type="hidden" name='${spec.slice(0, -1)}, "pad": "' value='"}'>
</form>
<iframe name="sink"></iframe>
<script>
  const spec = ${JSON.stringify(spec)};
  const url = ${JSON.stringify(`${target}/api/jobs`)};
  Promise.allSettled([
    fetch(url, { method: "POST", mode: "no-cors", credentials: "include", headers: { "content-type": "text/plain" }, body: spec }),
    fetch(url, { method: "POST", mode: "no-cors", credentials: "include", body: spec }),
    fetch(url, { method: "POST", mode: "no-cors", credentials: "include", headers: { "content-type": "application/x-www-form-urlencoded" }, body: spec }),
  ]).then((r) => {
    document.getElementById("f").submit();
    document.title = "sent " + r.map((x) => x.status).join(",");
  });
</script></body></html>`;
    attacker = http.createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(page);
    });
    await new Promise<void>((r) => attacker.listen(0, "127.0.0.1", r));
    attackerPort = (attacker.address() as AddressInfo).port;
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        // DNS rebinding, simulated: a foreign name that resolves to this machine.
        "--host-resolver-rules=MAP rebind.test 127.0.0.1",
      ],
    });
  }, 90_000);

  afterAll(async () => {
    await browser?.close();
    await new Promise((r) => attacker?.close(r));
    await server.stop();
  });

  it("the dashboard URL trades the token for an HttpOnly SameSite=Strict cookie and drops it from the URL", async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(server.dashboardUrl());
    expect(page.url()).toBe(`${server.info!.url}/`);
    await page.locator("#server", { hasText: /^v\d/ }).waitFor({ timeout: 15_000 }); // /api/health answered
    const cookies = await context.cookies();
    expect(cookies).toHaveLength(1);
    expect(cookies[0]).toMatchObject({ httpOnly: true, sameSite: "Strict", path: "/", value: readToken(home) });
    expect(await page.evaluate("document.cookie")).toBe("");
    expect(await page.evaluate("location.href")).not.toContain("token");
    await context.close();
  }, 60_000);

  it("cross-origin no-cors fetches and a text/plain form from a signed-in browser create no job and run nothing", async () => {
    const context = await browser.newContext();
    const signedIn = await context.newPage();
    await signedIn.goto(server.dashboardUrl()); // the victim has the dashboard's cookie
    const evil = await context.newPage();
    const before = server.output.split("\n").filter((l) => l.includes("refused POST /api/jobs")).length;
    await evil.goto(`http://127.0.0.1:${attackerPort}/`);
    await evil.waitForFunction('document.title.startsWith("sent")', undefined, { timeout: 15_000 });
    // All four requests reached the server and were refused (three fetches and the form).
    const refused = await waitFor(
      "the server to refuse the four requests",
      async () => {
        const lines = server.output.split("\n").filter((l) => l.includes("refused POST /api/jobs"));
        return lines.length - before >= 4 ? lines.slice(before) : null;
      },
      15_000,
    );
    for (const line of refused) expect(line).toContain(`cross-origin request from "http://127.0.0.1:${attackerPort}"`);
    await sleep(1000); // a job, had one been made, would have launched by now
    const jobs = await client.get<Array<{ name: string }>>("/api/jobs");
    expect(jobs.filter((j) => j.name === "pwned")).toEqual([]);
    expect(existsSync(marker)).toBe(false);
    await context.close();

    // Control: the same spec from the CLI's client (token, JSON) does run, so the marker would have shown an attack.
    await client.post("/api/jobs", markerJob("control", marker));
    await waitFor("the control job's command to leave its marker", async () => existsSync(marker), 30_000);
  }, 90_000);

  it("a DNS-rebound name is refused, the dashboard page and the API alike", async () => {
    const page = await browser.newPage();
    const port = server.info!.port;
    const res = await page.goto(`http://rebind.test:${port}/`);
    expect(res?.status()).toBe(403);
    const api = await page.goto(`http://rebind.test:${port}/api/jobs`);
    expect(api?.status()).toBe(403);
    expect(await api?.text()).toContain('Host \\"rebind.test:');
    await page.close();
  }, 30_000);
});

/** Pids of live `switchyard server` processes of a home, from /proc. */
function serverPids(home: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      const state = /^State:\s+(\S)/m.exec(readFileSync(`/proc/${entry}/status`, "utf8"))?.[1];
      if (state === "Z") continue;
    } catch {
      continue;
    }
    const i = argv.indexOf("server");
    if (argv.some((a) => a.endsWith("switchyard.js")) && i > 0 && argv[i + 1] === "--home" && argv[i + 2] === home) {
      pids.push(Number(entry));
    }
  }
  return pids;
}

function cli(home: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, "--home", home, ...args],
      { env: { ...process.env, SWITCHYARD_HOME: home }, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe("one server per home", () => {
  const homes: string[] = [];
  afterAll(() => {
    for (const home of homes) {
      for (const pid of serverPids(home)) process.kill(pid, "SIGKILL");
    }
  });

  it("five CLI commands at once on a fresh home start exactly one server, and all five succeed", async () => {
    const home = tempHome("race");
    homes.push(home);
    const results = await Promise.all(Array.from({ length: 5 }, () => cli(home, "ps")));
    for (const r of results) expect(r, r.stderr).toMatchObject({ code: 0 });
    // Give losers that are still exiting a moment, then count.
    await waitFor("the servers that lost the lock to exit", async () => serverPids(home).length === 1, 10_000);
    const [pid] = serverPids(home);
    const info = JSON.parse(readFileSync(path.join(home, "server.json"), "utf8")) as ServerInfo;
    expect(info.pid).toBe(pid);
    expect(lockHolder(home)).toBe(pid);
    const log = readFileSync(path.join(home, "server.log"), "utf8");
    const listening = log.split("\n").filter((l) => l.includes(" listening on "));
    expect(listening).toHaveLength(1);

    // `up --json` names the running server and the dashboard URL with the token.
    const up = await cli(home, "up", "--json");
    expect(up.code).toBe(0);
    const upInfo = JSON.parse(up.stdout) as ServerInfo & { dashboard: string };
    expect(upInfo.pid).toBe(pid);
    expect(upInfo.dashboard).toBe(`${info.url}/?token=${encodeURIComponent(readToken(home)!)}`);

    const down = await cli(home, "down");
    expect(down.stdout).toContain("stopped");
    expect(serverPids(home)).toEqual([]);
  }, 120_000);

  it("the lock dies with a SIGKILLed server: the next command starts a new one at once", async () => {
    const home = tempHome("kill9");
    homes.push(home);
    const server = new ServerProcess(home, writeCluster(home));
    await server.start();
    // While it lives, a second server on the home is refused, naming the holder.
    const second = await cli(home, "server");
    expect(second.code).toBe(2);
    expect(second.stderr).toContain(`another switchyard server (pid ${server.child!.pid}) already serves this home`);
    server.kill9();
    await new Promise((r) => server.child!.once("exit", r));
    const ps = await cli(home, "ps");
    expect(ps.code, ps.stderr).toBe(0);
    const pids = serverPids(home);
    expect(pids).toHaveLength(1);
    expect(pids[0]).not.toBe(server.child!.pid);
    await cli(home, "down");
  }, 120_000);

  it("`down` never signals a process that merely has the pid a stale server.json names", async () => {
    const home = tempHome("stale");
    homes.push(home);
    const bystander: ChildProcess = spawn("sleep", ["60"], { stdio: "ignore" });
    try {
      const stale: ServerInfo = {
        pid: bystander.pid!,
        url: "http://127.0.0.1:9",
        host: "127.0.0.1",
        port: 9,
        startedAt: Date.now(),
        clusterFile: null,
      };
      writeFileSync(path.join(home, "server.json"), JSON.stringify(stale));
      const down = await cli(home, "down");
      expect(down.stdout).toContain("no switchyard server was running");
      expect(bystander.exitCode).toBeNull();
      expect(() => process.kill(bystander.pid!, 0)).not.toThrow();
      expect(existsSync(path.join(home, "server.json"))).toBe(false);
    } finally {
      bystander.kill("SIGKILL");
      rmSync(home, { recursive: true, force: true });
    }
  }, 60_000);
});
