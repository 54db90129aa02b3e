# -*- coding: utf-8 -*-
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Structural checks of a Fluent Bit YAML configuration (fluent-bit.yaml), for where no Fluent Bit
binary is available to run `fluent-bit --dry-run`.

What Fluent Bit itself refuses at start-up is refused here too, for the plugins this module knows:
an unknown section or plugin, a property the plugin does not declare (Fluent Bit checks every
property against the plugin's config map), a missing required property, a malformed boolean, a
parser that is not defined, an environment variable that is not set. On top of that, the routing is
traced with a sample tag per input (`*` in a tag stands for the file path or unit, `${VAR}` for
any value): every filter and output must receive records from some input, every input's records must
reach an output. With `log_groups`, every cloudwatch_logs output must write to one of those groups
and must not create groups.

The property lists are those of the plugins' config maps in Fluent Bit 4.x (plugins/in_tail/tail.c,
in_systemd/systemd.c, filter_kubernetes/kubernetes.c, filter_rewrite_tag/rewrite_tag.c,
out_cloudwatch_logs/cloudwatch_logs.c, src/flb_input.c, flb_filter.c, flb_output.c). Only plugins
listed in PLUGINS are accepted: for any other one the check could not be honest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from ansible.errors import AnsibleFilterError

# Top-level sections of a YAML configuration. The second set is valid Fluent Bit, but what it refers
# to (other files, shared objects, remote nodes) cannot be checked from the file alone.
SECTIONS = frozenset({"env", "service", "pipeline", "parsers", "multiline_parsers"})
UNCHECKED_SECTIONS = frozenset({"includes", "plugins", "upstream_servers"})
PIPELINE_KINDS = ("inputs", "filters", "outputs")

SERVICE_KEYS = frozenset(
    {
        "flush",
        "grace",
        "daemon",
        "dns.mode",
        "dns.resolver",
        "dns.prefer_ipv4",
        "log_file",
        "log_level",
        "parsers_file",
        "plugins_file",
        "streams_file",
        "http_server",
        "http_listen",
        "http_port",
        "health_check",
        "hc_errors_count",
        "hc_retry_failure_count",
        "hc_period",
        "hot_reload",
        "coro_stack_size",
        "scheduler.cap",
        "scheduler.base",
        "json.convert_nan_to_null",
        "sp.convert_from_str_to_num",
        "storage.path",
        "storage.sync",
        "storage.checksum",
        "storage.metrics",
        "storage.max_chunks_up",
        "storage.backlog.mem_limit",
        "storage.delete_irrecoverable_chunks",
    }
)
SERVICE_BOOLEANS = frozenset(
    {"daemon", "http_server", "health_check", "hot_reload", "storage.checksum", "storage.metrics"}
)
LOG_LEVELS = frozenset({"off", "error", "warn", "warning", "info", "debug", "trace"})

# Properties every instance of a kind accepts (src/flb_input.c, flb_filter.c, flb_output.c).
COMMON_KEYS = {
    "inputs": frozenset(
        {
            "name",
            "tag",
            "alias",
            "log_level",
            "mem_buf_limit",
            "routable",
            "storage.type",
            "storage.pause_on_chunks_overlimit",
            "threaded",
        }
    ),
    "filters": frozenset({"name", "match", "match_regex", "alias", "log_level"}),
    "outputs": frozenset(
        {
            "name",
            "match",
            "match_regex",
            "alias",
            "log_level",
            "retry_limit",
            "workers",
            "storage.total_limit_size",
            "tls",
            "tls.verify",
        }
    ),
}
COMMON_BOOLEANS = frozenset({"routable", "threaded", "tls", "tls.verify"})

