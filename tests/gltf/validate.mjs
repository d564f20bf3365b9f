// Validates one glTF/GLB file with the Khronos glTF validator and prints its JSON report.
// Usage: node tests/gltf/validate.mjs FILE   (exit 0 when the report was written, 1 otherwise)
import { readFile } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import validator from "gltf-validator";

const file = process.argv[2];
if (!file) {
  console.error("usage: node validate.mjs FILE.glb|FILE.gltf");
  process.exit(1);
}
const bytes = new Uint8Array(await readFile(file));
const report = await validator.validateBytes(bytes, {
  uri: basename(file),
  maxIssues: 100,
  externalResourceFunction: async (uri) =>
    new Uint8Array(await readFile(resolve(dirname(file), decodeURIComponent(uri)))),
});
console.log(JSON.stringify(report, null, 2));
