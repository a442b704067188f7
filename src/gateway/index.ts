/** The OpenAI-compatible inference gateway (issue 4). */
/** Services YAML: parse, validate, compile; engine kinds; replica specs for the supervisor. */
export * from "./config.js";
/** The request handler, runtime backend registration, health probes. */
export { Gateway, type GatewayOptions } from "./gateway.js";
/** Backend states, the registration shape and routing. */
export { BackendState, pickBackend, type BackendRegistration, type BackendSnapshot } from "./backends.js";
/** Per-engine health and queue-depth probes. */
export { engineAdapter, parsePrometheusText, type EngineAdapter, type EngineLoad } from "./engines.js";
/** Hashed API keys with per-key rate limits. */
export { addKey, defaultKeysPath, hashKey, KeyAuthenticator, readKeysFile, revokeKey, switchyardHome } from "./keys.js";
/** Node HTTP binding. */
export { isLoopbackHost, listenGateway, type ListeningGateway } from "./server.js";
/** Per-key RPM/TPM limits (token buckets). */
export { LocalLimiter, type KeyLimits, type Limiter, type LimitRefusal } from "./limits.js";
/** CORS for browser clients. */
export { Cors, type CorsSettings } from "./cors.js";
/** Several gateway processes on one port (`--workers N`). */
export { GatewayCluster, LimitAuthority, WorkerLimiter, type ManagedBackend } from "./cluster.js";
/** The control plane's backend set onto the gateway (`--control-plane URL`). */
export { followControlPlane, registrationsFromSet } from "./control-plane.js";
/** TLS on the listener. */
export type { ListenerTls } from "./server.js";