# Sizes (flb_utils_size_to_bytes): a number with an optional K, M or G, optionally followed by B.
SIZE_KEYS = frozenset(
    {"mem_buf_limit", "emitter_mem_buf_limit", "buffer_chunk_size", "buffer_max_size", "buffer_size"}
)
SIZE = re.compile(r"^[0-9]+(\.[0-9]+)?\s*([KMGkmg][Bb]?)?$")
# retry_limit: a number of retries, or no limit, or none at all.
RETRY_LIMIT = re.compile(r"^([1-9][0-9]*|no_limits|false|off|no_retries)$", re.IGNORECASE)
BOOLEAN_VALUES = frozenset({"on", "off", "true", "false", "yes", "no"})
TRUE_VALUES = frozenset({"on", "true", "yes"})

# Built-in multiline parsers (src/multiline/flb_ml_parser.c, flb_ml_parser_builtin_create).
BUILTIN_MULTILINE_PARSERS = frozenset({"docker", "cri", "go", "java", "python", "ruby"})
PARSER_FORMATS = frozenset({"json", "regex", "ltsv", "logfmt"})


@dataclass(frozen=True)
class Plugin:
    """What a plugin's config map declares: its properties, the required and the boolean ones, the
    ones that may be given several times, and the ones that name a parser."""

    keys: frozenset[str]
    required: frozenset[str] = frozenset()
    booleans: frozenset[str] = frozenset()
    repeatable: frozenset[str] = frozenset()
    parser_keys: frozenset[str] = frozenset()
    multiline_parser_keys: frozenset[str] = frozenset()
    key_prefixes: tuple[str, ...] = ()


TAIL = Plugin(
    keys=frozenset(
        {
            "path",
            "exclude_path",
            "key",
            "read_from_head",
            "refresh_interval",
            "watcher_interval",
            "progress_check_interval",
            "progress_check_interval_nsec",
            "rotate_wait",
            "docker_mode",
            "docker_mode_flush",
            "docker_mode_parser",
            "path_key",
            "offset_key",
            "ignore_older",
            "buffer_chunk_size",
            "buffer_max_size",
            "skip_long_lines",
            "skip_empty_lines",
            "exit_on_eof",
            "inotify_watcher",
            "parser",
            "tag_regex",
            "db",
            "db.sync",
            "db.locking",
            "db.journal_mode",
            "multiline",
            "multiline_flush",
            "parser_firstline",
            "multiline.parser",
            "unicode.encoding",
        }
    ),
    required=frozenset({"path"}),
    booleans=frozenset(
        {
            "read_from_head",
            "docker_mode",
            "skip_long_lines",
            "skip_empty_lines",
            "exit_on_eof",
            "inotify_watcher",
            "db.locking",
            "multiline",
        }
    ),
    repeatable=frozenset({"multiline.parser"}),
    parser_keys=frozenset({"parser", "parser_firstline", "docker_mode_parser"}),
    multiline_parser_keys=frozenset({"multiline.parser"}),
    # Parser_1, Parser_2...: the old multiline mode's extra parsers.
    key_prefixes=("parser_",),
)
SYSTEMD = Plugin(
    keys=frozenset(
        {
            "path",
            "max_fields",
            "max_entries",
            "systemd_filter_type",
            "systemd_filter",
            "read_from_tail",
            "lowercase",
            "strip_underscores",
            "db",
            "db.sync",
        }
    ),
    booleans=frozenset({"read_from_tail", "lowercase", "strip_underscores"}),
    repeatable=frozenset({"systemd_filter"}),
)
KUBERNETES = Plugin(
    keys=frozenset(
        {
            "buffer_size",
            "tls.debug",
            "tls.verify",
            "tls.vhost",
            "merge_log",
            "merge_parser",
            "merge_log_key",
            "merge_log_trim",
            "keep_log",
            "kube_url",
            "kube_meta_preload_cache_dir",
            "kube_ca_file",
            "kube_ca_path",
            "kube_tag_prefix",
            "kube_token_file",
            "kube_token_command",
            "kube_token_ttl",
            "kube_meta_cache_ttl",
            "labels",
            "annotations",
            "namespace_labels",
            "namespace_annotations",
            "namespace_metadata_only",
            "k8s-logging.parser",
            "k8s-logging.exclude",
            "use_journal",
            "regex_parser",
            "dummy_meta",
            "dns_retries",
            "dns_wait_time",
            "cache_use_docker_id",
            "use_tag_for_meta",
            "use_kubelet",
            "kubelet_host",
            "kubelet_port",
        }
    ),
    booleans=frozenset(
        {
            "tls.verify",
            "merge_log",
            "merge_log_trim",
            "keep_log",
            "labels",
            "annotations",
            "namespace_labels",
            "namespace_annotations",
            "namespace_metadata_only",
            "k8s-logging.parser",
            "k8s-logging.exclude",
            "use_journal",
            "dummy_meta",
            "cache_use_docker_id",
            "use_tag_for_meta",
            "use_kubelet",
        }
    ),
    parser_keys=frozenset({"merge_parser", "regex_parser"}),
)
REWRITE_TAG = Plugin(
    keys=frozenset({"rule", "emitter_name", "emitter_storage.type", "emitter_mem_buf_limit"}),
    required=frozenset({"rule"}),
    repeatable=frozenset({"rule"}),
)
CLOUDWATCH_LOGS = Plugin(
    keys=frozenset(
        {
            "region",
            "log_group_name",
            "log_group_template",
            "log_stream_name",
            "log_stream_prefix",
            "log_stream_template",
            "log_key",
            "log_format",
            "log_retention_days",
            "log_group_class",
            "auto_create_group",
            "auto_retry_requests",
            "extra_user_agent",
            "role_arn",
            "external_id",
            "profile",
            "endpoint",
            "sts_endpoint",
            "metric_namespace",
            "metric_dimensions",
        }
    ),
    required=frozenset({"region", "log_group_name"}),
    booleans=frozenset({"auto_create_group", "auto_retry_requests"}),
)

