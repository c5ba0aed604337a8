"""Run the self-test of every ClinicalSeg module inside Slicer; exit status 0 when all pass.

From a source checkout (see Testing/README.md):

    Slicer --testing --no-main-window \
      --additional-module-paths AirwaySeg NoduleSeg OARSeg StrokeSeg \
      --python-script Testing/run_selftests.py
"""

import sys
import traceback

import slicer

MODULES = ["AirwaySeg", "NoduleSeg", "OARSeg", "StrokeSeg"]


def run_all() -> list[str]:
    """Run each module's ``<Name>Test``; return one line per failure."""
    failures = []
    for name in MODULES:
        selfTest = slicer.selfTests.get(name)
        if selfTest is None:
            failures.append(f"{name}: module not loaded (is its folder on the module paths?)")
            continue
        try:
            selfTest()
            print(f"{name}: passed")
        except Exception as error:
            traceback.print_exc()
            failures.append(f"{name}: {error}")
    return failures


if __name__ == "__main__":
    failures = run_all()
    for line in failures:
        print("FAILED", line, file=sys.stderr)
    slicer.util.exit(1 if failures else 0)
