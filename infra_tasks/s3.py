"""S3 flow bucket: versioning, public-access block, encryption, TLS-only policy,
noncurrent-version lifecycle, tags."""

from __future__ import annotations

import json
from typing import Any

from . import policy, progress
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
MISSING_UPLOAD = Missing.of("NoSuchUpload")

# A teardown empties a bucket this many times at most when DeleteBucket still finds
# objects (something kept writing to it meanwhile, e.g. a flow run).
EMPTY_ROUNDS = 3
# Versions listed, and deleted, per request: 1000 is the most DeleteObjects takes.
DELETE_BATCH = 1000

# --- thin calls: "not there" is None ----------------------------------------------------


def head_bucket(name: str) -> dict[str, Any] | None:
    return absent(f"s3.bucket/{name}", client("s3").head_bucket, Bucket=name, missing=MISSING)


def get(name: str, operation: str) -> dict[str, Any]:
    """One of the bucket's reads (`get_bucket_policy`, …); {} when that configuration is unset."""
    return absent(f"s3.bucket/{name}", getattr(client("s3"), operation), Bucket=name, missing=MISSING) or {}


def arn_of(name: str) -> str:
    return bucket_arn(client("s3").meta.partition, name)


def first_versions(name: str) -> list[dict[str, str]]:
    """Up to `DELETE_BATCH` of the bucket's object versions and delete markers, as
    `{Key, VersionId}` (unversioned objects have VersionId "null", which DeleteObjects
    takes too). Always the first page: a teardown deletes it and asks again, rather than
    paginate past markers it deleted meanwhile."""
    out = client("s3").list_object_versions(Bucket=name, MaxKeys=DELETE_BATCH)
    return [{"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in out.get("Versions", []) + out.get("DeleteMarkers", [])]


def multipart_uploads(name: str) -> list[dict[str, str]]:
    return [{"Key": u["Key"], "UploadId": u["UploadId"]}
            for page in client("s3").get_paginator("list_multipart_uploads").paginate(Bucket=name)
            for u in page.get("Uploads", [])]


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
    holds_data = True

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

    def delete(self, res: Resource, observed: Observed) -> None:
        for _ in range(EMPTY_ROUNDS):
            if absent(res.key, self._empty, res, missing=MISSING) is None:
                return  # the bucket is gone
            try:
                client("s3").delete_bucket(Bucket=res.name)
                return
            except ClientError as exc:
                if MISSING(exc):
                    return
                if error_code(exc) != "BucketNotEmpty":
                    raise translate(exc, "DeleteBucket", res.key) from None
        raise InfraError(f"{res.key}: still not empty after emptying it {EMPTY_ROUNDS} times: something keeps writing "
                         f"to it (a flow run?); stop it and re-run the teardown")

    def _empty(self, res: Resource) -> int:
        """Delete every object version, delete marker and unfinished multipart upload; the
        number deleted. Page by page, so a teardown killed half-way leaves a part to finish."""
        s3, deleted = client("s3"), 0
        while batch := first_versions(res.name):
            out = s3.delete_objects(Bucket=res.name, Delete={"Objects": batch, "Quiet": True})
            # DeleteObjects answers 200 and lists what it could not delete (e.g. AccessDenied).
            errors = out.get("Errors") or []
            if errors:
                shown = "; ".join(f"{e.get('Key')} ({e.get('VersionId')}): {e.get('Code')} {e.get('Message', '')}"
                                  for e in errors[:5])
                raise InfraError(f"DeleteObjects failed for {res.key}: {len(errors)} object version(s) were not "
                                 f"deleted, e.g. {shown}\n  next step: fix the cause (permissions, object lock) "
                                 f"and re-run the teardown; what was deleted stays deleted")
            deleted += len(batch)
            reporter = progress.current()
            if reporter:
                reporter.waiting(f"{res.key}: emptying, {deleted} object versions deleted")
        for upload in multipart_uploads(res.name):
            absent(res.key, s3.abort_multipart_upload, Bucket=res.name, missing=MISSING_UPLOAD, **upload)
        return deleted
