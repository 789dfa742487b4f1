"""The embedded local stack: real Kafka, FerretDB, Prometheus and the services, run by supervisord.

`make up` / `make run` use the default ports and `.run/`; the tests build a `LocalStack` on free
ports in a temporary directory, so they never touch a developer's running stack. supervisord does
the process work (daemonizing, one log file per process, stopping process groups); this module
only renders its configuration, asks it to start and stop, and checks health over the wire.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import xmlrpc.client
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import MongoClient
from supervisor.xmlrpc import SupervisorTransport

from shared.http import KEEP_ALIVE_S
from shared.settings import SERVICE_SETTINGS, LocalStackSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_LIB = REPO_ROOT / "deploy" / "kafka" / "target" / "lib"
FERRETDB_BIN = REPO_ROOT / "deploy" / "ferretdb" / "bin" / "ferretdb-local"
DEPLOY_LOCAL = REPO_ROOT / "deploy" / "local"
ALERT_RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"

INFRASTRUCTURE = ("kafka", "ferretdb", "prometheus")
# The broker shares a small machine with everything else. The serial collector: no concurrent GC
# threads or G1 barriers taking CPU from the services, and a young generation of a third of the heap,
# collected every ~20 s at 1000 pushes/s, 15-45 ms each (G1 kept its young generation tiny for its
# pause goal, collecting every few seconds, pauses up to 230 ms when the cores are busy). No hsperfdata
# file: its writes can stall the JVM at a safepoint.
KAFKA_JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:+PerfDisableSharedMem")
STAND_INS = ("wechat_sim", "carrier_sim")  # the outside world we cannot reach (sim/)
# One program per process: order_ingest's webhook and its ingest worker run apart (the worker at a
# lower CPU priority), so acknowledging WeChat never waits behind the worker's batches.
# Processes that run several uvicorn workers behind one port (stateless HTTP, the hottest path).
WEB_WORKERS = {"order_ingest": 2}
SERVICE_PROCESSES: dict[str, tuple[str, dict[str, str]]] = {
    "order_ingest": ("order_ingest", {"ORDER_INGEST_ROLE": "web"}),
    "order_ingest_worker": ("order_ingest", {"ORDER_INGEST_ROLE": "worker"}),
    "dispatch": ("dispatch", {}),
    "logistics": ("logistics", {}),
    "aftersale": ("aftersale", {}),
}
# FerretDB's Go heap is small (about 70 MiB at peak), so at Go's default GOGC=100 it collects every few
# megabytes of inserts: 12% of its CPU in bench-e2e (pprof: gcBgMarkWorker). Collecting at 4× the live
# heap trades some tens of MiB for most of that.
FERRETDB_GOGC = 400
# CPU priority (`nice`) when everything shares two cores: the order path (webhook, ingest worker,
# dispatch, Kafka, FerretDB and the WeChat stand-in they call) at normal priority; what follows a
# dispatch (waybills, tracking, after-sales and the carrier stand-in) is not latency-bound and yields
# (nice 10: weight 110 against the order path's 1024 while both want the CPU, all of it when idle).
# At nice 5 (weight 335) dispatch still got only a fair share under a spike, and bench-e2e's paid
# orders queued before it (p99 15 s at 100/s; 5.4 s at nice 10). Before that, the ingest worker itself
# was at 5: it got a quarter of a core and held every order back by over a minute. The webhook comes
# first of all (nice -5: weight 3121): WeChat counts a push unanswered after 5 s as failed, and a
# push costs it well under a millisecond, so it must never wait behind the worker's backlog. A
# negative level needs root (CAP_SYS_NICE); without it `nice` warns and runs the webhook at normal
# priority.
PROCESS_NICENESS: dict[str, int] = {"order_ingest": -5, "logistics": 10, "aftersale": 10, "carrier_sim": 10}
_DEFAULT_PROCESS_PORTS = {"order_ingest_worker": 8011}
SERVICES = tuple(SERVICE_PROCESSES)
ALL_COMPONENTS = INFRASTRUCTURE + STAND_INS + SERVICES


class StackError(RuntimeError):
    pass


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free now. Every socket stays bound until all are chosen: one at a time,
    the kernel may hand a closed socket's port out again (a bench stack once gave FerretDB and dispatch
    the same port, and dispatch never started)."""
    with ExitStack() as held:
        ports: list[int] = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def free_port() -> int:
    return free_ports(1)[0]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class StackPorts:
    kafka: int = 9092
    kafka_controller: int = 9093
    mongo: int = 27017
    prometheus: int = 9090
    wechat_sim: int = 9001
    carrier_sim: int = 9002
    services: dict[str, int] = field(
        default_factory=lambda: {
            name: _DEFAULT_PROCESS_PORTS.get(name) or SERVICE_SETTINGS[service]().http_port
            for name, (service, _) in SERVICE_PROCESSES.items()
        }
    )
    ferretdb_debug: int = 27018
    # Processes with a private listener (shared/listeners.py): their internal API, /metrics, /docs.
    private: dict[str, int] = field(
        default_factory=lambda: {
            name: port
            for name, (service, _) in SERVICE_PROCESSES.items()
            if (port := SERVICE_SETTINGS[service]().internal_http_port) is not None
        }
    )

    @classmethod
    def from_settings(cls, settings: LocalStackSettings) -> StackPorts:
        return cls(
            kafka=settings.kafka_port,
            kafka_controller=settings.kafka_controller_port,
            mongo=settings.mongo_port,
            prometheus=settings.prometheus_port,
            wechat_sim=settings.wechat_sim_port,
            carrier_sim=settings.carrier_sim_port,
            ferretdb_debug=settings.ferretdb_debug_port,
        )

    @classmethod
    def free(cls, services: Iterable[str] = SERVICES) -> StackPorts:
        names = list(services)
        private = [n for n in names if n in StackPorts().private]
        ports = free_ports(7 + len(names) + len(private))
        kafka, controller, mongo, prometheus, wechat, carrier, debug = ports[:7]
        own, theirs = ports[7 : 7 + len(names)], ports[7 + len(names) :]
        return cls(
            kafka,
            controller,
            mongo,
            prometheus,
            wechat,
            carrier,
            dict(zip(names, own, strict=True)),
            ferretdb_debug=debug,
            private=dict(zip(private, theirs, strict=True)),
        )

    def of(self, component: str) -> list[int]:
        fixed = {
            "kafka": [self.kafka, self.kafka_controller],
            "ferretdb": [self.mongo, self.ferretdb_debug],
            "prometheus": [self.prometheus],
            "wechat_sim": [self.wechat_sim],
            "carrier_sim": [self.carrier_sim],
        }
        private = [self.private[component]] if component in self.private else []
        return fixed.get(component) or [self.services[component], *private]


