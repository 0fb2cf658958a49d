"""ECR repository (one per account): scan on push, tag mutability, lifecycle, tags."""

from __future__ import annotations

import json
from typing import Any

from .aws import Missing, absent, client
from .handler import Handler, call, changed, tag_dict, tag_list
from .model import Diff, Observed, Resource

MISSING = Missing.of("RepositoryNotFoundException", "LifecyclePolicyNotFoundException", "ImageNotFoundException")

# --- thin calls: "not there" is None ----------------------------------------------------


def describe_repository(name: str) -> dict[str, Any] | None:
    out = absent(f"ecr.repository/{name}", client("ecr").describe_repositories, repositoryNames=[name],
                 missing=MISSING)
    return out["repositories"][0] if out and out.get("repositories") else None


def lifecycle_policy_text(name: str) -> str | None:
    out = absent(f"ecr.repository/{name}", client("ecr").get_lifecycle_policy, repositoryName=name,
                 missing=MISSING)
    return (out or {}).get("lifecyclePolicyText")


def repository_tags(name: str, arn: str) -> list[dict[str, str]]:
    out = absent(f"ecr.repository/{name}", client("ecr").list_tags_for_resource, resourceArn=arn, missing=MISSING)
    return (out or {}).get("tags") or []


def image_exists(repository: str, tag: str) -> bool:
    """Whether `repository:tag` has been pushed (read-only; no repository: no image)."""
    return absent(f"ecr.repository/{repository}", client("ecr").describe_images, repositoryName=repository,
                  imageIds=[{"imageTag": tag}], missing=MISSING) is not None


# --- normalisers (pure) -------------------------------------------------------------


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


def normalise_repository(repo: dict[str, Any], lifecycle_text: str | None) -> dict[str, Any]:
    return {
        "scan_on_push": repo.get("imageScanningConfiguration", {}).get("scanOnPush", False),
        "tag_mutability": repo.get("imageTagMutability"),
        "lifecycle": normalise_lifecycle(lifecycle_text),
    }


# --- desired properties -------------------------------------------------------------


def lifecycle_policy(images_kept: int) -> dict[str, Any]:
    return {"rules": [{
        "rulePriority": 1,
        "description": f"keep the newest {images_kept} images",
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": images_kept},
        "action": {"type": "expire"},
    }]}


def desired_props(images_kept: int, mutability: str, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "scan_on_push": True,
        "tag_mutability": mutability,
        "lifecycle": normalise_lifecycle(lifecycle_policy(images_kept)),
        "tags": tags,
    }


# --- the handler --------------------------------------------------------------------


class RepositoryHandler(Handler):
    kind = "ecr.repository"
    holds_data = True

    def read(self, res: Resource) -> Observed | None:
        repo = describe_repository(res.name)
        if repo is None:
            return None
        props = normalise_repository(repo, lifecycle_policy_text(res.name))
        return Observed(props, outputs={"arn": repo["repositoryArn"], "uri": repo["repositoryUri"]},
                        tags=tag_dict(repository_tags(res.name, repo["repositoryArn"])))

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

    def delete(self, res: Resource, observed: Observed) -> None:
        # force: the images go with the repository (a teardown deletes it only with --delete-data).
        absent(res.key, client("ecr").delete_repository, repositoryName=res.name, force=True, missing=MISSING)
