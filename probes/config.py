"""partitions.yaml → a validated, typed model; every derived name lives here."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from probes.mailauth import is_name

EXPORT_NAMES: tuple[str, ...] = (
    "PartitionMailZoneId",
    "PartitionMailZoneName",
    "EmailPostmarkAccountTokenArn",
    "EmailEncryptionKeyArn",
    "EmailDnsProvisioningRoleArn",
    "EmailEncryptionKeyFallbackRoleArn",
)
MAX_FILE_BYTES = 1_000_000
MAX_NODES = 50_000
MAX_DEPTH = 32  # the real file nests 4 levels deep
MAX_NUMBER_CHARS = 100
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
HostPort = Annotated[str, Field(min_length=1, max_length=300, pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.:-]+)$")]


class ConfigError(Exception):
    """A partitions file that cannot be used; the message is one line for the operator."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Infrastructure(_Strict):
    account: str
    profile: Name

    @field_validator("account", mode="before")
    @classmethod
    def _account_digits(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not re.fullmatch(r"\d{12}", value):
            raise ValueError(
                f"must be a 12-digit AWS account id as a quoted string (like '009765408297'), got {_brief(value)}"
            )
        return value


class PartitionSpec(_Strict):
    infrastructure: Name
    after: list[Name] = []  # partitions that must be verified before this one may be deployed
    postmark_account: Name
    credential: Annotated[str, Field(min_length=1, max_length=500, pattern=r"^(op://\S+|env:[A-Za-z_][A-Za-z0-9_]*)$")]
    production: bool = False
    spf_includes: list[Annotated[str, Field(min_length=1, max_length=253)]] | None = None
    expected_resources: (
        dict[
            Annotated[str, Field(pattern=r"^[A-Za-z0-9]+::[A-Za-z0-9]+::[A-Za-z0-9]+$")],
            Annotated[int, Field(ge=0, le=10_000)],
        ]
        | None
    ) = None


class DmarcSpec(_Strict):
    report_mailbox: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)]
    allowed_policies: list[str] = ["quarantine", "reject"]
    production_policies: list[str] | None = None  # p= a production partition needs; None: any allowed policy

    @field_validator("report_mailbox")
    @classmethod
    def _mailbox_domain(cls, value: str) -> str:
        if not is_name(value.rsplit("@", 1)[1]):
            raise ValueError(f"must be a mailbox whose domain is a DNS name (reports@example.com); got {_brief(value)}")
        return value

    @field_validator("allowed_policies", "production_policies")
    @classmethod
    def _known_policies(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = [p for p in value if p not in ("none", "quarantine", "reject")]
        if unknown or not value:
            raise ValueError(f"must be a non-empty list of none, quarantine, reject; got {_brief(list(value))}")
        return value


class SpfSpec(_Strict):
    includes: list[Annotated[str, Field(min_length=1, max_length=253)]] = []


class DnsSpec(_Strict):
    resolvers: list[HostPort] = Field(min_length=1)
    nameserver_port: Annotated[int, Field(ge=1, le=65535)] = 53
    timeout: Annotated[float, Field(gt=0, le=60)] = 3.0


class PostmarkSpec(_Strict):
    api_url: Annotated[str, Field(pattern=r"^https?://\S+$", max_length=500)] = "https://api.postmarkapp.com"
    accounts: list[Name] = Field(min_length=1)


class InfraSpec(_Strict):
    repo: Annotated[str, Field(min_length=1, max_length=4096)]
    build: str
    lint: str
    test: str
    synth: str
    diff: str


class DeploySpec(_Strict):
    command: Annotated[str, Field(min_length=1)]


class GatesSpec(_Strict):
    """The execution log's `| Gate | Status | Date |` rows mailgate decides, found by the start of their Gate text
    (null: leave that row to the operator)."""

    entry_criteria: Annotated[str, Field(min_length=1)] | None = "Entry criteria verified"
    production_confirmation: Annotated[str, Field(min_length=1)] | None = "Production deploy confirmation given"


class VerificationSpec(_Strict):
    """Rows of a verification matrix (a Markdown table whose first column is the row id) and the checks that
    decide each; `{partition}` in an id makes one row per partition."""

    file: str | None = None
    status_column: Annotated[str, Field(min_length=1)] = "Status"
    rows: dict[Annotated[str, Field(min_length=1, max_length=200)], Annotated[list[Name], Field(min_length=1)]] = {}

    @field_validator("rows")
    @classmethod
    def _row_ids(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for row_id in value:
            if re.search(r"[{}|\s]", row_id.replace("{partition}", "")):
                raise _PathError(
                    ("signoff", "verification", "rows", row_id),
                    f"row id {_brief(row_id)}: one word, and {{partition}} is the only placeholder",
                )
        return value


class SignoffSpec(_Strict):
    log: str | None = None
    gates: GatesSpec = GatesSpec()
    verification: VerificationSpec = VerificationSpec()


class ConfigFile(_Strict):
    domain: Annotated[str, Field(pattern=r"^([A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}$", max_length=253)]
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")]
    return_path_target: Annotated[str, Field(min_length=1, max_length=253)]
    dmarc: DmarcSpec
    spf: SpfSpec = SpfSpec()
    dns: DnsSpec
    postmark: PostmarkSpec
    infra: InfraSpec
    deploy: DeploySpec
    signoff: SignoffSpec = SignoffSpec()
    waivers: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    infrastructures: dict[Name, Infrastructure] = Field(min_length=1)
    partitions: dict[Name, PartitionSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _references_exist(self) -> ConfigFile:
        for name, spec in self.partitions.items():
            if spec.infrastructure not in self.infrastructures:
                raise _RefError(("partitions", name, "infrastructure"), spec.infrastructure, list(self.infrastructures))
            if spec.postmark_account not in self.postmark.accounts:
                raise _RefError(
                    ("partitions", name, "postmark_account"), spec.postmark_account, list(self.postmark.accounts)
                )
            for index, before in enumerate(spec.after):
                if before not in self.partitions:
                    raise _RefError(("partitions", name, "after", str(index)), before, list(self.partitions))
        cycle = _cycle({name: spec.after for name, spec in self.partitions.items()})
        if cycle:
            path = " → ".join(cycle)
            raise _PathError(
                ("partitions", cycle[0], "after"),
                f"the deploy order has a cycle: {path} (each needs the next verified first); remove one of these",
            )
        return self


class _PathError(ValueError):
    """A problem found across the model, located by its key path (pydantic's own location is the whole file)."""

    def __init__(self, path: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


class _RefError(_PathError):
    def __init__(self, path: tuple[str, ...], value: str, known: list[str]) -> None:
        super().__init__(path, f"names unknown {_brief(value)}; known: {', '.join(known)}")


def _cycle(after: dict[str, list[str]]) -> list[str]:
    """The first cycle of `after:` edges, as the names along it back to its start (empty: none)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> list[str]:
        state[name] = 1
        for before in after.get(name, []):
            if state.get(before) == 1:
                return [*path[path.index(before) :], before]
            if before not in state:
                found = visit(before, [*path, before])
                if found:
                    return found
        state[name] = 2
        return []

    for name in after:
        if name not in state:
            found = visit(name, [name])
            if found:
                return found
    return []


@dataclass(frozen=True)
class Target:
    """One partition on its infrastructure, with every name derived from the pair."""

    name: str
    infrastructure: str
    account: str
    profile: str
    region: str
    domain: str
    postmark_account: str
    credential: str
    production: bool
    return_path_target: str
    spf_includes: tuple[str, ...]
    expected_resources: tuple[tuple[str, int], ...] | None
    after: tuple[str, ...] = ()

    @property
    def stack_name(self) -> str:
        return f"{self.infrastructure}-{self.name}-Email"

    @property
    def export_names(self) -> tuple[str, ...]:
        return tuple(self.export_name(name) for name in EXPORT_NAMES)

    def export_name(self, name: str) -> str:
        return f"{self.infrastructure}-{self.name}-API-{name}"

    @property
    def zone(self) -> str:
        return f"{self.name}.{self.domain}"

    @property
    def dmarc_host(self) -> str:
        return f"_dmarc.{self.zone}"

    @property
    def return_path_host(self) -> str:
        return f"pm-bounces.{self.zone}"

    @property
    def context_key(self) -> str:
        return f"partitionMail:{self.infrastructure}:{self.name}"

    def dkim_host(self, selector: str) -> str:
        return f"{selector}._domainkey.{self.zone}"

    def command_vars(self, out: str = "") -> dict[str, str]:
        return {
            "infrastructure": self.infrastructure,
            "partition": self.name,
            "profile": self.profile,
            "region": self.region,
            "out": out,
        }


@dataclass(frozen=True)
class Config:
    """The loaded partitions file: settings plus one Target per partition, in file order."""

    path: Path
    file: ConfigFile
    targets: dict[str, Target]
    lines: Mapping[tuple[str, ...], int] = field(default_factory=dict)

    @property
    def infra_repo(self) -> Path:
        return (self.path.parent / self.file.infra.repo).resolve()

    @property
    def signoff_log(self) -> Path | None:
        log = self.file.signoff.log
        return (self.path.parent / log).resolve() if log else None

    @property
    def waivers(self) -> Path | None:
        return (self.path.parent / self.file.waivers).resolve() if self.file.waivers else None

    @property
    def verification_file(self) -> Path | None:
        matrix = self.file.signoff.verification.file
        return (self.path.parent / matrix).resolve() if matrix else None

    def located(self, loc: tuple[str, ...], message: str) -> str:
        """One operator line `file:line: key.path: message` for a problem found after loading."""
        return _located(self.path, self.lines, loc, message)

    def in_deploy_order(self, targets: Sequence[Target]) -> list[Target]:
        """`targets` reordered so each comes after the selected partitions it names in `after:` (otherwise in the
        given order): checks, deploys and xdist's work units then follow the cascade."""
        chosen = {t.name for t in targets}
        placed: list[Target] = []
        waiting = list(targets)
        while waiting:
            done = {t.name for t in placed}
            ready = next(t for t in waiting if all(b in done or b not in chosen for b in t.after))
            placed.append(ready)
            waiting.remove(ready)
        return placed

    def select(self, spec: str) -> list[Target]:
        """Resolve `--partition` (comma list or `all`) to targets, or raise ConfigError listing the known."""
        names = [n.strip() for n in spec.split(",") if n.strip()]
        if not names or names == ["all"]:
            return list(self.targets.values())
        unknown = [n for n in names if n not in self.targets]
        if unknown:
            raise ConfigError(
                f"--partition: unknown partition {', '.join(unknown)}; known: {', '.join(self.targets)} (or 'all')"
            )
        return [self.targets[n] for n in dict.fromkeys(names)]


def load(path: Path) -> Config:
    """Read and validate a partitions file; any problem raises ConfigError with one clear line."""
    raw = read_file(path, "partitions file", "create it or pass --partitions-file PATH")
    data, lines = parse_yaml(path, raw)
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping with domain, infrastructures, partitions, …; got {type(data).__name__}"
        )
    try:
        file = ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_first_error(path, lines, exc)) from None
    targets = {name: _target(file, name, spec) for name, spec in file.partitions.items()}
    return Config(path=path, file=file, targets=targets, lines=lines)


def _target(file: ConfigFile, name: str, spec: PartitionSpec) -> Target:
    infra = file.infrastructures[spec.infrastructure]
    resources = tuple(sorted(spec.expected_resources.items())) if spec.expected_resources is not None else None
    return Target(
        name=name,
        infrastructure=spec.infrastructure,
        account=infra.account,
        profile=infra.profile,
        region=file.region,
        domain=file.domain.lower(),
        postmark_account=spec.postmark_account,
        credential=spec.credential,
        production=spec.production,
        return_path_target=file.return_path_target,
        spf_includes=tuple(spec.spf_includes if spec.spf_includes is not None else file.spf.includes),
        expected_resources=resources,
        after=tuple(spec.after),
    )


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (YAML allows them silently)."""


def read_file(path: Path, what: str, fix: str) -> bytes:
    """A configuration file's bytes, at most MAX_FILE_BYTES; else ConfigError naming the file (`fix`: what to do
    when it is missing)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found; {fix}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: {len(raw)} bytes is more than a {what} may have ({MAX_FILE_BYTES})")
    return raw


def parse_yaml(
    path: Path,
    raw: bytes,
    *,
    loader: type[yaml.SafeLoader] | None = None,
    what: str = "domain, infrastructures and partitions",
) -> tuple[Any, dict[tuple[str, ...], int]]:
    """Parse YAML safely within size/depth/node limits: (data, the line of every key path); errors are ConfigError
    lines. An empty document is an error naming `what` it needs, unless `what` is empty (then: None)."""
    loader = loader or _LineLoader
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    try:
        _check_depth(path, text)
        node = yaml.compose(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise _yaml_error(path, text, exc) from None
    if node is None:
        if not what:
            return None, {}
        raise ConfigError(f"{path}: the file is empty; it needs {what}")
    lines: dict[tuple[str, ...], int] = {}
    _walk(path, node, (), lines, [0])
    try:
        data = loader(text).construct_document(node)
    except yaml.YAMLError as exc:
        raise _yaml_error(path, text, exc) from None
    return data, lines


def _check_depth(path: Path, text: str) -> None:
    """Refuse deep nesting from the parser's events (iterative), before the recursive composer sees it."""
    depth = 0
    for event in yaml.parse(text, Loader=_LineLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                where = f":{event.start_mark.line + 1}" if event.start_mark is not None else ""
                raise ConfigError(
                    f"{path}{where}: YAML nested more than {MAX_DEPTH} levels deep; "
                    "a partitions file is a few levels deep"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _yaml_error(path: Path, text: str, exc: yaml.YAMLError) -> ConfigError:
    """One line for any PyYAML error (their own text spans lines and quotes the source)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}" if mark is not None else ""
        what = " ".join(str(exc.problem or exc.context or "unreadable YAML").split())
        return ConfigError(f"{path}{where}: YAML syntax error: {what}; fix the YAML at that line")
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return ConfigError(
            f"{path}:{line}: character {chr(exc.character)!r} is not allowed in YAML ({exc.reason}); remove it"
        )
    return ConfigError(f"{path}: YAML error: {' '.join(str(exc).split())}")


def _walk(path: Path, node: yaml.Node, at: tuple[str, ...], lines: dict[tuple[str, ...], int], seen: list[int]) -> None:
    seen[0] += 1
    if seen[0] > MAX_NODES:
        raise ConfigError(f"{path}: more than {MAX_NODES} YAML nodes (an alias bomb?); a partitions file is small")
    line = node.start_mark.line + 1
    if len(at) > MAX_DEPTH:
        raise ConfigError(
            f"{path}:{line}: YAML nested more than {MAX_DEPTH} levels deep (a recursive anchor?); "
            "a partitions file is a few levels deep"
        )
    lines.setdefault(at, line)
    if isinstance(node, yaml.ScalarNode) and node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
        raise ConfigError(
            f"{path}:{line}: {_dotted(at)}: a number {len(node.value)} characters long; "
            "no setting needs more than a few digits"
        )
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in keys:
                raise ConfigError(
                    f"{path}:{key_node.start_mark.line + 1}: {_dotted((*at, key))}: duplicate key; keep one"
                )
            keys.add(key)
            lines[(*at, key)] = key_node.start_mark.line + 1
            _walk(path, value_node, (*at, key), lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(path, item, (*at, str(index)), lines, seen)


def _first_error(path: Path, lines: dict[tuple[str, ...], int], exc: ValidationError) -> str:
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    error = errors[0]
    loc = tuple(str(part) for part in error["loc"])
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _PathError):
        return _located(path, lines, cause.path, str(cause))
    kind = error["type"]
    if kind == "extra_forbidden":
        parent = loc[:-1]
        allowed = _allowed_keys(parent)
        hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
        return _located(path, lines, loc, f"unknown key{_did_you_mean(loc[-1], allowed)}{hint}")
    if kind == "missing":
        return _located(path, lines, loc, "missing; add it")
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    elif "input" in error and not isinstance(error["input"], (dict, list)):
        message = f"{message}; got {_brief(error['input'])}"
    if len(exc.errors()) > 1:
        message += f" (and {len(exc.errors()) - 1} more problem(s))"
    return _located(path, lines, loc, message)


def _located(path: Path, lines: Mapping[tuple[str, ...], int], loc: tuple[str, ...], message: str) -> str:
    line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), None)
    where = f"{path}:{line}" if line else str(path)
    return f"{where}: {_dotted(loc)}: {message}"


def _dotted(loc: tuple[str, ...]) -> str:
    """A key path for a message: `partitions.dev.credential`; odd keys (newlines, huge) shown as short reprs."""
    parts = [part if part.isprintable() and 0 < len(part) <= 60 else _brief(part) for part in loc]
    return ".".join(parts) or "(top level)"


def _allowed_keys(parent: tuple[str, ...]) -> list[str]:
    """The keys the model allows at `parent` (a path of keys), or [] where keys are free names."""
    model: type[BaseModel] = ConfigFile
    named: dict[str, type[BaseModel]] = {"partitions": PartitionSpec, "infrastructures": Infrastructure}
    index = 0
    while index < len(parent):
        part = parent[index]
        if model is ConfigFile and part in named:
            if index + 1 == len(parent):
                return []
            model, index = named[part], index + 2
            continue
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model, index = annotation, index + 1
    return list(model.model_fields)


def _did_you_mean(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
