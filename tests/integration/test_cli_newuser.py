"""What trips a brand-new user following the README and the docs word for
word (round 7): each test here failed before its fix."""
import os
import socket
import subprocess

from cluster_util import redis  # noqa: F401  (fixture)
from conftest import WSGATE_BIN, free_port


def wsgate(*args, env=None, timeout=30, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TF_VAR_")}
    full_env.update(env or {})
    return subprocess.run([WSGATE_BIN, *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env, cwd=cwd)


def test_serve_on_a_busy_port_creates_nothing(tmp_path):
    """A start on a port another program holds used to create the data
    directory, the data key, the management credentials, the store and a
    PITR snapshot before it found the port busy."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    data = tmp_path / "data"
    try:
        r = wsgate("serve", "--port", str(port), "--data-dir", str(data))
    finally:
        holder.close()
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"wsgate: port {port} is already in use by another process (127.0.0.1)" in r.stderr
    assert not data.exists(), sorted(os.listdir(data))


def test_check_notes_a_port_in_use_and_still_passes(tmp_path):
    """check said "configuration is valid" of a port another program held,
    and serve failed at once on it. A port in use is no error for check (a
    server there may stop first), but it now says so."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        r = wsgate("check", "--port", str(port), "--data-dir", str(tmp_path / "d"))
    finally:
        holder.close()
    assert r.returncode == 0, r.stderr
    assert (f"note: port {port} is already in use by another process (127.0.0.1) now; serve will "
            "fail unless it is free by then") in r.stdout
    r = wsgate("check", "--port", str(port), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 0 and "already in use" not in r.stdout


def test_tf_var_typo_is_said_and_other_tf_vars_stay_silent():
    """TF_VAR_ of an unknown name is ignored as Terraform does; a typo of a
    variable (TF_VAR_stage_nam) was ignored in silence and the server came
    up on /staging. It is now a warning naming the variable meant; a name
    like no variable (another Terraform module's) stays silent."""
    r = wsgate("check", env={"TF_VAR_stage_nam": "prod", "TF_VAR_vpc_cidr_block": "10.0.0.0/16"})
    assert r.returncode == 0, r.stderr
    assert ('warning: TF_VAR_stage_nam is ignored: wsgate has no variable "stage_nam"; '
            "did you mean TF_VAR_stage_name?") in r.stderr
    assert "vpc_cidr_block" not in r.stderr
    assert 'stage_name                             = "staging"' in r.stdout
    r = wsgate("outputs", "-raw", "stage_name", env={"TF_VAR_STAGE_NAME": "prod"})
    assert r.returncode == 0 and r.stdout.strip() == "staging"
    assert "did you mean TF_VAR_stage_name?" in r.stderr


def test_offline_commands_say_a_wrong_data_dir(tmp_path):
    """backup, restore, export and rotate-key run from another directory
    (or with a typo in --data-dir) said "key file .../keys.json does not
    exist (encryption is enabled ...)", "cannot open ...: unable to open
    database file" or "no base snapshot ...: is
    enable_dynamodb_point_in_time_recovery on?". They now say the data
    directory or the store is not there, and write nothing."""
    missing = tmp_path / "nosuch"
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out.db"
    runs = {
        "backup": ["backup", "--out", str(out)],
        "restore": ["restore", "--to", "1796298000", "--out", str(out)],
        "export": ["export", "--room", "general"],
        "rotate-key": ["rotate-key"],
    }
    for name, args in runs.items():
        r = wsgate(*args, "--data-dir", str(missing))
        assert r.returncode == 1, (name, r.stderr)
        assert (f"wsgate: no data directory {missing}: is --data-dir right? "
                "(wsgate serve creates it on its first start)") in r.stderr, (name, r.stderr)
    for name in ("backup", "export"):
        r = wsgate(*runs[name], "--data-dir", str(empty))
        assert r.returncode == 1, (name, r.stderr)
        assert f"wsgate: no store at {empty}/websocket-api-dev.db: is --data-dir right" in r.stderr, \
            (name, r.stderr)
    assert not missing.exists() and not out.exists() and os.listdir(empty) == []


def test_outputs_json_and_raw_together_refused():
    """`outputs -json -raw NAME` printed the raw value and dropped -json in
    silence; terraform output refuses the pair, and so does wsgate now."""
    for args in (["-json", "-raw", "stage_name"], ["-raw", "stage_name", "-json"],
                 ["-raw=stage_name", "-json"]):
        r = wsgate("outputs", *args)
        assert r.returncode == 2 and r.stdout == "", (args, r.stdout)
        assert "wsgate: -json and -raw cannot be used together" in r.stderr


def test_cluster_node_with_its_own_key_file_says_which_setting(start_server, redis):
    """docs/redis.md's nodes by hand share the first node's key file. A node
    started without it (its own new keys.json) joins, and the other nodes'
    chats never reach its clients; its log said only "authentication
    failed: wrong key or tampered data". It now names the setting."""
    import asyncio
    import json
    import time

    import websockets

    from cluster_util import node_settings, wait_ready

    first = start_server(settings=node_settings(redis), name="keyA-")
    lone = start_server(settings=node_settings(redis), name="keyB-")  # no kms_key_file
    for n in (first, lone):
        wait_ready(n)

    async def main():
        a = await websockets.connect(first.url + "?userId=ann&roomId=keys")
        b = await websockets.connect(lone.url + "?userId=bob&roomId=keys")
        for ws in (a, b):
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "welcome"
        await a.send(json.dumps({"type": "chat", "message": "sealed with A's key"}))
        deadline = time.time() + 15
        while time.time() < deadline and "every node must use the same key file" not in lone.log():
            await asyncio.sleep(0.1)
        await a.close()
        await b.close()

    asyncio.run(main())
    assert ("authentication failed: wrong key or tampered data (every node must use the same "
            "key file: set kms_key_file to the first node's keys.json)") in lone.log()


SEED_PRODUCTION = '''aws_region   = "us-west-2"
environment  = "production"
project_name = "chat-app"
api_name    = "chat-websocket-api"
stage_name  = "prod"
'''


def test_outputs_of_a_production_tfvars_as_it_stands(tmp_path):
    """The README's `wsgate outputs -c terraform.tfvars` with the seed's
    (production) file failed with the demo-authorizer refusal that guards
    serve; the commands that serve nothing now read it as it stands, and
    check and serve still refuse it."""
    path = tmp_path / "terraform.tfvars"
    path.write_text(SEED_PRODUCTION)
    r = wsgate("outputs", "-c", str(path), "-raw", "test_connection_url")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("ws://127.0.0.1:8080/prod?userId=testuser&username=TestUser&roomId=general"
                        "&token=valid_test_token")
    r = wsgate("export", "-c", str(path), "--room", "general", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 1 and "no data directory" in r.stderr, r.stderr
    for cmd in ("check", "serve"):
        r = wsgate(cmd, "-c", str(path), "--port", "0", "--data-dir", str(tmp_path / "d"))
        assert r.returncode == 2 and "refuses the demo authorizer" in r.stderr, (cmd, r.stderr)
    assert not (tmp_path / "d").exists()


def test_backup_and_restore_out_that_cannot_be_a_file(start_server, tmp_path):
    """backup --out DIR and --out in a directory that does not exist said
    SQLite's "cannot write DIR: unable to open database file"; they now
    say which it is (exit 2, as --out naming the store), and a good --out
    still works."""
    srv = start_server()
    there = tmp_path / "there"
    there.mkdir()
    cases = [(["backup", "--out", str(there)],
              f"wsgate: --out {there} is a directory; name a file ({there}/backup.db)"),
             (["restore", "--to", "2026-01-01T00:00:00Z", "--out", str(there)],
              f"wsgate: --out {there} is a directory"),
             (["backup", "--out", str(tmp_path / "nosuch" / "b.db")],
              f"wsgate: --out {tmp_path}/nosuch/b.db: directory {tmp_path}/nosuch does not exist")]
    for args, said in cases:
        r = wsgate(*args, "--data-dir", srv.data_dir)
        assert r.returncode == 2 and said in r.stderr, (args, r.stderr)
    assert os.listdir(there) == []
    r = wsgate("backup", "--out", str(there / "b.db"), "--data-dir", srv.data_dir)
    assert r.returncode == 0 and (there / "b.db").exists(), r.stderr


def test_log_retention_days_error_lists_the_periods(tmp_path):
    """The seed's "must be one of the valid CloudWatch retention periods."
    named none of them; the sentence is kept and the list follows."""
    r = wsgate("check", "--set", "log_retention_days=10")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        'wsgate: --set: variable "log_retention_days": Log retention days must be one of the valid '
        "CloudWatch retention periods. They are 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, "
        "400, 545, 731, 1827 and 3653."), r.stderr
    for days in (1, 30, 3653):
        assert wsgate("check", "--set", f"log_retention_days={days}").returncode == 0


def test_help_command_prints_that_commands_help():
    """`wsgate help serve` printed the general usage, not serve's."""
    for cmd in ("serve", "export", "restore"):
        r = wsgate("help", cmd)
        assert r.returncode == 0, r.stderr
        assert r.stdout == wsgate(cmd, "--help").stdout
        assert r.stdout.startswith(f"Usage: wsgate {cmd} ")


def test_outputs_dial_the_running_server_started_with_other_flags(start_server):
    """README: `make run ARGS="--port 9000"`, then the quick tour's
    `wscat -c "$(wsgate outputs -raw test_connection_url)"`: outputs said
    port 8080 (the configuration without serve's flags) and wscat got
    ECONNREFUSED. While a server holds the data directory, its URLs are
    the outputs, with a note on stderr; once it stops, the configuration's
    again."""
    import asyncio
    import json

    import websockets

    srv = start_server()  # a free port, never 8080
    r = wsgate("outputs", "--data-dir", srv.data_dir, "-raw", "test_connection_url")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (f"ws://127.0.0.1:{srv.port}/staging?userId=testuser&username=TestUser"
                        "&roomId=general&token=valid_test_token")
    assert (f"wsgate: the server running on {srv.data_dir} serves ws://127.0.0.1:{srv.port}/staging, "
            "not ws://127.0.0.1:8080/staging as this configuration says") in r.stderr

    async def dial():
        async with websockets.connect(r.stdout) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))["type"]
    assert asyncio.run(dial()) == "welcome"
    j = json.loads(wsgate("outputs", "--data-dir", srv.data_dir, "-json").stdout)
    assert j["management_api_url"]["value"] == f"http://127.0.0.1:{srv.port}/staging"
    # the same flags as serve: nothing to say
    r = wsgate("outputs", "--data-dir", srv.data_dir, "--port", str(srv.port), "-raw",
               "websocket_api_endpoint")
    assert r.stdout == f"ws://127.0.0.1:{srv.port}/staging" and "running" not in r.stderr
    assert srv.stop() == 0
    r = wsgate("outputs", "--data-dir", srv.data_dir, "-raw", "websocket_api_endpoint")
    assert r.stdout == "ws://127.0.0.1:8080/staging" and r.stderr == ""


def test_several_config_files_apply_in_order(tmp_path):
    """`-c base.tfvars -c prod.tfvars` (as terraform -var-file twice) read
    only the last file and dropped the first in silence; every file is now
    applied in order, a later one over an earlier one."""
    base = tmp_path / "base.tfvars"
    base.write_text('stage_name = "prod"\nport = 9001\ncustom_routes = ["chat"]\n')
    over = tmp_path / "over.tfvars"
    over.write_text('port = 9002\ncustom_routes = ["chat", "order_placed"]\n')
    r = wsgate("check", "-c", str(base), "-c", str(over))
    assert r.returncode == 0, r.stderr
    assert 'stage_name                             = "prod"' in r.stdout
    assert "port                                   = 9002" in r.stdout
    assert 'custom_routes                          = ["chat", "order_placed"]' in r.stdout
    r = wsgate("outputs", "-c", str(base), "-c", str(over), "-raw", "websocket_api_endpoint")
    assert r.stdout == "ws://127.0.0.1:9002/prod", r.stderr


def test_route_integration_key_names_the_route_meant():
    """In HCL `$connect` must be quoted, so `connect = "http://..."` is the
    natural slip; it was refused without a hint (and a route missing from
    custom_routes without saying to add it)."""
    cases = [('{ connect = "http://127.0.0.1:9/c" }', 'did you mean "$connect"?'),
             ('{ chats = "http://127.0.0.1:9/c" }', 'did you mean "chat"?'),
             ('{ order_placed = "http://127.0.0.1:9/c" }', "or add it to custom_routes")]
    for value, said in cases:
        r = wsgate("check", "--set", f"route_integrations={value}")
        assert r.returncode == 2 and said in r.stderr, (value, r.stderr)
    r = wsgate("check", "--set", 'route_integrations={ "$connect" = "http://127.0.0.1:9/c" }')
    assert r.returncode == 0, r.stderr


def test_long_options_with_equals_and_p_for_port(start_server, tmp_path):
    """`--port=9000`, `--data-dir=DIR`, `--set=name=value` (GNU style, and
    what `make run ARGS=...` users type) were unknown options, and `-p 9000`
    got "did you mean -c?". Both now mean what they say."""
    r = wsgate("check", "--port=9001", "--set=stage_name=prod", "--data-dir=" + str(tmp_path / "d"))
    assert r.returncode == 0, r.stderr
    assert "port                                   = 9001" in r.stdout
    assert 'stage_name                             = "prod"' in r.stdout
    assert f'data_dir                               = "{tmp_path / "d"}"' in r.stdout
    r = wsgate("check", "-p", "9002")
    assert r.returncode == 0 and "port                                   = 9002" in r.stdout, r.stderr
    r = wsgate("check", "--port=x")
    assert r.returncode == 2 and 'wsgate: --port: variable "port": must be a whole number' in r.stderr
    r = wsgate("check", "--bogus=1")
    assert r.returncode == 2 and "unknown option --bogus=1" in r.stderr
    srv = start_server()
    r = wsgate("backup", "--out=" + str(tmp_path / "b.db"), "--data-dir=" + srv.data_dir)
    assert r.returncode == 0 and (tmp_path / "b.db").exists(), r.stderr
