"""Cloud-assembly reader, `cdk diff` summary, and the cdk.context.json entry of a partition."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

STACK_ARTIFACT = "aws:cloudformation:stack"
ENVIRONMENT = re.compile(r"^aws://(?P<account>[^/]+)/(?P<region>[^/]+)$")
ACTIONS = ("add", "modify", "replace", "destroy", "import")


class CdkError(Exception):
    """A cloud assembly or context file that cannot be read; one line naming the file."""


@dataclass(frozen=True)
class Message:
    """An annotation the app attached to a construct (`cdk synth` prints it; the manifest keeps it)."""

    level: str  # warning | error | info
    path: str  # construct path, e.g. /Alpha001-prod-Email
    text: str


@dataclass(frozen=True)
class StackArtifact:
    artifact_id: str
    stack_name: str
    account: str
    region: str
    template_path: Path
    template: dict[str, Any]


@dataclass(frozen=True)
class Assembly:
    """What one synth produced: its stacks, context it could not resolve, and its annotations."""

    directory: Path
    version: str
    stacks: tuple[StackArtifact, ...]
    missing_context: tuple[str, ...]
    messages: tuple[Message, ...]

    def stack(self, name: str) -> StackArtifact | None:
        return next((s for s in self.stacks if s.stack_name == name), None)


def read_assembly(directory: Path) -> Assembly:
    """Read `directory/manifest.json` and the template of every CloudFormation stack artifact in it."""
    manifest_path = directory / "manifest.json"
    manifest = _json_object(manifest_path, "cloud assembly manifest", hint="run the synth again")
    artifacts = manifest.get("artifacts", {})
    if not isinstance(artifacts, dict):
        raise CdkError(f"{manifest_path}: 'artifacts' must be an object, got {type(artifacts).__name__}")
    stacks: list[StackArtifact] = []
    messages: list[Message] = []
    for artifact_id, artifact in artifacts.items():
        if not isinstance(artifact, dict):
            raise CdkError(f"{manifest_path}: artifacts.{artifact_id} must be an object")
        if artifact.get("type") != STACK_ARTIFACT:
            continue
        stacks.append(_stack(directory, manifest_path, artifact_id, artifact))
        messages.extend(_messages(artifact.get("metadata")))
        extra = artifact.get("additionalMetadataFile")
        if isinstance(extra, str):
            messages.extend(_messages(_json_object(directory / extra, "stack metadata", hint="run the synth again")))
    missing = manifest.get("missing")
    entries = missing if isinstance(missing, list) else []
    keys = tuple(str(item.get("key")) for item in entries if isinstance(item, dict))
    return Assembly(directory, str(manifest.get("version", "")), tuple(stacks), keys, tuple(messages))


def _stack(directory: Path, manifest_path: Path, artifact_id: str, artifact: dict[str, Any]) -> StackArtifact:
    properties = artifact.get("properties") or {}
    template_file = properties.get("templateFile") if isinstance(properties, dict) else None
    if not isinstance(template_file, str) or not template_file:
        raise CdkError(f"{manifest_path}: artifacts.{artifact_id}.properties.templateFile is missing")
    environment = str(artifact.get("environment", ""))
    match = ENVIRONMENT.match(environment)
    if match is None:
        raise CdkError(
            f"{manifest_path}: artifacts.{artifact_id}.environment must look like aws://ACCOUNT/REGION, "
            f"got {environment!r}"
        )
    template_path = directory / template_file
    template = _json_object(template_path, f"template of stack {artifact_id}", hint="run the synth again")
    return StackArtifact(
        artifact_id=artifact_id,
        stack_name=str(properties.get("stackName") or artifact_id),
        account=match["account"],
        region=match["region"],
        template_path=template_path,
        template=template,
    )


def _messages(metadata: Any) -> list[Message]:
    """Warnings, errors and infos from a metadata map `{construct path: [{type, data}, ...]}`."""
    if not isinstance(metadata, dict):
        return []
    found = []
    for path, entries in metadata.items():
        for entry in entries if isinstance(entries, list) else []:
            kind = entry.get("type", "") if isinstance(entry, dict) else ""
            if kind in ("aws:cdk:warning", "aws:cdk:error", "aws:cdk:info"):
                found.append(Message(kind.rsplit(":", 1)[1], str(path), str(entry.get("data", ""))))
    return found


def _json_object(path: Path, what: str, *, hint: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CdkError(f"{path}: {what} not found; {hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CdkError(f"{path}: cannot read the {what}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CdkError(f"{path}:{exc.lineno}: {what} is not valid JSON ({exc.msg}); {hint}") from None
    if not isinstance(data, dict):
        raise CdkError(f"{path}: {what} must be a JSON object, got {type(data).__name__}; {hint}")
    return data


def _resources(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    resources = template.get("Resources") or {}
    return {k: v for k, v in resources.items() if isinstance(v, dict)} if isinstance(resources, dict) else {}


def resource_counts(template: dict[str, Any]) -> dict[str, int]:
    """How many resources of each type the template declares, sorted by type."""
    counts = Counter(str(r.get("Type")) for r in _resources(template).values())
    return dict(sorted(counts.items()))


def roles_with_name(template: dict[str, Any]) -> list[str]:
    """Logical ids of AWS::IAM::Role resources that hard-code a RoleName (they collide across partitions)."""
    return [
        logical_id
        for logical_id, resource in _resources(template).items()
        if resource.get("Type") == "AWS::IAM::Role" and "RoleName" in (resource.get("Properties") or {})
    ]


def exported_names(template: dict[str, Any]) -> dict[str, str]:
    """Export name → output logical id. Names must be literal (or Fn::Join/Fn::Sub of literal parts)."""
    outputs = template.get("Outputs") or {}
    names: dict[str, str] = {}
    for logical_id, output in outputs.items() if isinstance(outputs, dict) else ():
        export = output.get("Export") if isinstance(output, dict) else None
        if not isinstance(export, dict) or "Name" not in export:
            continue
        name = _literal(export["Name"])
        if name is None:
            raise CdkError(
                f"Outputs.{logical_id}.Export.Name is computed at deploy time ({json.dumps(export['Name'])[:120]}); "
                "give the export a literal name"
            )
        names[name] = logical_id
    return names


def _literal(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, args),) = value.items()
        if function == "Fn::Join" and isinstance(args, list) and len(args) == 2 and isinstance(args[1], list):
            parts = [_literal(part) for part in args[1]]
            if isinstance(args[0], str) and all(p is not None for p in parts):
                return args[0].join(p for p in parts if p is not None)
        if function == "Fn::Sub" and isinstance(args, str) and "${" not in args.replace("${!", ""):
            return args.replace("${!", "${")
    return None


@dataclass(frozen=True)
class ContextEntry:
    """`partitionMail:<I>:<P>` of cdk.context.json, as the deploy's pre-deploy step wrote it."""

    key: str
    selector: str
    public_key: str
    return_path_target: str | None  # None when the entry has none (the app then uses pm.mtasv.net)


