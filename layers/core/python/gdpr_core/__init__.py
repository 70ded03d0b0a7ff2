"""gdpr_core: the shared domain of the GDPR compliance service.

Plain Python (no boto3 at import) for planning, the Atlassian contract, erasure planning and consent
ordering; small AWS adapters live in gdpr_core.adapters and are passed in.
"""