PLUGINS: dict[str, dict[str, Plugin]] = {
    "inputs": {"tail": TAIL, "systemd": SYSTEMD},
    "filters": {"kubernetes": KUBERNETES, "rewrite_tag": REWRITE_TAG},
    "outputs": {"cloudwatch_logs": CLOUDWATCH_LOGS},
}

ENV_REFERENCE = re.compile(r"\$\{([^}]*)\}")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]$")
# The KEY REGEX NEW_TAG KEEP of a rewrite_tag rule; the regex may be quoted to hold spaces.
RULE = re.compile(r'^\s*(\$\S+)\s+("[^"]*"|\S+)\s+(\S+)\s+(\S+)\s*$')
# What a rewrite_tag NEW_TAG may contain besides literal text: $TAG, $TAG[n], $n, $key['sub']...
TAG_PART = re.compile(r"\$TAG\[(\d+)\]|\$TAG|\$\{[^}]*\}|\$[0-9]+|\$[A-Za-z_][\w-]*(\[[^\]]*\])*")
SAMPLE = "x"
# Rewritten tags re-enter the pipeline; deeper than this is a loop.
MAX_REWRITES = 8


@dataclass
class Section:
    """One pipeline entry: its kind, position, lower-cased properties and display name."""

    kind: str
    index: int
    properties: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.properties.get("name", ""))

    @property
    def label(self) -> str:
        alias = self.properties.get("alias")
        shown = f"{self.name} '{alias}'" if alias else self.name or "(no name)"
        return f"{self.kind[:-1]} {self.index} ({shown})"

    def get(self, key: str, default: str | None = None) -> str | None:
        value = self.properties.get(key)
        if value is None:
            return default
        return scalar(value)

    def values(self, key: str) -> list[str]:
        value = self.properties.get(key)
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        return [scalar(item) for item in items]


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)


def scalar(value: Any) -> str:
    """A YAML value as Fluent Bit reads it: its YAML loader keeps `on`, `off` and numbers as text."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return ""
    return str(value)


def is_true(value: str | None) -> bool:
    return value is not None and value.lower() in TRUE_VALUES


def wildcard_match(pattern: str, tag: str) -> bool:
    """Fluent Bit's Match: `*` stands for any run of characters, everything else is literal."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, tag, re.DOTALL) is not None


