/** Durations in plan files: a number of seconds, or a number with a unit (s, m, h, d, w), e.g. "90s", "2.5h", "54d". */

const SECONDS_PER_UNIT: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 };
const DURATION_PATTERN = /^\s*(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*(s|m|h|d|w)\s*$/i;

export const DURATION_HINT = 'a number of seconds or a string like "90s", "15m", "2h", "54d", "1w"';

/** Seconds for a duration value, or undefined when it cannot be read as one. */
export function parseDuration(value: unknown): number | undefined {
  if (typeof value === "number") return Number.isFinite(value) && value >= 0 ? value : undefined;
  if (typeof value !== "string") return undefined;
  const match = DURATION_PATTERN.exec(value);
  if (!match) return undefined;
  const amount = Number(match[1]);
  const unit = SECONDS_PER_UNIT[(match[2] ?? "").toLowerCase()];
  return unit === undefined ? undefined : amount * unit;
}

/** Short human form with one or two significant units: "9.1 min", "2.78 h", "54.0 d". */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return seconds > 0 ? "never" : "-";
  const abs = Math.abs(seconds);
  if (abs < 120) return `${seconds.toFixed(abs < 10 ? 1 : 0)} s`;
  if (abs < 2 * 3600) return `${(seconds / 60).toFixed(1)} min`;
  if (abs < 2 * 86_400) return `${(seconds / 3600).toFixed(2)} h`;
  return `${(seconds / 86_400).toFixed(1)} d`;
}

const BYTE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  pb: 1e15,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
  pib: 2 ** 50,
};
const BYTES_PATTERN = /^\s*(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*([kmgtp]?i?b)\s*$/i;

export const BYTES_HINT = 'a number of bytes or a string like "2.3TB", "800GB", "4GiB"';
export const BANDWIDTH_HINT = 'bytes per second: a number or a string like "10GB/s", "400MB/s", "1GiB/s"';

/** Bytes for a size value ("2.3TB", "4GiB" or a number), or undefined when it cannot be read as one. */
export function parseBytes(value: unknown): number | undefined {
  if (typeof value === "number") return Number.isFinite(value) && value >= 0 ? value : undefined;
  if (typeof value !== "string") return undefined;
  const match = BYTES_PATTERN.exec(value);
  if (!match) return undefined;
  const unit = BYTE_UNITS[(match[2] ?? "").toLowerCase()];
  return unit === undefined ? undefined : Number(match[1]) * unit;
}

/** Bytes per second for a bandwidth value ("10GB/s" or a number), or undefined. */
export function parseBandwidth(value: unknown): number | undefined {
  if (typeof value === "number") return parseBytes(value);
  if (typeof value !== "string") return undefined;
  const match = /^(.*)\/s\s*$/i.exec(value);
  return match ? parseBytes(match[1]) : undefined;
}
