"""Copy the dashboard's chart library from npm into the gateway package (`make vendor`).

The dashboard loads nothing from a CDN: ECharts (pinned in package.json, installed by
`npm install`) is copied with its licences and the licences of what its bundle contains (zrender,
tslib) into gateway/openautoglm/gateway/dashboard/static/vendor/, which is checked in and shipped
as package data. tests/test_dashboard.py fails when the copy drifts from node_modules.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR_DIR = ROOT / "gateway" / "openautoglm" / "gateway" / "dashboard" / "static" / "vendor"
# (file in node_modules, name in the vendor folder)
FILES = (
    ("echarts/dist/echarts.min.js", "echarts.min.js"),
    ("echarts/LICENSE", "LICENSE.echarts"),
    ("echarts/NOTICE", "NOTICE.echarts"),
    ("zrender/LICENSE", "LICENSE.zrender"),
    ("tslib/LICENSE.txt", "LICENSE.tslib"),
)


def main() -> int:
    modules = ROOT / "node_modules"
    missing = [source for source, _ in FILES if not (modules / source).is_file()]
    if missing:
        print(f"not installed: {', '.join(missing)} (run `npm install` first)", file=sys.stderr)
        return 1
    VENDOR_DIR.mkdir(parents=True, exist_ok=True)
    for source, name in FILES:
        shutil.copyfile(modules / source, VENDOR_DIR / name)
        print(f"{source} -> {(VENDOR_DIR / name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
