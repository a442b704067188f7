/** Shared by the spec tests: the SpecError a spec is refused with. */
import { SpecError } from "./spec-errors.js";

/** Runs `fn` and returns the SpecError it throws; any other error is thrown on, and no error at all fails. */
export function specErrorOf(fn: () => unknown): SpecError {
  try {
    fn();
  } catch (err) {
    if (err instanceof SpecError) return err;
    throw err;
  }
  throw new Error("expected a SpecError, but nothing was thrown");
}

/** The message of the SpecError `fn` throws. */
export function errorOf(fn: () => unknown): string {
  return specErrorOf(fn).message;
}
