"""Print pip constraints pinning every direct dependency and the test extra to its floor (torch excluded).

    python .ci/floors.py pyproject.toml > floors.txt; pip install -c floors.txt -e ".[test]"
"""
import re, sys, tomllib
proj = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = proj["dependencies"] + proj["optional-dependencies"]["test"]
for r in reqs:
    m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)$", r)
    name, spec = m.group(1), m.group(3)
    floor = re.search(r">=\s*([^,\s]+)", spec)
    if name == "torch" or not floor:
        continue
    print(f"{name}=={floor.group(1)}")
