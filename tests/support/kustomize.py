"""Renders the project's kustomizations offline, without the kustomize binary: the subset of kustomize they use.

Supported: ``resources`` (files and folders), ``images`` (``newName``/``newTag``) and ``patches`` holding RFC 6902
JSON patches, applied with the ``jsonpatch`` library as kustomize applies them. Any other field raises, so a
kustomization can never use something this renderer would silently ignore.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonpatch
from ruamel.yaml import YAML

KUSTOMIZATION = "kustomization.yaml"
_SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "images", "patches"}
_TARGET_FIELDS = {"group", "version", "kind", "name"}

Resource = dict[str, Any]


def load_documents(path: Path) -> list[Resource]:
    """Every YAML document of ``path`` (a manifest may hold several, separated by ``---``)."""
    return [document for document in YAML(typ="safe", pure=True).load_all(path) if document is not None]


def _matches(resource: Resource, target: dict[str, str]) -> bool:
    group, _, version = resource["apiVersion"].rpartition("/")
    actual = {"group": group, "version": version, "kind": resource["kind"], "name": resource["metadata"]["name"]}
    return all(actual[key] == value for key, value in target.items())


def _set_images(resource: Resource, images: list[dict[str, str]]) -> None:
    pod = resource.get("spec", {}).get("template", {}).get("spec", {})
    for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
        name = container["image"].split(":")[0]
        for image in images:
            if image["name"] == name:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"


def render(folder: Path) -> list[Resource]:
    """The resources ``folder``'s kustomization produces, in order."""
    kustomization: dict[str, Any] = YAML(typ="safe", pure=True).load(folder / KUSTOMIZATION)
    unsupported = set(kustomization) - _SUPPORTED_FIELDS
    if unsupported:
        raise ValueError(f"{folder / KUSTOMIZATION}: fields {sorted(unsupported)} are not rendered by this module")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        resources += render(path) if path.is_dir() else load_documents(path)
    for resource in resources:
        _set_images(resource, kustomization.get("images", []))
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        if set(target) - _TARGET_FIELDS:
            raise ValueError(f"{folder / KUSTOMIZATION}: patch target {target} is not rendered by this module")
        operations = jsonpatch.JsonPatch(YAML(typ="safe", pure=True).load(folder / patch["path"]))
        matched = [index for index, resource in enumerate(resources) if _matches(resource, target)]
        if not matched:
            raise ValueError(f"{folder / KUSTOMIZATION}: patch target {target} matches no resource")
        for index in matched:
            resources[index] = operations.apply(resources[index])
    return resources
