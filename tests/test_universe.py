"""Universes as files: the shipped seed universe, category selection, dedupe across categories, one-line
errors naming the file and the key, and the --universe/--categories flags of the entry points."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.loader import CONFIG_DIR
from experiments import backtest, build_dataset, check_lookahead, fetch_news, paper_trade
from experiments.common import UsageError, run_cli, symbols_from_args
from features.universe import UniverseError, load_universe

SEED = CONFIG_DIR / "universes" / "seed.yaml"
SECTORS = ["information_technology", "communication_services", "consumer_discretionary", "consumer_staples", "energy",
           "financials", "health_care", "industrials", "materials", "real_estate", "utilities"]

SMALL = """\
name: small
categories:
  technology: {asset_class: us_equity, symbols: [AAPL, MSFT, BRK.B]}
  etfs: {asset_class: us_equity, symbols: [SPY, QQQ]}
  crypto: {asset_class: crypto, symbols: [BTC/USD, ETH/USD]}
  mega_caps: {asset_class: us_equity, symbols: [MSFT, AAPL, NVDA]}
"""


def write(tmp_path: Path, text: str, name: str = "u.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def one_line_error(path: Path, *needles: str) -> str:
    with pytest.raises(UniverseError) as caught:
        load_universe(path)
    message = str(caught.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for needle in needles:
        assert needle in message, message
    return message


# --- the shipped seed universe


def test_the_seed_universe_loads_with_about_150_symbols_after_dedupe() -> None:
    universe = load_universe(SEED)
    symbols = universe.symbols()
    assert universe.name == "seed"
    assert 140 <= len(symbols) <= 170
    assert len(symbols) == len(set(symbols))
    assert universe.duplicates  # some symbols are in two categories on purpose


def test_the_seed_universe_has_sectors_etfs_and_crypto() -> None:
    universe = load_universe(SEED)
    assert set(SECTORS) <= set(universe.category_names)
    assert all(len(universe.categories[s].symbols) >= 8 for s in SECTORS)
    assert {"SPY", "QQQ", "IWM", "DIA", "XLK", "XLF", "XLE"} <= set(universe.symbols(["etfs"]))
    crypto = universe.symbols(["crypto"])
    assert {"BTC/USD", "ETH/USD", "SOL/USD"} <= set(crypto)
    assert all(universe.asset_class(s) == "crypto" for s in crypto)
    assert all(universe.asset_class(s) == "us_equity" for s in universe.symbols(SECTORS + ["etfs"]))


def test_every_crypto_symbol_of_the_seed_has_a_slash_and_no_stock_does() -> None:
    universe = load_universe(SEED)
    for symbol in universe.symbols():
        assert ("/" in symbol) == (universe.asset_class(symbol) == "crypto"), symbol


# --- selection and dedupe


def test_categories_select_their_symbols_deduplicated_in_file_order(tmp_path) -> None:
    universe = load_universe(write(tmp_path, SMALL))
    assert universe.symbols() == ["AAPL", "MSFT", "BRK.B", "SPY", "QQQ", "BTC/USD", "ETH/USD", "NVDA"]
    assert universe.symbols(["crypto", "etfs"]) == ["SPY", "QQQ", "BTC/USD", "ETH/USD"]
    assert universe.symbols(["mega_caps"]) == ["MSFT", "AAPL", "NVDA"]
    assert universe.symbols(["technology", "mega_caps"]) == ["AAPL", "MSFT", "BRK.B", "NVDA"]


def test_a_repeated_symbol_keeps_its_first_category_and_the_duplicates_are_recorded(tmp_path) -> None:
    universe = load_universe(write(tmp_path, SMALL))
    assert universe.category_of("AAPL") == "technology"
    assert universe.category_of("NVDA") == "mega_caps"
    assert universe.duplicates == {"AAPL": ("technology", "mega_caps"), "MSFT": ("technology", "mega_caps")}
    assert universe.asset_class("ETH/USD") == "crypto" and universe.asset_class("MSFT") == "us_equity"


def test_the_description_line_counts_each_symbol_once_per_chosen_category(tmp_path) -> None:
    universe = load_universe(write(tmp_path, SMALL))
    line = universe.describe(["technology", "mega_caps", "crypto"])
    assert "\n" not in line
    assert "6 symbols from technology 3, crypto 2, mega_caps 1" in line
    assert "AAPL (technology/mega_caps)" in line and "BTC/USD" in line and "SPY" not in line


def test_the_name_defaults_to_the_file_stem(tmp_path) -> None:
    path = write(tmp_path, "categories: {a: {asset_class: us_equity, symbols: [F]}}\n", "mine.yaml")
    assert load_universe(path).name == "mine"


# --- bad input: one line naming the file and the key


def test_an_unknown_category_asked_for_lists_the_known_ones(tmp_path) -> None:
    path = write(tmp_path, SMALL)
    with pytest.raises(UniverseError) as caught:
        load_universe(path).symbols(["etf", "crypto"])
    message = str(caught.value)
    assert str(path) in message and "'etf'" in message and "technology, etfs, crypto, mega_caps" in message
    assert "\n" not in message


def test_an_unknown_symbol_is_named(tmp_path) -> None:
    with pytest.raises(UniverseError, match="'GOOG' is in no category"):
        load_universe(write(tmp_path, SMALL)).asset_class("GOOG")


def test_an_empty_category_is_an_error(tmp_path) -> None:
    path = write(tmp_path, "categories:\n  etfs: {asset_class: us_equity, symbols: []}\n")
    one_line_error(path, "categories.etfs.symbols", "empty")
    path = write(tmp_path, "categories:\n  etfs: {asset_class: us_equity}\n", "v.yaml")
    one_line_error(path, "categories.etfs.symbols", "empty")


def test_no_categories_is_an_error(tmp_path) -> None:
    one_line_error(write(tmp_path, "name: x\ncategories: {}\n"), "categories")
    one_line_error(write(tmp_path, "name: x\n", "v.yaml"), "categories")


def test_a_crypto_pair_listed_in_a_stock_category_is_an_error(tmp_path) -> None:
    path = write(tmp_path, "categories:\n  a: {asset_class: us_equity, symbols: [SPY]}\n"
                           "  b: {asset_class: crypto, symbols: [BTC/USD]}\n"
                           "  c: {asset_class: us_equity, symbols: [BTC/USD]}\n")
    one_line_error(path, "categories.c.symbols", "'BTC/USD'", "us_equity")


def test_a_symbol_in_two_categories_of_different_asset_classes_is_an_error(tmp_path, monkeypatch) -> None:
    from features import universe as module

    # today's symbol shapes never fit both classes; let one shape fit both to reach the check itself
    monkeypatch.setitem(module._SYMBOL_PATTERNS, "crypto", module._SYMBOL_PATTERNS["us_equity"])
    path = write(tmp_path, "categories:\n  stocks: {asset_class: us_equity, symbols: [SPY, COIN]}\n"
                           "  coins: {asset_class: crypto, symbols: [COIN]}\n")
    one_line_error(path, "categories.coins.symbols", "COIN", "us_equity", "crypto", "categories.stocks")


def test_a_symbol_in_two_categories_of_one_asset_class_is_kept_once(tmp_path) -> None:
    path = write(tmp_path, "categories:\n  stocks: {asset_class: us_equity, symbols: [SPY, COIN]}\n"
                           "  more: {asset_class: us_equity, symbols: [COIN]}\n")
    universe = load_universe(path)
    assert universe.symbols() == ["SPY", "COIN"] and universe.duplicates == {"COIN": ("stocks", "more")}


def test_an_unknown_asset_class_is_an_error(tmp_path) -> None:
    path = write(tmp_path, "categories:\n  fx: {asset_class: forex, symbols: [EURUSD]}\n")
    one_line_error(path, "categories.fx.asset_class", "'forex'", "us_equity, crypto")
    path = write(tmp_path, "categories:\n  fx: {symbols: [EURUSD]}\n", "v.yaml")
    one_line_error(path, "categories.fx.asset_class", "None")


@pytest.mark.parametrize("asset_class, symbol", [
    ("crypto", "BTCUSD"), ("crypto", "btc/usd"), ("crypto", "BTC/USD/X"),
    ("us_equity", "aapl"), ("us_equity", "BRK/B"), ("us_equity", "AAPL "), ("us_equity", "1234"),
    ("us_equity", "BRK."), ("us_equity", "TOOLONGTICKER"),
])
def test_a_malformed_symbol_is_an_error(tmp_path, asset_class, symbol) -> None:
    path = write(tmp_path, f"categories:\n  c: {{asset_class: {asset_class}, symbols: ['{symbol}']}}\n")
    one_line_error(path, "categories.c.symbols", repr(symbol), asset_class)


def test_an_unquoted_boolean_ticker_is_an_error_saying_to_quote_it(tmp_path) -> None:
    path = write(tmp_path, "categories:\n  chips: {asset_class: us_equity, symbols: [NVDA, ON]}\n")
    one_line_error(path, "categories.chips.symbols", "True", "quote")


def test_a_symbol_listed_twice_in_one_category_is_an_error(tmp_path) -> None:
    path = write(tmp_path, "categories:\n  c: {asset_class: us_equity, symbols: [SPY, QQQ, SPY]}\n")
    one_line_error(path, "categories.c.symbols", "SPY", "twice")


@pytest.mark.parametrize("text, needle", [
    ("- AAPL\n- MSFT\n", "list"),
    ("just text\n", "str"),
    ("", "NoneType"),
])
def test_a_yaml_that_is_not_a_mapping_is_an_error(tmp_path, text, needle) -> None:
    one_line_error(write(tmp_path, text), "top level", needle)


def test_invalid_yaml_and_a_repeated_key_are_errors(tmp_path) -> None:
    one_line_error(write(tmp_path, "categories: {a: [\n"), "not valid YAML")
    path = write(tmp_path, "categories:\n  etfs: {asset_class: us_equity, symbols: [SPY]}\n"
                           "  etfs: {asset_class: us_equity, symbols: [QQQ]}\n", "v.yaml")
    one_line_error(path, "'etfs' appears twice")


def test_unknown_keys_are_errors_naming_them(tmp_path) -> None:
    one_line_error(write(tmp_path, "name: x\ncategoris: {}\n"), "'categoris'", "valid keys")
    path = write(tmp_path, "categories:\n  etfs: {asset_class: us_equity, symbol: [SPY]}\n", "v.yaml")
    one_line_error(path, "categories.etfs", "'symbol'", "valid keys")


def test_a_category_that_is_not_a_mapping_or_symbols_not_a_list_is_an_error(tmp_path) -> None:
    one_line_error(write(tmp_path, "categories:\n  etfs: [SPY, QQQ]\n"), "categories.etfs", "mapping")
    path = write(tmp_path, "categories:\n  etfs: {asset_class: us_equity, symbols: SPY}\n", "v.yaml")
    one_line_error(path, "categories.etfs.symbols", "list")


def test_a_missing_universe_file_names_it(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.yaml does not exist"):
        load_universe(tmp_path / "missing.yaml")


# --- the command-line flags


def test_fetch_news_help_lists_universe_and_categories(capsys) -> None:
    assert run_cli(fetch_news.main, ["--help"]) == 0
    out = capsys.readouterr().out
    assert "--universe PATH" in out and "--categories CATEGORY" in out


@pytest.mark.parametrize("module", [fetch_news, check_lookahead, build_dataset, backtest, paper_trade])
def test_every_command_taking_symbols_takes_a_universe(module, capsys) -> None:
    main = module.main if module is not check_lookahead else (lambda argv: check_lookahead.build_parser().parse_args(argv))
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "--universe PATH" in capsys.readouterr().out


def test_symbols_and_universe_together_is_a_usage_error() -> None:
    args = fetch_news.build_parser().parse_args(["--symbols", "AAPL", "--universe", str(SEED), "--start", "2024-01-01"])
    with pytest.raises(UsageError, match="--symbols and --universe were both given"):
        symbols_from_args(args, None)


def test_categories_without_a_universe_is_a_usage_error() -> None:
    args = fetch_news.build_parser().parse_args(["--categories", "etfs", "--start", "2024-01-01"])
    with pytest.raises(UsageError, match="--categories was given without --universe"):
        symbols_from_args(args, None)


def test_a_universe_on_the_command_line_gives_its_symbols_and_prints_them(capsys) -> None:
    args = check_lookahead.build_parser().parse_args(["--universe", str(SEED), "--categories", "crypto"])
    symbols = symbols_from_args(args, None)
    assert symbols[:2] == ["BTC/USD", "ETH/USD"] and len(symbols) == 10
    out = capsys.readouterr().out
    assert "universe seed" in out and "10 symbols from crypto 10" in out and "BTC/USD" in out


def test_without_either_flag_the_default_is_kept() -> None:
    args = check_lookahead.build_parser().parse_args([])
    assert symbols_from_args(args, ["AAPL"]) == ["AAPL"]
    args = check_lookahead.build_parser().parse_args(["--symbols", "IBM"])
    assert symbols_from_args(args, ["AAPL"]) == ["IBM"]
    args = backtest.build_parser().parse_args(["--symbol", "IBM", "--symbol", "MSFT"])
    assert symbols_from_args(args, None, "--symbol") == ["IBM", "MSFT"]


def test_backtest_refuses_symbol_and_universe_together(capsys) -> None:
    assert run_cli(backtest.main, ["--symbol", "AAPL", "--universe", str(SEED)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --symbol and --universe were both given") and "\n" not in err


def exit_code(module, argv: list[str]) -> int:
    """The exit code of an entry point run in-process (check_lookahead's main returns its own)."""
    return module.main(argv) if module is check_lookahead else run_cli(module.main, argv)


@pytest.mark.parametrize("module, argv", [
    (fetch_news, ["--start", "2024-01-01"]),
    (check_lookahead, []),
    (build_dataset, []),
    (backtest, []),
])
def test_a_bad_universe_on_the_command_line_is_one_line(module, argv, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written, not even in a default output folder
    path = write(tmp_path, SMALL)
    code = exit_code(module, argv + ["--universe", str(path), "--categories", "etf"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and str(path) in err and "'etf'" in err, err
    code = exit_code(module, argv + ["--universe", str(tmp_path / "none.yaml")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--universe" in err and "none.yaml does not exist" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.yaml"]


def test_build_dataset_builds_the_symbols_of_a_universe(tmp_path, capsys) -> None:
    from features.dataset import load_dataset

    path = write(tmp_path, "categories:\n  tech: {asset_class: us_equity, symbols: [MSFT, AAPL]}\n"
                           "  mega: {asset_class: us_equity, symbols: [AAPL]}\n")
    assert run_cli(build_dataset.main, ["--universe", str(path), "--output", str(tmp_path / "d")]) == 0
    assert "2 symbols from tech 2, mega 0" in capsys.readouterr().out
    assert list(load_dataset(tmp_path / "d").symbols) == ["MSFT", "AAPL"]


def test_backtest_of_universe_symbols_outside_the_dataset_is_one_line_naming_the_universe(tmp_path, capsys) -> None:
    path = write(tmp_path, "categories:\n  coins: {asset_class: crypto, symbols: [BTC/USD]}\n")
    code = run_cli(backtest.main, ["--universe", str(path), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and f"--universe {path} BTC/USD is not in the dataset" in err, err
    assert not (tmp_path / "runs").exists()
