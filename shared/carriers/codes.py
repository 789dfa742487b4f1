"""One carrier-code table: each carrier's WeChat `delivery_id`, Kuaidi100 company code (`com` /
`kuaidicom`), Kdniao `ShipperCode` and display name. The three systems spell the same carrier
differently (WeChat YUNDA, Kuaidi100 yunda, Kdniao YD), so every translation goes through here and an
unknown code fails loudly instead of shipping under the wrong carrier."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CodeSystem(StrEnum):
    WECHAT = "wechat"  # delivery_id in WeChat Shop's delivery/send and company list
    KUAIDI100 = "kuaidi100"  # company / com / kuaidicom (always lowercase)
    KDNIAO = "kdniao"  # ShipperCode


@dataclass(frozen=True)
class Carrier:
    delivery_id: str  # WeChat delivery_id
    kuaidi100: str  # Kuaidi100 company code
    kdniao: str  # Kdniao ShipperCode
    name: str  # display name
    wechat_aliases: tuple[str, ...] = ()  # older WeChat spellings still seen in data (YD for YUNDA)


CARRIERS: tuple[Carrier, ...] = (
    Carrier("ZTO", "zhongtong", "ZTO", "中通快递"),
    Carrier("YTO", "yuantong", "YTO", "圆通速递"),
    Carrier("YUNDA", "yunda", "YD", "韵达快递", wechat_aliases=("YD",)),
    Carrier("JTSD", "jtexpress", "JTSD", "极兔速递"),
    Carrier("STO", "shentong", "STO", "申通快递"),
    Carrier("SF", "shunfeng", "SF", "顺丰速运"),
    Carrier("JD", "jd", "JD", "京东物流"),
    Carrier("EMS", "ems", "EMS", "邮政EMS"),
    Carrier("DBKD", "debangkuaidi", "DBL", "德邦快递"),
)


class UnknownCarrierError(LookupError):
    """A code that is not in the table, with the system it was looked up in."""

    def __init__(self, system: CodeSystem, code: str) -> None:
        known = ", ".join(sorted(_INDEX[system]))
        super().__init__(f"unknown {system.value} carrier code {code!r} (known: {known})")
        self.system = system
        self.code = code


def _build_index() -> dict[CodeSystem, dict[str, Carrier]]:
    index: dict[CodeSystem, dict[str, Carrier]] = {system: {} for system in CodeSystem}
    for carrier in CARRIERS:
        keys = {
            CodeSystem.WECHAT: (carrier.delivery_id, *carrier.wechat_aliases),
            CodeSystem.KUAIDI100: (carrier.kuaidi100,),
            CodeSystem.KDNIAO: (carrier.kdniao,),
        }
        for system, codes in keys.items():
            for code in codes:
                if code in index[system]:
                    raise ValueError(f"duplicate {system.value} code {code}")
                index[system][code] = carrier
    return index


_INDEX = _build_index()


def lookup(system: CodeSystem, code: str) -> Carrier:
    """The carrier `code` names in `system`. WeChat and Kdniao codes are uppercase and Kuaidi100's
    lowercase; case and surrounding spaces are forgiven, anything else raises UnknownCarrierError."""
    key = code.strip().lower() if system is CodeSystem.KUAIDI100 else code.strip().upper()
    carrier = _INDEX[system].get(key)
    if carrier is None:
        raise UnknownCarrierError(system, code)
    return carrier


def by_delivery_id(delivery_id: str) -> Carrier:
    return lookup(CodeSystem.WECHAT, delivery_id)


def by_kuaidi100(company: str) -> Carrier:
    return lookup(CodeSystem.KUAIDI100, company)


def by_kdniao(shipper_code: str) -> Carrier:
    return lookup(CodeSystem.KDNIAO, shipper_code)


def kuaidi100_company(delivery_id: str) -> str:
    """WeChat delivery_id -> Kuaidi100 company code (for /poll subscribe and /label/order)."""
    return by_delivery_id(delivery_id).kuaidi100


def kdniao_shipper_code(delivery_id: str) -> str:
    """WeChat delivery_id -> Kdniao ShipperCode."""
    return by_delivery_id(delivery_id).kdniao


def delivery_id_for_kuaidi100(company: str) -> str:
    """Kuaidi100 `com` of a push -> the WeChat delivery_id to report the parcel under."""
    return by_kuaidi100(company).delivery_id


def delivery_id_for_kdniao(shipper_code: str) -> str:
    """Kdniao `ShipperCode` of a push -> the WeChat delivery_id."""
    return by_kdniao(shipper_code).delivery_id
