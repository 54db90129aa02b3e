#!/usr/bin/python
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: lambda_package
short_description: Build a Lambda function's deployment zip, byte for byte the same from the same inputs
version_added: 0.1.0
description:
  - Writes the zip of one Python Lambda function to O(dest) - the files of O(source) at the root (its
    C(handler.py) included), each folder of O(packages) as a folder of the root, and the dependencies of
    O(requirements) installed for the Lambda runtime (manylinux wheels of O(python_version) and
    O(architecture), whatever machine builds it).
  - The zip is reproducible - entries sorted by name, every timestamp 1980-01-01 00:00:00, mode 0644 (0755
    for a file that is executable on disk), deflate at level 6, no directory entries. Left out are
    C(__pycache__) folders and C(.pyc) files everywhere; hidden files and folders (a name starting with
    a dot - editor swap files, C(.pytest_cache), a C(.env)) of O(source) and O(packages); and, of the
    installed dependencies, the console scripts (C(bin/), whose first line names the building
    interpreter), C(*.dist-info/RECORD) (it lists those scripts' hashes) and C(*.dist-info/direct_url.json)
    (local paths). Nothing at run time reads them.
  - The same inputs give the same bytes and so the same RV(sha256) and RV(code_sha256) on any machine with
    the same zlib. When O(dest) already holds those bytes it is left alone, modification time included;
    otherwise the new zip is written beside it and renamed over it, so O(dest) is never half written.
  - Wheels are downloaded into O(wheel_cache) and installed from there with the network off (C(pip install
    --no-index)); a build whose wheels are all in the cache does not use the network. Downloads use the pip
    configuration of the machine (index, proxy, certificates).
  - Two inputs that would put a file at the same path of the zip are refused, naming both.
author:
  - Tenantforge engineering (@tenantforge)
options:
  dest:
    description:
      - The zip file to write. Its folder is created when missing.
      - Written with mode 0644 - a function's code holds no secret (they are read from Secrets Manager at
        run time).
    type: path
    required: true
  source:
    description: The function's folder, holding its C(handler.py); its files go to the root of the zip.
    type: path
    required: true
  packages:
    description:
      - Folders copied into the zip under their own name (C(lambdas/tenantforge_lambda) becomes
        C(tenantforge_lambda/)), for the code functions share.
    type: list
    elements: path
    default: []
  requirements:
    description:
      - A pip requirements file whose distributions are installed at the root of the zip. Pin every one,
        transitive ones too, for a build that does not change with new releases.
      - Binary wheels only (no source builds) - a distribution without a manylinux wheel for the runtime
        fails the task, naming it.
    type: path
  python_version:
    description:
      - The Python of the Lambda runtime, C(3.N) (quote it in YAML - unquoted, 3.10 is the number 3.1).
      - Sets the wheels' Python and ABI tags (C(cp312)) and the newest glibc allowed - 2.34 (Amazon Linux
        2023) from 3.12, 2.26 (Amazon Linux 2) before.
    type: str
    default: "3.12"
  architecture:
    description: The Lambda function's architecture; C(arm64) installs C(aarch64) wheels.
    type: str
    choices: [x86_64, arm64]
    default: x86_64
  wheel_cache:
    description:
      - A folder of downloaded wheels, kept between builds and shared by functions and architectures.
        Created when missing.
      - Without it every build downloads its wheels into a temporary folder.
      - Check mode reads it but never adds to it; missing wheels are downloaded to a temporary folder.
    type: path
notes:
  - Runs pip as C(python -m pip) with the Python that runs the module, which needs pip.
  - An unpinned requirement resolves to what O(wheel_cache) holds once the cache has a match; pin them.
attributes:
  check_mode:
    description: Builds the zip in a temporary folder and reports whether O(dest) would change; writes nothing.
    support: full
  diff_mode:
    description: The zip's sha256 and mode before and after, and the entries removed, added or changed.
    support: full
"""

EXAMPLES = r"""
- name: Build the authorizer's zip
  tenantforge.platform.lambda_package:
    source: "{{ playbook_dir }}/../lambdas/authorizer"
    packages:
      - "{{ playbook_dir }}/../lambdas/tenantforge_lambda"
    requirements: "{{ playbook_dir }}/../lambdas/requirements.txt"
    wheel_cache: "{{ playbook_dir }}/../.local/wheels"
    dest: "{{ playbook_dir }}/../.local/lambdas/authorizer.zip"
  register: authorizer_zip

