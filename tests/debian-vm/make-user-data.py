#!/usr/bin/python3
"""Make the Debian VM tier's user data from the real configs/cloud-init.yaml.

Usage:
    make-user-data.py --source configs/cloud-init.yaml --out DIR
                      [--nodeprep BINARY]

The test VM runs THAT file, with exactly three substitutions, each one test
plumbing that a real host does not need:

1. the runcmd entry that downloads the package from NODEPREP_DEB_URL becomes
   a copy of the .deb the disk carries (the VM has no network card):
   `cp /var/lib/nodeprep-test/nodeprep.deb /run/nodeprep.deb`; the next
   entry installs it with apt-get as on a real host;
2. the nodeprep.toml of write_files gets the stand-in images
   (`[consul] image`, `[registrator] image`): the real images cannot be had
   here; the stand-ins are NOT Consul and NOT registrator; and the one name
   the VM's site DNS server knows, for the upstream-dns probe
   (`[probes] upstream_name = "upstream.example.test"`);
3. a runcmd entry at the START loads those images from a tarball on the disk
   (`docker load`): there is no registry in the VM.

Everything else (packages, the rest of write_files, the apt-get install,
apply and check steps) is left as it is, and checked to be left as it is: the result is
loaded back and compared with the source minus the three substitutions.

Writes DIR/user-data and DIR/nodeprep.toml (the substituted config, for
`nodeprep config validate`), then validates DIR/user-data with
`cloud-init schema --config-file` and, given --nodeprep, the config with
`nodeprep config validate`. Prints KEY=VALUE lines on stdout:
    USER_DATA=<path>  NODEPREP_TOML=<path>  SCHEMA=<cloud-init's verdict>
Exit status: 0 ok; 77 a prerequisite is missing (no PyYAML, no cloud-init
on the host), with a "PREREQ-MISSING: <why>" line on stderr; 1 the source
does not have the shape this script substitutes into, or validation failed.
"""

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tomllib

# Paths inside the VM (make-disk.sh puts the files there).
STATE = "/var/lib/nodeprep-test"
GUEST_DEB = f"{STATE}/nodeprep.deb"
# Where configs/cloud-init.yaml downloads the package to.
DOWNLOADED_DEB = "/run/nodeprep.deb"
URL_VAR = "NODEPREP_DEB_URL"
GUEST_IMAGES = f"{STATE}/images.tar"
CONSUL_IMAGE = "nodeprep-test/consul-standin:1"
REGISTRATOR_IMAGE = "nodeprep-test/registrator-standin:1"
# The only name the VM's site DNS server (tests/debian-vm/guest/upstream-dns.py) knows.
UPSTREAM_NAME = "upstream.example.test"
TOML_PATH = "/etc/nodeprep/nodeprep.toml"

INSTALL_ENTRY = ["cp", GUEST_DEB, DOWNLOADED_DEB]
# runcmd can start before dockerd is up (the same reason `nodeprep apply`
# waits for its socket): wait for it, bounded, then load.
LOAD_ENTRY = [
    "sh",
    "-c",
    "timeout 120 sh -c 'until docker version >/dev/null 2>&1; do sleep 1; done'; "
    f"docker load -i {GUEST_IMAGES}",
]
# On a Podman host (the source installs podman, not docker.io): Podman's
# storage, no daemon to wait for.
PODMAN_LOAD_ENTRY = ["podman", "load", "-i", GUEST_IMAGES]


def load_entry(src):
    """The image-loading entry for the engine the source installs."""
    return PODMAN_LOAD_ENTRY if "podman" in (src.get("packages") or []) else LOAD_ENTRY
LOAD_COMMENT = (
    "# TEST PLUMBING (tests/debian-vm/make-user-data.py, not part of\n"
    "# configs/cloud-init.yaml): load the stand-in images, the VM has no\n"
    "# registry. They are NOT Consul and NOT registrator.\n"
)
INSTALL_COMMENT = (
    "# TEST PLUMBING: replaces the NODEPREP_DEB_URL download of\n"
    "# configs/cloud-init.yaml (the VM has no network card).\n"
)


