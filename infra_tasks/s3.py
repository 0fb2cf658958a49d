"""S3 flow bucket: versioning, public-access block, encryption, TLS-only policy,
noncurrent-version lifecycle, tags."""

from __future__ import annotations

import json
from typing import Any

from . import policy
from .aws import ClientError, InfraError, Missing, absent, client, error_code, translate
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import Diff, Observed, Resource
from .names import bucket_arn

# S3's "not there": HeadBucket answers a bare HTTP status (a HEAD response has no body);
# each configuration read has its own code for "never set".
MISSING = Missing.of(
    "404", "NotFound", "NoSuchBucket", "NoSuchPublicAccessBlockConfiguration",
    "ServerSideEncryptionConfigurationNotFoundError", "NoSuchBucketPolicy", "NoSuchLifecycleConfiguration",
    "NoSuchTagSet", "NoSuchTagSetError",
)

# --- thin calls: "not there" is None ----------------------------------------------------


def head_bucket(name: str) -> dict[str, Any] | None:
    return absent(f"s3.bucket/{name}", client("s3").head_bucket, Bucket=name, missing=MISSING)


def get(name: str, operation: str) -> dict[str, Any]:
    """One of the bucket's reads (`get_bucket_policy`, …); {} when that configuration is unset."""
    return absent(f"s3.bucket/{name}", getattr(client("s3"), operation), Bucket=name, missing=MISSING) or {}


def arn_of(name: str) -> str:
    return bucket_arn(client("s3").meta.partition, name)


# --- normalisers (pure) -------------------------------------------------------------


def normalise_rules(rules: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    out = []
    for r in rules or []:
        r = {k: v for k, v in r.items() if v not in (None, {}, [])}
        flt = r.pop("Filter", None) or {}
        # No filter, an empty filter and an empty prefix all mean "every object".
        if r.pop("Prefix", "") or flt.get("Prefix"):
            r["Filter"] = {"Prefix": flt.get("Prefix") or ""}
        elif any(k != "Prefix" for k in flt):
            r["Filter"] = flt
        out.append(r)
    return sorted(out, key=lambda r: r.get("ID", ""))


def normalise_encryption(answer: dict[str, Any]) -> dict[str, Any] | None:
    """GetBucketEncryption's answer -> the default-encryption settings that are set."""
    rule = (answer.get("ServerSideEncryptionConfiguration", {}).get("Rules") or [{}])[0]
    default = rule.get("ApplyServerSideEncryptionByDefault") or {}
    return {k: v for k, v in default.items() if k == "SSEAlgorithm" or v} or None


def normalise_bucket(location: dict[str, Any], versioning: dict[str, Any], public_access_block: dict[str, Any],
                     encryption: dict[str, Any], bucket_policy: dict[str, Any],
                     lifecycle: dict[str, Any]) -> dict[str, Any]:
    """The bucket's reads (each {} when unset) -> properties comparable with `desired_props`."""
    return {
        # us-east-1 answers no LocationConstraint at all.
        "region": location.get("LocationConstraint") or "us-east-1",
        "versioning": versioning.get("Status"),
        "public_access_block": public_access_block.get("PublicAccessBlockConfiguration"),
        "encryption": normalise_encryption(encryption),
        "policy": policy.normalise(bucket_policy["Policy"]) if bucket_policy.get("Policy") else None,
        "lifecycle": normalise_rules(lifecycle.get("Rules")) or None,
    }


# --- desired properties -------------------------------------------------------------

PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
}


def tls_only_policy(bucket_arn: str) -> dict[str, Any]:
    return policy.document({
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    })