- name: Build the token function for Graviton
  tenantforge.platform.lambda_package:
    source: lambdas/token
    packages: [lambdas/tenantforge_lambda]
    requirements: lambdas/requirements.txt
    architecture: arm64
    python_version: "3.12"
    wheel_cache: .local/wheels
    dest: .local/lambdas/token-arm64.zip
"""

RETURN = r"""
path:
  description: The zip's path (O(dest)).
  returned: always
  type: str
  sample: /srv/tenantforge/.local/lambdas/authorizer.zip
sha256:
  description: SHA-256 of the zip, hexadecimal (in check mode, of the zip a run would write).
  returned: always
  type: str
  sample: 0f3c6a1c2e5b4d7a9e8f1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6
code_sha256:
  description: The same digest in base64, the form AWS Lambda reports as C(CodeSha256).
  returned: always
  type: str
  sample: DzxqHC5bTXqejxssPU5fYHGCk6S1xtfo+aCxwtPk9aY=
size:
  description: Size of the zip in bytes.
  returned: always
  type: int
  sample: 11873410
entries:
  description: Number of files in the zip.
  returned: always
  type: int
  sample: 1193
downloaded:
  description: Whether wheels had to be downloaded (they were not all in O(wheel_cache)).
  returned: always
  type: bool
  sample: false
"""

import base64
import hashlib
import os
import re
import shutil
import stat
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ansible.module_utils.basic import AnsibleModule

# The earliest date a zip can hold: every entry gets it, so the bytes do not depend on when files were
# written or checked out.
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
COMPRESSION_LEVEL = 6
UNIX = 3  # "version made by" host system: Unix, so readers apply the modes of external_attr
# The oldest manylinux glibc is 2.17 (manylinux2014); the newest is the runtime's own.
OLDEST_GLIBC_MINOR = 17
MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}
# Installed files no Lambda reads and whose bytes depend on the build machine.
DEPENDENCY_NOISE = re.compile(r"bin/.*|[^/]+\.dist-info/(RECORD|direct_url\.json)")

PATH_OPTIONS = ("dest", "source", "packages", "requirements", "wheel_cache")

RunCommand = Callable[[list[str]], tuple[int, str, str]]


class PackageError(Exception):
    pass


def check_inputs(params: Mapping[str, Any]) -> None:
    """Refuse bad input before anything is built, naming the option."""
    source = params["source"]
    if not os.path.isdir(source):
        raise PackageError(f"source: {source} is not a directory")
    if not os.path.isfile(os.path.join(source, "handler.py")):
        raise PackageError(f"source: {source} has no handler.py (the function's entry point)")
    names: dict[str, str] = {}
    for package in params["packages"]:
        if not os.path.isdir(package):
            raise PackageError(f"packages: {package} is not a directory")
        name = os.path.basename(os.path.normpath(package))
        if name in names:
            raise PackageError(f"packages: {names[name]} and {package} would both be {name}/ in the zip")
        names[name] = package
    requirements = params["requirements"]
    if requirements is not None and not os.path.isfile(requirements):
        raise PackageError(f"requirements: {requirements} is not a file")
    version = params["python_version"]
    match = re.fullmatch(r"3\.(\d{1,2})", version)
    if not match or int(match.group(1)) < 9:
        raise PackageError(
            f"python_version: {version!r} is not the version of a Lambda Python runtime, 3.N from 3.9 "
            "(quote it in YAML: unquoted, 3.10 is the number 3.1)"
        )
    if os.path.isdir(params["dest"]):
        raise PackageError(f"dest: {params['dest']} is a directory; give the path of the zip file")
    cache = params["wheel_cache"]
    if cache is not None and os.path.exists(cache) and not os.path.isdir(cache):
        raise PackageError(f"wheel_cache: {cache} is not a directory")


def platform_tags(python_version: str, architecture: str) -> list[str]:
    """The manylinux tags the runtime accepts, newest glibc first (the order pip prefers them in)."""
    machine = MACHINES[architecture]
    newest = 34 if int(python_version.split(".")[1]) >= 12 else 26
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(newest, OLDEST_GLIBC_MINOR - 1, -1)]
    return [*tags, f"manylinux2014_{machine}"]


def pip_target_options(python_version: str, architecture: str) -> list[str]:
    """pip options that select the runtime's wheels instead of the ones of the building machine."""
    abi = "cp" + python_version.replace(".", "")
    options = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python_version]
    for tag in (abi, "abi3", "none"):
        options += ["--abi", tag]
    for tag in platform_tags(python_version, architecture):
        options += ["--platform", tag]
    return options


