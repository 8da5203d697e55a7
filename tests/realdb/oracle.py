#!/usr/bin/env python3
"""The independent half of tests/realdb.rs: every record of the real 纯真
databases read by other readers (the PyPI packages qqwry-py3 and ipip-ipdb),
and labelled by the mapping of docs/LOCATION.md written a second time, here,
from that document. Prints one line per record, `IP<TAB>country<TAB>
province<TAB>city<TAB>isp<TAB>text`, for the monitor's --lookup to match.

    python3 tests/realdb/oracle.py dat .cache/realdb/qqwry.dat
    python3 tests/realdb/oracle.py ipdb .cache/realdb/qqwry.ipdb
"""

import ipaddress
import json
import re
import struct
import sys

PROVINCES = {
    "黑龙江": "黑龙江省", "内蒙古": "内蒙古自治区", "北京": "北京市", "天津": "天津市", "上海": "上海市", "重庆": "重庆市",
    "河北": "河北省", "山西": "山西省", "辽宁": "辽宁省", "吉林": "吉林省", "江苏": "江苏省", "浙江": "浙江省", "安徽": "安徽省",
    "福建": "福建省", "江西": "江西省", "山东": "山东省", "河南": "河南省", "湖北": "湖北省", "湖南": "湖南省", "广东": "广东省",
    "海南": "海南省", "四川": "四川省", "贵州": "贵州省", "云南": "云南省", "陕西": "陕西省", "甘肃": "甘肃省", "青海": "青海省",
    "广西": "广西壮族自治区", "西藏": "西藏自治区", "宁夏": "宁夏回族自治区", "新疆": "新疆维吾尔自治区",
}
MUNICIPALITIES = {"北京", "天津", "上海", "重庆"}
PROVINCE_SUFFIXES = ["维吾尔自治区", "壮族自治区", "回族自治区", "自治区", "省", "市"]
CARRIERS = ["电信", "联通", "移动", "铁通", "广电", "教育网", "长城宽带", "鹏博士"]
NOT_A_CARRIER = ["CZ88", "纯真", "IANA", "未知", "保留", "局域网", "本机", "本地"]
NOT_A_PLACE = ["保留", "局域网", "本机", "本地", "IANA", "未知", "未分配", "纯真", "CZ88", "运营商级NAT", "用于多点传送",
               "环回地址", "共享地址", "广播地址"]
REGIONS = ["香港", "澳门", "台湾"]
SPELLINGS = {"多米尼加": "多米尼加共和国", "瓜德罗普": "瓜德罗普岛", "留尼汪岛": "留尼汪", "奥兰群岛": "奥兰", "格陵兰": "格陵兰岛",
             "印尼": "印度尼西亚", "蒙特塞拉特岛": "蒙塞拉特", "中非": "中非共和国", "密克罗尼西亚联邦": "密克罗尼西亚",
             "瓦利斯和富图纳群岛": "瓦利斯和富图纳", "澳洲": "澳大利亚", "新加披": "新加坡", "沙特": "沙特阿拉伯"}
SEVERAL = ["亚太地区", "北美地区", "拉美地区", "美洲地区", "欧美地区", "非洲地区", "加勒比地区", "欧洲地区", "欧洲", "欧盟"]


def countries():
    text = open("src/location/countries.rs", encoding="utf-8").read()
    return [zh for zh, _ in re.findall(r'\("([^"]+)", "([^"]+)"\)', text)]


COUNTRIES = REGIONS + countries()
COUNTRIES.sort(key=len, reverse=True)


def big_carrier(carrier):
    first = carrier.strip().split("/")[0]
    for big in CARRIERS:
        if first.startswith(big) and not first.startswith("电信通"):
            return big
    return None


def isp(carrier):
    carrier = carrier.strip()
    if big_carrier(carrier):
        return big_carrier(carrier)
    if not carrier or any(carrier.startswith(w) for w in NOT_A_CARRIER):
        return "Unknown"
    return carrier


PEOPLES = ["布依族", "苗族", "回族", "朝鲜族", "土家族", "白族", "哈尼族", "彝族", "壮族", "傣族", "景颇族", "傈僳族", "藏族", "羌族",
           "侗族", "蒙古族", "蒙古", "哈萨克", "柯尔克孜"]


def short(unit):
    if not unit.endswith("自治州"):
        return unit
    name = unit[: -len("自治州")]
    changed = True
    while changed:
        changed = False
        for people in PEOPLES:
            if name.endswith(people):
                name, changed = name[: -len(people)], True
                break
    return name + "州"


