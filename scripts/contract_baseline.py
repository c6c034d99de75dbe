"""Snapshot the contract (protos/) as the baseline that `buf breaking` checks against.

Usage: python scripts/contract_baseline.py [--allow-breaking]    (or: make contract-baseline)

Run it when a version is released, with `version` in pyproject.toml set to that
release, and commit what it writes with the release. It writes
contract-baseline/imagegen-<version>.json, a buf image (JSON, imports included,
no source info) of the module in buf.yaml, and removes the previous one. From then
on tests/integration/test_contract_tooling.py fails on any change to protos/ that
breaks what was released (buf's FILE rules), with no need for git history, so the
check works in a shallow clone too.

Between releases, leave the baseline alone: changes that add to the contract pass
against it; a change that breaks it fails, and refreshing the baseline is not the
way out. So this refuses to write a baseline that the previous one says is a
breaking change, or one for an older version; --allow-breaking accepts a deliberate
break (agreed with every client, e.g. removing a deprecated field).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
BASELINE_DIR = ROOT / "contract-baseline"
BUF = Path(sys.executable).parent / "buf"


def project_version() -> Version:
    return Version(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def baselines() -> list[Path]:
    return sorted(BASELINE_DIR.glob("imagegen-*.json"))


def baseline_version(path: Path) -> Version:
    return Version(path.stem.removeprefix("imagegen-"))


def buf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BUF), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--allow-breaking", action="store_true", help="accept a baseline that breaks the previous one"
    )
    args = parser.parse_args()

    version = project_version()
    previous = baselines()
    for path in previous:
        if baseline_version(path) > version:
            raise SystemExit(f"{path.relative_to(ROOT)} is newer than the project's version {version}")
        check = buf("breaking", "--against", str(path))
        if check.returncode != 0 and not args.allow_breaking:
            raise SystemExit(
                f"protos/ breaks the released contract {path.relative_to(ROOT)}:\n{check.stdout}{check.stderr}"
                "fix the change, or pass --allow-breaking for a deliberate break"
            )

    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "image.json"
        built = buf("build", "--exclude-source-info", "-o", str(image))
        if built.returncode != 0:
            raise SystemExit(f"buf build failed:\n{built.stdout}{built.stderr}")
        # Indented, so a refresh shows in review as the list of what the release added.
        text = json.dumps(json.loads(image.read_text()), indent=1) + "\n"

    target = BASELINE_DIR / f"imagegen-{version}.json"
    BASELINE_DIR.mkdir(exist_ok=True)
    for path in previous:
        if path != target:
            path.unlink()
    target.write_text(text)
    replaced = [path.name for path in previous if path != target]
    print(f"wrote {target.relative_to(ROOT)}" + (f" (replacing {', '.join(replaced)})" if replaced else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