@dataclass(frozen=True)
class ComponentHealth:
    name: str
    state: str  # supervisor's process state: RUNNING, STARTING, FATAL, ...
    healthy: bool
    detail: str = ""


@dataclass
class LocalStack:
    run_dir: Path
    ports: StackPorts = field(default_factory=StackPorts)
    components: tuple[str, ...] = ALL_COMPONENTS
    # Each scrape costs a service about 10 ms of CPU (its /metrics text is ~45 KB): every 5 s, a tenth of
    # the line's CPU at rest. The alerts and dashboards look at windows of a minute or more.
    scrape_interval: str = "15s"
    kafka_heap: str = "512m"
    # `nice` level per process (absent: normal priority).
    niceness: dict[str, int] = field(default_factory=lambda: dict(PROCESS_NICENESS))
    # Extra environment per component (e.g. a benchmark's settings).
    component_env: dict[str, dict[str, str]] = field(default_factory=dict)
    # Extra HTTP processes (benchmarks' ceilings): name -> (argv, port, health path).
    extra_programs: dict[str, tuple[list[str], int, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.run_dir = self.run_dir.resolve()
        unknown = set(self.components) - set(ALL_COMPONENTS) - set(self.extra_programs)
        if unknown:
            raise StackError(f"unknown components: {sorted(unknown)}")

    # ---- paths and the environment the services get -------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def supervisor_conf(self) -> Path:
        return self.run_dir / "supervisord.conf"

    @property
    def supervisor_socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.kafka}"

    @property
    def mongo_uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.ports.mongo}/"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prometheus}"

    def service_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports.services[service]}"

    def private_url(self, service: str) -> str:
        """Where a process serves its internal API, /metrics and /docs: its private listener if it
        has one, else its only port."""
        port = self.ports.private.get(service, self.ports.services[service])
        return f"http://127.0.0.1:{port}"

    @property
    def wechat_sim_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.wechat_sim}"

    @property
    def carrier_sim_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.carrier_sim}"

    def _service_links(self, service: str) -> dict[str, str]:
        """How the services on this stack find each other and the stand-ins."""
        links: dict[str, str] = {}
        if service == "dispatch" and "logistics" in self.ports.services:
            links["DISPATCH_LOGISTICS_URL"] = self.private_url("logistics")
        if service == "logistics":
            links["LOGISTICS_PUBLIC_URL"] = self.service_url("logistics")
            if "carrier_sim" in self.components:
                links["LOGISTICS_AGGREGATOR_URL"] = self.carrier_sim_url
        return links

    def client_environment(self) -> dict[str, str]:
        """What a process needs to talk to this stack (the services get this, and so can tests)."""
        env = {"KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap, "MONGO_URI": self.mongo_uri}
        if "wechat_sim" in self.components:
            env["WECHAT_API_BASE"] = self.wechat_sim_url  # WeChat is the stand-in on this stack
        return env

    # ---- rendering --------------------------------------------------------------------------------------
    def _kafka_cluster_id(self) -> str:
        path = self.run_dir / "kafka-cluster-id"
        if not path.exists():
            # Kafka's own ids never begin with "-" (its command line would take one for an option).
            cluster_id = "-"
            while cluster_id.startswith("-"):
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            path.write_text(cluster_id)
        return path.read_text().strip()

    def _render_kafka(self) -> Path:
        template = Template((DEPLOY_LOCAL / "server.properties.template").read_text())
        path = self.run_dir / "kafka-server.properties"
        path.write_text(
            template.substitute(
                broker_port=self.ports.kafka,
                controller_port=self.ports.kafka_controller,
                data_dir=self.data_dir / "kafka",
            )
        )
        return path

    def _render_prometheus(self) -> Path:
        scrape_configs: list[dict[str, Any]] = [
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": [f"127.0.0.1:{self.ports.prometheus}"]}],
            }
        ]
        for service in self.components:
            if service in SERVICES:
                scrape_configs.append(
                    {
                        "job_name": service,
                        "static_configs": [{"targets": [self.private_url(service).removeprefix("http://")]}],
                    }
                )
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "rule_files": [str(ALERT_RULES)],
            "scrape_configs": scrape_configs,
        }
        path = self.run_dir / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return path

    def _program_commands(self) -> dict[str, tuple[list[str], dict[str, str], int]]:
        """name -> (argv, environment, seconds to wait for a graceful stop)."""
        java = shutil.which("java") or "java"
        programs: dict[str, tuple[list[str], dict[str, str], int]] = {
            "kafka": (
                [
                    java,
                    f"-Xmx{self.kafka_heap}",
                    f"-Xms{self.kafka_heap}",
                    *KAFKA_JVM_FLAGS,
                    f"-Dlog4j.configuration=file:{DEPLOY_LOCAL / 'log4j.properties'}",
                    "-cp",
                    f"{KAFKA_LIB}/*",
                    "kafka.Kafka",
                    str(self.run_dir / "kafka-server.properties"),
                ],
                {},
                60,
            ),
            "ferretdb": (
                [
                    str(FERRETDB_BIN),
                    f"--listen=127.0.0.1:{self.ports.mongo}",
                    f"--data-dir={self.data_dir / 'ferretdb'}",
                    f"--debug-listen=127.0.0.1:{self.ports.ferretdb_debug}",
                ],
                {"GOGC": str(FERRETDB_GOGC)},
                20,
            ),
            "prometheus": (
                [
                    shutil.which("prometheus") or "prometheus",
                    f"--config.file={self.run_dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.data_dir / 'prometheus'}",
                    f"--web.listen-address=127.0.0.1:{self.ports.prometheus}",
                    "--storage.tsdb.retention.time=2d",
                ],
                {},
                20,
            ),
        }
        programs["wechat_sim"] = (
            [sys.executable, "-m", "sim.wechat"],
            {"WECHAT_SIM_HTTP_PORT": str(self.ports.wechat_sim), "PYTHONUNBUFFERED": "1"},
            10,
        )
        programs["carrier_sim"] = (
            [sys.executable, "-m", "sim.carriers"],
            # A day and a half of carrier scans in about a minute and a half.
            {
                "CARRIER_SIM_HTTP_PORT": str(self.ports.carrier_sim),
                "CARRIER_SIM_TIME_SCALE": "1500",
                "PYTHONUNBUFFERED": "1",
            },
            10,
        )
        for name, (argv, _, _) in self.extra_programs.items():
            programs[name] = (argv, {"PYTHONUNBUFFERED": "1"}, 10)
        for process, port in self.ports.services.items():
            service, role_env = SERVICE_PROCESSES[process]
            prefix = service.upper()
            workers = WEB_WORKERS.get(process, 1)
            extra_env = {"PROMETHEUS_MULTIPROC_DIR": str(self._metrics_dir(process))} if workers > 1 else {}
            programs[process] = (
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    f"services.{service}.main:create_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--no-access-log",
                    "--no-proxy-headers",
                    "--workers",
                    str(workers),
                    "--timeout-graceful-shutdown",
                    "20",
                    "--timeout-keep-alive",
                    str(KEEP_ALIVE_S),
                ],
                {
                    **self.client_environment(),
                    **self._service_links(service),
                    **role_env,
                    **extra_env,
                    f"{prefix}_HTTP_PORT": str(port),
                    **(
                        {f"{prefix}_INTERNAL_HTTP_PORT": str(self.ports.private[process])}
                        if process in self.ports.private
                        else {}
                    ),
                    "PYTHONUNBUFFERED": "1",
                },
                40,
            )
        for name, level in self.niceness.items():
            if name in programs and level:
                argv, env, stopwait = programs[name]
                programs[name] = (["nice", "-n", str(level), *argv], env, stopwait)
        return programs

    def _render_supervisor(self) -> Path:
        lines = [
            "; Rendered by ops/stack.py: the local stack's process supervisor.",
            "[unix_http_server]",
            f"file={self.supervisor_socket}",
            "",
            "[supervisord]",
            f"logfile={self.logs_dir / 'supervisord.log'}",
            f"pidfile={self.run_dir / 'supervisord.pid'}",
            f"directory={REPO_ROOT}",
            "logfile_maxbytes=10MB",
            "loglevel=info",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl=unix://{self.supervisor_socket}",
            "",
        ]
        programs = self._program_commands()
        # Infrastructure first; services depend on it (and retry until it answers).
        for priority, name in enumerate(self.components, start=1):
            argv, env, stopwait = programs[name]
            env = {**env, **self.component_env.get(name, {})}
            env_line = ",".join(f'{k}="{v}"' for k, v in env.items())
            lines += [
                f"[program:{name}]",
                "command=" + " ".join(_supervisor_quote(a) for a in argv),
                f"priority={priority * 10}",
                "autostart=true",
                "autorestart=unexpected",
                "startsecs=2",
                "startretries=3",
                "stopsignal=TERM",
                f"stopwaitsecs={stopwait}",
                "stopasgroup=true",
                "killasgroup=true",
                "redirect_stderr=true",
                f"stdout_logfile={self.logs_dir / (name + '.log')}",
                "stdout_logfile_maxbytes=20MB",
                "stdout_logfile_backups=2",
            ]
            if env_line:
                lines.append(f"environment={env_line}")
            lines.append("")
        self.supervisor_conf.write_text("\n".join(lines))
        return self.supervisor_conf

    def _metrics_dir(self, process: str) -> Path:
        return self.run_dir / "prometheus-multiproc" / process

    def render(self) -> None:
        for path in (self.run_dir, self.logs_dir, self.data_dir / "kafka", self.data_dir / "ferretdb"):
            path.mkdir(parents=True, exist_ok=True)
        for process in WEB_WORKERS:  # multiprocess metric files must not outlive the processes
            shutil.rmtree(self._metrics_dir(process), ignore_errors=True)
            self._metrics_dir(process).mkdir(parents=True)
        if "kafka" in self.components:
            self._render_kafka()
        if "prometheus" in self.components:
            self._render_prometheus()
        self._render_supervisor()

    # ---- preparing ---------------------------------------------------------------------------------------
    def check_installed(self) -> None:
        missing = []
        if "kafka" in self.components and not any(KAFKA_LIB.glob("kafka_2.13-*.jar")):
            missing.append(f"Kafka jars in {KAFKA_LIB}")
        if "ferretdb" in self.components and not FERRETDB_BIN.exists():
            missing.append(f"FerretDB binary {FERRETDB_BIN}")
        if "prometheus" in self.components and not shutil.which("prometheus"):
            missing.append("the prometheus command (Debian package)")
        if missing:
            raise StackError("not set up: " + "; ".join(missing) + ". Run `make setup`.")

    def _format_kafka_storage(self) -> None:
        if (self.data_dir / "kafka" / "meta.properties").exists():
            return
        java = shutil.which("java") or "java"
        formatted = subprocess.run(
            [
                java,
                f"-Dlog4j.configuration=file:{DEPLOY_LOCAL / 'log4j.properties'}",
                "-cp",
                f"{KAFKA_LIB}/*",
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={self._kafka_cluster_id()}",  # one token: an id may begin with "-"
                "-c",
                str(self.run_dir / "kafka-server.properties"),
                "--ignore-formatted",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if formatted.returncode != 0:
            raise StackError(
                f"formatting Kafka storage failed: {formatted.stdout[-500:]} {formatted.stderr[-1500:]}"
            )

    # ---- supervisor control -------------------------------------------------------------------------------
    def _rpc(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.supervisor_socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def supervisor_running(self) -> bool:
        if not self.supervisor_socket.exists():
            return False
        try:
            self._rpc().supervisor.getState()
        except (OSError, xmlrpc.client.Fault):
            return False
        return True

    def start(self) -> None:
        """Start supervisord in the background with every component; returns once it has them."""
        self.check_installed()
        if self.supervisor_running():
            raise StackError(f"the stack in {self.run_dir} is already running (`make down` stops it)")
        busy = [f"{c}:{p}" for c in self.components for p in self._ports_of(c) if port_in_use(p)]
        if busy:
            raise StackError(f"ports already in use: {', '.join(busy)}")
        self.render()
        if "kafka" in self.components:
            self._format_kafka_storage()
        spawned = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.supervisor_conf)],
            check=False,
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        if spawned.returncode != 0:
            raise StackError(f"supervisord did not start: {spawned.stderr[-1500:]}")
        deadline = time.monotonic() + 15
        while not self.supervisor_running():
            if time.monotonic() > deadline:
                self._kill_supervisor()
                raise StackError(f"supervisord did not answer; see {self.logs_dir / 'supervisord.log'}")
            time.sleep(0.1)

    def _kill_supervisor(self) -> None:
        pidfile = self.run_dir / "supervisord.pid"
        if pidfile.exists() and _pid_alive(pidfile):
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)

    def stop_component(self, name: str) -> None:
        """Stop one process (for failure tests); `start_component` brings it back."""
        self._rpc().supervisor.stopProcess(name, True)

    def start_component(self, name: str) -> None:
        self._rpc().supervisor.startProcess(name, True)

    def process_states(self) -> dict[str, str]:
        if not self.supervisor_running():
            return {}
        return {p["name"]: p["statename"] for p in self._rpc().supervisor.getAllProcessInfo()}

    def stop(self, timeout_s: float = 300) -> None:
        """Stop every process and supervisord; returns when no process and no port is left behind."""
        pidfile = self.run_dir / "supervisord.pid"
        if self.supervisor_running():
            self._rpc().supervisor.shutdown()
        deadline = time.monotonic() + timeout_s
        while pidfile.exists() and _pid_alive(pidfile):
            if time.monotonic() > deadline:
                raise StackError(f"supervisord did not stop within {timeout_s}s")
            time.sleep(0.2)
        busy = [f"{c}:{p}" for c in self.components for p in self._ports_of(c) if port_in_use(p)]
        if busy:
            raise StackError(f"ports still in use after stopping: {', '.join(busy)}")

    def _ports_of(self, component: str) -> list[int]:
        if component in self.extra_programs:
            return [self.extra_programs[component][1]]
        return self.ports.of(component)

    def process_ids(self) -> dict[str, int]:
        """name -> pid of every running process (for CPU and memory figures)."""
        return {p["name"]: p["pid"] for p in self._rpc().supervisor.getAllProcessInfo() if p["pid"]}

    # ---- health --------------------------------------------------------------------------------------------
    async def _probe(self, name: str) -> str:
        """Empty string when `name` answers its health check over the wire, else why not."""
        try:
            if name == "kafka":
                admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka_bootstrap, request_timeout_ms=3000)
                await admin.start()
                try:
                    await admin.list_topics()
                finally:
                    await admin.close()
            elif name == "ferretdb":
                await asyncio.to_thread(_mongo_ping, self.mongo_uri)
            elif name in self.extra_programs:
                _, port, path = self.extra_programs[name]
                async with httpx.AsyncClient(timeout=3) as client:
                    response = await client.get(f"http://127.0.0.1:{port}{path}")
                if response.status_code != 200:
                    return f"{name} answered {response.status_code}"
            else:
                url = {
                    "prometheus": f"{self.prometheus_url}/-/ready",
                    "wechat_sim": f"{self.wechat_sim_url}/sim/health",
                    "carrier_sim": f"{self.carrier_sim_url}/sim/health",
                }.get(name) or f"{self.service_url(name)}/readyz"
                async with httpx.AsyncClient(timeout=3) as client:
                    response = await client.get(url)
                if response.status_code != 200:
                    return f"{url} answered {response.status_code}: {response.text[:200]}"
        except Exception as exc:  # any failure means "not healthy yet"; the reason is reported
            return f"{type(exc).__name__}: {exc}"[:300]
        return ""

    async def health(self) -> list[ComponentHealth]:
        states = self.process_states()
        reasons = await asyncio.gather(*(self._probe(c) for c in self.components))
        return [
            ComponentHealth(c, states.get(c, "STOPPED"), states.get(c) == "RUNNING" and not why, why)
            for c, why in zip(self.components, reasons, strict=True)
        ]

    def wait_healthy(
        self, timeout_s: float = 180, on_poll: Callable[[list[ComponentHealth]], None] | None = None
    ) -> list[ComponentHealth]:
        """Block until every component answers its health check; fail fast if one dies."""
        deadline = time.monotonic() + timeout_s
        while True:
            report = asyncio.run(self.health())
            if on_poll:
                on_poll(report)
            if all(c.healthy for c in report):
                return report
            # BACKOFF is supervisord retrying a start: wait for it; FATAL means it gave up.
            dead = [c for c in report if c.state in ("FATAL", "EXITED", "STOPPED")]
            if dead or time.monotonic() > deadline:
                problems = "; ".join(f"{c.name} [{c.state}] {c.detail}" for c in report if not c.healthy)
                raise StackError(f"stack not healthy: {problems}. Logs: {self.logs_dir}")
            time.sleep(0.5)


def _supervisor_quote(arg: str) -> str:
    # supervisor splits `command=` with shlex and expands %(...)s.
    escaped = arg.replace("%", "%%")
    if any(ch in escaped for ch in " \"'"):
        return '"' + escaped.replace('"', '\\"') + '"'
    return escaped


def _pid_alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (ProcessLookupError, ValueError, FileNotFoundError):
        return False
    return True


def _mongo_ping(uri: str) -> None:
    client: MongoClient[dict[str, object]]
    with MongoClient(uri, serverSelectionTimeoutMS=2000) as client:
        client.admin.command("ping")


def default_stack(components: tuple[str, ...] = ALL_COMPONENTS) -> LocalStack:
    settings = LocalStackSettings()
    run_dir = Path(settings.run_dir)
    if not run_dir.is_absolute():
        run_dir = REPO_ROOT / run_dir
    return LocalStack(
        run_dir=run_dir,
        ports=StackPorts.from_settings(settings),
        components=components,
        kafka_heap=settings.kafka_heap,
    )