def read_context_entry(context_file: Path, key: str) -> ContextEntry | None:
    """The entry under `key`, or None when the file or the key does not exist yet (before the first deploy)."""
    if not context_file.exists():
        return None
    data = _json_object(context_file, "CDK context file", hint="fix or regenerate it")
    raw = data.get(key)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise CdkError(
            f"{context_file}: {key} must be an object {{dkimSelector, dkimPublicKey, returnPathTarget}}, "
            f"got {type(raw).__name__}"
        )

    def field(name: str, *, required: bool = True) -> str | None:
        value = raw.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            seen = "nothing" if value is None else repr(value)[:60]
            raise CdkError(f"{context_file}: {key}.{name} must be a non-empty string, got {seen}")
        return value

    return ContextEntry(
        key=key,
        selector=str(field("dkimSelector")),
        public_key=str(field("dkimPublicKey")),
        return_path_target=field("returnPathTarget", required=False),
    )


@dataclass(frozen=True)
class ResourceChange:
    """One resource line of `cdk diff`: `[~] AWS::IAM::Role DnsRole DnsRole19B4E3A5 replace`."""

    stack: str
    logical_id: str
    resource_type: str
    action: str  # add | modify | replace | destroy | import
    path: str  # construct path cdk printed before the logical id ('' when none)
    impact: str  # cdk's own word: '', 'replace', 'may be replaced', 'destroy', 'orphan', 'import'
    details: tuple[str, ...]  # the property tree printed under it