def section_matches(section: Section, tag: str) -> bool:
    # flb_router_match: Match_Regex (onig_match, anchored at the start) takes precedence.
    match_regex = section.get("match_regex")
    if match_regex is not None:
        try:
            return re.match(match_regex, tag) is not None
        except re.error:
            return False
    match = section.get("match")
    return match is not None and wildcard_match(match, tag)


def fluent_bit_problems(
    config: str | Mapping[str, Any],
    log_groups: Sequence[str] | None = None,
    environment: Iterable[str] = (),
    http_port: int | None = None,
) -> list[str]:
    """Everything wrong with a Fluent Bit YAML configuration; an empty list when nothing is.

    log_groups: the only CloudWatch log groups an output may write to (and no output may create one).
    environment: names of the environment variables the process gets, besides the `env` section.
    http_port: the port the probes use; the HTTP server and its health check must be on, on it.
    """
    report = Report()
    document = load(config, report)
    if document is None:
        return report.problems
    for top in document:
        if top in UNCHECKED_SECTIONS:
            report.add(
                f"section '{top}' is not checked here (it refers to other files or hosts); leave it out"
            )
        elif top not in SECTIONS:
            report.add(
                f"unknown section '{top}' (Fluent Bit knows {', '.join(sorted(SECTIONS | UNCHECKED_SECTIONS))})"
            )
    env_section = document.get("env") or {}
    if not isinstance(env_section, Mapping):
        report.add("env must be a mapping of variable names to values")
        env_section = {}
    known_variables = set(environment) | {str(name) for name in env_section}
    check_variables(document, known_variables, report)
    check_service(document.get("service"), http_port, report)
    parsers = defined_parsers(document.get("parsers"), "parsers", report)
    multiline_parsers = defined_parsers(document.get("multiline_parsers"), "multiline_parsers", report)
    sections = pipeline_sections(document.get("pipeline"), report)
    for section in sections:
        check_section(section, parsers, multiline_parsers | BUILTIN_MULTILINE_PARSERS, report)
    check_names(sections, report)
    check_routes(sections, report)
    for section in sections:
        if section.kind == "outputs" and section.name == "cloudwatch_logs":
            check_cloudwatch(section, log_groups, report)
    return report.problems


def load(config: str | Mapping[str, Any], report: Report) -> Mapping[str, Any] | None:
    if isinstance(config, Mapping):
        return config
    try:
        document = yaml.safe_load(config)
    except yaml.YAMLError as exc:
        report.add(f"not YAML: {exc}")
        return None
    if not isinstance(document, Mapping):
        report.add("the configuration must be a YAML mapping of sections")
        return None
    return document


def strings_in(value: Any) -> Iterable[str]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)
    elif isinstance(value, str):
        yield value


def check_variables(document: Mapping[str, Any], known: set[str], report: Report) -> None:
    for text in strings_in({key: value for key, value in document.items() if key != "env"}):
        for name in ENV_REFERENCE.findall(text):
            if name not in known:
                report.add(f"'${{{name}}}' is neither in the env section nor set in the environment")


def check_boolean(where: str, key: str, value: Any, report: Report) -> None:
    if scalar(value).lower() not in BOOLEAN_VALUES:
        report.add(f"{where}: {key} must be on/off (or true/false, yes/no); got '{scalar(value)}'")


