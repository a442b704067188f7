/**
 * Services YAML for the gateway: which models exist, which pools serve them (in priority order), and which backends
 * belong to each pool — external URLs, or a `replicas:` block that the supervisor launches (issue 4 part 5).
 * Compiled in stages (STYLE.md): YAML text -> validated raw config -> compiled config with every default filled in.
 */
import { readFileSync } from "node:fs";
import { z } from "zod";
import {
  formatPath,
  positionAt,
  SpecError,
  validateYaml,
  withKeyHints,
  type ParsedYaml,
  type SpecIssue,
} from "../core/spec-errors.js";
import { badOrigin, type CorsSettings } from "./cors.js";

export const EngineKind = {
  vllm: "vllm",
  vllmAscend: "vllm-ascend",
  mindie: "mindie",
  llamacpp: "llamacpp",
  openaiGeneric: "openai-generic",
} as const;
export type EngineKind = (typeof EngineKind)[keyof typeof EngineKind];
const engineKinds = Object.values(EngineKind) as [EngineKind, ...EngineKind[]];

const tlsSchema = z
  .object({
    caFile: z.string().min(1).optional(),
    insecureSkipVerify: z.boolean().optional(),
  })
  .strict();

const backendSchema = z
  .object({
    id: z
      .string()
      .regex(/^[A-Za-z0-9_.:-]{1,64}$/, "letters, digits, _ . : - (1-64 characters)")
      .optional(),
    url: z.url({
      protocol: /^https?$/,
      error: "an http:// or https:// URL | fix: write the server root, e.g. http://127.0.0.1:8000",
    }),
    engine: z.enum(engineKinds),
    weight: z.number().positive().max(1000).optional(),
    /** Name of the environment variable holding the backend's API key (never the key itself in YAML). */
    apiKeyEnv: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "an environment variable name")
      .optional(),
    metricsUrl: z
      .url({
        protocol: /^https?$/,
        error: "an http:// or https:// URL | fix: write its full URL, e.g. http://127.0.0.1:8000/metrics",
      })
      .optional(),
    maxInFlight: z.number().int().positive().optional(),
    tls: tlsSchema.optional(),
    /** The model name this backend serves (vLLM --served-model-name); default: the service's model name. */
    servedModel: z.string().min(1).max(256).optional(),
  })
  .strict();

const replicasSchema = z
  .object({
    count: z.number().int().min(1).max(1024),
    engine: z.enum(engineKinds),
    /** argv, never a shell string; `{port}`, `{host}` and `{home}` (the state folder) are replaced inside arguments. */
    command: z.array(z.string().min(1)).min(1),
    /** First port; replica i listens on port + i. */
    port: z.number().int().min(1).max(65535),
    host: z.string().min(1).default("127.0.0.1"),
    env: z.record(z.string(), z.string()).default({}),
    weight: z.number().positive().max(1000).optional(),
    readyTimeoutS: z.number().positive().default(600),
    maxInFlight: z.number().int().positive().optional(),
    /** The model name the replicas serve; default: the service's model name. */
    servedModel: z.string().min(1).max(256).optional(),
    apiKeyEnv: z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "an environment variable name")
      .optional(),
    /** What the replicas serve: `fromJob` names a training job whose newest verified checkpoint is `{checkpoint}`. */
    model: z
      .object({ fromJob: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, "a job name (the `name` of its spec)") })
      .strict()
      .optional(),
    /** How long a replica that is replaced or scaled away may finish its requests in flight (default 30). */
    drainSeconds: z.number().min(0).max(3600).optional(),
    /** How crashed replicas restart (the supervisor's recovery policy; see src/supervisor/services.ts). */
    recovery: z
      .object({
        maxRestarts: z.number().int().min(0).optional(),
        backoffSeconds: z.number().min(0).optional(),
        maxBackoffSeconds: z.number().min(0).optional(),
        strikesBeforeCordon: z.number().int().min(1).optional(),
        graceSeconds: z.number().min(0).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

const poolSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "letters, digits, _ . - (1-64 characters)"),
    /** Lower is preferred; defaults to the pool's position in the list. */
    priority: z.number().int().min(0).optional(),
    /** The pool counts as saturated when every backend's engine queue holds at least this many waiting requests. */
    queueThreshold: z.number().int().min(1).optional(),
    backends: z.array(backendSchema).default([]),
    replicas: replicasSchema.optional(),
  })
  .strict();

const serviceSchema = withKeyHints(
  z
    .object({
      model: z.string().min(1).max(256),
      aliases: z.array(z.string().min(1).max(256)).default([]),
      pools: z.array(poolSchema).min(1),
    })
    .strict(),
  {
    name: "a service is named by the model name clients ask for: write model: <name> (name: names a pool, under pools[])",
    replicas:
      "replicas belong to a pool: pools: [{ name: <pool>, replicas: { count: 2, engine: ..., command: [...], port: ... } }]",
  },
);

