import { describe, expect, it } from "vitest";
import { SseScanner } from "./sse.js";

/**
 * A plain reading of the standard's event-stream interpretation, on a whole string: the reference the incremental
 * scanner is compared with. Returns the dispatched events' data, the offset (in bytes) just past each empty line,
 * and whether an event was left unterminated with data in it.
 */
function reference(bytes: Buffer): { data: string[]; boundaries: number[]; cutWithData: boolean } {
  let text = bytes.toString("latin1"); // one char per byte, so offsets are byte offsets
  let offset = 0;
  if (text.startsWith("\xef\xbb\xbf")) {
    text = text.slice(3);
    offset = 3;
  }
  const data: string[] = [];
  const boundaries: number[] = [];
  let buf = "";
  let hasData = false;
  const re = /\r\n|\r|\n/g;
  let start = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const line = text.slice(start, m.index);
    start = m.index + m[0].length;
    if (line === "") {
      boundaries.push(offset + start);
      if (buf !== "") data.push(buf.endsWith("\n") ? buf.slice(0, -1) : buf);
      buf = "";
      hasData = false;
      continue;
    }
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") {
      buf += value + "\n";
      hasData = true;
    }
  }
  // A CR as the very last byte may still be followed by an LF: the regex already treats it as a line end.
  return { data, boundaries, cutWithData: hasData || /^data(:|$)/.test(text.slice(start)) };
}

interface Scan {
  events: number;
  lastEventDone: boolean;
  ended: boolean;
  lastBoundary: number;
}

function scan(bytes: Buffer, splits: number[]): Scan {
  const s = new SseScanner();
  let lastBoundary = -1;
  let from = 0;
  for (const to of [...splits, bytes.length]) {
    const b = s.push(bytes.subarray(from, to));
    if (b >= 0) lastBoundary = from + b;
    from = to;
  }
  return { events: s.events, lastEventDone: s.lastEventDone, ended: s.ended, lastBoundary };
}

function expected(bytes: Buffer): Scan {
  const r = reference(bytes);
  const lastEventDone = r.data.length > 0 && r.data[r.data.length - 1] === "[DONE]";
  return {
    events: r.data.length,
    lastEventDone,
    ended: lastEventDone && !r.cutWithData,
    lastBoundary: r.boundaries.length > 0 ? r.boundaries[r.boundaries.length - 1]! : -1,
  };
}

const chunk = (s: string): string => `data: {"choices":[{"delta":{"content":${JSON.stringify(s)}}}]}`;

const streams: Record<string, string> = {
  "OpenAI style, LF": `${chunk("a")}\n\n${chunk("b")}\n\ndata: [DONE]\n\n`,
  "no space after the colon": `${chunk("a")}\n\ndata:[DONE]\n\n`,
  "CRLF line ends": `${chunk("a")}\r\n\r\ndata: [DONE]\r\n\r\n`,
  "CR line ends": `${chunk("a")}\r\rdata: [DONE]\r\r`,
  "mixed line ends": `${chunk("a")}\r\n\ndata: [DONE]\r\r\n`,
  "comments and other fields": `: keep-alive\n\nevent: message\nid: 7\n${chunk("a")}\n\ndata: [DONE]\n\n: bye\n\n`,
  "leading BOM": `\ufeff${chunk("a")}\n\ndata: [DONE]\n\n`,
  "[DONE] inside JSON content, then the end": `${chunk("a")}\n\n${chunk("data: [DONE]")}\n\n`,
  "[DONE] text as the last event's content": `${chunk("a")}\n\n${chunk("x\n\ndata: [DONE]\n\n")}\n\n`,
  "[DONE] without the closing blank line": `${chunk("a")}\n\ndata: [DONE]\n`,
  "[DONE] unterminated": `${chunk("a")}\n\ndata: [DONE]`,
  "[DONE] then another event": `data: [DONE]\n\n${chunk("late")}\n\n`,
  "[DONE] then a cut event": `data: [DONE]\n\ndata: {"cho`,
  "two data lines, the second [DONE]": `data: x\ndata: [DONE]\n\n`,
  "[DONE] with two spaces": `data:  [DONE]\n\n`,
  "[DONE] with trailing space": `data: [DONE] \n\n`,
  "field without colon then [DONE]": `data\n\ndata: [DONE]\n\n`,
  "datax field is not data": `datax: [DONE]\n\n`,
  "comment holding [DONE]": `${chunk("a")}\n\n:data: [DONE]\n\n`,
  "empty stream": ``,
  "only blank lines": `\n\n\r\n`,
};

describe("SseScanner", () => {
  for (const [name, text] of Object.entries(streams)) {
    it(`${name}: agrees with the reference, whole, split at every byte boundary, and byte by byte`, () => {
      const bytes = Buffer.from(text, "utf8");
      const want = expected(bytes);
      expect(scan(bytes, [])).toEqual(want);
      for (let k = 0; k <= bytes.length; k++) expect(scan(bytes, [k]), `split at ${k}`).toEqual(want);
      for (let k = 0; k + 3 <= bytes.length; k += 3) expect(scan(bytes, [k, k + 1, k + 3])).toEqual(want);
      expect(
        scan(
          bytes,
          Array.from({ length: bytes.length }, (_, i) => i),
        ),
      ).toEqual(want);
    });
  }

  it("decides the two cases of the issue", () => {
    const truncated = Buffer.from(`${chunk("a")}\n\n${chunk("data: [DONE]")}\n\n`);
    const valid = Buffer.from(`${chunk("a")}\n\ndata:[DONE]\n\n`);
    for (let k = 0; k <= truncated.length; k++) expect(scan(truncated, [k]).ended).toBe(false);
    for (let k = 0; k <= valid.length; k++) expect(scan(valid, [k]).ended).toBe(true);
  });

  it("reports the end of the last whole event in each chunk", () => {
    const s = new SseScanner();
    expect(s.push(Buffer.from("data: a\n\ndata: b"))).toBe(9);
    expect(s.atBoundary).toBe(false);
    expect(s.push(Buffer.from("\n"))).toBe(-1);
    expect(s.push(Buffer.from("\ndata: [DONE]\r\n\r"))).toBe(16);
    expect(s.push(Buffer.from("\n"))).toBe(1);
    expect(s.atBoundary).toBe(true);
    expect(s.ended).toBe(true);
    expect(s.events).toBe(3);
  });

  it("handles long lines without keeping them", () => {
    const long = `data: ${"x".repeat(1 << 20)}\n\ndata: [DONE]\n\n`;
    const bytes = Buffer.from(long);
    expect(scan(bytes, [7, 1000, 500_000])).toEqual(expected(bytes));
  });
});