def prereq_missing(why):
    print(f"PREREQ-MISSING: {why}", file=sys.stderr)
    sys.exit(77)


def die(why):
    print(f"make-user-data.py: error: {why}", file=sys.stderr)
    sys.exit(1)


try:
    import yaml
except ImportError:
    prereq_missing("python3 has no PyYAML (apt-get install python3-yaml; cloud-init depends on it)")


def add_key(toml_text, table, key, value, comment):
    """Adds `key = "<value>"  # comment` to [table], appending the table when
    absent. Text edits, so the file's own lines and comments stay as they
    are."""
    lines = toml_text.splitlines(keepends=True)
    header = f"[{table}]"
    line = f'{key} = "{value}"  # {comment}\n'
    for i, l in enumerate(lines):
        if l.strip() == header:
            lines.insert(i + 1, line)
            return "".join(lines)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines.append(f"\n{header}\n{line}")
    return "".join(lines)


def substitute(src):
    out = copy.deepcopy(src)
    runcmd = out.get("runcmd")
    if not isinstance(runcmd, list):
        die("the source has no runcmd list")
    downloads = [i for i, e in enumerate(runcmd) if URL_VAR in str(e)]
    if len(downloads) != 1:
        die(f"expected exactly one runcmd entry with {URL_VAR}, found {len(downloads)}")
    if DOWNLOADED_DEB not in str(runcmd[downloads[0]]):
        die(f"the {URL_VAR} entry does not download to {DOWNLOADED_DEB}: update this script")
    if not any(DOWNLOADED_DEB in str(e) and "apt-get" in str(e) for e in runcmd[downloads[0] + 1:]):
        die(f"no runcmd entry after the download installs {DOWNLOADED_DEB} with apt-get")
    runcmd[downloads[0]] = list(INSTALL_ENTRY)
    runcmd.insert(0, list(load_entry(src)))

    files = [f for f in out.get("write_files") or [] if f.get("path") == TOML_PATH]
    if len(files) != 1:
        die(f"expected exactly one write_files entry for {TOML_PATH}, found {len(files)}")
    entry = files[0]
    before = tomllib.loads(entry["content"])
    if "image" in before.get("consul", {}) or "image" in before.get("registrator", {}):
        die(f"{TOML_PATH} in the source already sets an image: update this script")
    if "upstream_name" in before.get("probes", {}):
        die(f"{TOML_PATH} in the source already sets probes.upstream_name: update this script")
    text = add_key(entry["content"], "consul", "image", CONSUL_IMAGE, "TEST STAND-IN image")
    text = add_key(text, "registrator", "image", REGISTRATOR_IMAGE, "TEST STAND-IN image")
    text = add_key(text, "probes", "upstream_name", UPSTREAM_NAME, "TEST: the VM's site DNS server knows only this name")
    after = tomllib.loads(text)
    want = copy.deepcopy(before)
    want.setdefault("consul", {})["image"] = CONSUL_IMAGE
    want.setdefault("registrator", {})["image"] = REGISTRATOR_IMAGE
    want.setdefault("probes", {})["upstream_name"] = UPSTREAM_NAME
    if after != want:
        die(f"the edited {TOML_PATH} does not parse to the source plus the test keys: {after!r}")
    entry["content"] = text
    return out, text


def undo(result, src):
    """The result with the three substitutions taken out again, to compare
    with the source: anything else that differs is a bug of this script."""
    back = copy.deepcopy(result)
    runcmd = back["runcmd"]
    if runcmd[0] != load_entry(src):
        die("the image-loading entry is not first in runcmd")
    runcmd.pop(0)
    return back


class Dumper(yaml.SafeDumper):
    pass


def _str(dumper, s):
    # Multi-line strings (file contents) as literal blocks, as a person
    # writes them.
    style = "|" if "\n" in s else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


