import { Command, InvalidArgumentError } from "commander";
import { destination, pino, type Logger } from "pino";
import { loadServicesFile, type CompiledServices } from "../../gateway/config.js";
import { Gateway } from "../../gateway/gateway.js";
import { addKey, defaultKeysPath, KeyAuthenticator, readKeysFile, revokeKey } from "../../gateway/keys.js";
import { isLoopbackHost, listenGateway } from "../../gateway/server.js";

export function parsePort(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError("a port number 0-65535");
  return n;
}

function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("a positive integer");
  return n;
}

export interface GatewayRunOptions {
  port: number;
  host: string;
  keysFile?: string;
  allowUnauthenticated?: boolean;
  check?: boolean;
  logLevel?: string;
}

/** Refuses to expose an open gateway beyond this machine unless the operator says so explicitly. */
export function assertSafeBinding(
  host: string,
  keyCount: number,
  allowUnauthenticated: boolean,
  keysFile: string,
): void {
  if (isLoopbackHost(host) || keyCount > 0 || allowUnauthenticated) return;
  throw new Error(
    `refusing to listen on ${host} without API keys: anyone who can reach it could use your models. ` +
      `Add a key with \`switchyard gateway keys add <name>\` (stored hashed in ${keysFile}), ` +
      `listen on 127.0.0.1, or pass --allow-unauthenticated if the network is trusted.`,
  );
}

/** Active API keys in a keys file, refusing an open binding beyond loopback (see assertSafeBinding). */
export function checkedKeys(opts: Pick<GatewayRunOptions, "host" | "keysFile" | "allowUnauthenticated">): {
  keysFile: string;
  activeKeys: number;
} {
  const keysFile = opts.keysFile ?? defaultKeysPath();
  const activeKeys = readKeysFile(keysFile).keys.filter((k) => k.revokedAt === undefined).length;
  assertSafeBinding(opts.host, activeKeys, opts.allowUnauthenticated === true, keysFile);
  return { keysFile, activeKeys };
}

/** The gateway for a services config, with its logger and, when keys exist, key authentication. */
export function createGateway(
  config: CompiledServices,
  keys: { keysFile: string; activeKeys: number },
  logger: Logger,
): Gateway {
  return new Gateway(config, {
    logger,
    ...(keys.activeKeys > 0 && { auth: new KeyAuthenticator({ path: keys.keysFile }) }),
  });
}

/** Resolves on the first SIGINT or SIGTERM. */
export function untilStopSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      resolve();
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}

async function runGateway(servicesFile: string, opts: GatewayRunOptions): Promise<void> {
  const config = loadServicesFile(servicesFile);
  const keys = checkedKeys(opts);
  const activeKeys = keys.activeKeys;
  const backends = config.services.reduce((n, s) => n + s.pools.reduce((m, p) => m + p.backends.length, 0), 0);
  if (opts.check === true) {
    // Building the gateway also checks what YAML cannot: apiKeyEnv variables, TLS CA files.
    await new Gateway(config).close();
    process.stdout.write(
      `${servicesFile}: OK — ${config.services.length} service(s), ${backends} backend(s); ` +
        `${activeKeys > 0 ? `${activeKeys} API key(s)` : "no API keys (open)"}\n`,
    );
    return;
  }
  const logger = pino({ level: opts.logLevel ?? "info" }, destination({ sync: false }));
  const gateway = createGateway(config, keys, logger);
  gateway.startHealthChecks();
  const http = await listenGateway(gateway, { host: opts.host, port: opts.port });
  logger.info(
    { url: http.url, services: config.services.map((s) => s.model), backends, auth: activeKeys > 0 },
    "gateway listening",
  );
  process.stderr.write(
    `switchyard gateway listening on ${http.url} (OpenAI API under ${http.url}/v1, metrics at /metrics)\n`,
  );
  await untilStopSignal();
  await http.close();
  await gateway.close();
  logger.flush();
}

/** `switchyard gateway`: the OpenAI-compatible inference gateway, and its API keys. */
export function registerGatewayCommand(program: Command): void {
  const gateway = program
    .command("gateway")
    .description("Run the OpenAI-compatible inference gateway in front of the model servers in <services.yaml>")
    .argument("<services.yaml>", "services file (see examples/gateway/services.yaml)")
    .option("-p, --port <port>", "port to listen on", parsePort, 8080)
    .option("-H, --host <host>", "address to listen on", "127.0.0.1")
    .option("--keys-file <path>", "API keys file (default: $SWITCHYARD_HOME/gateway-keys.json)")
    .option("--allow-unauthenticated", "listen beyond loopback even when no API key exists")
    .option("--check", "validate the services file and exit")
    .option("--log-level <level>", "access log level (info, warn, silent)", "info")
    .action(async (servicesFile: string, opts: GatewayRunOptions) => runGateway(servicesFile, opts));

  const keys = gateway.command("keys").description("Manage gateway API keys (stored as SHA-256 hashes)");
  keys
    .command("add")
    .description("Create a key; it is printed once and cannot be shown again")
    .argument("<name>", "who or what the key is for")
    .option("--rpm <n>", "rate limit in requests per minute", parsePositiveInt)
    .option("--keys-file <path>", "API keys file (default: $SWITCHYARD_HOME/gateway-keys.json)")
    .action((name: string, opts: { rpm?: number; keysFile?: string }) => {
      const path = opts.keysFile ?? defaultKeysPath();
      const { key, record } = addKey(path, { name, ...(opts.rpm !== undefined && { rpm: opts.rpm }) });
      process.stdout.write(`${key}\n`);
      process.stderr.write(`key ${record.id} (${name}) added to ${path}; store it now, it is not kept in clear\n`);
    });
  keys
    .command("list")
    .description("List keys (id, name, prefix, rate limit, state)")
    .option("--keys-file <path>", "API keys file (default: $SWITCHYARD_HOME/gateway-keys.json)")
    .option("--json", "machine-readable output")
    .action((opts: { keysFile?: string; json?: boolean }) => {
      const list = readKeysFile(opts.keysFile ?? defaultKeysPath()).keys.map(({ hash: _hash, ...k }) => k);
      if (opts.json === true) {
        process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
        return;
      }
      const rows = [["ID", "NAME", "PREFIX", "RPM", "CREATED", "STATE"]];
      for (const k of list) {
        rows.push([
          k.id,
          k.name,
          `${k.prefix}…`,
          k.rpm?.toString() ?? "-",
          k.createdAt,
          k.revokedAt ? "revoked" : "active",
        ]);
      }
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
      process.stdout.write(
        rows
          .map((r) =>
            r
              .map((c, i) => c.padEnd(widths[i]!))
              .join("  ")
              .trimEnd(),
          )
          .join("\n") + "\n",
      );
    });
  keys
    .command("revoke")
    .description("Revoke a key by id or name; a running gateway stops accepting it within a second")
    .argument("<id-or-name>")
    .option("--keys-file <path>", "API keys file (default: $SWITCHYARD_HOME/gateway-keys.json)")
    .action((idOrName: string, opts: { keysFile?: string }) => {
      const path = opts.keysFile ?? defaultKeysPath();
      const record = revokeKey(path, idOrName);
      if (record === undefined) {
        throw new Error(`no active key "${idOrName}" in ${path}; see \`switchyard gateway keys list\``);
      }
      process.stdout.write(`revoked ${record.id} (${record.name})\n`);
    });
}