def lifecycle_rules(noncurrent_days: int) -> list[dict[str, Any]]:
    return [{
        "ID": "expire-noncurrent-versions",
        "Status": "Enabled",
        "Filter": {"Prefix": ""},
        "NoncurrentVersionExpiration": {"NoncurrentDays": noncurrent_days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
    }]


def desired_props(region: str, bucket_arn: str, noncurrent_days: int, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "region": region,
        "versioning": "Enabled",
        "public_access_block": dict(PUBLIC_ACCESS_BLOCK),
        "encryption": {"SSEAlgorithm": "AES256"},
        "policy": policy.normalise(tls_only_policy(bucket_arn)),
        "lifecycle": normalise_rules(lifecycle_rules(noncurrent_days)),
        "tags": tags,
    }


# --- the handler --------------------------------------------------------------------


class BucketHandler(Handler):
    kind = "s3.bucket"
    replace_paths = ("region",)

    def read(self, res: Resource) -> Observed | None:
        name = res.name
        # A 403 here (another account owns the name) is raised translated, with the fix.
        if head_bucket(name) is None:
            return None
        props = normalise_bucket(
            get(name, "get_bucket_location"), get(name, "get_bucket_versioning"),
            get(name, "get_public_access_block"), get(name, "get_bucket_encryption"),
            get(name, "get_bucket_policy"), get(name, "get_bucket_lifecycle_configuration"))
        tags = tag_dict(get(name, "get_bucket_tagging").get("TagSet"))
        return Observed(props, outputs={"arn": arn_of(name), "name": name}, tags=tags)

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        # Tagged in the create call itself: a bucket never exists without its ownership
        # tag, so a run killed right after this call is continued, not refused.
        conf: dict[str, Any] = {"Tags": tag_list(props["tags"])}
        if props["region"] != "us-east-1":
            conf["LocationConstraint"] = props["region"]
        try:
            client("s3").create_bucket(Bucket=res.name, CreateBucketConfiguration=conf)
        except ClientError as exc:
            if error_code(exc) == "BucketAlreadyExists":
                raise InfraError(
                    f"s3.bucket/{res.name}: another AWS account owns this name; change `prefix` in infra.toml"
                ) from None
            if error_code(exc) != "BucketAlreadyOwnedByYou":  # ours already (a re-run after a crash)
                raise translate(exc, "CreateBucket", res.key) from None
        # Lock the bucket down before anything else is configured. The tags are put again:
        # some AWS-compatible endpoints ignore tags given at create.
        self._apply(res, props, have_tags={}, everything=True)
        return {"arn": arn_of(res.name), "name": res.name}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        self._apply(res, props, have_tags=observed.tags, diffs=diffs)
        return observed.outputs

    def _apply(self, res: Resource, props: dict[str, Any], have_tags: dict[str, str],
               diffs: list[Diff] | None = None, everything: bool = False) -> None:
        s3, b, key = client("s3"), res.name, res.key

        def want(path: str) -> bool:
            return everything or changed(diffs or [], path)

        if want("public_access_block"):
            call("PutPublicAccessBlock", key, s3.put_public_access_block, Bucket=b,
                 PublicAccessBlockConfiguration=props["public_access_block"])
        if want("encryption"):
            call("PutBucketEncryption", key, s3.put_bucket_encryption, Bucket=b,
                 ServerSideEncryptionConfiguration={"Rules": [{
                     "ApplyServerSideEncryptionByDefault": props["encryption"], "BucketKeyEnabled": True}]})
        if want("versioning"):
            call("PutBucketVersioning", key, s3.put_bucket_versioning, Bucket=b,
                 VersioningConfiguration={"Status": props["versioning"]})
        if want("policy"):
            call("PutBucketPolicy", key, s3.put_bucket_policy, Bucket=b, Policy=json.dumps(props["policy"]))
        if want("lifecycle"):
            call("PutBucketLifecycleConfiguration", key, s3.put_bucket_lifecycle_configuration, Bucket=b,
                 LifecycleConfiguration={"Rules": [
                     {**r, "Filter": r.get("Filter", {"Prefix": ""})} for r in props["lifecycle"]]})
        if want("tags"):
            # PutBucketTagging replaces the whole set: keep the tags others added (as read).
            merged = {**have_tags, **props["tags"]}
            call("PutBucketTagging", key, s3.put_bucket_tagging, Bucket=b,
                 Tagging={"TagSet": tag_list({k: v for k, v in merged.items() if not k.startswith("aws:")})})
