import { Command } from "commander";
import { startServer } from "../../server/main.js";
import { readHomeConfig, writeHomeConfig } from "../../server/config.js";
import { CliError, connect, ExitCode, serverInfo, startBackgroundServer } from "../client.js";
import { globals, version } from "../context.js";
import path from "node:path";

export function registerServerCommands(program: Command): void {
  program
    .command("server", { hidden: true })
    .description("run the switchyard server in the foreground (what `up` starts in the background)")
    .option("--home <dir>", "state folder")
    .option("--host <host>", "address to bind", "127.0.0.1")
    .option("--port <port>", "port to bind (0: any free port)", process.env.SWITCHYARD_PORT ?? "0")
    .option("--cluster <file>", "cluster config (YAML)")
    .action(async (opts: { home?: string; host: string; port: string; cluster?: string }, cmd: Command) => {
      const home = opts.home ? path.resolve(opts.home) : globals(cmd).home;
      const clusterFile = opts.cluster ?? readHomeConfig(home).clusterFile;
      const running = await startServer({
        home,
        host: opts.host,
        port: Number(opts.port),
        clusterFile,
        version,
        log: (m) => console.log(`${new Date().toISOString()} ${m}`),
      });
      await new Promise<void>((resolve) => {
        const shutdown = () => void running.close().then(resolve);
        process.once("SIGTERM", shutdown);
        process.once("SIGINT", shutdown);
      });
    });

  program
    .command("up")
    .description("start the switchyard server in the background (other commands start it on demand)")
    .option("--cluster <file>", "cluster config (YAML) to load; remembered in SWITCHYARD_HOME")
    .action(async (opts: { cluster?: string }, cmd: Command) => {
      const g = globals(cmd);
      if (opts.cluster) {
        const clusterFile = path.resolve(opts.cluster);
        const running = serverInfo(g.home);
        if (running && running.clusterFile !== clusterFile) await stopServer(g.home);
        writeHomeConfig(g.home, { ...readHomeConfig(g.home), clusterFile });
      }
      const client = await connect(g.home, { clusterFile: readHomeConfig(g.home).clusterFile });
      const info = serverInfo(g.home);
      if (g.json) console.log(JSON.stringify(info));
      else console.log(`switchyard is up at ${client.url} (pid ${info?.pid ?? "?"}, home ${g.home})`);
    });

  program
    .command("down")
    .description(
      "stop the switchyard server; running training ranks keep running and are re-adopted by the next server",
    )
    .action(async (_opts: unknown, cmd: Command) => {
      const stopped = await stopServer(globals(cmd).home);
      console.log(stopped ? "switchyard server stopped (ranks keep running)" : "no switchyard server was running");
    });
}

export async function stopServer(home: string): Promise<boolean> {
  const info = serverInfo(home);
  if (!info) return false;
  try {
    process.kill(info.pid, "SIGTERM");
  } catch {
    return false;
  }
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    try {
      process.kill(info.pid, 0);
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new CliError(`server pid ${info.pid} did not stop within 10 s`, ExitCode.Unreachable);
}

export { startBackgroundServer };
