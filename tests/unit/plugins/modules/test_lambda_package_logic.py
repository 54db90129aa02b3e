"""The pure parts of lambda_package, with plain files and values: the zip writer, what goes into the zip,
the pip commands, the diff and the input checks. The real build is in
tests/integration/test_lambda_package.py."""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.tenantforge.platform.plugins.modules import lambda_package as lp


def write_tree(root: Path, files: dict[str, str], mode: int = 0o644) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    return root


def test_the_zip_depends_only_on_names_contents_and_the_executable_bit(tmp_path: Path) -> None:
    # GIVEN the same files written in two orders, at different times, with different modes
    first = write_tree(tmp_path / "a", {"b.py": "b = 1\n", "a/x.py": "x = 1\n"})
    (first / "tool").write_text("#!/bin/sh\n")
    (first / "tool").chmod(0o700)
    os.utime(first / "b.py", (1_000_000_000, 1_000_000_000))
    second = write_tree(tmp_path / "b", {"a/x.py": "x = 1\n", "b.py": "b = 1\n"}, mode=0o600)
    (second / "tool").write_text("#!/bin/sh\n")
    (second / "tool").chmod(0o755)
    zips = []
    for root in (first, second):
        files = {name: root / name for name in ("tool", "b.py", "a/x.py")}
        lp.write_zip(files, str(root) + ".zip")
        zips.append(Path(str(root) + ".zip").read_bytes())
    # THEN the zips are the same bytes: sorted, one date, two modes, deflated
    assert zips[0] == zips[1]
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        infos = archive.infolist()
        assert [info.filename for info in infos] == ["a/x.py", "b.py", "tool"]
        assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert [info.external_attr >> 16 for info in infos] == [0o100644, 0o100644, 0o100755]
        assert {(info.create_system, info.compress_type) for info in infos} == {(3, zipfile.ZIP_DEFLATED)}
        assert archive.read("b.py") == b"b = 1\n"


