/**
 * An incremental scanner of a text/event-stream, per the SSE parsing rules of the HTML standard
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation), working on the bytes
 * the gateway relays. It does not build events: it finds where each event ends (so the gateway forwards whole events
 * and can append an error event cleanly) and whether the last dispatched event's data is exactly `[DONE]` (the
 * OpenAI end-of-stream marker), which decides whether a stream ended properly or was truncated.
 *
 * Grammar handled: lines end with CRLF, LF or CR (a CRLF split across two chunks is one line end); an empty line ends
 * the event; a line starting with `:` is a comment; `field:value` with one optional space after the colon removed; a
 * line without a colon is a field with an empty value; a leading UTF-8 BOM is skipped. An event is dispatched only
 * when its data buffer is non-empty (at least one `data` field). At the end of the stream an unterminated event is
 * discarded, as the standard says: a stream whose last bytes are `data: [DONE]` without the blank line was cut.
 *
 * The Responses API (`/v1/responses`) ends its streams with a terminal event instead of `[DONE]`: with
 * `responsesApi`, an event whose `event:` field, or whose data's leading `{"type":...}`, is response.completed,
 * response.failed or response.incomplete also ends the stream properly ([DONE] still does).
 *
 * Cost: the bytes are searched with Buffer.indexOf (native); JavaScript only looks at the first bytes of each line.
 * eventsource-parser (the usual library) works on decoded strings and its current major needs Node >= 22.12.
 */

const LF = 0x0a;
const CR = 0x0d;
const COLON = 0x3a;
const SPACE = 0x20;
/** Bytes of a line kept to classify it: "data: [DONE]" is 12, `data: {"type":"response.incomplete"` 35, plus a BOM. */
const HEAD = 40;
const DATA = [0x64, 0x61, 0x74, 0x61]; // "data"
const DONE = [0x5b, 0x44, 0x4f, 0x4e, 0x45, 0x5d]; // "[DONE]"
const BOM = [0xef, 0xbb, 0xbf];
const EVENT = [0x65, 0x76, 0x65, 0x6e, 0x74]; // "event"
const TERMINAL_TYPES = ["response.completed", "response.failed", "response.incomplete"].map((t) => Buffer.from(t));
const TERMINAL_DATA = TERMINAL_TYPES.map((t) => Buffer.concat([Buffer.from('{"type":"'), t, Buffer.from('"')]));

export class SseScanner {
  /** Data-carrying events dispatched so far. */
  events = 0;
  /** The last dispatched event's data is exactly `[DONE]`. */
  lastEventDone = false;

  private readonly head = Buffer.alloc(HEAD);
  /** Bytes of the current, unterminated line seen so far (only the first HEAD are kept). */
  private lineLen = 0;
  /** The previous byte was a CR ending a line: an LF right after it belongs to that line end. */
  private afterCR = false;
  private atStreamStart = true;
  /** Data lines in the event being read, and whether its only data line so far is exactly `[DONE]`. */
  private dataLines = 0;
  private firstDataIsDone = false;
  /** Any line (field or comment) read since the last event boundary. */
  private linesInEvent = 0;
  /** Responses API: the event being read is a terminal one (by its event field or its data's type). */
  private eventIsTerminal = false;

  constructor(private readonly responsesApi = false) {}

  /**
   * Scans a chunk. Returns the index just past the last event boundary (the end of an empty line) inside `chunk`,
   * or -1 when the chunk holds none.
   */
  push(chunk: Buffer): number {
    let boundary = -1;
    let pos = 0;
    const n = chunk.length;
    if (this.afterCR && n > 0) {
      this.afterCR = false;
      if (chunk[0] === LF) {
        pos = 1;
        // The LF completes a CRLF; if that CRLF ended an empty line, the boundary moves past the LF too.
        if (this.lineLen === 0 && this.linesInEvent === 0) boundary = 1;
      }
    }
    let nextLF = chunk.indexOf(LF, pos);
    let nextCR = chunk.indexOf(CR, pos);
    while (pos < n) {
      if (nextLF !== -1 && nextLF < pos) nextLF = chunk.indexOf(LF, pos);
      if (nextCR !== -1 && nextCR < pos) nextCR = chunk.indexOf(CR, pos);
      let end: number;
      if (nextLF === -1 && nextCR === -1) end = -1;
      else if (nextLF === -1) end = nextCR;
      else if (nextCR === -1) end = nextLF;
      else end = Math.min(nextLF, nextCR);
      if (end === -1) {
        this.take(chunk, pos, n);
        break;
      }
      this.take(chunk, pos, end);
      let next = end + 1;
      if (chunk[end] === CR) {
        if (next < n) {
          if (chunk[next] === LF) next++;
        } else {
          this.afterCR = true;
        }
      }
      if (this.endLine()) boundary = next;
      pos = next;
    }
    return boundary;
  }

