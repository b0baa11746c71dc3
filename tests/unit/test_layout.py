"""The layout's rules, read from the source's imports (every import, including those
inside functions and under ``TYPE_CHECKING``):

- a service's private package ``services/_<x>/`` is imported only by its entrypoint
  module ``services/<x>.py``, by itself, by ``migrations/<x>/``, by tests, and by the
  benchmarks that measure a part of it alone (``benchmarks/applier.py``: the status applier;
  ``benchmarks/recording.py``: recording requests);
- the pika client imports nothing of the services, nameko or eventlet;
- no module imports, directly or through others, a module that imports it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("services", "gateway", "clients", "tools", "benchmarks", "migrations", "examples")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


MODULES = source_files()


def imported(path: Path) -> set[str]:
    """The project modules ``path`` imports (``from a import b`` counts ``a.b`` when it is a module)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name in MODULES}


GRAPH = {name: imported(path) for name, path in MODULES.items()}


def private_owner(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "services" and len(parts) > 1 and parts[1].startswith("_"):
        return parts[1][1:]
    return None


def may_import_private(importer: str, service: str) -> bool:
    return (
        importer == f"services.{service}"
        or private_owner(importer) == service
        or importer.startswith(f"migrations.{service}.")
        or importer == f"migrations.{service}"
        or (importer, service) in ALONE
    )


ALONE = {
    ("benchmarks.applier", "status"),
    ("benchmarks.recording", "status"),
}  # benchmarks of one part of a service, without the system


def test_the_rules_see_every_service():
    owners = {private_owner(m) for m in MODULES} - {None}
    assert owners == {"students", "status", "certificates", "notifications"}
    assert "services._status.repo" in GRAPH["services.status"]


def test_private_packages_are_imported_only_by_their_service():
    offenders = sorted(
        f"{importer} imports {target}"
        for importer, targets in GRAPH.items()
        for target in targets
        if (owner := private_owner(target)) and not may_import_private(importer, owner)
    )
    assert offenders == []


def test_the_pika_client_stands_alone():
    for name, path in MODULES.items():
        if name.startswith("clients"):
            tree = ast.parse(path.read_text())
            roots = {
                (alias.name if isinstance(node, ast.Import) else node.module or "").split(".")[0]
                for node in ast.walk(tree)
                if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in node.names
            }
            assert not roots & {"services", "gateway", "tools", "nameko", "eventlet"}, name


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target == node:
                continue
            if state.get(target) == "open":
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def module_graph() -> dict[str, set[str]]:
    """Module-to-module edges: a package's ``__init__`` is not its modules' caller."""
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    return {name: targets - packages for name, targets in GRAPH.items() if name not in packages}


def test_no_import_cycles():
    assert find_cycle(module_graph()) is None


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": set(), "c": {"a"}}, None),
    ],
)
def test_find_cycle_finds_cycles(graph, cycle):
    assert find_cycle(graph) == cycle


def test_the_image_holds_every_module_compose_runs():
    """Each module a compose service runs exists, and the Dockerfile copies its package."""
    copied = set(re.findall(r"^COPY (\w+)/ ", (ROOT / "Dockerfile").read_text(), re.M))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    run = {
        word
        for service in compose["services"].values()
        if isinstance(service.get("command"), list)
        for word in service["command"]
        if word.split(".")[0] in PACKAGES
    }
    assert {"tools.launch", "tools.migrate", "services.status", "gateway.service"} <= run
    assert sorted(m for m in run if m not in MODULES) == []
    assert sorted(m for m in run if m.split(".")[0] not in copied) == []


def test_the_image_holds_what_compose_modules_import():
    """Every project module a compose service runs imports (directly or not) is in the image."""
    copied = set(re.findall(r"^COPY (\w+)/ ", (ROOT / "Dockerfile").read_text(), re.M))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    run = {
        word
        for service in compose["services"].values()
        for word in service.get("command") or []
        if isinstance(word, str) and word in MODULES
    }
    assert "tools.broker" in run
    reached, stack = set(), list(run)
    while stack:
        module = stack.pop()
        if module not in reached:
            reached.add(module)
            stack.extend(GRAPH.get(module, ()))
    assert sorted(m for m in reached if m.split(".")[0] not in copied) == []


# --- docker compose: no default credentials ---------------------------------------------

# every credential and secret compose needs, from .env (see .env.example), never a default
COMPOSE_SECRETS = (
    "RABBITMQ_ADMIN_USER",
    "RABBITMQ_ADMIN_PASSWORD",
    "RABBITMQ_APP_USER",
    "RABBITMQ_APP_PASSWORD",
    "RABBITMQ_VHOST",
    "RABBITMQ_ERLANG_COOKIE",
    "POSTGRES_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "REQUEST_ID_SECRET",
    "API_KEY_SECRET",
    "CERTIFICATE_SIGNING_KEY_FILE",
)
# what .env may set besides (empty: off), with compose's default for it
COMPOSE_OPTIONAL = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "CERTIFICATE_ISSUER_NAME": "mensageria"}
# compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}, ${VAR?message}
COMPOSE_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def compose_text() -> str:
    return (ROOT / "docker-compose.yml").read_text()


