"""S3 flow bucket: versioning, public-access block, encryption, TLS-only policy,
noncurrent-version lifecycle, tags."""

from __future__ import annotations

import json
from typing import Any

from . import policy
from .aws import InfraError, client, error_code
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import Diff, Observed, Resource

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


# --- thin API edge: "not there" is None, never an exception ---------------------------

def _get(fn: Any, *missing: str, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - translated below
        if error_code(exc) in missing:
            return None
        raise


class BucketHandler(Handler):
    kind = "s3.bucket"
    replace_paths = ("region",)

    def read(self, res: Resource) -> Observed | None:
        s3 = client("s3")
        name = res.name
        try:
            s3.head_bucket(Bucket=name)
        except Exception as exc:  # noqa: BLE001
            code = error_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                return None
            if code in ("403", "AccessDenied"):
                raise InfraError(
                    f"s3.bucket/{name}: the name exists but is not readable with these credentials; bucket names "
                    f"are global, so another account may own it: change `prefix` in infra.toml"
                ) from None
            raise
        loc = s3.get_bucket_location(Bucket=name).get("LocationConstraint") or "us-east-1"
        ver = s3.get_bucket_versioning(Bucket=name).get("Status")
        pab = _get(s3.get_public_access_block, "NoSuchPublicAccessBlockConfiguration", Bucket=name)
        enc = _get(s3.get_bucket_encryption, "ServerSideEncryptionConfigurationNotFoundError", Bucket=name)
        pol = _get(s3.get_bucket_policy, "NoSuchBucketPolicy", Bucket=name)
        lc = _get(s3.get_bucket_lifecycle_configuration, "NoSuchLifecycleConfiguration", Bucket=name)
        tags = _get(s3.get_bucket_tagging, "NoSuchTagSet", "NoSuchTagSetError", Bucket=name)
        enc_rule = ((enc or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules") or [{}])[0]
        default = enc_rule.get("ApplyServerSideEncryptionByDefault") or {}
        props = {
            "region": loc,
            "versioning": ver,
            "public_access_block": (pab or {}).get("PublicAccessBlockConfiguration"),
            "encryption": {k: v for k, v in default.items() if k == "SSEAlgorithm" or v} or None,
            "policy": policy.normalise(pol["Policy"]) if pol else None,
            "lifecycle": normalise_rules((lc or {}).get("Rules")) or None,
        }
        return Observed(props, outputs={"arn": f"arn:aws:s3:::{name}", "name": name},
                        tags=tag_dict((tags or {}).get("TagSet")))

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        s3 = client("s3")
        # Tagged in the create call itself: a bucket never exists without its ownership
        # tag, so a run killed right after this call is continued, not refused.
        conf: dict[str, Any] = {"Tags": tag_list(props["tags"])}
        if props["region"] != "us-east-1":
            conf["LocationConstraint"] = props["region"]
        kwargs: dict[str, Any] = {"Bucket": res.name, "CreateBucketConfiguration": conf}
        try:
            s3.create_bucket(**kwargs)
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) == "BucketAlreadyExists":
                raise InfraError(
                    f"s3.bucket/{res.name}: another AWS account owns this name; change `prefix` in infra.toml"
                ) from None
            if error_code(exc) != "BucketAlreadyOwnedByYou":
                raise
        # Lock the bucket down before anything else is configured. The tags are put again:
        # some AWS-compatible endpoints ignore tags given at create.
        self._apply(res, props, everything=True)
        return {"arn": f"arn:aws:s3:::{res.name}", "name": res.name}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        self._apply(res, props, diffs=diffs)
        return observed.outputs

    def _apply(self, res: Resource, props: dict[str, Any], diffs: list[Diff] | None = None,
               everything: bool = False) -> None:
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
            current = {} if everything else None
            merged = dict(current if current is not None else _bucket_tags(b))
            merged.update(props["tags"])
            # PutBucketTagging replaces the whole set: keep tags others added.
            call("PutBucketTagging", key, s3.put_bucket_tagging, Bucket=b,
                 Tagging={"TagSet": tag_list({k: v for k, v in merged.items() if not k.startswith("aws:")})})


def _bucket_tags(bucket: str) -> dict[str, str]:
    out = _get(client("s3").get_bucket_tagging, "NoSuchTagSet", "NoSuchTagSetError", Bucket=bucket)
    return tag_dict((out or {}).get("TagSet"))
