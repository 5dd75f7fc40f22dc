"""Regions: the region map (sans-IO), cross-region placement through real processes, and the lab."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import RelayProcess, TransceiverProcess, fleet, free_port, run_call, speech_wav, wait_for
from voxgate.steering.regions import RegionMap, RegionMapError

MAP = {
    "default_region": "eu",
    "regions": {"eu": {"relays": ["198.51.100.10:3478", "198.51.100.11:3478"], "nearest": ["us"]},
                "us": {"relays": ["203.0.113.10:3478"], "nearest": ["eu"]},
                "ap": {"relays": ["[2001:db8::1]:3478"]}},
    "cidrs": {"192.0.2.0/24": "us", "192.0.2.128/25": "ap", "2001:db8:5::/48": "eu"},
    "geoip": {"countries": {"JP": "ap"}, "continents": {"NA": "us", "EU": "eu"}},
    "header": {"name": "X-Region", "trusted_proxies": ["10.0.0.0/8"]},
}


def test_locate_by_trusted_header_cidr_and_default():
    m = RegionMap.parse(MAP)
    # the header counts only from a trusted proxy; a country code maps through geoip.countries
    assert m.locate("10.1.2.3", {"X-Region": "us"}).region == "us"
    assert m.locate("10.1.2.3", {"X-Region": "JP"}).region == "ap"
    assert m.locate("192.0.2.7", {"X-Region": "eu"}).region == "us"  # untrusted peer: the header is ignored
    # longest prefix wins; X-Forwarded-For from a trusted proxy gives the client address
    assert m.locate("192.0.2.200", {}).how == "cidr" and m.locate("192.0.2.200", {}).region == "ap"
    loc = m.locate("10.0.0.5", {"X-Forwarded-For": "192.0.2.9, 10.9.9.9"})
    assert (loc.region, loc.how, loc.client_ip) == ("us", "cidr", "192.0.2.9")
    assert m.locate("2001:db8:5::7", {}).region == "eu"
    assert m.locate("198.18.0.1", {}) .how == "default" and m.locate(None, {}).region == "eu"


def test_order_and_answer_candidates():
    m = RegionMap.parse(MAP)
    assert m.order("eu") == ["eu", "us", "ap"] and m.order("ap") == ["ap", "eu", "us"]
    # the client's region first, then one relay of another region as a backup
    assert m.candidates("eu", "eu") == [("198.51.100.10", 3478, False), ("198.51.100.11", 3478, False),
                                        ("203.0.113.10", 3478, True)]
    assert m.candidates("us", "eu") == [("203.0.113.10", 3478, False), ("198.51.100.10", 3478, True)]
    assert m.candidates("ap", "ap") == [("2001:db8::1", 3478, False), ("198.51.100.10", 3478, True)]
    # ICE-TCP addresses, where the map gives them, after every UDP candidate: the client's region's, then the backup's
    tcp = RegionMap.parse({**MAP, "regions": {**MAP["regions"],
                                              "eu": {**MAP["regions"]["eu"], "tcp_relays": ["198.51.100.10:443"]},
                                              "us": {**MAP["regions"]["us"], "tcp_relays": ["203.0.113.10:443"]}}})
    assert tcp.candidates("eu", "eu") == [("198.51.100.10", 3478, False), ("198.51.100.11", 3478, False),
                                          ("203.0.113.10", 3478, True), ("198.51.100.10", 443, False, "tcp"),
                                          ("203.0.113.10", 443, True, "tcp")]


def test_bad_maps_name_what_is_wrong():
    for bad, words in [({}, "regions"), ({"regions": {"x": {}}}, "relays"),
                       ({"regions": {"x": {"relays": ["nope"]}}}, "HOST:PORT"),
                       ({**MAP, "cidrs": {"192.0.2.0/24": "mars"}}, "mars"),
                       ({**MAP, "cidrs": {"not-a-net": "eu"}}, "not-a-net"),
                       ({**MAP, "default_region": "mars"}, "default_region"),
                       ({**MAP, "regions": {"eu": {"relays": ["1.2.3.4:1"], "nearest": ["mars"]}}}, "mars")]:
        with pytest.raises(RegionMapError, match=words):
            RegionMap.parse(bad)


def test_geoip_database(tmp_path):
    """A small GeoIP2-shaped database built with mmdb-writer (none ships with voxgate)."""
    mmdb_writer = pytest.importorskip("mmdb_writer")
    from netaddr import IPSet

    w = mmdb_writer.MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    w.insert_network(IPSet(["198.18.0.0/16"]), {"country": {"iso_code": "JP"}, "continent": {"code": "AS"}})
    w.insert_network(IPSet(["198.19.0.0/16"]), {"country": {"iso_code": "CA"}, "continent": {"code": "NA"}})
    db = tmp_path / "geo.mmdb"
    w.to_db_file(str(db))
    m = RegionMap.parse({**MAP, "geoip": {**MAP["geoip"], "database": str(db)}})
    assert (m.locate("198.18.3.4", {}).region, m.locate("198.18.3.4", {}).how) == ("ap", "geoip")  # by country
    assert m.locate("198.19.3.4", {}).region == "us"  # by continent
    assert m.locate("100.64.0.1", {}).how == "default"  # not in the database
    with pytest.raises(RegionMapError, match="geoip database"):
        RegionMap.parse({**MAP, "geoip": {"database": str(tmp_path / "missing.mmdb")}})


def test_calls_are_placed_in_the_clients_region_or_the_nearest_with_room(secret_file, redis_server, tmp_path):
    """Two regions on loopback (each a relay and a transceiver); region b's transceiver is full. A client of region a
    lands in a with a's relay first in its answer; a client of region b lands in the nearest region with room (a),
    with b's relay first and a's as the backup; anchoring: both calls carry audio on their transceiver."""
    ports = {r: free_port() for r in "ab"}
    region_map = {"default_region": "a",
                  "regions": {"a": {"relays": [f"127.0.0.1:{ports['a']}"], "nearest": ["b"]},
                              "b": {"relays": [f"127.0.0.1:{ports['b']}"], "nearest": ["a"]}},
                  "header": {"name": "X-Voxgate-Region", "trusted_proxies": ["127.0.0.0/8"]}}
    path = tmp_path / "regions.json"
    path.write_text(json.dumps(region_map))
    relays = [RelayProcess(ports[r], secret_file, redis_url=redis_server.url) for r in "ab"]
    txs = {r: TransceiverProcess(secret_file, redis_url=redis_server.url, id=f"t{r}", region=r,
                                 extra=("--region-map", str(path), *(("--capacity", "0") if r == "b" else ())))
           for r in "ab"}
    wav = speech_wav(tmp_path / "s.wav", "Hello from far away.")
    try:
        assert wait_for(lambda: len(fleet(redis_server.url)) == 2, timeout=10)
        # --primary-only: aiortc nominates the first pair that answers, and on loopback the backup answers as fast
        near = run_call(txs["b"].url, wav, tmp_path / "o1.wav", "--header", "X-Voxgate-Region:a", "--primary-only")
        far = run_call(txs["a"].url, wav, tmp_path / "o2.wav", "--header", "X-Voxgate-Region:b", "--primary-only")
        for r in (near, far):
            assert r["holder"] == "ta" and r["packets_received"] > 0.8 * r["packets_sent"], r
        assert near["region"] == "a" and far["region"] == "b"
        # which relay carried each call: the relay of the client's region (the answer's first candidate)
        assert near["server"]["route"].endswith(str(relays[0].ready["workers"][0]["internal"][1]))
        assert far["server"]["route"].endswith(str(relays[1].ready["workers"][0]["internal"][1]))
    finally:
        for t in txs.values():
            t.stop()
        for r in relays:
            r.stop()


def test_answer_lists_the_clients_relay_first_and_a_backup(secret_file, redis_server):
    """The map kept in Redis (`--region-map redis`), as a fleet shares it."""
    import redis

    redis.Redis.from_url(redis_server.url).set("voxgate:regions", json.dumps(
        {"regions": {"a": {"relays": ["198.51.100.1:3478"]}, "b": {"relays": ["203.0.113.1:3478"]}},
         "header": {"name": "X-Voxgate-Region", "trusted_proxies": ["127.0.0.1/32"]}}))
    tx = TransceiverProcess(secret_file, region="a", redis_url=redis_server.url, extra=("--region-map", "redis"))
    try:
        status, headers, body = tx.post("/v1/realtime/calls", _aiortc_offer().encode(),
                                        {"Content-Type": "application/sdp", "X-Voxgate-Region": "b"})
        assert status == 201, body
        assert tx.post(headers["Location"] + "/hangup")[0] == 200
        cands = [line.split() for line in body.decode().splitlines() if line.startswith("a=candidate:")]
        # every m-section lists the same candidates (BUNDLE): the first two are the audio section's
        assert [(c[4], int(c[3]) >> 24) for c in cands[:2]] == [("203.0.113.1", 126), ("198.51.100.1", 100)], cands
        assert headers["X-Voxgate-Region"] == "b"
    finally:
        tx.stop()


def _aiortc_offer() -> str:
    from helpers import aiortc_offer

    return aiortc_offer()


def test_lab_geo_steering_and_failover():
    """`voxgate lab geo` as users run it: steered beats forced-far by about the configured difference, and a client
    whose relay is killed keeps its call on its transceiver through the other region's relay."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("voxgate lab geo needs root and iproute2")
    out = subprocess.run([sys.executable, "-m", "voxgate", "lab", "geo", "--json", "--rounds", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    c = r["config"]
    configured_rtt_gap = 2 * (c["far_ms"] - c["near_ms"])
    rtt_gap = r["forced_far"]["rtt_ms"] - r["steered"]["rtt_ms"]
    assert 0.8 * configured_rtt_gap < rtt_gap < 1.3 * configured_rtt_gap, r
    assert r["forced_far"]["setup_ms"] - r["steered"]["setup_ms"] > configured_rtt_gap, r  # ICE + DTLS pay it 3×
    assert r["steered"]["region"] == "a" and r["forced_far"]["region"] == "b"
    f = r["failover"]
    assert f["survived"] is True and f["transceiver"] == "ta", f
    assert f["route_before"].split(" via ")[1].startswith("198.51.100.1")  # region a's relay
    assert f["route_after"].split(" via ")[1].startswith("203.0.113.1")  # now region b's, same transceiver
    assert 0 < f["gap_ms"] < 10000, f
    leftovers = [line.split()[0] for line in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                           text=True).stdout.splitlines()]
    assert not [n for n in leftovers if n.startswith("vxlab") and n.endswith(("-core", "-reg-a", "-reg-b"))], \
        leftovers  # the lab removed its namespaces (another lab running beside it has its own)


def test_lab_says_in_one_line_what_it_misses():
    out = subprocess.run([sys.executable, "-m", "voxgate", "lab", "geo"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PATH": "/nonexistent"})  # no `ip` to be found
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().count("\n") == 0 and "voxgate lab geo: the lab needs" in out.stderr, out.stderr
