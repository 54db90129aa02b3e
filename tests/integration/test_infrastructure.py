"""The AWS layer end to end: playbooks/infrastructure.yml and playbooks/teardown.yml against the emulator.

The tests of this file share one environment and run in order: check mode on an empty account,
the create (with -vvv, whose output is searched for secret values), every property of what was
created, the idempotent re-run, check mode after the create, a modification, then the teardown.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    BIN,
    REPO,
    Emulator,
    PlaybookRun,
    ansible_env,
    assert_nothing_exists,
    platform_resources,
    run_playbook,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

pytestmark = pytest.mark.integration

ENV = "local"
NAME = f"tenantforge-{ENV}"
ACCOUNT = "123456789012"
TAGS = {"Project": "tenantforge", "Environment": ENV, "ManagedBy": "tenantforge"}
ADMIN_CIDR = "192.0.2.0/24"


@dataclass
class Layer:
    emulator: Emulator
    state_dir: Path
    key_dir: Path

    def run(self, playbook: str, *args: str, **extra: Any) -> PlaybookRun:
        extra_vars = {"local_emulator_port": self.emulator.port, "aws_keypair_directory": str(self.key_dir)}
        return run_playbook(playbook, self.state_dir, {**extra_vars, **extra}, args)

    @property
    def pem(self) -> Path:
        return self.key_dir / f"{NAME}.pem"


def tags_of(items: list[dict[str, str]]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in items}


@pytest.fixture(scope="module")
def layer(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Layer:
    emulator.reset()
    return Layer(emulator, tmp_path_factory.mktemp("state"), tmp_path_factory.mktemp("keys") / "ssh")


@pytest.fixture(scope="module")
def check_on_empty(layer: Layer) -> PlaybookRun:
    return layer.run("playbooks/infrastructure.yml", "--check", "--diff")


@pytest.fixture(scope="module")
def created(layer: Layer, check_on_empty: PlaybookRun) -> PlaybookRun:
    run = layer.run("playbooks/infrastructure.yml", "-vvv")
    run.assert_ok()
    return run


@pytest.fixture(scope="module")
def instance(layer: Layer, created: PlaybookRun) -> dict[str, Any]:
    reservations = layer.emulator.client("ec2").describe_instances(
        Filters=[{"Name": "tag:Name", "Values": [f"{NAME}-host"]}]
    )["Reservations"]
    instances = [i for r in reservations for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    assert len(instances) == 1
    return instances[0]


@pytest.fixture(scope="module")
def secret_values(layer: Layer, created: PlaybookRun) -> dict[str, dict[str, Any]]:
    client = layer.emulator.client("secretsmanager")
    names = [s["Name"] for s in client.list_secrets()["SecretList"]]
    return {name: json.loads(client.get_secret_value(SecretId=name)["SecretString"]) for name in names}


def test_check_mode_on_an_empty_account_reports_changes_and_creates_nothing(
    layer: Layer, check_on_empty: PlaybookRun
) -> None:
    check_on_empty.assert_ok()
    assert check_on_empty.changed >= 5
    assert_nothing_exists(layer.emulator)
    assert not layer.pem.exists()


def test_network(layer: Layer, created: PlaybookRun) -> None:
    ec2 = layer.emulator.client("ec2")
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": [NAME]}])["Vpcs"]
    assert len(vpcs) == 1
    vpc = vpcs[0]
    assert vpc["CidrBlock"] == "10.42.0.0/16"
    assert tags_of(vpc["Tags"]) == {**TAGS, "Name": NAME}
    vpc_filter = [{"Name": "vpc-id", "Values": [vpc["VpcId"]]}]

    subnets = ec2.describe_subnets(Filters=vpc_filter)["Subnets"]
    assert sorted(s["CidrBlock"] for s in subnets) == ["10.42.0.0/24", "10.42.1.0/24"]
    assert len({s["AvailabilityZone"] for s in subnets}) == 2
    assert all(s["MapPublicIpOnLaunch"] for s in subnets)
    assert all(TAGS.items() <= tags_of(s["Tags"]).items() for s in subnets)

    gateways = ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [vpc["VpcId"]]}]
    )
    assert len(gateways["InternetGateways"]) == 1
    gateway = gateways["InternetGateways"][0]
    assert TAGS.items() <= tags_of(gateway["Tags"]).items()

    tables = ec2.describe_route_tables(
        Filters=[*vpc_filter, {"Name": "tag:Name", "Values": [f"{NAME}-public"]}]
    )
    assert len(tables["RouteTables"]) == 1
    table = tables["RouteTables"][0]
    default_routes = [r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    assert [r["GatewayId"] for r in default_routes] == [gateway["InternetGatewayId"]]
    assert sorted(a["SubnetId"] for a in table["Associations"] if "SubnetId" in a) == sorted(
        s["SubnetId"] for s in subnets
    )


def test_security_group_rules(layer: Layer, created: PlaybookRun) -> None:
    ec2 = layer.emulator.client("ec2")
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"{NAME}-host"]}])
    assert len(groups["SecurityGroups"]) == 1
    group = groups["SecurityGroups"][0]
    assert TAGS.items() <= tags_of(group["Tags"]).items()

    rules = set()
    for permission in group["IpPermissions"]:
        port = (permission["IpProtocol"], permission.get("FromPort"), permission.get("ToPort"))
        rules |= {(*port, r["CidrIp"]) for r in permission.get("IpRanges", [])}
        rules |= {(*port, p["GroupId"]) for p in permission.get("UserIdGroupPairs", [])}
    assert rules == {
        ("tcp", 22, 22, ADMIN_CIDR),
        ("tcp", 6443, 6443, ADMIN_CIDR),
        ("tcp", 80, 80, "0.0.0.0/0"),
        ("tcp", 443, 443, "0.0.0.0/0"),
        ("-1", None, None, group["GroupId"]),
    }


def test_key_pair_is_rsa_4096_private_to_the_owner_and_known_to_ec2(
    layer: Layer, created: PlaybookRun
) -> None:
    assert stat.S_IMODE(layer.pem.stat().st_mode) == 0o600
    assert stat.S_IMODE(layer.pem.parent.stat().st_mode) == 0o700
    key = serialization.load_pem_private_key(layer.pem.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 4096
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    local = ":".join(re.findall("..", hashlib.md5(der, usedforsecurity=False).hexdigest()))

    pairs = layer.emulator.client("ec2").describe_key_pairs(KeyNames=[NAME])["KeyPairs"]
    assert [p["KeyFingerprint"] for p in pairs] == [local]
    assert TAGS.items() <= tags_of(pairs[0]["Tags"]).items()


def test_host_identity_is_least_privilege(layer: Layer, created: PlaybookRun) -> None:
    iam = layer.emulator.client("iam")
    role = iam.get_role(RoleName=f"{NAME}-host")["Role"]
    trust = role["AssumeRolePolicyDocument"]
    assert [s["Principal"] for s in trust["Statement"]] == [{"Service": "ec2.amazonaws.com"}]
    attached = iam.list_attached_role_policies(RoleName=f"{NAME}-host")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]

    policy = iam.get_role_policy(RoleName=f"{NAME}-host", PolicyName="platform-access")["PolicyDocument"]
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert statements["WritePlatformLogs"]["Resource"] == [
        f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/tenantforge/{ENV}/*",
        f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/tenantforge/{ENV}/*:log-stream:*",
    ]
    assert statements["ReadPlatformSecrets"]["Resource"] == (
        f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:tenantforge/{ENV}/*"
    )
    assert sorted(statements["ReadPlatformSecrets"]["Action"]) == [
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
    ]
    # The notifier (a Deployment on the host) posts status events to the WebSocket connections.
    assert statements["PostTaskStatusToWebSocketConnections"]["Action"] == "execute-api:ManageConnections"
    assert statements["PostTaskStatusToWebSocketConnections"]["Resource"] == (
        f"arn:aws:execute-api:us-east-1:{ACCOUNT}:*/*/*/@connections/*"
    )
    assert sorted(statements) == [
        "ListPlatformSecrets",
        "PostTaskStatusToWebSocketConnections",
        "ReadPlatformSecrets",
        "WritePlatformLogs",
    ]

    profile = iam.get_instance_profile(InstanceProfileName=f"{NAME}-host")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [f"{NAME}-host"]


def test_host(layer: Layer, instance: dict[str, Any]) -> None:
    assert instance["InstanceType"] == "t3.medium"
    # The newest Debian 12 image of the emulator's catalogue (roles/local_emulator/files/amis.json).
    assert instance["ImageId"] == "ami-0d1e2b3a4c5f60712"
    assert instance["KeyName"] == NAME
    assert instance["State"]["Name"] == "running"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    assert instance["IamInstanceProfile"]["Arn"].endswith(f":instance-profile/{NAME}-host")
    assert [g["GroupName"] for g in instance["SecurityGroups"]] == [f"{NAME}-host"]
    assert instance.get("PublicIpAddress")
    assert {**TAGS, "Name": f"{NAME}-host", "Role": "platform-host"}.items() <= tags_of(
        instance["Tags"]
    ).items()

    volume_ids = [m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]]
    volumes = layer.emulator.client("ec2").describe_volumes(VolumeIds=volume_ids)["Volumes"]
    assert [(v["VolumeType"], v["Size"], v["Encrypted"]) for v in volumes] == [("gp3", 40, True)]


def test_idle_alarm_stops_the_host_after_an_idle_hour(layer: Layer, instance: dict[str, Any]) -> None:
    alarms = layer.emulator.client("cloudwatch").describe_alarms(AlarmNames=[f"{NAME}-host-idle-stop"])
    assert len(alarms["MetricAlarms"]) == 1
    alarm = alarms["MetricAlarms"][0]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == (
        "AWS/EC2",
        "CPUUtilization",
        "Average",
    )
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("LessThanThreshold", 5.0)
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (300, 12, 12)
    assert alarm["Period"] * alarm["EvaluationPeriods"] == 60 * 60
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["Dimensions"] == [{"Name": "InstanceId", "Value": instance["InstanceId"]}]
    assert alarm["AlarmActions"] == ["arn:aws:automate:us-east-1:ec2:stop"]


def test_trail_bucket_is_private_encrypted_versioned_and_writable_by_cloudtrail_only(
    layer: Layer, created: PlaybookRun
) -> None:
    s3 = layer.emulator.client("s3")
    bucket = f"{NAME}-trail-{ACCOUNT}"
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {
        key: True
        for key in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
    }
    encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert encryption[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert tags_of(s3.get_bucket_tagging(Bucket=bucket)["TagSet"]) == TAGS

    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [
        (r["Status"], r["Expiration"]["Days"], r["NoncurrentVersionExpiration"]["NoncurrentDays"])
        for r in rules
    ] == [("Enabled", 365, 365)]

    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    trail_arn = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{NAME}-trail"
    allows = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert {s["Principal"]["Service"] for s in allows} == {"cloudtrail.amazonaws.com"}
    write = next(s for s in allows if s["Action"] == "s3:PutObject")
    assert write["Resource"] == f"arn:aws:s3:::{bucket}/AWSLogs/{ACCOUNT}/*"
    assert write["Condition"]["StringEquals"] == {
        "s3:x-amz-acl": "bucket-owner-full-control",
        "aws:SourceArn": trail_arn,
    }
    deny_others = next(s for s in policy["Statement"] if s.get("NotPrincipal"))
    assert deny_others["Effect"] == "Deny"
    assert deny_others["NotPrincipal"] == {"Service": "cloudtrail.amazonaws.com"}
    assert "s3:PutObject" in deny_others["Action"]


def test_trail(layer: Layer, created: PlaybookRun) -> None:
    cloudtrail = layer.emulator.client("cloudtrail")
    trail = cloudtrail.get_trail(Name=f"{NAME}-trail")["Trail"]
    assert trail["S3BucketName"] == f"{NAME}-trail-{ACCOUNT}"
    assert trail["IsMultiRegionTrail"] is True
    assert trail["LogFileValidationEnabled"] is True
    assert trail["IncludeGlobalServiceEvents"] is True
    assert cloudtrail.get_trail_status(Name=f"{NAME}-trail")["IsLogging"] is True


def test_log_groups(layer: Layer, created: PlaybookRun) -> None:
    logs = layer.emulator.client("logs")
    groups = logs.describe_log_groups(logGroupNamePrefix=f"/tenantforge/{ENV}/")["logGroups"]
    assert [(g["logGroupName"], g["retentionInDays"]) for g in groups] == [
        (f"/tenantforge/{ENV}/cluster", 30),
        (f"/tenantforge/{ENV}/platform", 30),
    ]
    assert logs.list_tags_for_resource(resourceArn=groups[0]["arn"].removesuffix(":*"))["tags"] == TAGS


def test_secrets_are_generated_with_their_contract_shapes(
    layer: Layer, secret_values: dict[str, dict[str, Any]]
) -> None:
    prefix = f"tenantforge/{ENV}/"
    logins = {
        "postgres/superuser": "postgres",
        "postgres/owner": "tenantforge_owner",
        "postgres/app": "tenantforge_app",
        "pgbouncer/auth": "pgbouncer_auth",
        "rabbitmq/admin": "tenantforge_admin",
        "rabbitmq/orchestrator": "tenantforge_orchestrator",
        "rabbitmq/worker": "tenantforge_worker",
        "rabbitmq/notifier": "tenantforge_notifier",
    }
    expected = {prefix + name for name in [*logins, "rabbitmq/erlang-cookie", "jwt/signing-key", "jwt/jwks"]}
    assert set(secret_values) == expected
    passwords = set()
    for name, username in logins.items():
        value = secret_values[prefix + name]
        assert value["username"] == username
        assert re.fullmatch(r"[A-Za-z0-9]{32}", value["password"])
        passwords.add(value["password"])
    assert len(passwords) == len(logins)
    assert re.fullmatch(r"[A-Z0-9]{48}", secret_values[prefix + "rabbitmq/erlang-cookie"]["cookie"])

    signing = secret_values[prefix + "jwt/signing-key"]
    assert signing["alg"] == "RS256"
    assert signing["private_key_pem"].splitlines()[0].strip("-") == "BEGIN PRIVATE KEY"  # PKCS#8
    keys = secret_values[prefix + "jwt/jwks"]["keys"]
    assert [(k["kid"], k["kty"], k["alg"], k["use"]) for k in keys] == [
        (signing["kid"], "RSA", "RS256", "sig")
    ]

    client = layer.emulator.client("secretsmanager")
    for name in expected:
        assert TAGS.items() <= tags_of(client.describe_secret(SecretId=name)["Tags"]).items()


def test_no_secret_value_appears_in_verbose_output(
    created: PlaybookRun, secret_values: dict[str, dict[str, Any]], layer: Layer
) -> None:
    output = created.output
    assert "module_args" in output, "the run was not verbose enough to show module arguments"
    values = []
    for value in secret_values.values():
        values += [value.get("password"), value.get("cookie")]
        values += (value.get("private_key_pem") or "").splitlines()[1:-1]
    values += layer.pem.read_text().splitlines()[1:-1]
    leaked = [v for v in values if v and v in output]
    assert leaked == []


def test_summary_names_the_resources_and_holds_no_secret(
    layer: Layer, instance: dict[str, Any], secret_values: dict[str, dict[str, Any]]
) -> None:
    path = layer.state_dir / "summary.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    summary = json.loads(path.read_text())
    host = summary["aws_host"]
    assert host["instance_id"] == instance["InstanceId"]
    assert host["public_ip"] == instance["PublicIpAddress"]
    assert host["public_dns"] == instance["PublicDnsName"]
    assert host["ssh_command"] == f"ssh -i {layer.pem} admin@{instance['PublicIpAddress']}"
    assert (
        host["ssm_command"] == f"aws ssm start-session --region us-east-1 --target {instance['InstanceId']}"
    )
    assert summary["aws_idle_stop"]["alarm"] == f"{NAME}-host-idle-stop"
    assert summary["aws_audit"]["bucket"] == f"{NAME}-trail-{ACCOUNT}"
    assert summary["aws_logs"]["log_groups"] == [
        f"/tenantforge/{ENV}/cluster",
        f"/tenantforge/{ENV}/platform",
    ]
    assert set(summary["aws_secrets"]["secrets"]) == set(secret_values)
    text = path.read_text()
    assert not [v["password"] for v in secret_values.values() if "password" in v and v["password"] in text]


def test_a_second_run_changes_nothing_and_keeps_the_key(layer: Layer, created: PlaybookRun) -> None:
    key = layer.pem.read_bytes()
    run = layer.run("playbooks/infrastructure.yml")
    run.assert_ok()
    assert run.changed == 0
    assert layer.pem.read_bytes() == key


def test_check_mode_after_the_create_reports_nothing_to_change(layer: Layer, created: PlaybookRun) -> None:
    run = layer.run("playbooks/infrastructure.yml", "--check", "--diff")
    run.assert_ok()
    assert run.changed == 0


def test_a_modified_setting_is_reported_in_check_mode_then_applied(
    layer: Layer, created: PlaybookRun
) -> None:
    logs = layer.emulator.client("logs")
    s3 = layer.emulator.client("s3")

    def retention() -> list[int]:
        groups = logs.describe_log_groups(logGroupNamePrefix=f"/tenantforge/{ENV}/")["logGroups"]
        return [g["retentionInDays"] for g in groups]

    def expiry() -> int:
        rules = s3.get_bucket_lifecycle_configuration(Bucket=f"{NAME}-trail-{ACCOUNT}")["Rules"]
        return int(rules[0]["Expiration"]["Days"])

    changed = {"aws_logs_retention_days": 90, "aws_audit_log_expiration_days": 30}
    checked = layer.run("playbooks/infrastructure.yml", "--check", **changed)
    checked.assert_ok()
    assert checked.changed == 3  # the log groups, the lifecycle rule and the summary file
    assert "Would update: expiration_days, noncurrent_expiration_days" in checked.output
    assert (retention(), expiry()) == ([30, 30], 365)

    applied = layer.run("playbooks/infrastructure.yml", **changed)
    applied.assert_ok()
    assert applied.changed == 3  # the log groups, the lifecycle rule and the summary file
    assert (retention(), expiry()) == ([90, 90], 30)

    restored = layer.run("playbooks/infrastructure.yml")
    restored.assert_ok()
    assert (retention(), expiry()) == ([30, 30], 365)


def test_rotate_replaces_every_generated_value_and_keeps_the_previous_signing_key(
    layer: Layer, secret_values: dict[str, dict[str, Any]]
) -> None:
    client = layer.emulator.client("secretsmanager")
    rotated = layer.run("playbooks/infrastructure.yml", aws_secrets_rotate=True)
    rotated.assert_ok()
    after = {
        name: json.loads(client.get_secret_value(SecretId=name)["SecretString"]) for name in secret_values
    }
    prefix = f"tenantforge/{ENV}/"
    for name, before in secret_values.items():
        for field in ("password", "cookie", "private_key_pem", "kid"):
            if field in before:
                assert after[name][field] != before[field], f"{name} {field} was not rotated"
    kids = [key["kid"] for key in after[prefix + "jwt/jwks"]["keys"]]
    assert kids == [
        after[prefix + "jwt/signing-key"]["kid"],
        secret_values[prefix + "jwt/signing-key"]["kid"],
    ]
    assert not [v for v in after.values() if "password" in v and v["password"] in rotated.output]

    again = layer.run("playbooks/infrastructure.yml")
    again.assert_ok()
    assert again.changed == 0


def test_the_secrets_playbook_writes_the_local_target(layer: Layer, created: PlaybookRun) -> None:
    client = layer.emulator.client("secretsmanager")
    app = json.loads(client.get_secret_value(SecretId=f"tenantforge/{ENV}/postgres/app")["SecretString"])
    admin = json.loads(client.get_secret_value(SecretId=f"tenantforge/{ENV}/rabbitmq/admin")["SecretString"])

    first = layer.run("playbooks/secrets.yml", "-vvv")
    first.assert_ok()
    assert first.changed == 2  # the Secrets and the summary file
    root = layer.state_dir / "secrets" / "tenantforge"
    assert sorted(p.name for p in root.iterdir()) == [
        "jwt-jwks",
        "jwt-signing-key",
        "pgbouncer-auth",
        "postgres-app",
        "postgres-owner",
        "postgres-superuser",
        "rabbitmq-admin",
        "rabbitmq-erlang-cookie",
        "rabbitmq-notifier",
        "rabbitmq-orchestrator",
        "rabbitmq-worker",
    ]
    assert (root / "postgres-app" / "DATABASE_URL").read_text() == (
        f"postgresql://tenantforge_app:{app['password']}@127.0.0.1:6433/tenantforge"
    )
    assert (root / "rabbitmq-admin" / "AMQP_URL").read_text() == (
        f"amqp://tenantforge_admin:{admin['password']}@127.0.0.1:5673/%2F"
    )
    for user in ["orchestrator", "worker", "notifier"]:
        login = json.loads(
            client.get_secret_value(SecretId=f"tenantforge/{ENV}/rabbitmq/{user}")["SecretString"]
        )
        assert (root / f"rabbitmq-{user}" / "AMQP_URL").read_text() == (
            f"amqp://tenantforge_{user}:{login['password']}@127.0.0.1:5673/tenantforge"
        )
    assert json.loads((root / "jwt-jwks" / "jwks.json").read_text())["keys"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in (root / "postgres-app").iterdir()} == {0o600}
    assert stat.S_IMODE((root / "postgres-app").stat().st_mode) == 0o700
    assert app["password"] not in first.output and admin["password"] not in first.output
    summary = json.loads((layer.state_dir / "summary.json").read_text())
    assert "aws_host" in summary, "the AWS layer's sections were kept"
    assert set(summary["platform_secrets"]["secrets"]) == {f"tenantforge/{p.name}" for p in root.iterdir()}

    second = layer.run("playbooks/secrets.yml")
    second.assert_ok()
    assert second.changed == 0


def test_the_kubernetes_target_needs_the_clusters_kubeconfig(layer: Layer, created: PlaybookRun) -> None:
    run = layer.run("playbooks/secrets.yml", platform_secrets_target="kubernetes")
    assert run.returncode != 0
    assert "platform_secrets_kubeconfig" in run.output
    assert "run the cluster tier" in run.output


def test_the_aws_inventory_finds_the_host_by_its_tags(layer: Layer, instance: dict[str, Any]) -> None:
    # The real-AWS inventory, pointed at the emulator only here, through botocore's standard variable.
    env = {
        **ansible_env(layer.state_dir),
        "AWS_ENDPOINT_URL": layer.emulator.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    result = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", "inventories/aws", "--list"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    inventory = json.loads(result.stdout)
    assert inventory["tenantforge_hosts"]["hosts"] == [instance["InstanceId"]]
    assert inventory["env_local"]["hosts"] == [instance["InstanceId"]]
    host = inventory["_meta"]["hostvars"][instance["InstanceId"]]
    unsafe = {
        key: value.get("__ansible_unsafe", value) if isinstance(value, dict) else value
        for key, value in host.items()
    }
    assert unsafe["ansible_host"] == instance["PublicIpAddress"]
    assert unsafe["ansible_aws_ssm_instance_id"] == instance["InstanceId"]


def test_teardown_removes_everything_and_a_second_teardown_changes_nothing(
    layer: Layer, created: PlaybookRun
) -> None:
    assert all(platform_resources(layer.emulator).values())

    checked = layer.run("playbooks/teardown.yml", "--check")
    checked.assert_ok()
    assert checked.changed > 0
    assert all(platform_resources(layer.emulator).values()), "check mode removed something"

    first = layer.run("playbooks/teardown.yml")
    first.assert_ok()
    assert first.changed > 0
    assert_nothing_exists(layer.emulator)
    assert layer.pem.exists(), "the private key is kept unless aws_keypair_remove_local_key is true"

    second = layer.run("playbooks/teardown.yml")
    second.assert_ok()
    assert second.changed == 0
