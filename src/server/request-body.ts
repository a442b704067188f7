/**
 * JSON request bodies of the API, validated like a user's config file (src/core/spec-errors.ts): a body that is not
 * JSON, a missing or mistyped field, or an unknown one ("did you mean") is a SpecError naming the route and the field,
 * which app.ts answers with 400 `{error, issues}` (the CLI prints it as exit 2, the issues under --json).
 */
import type { Context } from "hono";
import type { z } from "zod";
import {
  countZodIssues,
  SpecError,
  zodIssuesToSpecIssues,
  type DescribeIssue,
  type SpecIssue,
} from "../core/spec-errors.js";

/**
 * The body of `c` checked by `schema` (a strict object). An empty body is `{}`, so routes whose fields are all optional
 * take a bare POST. `example` shows a valid body in the fix of a body that is not a JSON object at all. `describe`
 * words a route's own issues (returns undefined for the usual wording): a machine-made body's fix is its sender.
 */
export async function requestBody<S extends z.ZodType>(
  c: Context,
  schema: S,
  example: string,
  describe?: DescribeIssue,
): Promise<z.output<S>> {
  const route = `${c.req.method} ${c.req.path}`;
  const text = await c.req.text();
  let value: unknown = {};
  if (text.trim() !== "") {
    try {
      value = JSON.parse(text) as unknown;
    } catch {
      throw requestError(route, [{ path: "", message: "the body is not JSON", fix: `send JSON like ${example}` }]);
    }
  }
  const result = schema.safeParse(value, { reportInput: true });
  if (result.success) return result.data;
  const shown = zodIssuesToSpecIssues(result.error.issues, undefined, route, schema, describe).map((i) =>
    // The body itself is the wrong kind of value (a list, a string): show what a right one looks like.
    i.path === "" ? { ...i, fix: `send JSON like ${example}` } : i,
  );
  throw new SpecError(shown, countZodIssues(result.error.issues) - shown.length);
}

/** A refused request: issues at no position, named by the route (`POST /api/jobs: resumeFrom: ...`). */
export function requestError(route: string, issues: { path: string; message: string; fix: string }[]): SpecError {
  return new SpecError(issues.map((i): SpecIssue => ({ file: route, line: 0, column: 0, ...i })));
}