  /**
   * True when the stream so far ended properly: the last dispatched event is `[DONE]` and no data of a further event
   * has started (trailing comments or blank lines are fine).
   */
  get ended(): boolean {
    if (!this.lastEventDone || this.dataLines > 0) return false;
    // An unterminated line after [DONE] is discarded at the end; only a data line would be a cut event.
    return this.lineLen === 0 || !this.isDataLine(this.bomSkip(), this.lineLen - this.bomSkip());
  }

  /** Nothing of a next event has been read since the last boundary. */
  get atBoundary(): boolean {
    return this.lineLen === 0 && this.linesInEvent === 0;
  }

  private take(chunk: Buffer, from: number, to: number): void {
    if (to <= from) return;
    if (this.lineLen < HEAD) chunk.copy(this.head, this.lineLen, from, Math.min(to, from + HEAD - this.lineLen));
    this.lineLen += to - from;
  }

  private bomSkip(): number {
    if (!this.atStreamStart || this.lineLen < 3) return 0;
    return this.head[0] === BOM[0] && this.head[1] === BOM[1] && this.head[2] === BOM[2] ? 3 : 0;
  }

  /** The field name of the line in `head` is "data": the line is exactly "data" or starts with "data:". */
  private isDataLine(skip: number, len: number): boolean {
    if (len < 4) return false;
    for (let i = 0; i < 4; i++) if (this.head[skip + i] !== DATA[i]) return false;
    return len === 4 || this.head[skip + 4] === COLON;
  }

  /** The line in `head` is the field `name` (exactly the name, or the name and a colon). */
  private isField(name: number[], skip: number, len: number): boolean {
    if (len < name.length) return false;
    for (let i = 0; i < name.length; i++) if (this.head[skip + i] !== name[i]) return false;
    return len === name.length || this.head[skip + name.length] === COLON;
  }

  /** Where the value of a field line starts in `head` and how long it is (one space after the colon dropped). */
  private valueOf(skip: number, len: number, nameLen: number): [number, number] {
    let v = skip + nameLen + 1;
    let vlen = len - nameLen - 1;
    if (vlen > 0 && this.head[v] === SPACE) {
      v++;
      vlen--;
    }
    return [v, Math.max(0, vlen)];
  }

  /** Ends the current line; returns true when it was the empty line that ends an event. */
  private endLine(): boolean {
    const skip = this.bomSkip();
    this.atStreamStart = false;
    const len = this.lineLen - skip;
    this.lineLen = 0;
    if (len === 0) {
      if (this.dataLines > 0) {
        this.events++;
        this.lastEventDone = (this.dataLines === 1 && this.firstDataIsDone) || this.eventIsTerminal;
      }
      this.dataLines = 0;
      this.firstDataIsDone = false;
      this.eventIsTerminal = false;
      this.linesInEvent = 0;
      return true;
    }
    this.linesInEvent++;
    if (!this.isDataLine(skip, len)) {
      // A comment or another field; the Responses API names its terminal events in the `event` field.
      if (this.responsesApi && this.isField(EVENT, skip, len)) {
        const [v, vlen] = this.valueOf(skip, len, EVENT.length);
        if (TERMINAL_TYPES.some((t) => t.length === vlen && this.head.compare(t, 0, vlen, v, v + vlen) === 0)) {
          this.eventIsTerminal = true;
        }
      }
      return false;
    }
    const h = this.head;
    if (this.responsesApi && this.dataLines === 0) {
      const [v, vlen] = this.valueOf(skip, len, 4);
      if (
        TERMINAL_DATA.some(
          (t) => vlen >= t.length && v + t.length <= HEAD && h.compare(t, 0, t.length, v, v + t.length) === 0,
        )
      ) {
        this.eventIsTerminal = true;
      }
    }
    this.dataLines++;
    if (this.dataLines === 1) {
      let v = skip + 5;
      let vlen = len - 5;
      if (vlen > 0 && h[v] === SPACE) {
        v++;
        vlen--;
      }
      let done = vlen === DONE.length;
      for (let i = 0; done && i < DONE.length; i++) if (h[v + i] !== DONE[i]) done = false;
      this.firstDataIsDone = done;
    } else {
      this.firstDataIsDone = false;
    }
    return false;
  }
}
