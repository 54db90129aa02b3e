"""lambda_package run as a playbook runs it, on the real authorizer with the real requirements: the zip is
the same bytes build after build, a rebuild leaves dest alone, check mode writes nothing, and the
dependencies are the Lambda runtime's (manylinux, cp312), not this machine's.

The wheel cache is shared by the module's tests: only the first build downloads.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ansible_module import ModuleRun, run_module
from conftest import REPO

pytestmark = pytest.mark.integration

MODULE = "tenantforge.platform.lambda_package"
AUTHORIZER = REPO / "lambdas" / "authorizer"
SHARED = REPO / "lambdas" / "tenantforge_lambda"
REQUIREMENTS = REPO / "lambdas" / "requirements.txt"
EPOCH_2001 = 1_000_000_000  # an mtime no build would give a file
ELF_X86_64 = 0x3E  # e_machine of an x86-64 ELF file


def params(dest: Path, cache: Path, source: Path = AUTHORIZER, **overrides: Any) -> dict[str, Any]:
    return {
        "source": str(source),
        "packages": [str(SHARED)],
        "requirements": str(REQUIREMENTS),
        "wheel_cache": str(cache),
        "dest": str(dest),
        **overrides,
    }


def build(dest: Path, cache: Path, state_dir: Path, check: bool = False, **overrides: Any) -> ModuleRun:
    return run_module(MODULE, params(dest, cache, **overrides), state_dir, check=check, diff=True)


@dataclass
class FirstBuild:
    zip_path: Path
    result: dict[str, Any]


@pytest.fixture(scope="module")
def wheel_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wheels")


@pytest.fixture(scope="module")
def first_build(tmp_path_factory: pytest.TempPathFactory, wheel_cache: Path) -> FirstBuild:
    """The authorizer built once with an empty cache: the only build of the module that downloads."""
    work = tmp_path_factory.mktemp("first-build")
    result = build(work / "authorizer.zip", wheel_cache, work).assert_ok()
    return FirstBuild(work / "authorizer.zip", result)


def test_two_builds_give_the_same_bytes(first_build: FirstBuild, wheel_cache: Path, tmp_path: Path) -> None:
    # GIVEN the authorizer built once, into an empty cache
    first = first_build.result
    assert first["changed"] is True and first["downloaded"] is True
    assert sorted(path.name for path in wheel_cache.iterdir()) == [
        "argon2_cffi-25.1.0-py3-none-any.whl",
        "argon2_cffi_bindings-26.2.0-cp310-abi3-manylinux_2_26_x86_64.manylinux_2_28_x86_64.whl",
        "cffi-2.1.1-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "cryptography-50.0.2-cp311-abi3-manylinux_2_34_x86_64.whl",
        "pika-1.4.4-py3-none-any.whl",
        "psycopg-3.3.9-py3-none-any.whl",
        "psycopg_binary-3.3.9-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "pycparser-3.12-py3-none-any.whl",
        "pyjwt-2.15.1-py3-none-any.whl",
        "typing_extensions-4.16.0-py3-none-any.whl",
    ]
    # WHEN it is built again into another file, from the cache
    second = build(tmp_path / "elsewhere" / "authorizer.zip", wheel_cache, tmp_path).assert_ok()
    # THEN the bytes are the same, and so are the digests the module reports
    data = first_build.zip_path.read_bytes()
    assert (tmp_path / "elsewhere" / "authorizer.zip").read_bytes() == data
    digest = hashlib.sha256(data).digest()
    assert second["changed"] is True and second["downloaded"] is False
    for result in (first, second):
        assert result["sha256"] == digest.hex()
        assert result["code_sha256"] == base64.b64encode(digest).decode()
        assert result["size"] == len(data)
        assert result["entries"] == len(zipfile.ZipFile(first_build.zip_path).namelist())
    assert second["path"] == str(tmp_path / "elsewhere" / "authorizer.zip")


def test_a_full_cache_needs_no_index(
    first_build: FirstBuild, wheel_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN every index unreachable: no pip configuration file, the index a closed port
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        monkeypatch.delenv(name, raising=False)
    # WHEN the authorizer is built with the cache the first build filled
    result = build(tmp_path / "authorizer.zip", wheel_cache, tmp_path).assert_ok()
    # THEN it is built, the same
    assert result["downloaded"] is False
    assert result["sha256"] == first_build.result["sha256"]


def test_a_second_build_into_the_same_file_leaves_it_alone(
    first_build: FirstBuild, wheel_cache: Path, tmp_path: Path
) -> None:
    # GIVEN the zip in place, with an old modification time
    dest = tmp_path / "authorizer.zip"
    shutil.copyfile(first_build.zip_path, dest)
    os.chmod(dest, 0o644)
    os.utime(dest, (EPOCH_2001, EPOCH_2001))
    inode = dest.stat().st_ino
    # WHEN it is built again, in check mode and for real
    checked = build(dest, wheel_cache, tmp_path, check=True).assert_ok()
    result = build(dest, wheel_cache, tmp_path).assert_ok()
    # THEN nothing changed: the same file, its mtime untouched, no temporary file left beside it
    for run in (checked, result):
        assert run["changed"] is False
        assert run["sha256"] == first_build.result["sha256"]
        unchanged = {"sha256": first_build.result["sha256"], "mode": "0644", "entries": {}}
        assert run["diff"]["before"] == unchanged and run["diff"]["after"] == unchanged
    assert dest.stat().st_mtime_ns == EPOCH_2001 * 10**9
    assert dest.stat().st_ino == inode
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")] == []


def test_the_mode_is_put_back_to_0644(first_build: FirstBuild, wheel_cache: Path, tmp_path: Path) -> None:
    dest = tmp_path / "authorizer.zip"
    shutil.copyfile(first_build.zip_path, dest)
    os.chmod(dest, 0o600)
    checked = build(dest, wheel_cache, tmp_path, check=True).assert_ok()
    assert checked["changed"] is True and dest.stat().st_mode & 0o777 == 0o600
    assert checked["diff"]["before"] == {
        "sha256": first_build.result["sha256"],
        "mode": "0600",
        "entries": {},
    }
    assert checked["diff"]["after"] == {"sha256": first_build.result["sha256"], "mode": "0644", "entries": {}}
    result = build(dest, wheel_cache, tmp_path).assert_ok()
    assert result["changed"] is True and dest.stat().st_mode & 0o777 == 0o644
    assert dest.read_bytes() == first_build.zip_path.read_bytes()


def test_check_mode_writes_nothing(first_build: FirstBuild, wheel_cache: Path, tmp_path: Path) -> None:
    # GIVEN no zip yet, in a folder that does not exist
    dest = tmp_path / "out" / "authorizer.zip"
    cached = sorted(wheel_cache.iterdir())
    # WHEN the build is checked
    result = build(dest, wheel_cache, tmp_path, check=True).assert_ok()
    # THEN it would be written, with the digest a real build gives, and nothing is
    assert result["changed"] is True
    assert result["sha256"] == first_build.result["sha256"]
    assert result["diff"]["before"] == {"sha256": None, "mode": None, "entries": {}}
    assert result["diff"]["after"]["sha256"] == first_build.result["sha256"]
    assert len(result["diff"]["after"]["entries"]) == first_build.result["entries"]
    assert not (tmp_path / "out").exists()
    assert sorted(wheel_cache.iterdir()) == cached


def test_check_mode_does_not_fill_the_wheel_cache(first_build: FirstBuild, tmp_path: Path) -> None:
    # GIVEN a wheel cache that does not exist yet
    cache = tmp_path / "new-cache"
    # WHEN the build is checked
    result = build(tmp_path / "authorizer.zip", cache, tmp_path, check=True).assert_ok()
    # THEN the wheels were downloaded to a temporary folder, not to the cache
    assert result["changed"] is True and result["downloaded"] is True
    assert result["sha256"] == first_build.result["sha256"]
    assert not cache.exists()
    assert not (tmp_path / "authorizer.zip").exists()


def test_a_changed_source_file_changes_the_zip_and_the_diff_names_it(
    first_build: FirstBuild, wheel_cache: Path, tmp_path: Path
) -> None:
    # GIVEN a copy of the authorizer, built
    source = tmp_path / "authorizer"
    shutil.copytree(AUTHORIZER, source, ignore=shutil.ignore_patterns("__pycache__"))
    dest = tmp_path / "authorizer.zip"
    built = build(dest, wheel_cache, tmp_path, source=source).assert_ok()
    assert built["sha256"] == first_build.result["sha256"]
    # WHEN its handler changes and a file is added
    with (source / "handler.py").open("a") as handle:
        handle.write("# a change\n")
    (source / "settings.json").write_text("{}\n")
    checked = build(dest, wheel_cache, tmp_path, check=True, source=source).assert_ok()
    result = build(dest, wheel_cache, tmp_path, source=source).assert_ok()
    # THEN the digest changes, and the diff names the changed entry and the added one, nothing else
    assert checked["changed"] is True and checked["sha256"] == result["sha256"]
    assert result["changed"] is True
    assert result["sha256"] != built["sha256"]
    assert result["sha256"] == hashlib.sha256(dest.read_bytes()).hexdigest()
    before, after = result["diff"]["before"], result["diff"]["after"]
    assert before["sha256"] == built["sha256"] and after["sha256"] == result["sha256"]
    assert list(before["entries"]) == ["handler.py"]
    assert sorted(after["entries"]) == ["handler.py", "settings.json"]
    assert before["entries"]["handler.py"] != after["entries"]["handler.py"]
    size = (source / "handler.py").stat().st_size
    assert after["entries"]["handler.py"].endswith(f", {size} bytes, mode 0644")
    assert after["entries"]["settings.json"].endswith(", 3 bytes, mode 0644")
    assert result["entries"] == built["entries"] + 1


def test_the_zip_holds_the_function_the_shared_package_and_runtime_wheels(first_build: FirstBuild) -> None:
    with zipfile.ZipFile(first_build.zip_path) as archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        rust = archive.read("cryptography/hazmat/bindings/_rust.abi3.so")
        psycopg_so = [
            name for name in names if name.startswith("psycopg_binary/_psycopg.") and name.endswith(".so")
        ]
        metadata = archive.read("cryptography-50.0.2.dist-info/METADATA").decode()
    # The handler at the root, the shared package beside it, file for file
    assert "handler.py" in names
    shared = sorted(
        f"tenantforge_lambda/{path.relative_to(SHARED).as_posix()}"
        for path in SHARED.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    )
    assert shared and sorted(name for name in names if name.startswith("tenantforge_lambda/")) == shared
    # The pinned dependencies, for CPython 3.12 on x86-64 Linux
    for package in ("jwt/", "cryptography/", "cffi/", "psycopg/", "psycopg_binary/", "argon2/", "pika/"):
        assert any(name.startswith(package) for name in names), package
    assert "Version: 50.0.2" in metadata.splitlines()
    assert rust[:4] == b"\x7fELF" and int.from_bytes(rust[18:20], "little") == ELF_X86_64
    assert psycopg_so == ["psycopg_binary/_psycopg.cpython-312-x86_64-linux-gnu.so"]
    # Not the runtime's boto3, no bytecode, nothing that names the building machine
    assert not any(name.startswith(("boto3/", "botocore/")) for name in names)
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
    assert not any(
        name.startswith("bin/") or name.endswith(("/RECORD", "/direct_url.json")) for name in names
    )
    # Reproducible layout: sorted, no directories, one date, two modes
    assert names == sorted(names)
    assert not any(name.endswith("/") for name in names)
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {info.external_attr >> 16 for info in infos} <= {0o100644, 0o100755}
    assert {info.compress_type for info in infos} == {zipfile.ZIP_DEFLATED}
    assert first_build.zip_path.stat().st_mode & 0o777 == 0o644


def test_arm64_installs_aarch64_wheels(first_build: FirstBuild, wheel_cache: Path, tmp_path: Path) -> None:
    result = build(tmp_path / "arm64.zip", wheel_cache, tmp_path, architecture="arm64").assert_ok()
    assert result["downloaded"] is True
    with zipfile.ZipFile(tmp_path / "arm64.zip") as archive:
        rust = archive.read("cryptography/hazmat/bindings/_rust.abi3.so")
        names = archive.namelist()
    assert int.from_bytes(rust[18:20], "little") == 0xB7  # EM_AARCH64
    assert "psycopg_binary/_psycopg.cpython-312-aarch64-linux-gnu.so" in names
    assert result["sha256"] != first_build.result["sha256"]


@pytest.mark.parametrize(
    ("overrides", "option"),
    [
        pytest.param({"source": "{empty}"}, "source", id="source without handler.py"),
        pytest.param({"source": "{missing}"}, "source", id="source missing"),
        pytest.param({"packages": ["{missing}"]}, "packages", id="package folder missing"),
        pytest.param({"packages": [str(SHARED), "{twin}"]}, "packages", id="two packages of one name"),
        pytest.param({"requirements": "{missing}"}, "requirements", id="requirements missing"),
        pytest.param({"architecture": "x86"}, "architecture", id="bad architecture"),
        pytest.param({"python_version": "3"}, "python_version", id="python_version without minor"),
        pytest.param({"python_version": "3.1"}, "python_version", id="python_version 3.10 unquoted"),
        pytest.param({"python_version": "python3.12"}, "python_version", id="python_version runtime name"),
        pytest.param({"dest": "{directory}"}, "dest", id="dest a directory"),
    ],
)
def test_bad_input_fails_naming_the_option_and_writes_nothing(
    overrides: dict[str, Any], option: str, tmp_path: Path
) -> None:
    # GIVEN an empty folder, a twin of the shared package's name, and an existing folder as dest
    (tmp_path / "empty").mkdir()
    (tmp_path / "twin" / "tenantforge_lambda").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    places = {
        "empty": tmp_path / "empty",
        "missing": tmp_path / "missing",
        "twin": tmp_path / "twin" / "tenantforge_lambda",
        "directory": tmp_path / "out",
    }
    concrete = {
        key: [item.format(**places) for item in value] if isinstance(value, list) else value.format(**places)
        for key, value in overrides.items()
    }
    cache = tmp_path / "cache"
    # WHEN the module runs
    run = run_module(MODULE, {**params(tmp_path / "out" / "fn.zip", cache), **concrete}, tmp_path)
    # THEN it fails, naming the option, before building anything
    assert run.failed, run.output[-2000:]
    assert option in run.result["msg"]
    assert list((tmp_path / "out").iterdir()) == []
    assert not cache.exists()
