// Validates custom resources with the published @kubernetes-models schemas.
// stdin: a JSON array of objects; prints one line per problem and exits 1 if any.
import { readFileSync } from "node:fs";
import { ServiceMonitor, PrometheusRule, PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import { Certificate, Issuer, ClusterIssuer } from "@kubernetes-models/cert-manager/cert-manager.io/v1";

const MODELS = {
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": PrometheusRule,
  "monitoring.coreos.com/v1/PodMonitor": PodMonitor,
  "cert-manager.io/v1/Certificate": Certificate,
  "cert-manager.io/v1/Issuer": Issuer,
  "cert-manager.io/v1/ClusterIssuer": ClusterIssuer,
};

const docs = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const doc of docs) {
  const key = `${doc.apiVersion}/${doc.kind}`;
  const where = `${doc.kind}/${doc.metadata?.name}`;
  const Model = MODELS[key];
  if (!Model) {
    console.log(`${where}: no model for ${key}`);
    failed++;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`${where}: valid`);
  } catch (err) {
    console.log(`${where}: INVALID ${err.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
