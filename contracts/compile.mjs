// Compile contracts/src/**/*.sol with the pinned solc (npm "solc", solcjs) through standard JSON.
// Prints {"solcVersion", "settings", "sources": {name: sha256}, "contracts": {Name: {...}}} on
// stdout; contracts/build.py turns that into contracts/artifacts/*.json and checks for drift.
// Usage: node compile.mjs
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const here = dirname(fileURLToPath(import.meta.url));

function walk(dir) {
  return readdirSync(dir)
    .sort()
    .flatMap((name) => {
      const path = join(dir, name);
      return statSync(path).isDirectory() ? walk(path) : name.endsWith(".sol") ? [path] : [];
    });
}

const settings = {
  evmVersion: "prague",
  optimizer: { enabled: true, runs: 200 },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};
const sources = {};
const hashes = {};
for (const path of walk(join(here, "src"))) {
  const name = relative(here, path).split("\\").join("/");
  const content = readFileSync(path, "utf8");
  sources[name] = { content };
  hashes[name] = createHash("sha256").update(content).digest("hex");
}
const output = JSON.parse(solc.compile(JSON.stringify({ language: "Solidity", sources, settings })));
const errors = (output.errors || []).filter((e) => e.severity === "error");
for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
if (errors.length) process.exit(1);
const contracts = {};
for (const [sourceName, byName] of Object.entries(output.contracts)) {
  for (const [name, c] of Object.entries(byName)) {
    if (!c.evm.bytecode.object || c.abi.length === 0) continue; // interfaces, internal-only libraries
    contracts[name] = {
      contractName: name,
      sourceName,
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
    };
  }
}
process.stdout.write(JSON.stringify({ solcVersion: solc.version(), settings, sources: hashes, contracts }));
