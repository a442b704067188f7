import { execFileSync } from "node:child_process";

/** Writes a self-signed EC certificate for 127.0.0.1 and its key (Debian's openssl CLI); throws when openssl fails. */
export function selfSigned(certFile: string, keyFile: string): void {
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      keyFile,
      "-out",
      certFile,
      "-days",
      "1",
      "-subj",
      "/CN=127.0.0.1",
      "-addext",
      "subjectAltName=IP:127.0.0.1",
    ],
    { stdio: "ignore" },
  );
}
