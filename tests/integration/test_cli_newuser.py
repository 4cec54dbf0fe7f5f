"""What trips a brand-new user following the README and the docs word for
word (round 7): each test here failed before its fix."""
import os
import socket
import subprocess

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
