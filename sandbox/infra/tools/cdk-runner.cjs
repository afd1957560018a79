// Runs the CDK CLI on one instance file, chosen by its path <Infrastructure>/<partition>
// (src/main/cdk/instances/<Infrastructure>/<partition>.ts). Nothing is compiled to disk, so runs for
// different partitions into different output directories can go on at the same time.
//
//   synth <I>/<P> <out-dir>                          cloud assembly of stack <I>-<P>-Email into <out-dir>
//   synth-named <I>/<P> [<profile> [<region>]]       the same into ./cdk.out (profile and region are accepted
//                                                    for the real repo's command line; synth needs no AWS)
//   diff <I>/<P> <deployed-template.json> [<out-dir>]  synth (into <out-dir>, default a fresh temp dir; an
//                                                    <out-dir> that holds the stack already is used as it is),
//                                                    then `cdk diff` against the template file: offline
// SANDBOX_SYNTH_CACHE=<folder>: a synth of inputs synthesized before copies that assembly (see cachedSynth).
const { spawnSync } = require("node:child_process");
const crypto = require("node:crypto");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

const ROOT = path.resolve(__dirname, "..");
const INSTANCES = path.join(ROOT, "src", "main", "cdk", "instances");
const CDK = require.resolve("aws-cdk/bin/cdk");
const USAGE = [
  "usage: npm run synth -- <Infrastructure>/<partition> <out-dir>",
  "       npm run synth:named -- <Infrastructure>/<partition> [<profile> [<region>]]",
  "       npm run diff -- <Infrastructure>/<partition> <deployed-template.json> [<out-dir>]",
].join("\n");

function fail(message, code = 2) {
  process.stderr.write(`cdk-runner: ${message}\n`);
  process.exit(code);
}

function knownInstances() {
  if (!fs.existsSync(INSTANCES)) return [];
  return fs
    .readdirSync(INSTANCES, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .flatMap((dir) =>
      fs
        .readdirSync(path.join(INSTANCES, dir.name))
        .filter((file) => file.endsWith(".ts"))
        .map((file) => `${dir.name}/${file.slice(0, -3)}`),
    )
    .sort();
}

function instanceFile(instance) {
  if (!/^[A-Za-z0-9_-]+\/[A-Za-z0-9_-]+$/.test(instance ?? "")) {
    fail(`expected <Infrastructure>/<partition> (like Alpha001/prod), got ${JSON.stringify(instance)}\n${USAGE}`);
  }
  const file = path.join(INSTANCES, `${instance}.ts`);
  if (!fs.existsSync(file)) {
    const known = knownInstances().join(", ") || "none";
    fail(`no instance file ${path.relative(ROOT, file)}; known instances: ${known}`);
  }
  return file;
}

/** A path argument, relative to where npm was invoked (npm runs scripts in this directory). */
function userPath(value) {
  return path.resolve(process.env.INIT_CWD ?? process.cwd(), value);
}

function cdk(args) {
  const env = { ...process.env, CDK_VALIDATION: process.env.CDK_VALIDATION ?? "false" };
  const result = spawnSync(process.execPath, [CDK, ...args], { cwd: ROOT, stdio: "inherit", env });
  if (result.error) fail(`cannot run the CDK CLI: ${result.error.message}`, 1);
  return result.status ?? 1;
}

function synth(instance, outDir) {
  // The CLI runs --app through a shell as one string: pass paths relative to ROOT, unquoted.
  const file = path.relative(ROOT, instanceFile(instance));
  const app = `${process.execPath} --enable-source-maps -r ./tools/ts-register.cjs ${file}`;
  const args = ["synth", "--app", app, "--output", outDir, "--quiet"];
  const cache = process.env.SANDBOX_SYNTH_CACHE;
  return cache ? cachedSynth(cache, instance, outDir, args) : cdk(args);
}

/**
 * Every input a synth reads, hashed: the repo's files (node_modules and outputs aside; package-lock.json pins
 * what node_modules holds), the instance, node's version and the CDK_* environment (CDK_VALIDATION,
 * CDK_CONTEXT_JSON...). Equal keys mean the same assembly and the same output, byte for byte.
 */
function synthKey(instance) {
  const hash = crypto.createHash("sha256");
  const skip = new Set(["node_modules", "dist", ".git"]);
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      if (skip.has(entry.name) || entry.name.startsWith("cdk.out")) continue;
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.isFile()) {
        const content = fs.readFileSync(full);
        hash.update(`${path.relative(ROOT, full)}\0${content.length}\0`).update(content);
      }
    }
  };
  walk(ROOT);
  const env = Object.keys(process.env)
    .filter((k) => k.startsWith("CDK_"))
    .sort();
  hash.update(JSON.stringify([instance, process.version, env.map((k) => [k, process.env[k]])]));
  return hash.digest("hex");
}

