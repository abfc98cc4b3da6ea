"""What drf-spectacular cannot infer: how the token authentication looks in the OpenAPI schema, and one
operation ID per path."""

from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "webui.api.auth.ApiTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "Token <user>!<name>=<secret> (create one at /api/access/tokens/)",
        }


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's, with one operation per path: a path ending in two parameters (an IP set's
    ``/{ipset}/{cidr}``, a group's ``/{group}/{pos}``) names the last one in its operation ID, which the
    default leaves out, making it the ID of the path one level up."""

    def get_operation_id(self):
        default = super().get_operation_id()
        parts = self.path.rstrip("/").split("/")
        if len(parts) >= 2 and all(p.startswith("{") for p in parts[-2:]):
            base, _, verb = default.rpartition("_")
            return f"{base}_{parts[-1].strip('{}')}_{verb}"
        return default
