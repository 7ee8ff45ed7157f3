// Bundle each widget component (src/*.js, which import the shared modules in src/lib/) into one ES module
// dist/<component>.js, and the stylesheet into dist/qscope.css. anywidget loads a module from a string, so the
// relative imports must be resolved here, not at run time.
//
//   node build.mjs              build dist/ (npm run build)
//   node build.mjs --watch      rebuild on every change of src/ (npm run watch; pair with ANYWIDGET_HMR=1)
//   node build.mjs --check      exit 1 when dist/ is not what the sources build to (npm run check)
//   node build.mjs --outdir D   build into D instead of dist/
//
// Every built file starts with a header naming the sha256 of the sources (src/**, build.mjs, package.json), so
// a test can tell a stale dist/ from the sources alone, without node (tests/test_widgets.py recomputes it).

import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SRC = path.join(HERE, "src");

function option(name) {
  const i = process.argv.indexOf(name);
  return i < 0 ? null : process.argv[i + 1];
}
const watch = process.argv.includes("--watch");
const check = process.argv.includes("--check");
const outdir = path.resolve(option("--outdir") ?? path.join(HERE, "dist"));

function filesUnder(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    return entry.isDirectory() ? filesUnder(full) : [full];
  });
}

// The hash the header carries: over the sorted paths (relative to widgets/, with "/") and contents (CRLF read as LF)
// of the inputs. tests/test_widgets.py::sources_hash is the same function in Python.
export function sourcesHash() {
  const inputs = [...filesUnder(SRC), path.join(HERE, "build.mjs"), path.join(HERE, "package.json")]
    .map((file) => path.relative(HERE, file).split(path.sep).join("/"))
    .sort();
  const hash = createHash("sha256");
  for (const rel of inputs) {
    const text = readFileSync(path.join(HERE, rel), "utf8").replace(/\r\n/g, "\n");
    hash.update(rel + "\0" + text + "\0", "utf8");
  }
  return hash.digest("hex");
}

function header() {
  return `/* qscope-lab widgets: built by widgets/build.mjs from widgets/src (sources sha256:${sourcesHash()}).\n` +
    ` * Do not edit: change widgets/src and run \`npm run build\` in widgets/. */\n`;
}

const entryPoints = [
  ...readdirSync(SRC).filter((name) => name.endsWith(".js")).sort().map((name) => `src/${name}`),
  "src/qscope.css",
];

let failed = false;
const emit = {
  name: "qscope-emit",
  setup(build) {
    build.onEnd((result) => {
      if (result.errors.length) {
        failed = true;
        return;
      }
      const top = header();
      const wanted = new Map(result.outputFiles.map((f) => [path.basename(f.path), top + f.text]));
      if (check) {
        const stale = [...wanted].filter(([name, text]) => {
          const file = path.join(outdir, name);
          return !statSync(file, { throwIfNoEntry: false }) || readFileSync(file, "utf8") !== text;
        });
        for (const [name] of stale) console.error(`stale: ${path.relative(process.cwd(), path.join(outdir, name))}`);
        if (stale.length) failed = true;
        return;
      }
      mkdirSync(outdir, { recursive: true });
      for (const name of readdirSync(outdir)) {
        if (!wanted.has(name)) rmSync(path.join(outdir, name), { recursive: true });
      }
      for (const [name, text] of wanted) {
        const file = path.join(outdir, name);
        if (statSync(file, { throwIfNoEntry: false }) && readFileSync(file, "utf8") === text) continue;
        writeFileSync(file, text);  // only changed files: anywidget's HMR reloads what really changed
        console.log(`built ${path.relative(process.cwd(), file)}`);
      }
    });
  },
};

const options = {
  absWorkingDir: HERE,  // the bundles' path comments are relative to widgets/, wherever this runs from
  entryPoints,
  outdir,
  bundle: true,
  format: "esm",
  target: "es2020",
  charset: "utf8",
  legalComments: "none",
  // minified: one line per bundle, so the shared helpers are not a second readable copy in the tree (the code to
  // read and edit is src/; `npm run watch` + ANYWIDGET_HMR=1 is the development loop)
  minify: true,
  logLevel: "warning",
  write: false,
  plugins: [emit],
};

if (watch) {
  const context = await esbuild.context(options);
  await context.watch();
  console.log(`watching ${path.relative(process.cwd(), SRC) || "."} -> ${path.relative(process.cwd(), outdir)}`);
} else {
  try {
    await esbuild.build(options);
  } catch {
    failed = true;
  }
  process.exit(failed ? 1 : 0);
}
