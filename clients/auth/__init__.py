"""Login for the CLI and SDK: Cognito's hosted UI (code + PKCE), machine clients, dev tokens."""

from clients.auth.config import LoginConfig, LoginError, config_dir, load_login_config
from clients.auth.flow import (
    current_token,
    login_dev,
    login_machine,
    login_pkce,
    logout,
    refresh,
)
from clients.auth.store import FileStore, KeyringStore, Tokens, TokenStore, default_store

__all__ = [
    "FileStore",
    "KeyringStore",
    "LoginConfig",
    "LoginError",
    "TokenStore",
    "Tokens",
    "config_dir",
    "current_token",
    "default_store",
    "load_login_config",
    "login_dev",
    "login_machine",
    "login_pkce",
    "logout",
    "refresh",
]
