"""A local world on loopback: AWS (moto server), DNS, Postmark, and a CDK infra app."""
