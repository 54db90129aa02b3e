"""The checkout works as the collection tenantforge.platform and its playbooks parse."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO, ansible_env, run_playbook

PLAYBOOKS = ["site.yml", *sorted(str(p.relative_to(REPO)) for p in (REPO / "playbooks").glob("*.yml"))]


def ansible(tool: str, *args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / tool), *args],
        cwd=REPO,
        env=ansible_env(state_dir),
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("inventory", ["inventories/local", "inventories/aws/hosts.yml"])
@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_every_playbook_passes_syntax_check(playbook: str, inventory: str, tmp_path: Path) -> None:
    run = run_playbook(playbook, tmp_path, args=("--syntax-check", "-i", inventory))
    run.assert_ok()


def test_fqcns_resolve_for_ansible_doc_and_ad_hoc_commands(tmp_path: Path) -> None:
    doc = ansible("ansible-doc", "tenantforge.platform.platform_secret", state_dir=tmp_path)
    assert doc.returncode == 0, doc.stderr
    assert "Ensures an AWS Secrets Manager secret exists" in doc.stdout

    pidfile = tmp_path / "nothing.pid"
    ad_hoc = ansible(
        "ansible",
        "localhost",
        "-m",
        "tenantforge.platform.local_service",
        "-a",
        f"name=nothing pidfile={pidfile} state=stopped",
        state_dir=tmp_path,
    )
    assert ad_hoc.returncode == 0, ad_hoc.stdout + ad_hoc.stderr
    assert "SUCCESS" in ad_hoc.stdout


def test_the_validation_play_checks_every_role_of_the_provisioning_play() -> None:
    validate, provision = yaml.safe_load((REPO / "playbooks" / "infrastructure.yml").read_text())
    validated = validate["vars"]["tenantforge_infrastructure_roles"]
    provisioned = [entry["role"] for entry in provision["roles"] if entry["role"] != "platform_summary"]
    assert validated == provisioned


def test_requirements_yml_lists_every_collection_the_roles_use() -> None:
    used: set[str] = set()
    for path in [
        *REPO.glob("roles/*/tasks/*.yml"),
        *REPO.glob("playbooks/*.yml"),
        REPO / "inventories/aws/aws_ec2.yml",
    ]:
        used |= set(re.findall(r"\b([a-z_]+\.[a-z_]+)\.[a-z_0-9]+(?=:|\s|$)", path.read_text()))
    used = {name for name in used if name.split(".")[0] in {"amazon", "community", "kubernetes", "ansible"}}
    used -= {"ansible.builtin"}
    required = {
        entry["name"] for entry in yaml.safe_load((REPO / "requirements.yml").read_text())["collections"]
    }
    assert used <= required, f"used but not in requirements.yml: {sorted(used - required)}"
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())["dependencies"]
    assert set(galaxy) == required
