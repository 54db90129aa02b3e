"""The Fluent Bit configuration check: what it accepts, and each kind of broken configuration it refuses."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.tenantforge.platform.plugins.filter.fluent_bit import (
    FilterModule,
    fluent_bit_problems,
    wildcard_match,
)

GROUPS = ["/tenantforge/dev/cluster", "/tenantforge/dev/platform"]
ENVIRONMENT = ["NODE_NAME"]


def output(alias: str, match: str, group: str) -> dict[str, Any]:
    return {
        "name": "cloudwatch_logs",
        "alias": alias,
        "match": match,
        "region": "eu-west-1",
        "log_group_name": group,
        "log_stream_prefix": "dev.",
        "auto_create_group": "off",
    }


# The shape of the role's configuration: containers and journal in, metadata and platform re-tagging,
# three CloudWatch outputs.
VALID: dict[str, Any] = {
    "service": {"flush": "5", "http_server": "on", "http_port": "2020", "health_check": "on"},
    "pipeline": {
        "inputs": [
            {
                "name": "tail",
                "alias": "containers",
                "tag": "kube.*",
                "path": "/var/log/containers/*.log",
                "multiline.parser": "cri",
                "db": "/var/lib/fluent-bit/containers.db",
            },
            {
                "name": "systemd",
                "alias": "k3s-journal",
                "tag": "k3s.${NODE_NAME}",
                "systemd_filter": "_SYSTEMD_UNIT=k3s.service",
                "read_from_tail": "on",
            },
        ],
        "filters": [
            {
                "name": "kubernetes",
                "match": "kube.*",
                "kube_tag_prefix": "kube.var.log.containers.",
                "merge_log": "on",
            },
            {
                "name": "rewrite_tag",
                "match": "kube.*",
                "rule": "$kubernetes['namespace_name'] ^(tenantforge)$ platform.$TAG false",
                "emitter_name": "platform-emitter",
            },
        ],
        "outputs": [
            output("platform", "platform.*", GROUPS[1]),
            output("cluster", "kube.*", GROUPS[0]),
            output("journal", "k3s.*", GROUPS[0]),
        ],
    },
}


def problems(config: Any, **kwargs: Any) -> list[str]:
    options = {"log_groups": GROUPS, "environment": ENVIRONMENT, "http_port": 2020, **kwargs}
    return fluent_bit_problems(config, **options)


def changed(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """VALID with the item at path set to value (or removed, for value None)."""
    config = copy.deepcopy(VALID)
    target: Any = config
    for step in path[:-1]:
        target = target[step]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return config


def test_the_role_shaped_configuration_passes() -> None:
    assert problems(VALID) == []


def test_yaml_text_is_read_as_fluent_bit_reads_it() -> None:
    text = """
service:
  http_server: on
  health_check: on
