// Validates custom resources against their CRD's schema, as compiled by
// @kubernetes-models (installed by scripts/check-deploy from package-lock.json).
// Usage: node crd.mjs NODE_MODULES_DIR < objects.json   ([{file, object}, ...])
// Prints one line per object; exits 1 if any object is invalid or its kind unknown.
import { readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const PACKAGES = { "monitoring.coreos.com": "@kubernetes-models/prometheus-operator" };

const modules = process.argv[2];
const items = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const { file, object } of items) {
  const [group, version] = object.apiVersion.split("/");
  const what = `${file}: ${object.kind}/${object.metadata?.name} (${object.apiVersion})`;
  const pkg = PACKAGES[group];
  const path = pkg && join(modules, pkg, group, version, `${object.kind}.js`);
  if (!path || !existsSync(path)) {
    console.log(`ERROR ${what}: no schema for this kind`);
    failed++;
    continue;
  }
  const Model = (await import(pathToFileURL(path).href))[object.kind];
  try {
    new Model(object).validate();
    console.log(`ok    ${what} against ${pkg} ${JSON.parse(readFileSync(join(modules, pkg, "package.json"), "utf8")).version}`);
  } catch (e) {
    console.log(`ERROR ${what}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
