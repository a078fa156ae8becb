"""Where the API is and who we are, from the same environment the CLI has always read."""

from __future__ import annotations

from pydantic import Field

from conveyor.settings import ConfigError, TlsSettings, load

API_VARIABLES_HINT = (
    "the task commands need CONVEYOR_API_ADDRESS (host:port) and the client's TLS material: "
    "CONVEYOR_TLS_CA_FILE, CONVEYOR_TLS_CERT_FILE and CONVEYOR_TLS_KEY_FILE (or the matching "
    "*_PEM variables); CONVEYOR_TLS_SERVER_NAME is optional"
)


class ClientSettings(TlsSettings):
    """The API's address and our mTLS material (the tenant is our certificate's identity)."""

    api_address: str = Field(pattern=r"^[^:\[\]]+:\d{1,5}$|^\[[0-9A-Fa-f:.]+\]:\d{1,5}$")
    tls_server_name: str | None = None


def from_env() -> ClientSettings:
    try:
        return load(ClientSettings)
    except ConfigError as exc:
        raise ConfigError(f"{exc}\n{API_VARIABLES_HINT}") from None
