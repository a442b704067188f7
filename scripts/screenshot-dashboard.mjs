// Takes docs/img/dashboard.png: a real server on a temp home runs the char-GPT example with a fault, and Debian's
// Chromium (through playwright-core) opens the dashboard URL `switchyard dashboard` prints. Not a test.
//   npm run build && node scripts/screenshot-dashboard.mjs
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const home = mkdtempSync(path.join(os.tmpdir(), "sy-shot-"));
const cli = (...args) =>
  execFileSync(process.execPath, [path.join(root, "bin", "switchyard.js"), "--home", home, ...args], {
    encoding: "utf8",
  }).trim();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

cli("up", "--cluster", path.join(root, "examples", "chargpt", "cluster.yaml"));
try {
  cli("run", path.join(root, "examples", "chargpt", "job.yaml"));
  const step = () => JSON.parse(cli("--json", "ps"))[0]?.last?.step ?? 0;
  while (step() < 30) await sleep(500);
  cli("chaos", "chargpt", "kill-rank", "--rank", "1");
  while (step() < 90) await sleep(500);
  const url = cli("dashboard");
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  await page.goto(url);
  await sleep(3000);
  await page.screenshot({ path: path.join(root, "docs", "img", "dashboard.png"), fullPage: true });
  await browser.close();
  console.log("wrote docs/img/dashboard.png");
} finally {
  spawnSync(process.execPath, [path.join(root, "bin", "switchyard.js"), "--home", home, "cancel", "chargpt"]);
  cli("down");
}
