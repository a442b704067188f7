import { describe, expect, it } from "vitest";
import { hccnLinkArgs, parseHccnLink } from "./hccn.js";
import { DeviceOutputError } from "./nvidia-smi.js";

describe("hccn_tool link status", () => {
  it("reads UP and DOWN, whatever the case and spacing", () => {
    expect(parseHccnLink("link status: UP\n")).toBe("UP");
    expect(parseHccnLink("  Link Status :  down\n")).toBe("DOWN");
  });
  it("names the tool and the line when the output is not a link status", () => {
    expect(() => parseHccnLink("dsmi_get_device_info failed, ret = 8\n")).toThrow(DeviceOutputError);
    expect(() => parseHccnLink("link status: FLAPPING\n")).toThrow(
      /hccn_tool -link -g output line 1: expected UP or DOWN/,
    );
  });
  it("asks for one device's link", () => {
    expect(hccnLinkArgs(3)).toEqual(["-i", "3", "-link", "-g"]);
  });
});
