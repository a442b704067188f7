/**
 * Parser for Huawei's `hccn_tool -i <device> -link -g` (the link status of an NPU's RoCE port): one line
 * `link status: UP` or `link status: DOWN`. Pure: the probe runs the tool and passes its output in.
 */
import { DeviceOutputError } from "./nvidia-smi.js";

export type LinkStatus = "UP" | "DOWN";

/** Arguments for `hccn_tool` that produce the output `parseHccnLink` reads. */
export function hccnLinkArgs(device: number): string[] {
  return ["-i", String(device), "-link", "-g"];
}

/** Parses `hccn_tool -i <device> -link -g`. */
export function parseHccnLink(text: string): LinkStatus {
  const lines = text.split(/\r?\n/);
  for (const raw of lines) {
    const m = /^\s*link status\s*:\s*(\S+)\s*$/i.exec(raw);
    if (!m) continue;
    const word = (m[1] ?? "").toUpperCase();
    if (word === "UP" || word === "DOWN") return word;
    throw new DeviceOutputError("hccn_tool -link -g", lines.indexOf(raw) + 1, raw.trim(), "expected UP or DOWN");
  }
  throw new DeviceOutputError("hccn_tool -link -g", 1, lines[0] ?? "", 'no "link status:" line');
}
