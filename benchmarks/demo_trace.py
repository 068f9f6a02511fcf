"""Run `openautoglm demo` on a fresh embedded stack with tracing on, and report its wall time and
the spans of the study's trace per service (received over OTLP/gRPC, as Jaeger would).

    python benchmarks/demo_trace.py [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from openautoglm.common.trace_sink import OtlpReceiver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    receiver = OtlpReceiver().start()
    env = {**os.environ, "OPENAUTOGLM_DATA_DIR": tempfile.mkdtemp(prefix="autoglm-bench-"), "OPENAUTOGLM_GATEWAY": "",
           "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "openautoglm.cli", "demo", "--json"], env=env,
                            capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"demo failed:\n{result.stderr[-3000:]}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    time.sleep(1.0)  # services flush their span batches on exit; let the last export land
    per_service = receiver.spans_per_service(summary["trace_id"])
    receiver.stop()
    report = {
        "demo_wall_s": round(wall, 1),
        "trials": len(summary["trials"]),
        "best_objective": summary["best"]["objective"],
        "trace_id": summary["trace_id"],
        "spans_per_service": per_service,
        "spans_total": sum(per_service.values()),
    }
    print(f"demo wall time: {report['demo_wall_s']} s for {report['trials']} trials (best objective {report['best_objective']:.4f})")
    print(f"trace {report['trace_id']}: {report['spans_total']} spans")
    for service, count in per_service.items():
        print(f"  {service:<17} {count}")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
