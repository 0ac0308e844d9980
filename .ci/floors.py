"""Print pip constraints pinning every direct dependency and the test extra to its floor.

torch's floor is the CPU wheel .ci/run installs first (2.13.0+cpu satisfies ==2.13.0),
so pinning it proves that floor too (tests/test_packaging.py keeps the two in step).

    python .ci/floors.py pyproject.toml > floors.txt; pip install -c floors.txt -e ".[test]"
"""
import re, sys, tomllib
proj = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = proj["dependencies"] + proj["optional-dependencies"]["test"]
for r in reqs:
    m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$", r)
    name, spec = m.group(1), m.group(3)
    floor = re.search(r">=\s*([^,\s]+)", spec)
    if not floor:
        continue
    print(f"{name}=={floor.group(1)}")
