"""The region map and where a client belongs: sans-IO (the GeoIP database is read through ``geoip2`` if given).

A region map is JSON (or YAML) in a file, or the same JSON in Redis under ``voxgate:regions``::

    {
      "default_region": "eu",
      "regions": {
        "eu": {"relays": ["198.51.100.10:3478"], "tcp_relays": ["198.51.100.10:443"], "nearest": ["us"]},
        "us": {"relays": ["203.0.113.10:3478"], "nearest": ["eu"]}
      },
      "cidrs": {"192.0.2.0/25": "eu", "192.0.2.128/25": "us"},
      "geoip": {"database": "/data/GeoLite2-Country.mmdb",
                "countries": {"US": "us", "CA": "us"}, "continents": {"EU": "eu", "NA": "us"}},
      "header": {"name": "X-Voxgate-Region", "trusted_proxies": ["10.0.0.0/8"]}
    }

How a client is placed, first answer wins (``RegionMap.locate``):

1. ``header``: a region name, or a country code (looked up in ``geoip.countries``), in the named header, believed
   only when the request's peer is one of ``trusted_proxies`` (a CDN or load balancer that sets it). From such a
   peer, ``X-Forwarded-For``'s last address that is not itself a trusted proxy is the client address used below.
2. ``cidrs``: the longest prefix that holds the client address.
3. ``geoip``: a MaxMind GeoIP2/GeoLite2 database (none ships with voxgate): the country, then the continent.
4. ``default_region``.

``nearest`` orders the other regions for a client whose region is full or has no transceiver; regions it does not
list come after, by name. ``tcp_relays`` (optional): the relays' ICE-TCP addresses (``voxgate relay
--tcp-listen``), offered after every UDP candidate for clients whose network drops UDP.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

REDIS_KEY = "voxgate:regions"


class RegionMapError(ValueError):
    pass


@dataclass(frozen=True)
class Located:
    region: str
    how: str  # header | cidr | geoip | default
    client_ip: str | None


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit():
        raise RegionMapError(f"relay address {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


@dataclass
class RegionMap:
    default_region: str
    relays: dict[str, list[tuple[str, int]]]
    nearest: dict[str, list[str]] = field(default_factory=dict)
    tcp_relays: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    cidrs: list[tuple[ipaddress._BaseNetwork, str]] = field(default_factory=list)
    countries: dict[str, str] = field(default_factory=dict)
    continents: dict[str, str] = field(default_factory=dict)
    header: str | None = None
    trusted: list = field(default_factory=list)
    geoip_reader: object = None  # geoip2.database.Reader, or None

    # ------------------------------------------------------------- loading
    @classmethod
    def parse(cls, data: dict) -> "RegionMap":
        """From the JSON object; ``RegionMapError`` naming what is wrong."""
        if not isinstance(data, dict) or not isinstance(data.get("regions"), dict) or not data["regions"]:
            raise RegionMapError("a region map needs a non-empty 'regions' object")
        regions = data["regions"]
        relays, nearest, tcp_relays = {}, {}, {}
        for name, spec in regions.items():
            if not isinstance(spec, dict) or not spec.get("relays"):
                raise RegionMapError(f"region {name!r} needs 'relays': [HOST:PORT, ...]")
            relays[name] = [_hostport(r) for r in spec["relays"]]
            tcp_relays[name] = [_hostport(r) for r in spec.get("tcp_relays") or []]
            nearest[name] = [n for n in spec.get("nearest", []) if n != name]
            unknown = [n for n in nearest[name] if n not in regions]
            if unknown:
                raise RegionMapError(f"region {name!r}: 'nearest' names unknown regions {unknown}")
        default = data.get("default_region") or next(iter(regions))
        if default not in regions:
            raise RegionMapError(f"default_region {default!r} is not a region")
        cidrs = []
        for cidr, region in (data.get("cidrs") or {}).items():
            if region not in regions:
                raise RegionMapError(f"cidr {cidr}: unknown region {region!r}")
            try:
                cidrs.append((ipaddress.ip_network(cidr, strict=False), region))
            except ValueError as exc:
                raise RegionMapError(f"cidr {cidr!r}: {exc}") from None
        cidrs.sort(key=lambda c: c[0].prefixlen, reverse=True)  # longest prefix first
        geo = data.get("geoip") or {}
        for table in ("countries", "continents"):
            bad = {k: v for k, v in (geo.get(table) or {}).items() if v not in regions}
            if bad:
                raise RegionMapError(f"geoip.{table}: unknown regions {bad}")
        reader = None
        if geo.get("database"):
            try:
                import geoip2.database

                reader = geoip2.database.Reader(geo["database"])
            except (ImportError, OSError, ValueError) as exc:
                raise RegionMapError(f"geoip database {geo['database']!r}: {exc}") from None
        hdr = data.get("header") or {}
        try:
            trusted = [ipaddress.ip_network(n, strict=False) for n in hdr.get("trusted_proxies", [])]
        except ValueError as exc:
            raise RegionMapError(f"header.trusted_proxies: {exc}") from None
        return cls(default_region=default, relays=relays, nearest=nearest, tcp_relays=tcp_relays, cidrs=cidrs,
                   countries={k.upper(): v for k, v in (geo.get("countries") or {}).items()},
                   continents={k.upper(): v for k, v in (geo.get("continents") or {}).items()},
                   header=hdr.get("name"), trusted=trusted, geoip_reader=reader)

    @classmethod
    def load(cls, path: str) -> "RegionMap":
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise RegionMapError(f"{path}: {exc}") from None
        return cls.parse(data)

    # ------------------------------------------------------------- questions
    def _trusted(self, ip: str | None) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except (TypeError, ValueError):
            return False
        return any(addr in net for net in self.trusted)

    def locate(self, peer: str | None, headers) -> Located:
        """The client's region from the request's peer address and headers (a mapping, case-insensitive)."""
        client = peer
        if self._trusted(peer):
            forwarded = [a.strip() for a in (headers.get("X-Forwarded-For") or "").split(",") if a.strip()]
            for addr in reversed(forwarded):
                client = addr
                if not self._trusted(addr):
                    break
            if self.header:
                value = (headers.get(self.header) or "").strip()
                region = value if value in self.relays else self.countries.get(value.upper())
                if region:
                    return Located(region, "header", client)
        try:
            addr = ipaddress.ip_address(client) if client else None
        except ValueError:
            addr = None
        if addr is not None:
            for net, region in self.cidrs:
                if addr.version == net.version and addr in net:
                    return Located(region, "cidr", client)
            region = self._geoip(str(addr))
            if region:
                return Located(region, "geoip", client)
        return Located(self.default_region, "default", client)

    def _geoip(self, ip: str) -> str | None:
        if self.geoip_reader is None:
            return None
        try:
            rec = self.geoip_reader.country(ip)
        except Exception:  # geoip2's AddressNotFoundError, or a database without that record type
            return None
        country = (rec.country.iso_code or "").upper()
        continent = (rec.continent.code or "").upper()
        return self.countries.get(country) or self.continents.get(continent)

    def order(self, region: str) -> list[str]:
        """``region``, then the regions to try when it is full or empty, nearest first."""
        listed = self.nearest.get(region, [])
        rest = sorted(r for r in self.relays if r != region and r not in listed)
        return [region, *listed, *rest]

    def candidates(self, client_region: str, holder_region: str) -> list[tuple[str, int, bool]]:
        """The answer's candidates as (host, port, backup[, "tcp"]): the relays of the client's region first, then one
        relay of a second region at a lower priority (the holder's region if it differs, else the client's nearest),
        so a client whose relay dies moves to it without a new offer; then the same regions' ICE-TCP addresses, if
        the map gives them, below every UDP candidate."""
        first = [(h, p, False) for h, p in self.relays[client_region]]
        tcp = [(h, p, False, "tcp") for h, p in self.tcp_relays.get(client_region, [])]
        second = holder_region if holder_region != client_region else next(iter(self.order(client_region)[1:]), None)
        if second is None:
            return first + tcp
        backup_tcp = [(*self.tcp_relays[second][0], True, "tcp")] if self.tcp_relays.get(second) else []
        return first + [(*self.relays[second][0], True)] + tcp + backup_tcp
