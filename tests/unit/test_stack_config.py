import json
import shlex
from pathlib import Path

from ops.stack import LocalStack, StackPorts, free_ports


def test_rendered_stack_uses_the_given_ports_and_a_log_file_per_process(tmp_path: Path) -> None:
    ports = StackPorts(19092, 19093, 37017, 19090, 19001, 19002, {"order_ingest": 18001})
    stack = LocalStack(
        run_dir=tmp_path, ports=ports, components=("kafka", "ferretdb", "prometheus", "order_ingest")
    )
    stack.render()

    kafka = (tmp_path / "kafka-server.properties").read_text()
    assert "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093" in kafka
    assert f"log.dirs={tmp_path / 'data' / 'kafka'}" in kafka

    prometheus = json.loads((tmp_path / "prometheus.yml").read_text())
    targets = {c["job_name"]: c["static_configs"][0]["targets"] for c in prometheus["scrape_configs"]}
    assert targets["order_ingest"] == ["127.0.0.1:18001"]

    conf = (tmp_path / "supervisord.conf").read_text()
    for name in ("kafka", "ferretdb", "prometheus", "order_ingest"):
        assert f"[program:{name}]" in conf
        assert f"stdout_logfile={tmp_path / 'logs' / (name + '.log')}" in conf
    command = next(line for line in conf.splitlines() if line.startswith("command=") and "uvicorn" in line)
    argv = shlex.split(command.removeprefix("command="))
    assert argv[argv.index("--port") + 1] == "18001"
    assert 'KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:19092"' in conf
    assert 'MONGO_URI="mongodb://127.0.0.1:37017/"' in conf


def test_free_ports_are_distinct() -> None:
    ports = StackPorts.free()
    every = [
        ports.kafka,
        ports.kafka_controller,
        ports.mongo,
        ports.prometheus,
        ports.wechat_sim,
        ports.carrier_sim,
        ports.ferretdb_debug,
        *ports.services.values(),
    ]
    assert len(set(every)) == len(every)


def test_many_ports_asked_for_at_once_are_all_distinct() -> None:
    # Chosen one at a time (each socket closed before the next bind), 300 ports repeated one in 48 of
    # 50 tries on the development machine.
    ports = free_ports(300)

    assert len(set(ports)) == 300
    assert all(0 < port < 65536 for port in ports)


def test_the_stack_at_rest_writes_few_metadata_no_ops_and_is_scraped_every_15_s(tmp_path: Path) -> None:
    stack = LocalStack(run_dir=tmp_path, ports=StackPorts(), components=("kafka", "prometheus", "dispatch"))
    stack.render()

    kafka = (tmp_path / "kafka-server.properties").read_text().splitlines()
    assert "metadata.max.idle.interval.ms=5000" in kafka
    prometheus = json.loads((tmp_path / "prometheus.yml").read_text())
    assert prometheus["global"]["scrape_interval"] == "15s"


def test_the_webhook_comes_first_and_what_follows_a_dispatch_yields(tmp_path: Path) -> None:
    services = {"order_ingest": 18001, "order_ingest_worker": 18011, "dispatch": 18002, "logistics": 18003}
    ports = StackPorts(19092, 19093, 37017, 19090, 19001, 19002, services)
    stack = LocalStack(run_dir=tmp_path, ports=ports, components=tuple(services))
    stack.render()
    conf = (tmp_path / "supervisord.conf").read_text()

    def niceness(program: str) -> int:
        section = conf.split(f"[program:{program}]", 1)[1]
        argv = shlex.split(
            next(line for line in section.splitlines() if line.startswith("command=")).removeprefix(
                "command="
            )
        )
        return int(argv[argv.index("-n") + 1]) if argv[0] == "nice" else 0

    assert niceness("order_ingest") < niceness("order_ingest_worker") == niceness("dispatch") == 0
    assert niceness("logistics") > 0
