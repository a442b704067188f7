import type { Command } from "commander";

/** `switchyard gateway`: placeholder until the gateway lands. */
export function registerGatewayCommand(_program: Command): void {}