const settingsSchema = z
  .object({
    maxBodyBytes: z.number().int().positive().optional(),
    maxAttempts: z.number().int().min(1).max(10).optional(),
    connectTimeoutMs: z.number().int().positive().optional(),
    ttftTimeoutMs: z.number().int().positive().optional(),
    stallTimeoutMs: z.number().int().positive().optional(),
    nonStreamTimeoutMs: z.number().int().positive().optional(),
    ejectAfterFailures: z.number().int().min(1).optional(),
    ejectCooldownMs: z.number().int().positive().optional(),
    maxEjectCooldownMs: z.number().int().positive().optional(),
    healthIntervalMs: z.number().int().positive().optional(),
    healthTimeoutMs: z.number().int().positive().optional(),
    unhealthyAfterProbes: z.number().int().min(1).optional(),
    defaultQueueThreshold: z.number().int().min(1).optional(),
    /** Browser clients (CORS): the origins allowed to call the API; none by default. */
    cors: z
      .object({
        origins: z
          .array(
            z.string().refine((o) => badOrigin(o) === undefined, {
              error: (i) => badOrigin(String(i.input)) ?? "not an origin",
            }),
          )
          .max(256),
        maxAgeS: z.number().int().min(0).max(86_400).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export const servicesFileSchema = z
  .object({
    gateway: settingsSchema.default({}),
    services: z.array(serviceSchema).min(1),
  })
  .strict();

export type ServicesFile = z.infer<typeof servicesFileSchema>;
export type BackendConfig = z.infer<typeof backendSchema>;
export type ReplicaSpec = z.infer<typeof replicasSchema>;

export interface GatewaySettings {
  maxBodyBytes: number;
  maxAttempts: number;
  connectTimeoutMs: number;
  /** Streaming: from sending the request until the first complete SSE event. */
  ttftTimeoutMs: number;
  /** Longest silence between two upstream chunks once the answer has started. */
  stallTimeoutMs: number;
  /** Non-streaming: whole answer deadline. */
  nonStreamTimeoutMs: number;
  ejectAfterFailures: number;
  ejectCooldownMs: number;
  maxEjectCooldownMs: number;
  healthIntervalMs: number;
  healthTimeoutMs: number;
  unhealthyAfterProbes: number;
  defaultQueueThreshold: number;
}

export const defaultGatewaySettings: GatewaySettings = {
  maxBodyBytes: 8 * 1024 * 1024,
  maxAttempts: 3,
  connectTimeoutMs: 2_000,
  ttftTimeoutMs: 60_000,
  stallTimeoutMs: 30_000,
  nonStreamTimeoutMs: 600_000,
  ejectAfterFailures: 3,
  ejectCooldownMs: 5_000,
  maxEjectCooldownMs: 60_000,
  healthIntervalMs: 5_000,
  healthTimeoutMs: 2_000,
  unhealthyAfterProbes: 2,
  defaultQueueThreshold: 16,
};

export interface CompiledBackend {
  id: string;
  url: string;
  engine: EngineKind;
  weight: number;
  apiKeyEnv?: string;
  metricsUrl?: string;
  maxInFlight?: number;
  tls?: { caFile?: string; insecureSkipVerify?: boolean };
  /** The model name the backend serves; requests are rewritten to it (default: the service's model name). */
  servedModel?: string;
}

export interface CompiledPool {
  name: string;
  priority: number;
  queueThreshold: number;
  backends: CompiledBackend[];
  replicas?: ReplicaSpec;
}

export interface CompiledService {
  model: string;
  aliases: string[];
  /** Sorted by priority, most preferred first. */
  pools: CompiledPool[];
}

export interface CompiledServices {
  settings: GatewaySettings;
  /** CORS origins from `gateway.cors` (absent: no browser access). */
  cors?: CorsSettings;
  services: CompiledService[];
}

/**
 * A services file that failed to parse or validate: a SpecError (src/core/spec-errors.ts), so its issues read
 * `file:line:col: path: message (fix: ...)` like every other config file's, and carry over to --json and the API.
 */
export class ServicesConfigError extends SpecError {
  constructor(issues: SpecIssue[], omitted = 0) {
    super(issues, omitted);
    this.name = "ServicesConfigError";
  }

  /** The file the first issue is in. */
  get file(): string {
    return this.issues[0]?.file ?? "";
  }

  static from(err: SpecError): ServicesConfigError {
    return err instanceof ServicesConfigError ? err : new ServicesConfigError(err.issues, err.omitted);
  }
}

/** A backend (or replicas block) names an API key variable (`apiKeyEnv`) that is not set in the environment. */
export class MissingApiKeyEnvError extends Error {
  constructor(
    /** Which backend or replicas block, e.g. `backend ascend-mindie-0`. */
    readonly where: string,
    readonly variable: string,
  ) {
    super(`${where}: environment variable ${variable} (apiKeyEnv) is not set; export it or remove apiKeyEnv`);
    this.name = "MissingApiKeyEnvError";
  }
}

/** Backend URLs name the server root; a trailing `/v1` (as in OpenAI base URLs) is dropped since requests carry it. */
export function normalizeBackendUrl(url: string): string {
  return url.replace(/\/+$/, "").replace(/\/v1$/, "");
}

/** Validates and compiles services YAML text. `file` is used only in error messages. */
export function parseServicesYaml(text: string, file = "<services>"): CompiledServices {
  let checked: { data: ServicesFile; parsed: ParsedYaml };
  try {
    checked = validateYaml(servicesFileSchema, text, file);
  } catch (err) {
    if (err instanceof SpecError) throw ServicesConfigError.from(err);
    throw err;
  }
  return compileChecked(checked.data, file, checked.parsed);
}

export function loadServicesFile(file: string): CompiledServices {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ServicesConfigError([
      {
        file,
        path: "",
        line: 0,
        column: 0,
        message: `the services file ${code === "ENOENT" ? "does not exist" : `cannot be read (${code ?? (err as Error).message})`}`,
        fix: "pass the path of an existing services YAML file",
      },
    ]);
  }
  return parseServicesYaml(text, file);
}

/** A problem found after validation (names used twice, a pool with nothing to serve), at a path in the file. */
interface CompileIssue {
  path: (string | number)[];
  message: string;
  fix: string;
}

export function compileServices(data: ServicesFile, file = "<services>"): CompiledServices {
  return compileChecked(data, file, undefined);
}

function compileChecked(data: ServicesFile, file: string, parsed: ParsedYaml | undefined): CompiledServices {
  const settings: GatewaySettings = { ...defaultGatewaySettings };
  const { cors, ...numeric } = data.gateway;
  for (const [k, v] of Object.entries(numeric)) {
    if (v !== undefined) (settings as unknown as Record<string, number>)[k] = v;
  }
  const issues: CompileIssue[] = [];
  const names = new Map<string, string>();
  const backendIds = new Set<string>();
  const services = data.services.map((svc, si): CompiledService => {
    [svc.model, ...svc.aliases].forEach((name, ni) => {
      const prior = names.get(name);
      if (prior !== undefined) {
        issues.push({
          path: ni === 0 ? ["services", si, "model"] : ["services", si, "aliases", ni - 1],
          message: `model name "${name}" is already used by ${prior}`,
          fix: "give every model and alias a name of its own",
        });
      }
      names.set(name, `services[${si}]`);
    });
    const poolNames = new Set<string>();
    const pools = svc.pools.map((pool, pi): CompiledPool => {
      const where = ["services", si, "pools", pi];
      if (poolNames.has(pool.name)) {
        issues.push({
          path: [...where, "name"],
          message: `pool "${pool.name}" appears twice in this service`,
          fix: "merge the two entries, or rename one",
        });
      }
      poolNames.add(pool.name);
      if (pool.backends.length === 0 && pool.replicas === undefined) {
        issues.push({
          path: where,
          message: "has neither backends nor replicas",
          fix: "add a backends: list or a replicas: block",
        });
      }
      const backends = pool.backends.map((b, bi): CompiledBackend => {
        const id = b.id ?? `${svc.model}/${pool.name}/${bi}`;
        if (backendIds.has(id)) {
          issues.push({
            path: [...where, "backends", bi, "id"],
            message: `"${id}" is already used`,
            fix: "give every backend an id of its own",
          });
        }
        backendIds.add(id);
        return {
          id,
          url: normalizeBackendUrl(b.url),
          engine: b.engine,
          weight: b.weight ?? 1,
          ...(b.apiKeyEnv !== undefined && { apiKeyEnv: b.apiKeyEnv }),
          ...(b.metricsUrl !== undefined && { metricsUrl: b.metricsUrl }),
          ...(b.maxInFlight !== undefined && { maxInFlight: b.maxInFlight }),
          ...(b.tls !== undefined && { tls: b.tls }),
          ...(b.servedModel !== undefined && { servedModel: b.servedModel }),
        };
      });
      if (pool.replicas && pool.replicas.port + pool.replicas.count - 1 > 65535) {
        issues.push({
          path: [...where, "replicas", "port"],
          message: `port + count - 1 exceeds 65535 (${pool.replicas.port} + ${pool.replicas.count} - 1)`,
          fix: "choose a lower port",
        });
      }
      return {
        name: pool.name,
        priority: pool.priority ?? pi,
        queueThreshold: pool.queueThreshold ?? settings.defaultQueueThreshold,
        backends,
        ...(pool.replicas !== undefined && { replicas: pool.replicas }),
      };
    });
    pools.sort((a, b) => a.priority - b.priority);
    return { model: svc.model, aliases: svc.aliases, pools };
  });
  if (issues.length > 0) {
    throw new ServicesConfigError(
      issues.map((i) => ({
        file,
        path: formatPath(i.path),
        ...(parsed ? positionAt(parsed, i.path) : { line: 0, column: 0 }),
        message: i.message,
        fix: i.fix,
      })),
    );
  }
  return { settings, services, ...(cors !== undefined && { cors }) };
}
