"""moto's CloudFormation skips AWS::SecretsManager::Secret silently (its Ref becomes null): teach it that type.

With it, the synthesized template deploys unchanged, so the stack's stored template equals the synth and a
`cdk diff` against it is clean, as it would be on AWS.
"""

from __future__ import annotations

import json
from typing import Any


def teach_moto_secrets() -> None:
    """moto's CloudFormation skips AWS::SecretsManager::Secret (its Ref becomes null); teach it that one type."""
    import secrets
    import threading

    from moto.cloudformation import parsing
    from moto.core.common_models import CloudFormationModel
    from moto.secretsmanager.models import secretsmanager_backends

    if "AWS::SecretsManager::Secret" in parsing.get_model_map():
        return
    # moto's Secrets Manager backend is a plain dict per region, not safe to write from two threads: two stacks
    # created at once (parallel seeding, parallel deploys) raised "dictionary changed size during iteration"
    # in create_secret. Real Secrets Manager takes concurrent creates; here they take turns.
    creating = threading.Lock()

    class CfnSecret(CloudFormationModel):
        __module__ = "moto.secretsmanager.cloudformation"  # moto files models by the service in their module name

        def __init__(self, arn: str) -> None:
            self.arn = arn

        @staticmethod
        def cloudformation_name_type() -> str:
            return "Name"

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::SecretsManager::Secret"

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return attr == "Id"

        @classmethod
        def create_from_cloudformation_json(
            cls, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
        ) -> CfnSecret:
            properties = cloudformation_json["Properties"]
            with creating:
                created = secretsmanager_backends[account_id][region_name].create_secret(
                    name=resource_name,
                    secret_string=properties.get("SecretString") or secrets.token_urlsafe(32),
                    secret_binary=None,
                    description=properties.get("Description"),
                    tags=properties.get("Tags"),
                    kms_key_id=properties.get("KmsKeyId"),
                    client_request_token=None,
                    replica_regions=[],
                    force_overwrite=False,
                )
            return cls(json.loads(created)["ARN"])

        @property
        def physical_resource_id(self) -> str:
            return self.arn

    for cached in (parsing.get_model_list, parsing.get_model_map, parsing.get_name_type_map):
        cached.cache_clear()