def compose_variables() -> list[tuple[str, str, str]]:
    """``(name, operator, default or message)`` of every ``${...}`` in docker-compose.yml."""
    return COMPOSE_VARIABLE.findall(compose_text().replace("$$", ""))


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return {name.strip(): value.strip() for name, value in pairs}


def interpolate(text: str, env: dict[str, str]) -> str:
    """docker-compose.yml as compose reads it with ``env`` (its .env file)."""

    def value(match: re.Match) -> str:
        name, operator, argument = match.groups()
        found = env.get(name)
        if operator in (":?", "?") and (found is None or (operator == ":?" and found == "")):
            raise LookupError(f"required variable {name} is missing a value: {argument}")
        if (operator == ":-" and not found) or (operator == "-" and found is None):
            return argument
        return found or ""

    return COMPOSE_VARIABLE.sub(value, text)


def filled_env() -> dict[str, str]:
    """.env.example with every empty value filled in, as a user's .env would be."""
    return {name: value or f"{name.lower()}-value" for name, value in env_example().items()}


def test_compose_credentials_and_secrets_have_no_default():
    variables = compose_variables()
    assert set(COMPOSE_SECRETS) <= {name for name, _, _ in variables}
    for name, operator, message in variables:
        if name in COMPOSE_SECRETS:
            assert operator == ":?", f"${{{name}}} must be ${{{name}:?...}}: no default"
            assert message == f"set {name} in .env (see .env.example)"
    text = compose_text()
    for default in ("guest:guest", "mensageria:mensageria", "change-me", "POSTGRES_PASSWORD: mensageria"):
        assert default not in text


def test_env_example_lists_every_variable_compose_requires():
    required = {name for name, operator, _ in compose_variables() if operator in ("", ":?", "?")}
    example = env_example()
    assert required == set(COMPOSE_SECRETS)
    assert set(example) == set(COMPOSE_SECRETS) | set(COMPOSE_OPTIONAL)
    for name, default in COMPOSE_OPTIONAL.items():
        assert example[name] == default and (name, ":-", default) in compose_variables()
    assert example["RABBITMQ_VHOST"] == "mensageria"
    secrets = ("RABBITMQ_ADMIN_PASSWORD", "RABBITMQ_APP_PASSWORD", "RABBITMQ_ERLANG_COOKIE", "POSTGRES_PASSWORD")
    for name in (*secrets, *COMPOSE_SECRETS[-3:]):
        assert example[name] == "", f"{name}: .env.example holds no secret"
    assert 'python -c "import secrets; print(secrets.token_urlsafe(32))"' in (ROOT / ".env.example").read_text()
    for ignore_file in (".gitignore", ".dockerignore"):
        assert ".env" in (ROOT / ignore_file).read_text().split(), ignore_file


@pytest.mark.parametrize("missing", COMPOSE_SECRETS)
def test_compose_refuses_to_start_without_each_secret(missing):
    env = filled_env()
    for value in (None, ""):
        if value is None:
            del env[missing]
        else:
            env[missing] = value
        with pytest.raises(LookupError, match=f"{missing} is missing a value: set {missing} in .env"):
            interpolate(compose_text(), env)


