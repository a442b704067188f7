/**
 * Hand-written SVG charts for planner results: completion-time CDFs and a lost-time breakdown. Plain strings keep the
 * planner free of chart dependencies; the output opens in any browser.
 */
import { TIME_CATEGORIES } from "./engine.js";
import { CATEGORY_LABELS } from "./report.js";
import type { ScenarioSummary } from "./summary.js";

const SERIES_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const CATEGORY_COLORS = ["#4c9f70", "#a6d96a", "#fdae61", "#d7191c", "#f46d43", "#9e0142", "#5e4fa2", "#3288bd"];
const FONT = 'font-family="system-ui, sans-serif" font-size="12"';

/** Empirical CDFs of time to train, one line per scenario, with each deadline as a dashed line. */
export function completionCdfSvg(scenarios: ScenarioSummary[]): string {
  const width = 720;
  const height = 420;
  const margin = { left: 60, right: 180, top: 40, bottom: 50 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const withCurves = scenarios.filter((s) => s.completionQuantilesS.length > 0);
  const finiteDays = withCurves.flatMap((s) => [
    ...s.completionQuantilesS.filter(Number.isFinite).map(toDays),
    ...(s.deadline ? [toDays(s.deadline.deadlineS)] : []),
    toDays(s.nominalS),
  ]);
  // The axis spans the finishing times only, so the curves use the width instead of crowding at one side.
  const lowest = Math.min(...finiteDays, Infinity);
  const highest = Math.max(...finiteDays, 1);
  const step = niceCeiling(Math.max(highest * 1.05 - (Number.isFinite(lowest) ? lowest * 0.95 : 0), 0.1) / 6);
  const xMin = Number.isFinite(lowest) ? step * Math.floor((lowest * 0.95) / step) : 0;
  const xMax = step * Math.ceil((highest * 1.05) / step);
  const x = (d: number): number => margin.left + ((Math.min(Math.max(d, xMin), xMax) - xMin) / (xMax - xMin)) * plotW;
  const y = (p: number): number => margin.top + (1 - p) * plotH;

  const parts: string[] = [svgOpen(width, height), title("Time to train: share of trials finished by day", width)];
  parts.push(...axes(margin.left, margin.top, plotW, plotH));
  for (const tick of ticks(xMin, xMax, step)) {
    parts.push(`<line x1="${x(tick)}" y1="${y(0)}" x2="${x(tick)}" y2="${y(0) + 5}" stroke="#333"/>`);
    parts.push(`<text x="${x(tick)}" y="${y(0) + 18}" text-anchor="middle" ${FONT}>${tick}</text>`);
  }
  for (const p of [0, 0.1, 0.5, 0.9, 1]) {
    parts.push(`<line x1="${margin.left}" y1="${y(p)}" x2="${margin.left + plotW}" y2="${y(p)}" stroke="#eee"/>`);
    parts.push(`<text x="${margin.left - 8}" y="${y(p) + 4}" text-anchor="end" ${FONT}>${Math.round(p * 100)}%</text>`);
  }
  parts.push(`<text x="${margin.left + plotW / 2}" y="${height - 12}" text-anchor="middle" ${FONT}>days</text>`);

  withCurves.forEach((s, i) => {
    const color = SERIES_COLORS[i % SERIES_COLORS.length] ?? "#000";
    // Point (p-th percentile of time to train, p): the share of trials finished by then.
    const points = s.completionQuantilesS
      .map((q, p) => (Number.isFinite(q) ? `${x(toDays(q)).toFixed(1)},${y(p / 100).toFixed(1)}` : undefined))
      .filter((pt): pt is string => pt !== undefined);
    if (points.length > 0) {
      parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${points.join(" ")}"/>`);
    }
    if (s.deadline) {
      const dx = x(toDays(s.deadline.deadlineS));
      parts.push(`<line x1="${dx}" y1="${y(0)}" x2="${dx}" y2="${y(1)}" stroke="${color}" stroke-dasharray="5,4"/>`);
    }
  });
  // One label per distinct deadline: scenarios of one plan usually share it.
  const deadlines = [...new Set(withCurves.flatMap((s) => (s.deadline ? [s.deadline.deadlineS] : [])))];
  deadlines.forEach((deadlineS, i) => {
    const dx = x(toDays(deadlineS));
    parts.push(
      `<text x="${dx + 4}" y="${y(1) + 14 + 14 * i}" ${FONT} fill="#555">deadline ${fmtDays(deadlineS)}</text>`,
    );
  });
  withCurves.forEach((s, i) => {
    const color = SERIES_COLORS[i % SERIES_COLORS.length] ?? "#000";
    const ly = margin.top + 10 + i * 34;
    const note = s.deadline
      ? `P(deadline) ${Math.round(100 * s.deadline.probability)}%`
      : `p50 ${fmtDays(s.timeToTrain?.p50S)}`;
    parts.push(`<rect x="${width - margin.right + 14}" y="${ly - 9}" width="14" height="4" fill="${color}"/>`);
    parts.push(`<text x="${width - margin.right + 34}" y="${ly - 3}" ${FONT}>${escapeXml(s.name)}</text>`);
    parts.push(`<text x="${width - margin.right + 34}" y="${ly + 12}" ${FONT} fill="#555">${escapeXml(note)}</text>`);
  });
  if (withCurves.length === 0) {
    parts.push(
      `<text x="${margin.left + 10}" y="${margin.top + 20}" ${FONT}>no scenario runs to completion (window mode)</text>`,
    );
  }
  parts.push("</svg>");
  return parts.join("\n");
}

/** One stacked horizontal bar per scenario: where the mean wall time of a run goes. */
export function lostTimeSvg(scenarios: ScenarioSummary[]): string {
  const barH = 26;
  const gap = 18;
  const margin = { left: 160, right: 30, top: 50, bottom: 40 + 18 * Math.ceil(TIME_CATEGORIES.length / 2) };
  const width = 760;
  const plotW = width - margin.left - margin.right;
  const height = margin.top + scenarios.length * (barH + gap) + margin.bottom;
  const walls = scenarios.map((s) => TIME_CATEGORIES.reduce((sum, c) => sum + s.timeS[c], 0));
  const longest = toDays(Math.max(1, ...walls));
  const step = niceCeiling(longest / 6);
  const xMax = step * Math.ceil((longest * 1.02) / step);
  const x = (seconds: number): number => (toDays(seconds) / xMax) * plotW;

  const parts: string[] = [svgOpen(width, height), title("Mean wall time per run, by category (days)", width)];
  scenarios.forEach((s, i) => {
    const top = margin.top + i * (barH + gap);
    parts.push(
      `<text x="${margin.left - 8}" y="${top + barH / 2 + 4}" text-anchor="end" ${FONT}>${escapeXml(s.name)}</text>`,
    );
    let left = margin.left;
    TIME_CATEGORIES.forEach((c, ci) => {
      const w = x(s.timeS[c]);
      if (w <= 0) return;
      const label = `${CATEGORY_LABELS[c]}: ${toDays(s.timeS[c]).toFixed(2)} d`;
      parts.push(
        `<rect x="${left.toFixed(1)}" y="${top}" width="${w.toFixed(1)}" height="${barH}" fill="${CATEGORY_COLORS[ci] ?? "#999"}"><title>${escapeXml(label)}</title></rect>`,
      );
      left += w;
    });
    parts.push(
      `<text x="${(left + 4).toFixed(1)}" y="${top + barH / 2 + 4}" ${FONT}>${toDays(walls[i] ?? 0).toFixed(1)} d</text>`,
    );
  });
  const axisY = margin.top + scenarios.length * (barH + gap) - gap / 2;
  parts.push(`<line x1="${margin.left}" y1="${axisY}" x2="${margin.left + plotW}" y2="${axisY}" stroke="#333"/>`);
  for (const tick of ticks(0, xMax, step)) {
    const tx = margin.left + (tick / xMax) * plotW;
    parts.push(`<text x="${tx}" y="${axisY + 16}" text-anchor="middle" ${FONT}>${tick}</text>`);
  }
  TIME_CATEGORIES.forEach((c, ci) => {
    const lx = margin.left + (ci % 2) * 280;
    const ly = axisY + 40 + Math.floor(ci / 2) * 18;
    parts.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${CATEGORY_COLORS[ci] ?? "#999"}"/>`);
    parts.push(`<text x="${lx + 18}" y="${ly}" ${FONT}>${escapeXml(CATEGORY_LABELS[c])}</text>`);
  });
  parts.push("</svg>");
  return parts.join("\n");
}

function svgOpen(width: number, height: number): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">\n<rect width="100%" height="100%" fill="#fff"/>`;
}

function title(text: string, width: number): string {
  return `<text x="${width / 2}" y="22" text-anchor="middle" font-family="system-ui, sans-serif" font-size="15" font-weight="600">${escapeXml(text)}</text>`;
}

function axes(left: number, top: number, w: number, h: number): string[] {
  return [
    `<line x1="${left}" y1="${top + h}" x2="${left + w}" y2="${top + h}" stroke="#333"/>`,
    `<line x1="${left}" y1="${top}" x2="${left}" y2="${top + h}" stroke="#333"/>`,
  ];
}

function toDays(seconds: number): number {
  return seconds / 86_400;
}

function fmtDays(seconds: number | undefined): string {
  return seconds === undefined || !Number.isFinite(seconds) ? "never" : `${toDays(seconds).toFixed(1)} d`;
}

/** 1, 2 or 5 times a power of ten, at or above the value: axis ends people can read. */
export function niceCeiling(value: number): number {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function ticks(min: number, max: number, step: number): number[] {
  const result: number[] = [];
  for (let t = min; t <= max + step * 1e-6; t += step) result.push(Number(t.toPrecision(6)));
  return result;
}

export function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}
