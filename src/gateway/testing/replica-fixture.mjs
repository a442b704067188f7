// A stand-in model server for the replica supervisor tests, run as its own process (plain Node, no build step):
//   node replica-fixture.mjs --port N [--host H] [--ready-after-ms N] [--crash-after-ms N] [anything else]
// GET /health answers 503 until --ready-after-ms has passed, then 200; GET /metrics has vLLM's queue gauges;
// GET /argv echoes process.argv (tests check that arguments arrive as given, never through a shell);
// POST /v1/completions answers a short SSE stream. --crash-after-ms makes it exit(3) that long after it is ready.
// --warn TEXT prints `WARNING: TEXT` on stderr at start (as serve.py does when it serves random weights).
// --checkpoint PATH: the streamed text is the checkpoint's folder name (which weights answered) instead of the port;
// --tokens N --token-delay-ms D: the stream has N chunks, D ms apart; /metrics counts the streams in flight.
import { createServer } from "node:http";
import process from "node:process";
import { setTimeout } from "node:timers";

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const port = Number(opt("--port", "0"));
const host = opt("--host", "127.0.0.1");
const readyAfterMs = Number(opt("--ready-after-ms", "0"));
const crashAfterMs = Number(opt("--crash-after-ms", "-1"));
const started = Date.now();
const warn = opt("--warn", undefined);
if (warn !== undefined) process.stderr.write(`fixture replica: WARNING: ${warn}\n`);
const ready = () => Date.now() - started >= readyAfterMs;
const checkpoint = opt("--checkpoint", undefined);
// FIXTURE_LABEL in the environment: the streamed text is that label (which spec answered: a redeploy's env reached it).
const label =
  process.env.FIXTURE_LABEL ?? (checkpoint !== undefined ? (checkpoint.split("/").pop() ?? checkpoint) : String(port));
const tokens = Number(opt("--tokens", "1"));
const tokenDelayMs = Number(opt("--token-delay-ms", "0"));
let running = 0;

const server = createServer((req, res) => {
  if (req.url === "/health") {
    res.writeHead(ready() ? 200 : 503).end(ready() ? "" : "loading");
  } else if (req.url === "/metrics") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end(`vllm:num_requests_running ${running}\nvllm:num_requests_waiting 0\n`);
  } else if (req.url === "/argv") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({ argv: process.argv.slice(2), env: { SWITCHYARD_REPLICA: process.env.SWITCHYARD_REPLICA } }),
    );
  } else if (req.method === "POST" && req.url === "/v1/completions") {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      running++;
      let sent = 0;
      const next = () => {
        res.write(`data: ${JSON.stringify({ choices: [{ index: 0, text: sent === 0 ? label : "." }] })}\n\n`);
        if (++sent < tokens) return void setTimeout(next, tokenDelayMs);
        running--;
        res.end("data: [DONE]\n\n");
      };
      next();
    });
  } else {
    res.writeHead(404).end();
  }
});
server.listen(port, host, () => {
  process.stderr.write(`fixture replica listening on ${host}:${port}\n`);
  if (crashAfterMs >= 0) {
    setTimeout(() => {
      process.stderr.write("fixture replica: crashing as asked\n");
      process.exit(3);
    }, readyAfterMs + crashAfterMs);
  }
});
process.on("SIGTERM", () => process.exit(0));
