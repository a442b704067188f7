/** Plain-text tables and durations for the terminal. */

export function table(headers: string[], rows: Array<Array<string | number | null | undefined>>): string {
  const cells = rows.map((r) => r.map((c) => (c === null || c === undefined ? "-" : String(c))));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? "").length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  return [line(headers), ...cells.map(line)].join("\n");
}

export function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "-";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

export function clock(t: number): string {
  return new Date(t).toISOString().slice(11, 19);
}

/** Incident numbers as users see them: #1 is a job's first incident (the store's ids are global across jobs). */
export function incidentNumbers(incidents: ReadonlyArray<{ id: number }>): Map<number, number> {
  const ids = incidents.map((i) => i.id).sort((a, b) => a - b);
  return new Map(ids.map((id, i) => [id, i + 1]));
}
