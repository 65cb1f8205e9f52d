"""`python -m experiments.paper_trade` mistakes and outages end in one line (``error: ... — ...``, exit code 2),
never a traceback, and before anything runs: Alpaca unreachable, refusing the keys or failing after its
retries; a monitor port in use or out of range; ``--max-cycles`` below 1; a config value out of range
(named by file and key). ``--debug`` keeps the traceback.

The Alpaca cases run against the local fake of tests/fake_alpaca_trading.py (its fault rules); the saved
policy is replaced by the live tests' small deterministic policy, so no model is trained here.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from configs.loader import ConfigError
from experiments import paper_trade
from experiments.common import run_cli
from live.config import PaperConfig

from fake_alpaca_trading import API_KEY, SECRET_KEY, Rule
from live_helpers import live_policy, market, server  # noqa: F401  (server is a fixture)

pytestmark = [pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
              pytest.mark.timeout(60)]


@pytest.fixture
def fake(server, monkeypatch):
    """The fake Alpaca, the keys in the environment, and the small policy in place of a saved one."""
    monkeypatch.setenv("APCA_API_KEY_ID", API_KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET_KEY)
    bars, _ = market(("AAPL",))
    policy = live_policy(bars)
    monkeypatch.setattr(paper_trade, "load_live_policy", lambda spec: policy)
    return server.fake


def write_config(tmp_path: Path, url: str | None = None, **sections: dict) -> Path:
    """A paper config pointing the broker at ``url`` with quick retries, plus ``sections``."""
    data: dict[str, dict] = {"broker": {"trading_url": url, "data_url": url, "read_timeout": 2, "max_retries": 2,
                                        "backoff_base": 0.0},
                             "loop": {"history_bars": 200}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def paper(tmp_path: Path, config: Path, *extra: str) -> list[str]:
    """The arguments of one ``--once`` cycle of the saved policy (a folder holding bundle.json) on AAPL."""
    policy = tmp_path / "policy"
    policy.mkdir(exist_ok=True)
    (policy / "bundle.json").write_text("{}")
    return ["--policy", str(policy), "--symbols", "AAPL", "--config", str(config), "--once",
            "--runs-dir", str(tmp_path / "runs"), "--run-name", "paper_errors", *extra]


def one_line_error(capsys, code: int) -> str:
    """The error line, checking exit code 2, exactly one ``error:`` line and no traceback."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- Alpaca failures --------------------------------------------------------------------------------------

def test_an_unreachable_alpaca_host_is_one_line_naming_the_endpoint_before_anything_is_written(fake, tmp_path,
                                                                                                capsys):
    url = f"http://127.0.0.1:{closed_port()}"
    line = one_line_error(capsys, run_cli(paper_trade.main, paper(tmp_path, write_config(tmp_path, url))))
    assert f"GET {url}/v2/clock" in line and "Connection refused" in line and "after 3 attempts" in line
    assert "broker.trading_url" in line
    assert not (tmp_path / "runs" / "paper_errors").exists()


@pytest.mark.parametrize("status", [401, 403])
def test_keys_alpaca_refuses_are_one_line_naming_the_status_and_the_keys_to_check(fake, tmp_path, capsys, status):
    fake.add_rule(Rule("GET", "/v2/", status=status, payload={"message": "forbidden."}, times=100))
    line = one_line_error(capsys, run_cli(paper_trade.main, paper(tmp_path, write_config(tmp_path, fake.url))))
    assert f"GET {fake.url}/v2/clock answered HTTP {status}" in line
    assert "APCA_API_KEY_ID" in line and "APCA_API_SECRET_KEY" in line and "broker.trading_url" in line
    assert API_KEY not in line and SECRET_KEY not in line
    assert not (tmp_path / "runs" / "paper_errors").exists() and not fake.orders