def check_service(service: Any, http_port: int | None, report: Report) -> None:
    if service is None:
        service = {}
    if not isinstance(service, Mapping):
        report.add("service must be a mapping")
        return
    settings = {str(key).lower(): value for key, value in service.items()}
    for key, value in settings.items():
        if key not in SERVICE_KEYS:
            report.add(f"service: unknown key '{key}'")
        elif key in SERVICE_BOOLEANS:
            check_boolean("service", key, value, report)
    level = settings.get("log_level")
    if level is not None and scalar(level).lower() not in LOG_LEVELS:
        report.add(
            f"service: log_level must be one of {', '.join(sorted(LOG_LEVELS))}; got '{scalar(level)}'"
        )
    if http_port is not None:
        if not is_true(scalar(settings["http_server"]) if "http_server" in settings else None):
            report.add("service: http_server must be on: the probes call its health endpoint")
        if not is_true(scalar(settings["health_check"]) if "health_check" in settings else None):
            report.add("service: health_check must be on: without it /api/v1/health is not served")
        port = scalar(settings.get("http_port", 2020))
        if port != str(http_port):
            report.add(f"service: http_port is {port}, the probes use {http_port}")


def defined_parsers(entries: Any, section: str, report: Report) -> set[str]:
    if entries is None:
        return set()
    if not isinstance(entries, list):
        report.add(f"{section} must be a list of parser definitions")
        return set()
    names = set()
    for position, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not entry.get("name"):
            report.add(f"{section} {position}: a parser needs a name")
            continue
        properties = {str(key).lower(): scalar(value) for key, value in entry.items()}
        names.add(properties["name"])
        if section == "parsers":
            parser_format = properties.get("format", "")
            if parser_format not in PARSER_FORMATS:
                report.add(
                    f"parsers {position} ({properties['name']}): format must be one of "
                    f"{', '.join(sorted(PARSER_FORMATS))}; got '{parser_format}'"
                )
            if parser_format == "regex" and not properties.get("regex"):
                report.add(f"parsers {position} ({properties['name']}): a regex parser needs a regex")
        elif not properties.get("type"):
            report.add(
                f"multiline_parsers {position} ({properties['name']}): a multiline parser needs a type"
            )
    return names


def pipeline_sections(pipeline: Any, report: Report) -> list[Section]:
    if not isinstance(pipeline, Mapping):
        report.add("pipeline must be a mapping with inputs, filters and outputs")
        return []
    sections = []
    for kind in pipeline:
        if kind not in PIPELINE_KINDS:
            report.add(f"pipeline: unknown subsection '{kind}' (expected {', '.join(PIPELINE_KINDS)})")
    for kind in PIPELINE_KINDS:
        entries = pipeline.get(kind) or []
        if not isinstance(entries, list):
            report.add(f"pipeline {kind} must be a list")
            continue
        for index, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                report.add(f"{kind[:-1]} {index}: must be a mapping of properties")
                continue
            properties = {str(key).lower(): value for key, value in entry.items()}
            sections.append(Section(kind, index, properties))
    for kind in ("inputs", "outputs"):
        if not any(section.kind == kind for section in sections):
            report.add(f"pipeline has no {kind}")
    return sections