def prefecture(rest):
    """Up to the first 市, 州 (not followed by 市), 盟 or 地区."""
    rest = rest.strip()
    best = None
    for i in range(len(rest)):
        for mark in ("市", "州", "盟", "地区"):
            if rest.startswith(mark, i):
                end = i + len(mark)
                if mark == "州" and rest.startswith("市", end):
                    continue
                best = end if best is None else min(best, end)
        if best is not None:
            break
    return short(rest[:best] if best is not None else rest)


def labels(place, carrier):
    place = place.strip()
    carrier_label = isp(carrier)
    said_china = place.startswith("中国")
    if said_china:
        place = place[2:]
    for prefix in sorted(PROVINCES, key=len, reverse=True):
        if place.startswith(prefix):
            rest = place[len(prefix):]
            for suffix in PROVINCE_SUFFIXES:
                if rest.startswith(suffix):
                    rest = rest[len(suffix):]
                    break
            city = PROVINCES[prefix] if prefix in MUNICIPALITIES else (prefecture(rest) or "Unknown")
            return ("中国", PROVINCES[prefix], city, carrier_label)
    if said_china:
        city = prefecture(place)
        ends = any(city.endswith(m) for m in ("市", "州", "盟", "地区"))
        return ("中国", "Unknown", city if city and ends else "Unknown", carrier_label)
    several = False
    for region in SEVERAL:
        if place.startswith(region):
            place, several = place[len(region):], True
            break
    names = [(c, c) for c in COUNTRIES if place.startswith(c)] + [(s, n) for s, n in SPELLINGS.items() if place.startswith(s)]
    if names:
        return (max(names, key=lambda n: len(n[0]))[1], "Unknown", "Unknown", carrier_label)
    if not place and several:
        return ("Unknown", "Unknown", "Unknown", carrier_label)
    if not place or any(place.startswith(w) for w in NOT_A_PLACE):
        return ("Unknown", "Unknown", "Unknown", big_carrier(carrier) or "Unknown")
    if "大学" in place or "学院" in place or place.startswith("东北三省"):
        return ("中国", "Unknown", "Unknown", carrier_label)
    return (place, "Unknown", "Unknown", carrier_label)


def dat(path):
    import qqwry

    q = qqwry.QQwry()
    q.load_file(path, loadindex=True)
    for start in q.idx1:
        ip = str(ipaddress.IPv4Address(start))
        place, carrier = q.lookup(ip) or ("", "")
        yield ip, place, carrier


def ipdb_records(path):
    """One address of each distinct record, found by walking the tree."""
    data = open(path, "rb").read()
    meta_len = struct.unpack(">I", data[:4])[0]
    meta = json.loads(data[4 : 4 + meta_len])
    base, nodes = 4 + meta_len, meta["node_count"]
    seen = set()
    stack = [(0, 0, 0)]  # node, bits so far, depth
    while stack:
        node, bits, depth = stack.pop()
        for bit in (1, 0):
            at = base + node * 8 + bit * 4
            child = struct.unpack(">I", data[at : at + 4])[0]
            value, deeper = (bits << 1) | bit, depth + 1
            if child < nodes:
                stack.append((child, value, deeper))
            elif child > nodes and child not in seen:
                seen.add(child)
                yield ipaddress.IPv6Address(value << (128 - deeper))


def ipdb(path):
    import ipdb as ipip

    city = ipip.City(path)
    for address in ipdb_records(path):
        mapped = address.ipv4_mapped
        ip = str(mapped) if mapped else str(address)
        record = city.find_map(ip, "CN")
        country, region, name = record["country_name"], record["region_name"], record["city_name"]
        # The place as the monitor joins it (docs/LOCATION.md).
        place = ""
        if country != "中国" or not region:
            place += country
        if region != country:
            place += region
        if name != region:
            place += name
            if country == "中国" and name and not any(name.endswith(s) for s in ("市", "自治州", "盟", "地区", "区", "县", "旗")):
                place += "市"
        carrier = record["isp_domain"] or record["owner_domain"]
        yield ip, place, carrier


def main():
    kind, path = sys.argv[1], sys.argv[2]
    out = sys.stdout
    for ip, place, carrier in (dat(path) if kind == "dat" else ipdb(path)):
        text = f"{place}|{carrier}".replace("\t", " ").replace("\n", " ")
        out.write("\t".join((ip,) + labels(place, carrier) + (text,)) + "\n")


main()