@dataclass(frozen=True)
class OutputChange:
    stack: str
    name: str
    action: str  # add | modify | destroy


@dataclass(frozen=True)
class DiffSummary:
    """`cdk diff` output, reduced to what changes: per resource and per output."""

    stacks: tuple[str, ...]
    resources: tuple[ResourceChange, ...]
    outputs: tuple[OutputChange, ...]
    stacks_with_differences: int | None  # cdk's closing count, None when the text has none

    @property
    def by_action(self) -> dict[str, int]:
        counts = Counter(change.action for change in self.resources)
        return {action: counts.get(action, 0) for action in ACTIONS}

    @property
    def by_type(self) -> dict[str, dict[str, int]]:
        table: dict[str, Counter[str]] = {}
        for change in self.resources:
            table.setdefault(change.resource_type, Counter())[change.action] += 1
        return {kind: dict(sorted(counts.items())) for kind, counts in sorted(table.items())}


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SECTION = re.compile(
    r"^(Parameters|Metadata|Mappings|Conditions|Resources|Outputs|Other Changes|IAM Statement Changes|"
    r"IAM Policy Changes|IAM Identity Center Changes|Security Group Changes)$"
)
CHANGE = re.compile(r"^\[(?P<sign>[+~\-←])\] (?P<rest>.+)$")
IMPACTS = ("may be replaced", "replace", "destroy", "orphan", "import")
MOVE = re.compile(r"\s*\(OR move .*\)$")
STACKS_WITH_DIFFERENCES = re.compile(r"Number of stacks with differences: (\d+)")


def summarize_diff(text: str) -> DiffSummary:
    """Parse `cdk diff` output (colours allowed): which resources and outputs are added, changed, replaced, gone."""
    stacks: list[str] = []
    resources: list[ResourceChange] = []
    outputs: list[OutputChange] = []
    details: list[str] = []
    stack = section = ""
    counted = None
    for raw in ANSI.sub("", text).splitlines():
        line = raw.rstrip()
        if line.startswith("Stack "):
            stack, section = line.split()[1], ""
            stacks.append(stack)
            continue
        if SECTION.match(line):
            section = line
            continue
        if found := STACKS_WITH_DIFFERENCES.search(line):
            counted = int(found[1])
            continue
        change = CHANGE.match(line)
        if change and section == "Resources":
            if resources:
                resources[-1] = _with_details(resources[-1], details)
            details = []
            resources.append(_resource_change(stack, change["sign"], change["rest"]))
        elif change and section == "Outputs":
            outputs.append(_output_change(stack, change["sign"], change["rest"]))
        elif section == "Resources" and resources and line.startswith(" "):
            details.append(line.strip())
    if resources:
        resources[-1] = _with_details(resources[-1], details)
    return DiffSummary(tuple(stacks), tuple(resources), tuple(outputs), counted)


def _with_details(change: ResourceChange, details: list[str]) -> ResourceChange:
    return replace(change, details=tuple(details))


def _resource_change(stack: str, sign: str, rest: str) -> ResourceChange:
    rest = MOVE.sub("", rest).strip()
    impact = next((word for word in IMPACTS if rest.endswith(" " + word)), "")
    if impact:
        rest = rest[: -len(impact) - 1]
    resource_type, _, named = rest.partition(" ")
    path, _, logical_id = named.rpartition(" ")
    if sign == "←":
        action = "import"
    elif sign == "+":
        action = "add"
    elif sign == "-":
        action = "destroy"
    else:
        action = "replace" if impact in ("replace", "may be replaced") else "modify"
    return ResourceChange(stack, logical_id, resource_type, action, path, impact, ())


def _output_change(stack: str, sign: str, rest: str) -> OutputChange:
    named = rest.removeprefix("Output ").split(": ", 1)[0]
    action = {"+": "add", "-": "destroy"}.get(sign, "modify")
    return OutputChange(stack, named.rsplit(" ", 1)[-1], action)
