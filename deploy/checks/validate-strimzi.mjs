// Validate Strimzi custom resources (a JSON array of manifests, argument 1) against the schemas
// that @kubernetes-models generates from Strimzi's CRDs. Prints one line per resource; exit 1
// when any is invalid or of an unknown kind.
import fs from 'node:fs';

const models = await import('@kubernetes-models/strimzi-kafka-operator/kafka.strimzi.io/v1beta2');
const docs = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
let failed = 0;
for (const doc of docs) {
  const Model = doc.apiVersion === 'kafka.strimzi.io/v1beta2' ? models[doc.kind] : undefined;
  if (!Model) {
    console.log(`UNKNOWN ${doc.apiVersion} ${doc.kind}`);
    failed++;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`ok ${doc.kind} ${doc.metadata.name}`);
  } catch (error) {
    failed++;
    console.log(`INVALID ${doc.kind} ${doc.metadata.name}: ${String(error.message || error).slice(0, 500)}`);
  }
}
process.exit(failed ? 1 : 0);