def test_compose_services_connect_as_the_application_user():
    env = filled_env()
    compose = yaml.safe_load(interpolate(compose_text(), env))
    services = compose["services"]
    app_uri = f"amqp://{env['RABBITMQ_APP_USER']}:{env['RABBITMQ_APP_PASSWORD']}@rabbitmq:5672/{env['RABBITMQ_VHOST']}"
    runs = {name for name, service in services.items() if "tools.launch" in service.get("command", [])}
    assert runs == {"students", "status", "certificates", "notifications", "gateway"}
    for name in runs:
        assert services[name]["environment"]["AMQP_URI"] == app_uri, name
        assert services[name]["depends_on"]["broker-setup"] == {"condition": "service_completed_successfully"}, name
    for name, service in services.items():
        for key, uri in (service.get("environment") or {}).items():
            if key.endswith("_DB_URI"):
                assert f"mensageria:{env['POSTGRES_PASSWORD']}@postgres:5432/" in uri, (name, key)

    rabbitmq = services["rabbitmq"]["environment"]
    assert (rabbitmq["RABBITMQ_DEFAULT_USER"], rabbitmq["RABBITMQ_DEFAULT_PASS"]) == (
        env["RABBITMQ_ADMIN_USER"],
        env["RABBITMQ_ADMIN_PASSWORD"],
    )
    setup = services["broker-setup"]
    admin_api = f"http://{env['RABBITMQ_ADMIN_USER']}:{env['RABBITMQ_ADMIN_PASSWORD']}@rabbitmq:15672"
    assert setup["command"][:4] == ["python", "-m", "tools.broker", "setup"]
    options = dict(zip(setup["command"][4::2], setup["command"][5::2], strict=True))
    assert options == {
        "--api-uri": admin_api,
        "--vhost": env["RABBITMQ_VHOST"],
        "--user": env["RABBITMQ_APP_USER"],
        "--password-env": "RABBITMQ_APP_PASSWORD",  # the password itself never on a command line
        "--process": "all",
        "--wait": "60",
    }
    assert setup["environment"] == {"RABBITMQ_APP_PASSWORD": env["RABBITMQ_APP_PASSWORD"]}
    assert setup["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}

    gateway = services["gateway"]["environment"]
    assert (gateway["REQUEST_ID_SECRET"], gateway["API_KEY_SECRET"]) == (
        env["REQUEST_ID_SECRET"],
        env["API_KEY_SECRET"],
    )
    assert gateway["GATEWAY_DB_URI"].endswith("@postgres:5432/gateway")
    assert "GATEWAY_DB_URI" in services["migrate"]["environment"]  # migrate brings the gateway's database up too
    secrets = {"REQUEST_ID_SECRET", "API_KEY_SECRET"}  # the gateway's alone
    assert [n for n, s in services.items() if n != "gateway" and secrets & set(s.get("environment", {}))] == []


def test_postgres_creates_every_database_and_waits_for_the_last():
    created = re.findall(r"^CREATE DATABASE (\w+);", (ROOT / "docker" / "postgres-init.sql").read_text(), re.M)
    assert created == ["students", "status", "certificates", "notifications", "gateway"]
    compose = yaml.safe_load(interpolate(compose_text(), filled_env()))
    healthcheck = compose["services"]["postgres"]["healthcheck"]["test"]
    assert healthcheck[healthcheck.index("-d") + 1] == created[-1]


# --- docker compose: the cluster profile -------------------------------------------------

CLUSTER_NODES = ("rabbitmq", "rabbitmq-2", "rabbitmq-3")


def test_the_cluster_profile_is_three_nodes_with_one_cookie_and_a_static_peer_list():
    env = filled_env()
    services = yaml.safe_load(interpolate(compose_text(), env))["services"]
    conf = (ROOT / "docker" / "rabbitmq-cluster.conf").read_text()
    settings = dict(line.split(" = ", 1) for line in conf.splitlines() if line.strip() and not line.startswith("#"))
    assert settings.pop("cluster_formation.peer_discovery_backend") == "classic_config"
    assert settings.pop("cluster_partition_handling") == "pause_minority"
    assert settings == {
        f"cluster_formation.classic_config.nodes.{n}": f"rabbit@{h}" for n, h in enumerate(CLUSTER_NODES, 1)
    }

    for name in CLUSTER_NODES:
        node = services[name]
        assert node["hostname"] == name  # its node name, rabbit@<hostname>, is the one listed
        assert node["image"] == services["rabbitmq"]["image"]
        assert node["environment"]["RABBITMQ_ERLANG_COOKIE"] == env["RABBITMQ_ERLANG_COOKIE"]
        assert "./docker/rabbitmq-cluster.conf:/etc/rabbitmq/conf.d/20-cluster.conf:ro" in node["volumes"]
        assert f"{name}-data:/var/lib/rabbitmq" in node["volumes"]  # a data volume of its own
    assert "profiles" not in services["rabbitmq"]  # the single node of a plain `docker compose up`
    for name in CLUSTER_NODES[1:]:
        assert services[name]["profiles"] == ["cluster"]
        # started once the first is up, so that they join it rather than racing to form clusters
        assert services[name]["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}


def test_the_cluster_override_gives_every_process_all_three_nodes():
    from services.infra import brokers

    env = filled_env()
    text = (ROOT / "docker" / "cluster.yml").read_text()
    for name, operator, message in COMPOSE_VARIABLE.findall(text):
        assert name in COMPOSE_SECRETS and operator == ":?" and message == f"set {name} in .env (see .env.example)"
    override = yaml.safe_load(interpolate(text, env))["services"]
    services = yaml.safe_load(interpolate(compose_text(), env))["services"]
    runs = {name for name, service in services.items() if "tools.launch" in service.get("command", [])}
    assert set(override) == runs
    for name in runs:
        uri = {**services[name]["environment"], **override[name]["environment"]}["AMQP_URI"]  # compose's merge
        nodes = brokers.nodes(uri)
        app = f"amqp://{env['RABBITMQ_APP_USER']}:{env['RABBITMQ_APP_PASSWORD']}@"
        assert nodes == [f"{app}{host}:5672/{env['RABBITMQ_VHOST']}" for host in CLUSTER_NODES], name
        assert nodes[0] == services[name]["environment"]["AMQP_URI"]  # the single node's, first


def test_the_run_script_starts_every_process_the_launcher_names():
    """``bin/run`` (shell) and ``tools.launch.PROCESSES`` (what tests and benchmarks start) agree."""
    from tools.launch import PROCESSES

    loop = re.search(r"^for module in ([^;]+);", (ROOT / "bin/run").read_text(), re.MULTILINE)
    assert loop is not None
    assert loop.group(1).split() == list(PROCESSES.values())
    for module in PROCESSES.values():
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
