"""ECR repository (one per account): scan on push, tag mutability, lifecycle, tags."""

from __future__ import annotations

import json
from typing import Any

from .aws import client, not_found
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import Diff, Observed, Resource


def lifecycle_policy(images_kept: int) -> dict[str, Any]:
    return {"rules": [{
        "rulePriority": 1,
        "description": f"keep the newest {images_kept} images",
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": images_kept},
        "action": {"type": "expire"},
    }]}


def normalise_lifecycle(doc: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if not doc:
        return None
    data = json.loads(doc) if isinstance(doc, str) else doc
    rules = []
    for r in data.get("rules", []):
        sel = dict(r.get("selection", {}))
        sel.setdefault("tagStatus", "any")
        if sel.get("tagStatus") != "tagged":
            sel.pop("tagPrefixList", None)
        rule = {**r, "selection": sel}
        if not rule.get("description"):
            rule.pop("description", None)
        rules.append(rule)
    return {"rules": sorted(rules, key=lambda r: r.get("rulePriority", 0))}


def desired_props(images_kept: int, mutability: str, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "scan_on_push": True,
        "tag_mutability": mutability,
        "lifecycle": normalise_lifecycle(lifecycle_policy(images_kept)),
        "tags": tags,
    }


class RepositoryHandler(Handler):
    kind = "ecr.repository"

    def read(self, res: Resource) -> Observed | None:
        ecr = client("ecr")
        try:
            repo = ecr.describe_repositories(repositoryNames=[res.name])["repositories"][0]
        except Exception as exc:  # noqa: BLE001
            if not_found(exc):
                return None
            raise
        try:
            lc = ecr.get_lifecycle_policy(repositoryName=res.name).get("lifecyclePolicyText")
        except Exception as exc:  # noqa: BLE001
            if not not_found(exc):
                raise
            lc = None
        tags = ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"]).get("tags")
        props = {
            "scan_on_push": repo.get("imageScanningConfiguration", {}).get("scanOnPush", False),
            "tag_mutability": repo.get("imageTagMutability"),
            "lifecycle": normalise_lifecycle(lc),
        }
        return Observed(props, outputs={"arn": repo["repositoryArn"], "uri": repo["repositoryUri"]},
                        tags=tag_dict(tags))

    def create(self, res: Resource, props: dict[str, Any]) -> dict[str, Any]:
        ecr = client("ecr")
        repo = call("CreateRepository", res.key, ecr.create_repository,
                    repositoryName=res.name,
                    imageTagMutability=props["tag_mutability"],
                    imageScanningConfiguration={"scanOnPush": props["scan_on_push"]},
                    encryptionConfiguration={"encryptionType": "AES256"},
                    tags=tag_list(props["tags"]))["repository"]
        call("PutLifecyclePolicy", res.key, ecr.put_lifecycle_policy, repositoryName=res.name,
             lifecyclePolicyText=json.dumps(props["lifecycle"]))
        return {"arn": repo["repositoryArn"], "uri": repo["repositoryUri"]}

    def update(self, res: Resource, props: dict[str, Any], observed: Observed, diffs: list[Diff]) -> dict[str, Any]:
        ecr = client("ecr")
        if changed(diffs, "scan_on_push"):
            call("PutImageScanningConfiguration", res.key, ecr.put_image_scanning_configuration,
                 repositoryName=res.name, imageScanningConfiguration={"scanOnPush": props["scan_on_push"]})
        if changed(diffs, "tag_mutability"):
            call("PutImageTagMutability", res.key, ecr.put_image_tag_mutability,
                 repositoryName=res.name, imageTagMutability=props["tag_mutability"])
        if changed(diffs, "lifecycle"):
            call("PutLifecyclePolicy", res.key, ecr.put_lifecycle_policy, repositoryName=res.name,
                 lifecyclePolicyText=json.dumps(props["lifecycle"]))
        if changed(diffs, "tags"):
            call("TagResource", res.key, ecr.tag_resource, resourceArn=observed.outputs["arn"],
                 tags=tag_list(props["tags"]))
        return observed.outputs


def image_exists(repository: str, tag: str) -> bool:
    """Whether `repository:tag` has been pushed (read-only)."""
    try:
        client("ecr").describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
        return True
    except Exception as exc:  # noqa: BLE001
        if not_found(exc) or "ImageNotFound" in str(exc):
            return False
        raise