Dumper.add_representer(str, _str)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--nodeprep")
    args = ap.parse_args()

    with open(args.source, encoding="utf-8") as f:
        text = f.read()
    if not text.startswith("#cloud-config"):
        die(f"{args.source} does not start with #cloud-config")
    src = yaml.safe_load(text)
    result, toml_text = substitute(src)

    # Check: the source, minus nothing but the three substitutions.
    back = undo(result, src)
    orig_runcmd = src["runcmd"]
    i = next(i for i, e in enumerate(orig_runcmd) if URL_VAR in str(e))
    back["runcmd"][i] = orig_runcmd[i]
    for f in back["write_files"]:
        if f.get("path") == TOML_PATH:
            f["content"] = next(
                g["content"] for g in src["write_files"] if g.get("path") == TOML_PATH
            )
    if back != src:
        die("the result differs from the source in more than the three substitutions")

    body = yaml.dump(result, Dumper=Dumper, sort_keys=False, default_flow_style=None, width=1000)
    # Comments beside the two runcmd entries the test put there.
    load_line = "- " + yaml.dump(load_entry(src), Dumper=Dumper, default_flow_style=True, width=1000).strip()
    install_line = "- " + yaml.dump(INSTALL_ENTRY, Dumper=Dumper, default_flow_style=True, width=1000).strip()
    lines = body.splitlines(keepends=True)
    edited = []
    found = {"load": False, "install": False}
    for line in lines:
        if line.strip() == load_line:
            edited.append(LOAD_COMMENT)
            found["load"] = True
        elif line.strip() == install_line:
            edited.append(INSTALL_COMMENT)
            found["install"] = True
        edited.append(line)
    if not all(found.values()):
        die(f"could not place the comments in the dumped YAML: {found}")
    header = (
        "#cloud-config\n"
        f"# GENERATED by tests/debian-vm/make-user-data.py from {os.path.relpath(args.source)}\n"
        "# for the Debian VM tier (tests/debian_vm.rs). Three substitutions, all\n"
        "# test plumbing: the NODEPREP_DEB_URL download becomes a copy from the disk,\n"
        "# nodeprep.toml names the TEST STAND-IN images (NOT Consul, NOT\n"
        "# registrator) and the VM site's one DNS name, and runcmd first loads\n"
        "# those images (no registry here).\n"
    )
    out_text = header + "".join(edited)
    # The dump must read back as the same document.
    if yaml.safe_load(out_text) != result:
        die("the written user data does not load back as the substituted document")

    os.makedirs(args.out, exist_ok=True)
    user_data = os.path.join(args.out, "user-data")
    toml_file = os.path.join(args.out, "nodeprep.toml")
    with open(user_data, "w", encoding="utf-8") as f:
        f.write(out_text)
    with open(toml_file, "w", encoding="utf-8") as f:
        f.write(toml_text)

    cloud_init = shutil.which("cloud-init")
    if not cloud_init:
        prereq_missing("cloud-init is not installed on the host: the user data cannot be validated (apt-get install cloud-init)")
    p = subprocess.run(
        [cloud_init, "schema", "--config-file", user_data],
        capture_output=True,
        text=True,
    )
    verdict = (p.stdout + p.stderr).strip()
    if p.returncode != 0:
        die(f"cloud-init schema --config-file {user_data} failed ({p.returncode}): {verdict}")
    print(f"make-user-data.py: {verdict}", file=sys.stderr)
    if args.nodeprep:
        p = subprocess.run(
            [args.nodeprep, "config", "validate", toml_file],
            capture_output=True,
            text=True,
        )
        if p.returncode != 0:
            die(f"nodeprep config validate {toml_file} failed ({p.returncode}): {(p.stdout + p.stderr).strip()}")
        print(f"make-user-data.py: nodeprep config validate: {(p.stdout + p.stderr).strip()}", file=sys.stderr)
    print(f"USER_DATA={user_data}")
    print(f"NODEPREP_TOML={toml_file}")
    print(f"SCHEMA={verdict.splitlines()[-1] if verdict else 'valid'}")


if __name__ == "__main__":
    main()
