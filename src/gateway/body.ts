/**
 * Surgical edits of a JSON request body: the top-level `"model"` string is replaced by a backend's served name, and
 * every other byte is kept as the client sent it (number precision, key order, unknown fields, whitespace). A
 * parse-and-stringify round trip would not do: it rounds integers above 2^53 (seeds) and reorders nothing but still
 * rewrites the whole body.
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Index just past the JSON string token that starts at `i` (a quote), or -1 if it does not end. */
function skipString(text: string, i: number): number {
  for (let j = i + 1; j < text.length; j++) {
    const c = text.charCodeAt(j);
    if (c === BACKSLASH) j++;
    else if (c === QUOTE) return j + 1;
  }
  return -1;
}

function skipSpace(text: string, i: number): number {
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
    i++;
  }
  return i;
}

/**
 * Replaces the value of every top-level `"model"` key whose value is a string (JSON.parse keeps the last of
 * duplicate keys, so all are replaced) with `served`. `text` must be a JSON object that JSON.parse accepted. Returns
 * the text unchanged when there is nothing to replace.
 */
export function rewriteModel(text: string, served: string): string {
  const replacement = JSON.stringify(served);
  const parts: string[] = [];
  let copied = 0;
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      const end = skipString(text, i);
      if (end < 0) return text;
      if (depth === 1 && expectKey) {
        expectKey = false;
        const key = JSON.parse(text.slice(i, end)) as string;
        const colon = skipSpace(text, end);
        const v = skipSpace(text, colon + 1);
        if (key === "model" && text[colon] === ":" && text[v] === '"') {
          const vEnd = skipString(text, v);
          if (vEnd < 0) return text;
          parts.push(text.slice(copied, v), replacement);
          copied = vEnd;
          i = vEnd - 1;
          continue;
        }
      }
      i = end - 1;
    } else if (c === "{" || c === "[") {
      depth++;
      expectKey = c === "{" && depth === 1;
    } else if (c === "}" || c === "]") {
      depth--;
    } else if (c === "," && depth === 1) {
      expectKey = true;
    }
  }
  if (parts.length === 0) return text;
  parts.push(text.slice(copied));
  return parts.join("");
}
