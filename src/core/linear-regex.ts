import { RE2JS } from "re2js";

/**
 * User regular expressions (a job's `progress.regex`, a cluster's cause patterns) run on the server against every
 * log line, so they must never backtrack: `^(a+)+(?<step>\d+)$` takes seconds per line in a backtracking engine.
 * They run on RE2 (the `re2js` port, pure JavaScript), whose matching is linear in the line's length.
 *
 * RE2 syntax is JavaScript's minus what needs backtracking: no lookahead `(?=` `(?!`, no lookbehind, no
 * backreferences `\1` `\k<name>`. Named groups `(?<name>...)` work. Such a pattern is refused when it is compiled
 * (`linearRegexProblem`), i.e. when the spec or cluster file is read, with the reason.
 */

/** Why `source` cannot run on the linear-time engine, or null when it can. */
export function linearRegexProblem(source: string): string | null {
  try {
    RE2JS.compile(source);
    return null;
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    return `${message.split("\n")[0]} (the linear-time engine has no lookahead, lookbehind or backreferences)`;
  }
}

/**
 * A RegExp whose `exec` (and so `test`, `String.prototype.match` and `replace` without the g flag) runs on RE2.
 * It is a RegExp so that code written for one takes it as is; only `exec`-based use is supported (no `g`/`y` flags,
 * no `lastIndex`, no `split`). Throws when the pattern is not RE2 syntax (see `linearRegexProblem`).
 */
export class LinearRegExp extends RegExp {
  readonly #re: RE2JS;
  readonly #names: Array<[string, number]>;

  constructor(source: string, opts: { ignoreCase?: boolean } = {}) {
    // The engine's own pattern is a placeholder that is never matched: every match goes through exec below.
    super("(?:)", opts.ignoreCase ? "i" : "");
    this.#re = RE2JS.compile(source, opts.ignoreCase ? RE2JS.CASE_INSENSITIVE : 0);
    this.#names = Object.entries(this.#re.namedGroups());
    Object.defineProperty(this, "source", { value: source, enumerable: false });
  }

  /** The pattern's named groups. */
  get groupNames(): string[] {
    return this.#names.map(([name]) => name);
  }

  static override get [Symbol.species](): RegExpConstructor {
    return RegExp;
  }

  override exec(input: string): RegExpExecArray | null {
    const m = this.#re.matcher(input);
    if (!m.find()) return null;
    const groups: Array<string | undefined> = [m.group(0) ?? ""];
    for (let i = 1; i <= m.groupCount(); i++) groups.push(m.group(i) ?? undefined);
    const result = groups as unknown as RegExpExecArray;
    result.index = m.start(0);
    result.input = input;
    result.groups =
      this.#names.length > 0
        ? Object.fromEntries(this.#names.map(([name, i]) => [name, groups[i]] as [string, string]))
        : undefined;
    return result;
  }
}

const cache = new Map<string, LinearRegExp | null>();

/**
 * The compiled form of a stored pattern, or null when it does not compile (a spec stored before patterns were
 * checked against the linear-time engine): such a pattern matches nothing rather than failing every tick.
 */
export function linearOrNull(source: string, opts: { ignoreCase?: boolean } = {}): LinearRegExp | null {
  const key = `${opts.ignoreCase ? "i" : "-"}${source}`;
  if (!cache.has(key)) {
    let re: LinearRegExp | null = null;
    try {
      re = new LinearRegExp(source, opts);
    } catch {
      re = null;
    }
    if (cache.size >= 1000) cache.clear();
    cache.set(key, re);
  }
  return cache.get(key)!;
}
