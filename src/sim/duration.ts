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
