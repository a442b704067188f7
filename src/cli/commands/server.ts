import { closeSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import path from "node:path";
import { Command } from "commander";
import { startServer } from "../../server/main.js";
import { homePaths, isLoopback, loadCluster, readHomeConfig, readToken, writeHomeConfig } from "../../server/config.js";
import { HomeLockedError } from "../../server/lock.js";
import {
  CliError,
  connect,
  dashboardUrl,
  ExitCode,
  isHomeServer,
  serverInfo,
  startBackgroundServer,
} from "../client.js";
import { globals, version } from "../context.js";

interface BindOptions {
  host?: string;
  port?: string;
  tlsCert?: string;
  tlsKey?: string;
  allowHost?: string[];
}

function addBindOptions(cmd: Command): Command {
  return cmd
    .option("--tls-cert <file>", "serve HTTPS with this certificate (PEM); needs --tls-key")
    .option("--tls-key <file>", "the certificate's private key (PEM)")
    .option("--allow-host <name...>", "more names clients may reach the server by (the Host header); loopback always");
}

function tlsOption(opts: BindOptions): { cert: string; key: string } | undefined {
  if (!opts.tlsCert && !opts.tlsKey) return undefined;
  if (!opts.tlsCert || !opts.tlsKey) {
    throw new CliError("--tls-cert and --tls-key go together", ExitCode.Usage, "pass both PEM files, or neither");
  }
  const tls = { cert: path.resolve(opts.tlsCert), key: path.resolve(opts.tlsKey) };
  // Checked here too, so that `up` refuses an unreadable file as bad input (exit 2) instead of starting a server that
  // cannot come up (exit 3).
  for (const [flag, file] of [
    ["--tls-cert", tls.cert],
    ["--tls-key", tls.key],
  ] as const) {
    try {
      closeSync(openSync(file, "r"));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new CliError(
        `${flag} ${file} ${code === "ENOENT" ? "does not exist" : `cannot be read (${code ?? (err as Error).message})`}`,
        ExitCode.Usage,
        `pass a readable PEM file to ${flag}`,
      );
    }
  }
  return tls;
}

export function registerServerCommands(program: Command): void {
  addBindOptions(
    program
      .command("server", { hidden: true })
      .description("run the switchyard server in the foreground (what `up` starts in the background)")
      .option("--home <dir>", "state folder")
      .option("--host <host>", "address to bind", "127.0.0.1")
      .option("--port <port>", "port to bind (0: any free port)", process.env.SWITCHYARD_PORT ?? "0")
      .option("--cluster <file>", "cluster config (YAML)"),
  ).action(
    async (opts: BindOptions & { home?: string; host: string; port: string; cluster?: string }, cmd: Command) => {
      const home = opts.home ? path.resolve(opts.home) : globals(cmd).home;
      const clusterFile = opts.cluster ?? readHomeConfig(home).clusterFile;
      const port = Number(opts.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) {
        throw new CliError(
          `--port ${opts.port} is not a port number`,
          ExitCode.Usage,
          "pass 0 to 65535 (0: any free port)",
        );
      }
      const log = (m: string) => console.log(`${new Date().toISOString()} ${m}`);
      recordFatalErrors(home);
      const running = await startServer({
        home,
        host: opts.host,
        port,
        clusterFile,
        version,
        tls: tlsOption(opts),
        allowHosts: opts.allowHost,
        log: (m) => (m.startsWith("WARNING") ? console.error(`${new Date().toISOString()} ${m}`) : log(m)),
      }).catch((err: unknown) => {
        if (err instanceof HomeLockedError) {
          throw new CliError(err.message, ExitCode.Usage, "use the running server (`switchyard ps`) or stop it first");
        }
        throw err;
      });
      await new Promise<void>((resolve) => {
        const shutdown = () => void running.close().then(resolve);
        process.once("SIGTERM", shutdown);
        process.once("SIGINT", shutdown);
      });
    },
  );

  addBindOptions(
    program
      .command("up")
      .description("start the switchyard server in the background (other commands start it on demand)")
      .option("--cluster <file>", "cluster config (YAML) to load; remembered in SWITCHYARD_HOME")
      .option("--host <host>", "address to bind (default 127.0.0.1; beyond loopback, use --tls-cert/--tls-key)")
      .option("--port <port>", "port to bind (default: any free port)"),
  ).action(async (opts: BindOptions & { cluster?: string }, cmd: Command) => {
    const g = globals(cmd);
    if (opts.cluster) {
      const clusterFile = path.resolve(opts.cluster);
      // Checked here, before a running server is stopped for it or the home remembers it: a bad file is exit 2 with
      // its issues (SpecError), and the server that runs now goes on running.
      loadCluster(opts.cluster);
      const running = serverInfo(g.home);
      if (running && running.clusterFile !== clusterFile) await stopServer(g.home);
      writeHomeConfig(g.home, { ...readHomeConfig(g.home), clusterFile });
    }
    const tls = tlsOption(opts);
    const serverArgs = [
      ...(opts.host ? ["--host", opts.host] : []),
      ...(opts.port ? ["--port", opts.port] : []),
      ...(tls ? ["--tls-cert", tls.cert, "--tls-key", tls.key] : []),
      ...(opts.allowHost?.length ? ["--allow-host", ...opts.allowHost] : []),
    ];
    const clusterFile = readHomeConfig(g.home).clusterFile;
    let info = serverInfo(g.home);
    if (!info || !(await isHomeServer(g.home, info))) {
      info = await startBackgroundServer(g.home, clusterFile, serverArgs);
    } else if (serverArgs.length > 0 && (opts.host ?? "127.0.0.1") !== info.host) {
      throw new CliError(
        `a server already runs for ${g.home} on ${info.host}`,
        ExitCode.Usage,
        "stop it with `switchyard down` to start one with other --host/--port/--tls options",
      );
    }
    const token = readToken(g.home);
    const dashboard = token ? dashboardUrl(info, token) : null;
    const plainBeyondLoopback = !isLoopback(info.host) && !info.url.startsWith("https:");
    if (g.json) {
      console.log(JSON.stringify({ ...info, dashboard, warning: plainBeyondLoopback ? warning(info.host) : null }));
    } else {
      console.log(`switchyard is up at ${info.url} (pid ${info.pid}, home ${g.home})`);
      if (dashboard) console.log(`dashboard: ${dashboard}`);
    }
    if (plainBeyondLoopback) console.error(`switchyard: WARNING: ${warning(info.host)}`);
  });

  program
    .command("dashboard")
    .description("print the dashboard's URL with the access token (open it once; the browser then keeps a cookie)")
    .action(async (_opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const client = await connect(g.home);
      const info = serverInfo(g.home);
      const token = readToken(g.home);
      if (!info || !token) throw new CliError(`no server answers for ${g.home}`, ExitCode.Unreachable);
      const url = dashboardUrl(info, token);
      console.log(g.json ? JSON.stringify({ url, server: client.url }) : url);
    });

  program
    .command("down")
    .description(
      "stop the switchyard server; running training ranks keep running and are re-adopted by the next server",
    )
    .action(async (_opts: unknown, cmd: Command) => {
      const g = globals(cmd);
      const stopped = await stopServer(g.home);
      if (g.json) console.log(JSON.stringify({ stopped, home: g.home }));
      else console.log(stopped ? "switchyard server stopped (ranks keep running)" : "no switchyard server was running");
    });
}

function warning(host: string): string {
  return (
    `the server listens on ${host} over plain HTTP: the API token and job specs cross the network unencrypted ` +
    "(fix: `switchyard down`, then `switchyard up --host ... --tls-cert <pem> --tls-key <pem>`, or bind 127.0.0.1 " +
    "and tunnel over SSH)"
  );
}

/** Stops this home's server; a stale server.json (the pid gone or reused by another program) is removed, not signalled. */
export async function stopServer(home: string): Promise<boolean> {
  const info = serverInfo(home);
  if (!info) return false;
  if (!(await isHomeServer(home, info))) {
    rmSync(homePaths(home).serverInfo, { force: true });
    return false;
  }
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

/**
 * A server that dies of an error nobody caught leaves its reason in the home, so the next command can say why instead
 * of silently starting another. The file's blocks are reserved at start and overwritten in place, so the reason is
 * kept even when the disk is full. Log writes that fail (a full disk) never take the server down.
 */
function recordFatalErrors(home: string): void {
  const file = homePaths(home).lastCrash;
  try {
    writeFileSync(file, " ".repeat(crashRecordBytes), { mode: 0o600 });
  } catch {
    // no room to reserve it: the reason goes to stderr only
  }
  for (const stream of [process.stdout, process.stderr]) stream.on("error", () => {});
  const die = (err: unknown) => {
    const e = err as NodeJS.ErrnoException;
    const reason =
      e?.code === "ENOSPC"
        ? `the disk is full (ENOSPC): ${e.message}`
        : e instanceof Error
          ? (e.stack ?? e.message)
          : String(err);
    try {
      const record = Buffer.from(JSON.stringify({ t: Date.now(), pid: process.pid, reason: reason.slice(0, 3000) }));
      const fd = openSync(file, "r+");
      try {
        writeSync(
          fd,
          Buffer.concat([record, Buffer.alloc(Math.max(0, crashRecordBytes - record.length), 0x20)]),
          0,
          crashRecordBytes,
          0,
        );
      } finally {
        closeSync(fd);
      }
    } catch {
      // nothing more can be done; stderr below is the last word
    }
    console.error(`${new Date().toISOString()} FATAL: ${reason}`);
    process.exit(70);
  };
  process.on("uncaughtException", die);
  process.on("unhandledRejection", die);
}

const crashRecordBytes = 4096;
