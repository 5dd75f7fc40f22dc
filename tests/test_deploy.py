"""The Kubernetes manifests: every overlay renders with kustomize and validates strictly against the Kubernetes
schemas (unknown fields fail), and says what the fleet needs. No cluster is reachable from here (docs/deploy.md)."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"


def render(path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.fail("kubectl is not installed (apt-get install kubernetes-client)")
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate_strict(docs):
    import kubernetes_validate

    for d in docs:
        try:
            kubernetes_validate.validate(d, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{d['kind']}/{d['metadata']['name']}: {exc.message} at {list(exc.path)}") from None


def by_kind(docs, kind, name):
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.fixture(scope="module", params=["dev", "production", "production-phone"])
def overlay(request):
    return request.param, render(K8S / "overlays" / request.param)


def test_overlay_validates_strictly(overlay):
    validate_strict(overlay[1])


def test_overlay_has_what_the_fleet_needs(overlay):
    name, docs = overlay
    relay_svc = by_kind(docs, "Service", "voxgate-relay")
    assert relay_svc["spec"]["type"] == "LoadBalancer" and relay_svc["spec"]["externalTrafficPolicy"] == "Local"
    # UDP, and ICE-TCP on 443 for networks that drop UDP
    assert [(p["protocol"], p["port"]) for p in relay_svc["spec"]["ports"]] == [("UDP", 3478), ("TCP", 443)]
    relay = by_kind(docs, "Deployment", "voxgate-relay")["spec"]["template"]["spec"]["containers"][0]
    assert "--tcp-listen=0.0.0.0:3478" in relay["args"]
    workers = next(a for a in relay["args"] if a.startswith("--workers="))
    assert int(workers.split("=")[1]) == int(relay["resources"]["limits"]["cpu"])  # one worker per CPU of the limit

    tx_pod = by_kind(docs, "Deployment", "voxgate-transceiver")["spec"]["template"]["spec"]
    tx = tx_pod["containers"][0]
    env = {e["name"]: e for e in tx["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert "--media=$(POD_IP):40000" in tx["args"] and "--redis-url=$(REDIS_URL)" in tx["args"]
    assert "--relay-tcp=$(RELAY_TCP_PUBLIC)" in tx["args"]
    if name == "production":  # TURN over TLS on 443 for TLS-only networks, its secret shared with the transceivers
        turn_svc = by_kind(docs, "Service", "voxgate-turn")
        assert [(p["protocol"], p["port"]) for p in turn_svc["spec"]["ports"]] == [("TCP", 443)]
        coturn = by_kind(docs, "Deployment", "voxgate-turn")["spec"]["template"]["spec"]["containers"][0]
        assert {"--use-auth-secret", "--no-udp", "--no-tcp"} <= set(coturn["args"])
        assert "--turn-url=$(TURN_URL)" in tx["args"] and "--turn-secret-file=/etc/voxgate/turn/secret" in tx["args"]
        assert by_kind(docs, "ConfigMap", "voxgate")["data"]["TURN_URL"].startswith("turns:")
    assert tx["readinessProbe"]["httpGet"]["path"] == "/readyz" and tx["livenessProbe"]["httpGet"]["path"] == "/livez"
    config = by_kind(docs, "ConfigMap", "voxgate")["data"]
    drain = int(config["DRAIN_TIMEOUT"])
    pre_stop = tx["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert tx_pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 10  # the drain always gets its time

    policy = by_kind(docs, "NetworkPolicy", "voxgate-transceiver-media")
    media_rule = next(r for r in policy["spec"]["ingress"] if {"port": 40000, "protocol": "UDP"} in r["ports"])
    assert media_rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "voxgate",
                                                                    "app.kubernetes.io/component": "relay"}}}]
    hpa = by_kind(docs, "HorizontalPodAutoscaler", "voxgate-transceiver")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "voxgate_transceiver_sessions"
    assert by_kind(docs, "HorizontalPodAutoscaler", "voxgate-relay")["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"} == {"voxgate-relay",
                                                                                          "voxgate-transceiver"}
    dashboard = by_kind(docs, "ConfigMap", "voxgate-grafana-dashboard")
    assert "voxgate_relay_drops_total" in dashboard["data"]["voxgate.json"]
    if name == "dev":  # two routing keys live, as during a rotation; Redis bundled, reachable only by the fleet
        keys = by_kind(docs, "Secret", next(d["metadata"]["name"] for d in docs if d["kind"] == "Secret"
                                            and d["metadata"]["name"].startswith("voxgate-keys")))
        import base64

        lines = base64.b64decode(keys["data"]["secret"]).decode().split()
        assert len(lines) == 2 and len({line.split(":")[0] for line in lines}) == 2
        from voxgate.wire.token import Keyring

        Keyring.parse("\n".join(lines))  # what the pods will load
        by_kind(docs, "NetworkPolicy", "voxgate-redis")
    else:  # production brings its own Secrets and Redis
        assert not [d for d in docs if d["kind"] == "Secret"]
        assert not [d for d in docs if d["metadata"]["name"] == "voxgate-redis"]


def test_hostnetwork_relay_overlay_validates():
    docs = render(K8S / "overlays" / "production-hostnet")
    validate_strict(docs)
    assert by_kind(docs, "Deployment", "voxgate-relay")["spec"]["template"]["spec"]["hostNetwork"] is True
    assert by_kind(docs, "Service", "voxgate-relay")["spec"]["type"] == "ClusterIP"


def test_xdp_relay_overlay_validates():
    """The kernel path's option: host network, --xdp=auto, root with CAP_BPF and CAP_NET_ADMIN only."""
    docs = render(K8S / "overlays" / "production-xdp")
    validate_strict(docs)
    pod = by_kind(docs, "Deployment", "voxgate-relay")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    c = pod["containers"][0]
    assert "--xdp=auto" in c["args"]
    caps = c["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"] and {"BPF", "NET_ADMIN"} <= set(caps["add"])
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_phone_overlay_takes_sip_on_the_nodes_own_addresses():
    """The phone transceivers: host network (a trunk's RTP goes to the address in our SDP), one per node, SIP from
    the trunk's CIDR only, calls announced to the app's webhook with the secret from a Secret, in the fleet."""
    docs = render(K8S / "overlays" / "production-phone")
    validate_strict(docs)
    pod = by_kind(docs, "Deployment", "voxgate-phone")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    c = pod["containers"][0]
    args = c["args"]
    for want in ("--sip-listen=0.0.0.0:5060", "--sip-rtp-host=$(NODE_IP)", "--sip-allow=$(SIP_TRUNK_CIDR)",
                 "--sip-webhook-url=$(SIP_WEBHOOK_URL)", "--redis-url=$(REDIS_URL)", "--agent=voice"):
        assert want in args, want
    lo, hi = next(a for a in args if a.startswith("--sip-rtp-ports=")).split("=")[1].split("-")
    assert int(hi) - int(lo) >= 500  # RTP/RTCP pairs for hundreds of calls per node
    env = {e["name"]: e for e in c["env"]}
    assert env["VOXGATE_SIP_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "voxgate-sip",
                                                                              "key": "webhook-secret"}
    config = by_kind(docs, "ConfigMap", "voxgate")["data"]
    assert config["SIP_TRUNK_CIDR"] and config["SIP_WEBHOOK_URL"].startswith("https://")
    assert c["securityContext"]["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]
