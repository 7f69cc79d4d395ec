"""The Kubernetes manifests in deploy/kubernetes, validated as a cluster
would (kubernetes-validate's schemas of the Kubernetes API, strict about
unknown fields; the InferencePool and HTTPRoute CRDs' own schemas from the
Gateway API projects, tests/data/k8s-schemas), and checked against each
other: the ports, labels, names and block size that must agree. The
Dockerfile's runtime is checked for what the manifests rely on."""

import copy
import json
import os
import re
import unittest

import jsonschema
import kubernetes_validate
import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DEPLOY = os.path.join(ROOT, "deploy", "kubernetes")
SCHEMAS = os.path.join(ROOT, "tests", "data", "k8s-schemas")
KUBERNETES = kubernetes_validate.latest_version()
CRDS = {("inference.networking.k8s.io/v1", "InferencePool"): "inferencepool-v1.json",
        ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproute-v1.json"}


def strict(schema):
    """A CRD schema that refuses unknown fields, as `kubectl --validate=strict`
    does (a CRD's schema prunes them instead)."""
    schema = copy.deepcopy(schema)

    def walk(s):
        if isinstance(s, dict):
            if s.get("type") == "object" and "properties" in s and not s.get("x-kubernetes-preserve-unknown-fields"):
                s.setdefault("additionalProperties", False)
            for v in s.values():
                walk(v)
        elif isinstance(s, list):
            for v in s:
                walk(v)

    walk(schema)
    return schema


CRD_SCHEMAS = {key: strict(json.load(open(os.path.join(SCHEMAS, name)))) for key, name in CRDS.items()}


def validate(doc):
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        jsonschema.validate(doc, CRD_SCHEMAS[key])
    else:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def manifests():
    docs = []
    for name in sorted(os.listdir(DEPLOY)):
        if name.endswith(".yaml") and name != "kustomization.yaml":
            with open(os.path.join(DEPLOY, name)) as f:
                docs += [(name, d) for d in yaml.safe_load_all(f) if d]
    return docs


def find(kind, name):
    (doc,) = [d for _, d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def flag(args, name):
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return value


class Manifests(unittest.TestCase):
    def test_every_manifest_is_valid(self):
        docs = manifests()
        self.assertGreaterEqual(len(docs), 10)
        for name, doc in docs:
            with self.subTest(file=name, kind=doc["kind"], name=doc["metadata"]["name"]):
                validate(doc)

    def test_the_validators_refuse_what_a_cluster_refuses(self):
        deployment = find("Deployment", "caravan")
        typo = copy.deepcopy(deployment)
        typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = typo["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
        with self.assertRaises(kubernetes_validate.ValidationError):
            validate(typo)
        wrong_type = copy.deepcopy(deployment)
        wrong_type["spec"]["replicas"] = "two"
        with self.assertRaises(kubernetes_validate.ValidationError):
            validate(wrong_type)
        pool = find("InferencePool", "caravan")
        for broken in ({k: v for k, v in pool["spec"].items() if k != "targetPorts"}, {**pool["spec"], "targetPort": 11434}):
            with self.assertRaises(jsonschema.ValidationError):
                validate({**pool, "spec": broken})

    def test_kustomization_lists_every_manifest(self):
        with open(os.path.join(DEPLOY, "kustomization.yaml")) as f:
            listed = yaml.safe_load(f)["resources"]
        self.assertEqual(sorted(listed), sorted({name for name, _ in manifests()}))

    def test_the_pieces_agree(self):
        deployment = find("Deployment", "caravan")
        pod = deployment["spec"]["template"]
        (server,) = pod["spec"]["containers"]
        args = server["args"]
        ports = {p["name"]: p["containerPort"] for p in server["ports"]}
        env = {e["name"]: e.get("value") for e in server["env"]}
        self.assertEqual(env["CARAVAN_HOST"], f"0.0.0.0:{ports['http']}")
        # The pool's pods are caravan's, on its HTTP port; the route and the
        # picker name the pool.
        pool = find("InferencePool", "caravan")
        self.assertTrue(pool["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items())
        self.assertEqual(pool["spec"]["targetPorts"], [{"number": ports["http"]}])
        route = find("HTTPRoute", "caravan")
        self.assertEqual(route["spec"]["rules"][0]["backendRefs"][0]["name"], "caravan")
        picker = find("Deployment", pool["spec"]["endpointPickerRef"]["name"])
        picker_args = picker["spec"]["template"]["spec"]["containers"][0]["args"]
        self.assertEqual(flag(picker_args, "pool-name"), "caravan")
        self.assertEqual(int(flag(picker_args, "grpc-port")), pool["spec"]["endpointPickerRef"]["port"]["number"])
        service = find("Service", pool["spec"]["endpointPickerRef"]["name"])
        self.assertEqual(service["spec"]["ports"][0]["port"], pool["spec"]["endpointPickerRef"]["port"]["number"])
        # The scorer hashes blocks of caravan's size, dials the port its
        # events are published on, and reads the topic's pod address.
        config = yaml.safe_load(find("ConfigMap", "caravan-epp")["data"]["plugins.yaml"])
        self.assertEqual(config["kind"], "EndpointPickerConfig")
        (scorer,) = [p["parameters"] for p in config["plugins"] if p["type"] == "precise-prefix-cache-scorer"]
        self.assertEqual(scorer["tokenProcessorConfig"]["blockSize"], int(flag(args, "block-size")))
        self.assertEqual(flag(args, "kv-events"), f"tcp://*:{scorer['kvEventsConfig']['podDiscoveryConfig']['socketPort']}")
        self.assertEqual(ports["kv-events"], scorer["kvEventsConfig"]["podDiscoveryConfig"]["socketPort"])
        self.assertEqual(flag(args, "kv-events-topic"), f"kv@$(POD_IP):{ports['http']}@{{model}}")
        self.assertTrue(flag(args, "kv-events-topic").startswith(scorer["kvEventsConfig"]["topicFilter"]))
        # Probes read /health; the pod outlives the server's drain.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            self.assertEqual(server[probe]["httpGet"]["path"], "/health")
        self.assertGreater(pod["spec"]["terminationGracePeriodSeconds"], float(flag(args, "shutdown-grace")))
        self.assertTrue(pod["spec"]["securityContext"]["runAsNonRoot"])
        # The autoscaler scales this Deployment.
        hpa = find("HorizontalPodAutoscaler", "caravan")
        self.assertEqual(hpa["spec"]["scaleTargetRef"], {"apiVersion": "apps/v1", "kind": "Deployment", "name": "caravan"})

    def test_the_image_runs_as_the_manifests_expect(self):
        with open(os.path.join(ROOT, "Dockerfile")) as f:
            dockerfile = f.read()
        stages = re.findall(r"^FROM (\S+)", dockerfile, re.M)
        self.assertEqual(len(stages), 2, "a build stage and a slim runtime")
        runtime = dockerfile.split("\nFROM ")[-1]
        self.assertIn("USER 10001", runtime)
        self.assertEqual(find("Deployment", "caravan")["spec"]["template"]["spec"]["securityContext"]["runAsUser"], 10001)
        self.assertRegex(runtime, r"HEALTHCHECK .*http://127\.0\.0\.1:11434/health")
        self.assertIn("EXPOSE 11434 5557", runtime)
        self.assertIn('ENTRYPOINT ["caravan"]', runtime)


if __name__ == "__main__":
    unittest.main(verbosity=2)
