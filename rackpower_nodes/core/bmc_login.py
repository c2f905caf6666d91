"""How rackpower reaches a server's BMC (no rclpy): the chassis URL's form, the login
parameters and where the password comes from, shared by every node that talks to BMCs
(`pdu_actuator`'s power caps, `health_monitor`'s PSU meters). The password is read from an
environment variable or a file, never from a parameter (parameters can be listed by anyone
on the ROS graph).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from rackpower_nodes.core.params import ConfigError, ParamSpec, param

__all__ = ["bmc_login_params", "bmc_password", "chassis_url_errors", "split_chassis_url"]

_CHASSIS_PATH = re.compile(r"/redfish/v1/Chassis/([^/]+)/?")


def split_chassis_url(url: str) -> tuple[str, str]:
    """(scheme://host[:port], /redfish/v1/Chassis/<id>) of a BMC chassis URI; ValueError
    naming the URL otherwise (the rule `components.power_cap_url` and the driver share)."""
    expected = "expected http(s)://host[:port]/redfish/v1/Chassis/<id>"
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        port_ok = parts is not None and (parts.port is None or 0 < parts.port < 65536)
    except ValueError:
        parts, port_ok = None, False
    if (parts is None or not port_ok or parts.scheme not in ("http", "https")
            or not parts.hostname or parts.query or parts.fragment or parts.username
            or not _CHASSIS_PATH.fullmatch(parts.path)):
        raise ValueError(f"BMC url = {url!r}: {expected}")
    return f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")


def bmc_login_params(section: str) -> tuple[ParamSpec, ...]:
    """``<section>.auth``, ``.username``, ``.password_env``, ``.password_file`` and
    ``.cafile``: how a node logs in to its BMCs."""
    return (
        param(f"{section}.auth", "session", "string", "Redfish login: session or basic",
              choices=("session", "basic")),
        param(f"{section}.username", "", "string", "BMC user name"),
        param(f"{section}.password_env", "RACKPOWER_BMC_PASSWORD", "string",
              "Environment variable holding the BMC password (tried first)"),
        param(f"{section}.password_file", "", "string",
              "File holding the BMC password (first line), used when the variable is unset"),
        param(f"{section}.cafile", "", "string",
              "CA bundle to verify the BMCs' TLS certificates; '' = not verified"),
    )


def bmc_password(password_env: str, password_file: str, section: str) -> str:
    """A BMC password from the variable ``password_env``, else ``password_file``'s first line,
    else ''; ConfigError naming ``<section>.password_file`` when it cannot be read."""
    if password_env and password_env in os.environ:
        return os.environ[password_env]
    if not password_file:
        return ""
    try:
        return Path(password_file).read_text().splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise ConfigError([f"{section}.password_file = {password_file!r}: cannot read a "
                           f"password from it ({exc or 'empty file'})"]) from None


def chassis_url_errors(key: str, names, urls, taken: str = "the chassis") -> list[str]:
    """What is wrong with a per-component list of BMC chassis URLs ``urls`` (parameter
    ``key``, ``''`` = none): each one a chassis URL, none given twice (``already <taken> of
    <component>``)."""
    errors = []
    for i, url in enumerate(urls):
        if not url:
            continue
        try:
            split_chassis_url(url)
        except ValueError:
            errors.append(f"{key}[{i}] = {url!r} ({names[i]}): expected '' or "
                          "http(s)://<bmc>/redfish/v1/Chassis/<id>")
            continue
        if url in urls[:i]:
            errors.append(f"{key}[{i}] = {url!r} ({names[i]}): already {taken} of "
                          f"{names[list(urls).index(url)]}")
    return errors
