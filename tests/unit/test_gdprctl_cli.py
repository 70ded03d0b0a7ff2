"""gdprctl's promises that need no sandbox: flags before or after the verb, clean errors, exit codes."""

import pytest

from gdprctl.main import build_parser, main


@pytest.mark.parametrize("argv", [
    ["--json", "status"], ["status", "--json"], ["--stack", "S", "status"], ["status", "--stack", "S"],
])
def test_global_flags_go_before_or_after_the_verb(argv):
    args = build_parser().parse_args(argv)
    assert args.json == ("--json" in argv)
    assert args.stack == ("S" if "--stack" in argv else None)


def test_no_sandbox_is_a_clean_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GDPR_SANDBOX_DIR", str(tmp_path))
    assert main(["status", "--json"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gdprctl: ") and "make up" in err and "Traceback" not in err


def test_a_stack_without_a_region_is_a_clean_error(tmp_path, monkeypatch, capsys):
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    assert main(["--stack", "gdpr-prod", "status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gdprctl: ") and "Set AWS_REGION" in err and "Traceback" not in err


@pytest.mark.parametrize("now", ["", "garbage", "2026-12-10"])
def test_report_refuses_a_bad_now_before_touching_anything(tmp_path, monkeypatch, capsys, now):
    monkeypatch.setenv("GDPR_SANDBOX_DIR", str(tmp_path))
    assert main(["report", "--now", now]) == 1
    assert "RFC 3339" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["status"], ["status", "--no-stores"], ["--json", "status", "--no-stores"], ["status", "--no-stores", "--json"],
])
def test_status_no_stores_goes_with_the_global_flags(argv):
    args = build_parser().parse_args(argv)
    assert args.no_stores == ("--no-stores" in argv)
    assert args.json == ("--json" in argv)


def test_status_help_says_what_reading_the_stores_costs(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["status", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--no-stores" in out and "full Scan" in out and "grows with the data held" in out


@pytest.mark.parametrize("argv", [
    ["--stack", "", "status"], ["drain", "--stack", ""], ["--stack", "", "audit", "export"],
])
def test_an_empty_stack_is_refused_not_taken_for_the_sandbox(tmp_path, monkeypatch, capsys, argv):
    # `--stack "$STACK"` with STACK unset must not act on whatever sandbox runs here.
    monkeypatch.setenv("GDPR_SANDBOX_DIR", str(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--stack needs a stack name" in err and "make up" not in err


@pytest.mark.parametrize("argv, expected", [
    (["sites", "uninstall", "acme.atlassian.net", "--at", "2099-01-01T00:00:00Z"], "in the future"),
    (["sites", "uninstall", "acme.atlassian.net", "--at", ""], "RFC 3339"),
    (["sites", "uninstall", "acme atlassian net"], "site must be a site id"),
    (["audit", "export", "--since", ""], "RFC 3339"),
])
def test_bad_lifecycle_and_audit_options_are_refused_before_touching_anything(tmp_path, monkeypatch, capsys,
                                                                             argv, expected):
    monkeypatch.setenv("GDPR_SANDBOX_DIR", str(tmp_path))  # no sandbox: touching it would say "make up"
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert expected in err and "make up" not in err and "Traceback" not in err


def test_lifecycle_tick_is_a_verb_with_the_global_flags():
    args = build_parser().parse_args(["lifecycle", "tick", "--json"])
    assert args.func.__name__ == "cmd_lifecycle_tick" and args.json is True


def test_consent_lookup_of_a_non_email_says_so_without_echoing_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GDPR_SANDBOX_DIR", str(tmp_path))
    assert main(["consent", "lookup", "jane.doe-at-example"]) == 1
    err = capsys.readouterr().err
    assert err == "gdprctl: not an email address\n" and "jane" not in err