def test_wrong_keys_are_one_line(fake, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("APCA_API_SECRET_KEY", "not-the-secret")  # the fake answers 401 to other keys
    line = one_line_error(capsys, run_cli(paper_trade.main, paper(tmp_path, write_config(tmp_path, fake.url))))
    assert "answered HTTP 401" in line and "APCA_API_SECRET_KEY" in line and "not-the-secret" not in line


def test_a_server_error_after_the_retries_is_one_line_naming_the_endpoint_and_the_attempts(fake, tmp_path, capsys):
    fake.add_rule(Rule("GET", "/v2/account", status=500, times=100))
    line = one_line_error(capsys, run_cli(paper_trade.main, paper(tmp_path, write_config(tmp_path, fake.url))))
    assert f"GET {fake.url}/v2/account answered HTTP 500" in line and "after 3 attempts" in line
    assert "status.alpaca.markets" in line and "broker.trading_url" in line
    assert not fake.orders


def test_a_broker_failure_as_the_run_starts_is_one_line(fake, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(paper_trade, "_check_broker", lambda broker, kind: None)  # the failure reaches the loop
    fake.add_rule(Rule("GET", "/v2/clock", status=503, times=100))
    line = one_line_error(capsys, run_cli(paper_trade.main, paper(tmp_path, write_config(tmp_path, fake.url))))
    assert f"GET {fake.url}/v2/clock answered HTTP 503" in line and not fake.orders


def test_debug_shows_the_traceback_of_a_broker_failure(fake, tmp_path):
    fake.add_rule(Rule("GET", "/v2/", status=403, times=100))
    with pytest.raises(paper_trade.BrokerUnavailable, match="HTTP 403"):
        run_cli(paper_trade.main, paper(tmp_path, write_config(tmp_path, fake.url), "--debug"))


# ---- the monitor's port ----------------------------------------------------------------------------------

def test_serve_on_a_port_in_use_is_one_line_naming_the_port(fake, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = run_cli(paper_trade.main, paper(tmp_path, write_config(tmp_path, fake.url), "--serve", str(port)))
    line = one_line_error(capsys, code)
    assert f"--serve {port}" in line and "in use" in line
    assert not (tmp_path / "runs" / "paper_errors").exists() and not fake.orders


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_serve_on_a_port_out_of_range_is_refused_before_anything_runs(fake, tmp_path, capsys, port):
    line = one_line_error(capsys, run_cli(paper_trade.main,
                                          paper(tmp_path, write_config(tmp_path, fake.url), "--serve", port)))
    assert "--serve" in line and port in line and "65535" in line
    assert not fake.requests


def test_monitor_serve_port_of_the_config_out_of_range_names_the_file_and_key(fake, tmp_path, capsys):
    config = write_config(tmp_path, fake.url, monitor={"serve_port": 70000})
    line = one_line_error(capsys, run_cli(paper_trade.main, paper(tmp_path, config)))
    assert f"{config}: monitor.serve_port=70000" in line and not fake.requests


def test_monitor_serve_port_of_the_config_in_use_names_the_file_and_key(fake, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, fake.url, monitor={"serve_port": port})
        code = run_cli(paper_trade.main, paper(tmp_path, config))
    line = one_line_error(capsys, code)
    assert f"monitor.serve_port={port}" in line and "in use" in line and not fake.orders


# ---- --max-cycles ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cycles", ["0", "-1"])
def test_max_cycles_below_one_is_refused_before_any_cycle_runs(fake, tmp_path, capsys, cycles):
    argv = [a for a in paper(tmp_path, write_config(tmp_path, fake.url)) if a != "--once"]
    line = one_line_error(capsys, run_cli(paper_trade.main, argv + ["--max-cycles", cycles]))
    assert "--max-cycles" in line and cycles in line
    assert not fake.requests and not (tmp_path / "runs").exists()


# ---- config values, checked when the config is loaded ------------------------------------------------------

BAD_VALUES = [
    ("costs", "commission", 5),  # refused by sim.engine.Costs, the one validator of the cost settings
    ("costs", "slippage", 20_000),  # 200%: a sell would fill at a negative price
    ("broker", "connect_timeout", 0),
    ("broker", "read_timeout", -1),
    ("broker", "max_retries", -1),
    ("broker", "backoff_base", -0.5),
    ("broker", "qty_decimals", -1),
    ("broker", "trading_url", "paper-api.alpaca.markets"),
    ("loop", "capital", 0),
    ("loop", "capital", float("inf")),
    ("loop", "poll_seconds", 0),
    ("loop", "bar_delay_seconds", -1),
    ("loop", "min_rebalance", 2.0),
    ("loop", "history_bars", 0),
    ("monitor", "chart_bars", 0),
    ("monitor", "refresh_seconds", -1),
    ("monitor", "serve_port", -1),
    ("alerts", "broker_errors", 0),
    ("alerts", "webhook_timeout", 0),
    ("risk", "max_position", float("inf")),
]


@pytest.mark.parametrize("section, key, value", BAD_VALUES, ids=[f"{s}.{k}={v}" for s, k, v in BAD_VALUES])
def test_a_config_value_out_of_range_is_refused_on_load_naming_the_file_and_key(tmp_path, section, key, value):
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump({section: {key: value}}))
    with pytest.raises(ConfigError) as error:
        PaperConfig.from_yaml(path)
    text = str(error.value)
    assert text.startswith(f"{path}: {section}.{key}=") and "\n" not in text, text


def test_a_config_dict_is_checked_as_a_file_is():
    with pytest.raises(ConfigError, match=r"^paper config: loop\.min_rebalance=-0\.1 must be in \[0, 2\)"):
        PaperConfig.from_dict({"loop": {"min_rebalance": -0.1}})


def test_the_shipped_config_passes_the_checks():
    config = PaperConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "paper.yaml")
    assert config.costs.commission == 0.001 and config.monitor.serve_port is None


def test_a_commission_of_5_stops_the_sim_replay_in_one_line_naming_the_file(tmp_path, capsys):
    config = tmp_path / "paper.yaml"
    config.write_text(yaml.safe_dump({"costs": {"commission": 5}}))
    argv = ["--policy", str(tmp_path / "missing"), "--broker", "sim", "--config", str(config),
            "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    line = one_line_error(capsys, run_cli(paper_trade.main, argv))
    assert f"{config}: costs.commission=5" in line and not (tmp_path / "runs").exists()
