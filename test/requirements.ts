import { existsSync } from "node:fs";

/**
 * What the integration tests need from the machine, and what happens when it is missing.
 *
 * Under the README's test command (scripts/test.sh, so CI) SWITCHYARD_TEST_STRICT=1: a missing dependency is a failed
 * run, never a silent skip — a machine where the install step failed must not go green with the supervisor untested.
 * In a developer's quick loop (`npx vitest run ...` without it) the tests that need it are skipped, loudly.
 */
export const strict = process.env.SWITCHYARD_TEST_STRICT === "1";

/** Returns true when the tests that need `what` must be skipped; throws under SWITCHYARD_TEST_STRICT=1. */
export function missing(what: string, available: boolean, fix: string, strictMode = strict): boolean {
  if (available) return false;
  const message = `${what} is missing (fix: ${fix})`;
  if (strictMode) throw new Error(`SWITCHYARD_TEST_STRICT=1: ${message}; the tests that need it cannot run`);
  console.warn(
    `\n${"!".repeat(100)}\n!! SKIPPED: tests that need ${what}. ${message}\n` +
      `!! scripts/test.sh (and CI) fail instead of skipping.\n${"!".repeat(100)}\n`,
  );
  return true;
}

export const chromiumPath: string | undefined = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((p) =>
  existsSync(p),
);

/** Whether the browser tests must be skipped (Debian's chromium drives them through playwright-core). */
export const noChromium: boolean = missing(
  "Chromium",
  chromiumPath !== undefined,
  "apt-get install chromium (scripts/bootstrap.sh does it)",
);