def check_section(section: Section, parsers: set[str], multiline_parsers: set[str], report: Report) -> None:
    plugin = PLUGINS[section.kind].get(section.name)
    if plugin is None:
        known = ", ".join(sorted(PLUGINS[section.kind]))
        report.add(
            f"{section.label}: unknown {section.kind[:-1]} plugin '{section.name}' (this check knows {known})"
        )
        return
    allowed = COMMON_KEYS[section.kind] | plugin.keys
    for key, value in section.properties.items():
        if key not in allowed and not key.startswith(plugin.key_prefixes):
            report.add(f"{section.label}: unknown property '{key}'")
            continue
        if isinstance(value, (list, Mapping)) and (
            key not in plugin.repeatable or isinstance(value, Mapping)
        ):
            report.add(f"{section.label}: {key} must be a single value")
            continue
        if key in plugin.booleans or key in COMMON_BOOLEANS:
            for item in section.values(key):
                check_boolean(section.label, key, item, report)
        elif key in SIZE_KEYS and not SIZE.match(scalar(value)):
            report.add(f"{section.label}: {key} must be a size such as 32MB; got '{scalar(value)}'")
        elif key == "retry_limit" and not RETRY_LIMIT.match(scalar(value)):
            report.add(
                f"{section.label}: retry_limit must be a number of retries, no_limits or no_retries; "
                f"got '{scalar(value)}'"
            )
    for key in sorted(plugin.required):
        if not section.get(key) and not section.values(key):
            report.add(f"{section.label}: '{key}' is required")
    if section.kind != "inputs" and section.get("match") is None and section.get("match_regex") is None:
        report.add(f"{section.label}: 'match' (or 'match_regex') is required")
    if section.get("match_regex") is not None:
        try:
            re.compile(section.get("match_regex") or "")
        except re.error as exc:
            report.add(f"{section.label}: match_regex does not compile: {exc}")
    level = section.get("log_level")
    if level is not None and level.lower() not in LOG_LEVELS:
        report.add(
            f"{section.label}: log_level must be one of {', '.join(sorted(LOG_LEVELS))}; got '{level}'"
        )
    for key in sorted(
        plugin.parser_keys | {k for k in section.properties if k.startswith(plugin.key_prefixes)}
    ):
        for name in section.values(key):
            if name and name not in parsers:
                report.add(f"{section.label}: {key} '{name}' is not defined in the parsers section")
    for key in sorted(plugin.multiline_parser_keys):
        for value in section.values(key):
            for name in (part.strip() for part in value.split(",")):
                if name not in multiline_parsers:
                    report.add(
                        f"{section.label}: {key} '{name}' is neither built in "
                        f"({', '.join(sorted(BUILTIN_MULTILINE_PARSERS))}) nor in multiline_parsers"
                    )
    if section.name == "rewrite_tag":
        for rule in section.values("rule"):
            if parse_rule(rule) is None:
                report.add(
                    f"{section.label}: rule '{rule}' is not 'KEY REGEX NEW_TAG KEEP' with a valid regex and KEEP true/false"
                )


def check_names(sections: list[Section], report: Report) -> None:
    """Aliases name an input, filter or output in logs and metrics, and the emitter a rewrite_tag
    filter creates is an input: Fluent Bit refuses an emitter name an input already has."""
    seen: dict[str, set[str]] = {kind: set() for kind in PIPELINE_KINDS}
    for section in sections:
        names = [(section.kind, section.get("alias"))]
        if section.name == "rewrite_tag":
            emitter = section.get("emitter_name") or f"emitter_for_{section.name}.{section.index}"
            names.append(("inputs", emitter))
        for kind, name in names:
            if name is None:
                continue
            if name in seen[kind]:
                report.add(f"{section.label}: the {kind[:-1]} name '{name}' is used twice")
            seen[kind].add(name)


@dataclass(frozen=True)
class Rule:
    regex: str
    new_tag: str
    keep: bool


def parse_rule(rule: str) -> Rule | None:
    match = RULE.match(rule)
    if not match:
        return None
    regex, new_tag, keep = match.group(2, 3, 4)
    regex = regex[1:-1] if regex.startswith('"') else regex
    if keep.lower() not in {"true", "false"}:
        return None
    try:
        re.compile(regex)
    except re.error:
        return None
    return Rule(regex, new_tag, keep.lower() == "true")


def sample_tags(section: Section) -> list[str]:
    """A tag each input's records carry, as Fluent Bit composes it."""
    tag = section.get("tag") or f"{section.name}.{section.index}"
    tag = ENV_REFERENCE.sub(SAMPLE, tag)
    if "*" not in tag:
        return [tag]
    if section.name == "tail":
        # The `*` is replaced with the file's path, `/` turned into `.`.
        paths = [path.strip() for value in section.values("path") for path in value.split(",")]
        return [
            tag.replace("*", path.lstrip("/").replace("/", ".").replace("*", SAMPLE))
            for path in paths
            if path
        ]
    if section.name == "systemd":
        units = [
            value.split("=", 1)[1]
            for value in section.values("systemd_filter")
            if value.startswith("_SYSTEMD_UNIT=")
        ]
        return [tag.replace("*", unit) for unit in units or [f"{SAMPLE}.service"]]
    return [tag.replace("*", SAMPLE)]