def test_a_changed_content_changes_the_zip(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", {"handler.py": "x = 1\n"})
    lp.write_zip({"handler.py": root / "handler.py"}, str(tmp_path / "one.zip"))
    (root / "handler.py").write_text("x = 2\n")
    lp.write_zip({"handler.py": root / "handler.py"}, str(tmp_path / "two.zip"))
    assert (tmp_path / "one.zip").read_bytes() != (tmp_path / "two.zip").read_bytes()
    removed, added = lp.entries_diff(
        lp.zip_entries(str(tmp_path / "one.zip")), lp.zip_entries(str(tmp_path / "two.zip"))
    )
    assert list(removed) == list(added) == ["handler.py"]
    assert removed["handler.py"] != added["handler.py"]
    assert added["handler.py"].endswith(", 6 bytes, mode 0644")


def test_what_goes_into_the_zip(tmp_path: Path) -> None:
    # GIVEN a function with caches and hidden files, a shared package, and pip's installation
    source = write_tree(
        tmp_path / "fn",
        {
            "handler.py": "",
            "sub/mod.py": "",
            "__pycache__/handler.cpython-312.pyc": "",
            "stale.pyc": "",
            ".handler.py.swp": "",
            ".pytest_cache/README.md": "",
        },
    )
    shared = write_tree(tmp_path / "lib" / "shared", {"__init__.py": "", "__pycache__/x.pyc": ""})
    installed = write_tree(
        tmp_path / "deps",
        {
            "bin/tool": "#!/work/main/.venv/bin/python\n",
            "pkg/__init__.py": "",
            "pkg/.libs/libz.so": "",
            "pkg-1.0.dist-info/METADATA": "",
            "pkg-1.0.dist-info/INSTALLER": "pip\n",
            "pkg-1.0.dist-info/RECORD": "../../bin/tool,sha256=x,30\n",
            "pkg-1.0.dist-info/direct_url.json": "{}",
            "typing_extensions.py": "",
        },
    )
    # WHEN the zip's files are collected
    files = lp.collect_files(str(source), [str(shared)], str(installed))
    # THEN caches, hidden files of our code and machine-specific files of pip's are left out
    assert sorted(files) == [
        "handler.py",
        "pkg-1.0.dist-info/INSTALLER",
        "pkg-1.0.dist-info/METADATA",
        "pkg/.libs/libz.so",
        "pkg/__init__.py",
        "shared/__init__.py",
        "sub/mod.py",
        "typing_extensions.py",
    ]
    assert files["shared/__init__.py"] == shared / "__init__.py"


def test_two_inputs_for_one_entry_are_refused(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "fn", {"handler.py": ""})
    package = write_tree(tmp_path / "lib" / "jwt", {"__init__.py": ""})
    installed = write_tree(tmp_path / "deps", {"jwt/__init__.py": ""})
    with pytest.raises(lp.PackageError) as raised:
        lp.collect_files(str(source), [str(package)], str(installed))
    assert str(raised.value) == f"requirements: the requirements and {package} both provide jwt/__init__.py"


def test_platform_tags_follow_the_runtime_glibc() -> None:
    assert lp.platform_tags("3.12", "x86_64") == [
        *(f"manylinux_2_{minor}_x86_64" for minor in range(34, 16, -1)),
        "manylinux2014_x86_64",
    ]
    assert lp.platform_tags("3.11", "arm64") == [
        *(f"manylinux_2_{minor}_aarch64" for minor in range(26, 16, -1)),
        "manylinux2014_aarch64",
    ]
    options = lp.pip_target_options("3.13", "x86_64")
    assert options[:11] == [
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        "3.13",
        "--abi",
        "cp313",
        "--abi",
        "abi3",
        "--abi",
        "none",
    ]


class FakePip:
    """Answers pip commands with the given return codes, in order, and records them."""

    def __init__(self, *codes: int, err: str = "") -> None:
        self.codes = list(codes)
        self.err = err
        self.commands: list[list[str]] = []

    def __call__(self, command: list[str]) -> tuple[int, str, str]:
        self.commands.append(command)
        return self.codes.pop(0), "", self.err

    @property
    def verbs(self) -> list[str]:
        return [command[3] for command in self.commands]


def install(run: FakePip, cache: Path, download_to: Path | None = None) -> bool:
    return lp.install_requirements(
        run, "req.txt", "/tmp/target", str(cache), str(download_to or cache), "3.12", "x86_64"
    )


def links(command: list[str]) -> list[str]:
    return [command[index + 1] for index, argument in enumerate(command) if argument == "--find-links"]


def test_a_full_cache_is_installed_from_without_downloading(tmp_path: Path) -> None:
    (tmp_path / "pika-1.4.4-py3-none-any.whl").write_bytes(b"")
    run = FakePip(0)
    assert install(run, tmp_path) is False
    assert run.verbs == ["install"]
    command = run.commands[0]
    assert command[:3] == [sys.executable, "-m", "pip"]
    assert {"--isolated", "--no-index", "--no-compile"} <= set(command)
    assert links(command) == [str(tmp_path)]


def test_missing_wheels_are_downloaded_into_the_cache(tmp_path: Path) -> None:
    (tmp_path / "pika-1.4.4-py3-none-any.whl").write_bytes(b"")
    run = FakePip(1, 0, 0)
    assert install(run, tmp_path) is True
    assert run.verbs == ["install", "download", "install"]
    download = run.commands[1]
    assert download[download.index("--dest") + 1] == str(tmp_path) and links(download) == []


def test_check_mode_downloads_beside_the_cache(tmp_path: Path) -> None:
    run = FakePip(0, 0)
    assert install(run, tmp_path / "cache", tmp_path / "scratch") is True
    assert run.verbs == ["download", "install"]
    download, installation = run.commands
    assert download[download.index("--dest") + 1] == str(tmp_path / "scratch")
    assert links(download) == [str(tmp_path / "cache")]
    assert links(installation) == [str(tmp_path / "cache"), str(tmp_path / "scratch")]


def test_a_failed_download_names_the_option_and_pip_errors(tmp_path: Path) -> None:
    err = "WARNING: Retrying\nERROR: Could not find a version that satisfies the requirement nope==1\n"
    with pytest.raises(lp.PackageError) as raised:
        install(FakePip(1, err=err), tmp_path)
    assert str(raised.value) == (
        "requirements: pip could not download the wheels of req.txt for Python 3.12 on x86_64 "
        "(manylinux binary wheels only): ERROR: Could not find a version that satisfies the requirement nope==1"
    )


def inputs(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    write_tree(tmp_path / "fn", {"handler.py": ""})
    return {
        "source": str(tmp_path / "fn"),
        "packages": [],
        "requirements": None,
        "python_version": "3.12",
        "architecture": "x86_64",
        "wheel_cache": None,
        "dest": str(tmp_path / "fn.zip"),
        **overrides,
    }


@pytest.mark.parametrize("version", ["3.9", "3.12", "3.13", "3.14"])
def test_runtime_versions_are_accepted(tmp_path: Path, version: str) -> None:
    lp.check_inputs(inputs(tmp_path, python_version=version))


@pytest.mark.parametrize("version", ["3", "3.1", "3.8", "3.12.1", "python3.12", "2.7", ""])
def test_other_versions_are_refused_by_name(tmp_path: Path, version: str) -> None:
    with pytest.raises(lp.PackageError, match=r"^python_version: "):
        lp.check_inputs(inputs(tmp_path, python_version=version))


def test_a_wheel_cache_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("")
    with pytest.raises(lp.PackageError, match=r"^wheel_cache: .* is not a directory$"):
        lp.check_inputs(inputs(tmp_path, wheel_cache=str(tmp_path / "cache")))