pipeline:
  inputs:
    - name: tail
      tag: kube.*
      path: /var/log/containers/*.log
      multiline.parser: docker, cri
  outputs:
    - name: cloudwatch_logs
      match: kube.*
      region: eu-west-1
      log_group_name: /tenantforge/dev/cluster
      log_stream_prefix: dev.
      auto_create_group: on
"""
    # `on` is a YAML 1.1 boolean to PyYAML but the text "on" to Fluent Bit: both mean on here.
    assert problems(text) == [
        "output 0 (cloudwatch_logs): auto_create_group must be off: the AWS layer creates the log groups"
    ]


def test_an_unknown_plugin_is_refused() -> None:
    config = changed(("pipeline", "outputs", 2, "name"), "cloudwatch")
    assert (
        "output 2 (cloudwatch 'journal'): unknown output plugin 'cloudwatch' (this check knows cloudwatch_logs)"
        in problems(config)
    )


def test_an_unknown_property_is_refused() -> None:
    config = changed(("pipeline", "outputs", 0, "auto_create_groups"), "off")
    assert problems(config) == [
        "output 0 (cloudwatch_logs 'platform'): unknown property 'auto_create_groups'"
    ]


def test_an_unknown_section_is_refused() -> None:
    config = {**VALID, "includes": ["more.yaml"], "sevice": {}}
    assert problems(config) == [
        "section 'includes' is not checked here (it refers to other files or hosts); leave it out",
        "unknown section 'sevice' (Fluent Bit knows env, includes, multiline_parsers, parsers, pipeline, plugins, "
        "service, upstream_servers)",
    ]


def test_a_match_that_matches_no_input_is_refused() -> None:
    config = changed(("pipeline", "outputs", 2, "match"), "journal.*")
    assert problems(config) == [
        "input 1 (systemd 'k3s-journal'): its records (tag 'k3s.${NODE_NAME}') reach no output",
        "output 2 (cloudwatch_logs 'journal'): match 'journal.*' matches the records of no input",
    ]


def test_a_filter_that_matches_no_input_is_refused() -> None:
    config = changed(("pipeline", "filters", 0, "match"), "kubernetes.*")
    assert problems(config) == ["filter 0 (kubernetes): match 'kubernetes.*' matches the records of no input"]


def test_outputs_reached_only_through_rewrite_tag_need_the_rule() -> None:
    config = copy.deepcopy(VALID)
    del config["pipeline"]["filters"][1]
    assert problems(config) == [
        "output 0 (cloudwatch_logs 'platform'): match 'platform.*' matches the records of no input"
    ]


def test_a_log_group_the_aws_layer_does_not_create_is_refused() -> None:
    config = changed(("pipeline", "outputs", 2, "log_group_name"), "/tenantforge/dev/k3s")
    assert problems(config) == [
        "output 2 (cloudwatch_logs 'journal'): log group '/tenantforge/dev/k3s' is not one the AWS layer creates "
        "(/tenantforge/dev/cluster, /tenantforge/dev/platform)"
    ]


def test_a_missing_log_group_is_refused() -> None:
    config = changed(("pipeline", "outputs", 1, "log_group_name"), None)
    assert problems(config) == ["output 1 (cloudwatch_logs 'cluster'): 'log_group_name' is required"]


def test_groups_from_templates_or_created_by_fluent_bit_are_refused() -> None:
    config = changed(("pipeline", "outputs", 1, "log_group_template"), "$kubernetes['namespace_name']")
    config["pipeline"]["outputs"][1]["auto_create_group"] = "true"
    assert problems(config) == [
        "output 1 (cloudwatch_logs 'cluster'): log_group_template may name groups the AWS layer does not create",
        "output 1 (cloudwatch_logs 'cluster'): auto_create_group must be off: the AWS layer creates the log groups",
    ]


def test_without_log_groups_any_group_passes() -> None:
    config = changed(("pipeline", "outputs", 2, "log_group_name"), "/elsewhere")
    assert problems(config, log_groups=None) == []


def test_cloudwatch_stream_region_and_tls_are_checked() -> None:
    config = changed(("pipeline", "outputs", 0, "log_stream_name"), "one-stream")
    config["pipeline"]["outputs"][0]["region"] = "Europe"
    config["pipeline"]["outputs"][0]["tls"] = "off"
    config["pipeline"]["outputs"][1]["log_stream_prefix"] = ""
    config["pipeline"]["outputs"][2]["auto_create_group"] = "maybe"
    assert problems(config) == [
        "output 2 (cloudwatch_logs 'journal'): auto_create_group must be on/off (or true/false, yes/no); got 'maybe'",
        "output 0 (cloudwatch_logs 'platform'): region 'Europe' is not an AWS region name",
        "output 0 (cloudwatch_logs 'platform'): exactly one of log_stream_name and log_stream_prefix is required",
        "output 0 (cloudwatch_logs 'platform'): tls must stay on: logs go to AWS over the internet",
        "output 1 (cloudwatch_logs 'cluster'): exactly one of log_stream_name and log_stream_prefix is required",
    ]


def test_sizes_and_retry_limits_are_checked() -> None:
    config = changed(("pipeline", "inputs", 0, "mem_buf_limit"), "32 megabytes")
    config["pipeline"]["outputs"][0]["retry_limit"] = "forever"
    config["pipeline"]["outputs"][1]["retry_limit"] = "no_limits"
    config["pipeline"]["outputs"][2]["retry_limit"] = 5
    assert problems(config) == [
        "input 0 (tail 'containers'): mem_buf_limit must be a size such as 32MB; got '32 megabytes'",
        "output 0 (cloudwatch_logs 'platform'): retry_limit must be a number of retries, no_limits or "
        "no_retries; got 'forever'",
    ]


def test_parsers_must_exist() -> None:
    config = changed(("pipeline", "inputs", 0, "multiline.parser"), "docker, crio")
    config["pipeline"]["inputs"][0]["parser"] = "json"
    # Parser_1, Parser_2...: declared by tail as a prefix.
    config["pipeline"]["inputs"][0]["parser_1"] = "json"
    config["pipeline"]["filters"][0]["merge_parser"] = "app"
    assert problems(config) == [
        "input 0 (tail 'containers'): parser 'json' is not defined in the parsers section",
        "input 0 (tail 'containers'): parser_1 'json' is not defined in the parsers section",
        "input 0 (tail 'containers'): multiline.parser 'crio' is neither built in (cri, docker, go, java, python, "
        "ruby) nor in multiline_parsers",
        "filter 0 (kubernetes): merge_parser 'app' is not defined in the parsers section",
    ]
    config["parsers"] = [
        {"name": "json", "format": "json"},
        {"name": "app", "format": "regex", "regex": "^(?<m>.*)$"},
    ]
    config["multiline_parsers"] = [{"name": "crio", "type": "regex", "rules": []}]
    assert problems(config) == []


def test_parser_definitions_are_checked() -> None:
    config = {
        **VALID,
        "parsers": [{"name": "a", "format": "xml"}, {"name": "b", "format": "regex"}, {"format": "json"}],
    }
    assert problems(config) == [
        "parsers 0 (a): format must be one of json, logfmt, ltsv, regex; got 'xml'",
        "parsers 1 (b): a regex parser needs a regex",
        "parsers 2: a parser needs a name",
    ]


def test_environment_variables_must_be_set() -> None:
    assert problems(VALID, environment=[]) == [
        "'${NODE_NAME}' is neither in the env section nor set in the environment"
    ]
    assert problems({**VALID, "env": {"NODE_NAME": "node-1"}}, environment=[]) == []


def test_the_probes_need_the_health_endpoint_on_their_port() -> None:
    config = changed(("service", "health_check"), "off")
    config["service"]["http_port"] = "2021"
    assert problems(config) == [
        "service: health_check must be on: without it /api/v1/health is not served",
        "service: http_port is 2021, the probes use 2020",
    ]
    assert problems(changed(("service",), None)) == [
        "service: http_server must be on: the probes call its health endpoint",
        "service: health_check must be on: without it /api/v1/health is not served",
    ]
    assert problems(changed(("service", "http_srever"), "on")) == ["service: unknown key 'http_srever'"]


def test_required_properties_and_match() -> None:
    config = changed(("pipeline", "inputs", 0, "path"), None)
    config["pipeline"]["filters"][0].pop("match")
    found = problems(config)
    assert "input 0 (tail 'containers'): 'path' is required" in found
    assert "filter 0 (kubernetes): 'match' (or 'match_regex') is required" in found


def test_a_bad_rewrite_rule_is_refused() -> None:
    config = changed(
        ("pipeline", "filters", 1, "rule"), "$kubernetes['namespace_name'] ^(tenantforge)$ platform.$TAG"
    )
    assert problems(config) == [
        "filter 1 (rewrite_tag): rule '$kubernetes['namespace_name'] ^(tenantforge)$ platform.$TAG' is not "
        "'KEY REGEX NEW_TAG KEEP' with a valid regex and KEEP true/false",
        "output 0 (cloudwatch_logs 'platform'): match 'platform.*' matches the records of no input",
    ]


def test_a_rewrite_loop_is_refused() -> None:
    config = changed(("pipeline", "filters", 1, "match"), "*")
    config["pipeline"]["filters"][1]["rule"] = "$log .* again.$TAG false"
    assert "filter 1 (rewrite_tag): rewritten tags keep matching it again (a loop)" in problems(config)


def test_the_kubernetes_filter_needs_its_tag_prefix() -> None:
    config = changed(("pipeline", "filters", 0, "kube_tag_prefix"), "kube.var.log.pods.")
    assert problems(config) == [
        "filter 0 (kubernetes): tag 'kube.var.log.containers.x.log' does not start with kube_tag_prefix "
        "'kube.var.log.pods.': no pod metadata"
    ]


def test_names_must_be_unique() -> None:
    config = changed(("pipeline", "outputs", 1, "alias"), "platform")
    config["pipeline"]["filters"][1]["emitter_name"] = "containers"
    assert problems(config) == [
        "filter 1 (rewrite_tag): the input name 'containers' is used twice",
        "output 1 (cloudwatch_logs 'platform'): the output name 'platform' is used twice",
    ]


def test_match_regex_is_anchored_at_the_start_like_fluent_bit() -> None:
    config = changed(("pipeline", "outputs", 2, "match_regex"), "k3s\\.")
    del config["pipeline"]["outputs"][2]["match"]
    assert problems(config) == []
    config["pipeline"]["outputs"][2]["match_regex"] = "node"
    assert "output 2 (cloudwatch_logs 'journal'): match 'node' matches the records of no input" in problems(
        config
    )


def test_not_a_configuration() -> None:
    assert problems("service: [")[0].startswith("not YAML: ")
    assert problems("- a list") == ["the configuration must be a YAML mapping of sections"]
    assert problems({"service": {"http_server": "on", "health_check": "on"}}) == [
        "pipeline must be a mapping with inputs, filters and outputs"
    ]


@pytest.mark.parametrize(
    ("pattern", "tag", "expected"),
    [
        ("kube.*", "kube.var.log.containers.a_b_c-1.log", True),
        ("kube.*", "platform.kube.var.log.containers.a.log", False),
        ("*", "anything", True),
        ("k3s.*", "k3s.node-1", True),
        ("k3s.*", "k3s", False),
        ("a*c", "abbbc", True),
        ("a.c", "abc", False),
    ],
)
def test_wildcards_follow_fluent_bit(pattern: str, tag: str, expected: bool) -> None:
    assert wildcard_match(pattern, tag) is expected


def test_the_filter_refuses_what_is_not_a_configuration() -> None:
    check = FilterModule().filters()["fluent_bit_problems"]
    assert check(VALID, log_groups=GROUPS, environment=ENVIRONMENT) == []
    with pytest.raises(AnsibleFilterError, match="expected the configuration text, got int"):
        check(42)