/**
 * A synth whose inputs were synthesized before (SANDBOX_SYNTH_CACHE names the folder) copies that synth's
 * assembly and replays its output instead of running the CLI again: the suite synthesizes the same four
 * partitions of unchanged repos dozens of times. A failed synth is never kept, so every failure is a real one.
 */
function cachedSynth(cache, instance, outDir, args) {
  const key = synthKey(instance);
  const entry = path.join(cache, key);
  if (fs.existsSync(path.join(entry, "done.json"))) {
    const { stdout, stderr } = JSON.parse(fs.readFileSync(path.join(entry, "done.json"), "utf8"));
    fs.cpSync(path.join(entry, "assembly"), outDir, { recursive: true });
    process.stdout.write(stdout);
    process.stderr.write(stderr);
    return 0;
  }
  const env = { ...process.env, CDK_VALIDATION: process.env.CDK_VALIDATION ?? "false" };
  const result = spawnSync(process.execPath, [CDK, ...args], { cwd: ROOT, env, encoding: "utf8" });
  if (result.error) fail(`cannot run the CDK CLI: ${result.error.message}`, 1);
  process.stdout.write(result.stdout);
  process.stderr.write(result.stderr);
  if (result.status !== 0) return result.status ?? 1;
  // written aside, then renamed into place: a concurrent synth of the same key sees all of it or none
  const staging = fs.mkdtempSync(path.join(cache, `${key}.tmp-`));
  fs.cpSync(outDir, path.join(staging, "assembly"), { recursive: true });
  fs.writeFileSync(path.join(staging, "done.json"), JSON.stringify({ stdout: result.stdout, stderr: result.stderr }));
  try {
    fs.renameSync(staging, entry);
  } catch {
    fs.rmSync(staging, { recursive: true, force: true }); // another synth of the same inputs got there first
  }
  return 0;
}

function main([command, instance, ...rest]) {
  switch (command) {
    case "synth":
      if (rest.length !== 1) fail(`synth takes <Infrastructure>/<partition> <out-dir>\n${USAGE}`);
      return synth(instance, userPath(rest[0]));
    case "synth-named":
      if (rest.length > 2) fail(`synth:named takes <Infrastructure>/<partition> [<profile> [<region>]]\n${USAGE}`);
      return synth(instance, path.join(ROOT, "cdk.out"));
    case "diff": {
      if (rest.length < 1 || rest.length > 2) fail(`diff takes <I>/<P> <deployed-template.json> [<out-dir>]\n${USAGE}`);
      const template = userPath(rest[0]);
      if (!fs.existsSync(template)) fail(`deployed template ${template} not found`);
      const outDir = rest[1] ? userPath(rest[1]) : fs.mkdtempSync(path.join(os.tmpdir(), "cdk-diff-"));
      const stack = `${instance.replace("/", "-")}-Email`;
      try {
        // An out-dir that already holds the stack's assembly (the synth checks' own) is diffed as it is:
        // `--app <cloud assembly dir>` makes the CLI read it without synthesizing (CDK CLI reference, --app).
        const synthesized = fs.existsSync(path.join(outDir, `${stack}.template.json`));
        const status = synthesized ? 0 : synth(instance, outDir);
        return status === 0 ? cdk(["diff", "--app", outDir, "--template", template, stack]) : status;
      } finally {
        if (!rest[1]) fs.rmSync(outDir, { recursive: true, force: true });
      }
    }
    default:
      fail(`unknown command ${JSON.stringify(command)}\n${USAGE}`);
  }
}

process.exit(main(process.argv.slice(2)));