def rewritten(new_tag: str, tag: str) -> str:
    parts = tag.split(".")

    def part(match: re.Match[str]) -> str:
        if match.group(0) == "$TAG":
            return tag
        if match.group(1) is not None:
            index = int(match.group(1))
            return parts[index] if index < len(parts) else SAMPLE
        return SAMPLE

    return TAG_PART.sub(part, new_tag)


def check_routes(sections: list[Section], report: Report) -> None:
    inputs = [section for section in sections if section.kind == "inputs"]
    filters = [section for section in sections if section.kind == "filters"]
    outputs = [section for section in sections if section.kind == "outputs"]
    used: set[int] = set()
    for source in inputs:
        delivered = False
        pending = [(tag, 0) for tag in sample_tags(source)]
        seen: set[str] = set()
        while pending:
            tag, depth = pending.pop()
            if tag in seen:
                continue
            seen.add(tag)
            for step in filters:
                if not section_matches(step, tag):
                    continue
                used.add(id(step))
                check_kubernetes_prefix(step, tag, report)
                if step.name != "rewrite_tag":
                    continue
                for rule in filter(None, (parse_rule(text) for text in step.values("rule"))):
                    if depth >= MAX_REWRITES:
                        report.add(f"{step.label}: rewritten tags keep matching it again (a loop)")
                        continue
                    pending.append((rewritten(rule.new_tag, tag), depth + 1))
            receivers = [output for output in outputs if section_matches(output, tag)]
            used.update(id(output) for output in receivers)
            delivered = delivered or bool(receivers)
        if not delivered:
            report.add(
                f"{source.label}: its records (tag '{source.get('tag') or source.name}') reach no output"
            )
    for section in filters + outputs:
        if id(section) not in used:
            shown = section.get("match_regex") or section.get("match")
            report.add(f"{section.label}: match '{shown}' matches the records of no input")


def check_kubernetes_prefix(section: Section, tag: str, report: Report) -> None:
    """The kubernetes filter reads pod, namespace and container from the tag after kube_tag_prefix."""
    if section.name != "kubernetes" or is_true(section.get("use_journal")):
        return
    prefix = section.get("kube_tag_prefix", "kube.var.log.containers.") or ""
    if not tag.startswith(prefix):
        report.add(
            f"{section.label}: tag '{tag}' does not start with kube_tag_prefix '{prefix}': no pod metadata"
        )


def check_cloudwatch(section: Section, log_groups: Sequence[str] | None, report: Report) -> None:
    region = section.get("region")
    if region and not REGION.match(region):
        report.add(f"{section.label}: region '{region}' is not an AWS region name")
    if bool(section.get("log_stream_name")) == bool(section.get("log_stream_prefix")):
        report.add(f"{section.label}: exactly one of log_stream_name and log_stream_prefix is required")
    for key in ("tls", "tls.verify"):
        value = section.get(key)
        if value is not None and not is_true(value):
            report.add(f"{section.label}: {key} must stay on: logs go to AWS over the internet")
    if log_groups is None:
        return
    group = section.get("log_group_name")
    if group and group not in log_groups:
        report.add(
            f"{section.label}: log group '{group}' is not one the AWS layer creates ({', '.join(log_groups) or 'none'})"
        )
    if section.get("log_group_template") is not None:
        report.add(f"{section.label}: log_group_template may name groups the AWS layer does not create")
    if is_true(section.get("auto_create_group")):
        report.add(f"{section.label}: auto_create_group must be off: the AWS layer creates the log groups")


class FilterModule:
    def filters(self):
        return {"fluent_bit_problems": checked_problems}


def checked_problems(config: Any, *args: Any, **kwargs: Any) -> list[str]:
    if not isinstance(config, (str, Mapping)):
        raise AnsibleFilterError(
            f"fluent_bit_problems: expected the configuration text, got {type(config).__name__}"
        )
    return fluent_bit_problems(config, *args, **kwargs)
