// Copies the browser builds of the UI's libraries from node_modules (installed by
// `npm ci` from package-lock.json) into the api's static files, with their licences.
// Usage: node build.mjs [--out DIR]   (default: ../src/tasklab_api/static/vendor)
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const at = args.indexOf("--out");
const out = at >= 0 ? args[at + 1] : join(here, "..", "src", "tasklab_api", "static", "vendor");

// What the page loads (index.html), from each package.
const FILES = [
  ["chart.js", "dist/chart.umd.min.js", "chart.umd.min.js"],
  ["chart.js", "LICENSE.md", "chart.js.LICENSE.md"],
];

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const versions = {};
for (const [pkg, from, to] of FILES) {
  const root = join(here, "node_modules", pkg);
  copyFileSync(join(root, from), join(out, to));
  versions[pkg] = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version;
}
writeFileSync(join(out, "versions.json"), JSON.stringify(versions, null, 2) + "\n");
console.log(`ui assets: ${Object.entries(versions).map(([p, v]) => `${p} ${v}`).join(", ")} -> ${out}`);