def install_requirements(
    run: RunCommand,
    requirements: str,
    target: str,
    cache: str,
    download_to: str,
    python_version: str,
    architecture: str,
) -> bool:
    """Install the requirements' wheels into target from the cache; download them first when missing.

    Returns whether anything was downloaded. Downloads go to download_to (the cache itself, or in check
    mode a temporary folder). The installation never uses the network (--no-index), and --isolated keeps
    PIP_* variables and user configuration (a --user, a remote find-links) out of it.
    """
    pip = [sys.executable, "-m", "pip"]
    quiet = ["--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    options = pip_target_options(python_version, architecture)
    links = [cache, download_to] if download_to != cache else [cache]
    install = [*pip, "install", "--isolated", *quiet, "--no-index", "--no-compile", "--target", target]
    install += [argument for link in links for argument in ("--find-links", link)]
    install += [*options, "--requirement", requirements]

    if any(name.endswith(".whl") for name in _listdir(cache)):
        rc, _out, _err = run(install)
        if rc == 0:
            return False
        shutil.rmtree(target, ignore_errors=True)
    download = [*pip, "download", *quiet, "--dest", download_to]
    if download_to != cache:
        download += ["--find-links", cache]
    rc, out, err = run([*download, *options, "--requirement", requirements])
    if rc != 0:
        raise PackageError(
            f"requirements: pip could not download the wheels of {requirements} for Python {python_version} "
            f"on {architecture} (manylinux binary wheels only): {_pip_errors(out, err)}"
        )
    rc, out, err = run(install)
    if rc != 0:
        raise PackageError(f"requirements: pip could not install {requirements}: {_pip_errors(out, err)}")
    return True


def tree_files(root: str, prefix: str, skip_hidden: bool) -> dict[str, Path]:
    """Entry name -> file, for every file under root, without bytecode caches (nor hidden names)."""
    files: dict[str, Path] = {}
    for directory, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [
            name for name in dirnames if name != "__pycache__" and not (skip_hidden and name.startswith("."))
        ]
        for filename in filenames:
            if filename.endswith((".pyc", ".pyo")) or (skip_hidden and filename.startswith(".")):
                continue
            path = Path(directory, filename)
            files[prefix + path.relative_to(root).as_posix()] = path
    return files


def collect_files(source: str, packages: list[str], dependencies: str | None) -> dict[str, Path]:
    """Entry name -> file of the whole zip; two inputs that claim one name are refused."""
    inputs = [("source", source, tree_files(source, "", skip_hidden=True))]
    for package in packages:
        prefix = os.path.basename(os.path.normpath(package)) + "/"
        inputs.append(("packages", package, tree_files(package, prefix, skip_hidden=True)))
    if dependencies is not None:
        installed = tree_files(dependencies, "", skip_hidden=False)
        kept = {name: path for name, path in installed.items() if not DEPENDENCY_NOISE.fullmatch(name)}
        inputs.append(("requirements", "the requirements", kept))

    files: dict[str, Path] = {}
    origin: dict[str, str] = {}
    for option, label, found in inputs:
        for name, path in found.items():
            if not path.is_file():
                raise PackageError(f"{option}: {path} is not a regular file")
            if name in files:
                raise PackageError(f"{option}: {label} and {origin[name]} both provide {name}")
            files[name] = path
            origin[name] = label
    return files


def write_zip(files: Mapping[str, Path], destination: str) -> None:
    """Write files (entry name -> file on disk) as a zip whose bytes depend only on names and contents
    (and the executable bit)."""
    with zipfile.ZipFile(destination, "w") as archive:
        for name in sorted(files):
            path = files[name]
            mode = 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE_TIME)
            info.create_system = UNIX
            info.external_attr = (stat.S_IFREG | mode) << 16
            archive.writestr(
                info, path.read_bytes(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=COMPRESSION_LEVEL
            )


def zip_entries(path: str) -> dict[str, str]:
    """Entry name -> a line that changes with its content or mode; empty when path is not a zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {
                info.filename: f"crc32 {info.CRC:08x}, {info.file_size} bytes, mode {info.external_attr >> 16 & 0o777:04o}"
                for info in archive.infolist()
            }
    except (OSError, zipfile.BadZipFile):
        return {}


def file_sha256(path: str) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def entries_diff(
    before: Mapping[str, str], after: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """The entries removed or changed (before), and added or changed (after)."""
    changed = {name for name in before.keys() & after.keys() if before[name] != after[name]}
    removed = {name: before[name] for name in before if name not in after or name in changed}
    added = {name: after[name] for name in after if name not in before or name in changed}
    return removed, added


def package(params: Mapping[str, Any], check_mode: bool, run: RunCommand) -> dict[str, Any]:
    """Build the zip, then replace dest with it when it differs; the module's result."""
    check_inputs(params)
    params = {name: _absolute(value) if name in PATH_OPTIONS else value for name, value in params.items()}
    dest = params["dest"]
    dest_dir = os.path.dirname(dest)
    cache = params["wheel_cache"]
    with tempfile.TemporaryDirectory(prefix="lambda-package-") as work:
        dependencies = None
        downloaded = False
        if params["requirements"] is not None:
            dependencies = os.path.join(work, "dependencies")
            if cache is None:
                cache = os.path.join(work, "wheels")
            elif not check_mode:
                os.makedirs(cache, exist_ok=True)
            download_to = os.path.join(work, "wheels") if check_mode else cache
            downloaded = install_requirements(
                run,
                params["requirements"],
                dependencies,
                cache,
                download_to,
                params["python_version"],
                params["architecture"],
            )
        files = collect_files(params["source"], params["packages"], dependencies)

        if not check_mode:
            os.makedirs(dest_dir, exist_ok=True)
        handle, built = tempfile.mkstemp(
            prefix=f".{os.path.basename(dest)}.", suffix=".tmp", dir=work if check_mode else dest_dir
        )
        os.close(handle)
        try:
            write_zip(files, built)
            result = replace(built, dest, check_mode)
        finally:
            if os.path.exists(built):
                os.unlink(built)
    return {**result, "downloaded": downloaded}


def replace(built: str, dest: str, check_mode: bool) -> dict[str, Any]:
    """Move built over dest unless dest has the same bytes (then only its mode is fixed)."""
    digest = file_sha256(built)
    old_digest = file_sha256(dest) if os.path.isfile(dest) else None
    old_entries = zip_entries(dest) if old_digest is not None else {}
    new_entries = zip_entries(built)
    result: dict[str, Any] = {
        "path": dest,
        "sha256": digest.hex(),
        "code_sha256": base64.b64encode(digest).decode("ascii"),
        "size": os.path.getsize(built),
        "entries": len(new_entries),
    }
    old_mode = stat.S_IMODE(os.stat(dest).st_mode) if old_digest is not None else None
    if old_digest == digest:
        changed = old_mode != 0o644
        if changed and not check_mode:
            os.chmod(dest, 0o644)
    else:
        changed = True
        if not check_mode:
            os.chmod(built, 0o644)
            with open(built, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(built, dest)
    removed, added = entries_diff(old_entries, new_entries)
    result["changed"] = changed
    result["diff"] = {
        "before_header": dest,
        "after_header": dest,
        "before": {
            "sha256": old_digest.hex() if old_digest else None,
            "mode": f"{old_mode:04o}" if old_mode is not None else None,
            "entries": removed,
        },
        "after": {"sha256": digest.hex(), "mode": "0644", "entries": added},
    }
    return result


def _absolute(value: Any) -> Any:
    if isinstance(value, list):
        return [os.path.abspath(item) for item in value]
    return os.path.abspath(value) if value is not None else None


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _pip_errors(out: str, err: str) -> str:
    """pip's ERROR lines (they name the distribution), or the end of its output when it has none."""
    lines = [line.strip() for line in f"{out}\n{err}".splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return " | ".join(errors or lines[-6:])


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            dest=dict(type="path", required=True),
            source=dict(type="path", required=True),
            packages=dict(type="list", elements="path", default=[]),
            requirements=dict(type="path"),
            python_version=dict(type="str", default="3.12"),
            architecture=dict(type="str", choices=["x86_64", "arm64"], default="x86_64"),
            wheel_cache=dict(type="path"),
        ),
        supports_check_mode=True,
    )

    def run(command: list[str]) -> tuple[int, str, str]:
        return module.run_command(command)

    try:
        result = package(module.params, module.check_mode, run)
    except PackageError as exc:
        module.fail_json(msg=str(exc))
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
